"""Envoy's ``%RESPONSE_FLAGS%``: several flags are joined with ``,`` in Envoy's fixed order
(the order of ``CoreResponseFlag``), not in the order they were set."""

from __future__ import annotations

ORDER = (
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX",
    "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
)
_RANK = {f: i for i, f in enumerate(ORDER)}


def add(current: str, *new: str) -> str:
    """``current`` (``-`` for none) with ``new`` flags added, in Envoy's order."""
    have = set() if current in ("", "-") else set(current.split(","))
    have.update(f for f in new if f and f != "-")
    if not have:
        return "-"
    return ",".join(sorted(have, key=lambda f: _RANK.get(f, len(ORDER))))
