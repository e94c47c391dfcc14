"""Live configuration and lifecycle: hot reload under load, SIGTERM drain under load, admin controls."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from textwrap import dedent

from tests.support.backend import BackendProcess
from tests.support.client import Connection
from tests.support.meshproxy_proc import MeshproxyProcess


def mesh(port: int, version: int) -> str:
    return dedent(
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: web, namespace: default}}
        spec:
          selector: {{app: web}}
          ports: [{{name: http, port: 80, targetPort: {port}}}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
        spec: {{containers: [{{name: app}}]}}
        status: {{podIP: 127.0.0.1}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: web, namespace: default}}
        spec:
          hosts: [web]
          http:
          - match: [{{uri: {{exact: /version}}}}]
            directResponse: {{status: 200, body: {{string: "v{version}"}}}}
          - route: [{{destination: {{host: web}}}}]
        """
    )


BROKEN = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web}, weight: -5}]
"""


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Load(threading.Thread):
    """Requests back to back on keep-alive connections; records every failure."""

    def __init__(self, port: int, path: str = "/api", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.headers = headers or []
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn: Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = Connection(self.port)
                r = conn.request("GET", self.path, "web", self.headers)
            except OSError as exc:
                self.failures.append(repr(exc))
                conn = None
                continue
            if r.status != 200:
                self.failures.append(f"{r.status} {r.body[:80]!r}")
            else:
                self.ok += 1
            if r.header("connection") == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def current_version(port: int) -> str:
    with Connection(port) as c:
        return c.request("GET", "/version", "web").body.decode()


def test_fifty_reloads_under_load_valid_and_invalid(tmp_path: Path) -> None:
    with BackendProcess("web") as backend:
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(mesh(backend.port, 0))
        with MeshproxyProcess.sidecar([str(cfg)]) as proxy:
            load = Load(proxy.port)
            load.start()
            version = 0
            for i in range(50):
                if i % 2 == 0:
                    version += 1
                    write_atomically(cfg, mesh(backend.port, version))
                    deadline = time.monotonic() + 10
                    while current_version(proxy.port) != f"v{version}":
                        assert time.monotonic() < deadline, f"v{version} never took effect"
                        time.sleep(0.02)
                else:
                    write_atomically(cfg, BROKEN)
                    time.sleep(0.3)  # give the watcher time to see it and refuse it
                    assert current_version(proxy.port) == f"v{version}"
            load.stop.set()
            load.join(10)
            stats = proxy.admin("/stats/prometheus").decode()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    samples = {line.split()[0]: float(line.split()[1]) for line in stats.splitlines() if line and not line.startswith("#")}
    assert samples["meshproxy_config_reloads_total"] == 25
    failures = samples["meshproxy_config_reload_failures_total"]
    assert failures >= 25  # every broken write was refused (an editor's two writes may count twice)
    assert "weight" in proxy.log()  # the refusal names the field


def test_sighup_reloads(tmp_path: Path) -> None:
    with BackendProcess("web") as backend:
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(mesh(backend.port, 1))
        with MeshproxyProcess.sidecar([str(cfg)], extra=["--no-watch"]) as proxy:
            cfg.write_text(mesh(backend.port, 2))
            time.sleep(0.3)
            assert current_version(proxy.port) == "v1"  # not watching
            proxy.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while current_version(proxy.port) != "v2":
                assert time.monotonic() < deadline
                time.sleep(0.02)


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    with BackendProcess("web") as backend:
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(mesh(backend.port, 1))
        proxy = MeshproxyProcess.sidecar([str(cfg)], extra=["--termination-drain-duration", "5"])
        try:
            loads = [Load(proxy.port, headers=[("x-backend-delay-ms", "150")]) for _ in range(8)]
            for load in loads:
                load.start()
            time.sleep(1.0)
            proxy.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = proxy.proc.wait(15)
            took = time.monotonic() - started
            for load in loads:
                load.stop.set()
                load.join(10)
        finally:
            proxy.stop()
    assert code == 0
    assert took < 5 + 3
    served = sum(load.ok for load in loads)
    assert served > 16
    # After SIGTERM nothing accepted fails: in-flight requests finish, each with connection: close,
    # and new connections are refused (ConnectionRefusedError is the only error allowed).
    unexpected = [f for load in loads for f in load.failures if "ConnectionRefusedError" not in f]
    assert unexpected == [], unexpected[:5]


def test_drain_listeners_and_logging(tmp_path: Path) -> None:
    with BackendProcess("web") as backend:
        cfg = tmp_path / "mesh.yaml"
        cfg.write_text(mesh(backend.port, 1))
        with MeshproxyProcess.sidecar([str(cfg)]) as proxy:
            url = f"http://127.0.0.1:{proxy.admin_port}"
            with urllib.request.urlopen(url + "/logging?level=debug", data=b"") as r:
                assert b"meshproxy: debug" in r.read()
            with Connection(proxy.port) as kept:
                assert kept.request("GET", "/version", "web").status == 200
                with urllib.request.urlopen(url + "/drain_listeners", data=b"") as r:
                    assert r.read() == b"OK\n"
                # The served connection goes on; new ones are refused.
                assert kept.request("GET", "/version", "web").status == 200
                try:
                    socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
                    refused = False
                except ConnectionRefusedError:
                    refused = True
                assert refused
