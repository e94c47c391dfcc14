"""Retry decisions: which failures a route's policy retries, and how long to back off.

Sans-IO: the transport reports what happened; these functions answer whether
to try again and after how long, with the random source passed in.
"""

from __future__ import annotations

from typing import Callable

from .snapshot import RetryPolicy

#: Envoy's default maximum backoff is 10 × the base interval.
MAX_BACKOFF_FACTOR = 10


def backoff_seconds(policy: RetryPolicy, retry_number: int, randrange: Callable[[int], int]) -> float:
    """Envoy's JitteredExponentialBackOffStrategy for the ``retry_number``-th retry (1-based).

    The wait is uniform in ``[0, (2**n - 1) × base)``, capped at ``10 × base``.
    """
    base_ms = max(1, int(policy.backoff_base * 1000))
    max_ms = base_ms * MAX_BACKOFF_FACTOR
    multiplier = (1 << min(retry_number, 30)) - 1
    ceiling = min(multiplier * base_ms, max_ms)
    return randrange(ceiling) / 1000.0 if ceiling > 0 else 0.0


def retries_connect_failure(policy: RetryPolicy) -> bool:
    """Whether a failed connection is retried (``connect-failure``, or ``reset``/``5xx``/``gateway-error`` which imply it)."""
    on = policy.retry_on
    return policy.num_retries > 0 and (
        "connect-failure" in on or "reset" in on or "5xx" in on or "gateway-error" in on or "reset-before-request" in on
    )


#: gRPC status codes named by retryOn (grpc-status values).
_GRPC_RETRY_ON = {"cancelled": b"1", "deadline-exceeded": b"4", "resource-exhausted": b"8", "internal": b"13", "unavailable": b"14"}


def retriable_response(policy: RetryPolicy, status: int, grpc_status: bytes | None) -> bool:
    """Whether a response head is retried under ``policy`` (Envoy's ``x-envoy-retry-on`` semantics)."""
    on = policy.retry_on
    if policy.num_retries <= 0 or not on:
        return False
    if status >= 500 and "5xx" in on:
        return True
    if status in (502, 503, 504) and "gateway-error" in on:
        return True
    if status == 409 and "retriable-4xx" in on:
        return True
    if status in policy.retriable_status_codes and "retriable-status-codes" in on:
        return True
    if grpc_status is not None:
        for name, code in _GRPC_RETRY_ON.items():
            if name in on and grpc_status == code:
                return True
    return False


def retries_reset(policy: RetryPolicy) -> bool:
    """Whether a connection reset before any response byte is retried (``reset`` or ``5xx``)."""
    on = policy.retry_on
    return policy.num_retries > 0 and ("reset" in on or "5xx" in on or "reset-before-request" in on)
