"""Upstream connections and the per-endpoint connection pool.

One ``UpstreamConnection`` is one TCP connection to one endpoint, carrying one
request at a time (HTTP/1.1).  When its response ends cleanly and both sides
agreed to keep it alive, it goes back to the pool of its endpoint, newest
first, so a busy endpoint reuses warm connections.  The pool is keyed by
``address:port`` (a cluster with circuit breaking uses its own key per endpoint,
as Envoy pools per cluster) and outlives config reloads.

Idle connections are closed after their cluster's idle timeout (Envoy's
``common_http_protocol_options.idle_timeout``, 1 h by default under Istio): a
sweep runs while there are idle connections, so a request pays one clock read.

A connection counted by a cluster's ``Circuit`` gives its slot back when it
closes, and wakes a request waiting for a connection to the same endpoint.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any, Callable

from ..protocols.events import ProtocolError, ResponseHead

if TYPE_CHECKING:  # pragma: no cover
    from .stream import ProxyStream

HIGH_WATER = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """An HTTP/1.1 client connection driven by the ``ProxyStream`` attached to it."""

    __slots__ = ("pool", "key", "transport", "codec", "stream", "closed", "requests", "write_paused", "local_address",
                 "circuit", "idle_deadline")

    def __init__(self, pool: "UpstreamPool", key: str, codec_factory: Callable[[Any], Any]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.codec = codec_factory(self)
        self.stream: ProxyStream | None = None
        self.closed = False
        self.requests = 0
        self.write_paused = False
        self.local_address = ""
        #: The cluster ``Circuit`` counting this connection (None: not counted).
        self.circuit: Any = None
        self.idle_deadline = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]
        local = transport.get_extra_info("sockname")
        if local:
            self.local_address = f"{local[0]}:{local[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.pool.opened += 1

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is None:
            self.codec.feed(data)
            return
        stream.cork = []
        try:
            self.codec.feed(data)
        finally:
            stream.uncork()

    def eof_received(self) -> bool:
        self.codec.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.circuit is not None:
            self.release_circuit()
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        stream = self.stream
        if stream is not None:
            stream.pause_downstream_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        stream = self.stream
        if stream is not None:
            stream.resume_downstream_reading()

    # -- ResponseHandler (called by the codec)
    def on_response_head(self, head: ResponseHead) -> None:
        stream = self.stream
        if stream is not None:
            stream.on_response_head(head)

    def on_response_data(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.on_response_data(data)

    def on_response_end(self, trailers: Any) -> None:
        stream = self.stream
        if stream is not None:
            stream.on_response_end(self, trailers)

    def on_protocol_error(self, error: ProtocolError) -> None:
        stream = self.stream
        self.stream = None
        self.close()
        if stream is not None:
            stream.upstream_protocol_error(self, error)

    # --
    def close(self) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.circuit is not None:
            self.release_circuit()
        if self.transport is not None:
            self.transport.close()

    def release_circuit(self) -> None:
        """Give the connection slot back to its cluster and let a waiting request connect."""
        circuit = self.circuit
        self.circuit = None
        circuit.connection_closed(self.key)
        if circuit.waiters:
            wake_waiter(circuit, self.key)


def wake_waiter(circuit: Any, key: str) -> None:
    """The next request waiting for a connection to ``key`` tries again, on the next loop turn."""
    waiter = circuit.next_waiter(key)
    if waiter is not None:
        asyncio.get_running_loop().call_soon(waiter.wake)


class UpstreamPool:
    """Idle keep-alive connections per endpoint, newest first."""

    def __init__(self, codec_factory: Callable[[Any], Any]) -> None:
        self.codec_factory = codec_factory
        self.idle: dict[str, list[UpstreamConnection]] = {}
        self.opened = 0
        self.idle_closed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0

    def take(self, key: str) -> UpstreamConnection | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def put(self, conn: UpstreamConnection, idle_timeout: float = 3600.0) -> None:
        if conn.closed:
            return
        conn.stream = None
        conns = self.idle.get(conn.key)
        if conns is None:
            conns = self.idle[conn.key] = []
        conns.append(conn)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_event_loop()
        if idle_timeout > 0:
            conn.idle_deadline = loop.time() + idle_timeout
            if idle_timeout < self._sweep_every * 4:
                self._sweep_every = max(0.05, idle_timeout / 4)
        else:
            conn.idle_deadline = float("inf")
        if self._sweep is None:
            self._sweep = loop.call_later(self._sweep_every, self._sweep_idle)
        circuit = conn.circuit
        if circuit is not None and circuit.waiters:
            wake_waiter(circuit, conn.key)

    def _sweep_idle(self) -> None:
        """Close idle connections past their idle timeout; run again while any are idle."""
        self._sweep = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for conns in list(self.idle.values()):
            for conn in [c for c in conns if c.idle_deadline <= now]:
                self.idle_closed += 1
                conn.close()
        if any(self.idle.values()):
            self._sweep = loop.call_later(self._sweep_every, self._sweep_idle)

    def discard(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    async def connect(self, address: str, port: int, key: str, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        factory = self.codec_factory

        def make() -> UpstreamConnection:
            return UpstreamConnection(self, key, factory)

        coro = loop.create_connection(make, address, port)
        if timeout > 0:
            _, conn = await asyncio.wait_for(coro, timeout)
        else:
            _, conn = await coro
        return conn

    def stats(self) -> dict[str, int]:
        return {key: len(conns) for key, conns in self.idle.items() if conns}

    def close_all(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()
