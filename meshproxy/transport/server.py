"""The running proxy: shared state for all connections, and the listeners.

``ProxyState`` is what every connection reads: the current ``Snapshot``
(swapped as one reference on reload), the upstream pool, the random source,
the cached ``date`` header and the codec factories.  ``ProxyServer`` opens one
listener per ``ListenerSpec`` of the snapshot.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import random
import socket
import struct
import time
from email.utils import formatdate
from typing import Any, Callable

from ..core.endpoints import Endpoint
from ..core.snapshot import ListenerSpec, Snapshot
from .downstream import DownstreamConnection
from .limits import DownstreamLimits
from .upstream import UpstreamPool

log = logging.getLogger("meshproxy.server")


def codec_factories(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(server codec factory, client codec factory) for ``httptools`` (default) or ``h11``."""
    if name == "h11":
        from ..protocols import h11_codec as mod
    else:
        from ..protocols import http1 as mod  # type: ignore[no-redef]
    return mod.ServerCodec, mod.ClientCodec


def local_ipv4_address() -> str:
    """The first non-loopback IPv4 address of this host (what Envoy's local_info uses)."""
    try:
        names = socket.if_nameindex()
    except OSError:
        names = []
    for _, name in names:
        if name == "lo":
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            address = socket.inet_ntoa(packed[20:24])
        except OSError:
            continue
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


_ = array  # keep the import list honest for platforms without fcntl ioctl


class ProxyState:
    """Everything the data path shares across connections."""

    def __init__(self, snapshot: Snapshot, *, codec: str = "httptools", rng: random.Random | None = None,
                 limits: DownstreamLimits | None = None) -> None:
        self.snapshot = snapshot
        self.loop = asyncio.get_event_loop()
        server_codec, client_codec = codec_factories(codec)
        self.server_codec: Callable[[Any], Any] = server_codec
        self.pool = UpstreamPool(client_codec)
        self.rng = rng or random.Random()
        self.randrange = self.rng.randrange
        self._date = b""
        self._date_second = -1
        self._local_ip = local_ipv4_address().encode()
        self._passthrough: dict[tuple[str, int], Endpoint] = {}
        self.connections: set[DownstreamConnection] = set()
        self.protocol_errors = 0
        self.requests_total = 0
        self.started = time.time()
        #: Istio's request metrics (``meshproxy.telemetry.metrics.RequestMetrics``), when enabled.
        self.metrics: Any = None
        #: The tracer (``meshproxy.telemetry.tracing.Tracer``), when a collector is configured.
        self.tracer: Any = None
        #: The access log (``meshproxy.telemetry.access_log.AccessLog``), when enabled.
        self.access_log: Any = None
        #: Config reloads that took effect / were refused (counted for /stats and Prometheus).
        self.reloads = 0
        self.reload_failures = 0
        #: Upstream retries started (Envoy's cluster.upstream_rq_retry, summed over clusters).
        self.upstream_rq_retry = 0
        #: Add to ``loop.time()`` for wall-clock time (access log START_TIME).
        self.wall_offset = time.time() - self.loop.time()
        #: Downstream limits (request-headers timeout, idle timeout, connection cap); the CLI sets them.
        self.limits = limits if limits is not None else DownstreamLimits()
        #: The downstream idle sweep's timer (meshproxy.transport.downstream), while it runs.
        self.idle_sweep: Any = None
        #: Connections closed by the cap / the idle timeout / the request-headers timeout.
        self.downstream_cx_overflow = 0
        self.downstream_cx_idle_timeout = 0
        self.downstream_rq_header_timeout = 0

    def date(self) -> bytes:
        """The ``date`` header value, formatted once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    def xff_address(self, peer_ip: str) -> bytes:
        """The address a gateway appends to x-forwarded-for.

        Envoy (use_remote_address) appends the peer address, except that a
        loopback peer is replaced by this host's own address.
        """
        if peer_ip.startswith("127.") or peer_ip == "::1" or not peer_ip:
            return self._local_ip
        return peer_ip.encode()

    def passthrough_endpoint(self, host: str, port: int) -> Endpoint:
        """The endpoint for PassthroughCluster: the host the client named."""
        key = (host, port)
        ep = self._passthrough.get(key)
        if ep is None:
            if len(self._passthrough) > 4096:
                self._passthrough.clear()
            address = host[1:-1] if host.startswith("[") else host
            ep = self._passthrough[key] = Endpoint(address, port)
        return ep

    def connection_opened(self, conn: DownstreamConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: DownstreamConnection) -> None:
        self.connections.discard(conn)

    def on_stream_complete(self, stream: Any) -> None:
        """Every finished request passes here once: count it (telemetry reads the stream)."""
        self.requests_total += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.record(
                stream.endpoint,
                stream.cluster,
                stream.status,
                stream.flags,
                (self.loop.time() - stream.t_start) * 1000.0,
                stream.request_body_bytes,
                stream.response_body_bytes,
            )
        access_log = self.access_log
        if access_log is not None:
            access_log.log(stream)
        span = stream.span
        if span is not None:
            endpoint, cluster = stream.endpoint, stream.cluster
            span.finish(
                status=stream.status,
                response_flags=stream.flags,
                upstream_cluster=cluster.name if cluster is not None and endpoint is not None else "",
                upstream_host=endpoint.key if endpoint is not None else "",
                request_size=stream.request_body_bytes,
                response_size=stream.response_body_bytes,
            )


class ProxyServer:
    """Opens the snapshot's listeners, swaps snapshots on reload, drains on shutdown."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        #: (bind, port) -> (listening server, its spec)
        self._listeners: dict[tuple[str, int], tuple[asyncio.AbstractServer, ListenerSpec]] = {}
        self.draining = False

    @property
    def servers(self) -> list[asyncio.AbstractServer]:
        return [server for server, _ in self._listeners.values()]

    @property
    def listening(self) -> list[ListenerSpec]:
        return [spec for _, spec in self._listeners.values()]

    async def start(self) -> None:
        await self._open(self.state.snapshot.listeners)

    async def _open(self, specs: "tuple[ListenerSpec, ...] | list[ListenerSpec]") -> None:
        loop = asyncio.get_running_loop()
        state = self.state
        for spec in specs:

            def factory(spec: ListenerSpec = spec) -> DownstreamConnection:
                return DownstreamConnection(state, spec)

            server = await loop.create_server(factory, spec.bind, spec.port, backlog=2048, reuse_address=True)
            self._listeners[(spec.bind, spec.port)] = (server, spec)
            log.info("listening on %s:%d (%s)", spec.bind, spec.port, spec.name)

    @property
    def ready(self) -> bool:
        servers = self.servers
        return bool(servers) and not self.draining and all(s.is_serving() for s in servers)

    async def apply(self, snapshot: Snapshot) -> None:
        """Publish a new snapshot as one reference swap, then open/close listeners that changed.

        Requests already routed keep the compiled objects they hold, so they
        finish on the old config; the next request reads the new one.
        """
        self.state.snapshot = snapshot
        wanted = {(spec.bind, spec.port): spec for spec in snapshot.listeners}
        for key in [k for k in self._listeners if k not in wanted]:
            server, spec = self._listeners.pop(key)
            server.close()
            log.info("closed listener %s:%d (%s)", spec.bind, spec.port, spec.name)
        new = [spec for key, spec in wanted.items() if key not in self._listeners]
        if new and not self.draining:
            await self._open(new)

    swap = apply

    def drain_listeners(self) -> None:
        """Stop accepting connections (Envoy's ``POST /drain_listeners``); served ones go on."""
        self.draining = True
        for server in self.servers:
            server.close()

    async def drain(self, timeout: float) -> None:
        """Graceful shutdown (SIGTERM): stop accepting; every response from now on carries
        ``connection: close`` and its connection closes after it; after ``timeout`` seconds
        (Istio's terminationDrainDuration) whatever is still open is closed.

        Idle keep-alive connections are not cut early: a client may have a request on the wire,
        and closing under it would lose a request the proxy had in effect accepted.
        """
        self.drain_listeners()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state.connections and loop.time() < deadline:
            for conn in list(self.state.connections):
                conn.draining = True
            await asyncio.sleep(0.02)
        for conn in list(self.state.connections):
            if not conn.close_if_idle():
                log.warning("drain: closing a connection with a request still in flight after %.1fs", timeout)
                conn.abort()

    async def close(self) -> None:
        self.drain_listeners()
        for conn in list(self.state.connections):
            conn.close_if_idle()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        self.state.pool.close_all()
