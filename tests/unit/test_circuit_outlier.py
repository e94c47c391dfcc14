"""Circuit breaker and outlier detector, sans-IO, with injected time (no network)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from meshproxy.core import outlier as od
from meshproxy.core.balancer import make_balancer
from meshproxy.core.circuit import UNLIMITED, Circuit, CircuitLimits
from meshproxy.core.endpoints import ROUND_ROBIN, Endpoint, LbSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _eps(n: int) -> list[Endpoint]:
    return [Endpoint("10.0.0.%d" % (i + 1), 80) for i in range(n)]


def _detector(n: int = 2, **cfg: object):
    eps = _eps(n)
    clock = Clock()
    bal = make_balancer(LbSettings(ROUND_ROBIN), eps, random.Random(1), panic_threshold=float(cfg.get("min_health_percent", 0)))  # type: ignore[arg-type]
    det = od.OutlierDetector(od.OutlierConfig(**cfg), eps, clock=clock, on_change=bal.refresh)  # type: ignore[arg-type]
    return det, eps, clock, bal


# --------------------------------------------------------------------------- circuit


def test_circuit_defaults_unlimited() -> None:
    c = Circuit(CircuitLimits())
    assert c.limits.max_connections == UNLIMITED
    assert all(c.try_request() for _ in range(1000))


def test_circuit_pending_and_requests_overflow() -> None:
    c = Circuit(CircuitLimits(max_pending_requests=1, max_requests=2))
    assert c.try_pend() and not c.try_pend()
    c.end_pending()
    assert c.try_pend()
    assert c.try_request() and c.try_request() and not c.try_request()
    c.end_request()
    assert c.try_request()
    assert c.stats()["upstream_rq_pending_overflow"] == 2


def test_circuit_connections_always_one_per_host() -> None:
    c = Circuit(CircuitLimits(max_connections=1))
    assert c.may_connect("a")
    c.connection_opened("a")
    assert not c.may_connect("a")
    # Envoy: an endpoint without any connection always gets one, whatever the cluster count.
    assert c.may_connect("b")
    c.connection_opened("b")
    c.connection_closed("a")
    assert c.connections == 1 and "a" not in c.host_connections
    assert c.overflow_connections == 2  # counted even when the one-per-endpoint rule lets it through


def test_circuit_wait_queue_fifo_and_unwait() -> None:
    c = Circuit(CircuitLimits(max_connections=1))
    c.wait("a", "s1")
    c.wait("a", "s2")
    c.wait("a", "s3")
    assert c.unwait("a", "s2")
    assert not c.unwait("a", "zz")
    assert c.next_waiter("a") == "s1"
    assert c.next_waiter("a") == "s3"
    assert c.next_waiter("a") is None and not c.waiters


def test_circuit_retries() -> None:
    c = Circuit(CircuitLimits(max_retries=1))
    assert c.try_retry() and not c.try_retry()
    c.end_retry()
    assert c.try_retry()
    assert c.overflow_retries == 1


# --------------------------------------------------------------------------- outlier


def test_consecutive_5xx_ejects_and_returns_after_base_time() -> None:
    det, eps, clock, bal = _detector(2, consecutive_5xx=3, max_ejection_percent=100, interval=1.0, base_ejection_time=5.0)
    mon = eps[0].outlier
    for _ in range(2):
        mon.put_http_code(500)
    assert not mon.ejected
    mon.put_http_code(503)
    assert mon.ejected and not eps[0].healthy and det.ejections_active == 1
    # The balancer no longer picks it.
    assert {bal.choose() for _ in range(10)} == {eps[1]}
    clock.now += 4.9
    assert det.on_interval() and mon.ejected
    clock.now += 0.1
    det.on_interval()
    assert not mon.ejected and eps[0].healthy
    assert eps[0] in {bal.choose() for _ in range(10)}


def test_success_resets_counter() -> None:
    det, eps, clock, _ = _detector(2, consecutive_5xx=3, max_ejection_percent=100)
    mon = eps[0].outlier
    mon.put_http_code(500)
    mon.put_http_code(500)
    mon.put_http_code(200)
    mon.put_http_code(500)
    mon.put_http_code(500)
    assert not mon.ejected


def test_max_ejection_percent_default_10_blocks_small_clusters() -> None:
    det, eps, clock, _ = _detector(2, consecutive_5xx=1)
    eps[0].outlier.put_http_code(500)
    assert not eps[0].outlier.ejected and det.ejections_overflow == 1
    det10, eps10, _, _ = _detector(10, consecutive_5xx=1)
    eps10[0].outlier.put_http_code(500)
    assert eps10[0].outlier.ejected
    eps10[1].outlier.put_http_code(500)
    assert not eps10[1].outlier.ejected  # 20% > 10%


def test_gateway_errors_not_enforced_unless_configured() -> None:
    det, eps, clock, _ = _detector(2, consecutive_5xx=0, enforcing_5xx=0, max_ejection_percent=100)
    mon = eps[0].outlier
    for _ in range(10):
        mon.put_http_code(502)
    assert not mon.ejected
    cfg = od.OutlierConfig.from_istio(SimpleNamespace(consecutive_gateway_errors=2, consecutive_5xx_errors=0, max_ejection_percent=100))
    det2 = od.OutlierDetector(cfg, eps2 := _eps(2), clock=Clock())
    eps2[0].outlier.put_http_code(500)  # not a gateway error: resets the gateway counter
    eps2[0].outlier.put_http_code(502)
    assert not eps2[0].outlier.ejected
    eps2[0].outlier.put_http_code(504)
    assert eps2[0].outlier.ejected and det2.ejections_active == 1


def test_backoff_multiplies_ejection_time_and_decays() -> None:
    det, eps, clock, _ = _detector(2, consecutive_5xx=1, max_ejection_percent=100, interval=1.0, base_ejection_time=2.0)
    mon = eps[0].outlier
    mon.put_http_code(500)
    assert mon.backoff == 1
    clock.now += 2.0
    det.on_interval()
    assert not mon.ejected
    # Re-ejected before a full interval passed healthy: 2 x base.
    mon.put_http_code(500)
    assert mon.ejected and mon.backoff == 2 and mon.num_ejections == 2
    clock.now += 3.9
    det.on_interval()
    assert mon.ejected
    clock.now += 0.1
    det.on_interval()
    assert not mon.ejected
    # Healthy ticks decay the backoff, then the timer may stop.
    clock.now += 1.0
    assert det.on_interval()
    clock.now += 1.0
    assert not det.on_interval()
    assert mon.backoff == 0


def test_local_origin_split() -> None:
    det, eps, clock, _ = _detector(2, split_local_origin=True, consecutive_local_origin=2, max_ejection_percent=100)
    mon = eps[0].outlier
    mon.put_result(od.CONNECT_FAILED)
    mon.put_result(od.CONNECT_SUCCESS)  # resets
    mon.put_result(od.CONNECT_FAILED)
    assert not mon.ejected and mon.consecutive_5xx == 0
    mon.put_result(od.TIMEOUT)
    assert mon.ejected


def test_local_origin_unsplit_counts_as_503() -> None:
    det, eps, clock, _ = _detector(2, consecutive_5xx=2, max_ejection_percent=100)
    mon = eps[0].outlier
    mon.put_result(od.CONNECT_SUCCESS)  # not reported without the split
    mon.put_result(od.CONNECT_FAILED)
    assert mon.consecutive_5xx == 1 and mon.consecutive_gateway == 1
    mon.put_result(od.TIMEOUT, 504)
    assert mon.ejected


def test_panic_uses_all_hosts() -> None:
    det, eps, clock, bal = _detector(2, consecutive_5xx=1, max_ejection_percent=100, min_health_percent=60)
    eps[0].outlier.put_http_code(500)
    # 50% healthy < 60% panic threshold: both hosts are picked.
    assert bal.in_panic
    assert {bal.choose() for _ in range(20)} == set(eps)
    eps[1].outlier.put_http_code(500)
    assert {bal.choose() for _ in range(20)} == set(eps)


def test_all_ejected_without_panic_is_no_healthy_upstream() -> None:
    det, eps, clock, bal = _detector(2, consecutive_5xx=1, max_ejection_percent=100)
    eps[0].outlier.put_http_code(500)
    eps[1].outlier.put_http_code(500)
    assert det.ejections_active == 2
    assert bal.choose() is None


def test_from_istio_defaults() -> None:
    cfg = od.OutlierConfig.from_istio(SimpleNamespace())
    assert (cfg.consecutive_5xx, cfg.enforcing_5xx, cfg.enforcing_gateway) == (5, 100, 0)
    assert (cfg.interval, cfg.base_ejection_time, cfg.max_ejection_percent, cfg.max_ejection_time) == (10.0, 30.0, 10, 300.0)
    off = od.OutlierConfig.from_istio(SimpleNamespace(consecutive_5xx_errors=0))
    assert off.enforcing_5xx == 0
