"""The event-loop side of outlier detection: the per-cluster interval timer.

``meshproxy.core.outlier.OutlierDetector`` is sans-IO; this runs its
``on_interval`` every ``interval`` seconds while it has something to do (an
ejected host, or a backoff to decay), and stops otherwise -- the stream arms it
again at the next ejection.  Envoy's timer runs for the cluster's whole life;
the only difference is the phase of the ticks, which Envoy leaves arbitrary too.
"""

from __future__ import annotations

import asyncio
from typing import Any


def arm_outlier_timer(loop: asyncio.AbstractEventLoop, detector: Any) -> None:
    if detector.armed:
        return
    detector.armed = True

    def tick() -> None:
        if detector.on_interval():
            loop.call_later(detector.config.interval, tick)
        else:
            detector.armed = False

    loop.call_later(detector.config.interval, tick)
