"""VirtualService ``fault``: Envoy's fault filter decisions, sans-IO.

Istio (route.go ``TranslateFault``) turns ``percentage.value`` into an Envoy
``FractionalPercent`` of ``int(value × 10000)`` per MILLION; the deprecated
integer ``percent`` becomes ``n`` per HUNDRED; an unset delay percentage is 0
per HUNDRED and an unset abort percentage is Envoy's empty FractionalPercent
(0) -- so an unset percentage never fires.  Envoy's runtime ``featureEnabled``
fires when ``random % denominator < numerator`` for a fresh 64-bit random
value, drawn separately for the delay and (after the delay) the abort.

Delay first (flag ``DI``); Envoy delays only when the fixed delay is at least
1 ms (it truncates to milliseconds).  Abort (flag ``FI``) replies locally with
``fault filter abort`` before any upstream attempt; a ``grpcStatus`` abort
answers HTTP 200 carrying that gRPC status (fault_filter.cc ``abortStatus``).
"""

from __future__ import annotations

from .local_reply import LocalReply

MILLION = 1_000_000
HUNDRED = 100

ABORT_BODY = b"fault filter abort"
ABORT_DETAILS = "fault_filter_abort"


def fires(numerator: int, denominator: int, random_value: int) -> bool:
    """Envoy's ``ProtobufPercentHelper::evaluateFractionalPercent``."""
    return random_value % denominator < numerator


def percent_to_fraction(value: float | None, legacy: int | None = None) -> tuple[int, int]:
    """An Istio ``Percent`` (or the deprecated integer percent) as Envoy's (numerator, denominator)."""
    if value is not None:
        return int(value * 10000), MILLION
    return int(legacy or 0), HUNDRED


class FaultPolicy:
    """A compiled ``HTTPFaultInjection``."""

    __slots__ = ("delay", "delay_fraction", "abort_status", "abort_grpc_status", "abort_fraction")

    def __init__(
        self,
        delay: float = 0.0,
        delay_fraction: tuple[int, int] = (0, HUNDRED),
        abort_status: int | None = None,
        abort_grpc_status: int | None = None,
        abort_fraction: tuple[int, int] = (0, HUNDRED),
    ) -> None:
        # Envoy takes the delay in whole milliseconds and only delays when that is > 0.
        ms = int(delay * 1000 + 1e-9)
        self.delay = ms / 1000.0
        self.delay_fraction = delay_fraction
        self.abort_status = abort_status
        self.abort_grpc_status = abort_grpc_status
        self.abort_fraction = abort_fraction

    def delay_for(self, random_value: int) -> float:
        """Seconds to delay this request (0.0: no delay)."""
        if self.delay <= 0.0:
            return 0.0
        n, d = self.delay_fraction
        return self.delay if fires(n, d, random_value) else 0.0

    def abort_for(self, random_value: int) -> LocalReply | None:
        """The abort reply for this request, or None."""
        if self.abort_status is None and self.abort_grpc_status is None:
            return None
        n, d = self.abort_fraction
        if not fires(n, d, random_value):
            return None
        status = self.abort_status if self.abort_status is not None else 200
        return LocalReply(status, ABORT_BODY, ABORT_DETAILS, "FI")

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.delay > 0:
            out["delay"] = {"fixed_delay": f"{self.delay:g}s", "percentage": {"numerator": self.delay_fraction[0], "denominator": self.delay_fraction[1]}}
        if self.abort_status is not None or self.abort_grpc_status is not None:
            abort: dict[str, object] = {"percentage": {"numerator": self.abort_fraction[0], "denominator": self.abort_fraction[1]}}
            if self.abort_status is not None:
                abort["http_status"] = self.abort_status
            else:
                abort["grpc_status"] = self.abort_grpc_status
            out["abort"] = abort
        return out


#: gRPC status names Istio accepts for ``abort.grpcStatus`` (pkg/util/grpc SupportedGRPCStatus).
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


def grpc_status_code(name: str) -> int | None:
    name = name.strip().upper()
    if name.isdigit():
        return int(name)
    return GRPC_STATUS.get(name)


def render_grpc_abort(grpc_status: int, server: bytes, date: bytes) -> bytes:
    """Envoy's gRPC local reply on HTTP/1.1 (trailers-only: everything in the head), as observed on 1.40."""
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: %d\r\n"
        b"grpc-message: fault filter abort\r\ndate: %s\r\nserver: %s\r\ncontent-length: 0\r\n\r\n"
        % (grpc_status, date, server)
    )
