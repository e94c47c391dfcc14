"""Header plans: the header edits a route or destination asks for, compiled to bytes.

VirtualService ``headers.request|response`` translate to Envoy's
``*_headers_to_add`` / ``*_headers_to_remove``: ``set`` overwrites
(OVERWRITE_IF_EXISTS_OR_ADD), ``add`` appends another value
(APPEND_IF_EXISTS_OR_ADD), ``remove`` drops every value.  Envoy applies
removals first, then additions.  Pseudo-headers and ``host`` are never edited
here: Istio turns a ``host``/``:authority`` set into an authority rewrite.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from ..protocols.events import Headers

#: Hop-by-hop headers an HTTP/1 proxy never forwards (RFC 9110 §7.6.1), plus the
#: framing header that the proxy re-creates for each hop.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


class HeaderPlan:
    """A compiled set of header edits, applied in one pass."""

    __slots__ = ("set", "add", "remove", "_drop")

    def __init__(
        self,
        set: Iterable[tuple[str, str]] = (),
        add: Iterable[tuple[str, str]] = (),
        remove: Iterable[str] = (),
    ) -> None:
        self.set = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in set)
        self.add = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in add)
        self.remove = frozenset(k.lower().encode("latin-1") for k in remove)
        #: Names whose existing values go: removed ones and overwritten ones.
        self._drop = self.remove | frozenset(k for k, _ in self.set)

    @classmethod
    def from_ops(cls, ops: object | None) -> "HeaderPlan | None":
        """From a HeaderOperations model (``set``/``add``/``remove``); None when empty."""
        if ops is None:
            return None
        set_ = dict(getattr(ops, "set", {}) or {})
        add = dict(getattr(ops, "add", {}) or {})
        remove = list(getattr(ops, "remove", []) or [])
        for reserved in ("host", ":authority"):
            set_.pop(reserved, None)
            add.pop(reserved, None)
        if not (set_ or add or remove):
            return None
        return cls(set_.items(), add.items(), remove)

    def apply(self, headers: Headers) -> Headers:
        """Return the edited header list (the input is not modified)."""
        drop = self._drop
        if drop:
            out = [h for h in headers if h[0] not in drop]
        else:
            out = list(headers)
        if self.set:
            out.extend(self.set)
        if self.add:
            out.extend(self.add)
        return out

    def describe(self) -> Mapping[str, object]:
        return {
            "set": {k.decode(): v.decode() for k, v in self.set},
            "add": {k.decode(): v.decode() for k, v in self.add},
            "remove": sorted(k.decode() for k in self.remove),
        }


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (they are hop-by-hop for this message)."""
    names: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            for token in v.split(b","):
                token = token.strip().lower()
                if token:
                    names.add(token)
    return frozenset(names)
