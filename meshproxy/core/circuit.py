"""Per-cluster circuit breaking: Envoy's ``ResourceManager`` for one cluster, sans-IO.

DestinationRule ``connectionPool`` becomes one ``CircuitLimits`` per cluster
(Istio's ``applyConnectionPool``; every limit it leaves unset is 2^32-1, and a
cluster whose DestinationRule has no ``connectionPool`` gets no ``Circuit`` at
all, so it pays nothing per request):

=================================== ===================================
``tcp.maxConnections``              ``max_connections``
``http.http1MaxPendingRequests``    ``max_pending_requests``
``http.http2MaxRequests``           ``max_requests`` (active requests, HTTP/1 and 2)
``http.maxRetries``                 ``max_retries`` (concurrent retries)
=================================== ===================================

The transport asks before it takes a resource and gives it back when done; a
refused resource is Envoy's *overflow*: 503 ``... reset reason: overflow``,
flag ``UO``, and no retry (Envoy's ``RetryStateImpl`` never retries an
overflow).  What counts as what, as in Envoy's HTTP/1 connection pool
(``ConnPoolImplBase``):

* a request is *pending* from the moment it finds no idle connection until a
  connection is attached to it (including while its new connection connects);
* a request is *active* while it is attached to a connection;
* a new connection is opened only under ``max_connections`` -- except that an
  endpoint with no connection at all always gets one, so its pending requests
  can make progress (Envoy's rule in ``tryCreateNewConnection``);
* a pending request that could not open a connection waits in its endpoint's
  queue and gets the next connection released to that endpoint.
"""

from __future__ import annotations

from collections import deque
from typing import Any

UNLIMITED = 2**32 - 1


class CircuitLimits:
    """The thresholds (immutable once compiled)."""

    __slots__ = ("max_connections", "max_pending_requests", "max_requests", "max_retries")

    def __init__(
        self,
        max_connections: int = UNLIMITED,
        max_pending_requests: int = UNLIMITED,
        max_requests: int = UNLIMITED,
        max_retries: int = UNLIMITED,
    ) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.max_requests = max_requests
        self.max_retries = max_retries

    def describe(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Circuit:
    """The live counters of one cluster, and the queues of requests waiting for a connection.

    ``waiters`` maps a pool key (one endpoint of this cluster) to the requests
    waiting for a connection to it, oldest first.  The queue holds opaque
    objects (the transport's streams); the circuit only orders them.
    """

    __slots__ = ("limits", "connections", "pending", "requests", "retries", "host_connections", "waiters",
                 "overflow_pending", "overflow_requests", "overflow_connections", "overflow_retries")

    def __init__(self, limits: CircuitLimits) -> None:
        self.limits = limits
        self.connections = 0
        self.pending = 0
        self.requests = 0
        self.retries = 0
        #: open connections per pool key (for the "always one connection per endpoint" rule)
        self.host_connections: dict[str, int] = {}
        self.waiters: dict[str, deque[Any]] = {}
        # Envoy's cluster stats: upstream_rq_pending_overflow, upstream_cx_overflow, upstream_rq_retry_overflow
        self.overflow_pending = 0
        self.overflow_requests = 0
        self.overflow_connections = 0
        self.overflow_retries = 0

    # -- requests attached to a connection
    def try_request(self) -> bool:
        """Take an active-request slot; False (counted as overflow) at ``max_requests``."""
        if self.requests >= self.limits.max_requests:
            self.overflow_requests += 1
            return False
        self.requests += 1
        return True

    def end_request(self) -> None:
        self.requests -= 1

    # -- requests waiting for a connection
    def try_pend(self) -> bool:
        """Take a pending-request slot; False (counted as overflow) at ``max_pending_requests``."""
        if self.pending >= self.limits.max_pending_requests:
            self.overflow_pending += 1
            return False
        self.pending += 1
        return True

    def end_pending(self) -> None:
        self.pending -= 1

    # -- connections
    def may_connect(self, key: str) -> bool:
        """May a new connection to ``key`` be opened now?"""
        if self.connections < self.limits.max_connections:
            return True
        self.overflow_connections += 1
        # Envoy: an endpoint with no connection at all always gets one.
        return not self.host_connections.get(key)

    def connection_opened(self, key: str) -> None:
        self.connections += 1
        self.host_connections[key] = self.host_connections.get(key, 0) + 1

    def connection_closed(self, key: str) -> None:
        self.connections -= 1
        n = self.host_connections.get(key, 0) - 1
        if n > 0:
            self.host_connections[key] = n
        else:
            self.host_connections.pop(key, None)

    # -- the wait queue
    def wait(self, key: str, item: Any) -> None:
        q = self.waiters.get(key)
        if q is None:
            q = self.waiters[key] = deque()
        q.append(item)

    def unwait(self, key: str, item: Any) -> bool:
        q = self.waiters.get(key)
        if q is None:
            return False
        try:
            q.remove(item)
        except ValueError:
            return False
        if not q:
            del self.waiters[key]
        return True

    def next_waiter(self, key: str) -> Any | None:
        q = self.waiters.get(key)
        if not q:
            return None
        item = q.popleft()
        if not q:
            del self.waiters[key]
        return item

    # -- retries
    def try_retry(self) -> bool:
        """Take a concurrent-retry slot; False (counted as overflow) at ``max_retries``."""
        if self.retries >= self.limits.max_retries:
            self.overflow_retries += 1
            return False
        self.retries += 1
        return True

    def end_retry(self) -> None:
        self.retries -= 1

    def stats(self) -> dict[str, int]:
        return {
            "cx_open": self.connections,
            "rq_pending_open": self.pending,
            "rq_open": self.requests,
            "rq_retry_open": self.retries,
            "upstream_rq_pending_overflow": self.overflow_pending + self.overflow_requests,
            "upstream_cx_overflow": self.overflow_connections,
            "upstream_rq_retry_overflow": self.overflow_retries,
        }
