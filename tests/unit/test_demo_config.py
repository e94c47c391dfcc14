"""The Bookinfo demo's YAML, the runner's reading of it, and the stand-in apps over real sockets.

The full demo (real sidecars and gateway) is exercised by the integration tests.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from meshproxy.demo import apps, runner
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BOOKINFO = ROOT / "config" / "bookinfo"
VARIANTS = BOOKINFO / "variants"
GATEWAYS = ROOT / "config" / "gateways"
ALL_YAML = sorted(BOOKINFO.glob("*.yaml")) + sorted(VARIANTS.glob("*.yaml")) + sorted(GATEWAYS.glob("*.yaml"))


def docs_of(*paths: Path) -> list[dict]:
    return runner.load_documents(paths)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def default_docs() -> list[dict]:
    return docs_of(*runner.config_files(BOOKINFO))


# --------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_parses_as_kubernetes_documents(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"]["name"]
        if doc["apiVersion"].startswith("networking.istio.io"):
            assert doc["apiVersion"] == "networking.istio.io/v1"


def test_default_mesh_files() -> None:
    names = [p.name for p in runner.config_files(BOOKINFO)]
    assert names == [
        "bookinfo.yaml",
        "destination-rules.yaml",
        "gateway.yaml",
        "virtual-service-reviews.yaml",
        "virtual-service-v1.yaml",
    ]  # non-recursive: nothing from variants/


def test_reviews_file_replaces_the_default_one() -> None:
    variant = VARIANTS / "virtual-service-reviews-75-25.yaml"
    files = runner.config_files(BOOKINFO, variant)
    assert variant in files
    assert BOOKINFO / runner.REVIEWS_FILE_NAME not in files
    assert len(files) == len(runner.config_files(BOOKINFO))


def test_bookinfo_services_and_pods() -> None:
    docs = docs_of(BOOKINFO / "bookinfo.yaml")
    services = by_kind(docs, "Service")
    pods = by_kind(docs, "Pod")
    assert set(services) == {"productpage", "details", "ratings", "reviews"}
    for svc in services.values():
        assert svc["apiVersion"] == "v1"
        assert svc["spec"]["ports"] == [{"port": 9080, "name": "http", "targetPort": "http"}]
        assert svc["spec"]["selector"] == {"app": svc["metadata"]["name"]}
    assert set(pods) == {"productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"}
    for name, pod in pods.items():
        app, version = name.rsplit("-", 1)
        assert pod["metadata"]["labels"] == {"app": app, "version": version}
        assert pod["spec"]["serviceAccountName"] == f"bookinfo-{app}"
        assert pod["spec"]["containers"][0]["ports"][0]["name"] == "http"
        assert pod["status"]["podIP"] == "127.0.0.1"


def test_workloads_have_distinct_ports_and_named_target_ports_resolve() -> None:
    docs = default_docs()
    workloads = runner.read_workloads(docs)
    service_ports = runner.read_service_ports(docs)
    assert len(workloads) == 6
    assert sorted(w.port for w in workloads) == list(range(19081, 19087))
    assert all(w.namespace == "default" for w in workloads)
    for w in workloads:
        selecting = [sp for sp in service_ports if sp.selects(w)]
        assert [sp.service for sp in selecting] == [w.app]
        assert selecting[0].target_port == "http"
        assert selecting[0].resolve(w) == w.port  # the named port, per pod
    reviews = next(sp for sp in service_ports if sp.service == "reviews")
    assert sorted(reviews.resolve(w) for w in workloads if reviews.selects(w)) == [19084, 19085, 19086]


def test_demo_ports_avoid_istio_reserved_ports() -> None:
    reserved = {15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090}
    ports = {w.port for w in runner.read_workloads(default_docs())}
    ports |= set(range(runner.OUTBOUND_PORT_BASE, runner.OUTBOUND_PORT_BASE + 6))
    ports |= set(range(runner.ADMIN_PORT_BASE, runner.ADMIN_PORT_BASE + 7))
    assert not ports & reserved
    assert len(ports) == 6 + 6 + 7


def test_gateway_is_istios_bookinfo_gateway() -> None:
    docs = docs_of(BOOKINFO / "gateway.yaml")
    gw = by_kind(docs, "Gateway")["bookinfo-gateway"]
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    assert gw["spec"]["servers"] == [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
    vs = by_kind(docs, "VirtualService")["bookinfo"]
    assert vs["spec"]["hosts"] == ["*"] and vs["spec"]["gateways"] == ["bookinfo-gateway"]
    [rule] = vs["spec"]["http"]
    assert rule["match"] == [
        {"uri": {"exact": "/productpage"}},
        {"uri": {"prefix": "/static"}},
        {"uri": {"exact": "/login"}},
        {"uri": {"exact": "/logout"}},
        {"uri": {"prefix": "/api/v1/products"}},
    ]
    assert rule["route"] == [{"destination": {"host": "productpage", "port": {"number": 9080}}}]


def test_reviews_routes_jason_to_v2_and_others_to_v1() -> None:
    vs = by_kind(docs_of(BOOKINFO / "virtual-service-reviews.yaml"), "VirtualService")
    assert list(vs) == ["reviews"]
    first, default = vs["reviews"]["spec"]["http"]
    assert first["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert first["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert "match" not in default
    assert default["route"] == [{"destination": {"host": "reviews", "subset": "v1"}}]


def test_variants_replace_only_the_reviews_virtual_service() -> None:
    weighted = by_kind(docs_of(VARIANTS / "virtual-service-reviews-75-25.yaml"), "VirtualService")
    assert list(weighted) == ["reviews"]
    route = weighted["reviews"]["spec"]["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in route] == [("v1", 75), ("v3", 25)]
    v3 = by_kind(docs_of(VARIANTS / "virtual-service-reviews-v3.yaml"), "VirtualService")
    assert v3["reviews"]["spec"]["http"] == [{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]


@pytest.mark.parametrize("reviews_file", [None, *sorted(VARIANTS.glob("*.yaml"))], ids=lambda p: p.name if p else "default")
def test_every_route_destination_exists(reviews_file: Path | None) -> None:
    """Each routed host is a Service and each subset is defined (else Envoy answers 503 NC)."""
    docs = docs_of(*runner.config_files(BOOKINFO, reviews_file))
    services = by_kind(docs, "Service")
    subsets = {dr["spec"]["host"]: {s["name"] for s in dr["spec"]["subsets"]} for dr in by_kind(docs, "DestinationRule").values()}
    hosts_seen: list[str] = []
    for vs in by_kind(docs, "VirtualService").values():
        if "gateways" not in vs["spec"]:
            hosts_seen += vs["spec"]["hosts"]  # mesh VSs: one per host (sidecars do not merge)
        for rule in vs["spec"]["http"]:
            for route in rule["route"]:
                dest = route["destination"]
                assert dest["host"] in services
                if "subset" in dest:
                    assert dest["subset"] in subsets[dest["host"]]
    assert sorted(hosts_seen) == ["details", "productpage", "ratings", "reviews"]


def test_standalone_gateway_example() -> None:
    docs = docs_of(*sorted(GATEWAYS.glob("*.yaml")))
    assert {"Service", "Pod", "Gateway", "VirtualService"} <= {d["kind"] for d in docs}
    [w] = runner.read_workloads(docs)
    [sp] = runner.read_service_ports(docs)
    assert sp.selects(w) and sp.resolve(w) == w.port
    assert by_kind(docs, "Gateway")["httpbin-gateway"]["spec"]["selector"] == {"istio": "ingressgateway"}


def test_default_config_dir_is_bookinfo() -> None:
    assert (runner.default_config_dir() / "bookinfo.yaml").is_file()


# --------------------------------------------------------------------------- runner (no proxy)


def test_plan_assigns_ports_and_banner_says_what_to_curl(tmp_path: Path) -> None:
    demo = runner.Demo(BOOKINFO, VARIANTS / "virtual-service-reviews-75-25.yaml", gateway_port=free_port(),
                       log_dir=tmp_path, outbound_port_base=free_port(), admin_port_base=free_port())
    try:
        demo._plan()
    except runner.DemoError as exc:  # a real demo is running on this machine
        pytest.skip(str(exc))
    outbound = [p[0] for p in demo.sidecar_ports.values()]
    admin = [p[1] for p in demo.sidecar_ports.values()] + [demo.gateway_admin_port]
    assert len(set(outbound + admin)) == 13
    # every proxy gets the chosen files, one --config each
    given = [Path(a).name for a in demo.config_args[1::2]]
    assert demo.config_args[::2] == ["--config"] * len(given) == ["--config"] * 5
    assert "virtual-service-reviews-75-25.yaml" in given and runner.REVIEWS_FILE_NAME not in given
    banner = demo.banner()
    assert f"curl 127.0.0.1:{demo.gateway_port}/productpage" in banner
    assert f"curl -H 'end-user: jason' 127.0.0.1:{demo.gateway_port}/productpage" in banner
    assert "virtual-service-reviews-75-25.yaml" in banner


def _tiny_mesh(tmp_path: Path) -> Path:
    port = free_port()
    tmp_path.mkdir(parents=True)
    (tmp_path / "mesh.yaml").write_text(f"""
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 8000, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-v1, labels: {{app: echo, version: v1}}}}
spec:
  containers: [{{name: echo, ports: [{{name: http, containerPort: {port}}}]}}]
status: {{podIP: 127.0.0.1}}
""")
    return tmp_path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def test_start_reports_a_proxy_that_exits_and_stops_everything(tmp_path: Path) -> None:
    config = _tiny_mesh(tmp_path / "cfg")
    crash = [sys.executable, "-c", "import sys; print('boom: bad config', file=sys.stderr); sys.exit(3)"]
    demo = runner.Demo(config, gateway_port=free_port(), log_dir=tmp_path / "logs", proxy_command=crash,
                       outbound_port_base=free_port(), admin_port_base=free_port(), ready_timeout=10)
    with pytest.raises(runner.DemoError) as info:
        demo.start()
    message = str(info.value)
    assert "exited with code 3 while starting" in message
    assert "boom: bad config" in message  # the tail of its output
    assert all(c.proc is not None and not _alive(c.proc.pid) for c in demo.children)


def test_start_names_what_did_not_come_up(tmp_path: Path) -> None:
    config = _tiny_mesh(tmp_path / "cfg")
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    demo = runner.Demo(config, gateway_port=free_port(), log_dir=tmp_path / "logs", proxy_command=hang,
                       outbound_port_base=free_port(), admin_port_base=free_port(), ready_timeout=1.5)
    with pytest.raises(runner.DemoError) as info:
        demo.start()
    message = str(info.value)
    assert "2 of 3 processes did not come up" in message
    assert "gateway istio-ingressgateway not ready after 1.5 s" in message
    assert "sidecar echo-v1 not ready" in message and "/ready" in message
    assert "app echo-v1" not in message  # the echo app itself did come up
    assert all(c.proc is not None and not _alive(c.proc.pid) for c in demo.children)


# --------------------------------------------------------------------------- apps over sockets


class AppProcess:
    def __init__(self, app: str, version: str = "v1", sidecar: int | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "meshproxy.demo.apps", app, "--version", version, "--port", str(self.port)]
        if sidecar is not None:
            argv += ["--sidecar", f"127.0.0.1:{sidecar}"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def start_app() -> Iterator:
    started: list[AppProcess] = []

    def start(app: str, version: str = "v1", sidecar: int | None = None) -> AppProcess:
        started.append(AppProcess(app, version, sidecar))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


def get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def test_details_answers_json_and_keeps_the_connection_alive(start_app) -> None:
    details = start_app("details")
    conn = http.client.HTTPConnection("127.0.0.1", details.port, timeout=5)
    status, headers, body = get(conn, "/details/0", {"x-request-id": "r-1"})
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["service"] == "details" and data["version"] == "v1" and data["id"] == "0"
    assert data["request"]["headers"]["x-request-id"] == "r-1"
    sock = conn.sock
    status, _, body = get(conn, "/health")
    assert status == 200 and conn.sock is sock  # same connection, not reopened
    status, _, body = get(conn, "/nope")
    assert status == 404 and json.loads(body)["service"] == "details"
    conn.close()


def test_pipelined_requests_are_answered_in_order(start_app) -> None:
    details = start_app("details")
    with socket.create_connection(("127.0.0.1", details.port), timeout=5) as sock:
        sock.sendall(b"GET /details/1 HTTP/1.1\r\nHost: d\r\n\r\nGET /details/2 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b'"id":"1"') < data.index(b'"id":"2"')
    assert b"connection: close" in data  # then the server closed, ending the loop


def test_reviews_v1_calls_no_ratings(start_app) -> None:
    reviews = start_app("reviews", "v1")  # no sidecar: any call would fail
    conn = http.client.HTTPConnection("127.0.0.1", reviews.port, timeout=5)
    status, _, body = get(conn, "/reviews/0")
    data = json.loads(body)
    assert status == 200 and data["service"] == "reviews" and data["version"] == "v1"
    assert "ratings" not in data and all("rating" not in r for r in data["reviews"])


def test_reviews_v2_calls_ratings_through_its_sidecar_with_host_and_trace_headers(start_app) -> None:
    ratings = start_app("ratings")
    reviews = start_app("reviews", "v2", sidecar=ratings.port)  # the "sidecar" is ratings itself
    conn = http.client.HTTPConnection("127.0.0.1", reviews.port, timeout=5)
    for _ in range(2):  # the second call reuses the upstream connection
        status, _, body = get(conn, "/reviews/0", {"x-request-id": "abc", "traceparent": "00-1-2-01", "end-user": "jason"})
        data = json.loads(body)
        assert status == 200 and data["version"] == "v2"
        assert data["ratings"] == {"status": 200, "service": "ratings", "version": "v1"}
        assert data["reviews"][0]["rating"] == {"stars": 5, "color": "black"}


def test_reviews_v3_reports_ratings_unavailable(start_app) -> None:
    reviews = start_app("reviews", "v3", sidecar=free_port())  # nobody listens there
    conn = http.client.HTTPConnection("127.0.0.1", reviews.port, timeout=5)
    status, _, body = get(conn, "/reviews/0")
    data = json.loads(body)
    assert status == 200 and data["ratings"]["status"] is None
    assert data["reviews"][0]["rating"] == {"error": "Ratings service is currently unavailable"}


def test_productpage_text_page_and_forwarded_headers(start_app) -> None:
    details = start_app("details")
    page = start_app("productpage", sidecar=details.port)  # details answers /reviews/0 with 404
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    status, headers, body = get(conn, "/productpage", {"end-user": "jason"})
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.decode().splitlines() == [
        "productpage v1",
        "details v1",
        "reviews: unavailable (404)",
        "ratings: unknown (reviews unavailable)",
        "end-user: jason",
    ]
    status, headers, body = get(conn, "/productpage", {"accept": "application/json", "x-request-id": "req-7", "x-b3-traceid": "t1"})
    data = json.loads(body)
    seen = data["details"]["request"]["headers"]
    assert seen["host"] == "details:9080"
    assert seen["x-request-id"] == "req-7" and seen["x-b3-traceid"] == "t1"
    assert "end-user" not in seen  # nobody logged in
    assert data["summary"][0] == "productpage v1"


def test_productpage_answers_200_when_upstreams_are_down(start_app) -> None:
    page = start_app("productpage", sidecar=free_port())
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    status, _, body = get(conn, "/productpage")
    assert status == 200
    assert body.decode().splitlines()[:3] == [
        "productpage v1",
        "details: unavailable (connection refused)",
        "reviews: unavailable (connection refused)",
    ]


def test_productpage_login_sets_the_user_it_forwards(start_app) -> None:
    details = start_app("details")
    page = start_app("productpage", sidecar=details.port)
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=10)
    conn.request("POST", "/login", body="username=jason", headers={"content-type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 302 and resp.getheader("location") == "/productpage"
    cookie = resp.getheader("set-cookie").split(";")[0]
    _, _, body = get(conn, "/productpage", {"cookie": cookie, "accept": "application/json"})
    assert json.loads(body)["details"]["request"]["headers"]["end-user"] == "jason"


async def test_upstream_client_reuses_its_connection(start_app) -> None:
    ratings = start_app("ratings")
    client = apps.UpstreamClient("127.0.0.1", ratings.port)
    try:
        first = await client.request("GET", "/ratings/0", "ratings:9080")
        second = await client.request("GET", "/ratings/1", "ratings:9080")
        assert first.ok and second.ok and second.json()["id"] == "1"
        assert len(client._idle) == 1  # one connection, returned to the pool twice
        both = await asyncio.gather(*(client.request("GET", "/health", "ratings:9080") for _ in range(3)))
        assert all(r.ok for r in both)
    finally:
        client.close()
