"""meshproxy as a sidecar, over real sockets, with real backend processes.

One module-scoped mesh: reviews v1/v2/v3 and ratings backends (h11 echo
servers that report what they received), a sidecar in namespace ``default``
with labels ``app=productpage``, and Istio YAML exactly as a user writes it.
Byte-level expectations (header order, bodies) are the ones real Envoy 1.40
gives under Istio's config -- see tests/integration/test_envoy_reference.py.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections import Counter
from typing import Iterator

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import Connection, get, raw_exchange
from tests.support.meshproxy_proc import MeshproxyProcess, write_config
from tests.support.ports import free_port

DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def mesh_yaml(ports: dict[str, int], dead_port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ratings, namespace: default}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: {ports['ratings']}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dead, namespace: default}}
spec:
  selector: {{app: dead}}
  ports: [{{name: http, port: 9080, targetPort: {dead_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: default}}
spec:
  selector: {{app: nothing-has-this-label}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: dead-1, namespace: default, labels: {{app: dead}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ratings-v1, namespace: default, labels: {{app: ratings, version: v1}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: 127.0.0.1}}
""" + "".join(
        f"""---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-{v}, namespace: default, labels: {{app: reviews, version: {v}}}}}
spec: {{containers: [{{name: app, ports: [{{name: http, containerPort: {ports[v]}}}]}}]}}
status: {{podIP: 127.0.0.1}}
"""
        for v in ("v1", "v2", "v3")
    ) + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
  - {name: none, labels: {version: none}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v3}, weight: 25}
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - match: [{uri: {prefix: /noendpoints}}]
    route: [{destination: {host: reviews, subset: none}}]
  - match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /new/path, authority: other.example.com}
  - match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: "I'm a teapot\\n"}}
  - match: [{uri: {exact: /direct-json}}]
    directResponse: {status: 200, body: {string: '{"ok":true}'}}
    headers:
      response: {set: {content-type: application/json}, add: {x-direct: "yes"}}
  - match: [{uri: {prefix: /rewrite/}}]
    rewrite: {uri: /rewritten/, authority: ratings.internal}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: "route"}, add: {x-add: "route"}, remove: [x-remove]}
      response: {set: {x-resp-set: "1"}, add: {x-resp-add: "2"}, remove: [x-backend-name]}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {exact: /nomatch-only}, method: {exact: DELETE}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dead, namespace: default}
spec:
  hosts: [dead]
  http:
  - match: [{uri: {prefix: /noretry}}]
    retries: {attempts: 0}
    route: [{destination: {host: dead}}]
  - route: [{destination: {host: dead}}]
"""


class Mesh:
    def __init__(self, proxy: MeshproxyProcess, backends: dict[str, BackendProcess]) -> None:
        self.proxy = proxy
        self.port = proxy.port
        self.backends = backends


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    backends = {name: BackendProcess(name) for name in ("v1", "v2", "v3", "ratings")}
    try:
        path = write_config(mesh_yaml({k: b.port for k, b in backends.items()}, free_port()))
        proxy = MeshproxyProcess.sidecar([path], labels="app=productpage,version=v1")
        try:
            yield Mesh(proxy, backends)
        finally:
            proxy.stop()
    finally:
        for b in backends.values():
            b.stop()


def backend_of(resp) -> str:  # type: ignore[no-untyped-def]
    assert resp.status == 200, (resp.status, resp.body)
    return resp.json()["name"]


# ----------------------------------------------------------------------------- routing


def test_bookinfo_jason_goes_to_v2_others_to_v1(mesh: Mesh) -> None:
    assert backend_of(get(mesh.port, "/reviews/0", "reviews:9080", [("end-user", "jason")])) == "v2"
    assert backend_of(get(mesh.port, "/reviews/0", "reviews:9080")) == "v1"
    assert backend_of(get(mesh.port, "/reviews/0", "reviews.default.svc.cluster.local:9080", [("end-user", "jason")])) == "v2"


def test_weighted_split_75_25_statistically(mesh: Mesh) -> None:
    n = 400
    counts: Counter[str] = Counter()
    with Connection(mesh.port) as c:
        for _ in range(n):
            counts[backend_of(c.request("GET", "/split", "reviews:9080"))] += 1
    assert set(counts) <= {"v1", "v3"}
    # Binomial(400, 0.25): sd = 8.66; 5 sd either side never flakes and still catches a wrong split.
    assert abs(counts["v3"] - 100) < 5 * 8.66, counts


def test_plain_service_routing_without_virtual_service_rule(mesh: Mesh) -> None:
    # ratings has a VS, but /x matches none of its rules: 404 with an empty body.
    r = get(mesh.port, "/x", "ratings:9080")
    assert r.status == 404 and r.body == b""
    assert r.headers == [(b"date", r.headers[0][1]), (b"server", b"envoy"), (b"content-length", b"0")]
    assert backend_of(get(mesh.port, "/ratings/1", "ratings:9080")) == "ratings"


def test_allow_any_passes_unknown_hosts_through(mesh: Mesh) -> None:
    port = mesh.backends["v3"].port
    r = get(mesh.port, "/anything", f"127.0.0.1:{port}")
    assert backend_of(r) == "v3"
    assert r.seen_header("host") == f"127.0.0.1:{port}"


# ----------------------------------------------------------------------------- local replies (Envoy's bytes)


def test_undefined_subset_is_503_empty(mesh: Mesh) -> None:
    r = get(mesh.port, "/nosubset", "reviews:9080")
    assert (r.status, r.reason, r.body) == (503, b"Service Unavailable", b"")
    assert [k for k, _ in r.headers] == [b"date", b"server", b"content-length"]
    assert DATE_RE.match(r.header("date"))


def test_no_endpoints_is_503_no_healthy_upstream(mesh: Mesh) -> None:
    r = get(mesh.port, "/noendpoints", "reviews:9080")
    assert (r.status, r.body) == (503, b"no healthy upstream")
    assert r.headers[:2] == [(b"content-length", b"19"), (b"content-type", b"text/plain")]
    assert [k for k, _ in r.headers] == [b"content-length", b"content-type", b"date", b"server"]
    r = get(mesh.port, "/", "empty:9080")
    assert (r.status, r.body) == (503, b"no healthy upstream")


def test_connection_refused_after_default_retries(mesh: Mesh) -> None:
    started = time.monotonic()
    r = get(mesh.port, "/", "dead:9080")
    assert r.status == 503
    assert r.body == (b"upstream connect error or disconnect/reset before headers. "
                      b"retried and the latest reset reason: remote connection failure")
    assert r.header("content-length") == "121"
    assert time.monotonic() - started < 5


def test_connection_refused_without_retries(mesh: Mesh) -> None:
    r = get(mesh.port, "/noretry", "dead:9080")
    assert r.status == 503
    assert r.body == b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"


def test_redirect(mesh: Mesh) -> None:
    r = get(mesh.port, "/redirect?a=1&b=2", "reviews:9080")
    assert (r.status, r.reason) == (301, b"Moved Permanently")
    assert r.headers[0] == (b"location", b"http://other.example.com/new/path?a=1&b=2")
    assert [k for k, _ in r.headers] == [b"location", b"date", b"server", b"content-length"]
    assert r.body == b""


def test_direct_response(mesh: Mesh) -> None:
    r = get(mesh.port, "/direct", "reviews:9080")
    assert (r.status, r.reason, r.body) == (418, b"Unknown", b"I'm a teapot\n")
    assert [k for k, _ in r.headers] == [b"content-length", b"content-type", b"date", b"server"]
    r = get(mesh.port, "/direct-json", "reviews:9080")
    assert r.status == 200 and r.body == b'{"ok":true}'
    assert [(k, v) for k, v in r.headers if k not in (b"date",)] == [
        (b"content-type", b"application/json"), (b"x-direct", b"yes"), (b"content-length", b"11"), (b"server", b"envoy")]


def test_head_and_method_mismatch(mesh: Mesh) -> None:
    r = get(mesh.port, "/nomatch-only", "reviews:9080", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert int(r.header("content-length")) > 0


# ----------------------------------------------------------------------------- headers


def test_proxied_response_headers_like_envoy(mesh: Mesh) -> None:
    r = get(mesh.port, "/reviews/0", "reviews:9080")
    names = r.header_names()
    assert names == ["content-type", "content-length", "x-backend-name", "x-envoy-upstream-service-time", "date", "server"]
    assert r.header("server") == "envoy"
    assert r.header("x-envoy-upstream-service-time").isdigit()


def test_upstream_request_headers_like_envoy(mesh: Mesh) -> None:
    r = get(mesh.port, "/reviews/0", "reviews:9080", [
        ("User-Agent", "t/1"), ("Connection", "keep-alive, x-hop"), ("Keep-Alive", "timeout=5"), ("x-hop", "1"),
        ("Proxy-Connection", "keep-alive"), ("TE", "gzip, trailers"), ("x-foo", "a"), ("x-forwarded-for", "9.9.9.9"),
        ("x-envoy-foo", "bar"), ("x-envoy-retry-on", "5xx")])
    seen = r.json()["headers"]
    assert [k for k, _ in seen] == ["host", "user-agent", "te", "x-foo", "x-forwarded-for", "x-envoy-foo",
                                    "x-forwarded-proto", "x-request-id", "x-envoy-attempt-count"]
    values = dict(seen)
    assert values["host"] == "reviews:9080"
    assert values["te"] == "trailers"
    assert values["x-forwarded-for"] == "9.9.9.9"
    assert values["x-forwarded-proto"] == "http"
    assert UUID_RE.match(values["x-request-id"])
    assert values["x-envoy-attempt-count"] == "1"


def test_request_id_kept_when_present(mesh: Mesh) -> None:
    r = get(mesh.port, "/reviews/0", "reviews:9080", [("x-request-id", "my-id")])
    assert r.seen_header("x-request-id") == "my-id"


def test_route_header_operations(mesh: Mesh) -> None:
    r = get(mesh.port, "/headers", "reviews:9080", [("x-set", "client"), ("x-add", "client"), ("x-remove", "gone")])
    seen = r.json()["headers"]
    assert ["x-set", "route"] in seen and ["x-set", "client"] not in seen
    assert ["x-add", "client"] in seen and ["x-add", "route"] in seen
    assert not any(k == "x-remove" for k, _ in seen)
    # set/add come after x-envoy-attempt-count, as Envoy puts them.
    names = [k for k, _ in seen]
    assert names.index("x-set") > names.index("x-envoy-attempt-count")
    assert r.header("x-resp-set") == "1" and r.header("x-resp-add") == "2" and r.header("x-backend-name") is None


def test_rewrite_path_and_authority(mesh: Mesh) -> None:
    r = get(mesh.port, "/rewrite/a/b?q=1", "reviews:9080")
    info = r.json()
    assert info["name"] == "v1"
    assert info["target"] == "/rewritten/a/b?q=1"
    assert r.seen_header("host") == "ratings.internal"
    assert r.seen_header("x-envoy-original-path") == "/rewrite/a/b?q=1"


def test_path_normalized_and_fragment_stripped(mesh: Mesh) -> None:
    r = get(mesh.port, "/a/../b/./c?x=1#frag", "reviews:9080")
    assert r.json()["target"] == "/b/c?x=1"


def test_absolute_form_is_routed_by_url_host(mesh: Mesh) -> None:
    r = get(mesh.port, "http://reviews:9080/abs", "ignored.example.com", [("end-user", "jason")])
    assert backend_of(r) == "v2"


# ----------------------------------------------------------------------------- connections and bodies


def test_keep_alive_and_pipelining(mesh: Mesh) -> None:
    with Connection(mesh.port) as c:
        for i in range(5):
            assert backend_of(c.request("GET", f"/k{i}", "reviews:9080")) == "v1"
        pipelined = b"".join(
            f"GET /p{i} HTTP/1.1\r\nHost: reviews:9080\r\n\r\n".encode() for i in range(3)
        ) + b"GET /direct HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"
        c.send(pipelined)
        targets = [c.read_response().json()["target"] for _ in range(3)]
        assert targets == ["/p0", "/p1", "/p2"]
        assert c.read_response().status == 418


def test_connection_close_from_client(mesh: Mesh) -> None:
    with Connection(mesh.port) as c:
        r = c.request("GET", "/reviews/0", "reviews:9080", [("Connection", "close")])
        assert r.header_names()[-1] == "connection" and r.header("connection") == "close"
        assert c.is_closed_by_peer()


def test_large_chunked_upload_streams_intact(mesh: Mesh) -> None:
    payload = bytes(range(256)) * 4096 * 10  # 10 MiB
    with Connection(mesh.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: reviews:9080\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(payload), 100_000):
            piece = payload[i : i + 100_000]
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    info = r.json()
    assert info["body_length"] == len(payload)
    assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert ["transfer-encoding", "chunked"] in info["headers"]


def test_large_content_length_upload_and_download(mesh: Mesh) -> None:
    payload = b"z" * (4 * 1024 * 1024)
    r = get(mesh.port, "/upload", "reviews:9080", method="POST", body=payload)
    assert r.json()["body_length"] == len(payload)
    r = get(mesh.port, "/download", "reviews:9080", [("x-backend-size", str(20 * 1024 * 1024))])
    assert r.status == 200 and len(r.body) == 20 * 1024 * 1024


def test_expect_100_continue_is_passed_to_upstream(mesh: Mesh) -> None:
    with Connection(mesh.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        c.sock.settimeout(5)
        first = c.sock.recv(65536)
        # The backend's own 100 Continue, relayed (the proxy sends none of its own).
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        c.send(b"hello")
        rest = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while b"\r\n\r\n" not in rest:
            rest += c.sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK")
    r = get(mesh.port, "/e", "reviews:9080", [("Expect", "100-continue")], method="POST", body=b"")
    assert r.seen_header("expect") == "100-continue"


# ----------------------------------------------------------------------------- bad input


def test_http10_is_426(mesh: Mesh) -> None:
    data = raw_exchange(mesh.port, b"GET / HTTP/1.0\r\nHost: reviews:9080\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert data.endswith(b"\r\n\r\nUpgrade Required")


def test_malformed_request_is_400_and_closed(mesh: Mesh) -> None:
    data = raw_exchange(mesh.port, b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    count_before = get(mesh.port, "/__backend/count", "reviews:9080").body
    raw_exchange(mesh.port, b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
    assert get(mesh.port, "/__backend/count", "reviews:9080").body == count_before


def test_oversized_head_is_431(mesh: Mesh) -> None:
    big = b"x-big: " + b"a" * 70_000 + b"\r\n"
    data = raw_exchange(mesh.port, b"GET / HTTP/1.1\r\nHost: reviews:9080\r\n" + big + b"\r\n")
    assert data.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"x-h%d: 1\r\n" % i for i in range(101))
    data = raw_exchange(mesh.port, b"GET / HTTP/1.1\r\nHost: reviews:9080\r\n" + many + b"\r\n")
    assert data.startswith(b"HTTP/1.1 431 ")


def test_proxy_survives_garbage_and_abrupt_clients(mesh: Mesh) -> None:
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 100\r\n\r\nshort"):
        with socket.create_connection(("127.0.0.1", mesh.port)) as s:
            s.sendall(junk)
    assert backend_of(get(mesh.port, "/still-alive", "reviews:9080")) == "v1"
    assert mesh.proxy.proc.poll() is None


# ----------------------------------------------------------------------------- admin


def test_admin_endpoints(mesh: Mesh) -> None:
    import json

    assert mesh.proxy.admin("/ready") == b"LIVE\n"
    dump = json.loads(mesh.proxy.admin("/config_dump"))
    names = [c["name"] for c in dump["clusters"]]
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in names
    route_names = [rc["name"] for rc in dump["route_configs"]]
    assert route_names == ["9080"]
    clusters = mesh.proxy.admin("/clusters").decode()
    assert f"outbound|9080|v1|reviews.default.svc.cluster.local::127.0.0.1:{mesh.backends['v1'].port}::rq_active::0" in clusters


def test_proxy_sends_no_100_continue_of_its_own(mesh: Mesh) -> None:
    with socket.create_connection(("127.0.0.1", mesh.port), timeout=10) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: reviews:9080\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                  b"x-backend-no-continue: 1\r\n\r\n")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(65536)
        s.settimeout(10)
        s.sendall(b"hello")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
