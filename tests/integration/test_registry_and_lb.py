"""Service registry kinds and DestinationRule load balancing, over real sockets.

Three backend processes stand behind one Service (as Pods on named ports) and
behind ServiceEntries (STATIC, DNS); DestinationRules pick the load balancer.
"""

from __future__ import annotations

from collections import Counter
from textwrap import dedent
from typing import Iterator

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import Connection, get
from tests.support.meshproxy_proc import MeshproxyProcess, write_config


def config(ports: list[int]) -> str:
    pods = "".join(
        dedent(
            f"""
            ---
            apiVersion: v1
            kind: Pod
            metadata: {{name: web-{i}, namespace: default, labels: {{app: web, zone: z{i}}}}}
            spec: {{containers: [{{name: app, ports: [{{name: web-port, containerPort: {port}}}]}}]}}
            status: {{podIP: 127.0.0.1}}
            """
        )
        for i, port in enumerate(ports)
    )
    return dedent(
        f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: web, namespace: default}}
        spec:
          selector: {{app: web}}
          ports: [{{name: http, port: 80, targetPort: web-port}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: web, namespace: default}}
        spec:
          host: web
          trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}
          subsets:
          - name: sticky
            labels: {{app: web}}
            trafficPolicy:
              loadBalancer: {{consistentHash: {{httpHeaderName: x-user}}}}
          - name: cookie
            labels: {{app: web}}
            trafficPolicy:
              loadBalancer: {{consistentHash: {{httpCookie: {{name: session, path: /, ttl: 60s}}}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: web, namespace: default}}
        spec:
          hosts: [web]
          http:
          - match: [{{uri: {{prefix: /sticky}}}}]
            route: [{{destination: {{host: web, subset: sticky}}}}]
          - match: [{{uri: {{prefix: /cookie}}}}]
            route: [{{destination: {{host: web, subset: cookie}}}}]
          - route: [{{destination: {{host: web}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: external-dns, namespace: default}}
        spec:
          hosts: [api.external.example]
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          resolution: DNS
          endpoints: [{{address: localhost, ports: {{http: {ports[1]}}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: external-static, namespace: default}}
        spec:
          hosts: [static.external.example]
          ports: [{{number: 80, name: http-web, protocol: HTTP, targetPort: {ports[2]}}}]
          resolution: STATIC
          endpoints: [{{address: 127.0.0.1}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: passthrough, namespace: default}}
        spec:
          host: static.external.example
          trafficPolicy: {{loadBalancer: {{simple: PASSTHROUGH}}}}
        """
    ) + pods


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[MeshproxyProcess, list[BackendProcess]]]:
    backends = [BackendProcess(f"b{i}") for i in range(3)]
    try:
        path = write_config(config([b.port for b in backends]))
        with MeshproxyProcess.sidecar([path]) as proxy:
            yield proxy, backends
    finally:
        for b in backends:
            b.stop()


def name(resp) -> str:  # type: ignore[no-untyped-def]
    assert resp.status == 200, (resp.status, resp.body)
    return resp.json()["name"]


def test_named_target_port_and_round_robin(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = mesh
    with Connection(proxy.port) as c:
        seen = [name(c.request("GET", "/", "web")) for _ in range(30)]
    # Round robin: every endpoint in turn, each exactly ten times.
    assert Counter(seen) == {"b0": 10, "b1": 10, "b2": 10}
    assert all(seen[i] != seen[i + 1] for i in range(len(seen) - 1))


def test_consistent_hash_on_header(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = mesh
    with Connection(proxy.port) as c:
        homes = {user: {name(c.request("GET", "/sticky", "web", [("x-user", user)])) for _ in range(5)} for user in map(str, range(20))}
    assert all(len(h) == 1 for h in homes.values()), homes
    assert len({next(iter(h)) for h in homes.values()}) > 1  # twenty users do not all land on one host


def test_consistent_hash_cookie_is_generated_then_honoured(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = mesh
    first = get(proxy.port, "/cookie", "web")
    cookie = first.header("set-cookie")
    assert cookie is not None and cookie.startswith("session=") and "Max-Age=60" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0]
    with Connection(proxy.port) as c:
        homes = {name(c.request("GET", "/cookie", "web", [("Cookie", value)])) for _ in range(10)}
    assert homes == {name(first)}


def test_dns_service_entry(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = mesh
    assert name(get(proxy.port, "/", "api.external.example:8080")) == "b1"


def test_static_service_entry_with_passthrough_lb_goes_where_the_host_says(mesh) -> None:  # type: ignore[no-untyped-def]
    proxy, backends = mesh
    # PASSTHROUGH: no endpoint selection; connect to the destination the client named.
    r = get(proxy.port, "/", "static.external.example")
    assert r.status == 503  # the name does not resolve on this machine
    assert b"remote connection failure" in r.body
