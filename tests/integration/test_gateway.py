"""meshproxy as an ingress gateway, over real sockets, with real backend processes."""

from __future__ import annotations

import re
import socket
from typing import Iterator

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import get
from tests.support.meshproxy_proc import MeshproxyProcess, write_config
from tests.support.ports import free_port

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _two_free_ports_at(offset_base: int, second: int) -> int:
    """An offset so that ``offset_base+offset`` and ``second+offset`` are both free."""
    for _ in range(50):
        port = free_port()
        offset = port - offset_base
        if second + offset > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", second + offset))
            except OSError:
                continue
        return offset
    raise RuntimeError("no free port pair")


def gateway_yaml(productpage: int, api: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec:
  selector: {{app: productpage}}
  ports: [{{name: http, port: 9080, targetPort: {productpage}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {{name: productpage-vm, namespace: default}}
spec: {{address: 127.0.0.1, labels: {{app: productpage}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.internal]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {api}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["bookinfo.example.com", "*.wild.example"]
  - port: {{number: 8081, name: http-redirect, protocol: HTTP}}
    hosts: ["secure.example.com"]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: other-gateway, namespace: default}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 9999, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: ["bookinfo.example.com", "secure.example.com"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{exact: /productpage}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo-api, namespace: default}}
spec:
  hosts: ["bookinfo.example.com"]
  gateways: [default/bookinfo-gateway]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    route: [{{destination: {{host: api.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: wild, namespace: default}}
spec:
  hosts: ["*.wild.example"]
  gateways: [bookinfo-gateway]
  http:
  - route: [{{destination: {{host: api.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-only, namespace: default}}
spec:
  hosts: ["bookinfo.example.com"]
  http:
  - match: [{{uri: {{prefix: /mesh}}}}]
    route: [{{destination: {{host: api.internal}}}}]
"""


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[MeshproxyProcess, int, int]]:
    with BackendProcess("productpage") as pp, BackendProcess("api") as api:
        path = write_config(gateway_yaml(pp.port, api.port))
        offset = _two_free_ports_at(8080, 8081)
        with MeshproxyProcess.gateway([path], port_offset=offset) as gw:
            yield gw, 8080 + offset, 8081 + offset


def test_gateway_routes_merged_virtual_services(gateway) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = gateway
    r = get(port, "/productpage", "bookinfo.example.com")
    assert r.status == 200 and r.json()["name"] == "productpage"
    assert r.header("server") == "istio-envoy"
    r = get(port, "/api/v1/products", "bookinfo.example.com:8080")
    assert r.json()["name"] == "api"
    r = get(port, "/x", "a.wild.example")
    assert r.json()["name"] == "api"


def test_gateway_unknown_host_and_unmatched_path_are_404(gateway) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = gateway
    for host, path in (("unknown.example.com", "/productpage"), ("bookinfo.example.com", "/nothing"),
                       ("wild.example", "/"), ("bookinfo.example.com", "/mesh")):
        r = get(port, path, host)
        assert (r.status, r.body) == (404, b""), (host, path)
        assert [(k, v) for k, v in r.headers if k != b"date"] == [(b"server", b"istio-envoy"), (b"content-length", b"0")]


def test_gateway_forwarding_headers(gateway) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = gateway
    r = get(port, "/productpage", "bookinfo.example.com:8080", [("User-Agent", "t/1")])
    seen = r.json()["headers"]
    names = [k for k, _ in seen]
    assert names == ["host", "user-agent", "x-forwarded-for", "x-forwarded-proto", "x-envoy-external-address",
                     "x-request-id", "x-envoy-attempt-count"]
    values = dict(seen)
    assert values["host"] == "bookinfo.example.com:8080"
    assert values["x-envoy-external-address"] == "127.0.0.1"
    assert UUID_RE.match(values["x-request-id"])
    # A loopback peer is replaced by this host's own address in XFF, as Envoy does.
    own = values["x-forwarded-for"]
    r = get(port, "/productpage", "bookinfo.example.com", [
        ("X-Forwarded-For", "1.2.3.4"), ("x-request-id", "client-id"), ("x-forwarded-proto", "https"),
        ("x-forwarded-client-cert", "By=x"), ("x-envoy-retry-on", "5xx")])
    values = dict(r.json()["headers"])
    assert values["x-forwarded-for"] == f"1.2.3.4,{own}"
    assert values["x-request-id"] != "client-id" and UUID_RE.match(values["x-request-id"])
    assert values["x-forwarded-proto"] == "http"
    assert "x-forwarded-client-cert" not in values and "x-envoy-retry-on" not in values


def test_https_redirect_server(gateway) -> None:  # type: ignore[no-untyped-def]
    _, _, redirect_port = gateway
    r = get(redirect_port, "/productpage?x=1", "secure.example.com")
    assert r.status == 301
    assert r.header("location") == "https://secure.example.com/productpage?x=1"


def test_gateway_opens_only_its_own_servers(gateway) -> None:  # type: ignore[no-untyped-def]
    gw, port, redirect_port = gateway
    listeners = gw.admin("/listeners").decode().split()
    assert sorted(listeners) == sorted([f"0.0.0.0_8080::127.0.0.1:{port}", f"0.0.0.0_8081::127.0.0.1:{redirect_port}"])
