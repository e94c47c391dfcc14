"""Retry decisions and Envoy's jittered exponential backoff, with the random source injected."""

from __future__ import annotations

from meshproxy.config.compile import DEFAULT_RETRY
from meshproxy.core.retry import backoff_seconds, retriable_response, retries_connect_failure, retries_reset
from meshproxy.core.snapshot import NO_RETRY, RetryPolicy


def test_backoff_is_uniform_below_an_exponential_ceiling_capped_at_ten_bases() -> None:
    policy = RetryPolicy(backoff_base=0.025)
    ceilings = []
    for n in range(1, 8):
        seen: list[int] = []
        backoff_seconds(policy, n, lambda c: seen.append(c) or c - 1)
        ceilings.append(seen[0])
    # (2^n - 1) x 25 ms, capped at 250 ms.
    assert ceilings == [25, 75, 175, 250, 250, 250, 250]
    assert backoff_seconds(policy, 1, lambda c: 0) == 0.0
    assert backoff_seconds(policy, 2, lambda c: c - 1) == 0.074


def test_istio_default_policy() -> None:
    assert DEFAULT_RETRY.num_retries == 2
    assert retries_connect_failure(DEFAULT_RETRY)
    assert not retries_reset(DEFAULT_RETRY)
    # 503 is not retried by default since Istio 1.24; gRPC unavailable/cancelled are.
    assert not retriable_response(DEFAULT_RETRY, 503, None)
    assert retriable_response(DEFAULT_RETRY, 200, b"14")
    assert retriable_response(DEFAULT_RETRY, 200, b"1")
    assert not retriable_response(DEFAULT_RETRY, 200, b"13")


def test_retry_on_conditions() -> None:
    p = RetryPolicy(num_retries=3, retry_on=frozenset({"5xx"}))
    assert retriable_response(p, 500, None) and retriable_response(p, 503, None) and not retriable_response(p, 404, None)
    assert retries_reset(p) and retries_connect_failure(p)
    g = RetryPolicy(num_retries=3, retry_on=frozenset({"gateway-error"}))
    assert retriable_response(g, 502, None) and not retriable_response(g, 500, None)
    c = RetryPolicy(num_retries=1, retry_on=frozenset({"retriable-status-codes"}), retriable_status_codes=frozenset({418}))
    assert retriable_response(c, 418, None) and not retriable_response(c, 503, None)
    assert not retriable_response(NO_RETRY, 503, None) and not retries_connect_failure(NO_RETRY)
