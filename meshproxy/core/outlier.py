"""Outlier detection (passive health checking) for one cluster, sans-IO.

A reimplementation of Envoy's ``Outlier::DetectorImpl`` (source/common/upstream/
outlier_detection_impl.cc) as Istio configures it (``applyOutlierDetection`` in
cluster_traffic_policy.go): consecutive-error ejection only -- Istio sets
``enforcing_success_rate`` to 0.

Configuration, Istio field → Envoy meaning → default when unset:

* ``consecutive5xxErrors`` → ``consecutive_5xx``, enforced 100% (0 disables) → 5, enforced;
* ``consecutiveGatewayErrors`` (502/503/504) → ``consecutive_gateway_failure``,
  enforced 100% when > 0 → Envoy's 5, but *not enforced* (Envoy's default 0%);
* ``splitExternalLocalOriginErrors`` + ``consecutiveLocalOriginFailures`` → 5, enforced;
* ``interval`` 10 s, ``baseEjectionTime`` 30 s, ``max_ejection_time``
  max(300 s, base), ``maxEjectionPercent`` 10.

What the transport reports per upstream attempt (as Envoy's router and pools do):

* every upstream response status: ``put_http_code(status)``;
* a connect failure or a reset/protocol error of the attempt:
  ``put_result(CONNECT_FAILED)``; a timeout: ``put_result(TIMEOUT)``; a
  successful connect: ``put_result(CONNECT_SUCCESS)`` (only matters when
  local-origin errors are split).  Without the split a local-origin failure
  counts as a 503 (504 for a timeout) -- it is both a 5xx and a gateway error.

Semantics kept exactly: a counter ejects when it *reaches* its threshold
(``==``), and is reset after the ejection attempt; an already ejected host
ignores further errors; ejection is refused when ``100 * (ejected + 1) / hosts
> maxEjectionPercent`` (so with the default 10 % fewer than ten hosts are never
ejected); an ejected host returns on the first interval tick at which
``min(base * backoff, max_ejection_time)`` has passed since its ejection; the
backoff grows by one per ejection and shrinks by one per interval tick the host
spends healthy.  Unejection resets all consecutive counters.

Time is injected (``clock``), and so is what happens on a health change
(``on_change``: the cluster refreshes its balancer).  The transport runs the
interval timer and calls ``on_interval()``.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Sequence

from .endpoints import Endpoint

CONNECT_SUCCESS = 1  # LocalOriginConnectSuccess
CONNECT_FAILED = 2  # LocalOriginConnectFailed (also resets and protocol errors of an attempt)
TIMEOUT = 3  # LocalOriginTimeout

CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"

_GATEWAY = (502, 503, 504)


class OutlierConfig:
    """Envoy's ``OutlierDetection`` after Istio's translation (seconds, percents)."""

    __slots__ = (
        "consecutive_5xx", "enforcing_5xx", "consecutive_gateway", "enforcing_gateway",
        "split_local_origin", "consecutive_local_origin", "enforcing_local_origin",
        "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "min_health_percent",
    )

    def __init__(
        self,
        *,
        consecutive_5xx: int = 5,
        enforcing_5xx: int = 100,
        consecutive_gateway: int = 5,
        enforcing_gateway: int = 0,
        split_local_origin: bool = False,
        consecutive_local_origin: int = 5,
        enforcing_local_origin: int = 100,
        interval: float = 10.0,
        base_ejection_time: float = 30.0,
        max_ejection_time: float | None = None,
        max_ejection_percent: int = 10,
        min_health_percent: int = 0,
    ) -> None:
        self.consecutive_5xx = consecutive_5xx
        self.enforcing_5xx = enforcing_5xx
        self.consecutive_gateway = consecutive_gateway
        self.enforcing_gateway = enforcing_gateway
        self.split_local_origin = split_local_origin
        self.consecutive_local_origin = consecutive_local_origin
        self.enforcing_local_origin = enforcing_local_origin
        self.interval = interval
        self.base_ejection_time = base_ejection_time
        self.max_ejection_time = max(300.0, base_ejection_time) if max_ejection_time is None else max_ejection_time
        self.max_ejection_percent = max_ejection_percent
        self.min_health_percent = min_health_percent

    @classmethod
    def from_istio(cls, od: object) -> "OutlierConfig":
        """Istio's ``applyOutlierDetection`` for a DestinationRule ``outlierDetection`` model."""
        kw: dict[str, object] = {}
        c5 = getattr(od, "consecutive_5xx_errors", None)
        if c5 is not None:
            kw["consecutive_5xx"] = int(c5)
            kw["enforcing_5xx"] = 100 if c5 > 0 else 0
        gw = getattr(od, "consecutive_gateway_errors", None)
        if gw is not None:
            kw["consecutive_gateway"] = int(gw)
            kw["enforcing_gateway"] = 100 if gw > 0 else 0
        if getattr(od, "split_external_local_origin_errors", None):
            kw["split_local_origin"] = True
            lo = getattr(od, "consecutive_local_origin_failures", None)
            if lo:
                kw["consecutive_local_origin"] = int(lo)
        interval = getattr(od, "interval", None)
        if interval is not None:
            kw["interval"] = float(interval)
        base = getattr(od, "base_ejection_time", None)
        if base is not None:
            kw["base_ejection_time"] = float(base)
        mep = getattr(od, "max_ejection_percent", None)
        if mep:
            kw["max_ejection_percent"] = int(mep)
        mhp = getattr(od, "min_health_percent", None)
        kw["min_health_percent"] = int(mhp or 0)
        return cls(**kw)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


class HostMonitor:
    """One endpoint's counters and ejection state (Envoy's ``DetectorHostMonitorImpl``)."""

    __slots__ = ("detector", "endpoint", "consecutive_5xx", "consecutive_gateway", "consecutive_local",
                 "ejected", "num_ejections", "backoff", "last_ejection", "last_unejection")

    def __init__(self, detector: "OutlierDetector", endpoint: Endpoint) -> None:
        self.detector = detector
        self.endpoint = endpoint
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.ejected = False
        self.num_ejections = 0
        self.backoff = 0
        self.last_ejection: float | None = None
        self.last_unejection: float | None = None

    def put_http_code(self, code: int) -> None:
        """An upstream response status (each attempt's, retried or not)."""
        if 500 <= code < 600:
            cfg = self.detector.config
            if code in _GATEWAY:
                self.consecutive_gateway += 1
                if self.consecutive_gateway == cfg.consecutive_gateway:
                    self.detector._on_consecutive(self, CONSECUTIVE_GATEWAY_FAILURE)
            else:
                self.consecutive_gateway = 0
            self.consecutive_5xx += 1
            if self.consecutive_5xx == cfg.consecutive_5xx:
                self.detector._on_consecutive(self, CONSECUTIVE_5XX)
        else:
            self.consecutive_5xx = 0
            self.consecutive_gateway = 0

    def put_result(self, result: int, code: int | None = None) -> None:
        """A local-origin event: CONNECT_SUCCESS, CONNECT_FAILED or TIMEOUT."""
        cfg = self.detector.config
        if not cfg.split_local_origin:
            if code is not None:
                self.put_http_code(code)
            elif result == CONNECT_FAILED:
                self.put_http_code(503)
            elif result == TIMEOUT:
                self.put_http_code(504)
            return
        if result == CONNECT_SUCCESS:
            self.consecutive_local = 0
            return
        self.consecutive_local += 1
        if self.consecutive_local == cfg.consecutive_local_origin:
            self.detector._on_consecutive(self, CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    def describe(self) -> dict[str, object]:
        return {
            "ejected": self.ejected,
            "num_ejections": self.num_ejections,
            "consecutive_5xx": self.consecutive_5xx,
            "consecutive_gateway_failure": self.consecutive_gateway,
            "consecutive_local_origin_failure": self.consecutive_local,
        }


class OutlierDetector:
    """The cluster-wide part: ejection budget, the interval sweep, health changes."""

    __slots__ = ("config", "monitors", "clock", "on_change", "ejections_active", "rng", "armed",
                 "ejections_enforced_total", "ejections_overflow", "ejections_detected")

    def __init__(
        self,
        config: OutlierConfig,
        endpoints: Sequence[Endpoint],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.monitors: list[HostMonitor] = []
        for ep in endpoints:
            mon = HostMonitor(self, ep)
            ep.outlier = mon
            self.monitors.append(mon)
        self.ejections_active = 0
        #: Set by the transport while its interval timer runs.
        self.armed = False
        self.ejections_enforced_total = 0
        self.ejections_overflow = 0
        self.ejections_detected = 0

    # -- ejection
    def _enforced(self, kind: str) -> bool:
        cfg = self.config
        pct = {CONSECUTIVE_5XX: cfg.enforcing_5xx, CONSECUTIVE_GATEWAY_FAILURE: cfg.enforcing_gateway,
               CONSECUTIVE_LOCAL_ORIGIN_FAILURE: cfg.enforcing_local_origin}[kind]
        return pct >= 100 or (pct > 0 and self.rng.random() * 100 < pct)

    def _on_consecutive(self, mon: HostMonitor, kind: str) -> None:
        if mon.ejected:
            return
        self.ejections_detected += 1
        self._eject(mon, kind)
        if kind == CONSECUTIVE_5XX:
            mon.consecutive_5xx = 0
        elif kind == CONSECUTIVE_GATEWAY_FAILURE:
            mon.consecutive_gateway = 0
        else:
            mon.consecutive_local = 0

    def _eject(self, mon: HostMonitor, kind: str) -> None:
        cfg = self.config
        max_pct = min(100, cfg.max_ejection_percent)
        if 100.0 * (self.ejections_active + 1) / len(self.monitors) > max_pct:
            self.ejections_overflow += 1
            return
        if not self._enforced(kind):
            return
        now = self.clock()
        self.ejections_active += 1
        self.ejections_enforced_total += 1
        mon.ejected = True
        mon.endpoint.healthy = False
        mon.num_ejections += 1
        mon.last_ejection = now
        base = cfg.base_ejection_time
        if mon.backoff * base < cfg.max_ejection_time + base:
            mon.backoff += 1
        if self.on_change is not None:
            self.on_change()

    def _uneject(self, mon: HostMonitor, now: float) -> None:
        self.ejections_active -= 1
        mon.ejected = False
        mon.endpoint.healthy = True
        mon.consecutive_5xx = mon.consecutive_gateway = mon.consecutive_local = 0
        mon.last_unejection = now

    # -- the interval timer
    def on_interval(self) -> bool:
        """One sweep: return ejected hosts whose time is up, decay backoffs.

        Returns True while the timer should keep running (a host is ejected or
        still has backoff to decay); the transport stops it otherwise and arms
        it again at the next ejection.
        """
        cfg = self.config
        now = self.clock()
        changed = False
        for mon in self.monitors:
            if mon.ejected and mon.last_ejection is not None:
                if min(cfg.base_ejection_time * mon.backoff, cfg.max_ejection_time) <= now - mon.last_ejection:
                    self._uneject(mon, now)
                    changed = True
        for mon in self.monitors:
            if not mon.ejected and mon.last_unejection is not None and now - mon.last_unejection >= cfg.interval:
                if mon.backoff:
                    mon.backoff -= 1
        if changed and self.on_change is not None:
            self.on_change()
        return any(m.ejected or m.backoff for m in self.monitors)

    def stats(self) -> dict[str, int]:
        return {
            "outlier_detection.ejections_active": self.ejections_active,
            "outlier_detection.ejections_enforced_total": self.ejections_enforced_total,
            "outlier_detection.ejections_overflow": self.ejections_overflow,
            "outlier_detection.ejections_detected": self.ejections_detected,
        }
