"""Per-request CPU cost of meshproxy's own code, with no sockets and no event-loop I/O.

Drives one real ``DownstreamConnection`` and a pooled ``UpstreamConnection``
through fake transports: request bytes in, the upstream request captured, a
canned response fed back, the client's bytes captured.  What it measures is
exactly the Python that runs per request (codec, routing, header building,
pooling) -- the part we can make faster; syscalls and epoll are not in it.

    python bench/hotpath.py [--codec httptools|h11] [--requests N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from meshproxy.config.compile import CompileOptions, compile_snapshot
from meshproxy.config.loader import load_text
from meshproxy.core.snapshot import ProxyInfo
from meshproxy.telemetry.metrics import PeerInfo, RequestMetrics
from meshproxy.transport.downstream import DownstreamConnection
from meshproxy.transport.server import ProxyState
from meshproxy.transport.upstream import UpstreamConnection

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: default}
spec:
  selector: {app: svc}
  ports: [{name: http, port: 8000, targetPort: 18000}]
---
apiVersion: v1
kind: Pod
metadata: {name: svc-1, namespace: default, labels: {app: svc}}
spec: {containers: [{name: app}]}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc]
  http:
  - route: [{destination: {host: svc}}]
"""

REQUEST = (
    b"GET /api/items?page=2 HTTP/1.1\r\nHost: svc:8000\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip\r\nX-Custom: 1\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 100
)


class FakeTransport:
    """Enough of asyncio.Transport for the proxy's protocols; counts what is written."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, parts: list[bytes]) -> None:
        for p in parts:
            self.written += len(p)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def build(codec: str, with_metrics: bool = True) -> tuple[DownstreamConnection, UpstreamConnection, FakeTransport]:
    config = load_text(CONFIG)
    snapshot = compile_snapshot(config, ProxyInfo("sidecar", "default", {"app": "bench"}), CompileOptions())
    state = ProxyState(snapshot, codec=codec)
    if with_metrics:  # as the CLI runs it: Istio's request metrics recorded for every request
        state.metrics = RequestMetrics(PeerInfo("bench", "default", {"app": "bench"}))
    down = DownstreamConnection(state, snapshot.listeners[0])
    down_t = FakeTransport()
    down.connection_made(down_t)  # type: ignore[arg-type]
    up = UpstreamConnection(state.pool, "127.0.0.1:18000", state.pool.codec_factory)
    up.connection_made(FakeTransport())  # type: ignore[arg-type]
    state.pool.put(up)
    return down, up, down_t


def run(codec: str, n: int, with_metrics: bool = True) -> float:
    down, up, down_t = build(codec, with_metrics)
    feed_down = down.data_received
    feed_up = up.data_received
    start = time.perf_counter()
    for _ in range(n):
        feed_down(REQUEST)
        feed_up(RESPONSE)
    elapsed = time.perf_counter() - start
    assert down_t.written > 0 and not down_t.closed, "the proxy did not answer"
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-metrics", action="store_true", help="leave Istio's request metrics off (to measure their cost)")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    run(args.codec, 2000)  # warm up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.codec, args.requests)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    best = min(run(args.codec, args.requests, not args.no_metrics) for _ in range(3))
    what = "without" if args.no_metrics else "with"
    print(f"{args.codec}: {best:.1f} µs of meshproxy CPU per proxied request, {what} Istio metrics (best of 3 × {args.requests})")
    print(f"  = at most {1e6 / best:,.0f} requests/s on one core before any syscall or event-loop cost")


if __name__ == "__main__":
    main()
