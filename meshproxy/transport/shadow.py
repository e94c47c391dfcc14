"""Request mirroring (VirtualService ``mirror``/``mirrors[]``): fire-and-forget shadow copies.

A ``ShadowRequest`` sends a copy of the request to one endpoint of the mirror
cluster, on its own upstream connection, and throws the answer away.  It never
touches the main request: it does not pause the client, its failures are
silent, and when its own buffer would pass the per-request buffer limit it is
dropped.

What the shadow carries (Envoy 1.40, checked on the wire): the main upstream
request's head with ``x-envoy-attempt-count: 1``, then ``x-envoy-internal:
true`` and ``x-forwarded-for: 192.0.2.2`` (Envoy's async client stands in that
documentation address as the shadow's downstream), and the same body.  The
Host is unchanged: Istio >= 1.28 sets ``disable_shadow_host_suffix_append``
(DISABLE_SHADOW_HOST_SUFFIX), so no ``-shadow`` suffix.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..core.retry import RETRY_BUFFER_LIMIT

if TYPE_CHECKING:  # pragma: no cover
    from ..core.snapshot import Cluster
    from .upstream import UpstreamConnection

_SHADOW_TAIL = b"x-envoy-internal: true\r\nx-forwarded-for: 192.0.2.2\r\n"
_TE = b"transfer-encoding: chunked\r\n"


def shadow_head(prefix: bytes, suffix: bytes) -> bytes:
    """The shadow's request head from the main request's (prefix, suffix) split at the attempt count."""
    body = suffix[:-2]  # without the blank line
    chunked = body.endswith(_TE)
    if chunked:
        body = body[: -len(_TE)]
    return prefix + b"x-envoy-attempt-count: 1\r\n" + body + _SHADOW_TAIL + (_TE if chunked else b"") + b"\r\n"


class ShadowRequest:
    """One shadow copy in flight (the ``stream`` of its upstream connection)."""

    __slots__ = ("state", "chunked", "method", "pending", "pending_size", "conn", "ended", "trailers", "done", "cork", "keep_alive", "sent_end")

    def __init__(self, state: Any, cluster: "Cluster", head: bytes, method: str, chunked: bool, hash_key: int | None) -> None:
        self.state = state
        self.chunked = chunked
        self.method = method
        self.pending: list[bytes] = [head]
        self.pending_size = 0
        self.conn: UpstreamConnection | None = None
        self.ended = False
        self.sent_end = False
        self.trailers: Any = None
        self.done = False
        self.cork: list[bytes] | None = None
        self.keep_alive = True
        endpoint = cluster.balancer.choose(hash_key, None) if cluster.balancer is not None else None
        if endpoint is None:
            self.done = True
            return
        conn = state.pool.take(endpoint.key)
        if conn is not None:
            self._attach(conn)
        else:
            state.loop.create_task(self._connect(endpoint, cluster.connect_timeout))

    async def _connect(self, endpoint: Any, timeout: float) -> None:
        try:
            conn = await self.state.pool.connect(endpoint.address, endpoint.port, endpoint.key, timeout)
        except (OSError, asyncio.TimeoutError):
            self.done = True
            return
        if self.done:
            conn.close()
            return
        self._attach(conn)

    def _attach(self, conn: "UpstreamConnection") -> None:
        conn.stream = self  # type: ignore[assignment]
        conn.requests += 1
        conn.codec.expect(self.method)
        self.conn = conn
        transport = conn.transport
        if transport is None:
            self.abandon()
            return
        transport.writelines(self.pending)
        self.pending = []
        if self.ended:
            self._write_end()

    def _frame(self, data: bytes) -> list[bytes]:
        return [b"%x\r\n" % len(data), data, b"\r\n"] if self.chunked else [data]

    def feed(self, data: bytes) -> None:
        """A piece of the request body, as the main request received it."""
        if self.done or not data:
            return
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.writelines(self._frame(data))
            if conn.transport.get_write_buffer_size() > RETRY_BUFFER_LIMIT:
                self.abandon()
            return
        self.pending_size += len(data)
        if self.pending_size > RETRY_BUFFER_LIMIT:
            self.abandon()
            return
        self.pending.extend(self._frame(data))

    def end(self, trailers: Any = None) -> None:
        if self.done:
            return
        self.ended = True
        self.trailers = trailers
        if self.conn is not None:
            self._write_end()

    def _write_end(self) -> None:
        if self.sent_end or not self.chunked:
            self.sent_end = True
            return
        self.sent_end = True
        transport = self.conn.transport if self.conn is not None else None
        if transport is None:
            return
        trailers = self.trailers
        if trailers:
            transport.write(b"0\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in trailers) + b"\r\n")
        else:
            transport.write(b"0\r\n\r\n")

    def abandon(self) -> None:
        """Give up on this shadow (the main request never notices)."""
        self.done = True
        self.pending = []
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.stream = None
            conn.close()

    # -- the upstream connection's stream interface: the answer is discarded
    def uncork(self) -> None:
        self.cork = None

    def on_response_head(self, rh: Any) -> None:
        if rh.status >= 200:
            self.keep_alive = rh.keep_alive

    def on_response_data(self, data: bytes) -> None:
        pass

    def on_response_end(self, conn: "UpstreamConnection", trailers: Any) -> None:
        self.conn = None
        conn.stream = None
        if self.sent_end and self.keep_alive and not conn.closed:
            self.state.pool.put(conn)
        else:
            conn.close()
        self.done = True

    def upstream_lost(self, conn: "UpstreamConnection", exc: Exception | None) -> None:
        self.conn = None
        self.done = True

    def upstream_protocol_error(self, conn: "UpstreamConnection", error: Any) -> None:
        self.conn = None
        self.done = True

    def pause_downstream_reading(self) -> None:
        pass

    def resume_downstream_reading(self) -> None:
        pass
