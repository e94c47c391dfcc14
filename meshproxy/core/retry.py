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


#: Envoy's per-request buffer limit when the route sets none: the listener's
#: per_connection_buffer_limit_bytes, 1 MiB by default (Istio sets neither).  A request
#: body larger than this is not kept for retries (router.cc: "Give up on the retry/shadow").
RETRY_BUFFER_LIMIT = 1024 * 1024


def retriable_response(policy: RetryPolicy, status: int, grpc_status: bytes | None, ratelimited: bool = False) -> bool:
    """Whether a response head is retried under ``policy`` (Envoy's retry_state_impl.cc ``wouldRetryFromHeaders``).

    ``retriable-4xx`` is 409 only; ``envoy-ratelimited`` needs ``x-envoy-ratelimited`` on the
    response; ``retriable-headers`` needs header matchers Istio never configures, so it never fires.
    """
    on = policy.retry_on
    if policy.num_retries <= 0 or not on:
        return False
    if ratelimited and "envoy-ratelimited" in on:
        return True
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
    """Whether a reset after the request went out, before any response byte, is retried
    (``reset``, ``5xx``, ``gateway-error``; ``reset-before-request`` only covers resets before
    the request started, i.e. connect failures on HTTP/1)."""
    on = policy.retry_on
    return policy.num_retries > 0 and ("reset" in on or "5xx" in on or "gateway-error" in on)


def retries_per_try_timeout(policy: RetryPolicy) -> bool:
    """Whether a per-try timeout is retried: Envoy treats it as a local reset, which ``5xx``,
    ``gateway-error`` and ``reset`` retry (``connect-failure`` alone does not; checked on Envoy 1.40)."""
    on = policy.retry_on
    return policy.num_retries > 0 and ("5xx" in on or "gateway-error" in on or "reset" in on)
