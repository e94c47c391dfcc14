"""Sans-IO tests of the routing core: config compiled from YAML, requests routed with no sockets."""

from __future__ import annotations

import random
from textwrap import dedent

import pytest

from meshproxy.config.compile import CompileOptions, compile_snapshot
from meshproxy.config.loader import load_text
from meshproxy.core import local_reply
from meshproxy.core.request import RequestContext, normalize_path, split_host_port, split_target
from meshproxy.core.router import decide, redirect_location
from meshproxy.core.snapshot import DIRECT_RESPONSE, FORWARD, REDIRECT, ProxyInfo, Snapshot

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: other}
spec:
  selector: {app: web}
  ports: [{name: http-web, port: 80, targetPort: 8000}, {name: grpc, port: 7070}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, ports: [{name: http, containerPort: 19001}]}]}
status: {podIP: 127.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, ports: [{name: http, containerPort: 19002}]}]}
status: {podIP: 127.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v3, namespace: default, labels: {app: reviews, version: v3}}
spec: {containers: [{name: app, ports: [{name: http, containerPort: 19003}]}]}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
  - {name: v9, labels: {version: v9}}
"""


def snapshot(extra: str = "", *, mode: str = "sidecar", namespace: str = "default", labels: dict | None = None,
             policy: str | None = None) -> Snapshot:
    config = load_text(SERVICES + "---\n" + dedent(extra))
    assert not config.errors, [str(e) for e in config.errors]
    proxy = ProxyInfo(mode, namespace, labels or {"app": "sleep"})
    return compile_snapshot(config, proxy, CompileOptions(outbound_traffic_policy=policy), rng=random.Random(1))


def req(authority: str, target: str = "/", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> RequestContext:
    _, path, query = split_target(target)
    return RequestContext(method, path, query, authority, "http", headers or [])


def route(snap: Snapshot, r: RequestContext, value: int = 0, table: str | None = None):
    t = snap.route_tables.get(table) if table else snap.table_for_port(r.port or 80)
    return decide(t, r, lambda n: value % n)


# ----------------------------------------------------------------------------- host lookup


@pytest.mark.parametrize(
    "authority",
    ["reviews:9080", "reviews.default:9080", "reviews.default.svc:9080", "reviews.default.svc.cluster.local:9080",
     "REVIEWS:9080", "reviews.default.svc.cluster.local.:9080"],
)
def test_sidecar_host_names_for_same_namespace_service(authority: str) -> None:
    d = route(snapshot(), req(authority))
    assert d.destination is not None
    assert d.destination.cluster_name == "outbound|9080||reviews.default.svc.cluster.local"


def test_short_name_of_other_namespace_is_not_a_service_name() -> None:
    snap = snapshot()
    # "web" lives in namespace other: only web.other / web.other.svc / FQDN work from default.
    assert route(snap, req("web.other")).destination.cluster_name == "outbound|80||web.other.svc.cluster.local"
    d = route(snap, req("web"))
    assert d.vhost is not None and d.vhost.name == "allow_any"


def test_port_in_host_selects_route_table_not_the_match() -> None:
    snap = snapshot()
    assert set(snap.route_tables) == {"9080", "80", "7070"}
    # reviews has no port 80: Host reviews:80 falls to the catch-all of table "80".
    assert route(snap, req("reviews")).vhost.name == "allow_any"


def test_registry_only_unknown_host_is_502_block_all() -> None:
    d = route(snapshot(policy="REGISTRY_ONLY"), req("example.com"))
    assert d.reply is local_reply.BLOCK_ALL


def test_domain_precedence_exact_then_longest_suffix_then_star() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: star, namespace: default}
        spec:
          hosts: ["*"]
          gateways: [gw]
          http: [{directResponse: {status: 201}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: short-wild, namespace: default}
        spec:
          hosts: ["*.com"]
          gateways: [gw]
          http: [{directResponse: {status: 202}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: long-wild, namespace: default}
        spec:
          hosts: ["*.example.com"]
          gateways: [gw]
          http: [{directResponse: {status: 203}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: exact, namespace: default}
        spec:
          hosts: ["api.example.com"]
          gateways: [gw]
          http: [{directResponse: {status: 204}}]
        """,
        mode="gateway",
        namespace="istio-system",
        labels={"istio": "ingressgateway"},
    )
    status = lambda host: route(snap, req(host), table="8080").route.direct_status  # noqa: E731
    assert status("api.example.com:8080") == 204
    assert status("Www.Example.com") == 203
    assert status("foo.com") == 202
    assert status("example.org") == 201
    # "*.example.com" does not match "example.com" itself.
    assert status("example.com") == 202


def test_gateway_unknown_host_is_404_no_route() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["bookinfo.com"]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: vs, namespace: default}
        spec:
          hosts: ["*"]
          gateways: [gw]
          http: [{route: [{destination: {host: reviews}}]}]
        """,
        mode="gateway",
        labels={"istio": "ingressgateway"},
    )
    assert route(snap, req("other.com"), table="80").reply is local_reply.NO_ROUTE
    d = route(snap, req("bookinfo.com"), table="80")
    assert d.destination.cluster_name == "outbound|9080||reviews.default.svc.cluster.local"


# ----------------------------------------------------------------------------- matching

MATCHES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: api
    match:
    - uri: {prefix: /api}
      method: {exact: POST}
    - uri: {regex: "/v[0-9]+/items"}
    route: [{destination: {host: reviews, subset: v3}}]
  - name: case
    match: [{uri: {exact: /Case}, ignoreUriCase: true}]
    directResponse: {status: 200, body: {string: case}}
  - name: query
    match: [{queryParams: {debug: {exact: ""}, mode: {prefix: fa}}}]
    directResponse: {status: 299}
  - name: without
    match: [{withoutHeaders: {x-canary: {}}, uri: {prefix: /nocanary}}]
    directResponse: {status: 298}
  - name: present
    match: [{headers: {x-any: {}}}]
    directResponse: {status: 297}
  - name: multi
    match: [{headers: {x-multi: {exact: "a,b"}}}]
    directResponse: {status: 296}
  - name: portmatch
    match: [{port: 1234, uri: {prefix: /}}]
    directResponse: {status: 295}
  - name: authority
    match: [{authority: {exact: "reviews:9080"}, uri: {prefix: /auth}}]
    directResponse: {status: 294}
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def cluster(snap: Snapshot, r: RequestContext) -> str:
    d = route(snap, r)
    if d.destination is not None:
        return d.destination.cluster_name.split("|")[2]
    assert d.route is not None
    return str(d.route.direct_status)


def test_first_match_wins_and_header_match() -> None:
    snap = snapshot(MATCHES)
    assert cluster(snap, req("reviews:9080", headers=[(b"end-user", b"jason")])) == "v2"
    assert cluster(snap, req("reviews:9080", headers=[(b"end-user", b"Jason")])) == "v1"
    assert cluster(snap, req("reviews:9080")) == "v1"


def test_match_entries_are_ored_fields_anded() -> None:
    snap = snapshot(MATCHES)
    assert cluster(snap, req("reviews:9080", "/api/x", "POST")) == "v3"
    assert cluster(snap, req("reviews:9080", "/api/x", "GET")) == "v1"
    assert cluster(snap, req("reviews:9080", "/v12/items")) == "v3"
    # RE2 full match: a prefix of the pattern is not enough.
    assert cluster(snap, req("reviews:9080", "/v12/items/1")) == "v1"
    # Raw string prefix: /apiary matches prefix /api.
    assert cluster(snap, req("reviews:9080", "/apiary", "POST")) == "v3"


def test_ignore_uri_case_and_query_params() -> None:
    snap = snapshot(MATCHES)
    assert cluster(snap, req("reviews:9080", "/cASE")) == "200"
    assert cluster(snap, req("reviews:9080", "/case?x=1")) == "200"
    assert cluster(snap, req("reviews:9080", "/q?debug&mode=fast")) == "299"
    assert cluster(snap, req("reviews:9080", "/q?debug=&mode=fa")) == "299"
    assert cluster(snap, req("reviews:9080", "/q?debug=1&mode=fast")) == "v1"
    assert cluster(snap, req("reviews:9080", "/q?mode=fast")) == "v1"


def test_without_headers_and_presence() -> None:
    snap = snapshot(MATCHES)
    assert cluster(snap, req("reviews:9080", "/nocanary")) == "298"
    assert cluster(snap, req("reviews:9080", "/nocanary", headers=[(b"x-canary", b"")])) == "v1"
    assert cluster(snap, req("reviews:9080", "/x", headers=[(b"x-any", b"")])) == "297"
    assert cluster(snap, req("reviews:9080", "/x", headers=[(b"x-multi", b"a"), (b"x-multi", b"b")])) == "296"


def test_port_match_only_on_that_port_and_authority_sees_port() -> None:
    snap = snapshot(MATCHES)
    assert cluster(snap, req("reviews:9080", "/anything")) == "v1"
    assert cluster(snap, req("reviews:9080", "/auth")) == "294"
    assert cluster(snap, req("reviews.default:9080", "/auth")) == "v1"


def test_undefined_subset_is_503_no_cluster() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /missing}}]
            route: [{destination: {host: reviews, subset: nope}}]
          - match: [{uri: {prefix: /port}}]
            route: [{destination: {host: reviews, port: {number: 1111}}}]
          - route: [{destination: {host: reviews, subset: v9}}]
        """
    )
    assert route(snap, req("reviews:9080", "/missing")).reply is local_reply.NO_CLUSTER
    assert route(snap, req("reviews:9080", "/port")).reply is local_reply.NO_CLUSTER
    d = route(snap, req("reviews:9080", "/"))
    assert d.reply is None and d.destination.cluster is not None and d.destination.cluster.endpoints == ()


def test_source_labels_and_gateways_are_config_time_selectors() -> None:
    vs = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{sourceLabels: {app: productpage}}]
            route: [{destination: {host: reviews, subset: v2}}]
          - match: [{sourceNamespace: prod}]
            route: [{destination: {host: reviews, subset: v3}}]
          - match: [{gateways: [some-gateway]}]
            route: [{destination: {host: reviews, subset: v9}}]
          - route: [{destination: {host: reviews, subset: v1}}]
    """
    assert cluster(snapshot(vs, labels={"app": "productpage", "version": "v1"}), req("reviews:9080")) == "v2"
    assert cluster(snapshot(vs, labels={"app": "sleep"}), req("reviews:9080")) == "v1"
    assert cluster(snapshot(vs, namespace="prod"), req("reviews.default:9080")) == "v3"


def test_oldest_virtual_service_wins_on_sidecar() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: newer, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
        spec:
          hosts: [reviews]
          http: [{route: [{destination: {host: reviews, subset: v2}}]}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          http: [{route: [{destination: {host: reviews, subset: v3}}]}]
        """
    )
    assert cluster(snap, req("reviews:9080")) == "v3"


# ----------------------------------------------------------------------------- weights


def test_weighted_destinations_exact_with_injected_random() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - {destination: {host: reviews, subset: v1}, weight: 3}
            - {destination: {host: reviews, subset: v2}, weight: 0}
            - {destination: {host: reviews, subset: v3}, weight: 1}
        """
    )
    r = req("reviews:9080")
    picks = [route(snap, r, value).destination.subset for value in range(4)]
    assert picks == ["v1", "v1", "v1", "v3"]
    assert route(snap, r).route.total_weight == 4


def test_single_destination_gets_everything_whatever_its_weight() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http: [{route: [{destination: {host: reviews, subset: v2}, weight: 5}]}]
        """
    )
    assert all(route(snap, req("reviews:9080"), v).destination.subset == "v2" for v in range(10))


# ----------------------------------------------------------------------------- actions


def test_redirect_location() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /old}}]
            redirect: {uri: /new, authority: other.example.com}
          - match: [{uri: {exact: /https}}]
            redirect: {scheme: https, redirectCode: 308}
          - match: [{uri: {exact: /port}}]
            redirect: {port: 8443, uri: /p}
          - match: [{uri: {exact: /derive}}]
            redirect: {derivePort: FROM_REQUEST_PORT, uri: /d}
        """
    )
    def loc(target: str) -> tuple[int, str]:
        r = req("reviews:9080", target)
        d = route(snap, r)
        assert d.route.action == REDIRECT
        return d.route.redirect.code, redirect_location(d.route.redirect, d.route, r, 15001)

    # Istio sets path_redirect: the whole path is replaced even on a prefix match; the query stays.
    assert loc("/old/x?a=1") == (301, "http://other.example.com/new?a=1")
    assert loc("/https") == (308, "https://reviews:9080/https")
    assert loc("/port") == (301, "http://reviews:8443/p")
    assert loc("/derive") == (301, "http://reviews:15001/d")


def test_rewrite_prefix_regex_and_authority() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {prefix: /api/v1}}]
            rewrite: {uri: /v2, authority: ratings.default}
            route: [{destination: {host: reviews}}]
          - match: [{uri: {exact: /exact}}]
            rewrite: {uri: /replaced}
            route: [{destination: {host: reviews}}]
          - match: [{uri: {prefix: /re}}]
            rewrite: {uriRegexRewrite: {match: "^/re/([a-z]+)/(.*)$", rewrite: '/\\2/\\1'}}
            route: [{destination: {host: reviews}}]
        """
    )
    r1 = route(snap, req("reviews:9080", "/api/v1/items")).route
    assert r1.rewrite_path("/api/v1/items") == "/v2/items"
    assert r1.host_rewrite == "ratings.default"
    assert route(snap, req("reviews:9080", "/exact")).route.rewrite_path("/exact") == "/replaced"
    assert route(snap, req("reviews:9080", "/re/abc/def")).route.rewrite_path("/re/abc/def") == "/def/abc"


def test_direct_response_and_header_plans() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - match: [{uri: {exact: /direct}}]
            directResponse: {status: 418, body: {bytes: aGVsbG8=}}
          - headers:
              request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
            route: [{destination: {host: reviews}}]
        """
    )
    d = route(snap, req("reviews:9080", "/direct"))
    assert d.route.action == DIRECT_RESPONSE and d.route.direct_status == 418 and d.route.direct_body == b"hello"
    d = route(snap, req("reviews:9080", "/x"))
    assert d.route.action == FORWARD
    out = d.route.request_headers.apply([(b"x-a", b"0"), (b"x-b", b"1"), (b"x-c", b"gone"), (b"x-d", b"kept")])
    assert out == [(b"x-b", b"1"), (b"x-d", b"kept"), (b"x-a", b"1"), (b"x-b", b"2")]


def test_lb_policy_precedence_subset_port_over_subset_over_port_over_top() -> None:
    snap = snapshot(
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            loadBalancer: {simple: RANDOM}
            portLevelSettings:
            - port: {number: 9080}
              loadBalancer: {simple: ROUND_ROBIN}
          subsets:
          - name: a
            labels: {version: v1}
            trafficPolicy:
              loadBalancer: {consistentHash: {httpHeaderName: x-user}}
          - name: b
            labels: {version: v1}
            trafficPolicy:
              connectionPool: {tcp: {connectTimeout: 2s}}
              portLevelSettings:
              - port: {number: 9080}
                loadBalancer: {consistentHash: {maglev: {tableSize: 251}, useSourceIp: true}}
          - name: c
            labels: {version: v1}
        """
    )
    c = snap.clusters
    assert c["outbound|9080||ratings.default.svc.cluster.local"].lb.kind == "ROUND_ROBIN"
    assert c["outbound|9080|a|ratings.default.svc.cluster.local"].lb.kind == "RING_HASH"
    assert c["outbound|9080|a|ratings.default.svc.cluster.local"].lb.hash_policy.header_name == "x-user"
    b = c["outbound|9080|b|ratings.default.svc.cluster.local"]
    assert b.lb.kind == "MAGLEV" and b.lb.maglev_table_size == 251
    # The subset's portLevelSettings replaced all four components: connectTimeout fell back to the default.
    assert b.connect_timeout == 10.0
    assert c["outbound|9080|c|ratings.default.svc.cluster.local"].lb.kind == "ROUND_ROBIN"


def test_named_target_port_resolves_per_pod() -> None:
    snap = snapshot()
    eps = snap.clusters["outbound|9080||reviews.default.svc.cluster.local"].endpoints
    assert sorted(e.key for e in eps) == ["127.0.0.1:19001", "127.0.0.1:19002", "127.0.0.1:19003"]
    v2 = snap.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"].endpoints
    assert [e.key for e in v2] == ["127.0.0.1:19002"]


# ----------------------------------------------------------------------------- request targets


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a/b?x=1", (None, "/a/b", "x=1")),
        ("/a/../b/./c?x=1#frag", (None, "/b/c", "x=1")),
        ("/a#frag", (None, "/a", "")),
        ("/../..", (None, "/", "")),
        ("/a/%7Euser/%2f", (None, "/a/~user/%2F", "")),
        ("http://Host.example:8080/p?q", ("Host.example:8080", "/p", "q")),
        ("http://host.example", ("host.example", "/", "")),
        ("*", (None, "*", "")),
    ],
)
def test_split_target_normalizes_like_istio(target: str, expected: tuple) -> None:
    assert split_target(target) == expected


def test_normalize_keeps_double_slashes_and_trailing_dot_segments() -> None:
    assert normalize_path("//a//b") == "//a//b"
    assert normalize_path("/a/b/..") == "/a/"
    assert normalize_path("/a\\b") == "/a/b"


def test_split_host_port() -> None:
    assert split_host_port("Reviews:9080") == ("reviews", 9080)
    assert split_host_port("[::1]:80") == ("[::1]", 80)
    assert split_host_port("example.com.") == ("example.com", None)


def test_request_ids_are_unique_uuid4() -> None:
    import uuid

    from meshproxy.core.ids import new_request_id

    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for rid in list(ids)[:200]:
        u = uuid.UUID(rid.decode())
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u).encode() == rid
