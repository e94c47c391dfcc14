"""The admin port (15000 by default, loopback only), shaped like Envoy's admin.

Low traffic and never on the data path, so it is deliberately simple: one
request per connection, answered and closed.  Endpoints:

``GET /ready``        200 ``LIVE`` once listeners are up, else 503 ``PRE_INITIALIZING``
``GET /config_dump``  the compiled snapshot as JSON (route configs, clusters, listeners)
``GET /clusters``     Envoy's text format: one ``cluster::host::stat::value`` line per fact
``GET /listeners``    ``name::address`` lines
``GET /server_info``  JSON: state, version, uptime, command line
``GET /stats``        a few ``name: value`` counters
``POST /quitquitquit`` stop the proxy
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from ..transport.server import ProxyServer

log = logging.getLogger("meshproxy.admin")

VERSION = "0.1.0"

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable", 400: "Bad Request"}


Reply = tuple[int, str, bytes]


class TinyHTTPServer:
    """One request per connection, answered from ``dispatch`` and closed.  Subclasses route."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.server: asyncio.AbstractServer | None = None

    def dispatch(self, method: str, target: str) -> Reply:
        raise NotImplementedError

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", b"bad request\n"
            else:
                method, target, _ = parts
                status, ctype, body = self.dispatch(method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        reason = _REASONS.get(status, "OK")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            f"cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()



class EndpointServer(TinyHTTPServer):
    """A port that serves a fixed set of paths (the stats port 15090, the health port 15021)."""

    def __init__(self, host: str, port: int, handlers: dict[str, Callable[[], Reply]]) -> None:
        super().__init__(host, port)
        self.handlers = handlers

    def dispatch(self, method: str, target: str) -> Reply:
        handler = self.handlers.get(target.partition("?")[0])
        if handler is None:
            return 404, "text/plain", b"not found\n"
        return handler()


class AdminServer(TinyHTTPServer):
    def __init__(self, proxy: "ProxyServer", host: str, port: int, on_quit: Callable[[], Any]) -> None:
        super().__init__(host, port)
        self.proxy = proxy
        self.on_quit = on_quit
        #: More paths, each called with (method, query): ``/stats/prometheus``, ``/logging``,
        #: ``/drain_listeners`` (registered by the CLI).
        self.extra: dict[str, Callable[[str, str], Reply]] = {}

    def dispatch(self, method: str, target: str) -> Reply:
        path, _, query = target.partition("?")
        state = self.proxy.state
        if path == "/ready":
            if self.proxy.ready:
                return 200, "text/plain; charset=UTF-8", b"LIVE\n"
            return 503, "text/plain; charset=UTF-8", b"PRE_INITIALIZING\n"
        if path == "/config_dump":
            return 200, "application/json", json.dumps(state.snapshot.describe(), indent=2).encode()
        if path == "/clusters":
            return 200, "text/plain; charset=UTF-8", self._clusters(query == "format=json")
        if path == "/listeners":
            lines = [f"{s.name}::{s.bind}:{s.port}" for s in self.proxy.listening]
            return 200, "text/plain; charset=UTF-8", ("\n".join(lines) + "\n").encode()
        if path == "/server_info":
            info = {
                "version": f"meshproxy/{VERSION}",
                "state": "LIVE" if self.proxy.ready else "PRE_INITIALIZING",
                "uptime_current_epoch": f"{int(time.time() - state.started)}s",
                "command_line_options": {"argv": sys.argv},
                "node": {"mode": state.snapshot.proxy.mode, "namespace": state.snapshot.proxy.namespace, "labels": state.snapshot.proxy.labels},
            }
            return 200, "application/json", json.dumps(info, indent=2).encode()
        if path == "/stats":
            lines = [
                f"meshproxy.config_version: {state.snapshot.version}",
                f"http.downstream_cx_active: {len(state.connections)}",
                f"http.downstream_rq_completed: {state.requests_total}",
                f"http.downstream_cx_protocol_error: {state.protocol_errors}",
                f"cluster_manager.upstream_cx_total: {state.pool.opened}",
                f"cluster_manager.upstream_cx_idle_timeout: {state.pool.idle_closed}",
                # Not an Envoy stat: the proxy's live asyncio tasks and open upstream connections,
                # for leak checks.
                f"server.asyncio_tasks: {len(asyncio.all_tasks())}",
                f"http.downstream_cx_overflow: {getattr(state, 'downstream_cx_overflow', 0)}",
                f"http.downstream_cx_idle_timeout: {getattr(state, 'downstream_cx_idle_timeout', 0)}",
                f"http.downstream_rq_header_timeout: {getattr(state, 'downstream_rq_header_timeout', 0)}",
            ]
            lines += _cluster_stats(state.snapshot.clusters.values())
            return 200, "text/plain; charset=UTF-8", ("\n".join(lines) + "\n").encode()
        if path == "/quitquitquit":
            if method != "POST":
                return 405, "text/plain", b"This endpoint requires POST\n"
            asyncio.get_running_loop().call_soon(self.on_quit)
            return 200, "text/plain; charset=UTF-8", b"OK\n"
        handler = self.extra.get(path)
        if handler is not None:
            return handler(method, query)
        paths = " ".join(["/ready", "/config_dump", "/clusters", "/listeners", "/server_info", "/stats", *self.extra, "/quitquitquit"])
        return 404, "text/plain", f"invalid path. admin commands are: {paths}\n".encode()

    def _clusters(self, as_json: bool) -> bytes:
        state = self.proxy.state
        idle = state.pool.stats()
        if as_json:
            out = []
            for c in state.snapshot.clusters.values():
                hosts = []
                for e in c.endpoints:
                    ejected = _ejected(e)
                    health: dict[str, Any] = {"eds_health_status": "HEALTHY"}
                    if ejected:
                        health["failed_outlier_check"] = True
                    host = {
                        "address": e.key,
                        "health": "UNHEALTHY" if ejected else "HEALTHY",
                        "health_status": health,
                        "rq_active": e.active_requests,
                        "idle_connections": idle.get(e.pool_key, 0),
                    }
                    if e.outlier is not None:
                        host["outlier"] = e.outlier.describe()
                    hosts.append(host)
                entry: dict[str, Any] = {
                    "name": c.name,
                    "circuit_breakers": {"thresholds": [_thresholds(c)]},
                    "host_statuses": hosts,
                }
                if c.circuit is not None:
                    entry["circuit_breaker_state"] = c.circuit.stats()
                if c.outlier is not None:
                    entry["outlier_detection"] = c.outlier.stats()
                out.append(entry)
            return json.dumps({"cluster_statuses": out}, indent=2).encode()
        lines: list[str] = []
        for c in state.snapshot.clusters.values():
            for name, value in _thresholds(c).items():
                lines.append(f"{c.name}::default_priority::{name}::{value}")
            for e in c.endpoints:
                prefix = f"{c.name}::{e.key}"
                lines.append(f"{prefix}::rq_active::{e.active_requests}")
                lines.append(f"{prefix}::cx_idle::{idle.get(e.pool_key, 0)}")
                lines.append(f"{prefix}::health_flags::{'/failed_outlier_check' if _ejected(e) else 'healthy'}")
                lines.append(f"{prefix}::weight::{e.weight}")
                if e.labels:
                    lines.append(f"{prefix}::labels::{','.join(f'{k}={v}' for k, v in sorted(e.labels.items()))}")
        return ("\n".join(lines) + "\n").encode()


def _ejected(endpoint: Any) -> bool:
    mon = endpoint.outlier
    return bool(mon is not None and mon.ejected) or not endpoint.healthy


def _thresholds(cluster: Any) -> dict[str, int]:
    """Envoy's circuit-breaker thresholds for the cluster (Istio's defaults: 2^32-1 each)."""
    if cluster.circuit is not None:
        return cluster.circuit.limits.describe()
    n = 4294967295
    return {"max_connections": n, "max_pending_requests": n, "max_requests": n, "max_retries": n}


def _cluster_stats(clusters: Any) -> list[str]:
    lines = []
    for c in clusters:
        if c.circuit is not None:
            for k, v in c.circuit.stats().items():
                lines.append(f"cluster.{c.name}.{k}: {v}")
        if c.outlier is not None:
            for k, v in c.outlier.stats().items():
                lines.append(f"cluster.{c.name}.{k}: {v}")
    return lines
