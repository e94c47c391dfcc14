"""The client side: one ``DownstreamConnection`` per accepted TCP connection.

It feeds bytes to the HTTP/1 codec and turns the codec's callbacks into
``ProxyStream``s, one at a time.  Pipelined requests are queued (with their
bodies) and reading pauses until the current response is done, so a client
can never make the proxy buffer more than one request ahead.

Limits against slow or abusive clients (``meshproxy.transport.limits``): a cap
on concurrent connections (checked on accept), an idle timeout on kept-alive
connections (a sweep, so a request pays one integer increment), and, when
configured, a request-headers timeout (a timer only while a head is incomplete).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from ..core import local_reply
from ..protocols.events import Headers, ProtocolError, RequestHead
from .stream import ProxyStream

if TYPE_CHECKING:  # pragma: no cover
    from ..core.snapshot import ListenerSpec
    from .server import ProxyState

log = logging.getLogger("meshproxy.downstream")

_PAUSE_STREAM = 1
_PAUSE_PIPELINE = 2
_PAUSE_WRITE = 4


class _Queued:
    """A pipelined request waiting for the one before it to finish."""

    __slots__ = ("head", "chunks", "ended", "trailers")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.chunks: list[bytes] = []
        self.ended = False
        self.trailers: Headers | None = None


class DownstreamConnection(asyncio.Protocol):
    __slots__ = (
        "state",
        "listener",
        "transport",
        "codec",
        "stream",
        "queue",
        "closed",
        "peer_ip",
        "paused",
        "draining",
        "write_paused",
        "errored",
        "eof",
        "local_address",
        "remote_address",
        "served",
        "idle_mark",
        "idle_since",
        "head_timer",
        "head_timeout",
    )

    def __init__(self, state: "ProxyState", listener: "ListenerSpec") -> None:
        self.state = state
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.codec = state.server_codec(self)
        self.stream: ProxyStream | None = None
        self.queue: deque[_Queued] = deque()
        self.closed = False
        self.peer_ip = ""
        self.paused = 0
        self.draining = False
        self.write_paused = False
        self.errored = False
        self.eof = False
        self.local_address = ""
        self.remote_address = ""
        #: Requests finished on this connection; the idle sweep notices when it stops moving.
        self.served = 0
        self.idle_mark = -1
        self.idle_since = 0.0
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_timeout = state.limits.request_headers_timeout

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        state = self.state
        limits = state.limits
        if limits.max_connections and len(state.connections) >= limits.max_connections:
            # Over the cap: closed at once, before anything is read (Envoy's overload manager).
            state.downstream_cx_overflow += 1
            self.closed = True
            transport.abort()
            return
        if limits.idle_timeout > 0 and state.idle_sweep is None:
            _start_idle_sweep(state)
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=64 * 1024)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0]
            self.remote_address = f"{peer[0]}:{peer[1]}"
        local = transport.get_extra_info("sockname")
        if local:
            self.local_address = f"{local[0]}:{local[1]}"
        self.state.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.head_timeout and self.stream is None and self.head_timer is None and not self.queue:
            self.head_timer = self.state.loop.call_later(self.head_timeout, self._head_timed_out)
        self.codec.feed(data)

    def _head_timed_out(self) -> None:
        """Envoy's ``request_headers_timeout``: 408 ``request header timeout``, connection closed."""
        self.head_timer = None
        if self.closed or self.stream is not None or self.transport is None:
            return
        self.state.downstream_rq_header_timeout += 1
        self.errored = True
        self.transport.write(local_reply.render(
            408, b"request header timeout", self.state.snapshot.proxy.server_header, self.state.date(), close=True))
        self.transport.close()

    def eof_received(self) -> bool:
        self.eof = True
        self.codec.feed_eof()
        stream = self.stream
        if stream is not None and not stream.done:
            # Envoy's HTTP connection manager does not enable half-close: a client's FIN closes
            # the connection and resets the request in flight (flag DC), cancelling its upstream.
            self.stream = None
            self.queue.clear()
            stream.downstream_lost()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused over the connection cap: never counted
        self.closed = True
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.state.connection_closed(self)
        stream = self.stream
        self.stream = None
        if stream is not None:
            stream.downstream_lost()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        stream = self.stream
        if stream is not None and stream.upstream is not None and stream.upstream.transport is not None:
            stream.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        stream = self.stream
        if stream is not None and stream.upstream is not None and stream.upstream.transport is not None:
            stream.upstream.transport.resume_reading()

    # -- RequestHandler (called by the codec)
    def on_request_head(self, head: RequestHead) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.stream is None and not self.queue:
            stream = ProxyStream(self, head)
            self.stream = stream
            stream.start()
        else:
            self.queue.append(_Queued(head))
            self._pause(_PAUSE_PIPELINE)

    def on_request_data(self, data: bytes) -> None:
        if self.queue:
            self.queue[-1].chunks.append(data)
        elif self.stream is not None:
            self.stream.request_data(data)

    def on_request_end(self, trailers: Headers | None) -> None:
        if self.queue:
            q = self.queue[-1]
            q.ended = True
            q.trailers = trailers
        elif self.stream is not None:
            self.stream.request_end(trailers)

    def on_protocol_error(self, error: ProtocolError) -> None:
        """Malformed input: answer with Envoy's status (if no response started) and close."""
        if self.errored:
            return
        self.errored = True
        if error.status == 0:
            # The client went away mid-request: Envoy logs it and writes nothing.
            stream = self.stream
            self.stream = None
            self.queue.clear()
            if stream is not None:
                stream.downstream_lost()
            if self.transport is not None:
                self.transport.close()
            return
        self.state.protocol_errors += 1
        log.info("downstream protocol error from %s: %s %s", self.peer_ip, error.status, error.details)
        self.queue.clear()
        stream = self.stream
        if stream is not None and not stream.done:
            if stream.response_started:
                # Mid-request with the response already flowing: cut the connection.
                stream.downstream_lost()
                self.abort()
                return
            stream.downstream_lost()
            self.stream = None
        if self.transport is None or self.closed:
            return
        reply = local_reply.render(
            error.status,
            _error_body(error),
            self.state.snapshot.proxy.server_header,
            self.state.date(),
            close=True,
        )
        self.transport.write(reply)
        self.transport.close()

    # -- used by ProxyStream
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.writelines(parts)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading_for(self, stream: ProxyStream) -> None:
        self._pause(_PAUSE_STREAM)

    def resume_reading_for(self, stream: ProxyStream) -> None:
        self._resume(_PAUSE_STREAM)

    def stream_done(self, stream: ProxyStream, keep_alive: bool) -> None:
        self.served += 1
        if self.stream is stream:
            self.stream = None
        if self.paused & _PAUSE_STREAM:
            self._resume(_PAUSE_STREAM)
        if self.closed:
            return
        if not keep_alive or self.errored or self.eof:
            self.queue.clear()
            if self.transport is not None:
                self.transport.close()
            return
        if self.draining:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._next()

    def _next(self) -> None:
        while self.queue and self.stream is None and not self.closed:
            q = self.queue.popleft()
            stream = ProxyStream(self, q.head)
            stream.preload(q.chunks, q.ended, q.trailers)
            self.stream = stream
            stream.start()
        if not self.queue:
            self._resume(_PAUSE_PIPELINE)

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close_if_idle(self) -> bool:
        """Drain: close now when no request is in flight; otherwise after the current response."""
        self.draining = True
        if self.stream is None and not self.queue and self.transport is not None:
            self.transport.close()
            return True
        return False


def _error_body(error: ProtocolError) -> bytes:
    """Envoy's codec-error replies carry the status text as body; a missing Host gets none."""
    if error.details == "missing_host_header":
        return b""
    return local_reply.status_line(error.status)[13:-2]


def _start_idle_sweep(state: "ProxyState") -> None:
    """Close kept-alive connections idle for ``limits.idle_timeout``; runs while any are open."""
    timeout = state.limits.idle_timeout
    every = max(0.05, min(1.0, timeout / 4))
    loop = state.loop

    def sweep() -> None:
        state.idle_sweep = None
        now = loop.time()
        for conn in list(state.connections):
            if conn.stream is not None or conn.queue or conn.closed:
                conn.idle_mark = -1
                continue
            if conn.idle_mark != conn.served:
                # Idle since (about) now: the count moved, or the connection is new here.
                conn.idle_mark = conn.served
                conn.idle_since = now
            elif now - conn.idle_since >= timeout and conn.transport is not None:
                state.downstream_cx_idle_timeout += 1
                conn.transport.close()
        if state.connections:
            state.idle_sweep = loop.call_later(every, sweep)

    state.idle_sweep = loop.call_later(every, sweep)
