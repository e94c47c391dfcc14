"""The console script: validate, bad configs, MeshConfig sources, the h11 codec, pooling and backpressure."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import Connection, get
from tests.support.meshproxy_proc import ROOT, MeshproxyProcess, write_config
from tests.support.ports import free_port


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshproxy", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def service_yaml(port: int) -> str:
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
        """
    )


def test_validate_accepts_bookinfo() -> None:
    result = run_cli("validate", "config/bookinfo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")


def test_validate_names_file_document_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(dedent(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: ok, namespace: default}
        spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
              weight: -1
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: ignored}
        """
    ))
    result = run_cli("validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(f"error: {bad}: document 2 (VirtualService default/reviews): spec.http[0].route[0].weight")
        for line in lines
    ), result.stdout
    assert any(line.startswith("warning: ") and "Deployment" in line for line in lines), result.stdout


def test_sidecar_refuses_to_start_on_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [x], http: [{timeout: soon}]}\n")
    result = run_cli("sidecar", "--config", str(bad), "--outbound-port", str(free_port()), "--admin-port", str(free_port()))
    assert result.returncode == 1
    assert f"{bad}: document 1 (VirtualService default/x): spec.http[0].timeout" in result.stderr


@pytest.mark.parametrize("source", ["flag", "mesh-config-file", "configmap"])
def test_outbound_traffic_policy_sources(tmp_path: Path, source: str) -> None:
    with BackendProcess("web") as web:
        files = [write_config(service_yaml(web.port), str(tmp_path))]
        extra: list[str] = []
        if source == "flag":
            extra = ["--outbound-traffic-policy", "REGISTRY_ONLY"]
        elif source == "mesh-config-file":
            mesh = tmp_path / "meshconfig.yaml"
            mesh.write_text("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")
            extra = ["--mesh-config", str(mesh)]
        else:
            files.append(write_config(dedent(
                """
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: istio, namespace: istio-system}
                data:
                  mesh: |
                    outboundTrafficPolicy:
                      mode: REGISTRY_ONLY
                """
            ), str(tmp_path), "istio.yaml"))
        with MeshproxyProcess.sidecar(files, extra=extra) as proxy:
            assert get(proxy.port, "/", "web").json()["name"] == "web"
            r = get(proxy.port, "/", f"127.0.0.1:{web.port}")
            assert (r.status, r.body) == (502, b"")


def test_h11_reference_codec_proxies_the_same(tmp_path: Path) -> None:
    with BackendProcess("web") as web:
        path = write_config(service_yaml(web.port), str(tmp_path))
        with MeshproxyProcess.sidecar([path], extra=["--codec", "h11"]) as proxy:
            with Connection(proxy.port) as c:
                for _ in range(3):
                    r = c.request("POST", "/x?y=1", "web", [("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n")
                    assert r.json()["body_length"] == 5
            r = get(proxy.port, "/", "web", [("Content-Length", "1"), ("Transfer-Encoding", "chunked")])
            assert r.status == 400


def test_upstream_connections_are_pooled_and_reused(tmp_path: Path) -> None:
    with BackendProcess("web") as web:
        path = write_config(service_yaml(web.port), str(tmp_path))
        with MeshproxyProcess.sidecar([path]) as proxy:
            for _ in range(3):
                with Connection(proxy.port) as c:
                    for _ in range(20):
                        assert c.request("GET", "/", "web").status == 200
            stats = proxy.admin("/stats").decode()
            opened = int(stats.split("cluster_manager.upstream_cx_total: ")[1].split()[0])
            # Sixty requests over three client connections, one at a time: one upstream connection.
            assert opened == 1, stats


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_client_download_is_not_buffered_whole(tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    with BackendProcess("web") as web:
        path = write_config(service_yaml(web.port), str(tmp_path))
        with MeshproxyProcess.sidecar([path]) as proxy:
            before = rss_kib(proxy.proc.pid)
            with Connection(proxy.port) as c:
                c.send(f"GET /big HTTP/1.1\r\nHost: web\r\nx-backend-size: {size}\r\n\r\n".encode())
                time.sleep(2)  # the client reads nothing: the proxy must stop reading upstream
                grown = rss_kib(proxy.proc.pid) - before
                received = 0
                c.sock.settimeout(10)
                while received < size:
                    chunk = c.sock.recv(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
            assert received > size  # the whole body (plus the head) arrived intact
            # 256 MiB went through; the proxy held no more than a few socket buffers of it.
            assert grown < 32 * 1024, f"RSS grew by {grown} KiB while the client was not reading"


def test_json_log_lines(tmp_path: Path) -> None:
    import json

    with BackendProcess("web") as web:
        path = write_config(service_yaml(web.port), str(tmp_path))
        with MeshproxyProcess.sidecar([path], extra=["--log-format", "json"]) as proxy:
            log = proxy.log()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e["level"] == "info" and "ready" in e["msg"] and e["scope"] == "meshproxy" for e in entries), log
