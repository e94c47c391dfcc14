"""Circuit-breaker overflow: the same DestinationRule limits on real Envoy and on meshproxy,
the same concurrent requests, the same 503 (``reset reason: overflow``) byte for byte."""

from __future__ import annotations

import re
import socket
import time
from textwrap import dedent

import pytest

from tests.support import istio_envoy as ie
from tests.support.backend import BackendProcess
from tests.support.envoy import EnvoyProcess, envoy_binary
from tests.support.meshproxy_proc import MeshproxyProcess, write_config
from tests.support.ports import free_port

pytestmark = pytest.mark.skipif(envoy_binary() is None, reason="envoy not installed")

FQDN = "web.default.svc.cluster.local"


def overflow_reply(port: int) -> bytes:
    """Hold the one connection and the one pending slot with slow requests; the third overflows."""
    slow = b"GET /slow HTTP/1.1\r\nHost: web\r\nx-backend-delay-ms: 1500\r\n\r\n"
    held = []
    try:
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(slow)
            held.append(s)
            time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /fast HTTP/1.1\r\nHost: web\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"overflow"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return re.sub(rb"date: [^\r]+", b"date: <date>", data)
    finally:
        for s in held:
            s.close()


def test_overflow_reply_matches_envoy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with BackendProcess("web") as backend:
        cluster = ie.outbound_cluster(ie.cluster_name(FQDN, 80), [("127.0.0.1", backend.port)])
        cluster["circuit_breakers"] = {"thresholds": [{"max_connections": 1, "max_pending_requests": 1,
                                                       "max_requests": 4294967295, "max_retries": 4294967295,
                                                       "track_remaining": True}]}
        port = free_port()
        vhost = ie.virtual_host(f"{FQDN}:80", ["web", FQDN], [ie.route(ie.cluster_name(FQDN, 80), port=80)])
        with EnvoyProcess(ie.sidecar_bootstrap(port, [vhost], [cluster], service_port=80)):
            envoy = overflow_reply(port)
        config = write_config(dedent(
            f"""
            apiVersion: v1
            kind: Service
            metadata: {{name: web, namespace: default}}
            spec:
              selector: {{app: web}}
              ports: [{{name: http, port: 80, targetPort: {backend.port}}}]
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: web-1, namespace: default, labels: {{app: web}}}}
            spec: {{containers: [{{name: app}}]}}
            status: {{podIP: 127.0.0.1}}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {{name: web, namespace: default}}
            spec:
              host: web
              trafficPolicy:
                connectionPool: {{tcp: {{maxConnections: 1}}, http: {{http1MaxPendingRequests: 1}}}}
            """
        ), str(tmp_path))
        with MeshproxyProcess.sidecar([config]) as proxy:
            mesh = overflow_reply(proxy.port)
    assert envoy.startswith(b"HTTP/1.1 503 ")
    assert envoy.endswith(b"reset reason: overflow") and b"\r\nx-envoy-overloaded: true\r\n" in envoy
    assert mesh == envoy
