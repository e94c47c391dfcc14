"""``meshproxy``: the console script.

Modes::

    meshproxy demo                      a whole Bookinfo mesh on this machine
    meshproxy sidecar --config PATH ... a sidecar's outbound listener (explicit mode)
    meshproxy gateway --config PATH ... an ingress/egress gateway
    meshproxy validate PATH ...         load and compile, print every problem
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Sequence

from .admin.server import VERSION

log = logging.getLogger("meshproxy")


def parse_labels(text: str) -> dict[str, str]:
    """``app=x,version=v1`` → ``{"app": "x", "version": "v1"}``."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"label {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", required=True, metavar="PATH",
                   help="a YAML file or a directory of them (repeatable)")
    p.add_argument("--mesh-config", metavar="FILE", help="MeshConfig YAML (overrides the istio ConfigMap)")
    p.add_argument("--outbound-traffic-policy", choices=["ALLOW_ANY", "REGISTRY_ONLY"],
                   help="override MeshConfig outboundTrafficPolicy.mode")
    p.add_argument("--admin-port", type=int, default=15000)
    p.add_argument("--admin-bind", default="127.0.0.1")
    p.add_argument("--codec", choices=["httptools", "h11"], default="httptools",
                   help="HTTP/1.1 codec (h11 is the slower reference implementation)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"], help="the proxy's own log lines on stderr")
    p.add_argument("--stats-port", type=int, default=15090, help="Prometheus /stats/prometheus port (0: none)")
    p.add_argument("--health-port", type=int, default=15021, help="/healthz/ready port (0: none)")
    p.add_argument("--workload-name", default="", help="this workload's name for telemetry (default: app-version)")
    p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True,
                   help="reload when config files change (SIGHUP always reloads)")
    p.add_argument("--termination-drain-duration", type=float, default=None, metavar="SECONDS",
                   help="on SIGTERM, let requests finish for this long (MeshConfig defaultConfig.terminationDrainDuration, 5 s)")
    p.add_argument("--zipkin-address", default=None, metavar="HOST:PORT",
                   help="send spans to this Zipkin collector (MeshConfig defaultConfig.tracing.zipkin.address)")
    p.add_argument("--otlp-endpoint", default=None, metavar="URL", help="send spans as OTLP/HTTP JSON to this URL")
    p.add_argument("--trace-propagation", choices=["b3", "b3+w3c", "w3c"], default=None,
                   help="trace headers: b3 (Envoy's Zipkin tracer under Istio), b3+w3c (also traceparent), "
                        "w3c (the OpenTelemetry tracer); default b3 for Zipkin, w3c for OTLP")
    p.add_argument("--trace-sampling", type=float, default=None, metavar="PERCENT",
                   help="MeshConfig defaultConfig.tracing.sampling (Istio's default: 1)")
    p.add_argument("--access-log-file", default=None, metavar="PATH",
                   help="access log destination (/dev/stdout, a file); overrides MeshConfig accessLogFile")
    p.add_argument("--access-log-encoding", choices=["TEXT", "JSON"], default=None)
    p.add_argument("--access-log-format", default=None, help="Envoy format string (TEXT) or JSON object (JSON)")
    # Downstream limits against slow/abusive clients (meshproxy.transport.limits).
    from .transport import limits as _limits
    _limits.add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshproxy", description="Istio's data plane in Python")
    parser.add_argument("--version", action="version", version=f"meshproxy {VERSION}")
    sub = parser.add_subparsers(dest="mode", required=True)

    side = sub.add_parser("sidecar", help="run a sidecar's outbound HTTP listener (explicit mode)")
    _common(side)
    side.add_argument("--namespace", default="default")
    side.add_argument("--labels", type=parse_labels, default={}, metavar="K=V,...")
    side.add_argument("--outbound-port", type=int, default=15001)
    side.add_argument("--bind", default="127.0.0.1")

    gw = sub.add_parser("gateway", help="run an ingress or egress gateway")
    _common(gw)
    gw.add_argument("--namespace", default="istio-system")
    gw.add_argument("--labels", type=parse_labels, default={"istio": "ingressgateway"}, metavar="K=V,...")
    gw.add_argument("--bind", default="0.0.0.0", help="address the Gateway ports listen on")
    gw.add_argument("--port-offset", type=int, default=0, help="add this to every Gateway port (run unprivileged)")

    val = sub.add_parser("validate", help="load and compile config, print every problem")
    val.add_argument("paths", nargs="+")
    val.add_argument("--mesh-config", metavar="FILE")

    demo = sub.add_parser("demo", help="run the Bookinfo mesh locally")
    demo.add_argument("--config-dir", type=Path, default=None, help="Bookinfo config directory")
    demo.add_argument("--reviews", type=Path, default=None, help="a VirtualService file that replaces virtual-service-reviews.yaml")
    demo.add_argument("--port", type=int, default=8080, help="ingress gateway port")
    demo.add_argument("--bind", default="127.0.0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "validate":
        return validate(args.paths, args.mesh_config)
    if args.mode == "demo":
        from .demo.runner import default_config_dir, run_demo

        return run_demo(args.config_dir or default_config_dir(), args.reviews, gateway_port=args.port, bind=args.bind)
    from .logs import setup

    setup(args.log_level, args.log_format)
    return run_proxy(args)


def validate(paths: Sequence[str], mesh_config: str | None) -> int:
    """Load, validate and compile; print every issue with file, document and field."""
    from .config.compile import CompileOptions, compile_snapshot
    from .config.loader import load_paths
    from .core.snapshot import ProxyInfo

    config = load_paths(list(paths), mesh_config)
    for issue in config.issues:
        print(f"{issue.severity}: {issue}")
    if config.errors:
        print(f"{len(config.errors)} error(s)", file=sys.stderr)
        return 1
    try:
        snap = compile_snapshot(config, ProxyInfo("sidecar", "default", {}), CompileOptions())
    except Exception as exc:  # a compile bug must still name what it was doing
        print(f"error: compiling failed: {exc}")
        return 1
    for warning in snap.dump.get("warnings", []):
        print(f"warning: {warning}")
    n_routes = sum(len(vh.routes) for t in snap.route_tables.values() for vh in t.virtual_hosts)
    print(
        f"ok: {sum(len(getattr(config, k)) for k in ('virtual_services', 'destination_rules', 'gateways', 'service_entries', 'services', 'pods', 'workload_entries'))} documents, "
        f"{len(snap.route_tables)} route tables, {n_routes} routes, {len(snap.clusters)} clusters"
    )
    return 0


def load_snapshot(args: argparse.Namespace, version: int = 1):  # type: ignore[no-untyped-def]
    from .config.compile import CompileOptions, compile_snapshot
    from .config.loader import ConfigError, load_paths
    from .core.snapshot import ProxyInfo

    config = load_paths(args.config, args.mesh_config)
    for issue in config.warnings:
        log.warning("%s", issue)
    if config.errors:
        raise ConfigError(config.errors)
    proxy = ProxyInfo(args.mode, args.namespace, args.labels)
    options = CompileOptions(
        outbound_port=getattr(args, "outbound_port", 15001),
        bind=args.bind,
        port_offset=getattr(args, "port_offset", 0),
        outbound_traffic_policy=args.outbound_traffic_policy,
    )
    snap = compile_snapshot(config, proxy, options, version=version)
    for warning in snap.dump.get("warnings", []):
        log.warning("%s", warning)
    return snap


def run_proxy(args: argparse.Namespace) -> int:
    from .config.loader import ConfigError

    try:
        snapshot = load_snapshot(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return 1
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    return runner(_serve(args, snapshot))


async def _serve(args: argparse.Namespace, snapshot) -> int:  # type: ignore[no-untyped-def]
    from .admin.server import AdminServer, EndpointServer, TinyHTTPServer
    from .telemetry import prometheus
    from .telemetry.metrics import PeerInfo, RequestMetrics, default_workload_name
    from .transport.server import ProxyServer, ProxyState

    from .transport.limits import from_args

    state = ProxyState(snapshot, codec=args.codec, limits=from_args(args))
    workload = args.workload_name or default_workload_name(args.mode, args.labels)
    state.metrics = RequestMetrics(PeerInfo(workload, args.namespace, args.labels))
    page = prometheus.Exposition(state, state.metrics)
    state.access_log = _access_log(args, snapshot)
    state.tracer = _tracer(args, snapshot, workload)
    proxy = ProxyServer(state)
    stop = asyncio.Event()
    admin = AdminServer(proxy, args.admin_bind, args.admin_port, stop.set)
    admin.extra["/stats/prometheus"] = lambda method, query: page.render()
    servers: list[TinyHTTPServer] = [admin]
    if args.stats_port:
        servers.append(EndpointServer("0.0.0.0", args.stats_port, {"/stats/prometheus": page.render}))
    if args.health_port:
        def healthz() -> tuple[int, str, bytes]:
            return (200, "text/plain", b"") if proxy.ready else (503, "text/plain", b"")

        servers.append(EndpointServer("0.0.0.0", args.health_port, {"/healthz/ready": healthz}))
    try:
        for server in servers:
            await server.start()
        await proxy.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        await proxy.close()
        for server in servers:
            await server.close()
        return 1
    from .reload import Reloader, watch_files

    loop = asyncio.get_running_loop()
    reloader = Reloader(lambda version: load_snapshot(args, version), proxy, state)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reloader.reload("SIGHUP")))
    draining = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, draining.set)
    admin.extra["/drain_listeners"] = lambda method, query: _drain_listeners(proxy, method)
    admin.extra["/logging"] = lambda method, query: _set_logging(query)
    watcher = loop.create_task(watch_files(args.config, reloader, stop)) if args.watch else None
    log.info("%s ready: %d listener(s), admin on %s:%d", args.mode, len(proxy.listening), args.admin_bind, args.admin_port)
    waiters = [loop.create_task(stop.wait()), loop.create_task(draining.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    if draining.is_set() and not stop.is_set():
        timeout = args.termination_drain_duration
        if timeout is None:
            timeout = _drain_duration(snapshot)
        log.info("draining for up to %.1fs", timeout)
        await proxy.drain(timeout)
    stop.set()
    if watcher is not None:
        await asyncio.gather(watcher, return_exceptions=True)
    await proxy.close()
    for server in servers:
        await server.close()
    if state.access_log is not None:
        state.access_log.close()
    if state.tracer is not None and state.tracer.exporter is not None:
        await loop.run_in_executor(None, state.tracer.exporter.close)
    return 0


def _tracer(args: argparse.Namespace, snapshot, workload: str):  # type: ignore[no-untyped-def]
    """A tracer when a collector is configured (Istio sends no spans otherwise)."""
    from .telemetry.metrics import canonical_revision, canonical_service
    from .telemetry.span_export import SpanExporter
    from .telemetry.tracing import Tracer

    tracing = snapshot.mesh.get("tracing") or {}
    zipkin = args.zipkin_address or ((tracing.get("zipkin") or {}).get("address") if isinstance(tracing, dict) else None)
    service = f"{args.labels.get('app', workload)}.{args.namespace}"
    if args.otlp_endpoint:
        exporter = SpanExporter(args.otlp_endpoint, format="otlp", service_name=service)
        propagation = args.trace_propagation or "w3c"
    elif zipkin:
        exporter = SpanExporter(f"http://{zipkin}/api/v2/spans", format="zipkin", service_name=service)
        propagation = args.trace_propagation or "b3"
    else:
        return None
    sampling = args.trace_sampling
    if sampling is None:
        sampling = float(tracing.get("sampling", 1.0)) if isinstance(tracing, dict) else 1.0
    return Tracer(
        sampling=sampling,
        service_name=service,
        node_id=f"{'router' if args.mode == 'gateway' else 'sidecar'}~127.0.0.1~{workload}.{args.namespace}~{args.namespace}.svc.cluster.local",
        namespace=args.namespace,
        exporter=exporter,
        propagation=propagation,
        canonical_service=canonical_service(args.labels, workload),
        canonical_revision=canonical_revision(args.labels),
    )


def _drain_listeners(proxy, method: str) -> tuple[int, str, bytes]:  # type: ignore[no-untyped-def]
    if method != "POST":
        return 405, "text/plain", b"This endpoint requires POST\n"
    proxy.drain_listeners()
    return 200, "text/plain; charset=UTF-8", b"OK\n"


def _set_logging(query: str) -> tuple[int, str, bytes]:
    """Envoy's ``/logging?level=debug``: change the proxy's log level at run time."""
    from urllib.parse import parse_qs

    level = parse_qs(query).get("level", [""])[0].upper()
    if level:
        if level not in ("TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "OFF"):
            return 400, "text/plain", f"unknown level {level.lower()}\n".encode()
        mapped = {"TRACE": "DEBUG", "WARN": "WARNING", "OFF": "CRITICAL"}.get(level, level)
        logging.getLogger("meshproxy").setLevel(mapped)
    current = logging.getLevelName(logging.getLogger("meshproxy").getEffectiveLevel()).lower()
    return 200, "text/plain; charset=UTF-8", f"active loggers:\n  meshproxy: {current}\n".encode()


def _drain_duration(snapshot) -> float:  # type: ignore[no-untyped-def]
    """MeshConfig ``defaultConfig.terminationDrainDuration`` (Istio's default: 5 s)."""
    value = str(snapshot.mesh.get("terminationDrainDuration") or "5s")
    try:
        if value.endswith("ms"):
            return float(value[:-2]) / 1000
        if value.endswith("s"):
            return float(value[:-1])
        if value.endswith("m"):
            return float(value[:-1]) * 60
        return float(value)
    except ValueError:
        return 5.0


def _access_log(args: argparse.Namespace, snapshot):  # type: ignore[no-untyped-def]
    """The access log MeshConfig (or the flags) asks for; None when off, as in Istio by default."""
    from .telemetry.access_log import AccessLog, Formatter

    mesh = snapshot.mesh
    path = args.access_log_file if args.access_log_file is not None else mesh.get("accessLogFile", "")
    if not path:
        return None
    encoding = args.access_log_encoding or mesh.get("accessLogEncoding") or "TEXT"
    fmt = args.access_log_format if args.access_log_format is not None else mesh.get("accessLogFormat", "")
    return AccessLog(path, Formatter(str(encoding), fmt or ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
