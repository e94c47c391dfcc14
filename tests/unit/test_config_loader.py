"""Configuration loader: YAML files -> validated models, with issues naming file/document/field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest

from meshproxy.config import ConfigError, ConfigSet, DocRef, load_paths, load_text
from meshproxy.config.loader import ConfigIssue, format_path
from meshproxy.config.models import (
    HTTPRetry,
    MeshConfig,
    StringMatch,
    VirtualService,
    parse_duration,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load_one(tmp_path: Path, text: str, name: str = "config.yaml") -> ConfigSet:
    return load_paths([write(tmp_path, name, text)])


def messages(cs: ConfigSet) -> list[str]:
    return [str(i) for i in cs.issues]


def vs_doc(http: str, *, api: str = "networking.istio.io/v1", name: str = "reviews", hosts: str = "[reviews]") -> str:
    return (
        f"apiVersion: {api}\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {hosts}\n  http:\n"
        + textwrap.indent(textwrap.dedent(http).strip("\n"), "  ")
        + "\n"
    )


# --------------------------------------------------------------------------------------------
# Bookinfo: every kind from realistic manifests

BOOKINFO_PLATFORM = """
# Bookinfo platform manifest (samples/bookinfo/platform/kube/bookinfo.yaml shape)
apiVersion: v1
kind: Service
metadata:
  name: details
  labels:
    app: details
    service: details
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: details
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-details
  labels:
    account: details
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: details-v1
  labels:
    app: details
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: details
      version: v1
  template:
    metadata:
      labels:
        app: details
        version: v1
    spec:
      serviceAccountName: bookinfo-details
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.2
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 9080
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels:
    app: reviews
    service: reviews
spec:
  type: ClusterIP
  clusterIP: 10.96.0.21
  ports:
  - port: 9080
    name: http
    targetPort: 9080
    appProtocol: http
  selector:
    app: reviews
status:
  loadBalancer: {}
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v2-5b667bcbf8-abcde
  namespace: default
  labels:
    app: reviews
    version: v2
    security.istio.io/tlsMode: istio
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: reviews
    image: docker.io/istio/examples-bookinfo-reviews-v2:1.20.2
    imagePullPolicy: IfNotPresent
    env:
    - name: LOG_DIR
      value: "/tmp/logs"
    ports:
    - containerPort: 9080
      name: http
    volumeMounts:
    - name: tmp
      mountPath: /tmp
  volumes:
  - name: tmp
    emptyDir: {}
status:
  phase: Running
  podIP: 10.244.0.12
  podIPs:
  - ip: 10.244.0.12
"""

BOOKINFO_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  # The selector matches the ingress gateway pod labels.
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"""

BOOKINFO_DESTINATION_RULES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: productpage
spec:
  host: productpage
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
"""

BOOKINFO_VS_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
    timeout: 0.5s
"""


def test_bookinfo_directory_loads_every_kind(tmp_path: Path) -> None:
    write(tmp_path, "bookinfo/00-platform.yaml", BOOKINFO_PLATFORM)
    write(tmp_path, "bookinfo/10-gateway.yaml", BOOKINFO_GATEWAY)
    write(tmp_path, "bookinfo/20-destination-rules.yml", BOOKINFO_DESTINATION_RULES)
    write(tmp_path, "bookinfo/30-vs.yaml", BOOKINFO_VS_REVIEWS)
    write(tmp_path, "bookinfo/README.md", "not yaml: [")
    cs = load_paths([tmp_path / "bookinfo"])

    assert cs.errors == []
    # ServiceAccount and Deployment are skipped with a warning each.
    assert [(w.ref.kind, w.ref.name) for w in cs.warnings] == [
        ("ServiceAccount", "bookinfo-details"),
        ("Deployment", "details-v1"),
    ]

    assert [s.name for s in cs.services] == ["details", "reviews"]
    reviews_svc = cs.services[1].doc
    assert reviews_svc.spec.cluster_ip == "10.96.0.21"
    assert reviews_svc.spec.type == "ClusterIP"
    assert reviews_svc.spec.selector == {"app": "reviews"}
    port = reviews_svc.spec.ports[0]
    assert (port.name, port.port, port.target_port, port.app_protocol, port.protocol) == (
        "http", 9080, 9080, "http", "TCP")
    assert cs.services[0].doc.spec.type == "ClusterIP"
    assert cs.services[0].doc.spec.ports[0].target_port is None

    (pod,) = cs.pods
    assert pod.doc.status.pod_ip == "10.244.0.12"
    assert pod.doc.spec.service_account_name == "bookinfo-reviews"
    assert pod.doc.metadata.labels["security.istio.io/tlsMode"] == "istio"
    container = pod.doc.spec.containers[0]
    assert (container.name, container.ports[0].container_port, container.ports[0].name,
            container.ports[0].protocol) == ("reviews", 9080, "http", "TCP")

    (gw,) = cs.gateways
    assert gw.doc.spec.selector == {"istio": "ingressgateway"}
    server = gw.doc.spec.servers[0]
    assert (server.port.number, server.port.protocol, server.port.name, server.hosts) == (8080, "HTTP", "http", ["*"])

    assert [v.name for v in cs.virtual_services] == ["bookinfo", "reviews", "ratings"]
    bookinfo = cs.virtual_services[0].doc.spec
    assert bookinfo.gateways == ["bookinfo-gateway"]
    assert [m.uri.exact or m.uri.prefix for m in bookinfo.http[0].match] == [
        "/productpage", "/static", "/login", "/logout", "/api/v1/products"]
    assert bookinfo.http[0].route[0].destination.port.number == 9080
    assert bookinfo.http[0].route[0].weight == 0

    reviews = cs.virtual_services[1].doc.spec
    assert reviews.http[0].match[0].headers["end-user"] == StringMatch(exact="jason")
    assert [(d.destination.subset, d.weight) for d in reviews.http[1].route] == [("v1", 50), ("v3", 50)]

    ratings = cs.virtual_services[2].doc.spec
    assert ratings.http[0].fault.delay.fixed_delay == 7.0
    assert ratings.http[0].fault.delay.percentage.value == 100.0
    assert ratings.http[1].timeout == 0.5

    assert [d.name for d in cs.destination_rules] == ["productpage", "reviews"]
    dr = cs.destination_rules[1].doc.spec
    assert dr.traffic_policy.load_balancer.simple == "LEAST_REQUEST"
    assert [s.name for s in dr.subsets] == ["v1", "v2", "v3"]
    assert dr.subsets[2].traffic_policy.load_balancer.simple == "ROUND_ROBIN"
    assert dr.subsets[0].traffic_policy is None

    # Refs point at the file and the 0-based document index.
    assert cs.virtual_services[2].ref == DocRef(
        str(tmp_path / "bookinfo/30-vs.yaml"), 1, "VirtualService", "default", "ratings")
    assert cs.mesh == MeshConfig()
    assert cs.mesh_source is None


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_all_istio_api_versions_accepted(tmp_path: Path, version: str) -> None:
    cs = load_one(tmp_path, f"""
        apiVersion: networking.istio.io/{version}
        kind: VirtualService
        metadata: {{name: reviews}}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {{host: reviews}}
        ---
        apiVersion: networking.istio.io/{version}
        kind: DestinationRule
        metadata: {{name: reviews}}
        spec: {{host: reviews}}
        ---
        apiVersion: networking.istio.io/{version}
        kind: Gateway
        metadata: {{name: gw}}
        spec:
          servers:
          - port: {{number: 80, name: http, protocol: HTTP}}
            hosts: ["*"]
        ---
        apiVersion: networking.istio.io/{version}
        kind: ServiceEntry
        metadata: {{name: httpbin}}
        spec:
          hosts: [httpbin.org]
          ports: [{{number: 80, name: http, protocol: HTTP}}]
          resolution: DNS
        ---
        apiVersion: networking.istio.io/{version}
        kind: WorkloadEntry
        metadata: {{name: vm1}}
        spec: {{address: 10.0.0.5}}
    """)
    assert cs.issues == []
    assert [len(cs.virtual_services), len(cs.destination_rules), len(cs.gateways), len(cs.service_entries),
            len(cs.workload_entries)] == [1, 1, 1, 1, 1]
    assert cs.virtual_services[0].doc.api_version == f"networking.istio.io/{version}"


def test_unsupported_api_version_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "vs.yaml", vs_doc("- route:\n  - destination: {host: reviews}",
                                            api="networking.istio.io/v2"))
    cs = load_paths([path])
    assert messages(cs) == [
        f"{path}: document 1 (VirtualService default/reviews): apiVersion: unsupported apiVersion "
        "'networking.istio.io/v2' for VirtualService; expected networking.istio.io/v1alpha3, "
        "networking.istio.io/v1beta1, networking.istio.io/v1"
    ]
    assert cs.virtual_services == []


def test_gateway_api_gateway_is_not_an_istio_gateway(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: istio-ingress}
        spec:
          gatewayClassName: istio
          listeners: [{name: http, port: 80, protocol: HTTP}]
    """)
    assert cs.gateways == [] and cs.errors == []
    assert [str(w) for w in cs.warnings] == [
        f"{tmp_path / 'config.yaml'}: document 1 (Gateway istio-ingress/gw): "
        "unsupported kind Gateway (gateway.networking.k8s.io/v1); document skipped"
    ]


# --------------------------------------------------------------------------------------------
# VirtualService fields


def test_virtual_service_every_http_field(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata:
          name: everything
          namespace: bookinfo
          creationTimestamp: "2024-03-01T10:00:00Z"
        spec:
          hosts: [reviews.bookinfo.svc.cluster.local, bookinfo.com]
          gateways: [mesh, istio-system/bookinfo-gateway]
          exportTo: ["."]
          http:
          - name: main
            match:
            - name: m0
              uri: {regex: "/api/v[0-9]+/.*"}
              scheme: {exact: https}
              method: {exact: GET}
              authority: {prefix: reviews}
              headers:
                x-present: {}
                x-null:
                x-star: {regex: "*"}
              withoutHeaders:
                x-debug: {exact: "1"}
              queryParams:
                flag: {exact: ""}
              ignoreUriCase: true
              port: 9080
              sourceLabels: {app: productpage}
              gateways: [mesh]
              sourceNamespace: frontend
              statPrefix: reviews_api
            route:
            - destination: {host: reviews, subset: v1, port: {number: 9080}}
              weight: 75
              headers:
                request:
                  set: {x-subset: v1}
            - destination: {host: reviews, subset: v2}
              weight: 25
            rewrite:
              uriRegexRewrite: {match: "^/api/v1/(.*)", rewrite: '/\\1'}
              authority: reviews.internal
            timeout: 1m
            retries:
              attempts: 3
              perTryTimeout: 2s
              retryOn: gateway-error,connect-failure,refused-stream,503
              retryRemoteLocalities: true
              retryIgnorePreviousHosts: false
              backoff: 100ms
            fault:
              abort:
                httpStatus: 503
                percentage: {value: 0.1}
            mirrors:
            - destination: {host: reviews, subset: v3}
              percentage: {value: 50}
            corsPolicy:
              allowOrigins:
              - exact: https://example.com
              - regex: "https://.*\\\\.example\\\\.org"
              allowMethods: [GET, POST]
              allowHeaders: [x-custom]
              exposeHeaders: [x-exposed]
              maxAge: 24h
              allowCredentials: false
              unmatchedPreflights: IGNORE
            headers:
              request:
                add: {x-added: "yes"}
                remove: [x-internal]
              response:
                set: {cache-control: no-cache}
          - match:
            - uri: {prefix: /old}
            redirect:
              uri: /new
              authority: new.example.com
              derivePort: FROM_REQUEST_PORT
              scheme: https
              redirectCode: 308
            headers:
              response:
                set: {x-redirected: "1"}
          - match:
            - uri: {exact: /health}
            directResponse:
              status: 200
              body: {string: ok}
          - match:
            - uri: {exact: /bytes}
            directResponse:
              status: 503
              body: {bytes: aGVsbG8=}
          - match:
            - uri: {prefix: /delegated}
            delegate: {name: reviews-delegate, namespace: other}
          - route:
            - destination: {host: reviews}
            mirror: {host: reviews, subset: shadow}
            mirrorPercentage: {value: 12.5}
            fault:
              delay:
                fixedDelay: 5s
                percent: 10
          tcp:
          - match: [{port: 27017}]
            route: [{destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}}]
          tls:
          - match: [{port: 443, sniHosts: [bookinfo.com]}]
            route: [{destination: {host: productpage}}]
    """)
    assert cs.issues == []
    loaded = cs.virtual_services[0]
    vs = loaded.doc
    assert isinstance(vs, VirtualService)
    assert loaded.namespace == "bookinfo" and loaded.name == "everything"
    assert vs.metadata.creation_timestamp == "2024-03-01T10:00:00Z"
    spec = vs.spec
    assert spec.export_to == ["."]
    r0 = spec.http[0]
    m = r0.match[0]
    assert m.uri == StringMatch(regex="/api/v[0-9]+/.*")
    assert m.headers["x-present"].is_presence and m.headers["x-null"].is_presence
    assert m.headers["x-star"].is_presence and not m.without_headers["x-debug"].is_presence
    assert m.query_params["flag"].exact == ""
    assert (m.ignore_uri_case, m.port, m.source_labels, m.gateways, m.source_namespace, m.stat_prefix, m.name) == (
        True, 9080, {"app": "productpage"}, ["mesh"], "frontend", "reviews_api", "m0")
    assert r0.route[0].headers.request.set == {"x-subset": "v1"}
    assert r0.rewrite.uri_regex_rewrite.match == "^/api/v1/(.*)"
    assert r0.rewrite.uri_regex_rewrite.rewrite == "/\\1"
    assert r0.rewrite.authority == "reviews.internal"
    assert r0.timeout == 60.0
    assert r0.retries == HTTPRetry(attempts=3, per_try_timeout=2.0, retry_on="gateway-error,connect-failure,"
                                   "refused-stream,503", retry_remote_localities=True,
                                   retry_ignore_previous_hosts=False, backoff=0.1)
    assert r0.fault.abort.http_status == 503 and r0.fault.abort.percentage.value == 0.1
    assert r0.fault.delay is None
    assert r0.mirrors[0].destination.subset == "v3" and r0.mirrors[0].percentage.value == 50
    cors = r0.cors_policy
    assert [o.exact or o.regex for o in cors.allow_origins] == ["https://example.com", "https://.*\\.example\\.org"]
    assert (cors.allow_methods, cors.max_age, cors.allow_credentials, cors.unmatched_preflights) == (
        ["GET", "POST"], 86400.0, False, "IGNORE")
    assert r0.headers.request.add == {"x-added": "yes"} and r0.headers.request.remove == ["x-internal"]
    assert r0.headers.response.set == {"cache-control": "no-cache"}

    redirect = spec.http[1].redirect
    assert (redirect.uri, redirect.authority, redirect.derive_port, redirect.scheme, redirect.redirect_code,
            redirect.port) == ("/new", "new.example.com", "FROM_REQUEST_PORT", "https", 308, None)
    assert spec.http[2].direct_response.body.content == b"ok"
    assert spec.http[3].direct_response.status == 503
    assert spec.http[3].direct_response.body.content == b"hello"
    assert spec.http[4].delegate.name == "reviews-delegate" and spec.http[4].delegate.namespace == "other"
    last = spec.http[5]
    assert last.mirror.subset == "shadow" and last.mirror_percentage.value == 12.5
    assert last.fault.delay.fixed_delay == 5.0 and last.fault.delay.percent == 10
    assert last.match == [] and last.retries is None and last.cors_policy is None
    assert spec.tcp[0]["route"][0]["destination"]["port"]["number"] == 5555
    assert spec.tls[0]["match"][0]["sniHosts"] == ["bookinfo.com"]


def test_defaults_are_empty_collections_not_none(tmp_path: Path) -> None:
    cs = load_one(tmp_path, vs_doc("- route:\n  - destination: {host: reviews}"))
    spec = cs.virtual_services[0].doc.spec
    route = spec.http[0]
    assert spec.gateways == [] and spec.export_to == [] and spec.tcp == [] and spec.tls == []
    assert route.match == [] and route.mirrors == [] and route.timeout is None and route.name is None
    meta = cs.virtual_services[0].doc.metadata
    assert (meta.namespace, meta.labels, meta.annotations, meta.creation_timestamp) == ("default", {}, {}, None)


def test_models_are_frozen_and_accept_python_names() -> None:
    sm = StringMatch(exact="x")
    with pytest.raises(pydantic.ValidationError):
        sm.exact = "y"  # type: ignore[misc]
    retry = HTTPRetry.model_validate({"per_try_timeout": "1s", "retryOn": "5xx"})
    assert retry.per_try_timeout == 1.0 and retry.retry_on == "5xx"
    assert retry.model_dump(by_alias=True, exclude_none=True) == {"perTryTimeout": 1.0, "retryOn": "5xx"}


def test_status_and_nulls_are_ignored_on_istio_kinds(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: ""}
        spec:
          hosts: [reviews]
          gateways:
          http:
          - route:
            - destination: {host: reviews, subset: null}
            timeout: null
        status:
          observedGeneration: 3
          conditions: []
    """)
    assert cs.issues == []
    vs = cs.virtual_services[0].doc
    assert vs.metadata.namespace == "default"
    assert vs.spec.gateways == [] and vs.spec.http[0].route[0].destination.subset is None


# --------------------------------------------------------------------------------------------
# Durations, StringMatch, Percent


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("1.5s", 1.5), ("100ms", 0.1), ("1m", 60.0), ("1h", 3600.0), ("2us", 2e-6),
    ("3ns", 3e-9), ("1h30m", 5400.0), ("0s", 0.0), ("0", 0.0), ("0.5s", 0.5), (".25s", 0.25), ("1µs", 1e-6),
])
def test_duration_parsing(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert HTTPRetry.model_validate({"perTryTimeout": text}).per_try_timeout == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "abc", "-1s", "5 s", "", "1d", "s", "1.2.3s"])
def test_bad_durations_are_rejected(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        HTTPRetry.model_validate({"perTryTimeout": bad})


def test_python_callers_may_pass_seconds() -> None:
    from datetime import timedelta

    assert HTTPRetry(per_try_timeout=2.0, backoff=timedelta(milliseconds=25)).backoff == 0.025
    assert HTTPRetry.model_validate({"perTryTimeout": 3}).per_try_timeout == 3.0
    with pytest.raises(pydantic.ValidationError):
        HTTPRetry(per_try_timeout=-1.0)
    # ... but YAML numbers are rejected, as Istio rejects them.
    with pytest.raises(pydantic.ValidationError, match="expected a string with a unit"):
        HTTPRetry.model_validate({"perTryTimeout": 3}, context={"strict_durations": True})


def test_retry_on_accepts_status_codes_and_grpc_conditions() -> None:
    retry = HTTPRetry(attempts=3, retry_on="gateway-error,reset-before-request,503,unavailable,cancelled")
    assert retry.retry_on.split(",")[2] == "503"


def test_bad_duration_message(tmp_path: Path) -> None:
    path = write(tmp_path, "vs.yaml", vs_doc("""
        - route:
          - destination: {host: reviews}
          timeout: 10
          retries: {attempts: 2, perTryTimeout: 5 seconds}
    """))
    cs = load_paths([path])
    assert messages(cs) == [
        f'{path}: document 1 (VirtualService default/reviews): spec.http[0].timeout: '
        'invalid duration 10: expected a string with a unit, e.g. "10s"',
        f'{path}: document 1 (VirtualService default/reviews): spec.http[0].retries.perTryTimeout: '
        'invalid duration "5 seconds": expected a number followed by a unit (h, m, s, ms, us, ns), e.g. "1.5s"',
    ]


def test_string_match_rules() -> None:
    assert StringMatch().is_presence
    assert StringMatch(regex="*").is_presence
    assert not StringMatch(exact="").is_presence
    with pytest.raises(pydantic.ValidationError, match="only one of exact, prefix or regex may be set"):
        StringMatch(exact="a", prefix="b")
    with pytest.raises(pydantic.ValidationError, match="invalid RE2 regex"):
        StringMatch(regex="(?=lookahead)")  # valid in Python's re, not in RE2


def test_invalid_regex_error_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "vs.yaml", vs_doc("""
        - match:
          - uri: {prefix: /a}
          - uri: {regex: "/a(b"}
          route:
          - destination: {host: reviews}
    """))
    cs = load_paths([path])
    assert messages(cs) == [
        f"{path}: document 1 (VirtualService default/reviews): spec.http[0].match[1].uri.regex: "
        "invalid RE2 regex '/a(b': missing ): /a(b"
    ]
    assert cs.errors[0].line == 10
    assert cs.virtual_services == []


def test_star_regex_is_only_a_presence_match_for_headers(tmp_path: Path) -> None:
    cs = load_one(tmp_path, vs_doc("""
        - match:
          - uri: {regex: "*"}
          route:
          - destination: {host: reviews}
    """))
    assert [(e.field, e.message) for e in cs.errors] == [
        ("spec.http[0].match[0].uri.regex", "'*' is not a valid RE2 regex")]


def test_percent_range(tmp_path: Path) -> None:
    cs = load_one(tmp_path, vs_doc("""
        - route:
          - destination: {host: reviews}
          fault:
            abort: {httpStatus: 500, percentage: {value: 150}}
    """))
    assert [(e.field, e.message) for e in cs.errors] == [
        ("spec.http[0].fault.abort.percentage.value", "percentage 150.0 is not in the range 0..100")]


# --------------------------------------------------------------------------------------------
# istiod-style validation, with exact messages


@pytest.mark.parametrize(("http", "field", "message"), [
    ("""
     - route:
       - destination: {host: reviews}
         weight: -5
     """, "spec.http[0].route[0].weight", "weight -5 must not be negative"),
    ("""
     - route:
       - destination: {host: reviews, subset: v1}
       - destination: {host: reviews, subset: v2}
         weight: 0
     """, "spec.http[0].route", "total destination weight = 0"),
    ("""
     - match: [{uri: {prefix: /}}]
     """, "spec.http[0]", "HTTP route must have one of route, redirect, directResponse or delegate"),
    ("""
     - route:
       - destination: {host: reviews}
       redirect: {uri: /x}
     """, "spec.http[0].redirect", "HTTP route cannot contain both route and redirect"),
    ("""
     - directResponse: {status: 404}
       delegate: {name: d}
     """, "spec.http[0].delegate", "HTTP route cannot contain both directResponse and delegate"),
    ("""
     - redirect: {uri: /x}
       rewrite: {uri: /y}
     """, "spec.http[0].rewrite", "HTTP route cannot contain both rewrite and redirect"),
    ("""
     - redirect: {uri: /x, redirectCode: 305}
     """, "spec.http[0].redirect.redirectCode",
     "redirectCode 305 is not supported; use 301, 302, 303, 307 or 308"),
    ("""
     - redirect: {redirectCode: 301}
     """, "spec.http[0].redirect", "redirect must specify uri, authority, scheme, port or derivePort"),
    ("""
     - redirect: {port: 8080, derivePort: FROM_PROTOCOL_DEFAULT}
     """, "spec.http[0].redirect.derivePort", "only one of port or derivePort may be set"),
    ("""
     - redirect: {derivePort: FROM_SOMEWHERE}
     """, "spec.http[0].redirect.derivePort",
     "must be one of 'FROM_PROTOCOL_DEFAULT' or 'FROM_REQUEST_PORT', got 'FROM_SOMEWHERE'"),
    ("""
     - directResponse: {status: 700}
     """, "spec.http[0].directResponse.status", "HTTP status 700 is not in the range 200..599"),
    ("""
     - directResponse: {status: 200, body: {bytes: "not base64!"}}
     """, "spec.http[0].directResponse.body.bytes", "bytes must be base64-encoded"),
    ("""
     - route:
       - destination: {host: reviews}
       fault: {}
     """, "spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay"),
    ("""
     - route:
       - destination: {host: reviews}
       retries: {attempts: -1}
     """, "spec.http[0].retries.attempts", "attempts cannot be negative"),
    ("""
     - route:
       - destination: {host: reviews}
       rewrite: {uri: /a, uriRegexRewrite: {match: "^/b", rewrite: /c}}
     """, "spec.http[0].rewrite.uriRegexRewrite", "rewrite may only contain one of uri or uriRegexRewrite"),
    ("""
     - route:
       - destination: {host: reviews}
       mirror: {host: a}
       mirrors: [{destination: {host: b}}]
     """, "spec.http[0].mirrors", "HTTP route cannot contain both mirror and mirrors"),
    ("""
     - route:
       - destination: {host: reviews, port: {number: 0}}
     """, "spec.http[0].route[0].destination.port.number", "port number 0 must be in the range 1..65535"),
    ("""
     - route:
       - destination: {host: reviews}
         wieght: 10
     """, "spec.http[0].route[0].wieght", "unknown field; did you mean 'weight'?"),
    ("""
     - route:
       - destination: {subset: v1}
     """, "spec.http[0].route[0].destination.host", "required field is missing"),
    ("""
     - route: {destination: {host: reviews}}
     """, "spec.http[0].route", "expected a list, got a mapping"),
    ("""
     - route:
       - destination: {host: reviews, subset: V_1}
     """, "spec.http[0].route[0].destination.subset",
     "subset name 'V_1' is invalid: must be a DNS-1123 label (lower case letters, digits, '-')"),
    ("""
     - route:
       - destination: {host: reviews}
       retries: {attempts: 2, retryOn: "5xx,connect-failure,bogus"}
     """, "spec.http[0].retries.retryOn", "'bogus' is not a valid retryOn policy"),
    ("""
     - route:
       - destination: {host: reviews}
       retries: {attempts: 0, perTryTimeout: 1s}
     """, "spec.http[0].retries", "http retry policy configured when attempts are set to 0 (disabled)"),
    ("""
     - route:
       - destination: {host: "*"}
     """, "spec.http[0].route[0].destination.host", "invalid destination host '*'"),
])
def test_virtual_service_validation(tmp_path: Path, http: str, field: str, message: str) -> None:
    path = write(tmp_path, "vs.yaml", vs_doc(http))
    cs = load_paths([path])
    assert messages(cs) == [f"{path}: document 1 (VirtualService default/reviews): {field}: {message}"]
    assert cs.virtual_services == []


def test_virtual_service_level_validation(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: star}
        spec:
          hosts: ["*"]
          http:
          - route: [{destination: {host: reviews}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: nothing}
        spec:
          hosts: [reviews]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: delegate, namespace: other}
        spec:
          http:
          - match: [{uri: {prefix: /reviews/v2}}]
            delegate: {name: deeper}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: star-on-gateway}
        spec:
          hosts: ["*"]
          gateways: [bookinfo-gateway]
          http:
          - route: [{destination: {host: reviews}}]
    """)
    assert [(e.ref.name, e.field, e.message) for e in cs.errors] == [
        ("star", "spec.hosts[0]", "wildcard host * is not allowed for virtual services bound to the mesh gateway"),
        ("nothing", "spec", "http, tcp or tls must be provided in virtual service"),
        ("delegate", "spec.http[0].delegate", "delegate HTTP route cannot contain delegate"),
    ]
    assert [v.name for v in cs.virtual_services] == ["star-on-gateway"]


def test_several_errors_in_one_document_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "vs.yaml", vs_doc("""
        - route:
          - destination: {host: reviews}
            weight: -1
          timeout: 1x
        - route:
          - destination: {host: reviews, port: {number: 99999}}
    """))
    cs = load_paths([path])
    assert [e.field for e in cs.errors] == [
        "spec.http[0].route[0].weight", "spec.http[0].timeout", "spec.http[1].route[0].destination.port.number"]
    assert [e.line for e in cs.errors] == [10, 11, 13]


def test_destination_rule_full_traffic_policy(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: networking.istio.io/v1alpha3
        kind: DestinationRule
        metadata: {name: reviews-cb, namespace: bookinfo}
        spec:
          host: reviews.bookinfo.svc.cluster.local
          exportTo: ["*"]
          workloadSelector:
            matchLabels: {app: productpage}
          trafficPolicy:
            loadBalancer:
              consistentHash:
                httpCookie: {name: user, path: /, ttl: 0s}
                ringHash: {minimumRingSize: 1024}
              localityLbSetting:
                enabled: true
                failover: [{from: us-east, to: eu-west}]
              warmup: {duration: 30s, minimumPercent: 10, aggression: 1.0}
            connectionPool:
              tcp:
                maxConnections: 100
                connectTimeout: 30ms
                tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
                maxConnectionDuration: 1h
                idleTimeout: 10m
              http:
                http1MaxPendingRequests: 1
                http2MaxRequests: 1000
                maxRequestsPerConnection: 10
                maxRetries: 3
                idleTimeout: 30s
                h2UpgradePolicy: UPGRADE
                useClientProtocol: true
                maxConcurrentStreams: 100
            outlierDetection:
              consecutive5xxErrors: 7
              consecutiveGatewayErrors: 3
              consecutiveLocalOriginFailures: 2
              splitExternalLocalOriginErrors: true
              interval: 5m
              baseEjectionTime: 15m
              maxEjectionPercent: 100
              minHealthPercent: 0
            tls:
              mode: SIMPLE
              caCertificates: /etc/certs/ca.pem
              sni: reviews.example.com
              subjectAltNames: [reviews.example.com]
              insecureSkipVerify: false
            portLevelSettings:
            - port: {number: 9080}
              loadBalancer: {simple: LEAST_CONN}
              tls: {mode: ISTIO_MUTUAL}
            tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8443}
            proxyProtocol: {version: V2}
          subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy:
              loadBalancer: {simple: RANDOM, warmupDurationSecs: 10s}
              outlierDetection: {consecutiveErrors: 5}
    """)
    assert cs.issues == []
    spec = cs.destination_rules[0].doc.spec
    tp = spec.traffic_policy
    assert spec.workload_selector.match_labels == {"app": "productpage"}
    ch = tp.load_balancer.consistent_hash
    assert (ch.http_cookie.name, ch.http_cookie.path, ch.http_cookie.ttl, ch.ring_hash.minimum_ring_size) == (
        "user", "/", 0.0, 1024)
    assert tp.load_balancer.locality_lb_setting["failover"] == [{"from": "us-east", "to": "eu-west"}]
    assert tp.load_balancer.warmup.duration == 30.0
    tcp, http = tp.connection_pool.tcp, tp.connection_pool.http
    assert (tcp.max_connections, tcp.connect_timeout, tcp.tcp_keepalive.time, tcp.max_connection_duration,
            tcp.idle_timeout) == (100, 0.03, 7200.0, 3600.0, 600.0)
    assert (http.http1_max_pending_requests, http.http2_max_requests, http.max_requests_per_connection,
            http.max_retries, http.idle_timeout, http.h2_upgrade_policy, http.use_client_protocol,
            http.max_concurrent_streams) == (1, 1000, 10, 3, 30.0, "UPGRADE", True, 100)
    od = tp.outlier_detection
    assert (od.consecutive_5xx_errors, od.consecutive_gateway_errors, od.consecutive_local_origin_failures,
            od.split_external_local_origin_errors, od.interval, od.base_ejection_time, od.max_ejection_percent,
            od.min_health_percent, od.consecutive_errors) == (7, 3, 2, True, 300.0, 900.0, 100, 0, None)
    assert (tp.tls.mode, tp.tls.ca_certificates, tp.tls.sni, tp.tls.subject_alt_names) == (
        "SIMPLE", "/etc/certs/ca.pem", "reviews.example.com", ["reviews.example.com"])
    pls = tp.port_level_settings[0]
    assert (pls.port.number, pls.load_balancer.simple, pls.tls.mode) == (9080, "LEAST_CONN", "ISTIO_MUTUAL")
    assert tp.tunnel == {"protocol": "CONNECT", "targetHost": "10.0.0.1", "targetPort": 8443}
    assert tp.proxy_protocol == {"version": "V2"}
    subset_tp = spec.subsets[0].traffic_policy
    assert subset_tp.load_balancer.warmup_duration_secs == 10.0
    assert subset_tp.outlier_detection.consecutive_errors == 5
    assert subset_tp.connection_pool is None


@pytest.mark.parametrize(("spec", "field", "message"), [
    ("""
     host: reviews
     subsets:
     - {name: v1, labels: {version: v1}}
     - {name: v2, labels: {version: v2}}
     - {name: v1, labels: {version: v3}}
     """, "spec.subsets[2].name", "duplicate subset names: v1"),
    ("""
     host: reviews
     trafficPolicy:
       outlierDetection: {consecutive5XXErrors: 3}
     """, "spec.trafficPolicy.outlierDetection.consecutive5XXErrors",
     "unknown field; did you mean 'consecutive5xxErrors'?"),
    ("""
     host: reviews
     trafficPolicy:
       loadBalancer: {simple: FASTEST}
     """, "spec.trafficPolicy.loadBalancer.simple",
     "must be one of 'UNSPECIFIED', 'LEAST_CONN', 'ROUND_ROBIN', 'RANDOM', 'PASSTHROUGH' or 'LEAST_REQUEST', "
     "got 'FASTEST'"),
    ("""
     host: reviews
     trafficPolicy:
       loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}
     """, "spec.trafficPolicy.loadBalancer.consistentHash", "only one of simple or consistentHash may be set"),
    ("""
     host: reviews
     trafficPolicy:
       loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x-user}}
     """, "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
     "only one consistent hash key may be set (found httpHeaderName and useSourceIp)"),
    ("""
     host: reviews
     trafficPolicy:
       outlierDetection: {maxEjectionPercent: 120}
     """, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "maxEjectionPercent 120 is not in the range 0..100"),
    ("""
     host: reviews
     trafficPolicy:
       connectionPool: {tcp: {connectTimeout: forever}}
     """, "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
     'invalid duration "forever": expected a number followed by a unit (h, m, s, ms, us, ns), e.g. "1.5s"'),
    ("""
     host: reviews
     trafficPolicy:
       portLevelSettings:
       - port: {number: 9080}
       - port: {number: 9080}
     """, "spec.trafficPolicy.portLevelSettings[1].port.number", "port level setting for port 9080 already defined"),
    ("""
     subsets: [{name: v1}]
     """, "spec.host", "required field is missing"),
])
def test_destination_rule_validation(tmp_path: Path, spec: str, field: str, message: str) -> None:
    text = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n"
            + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")
    path = write(tmp_path, "dr.yaml", text)
    cs = load_paths([path])
    assert messages(cs) == [f"{path}: document 1 (DestinationRule default/reviews): {field}: {message}"]


def test_gateway_tls_and_port_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: secure, namespace: istio-system}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: ["bookinfo/*.example.com"]
            tls: {httpsRedirect: true}
          - port: {number: 443, name: https, protocol: https}
            hosts: ["*.example.com"]
            name: https-server
            tls:
              mode: SIMPLE
              credentialName: example-cert
              minProtocolVersion: TLSV1_2
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: broken}
        spec:
          servers:
          - port: {number: 0, name: http, protocol: HTTP}
            hosts: ["*"]
          - port: {number: 65536, name: http2, protocol: HTTP}
            hosts: ["*"]
          - port: {number: 8080, name: http3}
            hosts: ["*"]
          - port: {number: 8081, name: http4, protocol: HTTP3}
            hosts: ["*"]
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: nohosts}
        spec:
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
    """)
    cs = load_paths([path])
    prefix = f"{path}: document 2 (Gateway default/broken): "
    assert messages(cs) == [
        prefix + "spec.servers[0].port.number: port number 0 must be in the range 1..65535",
        prefix + "spec.servers[1].port.number: port number 65536 must be in the range 1..65535",
        prefix + "spec.servers[2].port.protocol: required field is missing",
        prefix + "spec.servers[3].port.protocol: unrecognized protocol 'HTTP3'",
        f"{path}: document 3 (Gateway default/nohosts): spec.servers[0].hosts: "
        "server config must contain at least one host",
    ]
    (gw,) = cs.gateways
    assert gw.doc.spec.servers[0].tls.https_redirect is True
    tls = gw.doc.spec.servers[1].tls
    assert (tls.mode, tls.credential_name, tls.min_protocol_version) == ("SIMPLE", "example-cert", "TLSV1_2")
    assert gw.doc.spec.servers[1].name == "https-server"


# --------------------------------------------------------------------------------------------
# ServiceEntry / WorkloadEntry


def test_service_entry_and_workload_entry(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: external-svc-https}
        spec:
          hosts: [api.dropboxapi.com, www.googleapis.com]
          location: MESH_EXTERNAL
          ports:
          - number: 443
            name: https
            protocol: TLS
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: mongo}
        spec:
          hosts: [mymongodb.somedomain]
          addresses: [192.192.192.192/24]
          ports:
          - {number: 27018, name: mongodb, protocol: MONGO, targetPort: 27017}
          location: MESH_INTERNAL
          resolution: STATIC
          endpoints:
          - address: 2.2.2.2
          - address: 3.3.3.3
            ports: {mongodb: 27019}
            labels: {version: v2}
            network: net1
            locality: us-east/zone1
            weight: 20
            serviceAccount: mongo-sa
          exportTo: ["."]
          subjectAltNames: ["spiffe://cluster.local/ns/default/sa/mongo-sa"]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details-vm}
        spec:
          hosts: [details.bookinfo.com]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          workloadSelector:
            labels: {app: details-legacy}
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: WorkloadEntry
        metadata: {name: details-svc, namespace: bookinfo}
        spec:
          serviceAccount: details-legacy
          address: 2.2.2.2
          labels: {app: details-legacy, instance-id: vm1}
          ports: {http: 8080}
    """)
    assert cs.issues == []
    assert [s.name for s in cs.service_entries] == ["external-svc-https", "mongo", "details-vm"]
    # A ServiceEntry's workloadSelector has `labels` (service_entry.proto), not `matchLabels`.
    assert cs.service_entries[2].doc.spec.workload_selector.labels == {"app": "details-legacy"}
    https = cs.service_entries[0].doc.spec
    assert (https.hosts, https.location, https.resolution, https.ports[0].protocol) == (
        ["api.dropboxapi.com", "www.googleapis.com"], "MESH_EXTERNAL", "DNS", "TLS")
    mongo = cs.service_entries[1].doc.spec
    assert mongo.ports[0].target_port == 27017
    ep = mongo.endpoints[1]
    assert (ep.address, ep.ports, ep.labels, ep.network, ep.locality, ep.weight, ep.service_account) == (
        "3.3.3.3", {"mongodb": 27019}, {"version": "v2"}, "net1", "us-east/zone1", 20, "mongo-sa")
    assert mongo.endpoints[0].ports == {} and mongo.endpoints[0].weight is None
    (we,) = cs.workload_entries
    assert (we.namespace, we.doc.spec.address, we.doc.spec.ports, we.doc.spec.service_account) == (
        "bookinfo", "2.2.2.2", {"http": 8080}, "details-legacy")


@pytest.mark.parametrize(("spec", "field", "message"), [
    ("ports: [{number: 80, name: http}]", "spec.hosts", "service entry must have at least one host"),
    ("hosts: [a.com]\nresolution: NONE\nendpoints: [{address: 1.1.1.1}]", "spec.endpoints",
     "no endpoints should be provided for resolution type NONE"),
    ("hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.com}, {address: b.com}]",
     "spec.endpoints", "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"),
    ("hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints: [{address: 1.1.1.1, ports: {grpc: 81}}]",
     "spec.endpoints[0].ports.grpc", "endpoint port 'grpc' is not defined by the service entry"),
    ("hosts: [a.com]\nresolution: SOMETIMES", "spec.resolution",
     "must be one of 'NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN' or 'DYNAMIC_DNS', got 'SOMETIMES'"),
    ("hosts: [a.com]\nports: [{number: 80, name: http}, {number: 80, name: http2}]", "spec.ports[1].number",
     "service entry port 80 already defined"),
])
def test_service_entry_validation(tmp_path: Path, spec: str, field: str, message: str) -> None:
    text = ("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n"
            + textwrap.indent(spec, "  ") + "\n")
    cs = load_one(tmp_path, text)
    assert [(e.field, e.message) for e in cs.errors] == [(field, message)]


# --------------------------------------------------------------------------------------------
# Kubernetes objects


def test_service_target_port_forms_and_ignored_fields(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: v1
        kind: Service
        metadata: {name: productpage, namespace: bookinfo}
        spec:
          type: NodePort
          clusterIP: 10.96.1.1
          clusterIPs: [10.96.1.1]
          sessionAffinity: None
          ports:
          - {name: http, port: 9080, targetPort: http-web, nodePort: 30080}
          - {name: grpc, port: 9090, targetPort: "9091", protocol: TCP, appProtocol: grpc}
          - {name: dns, port: 53, protocol: UDP}
          selector: {app: productpage}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: bad}
        spec:
          ports:
          - {port: 9080, targetPort: 1.5}
          - {port: 9080, targetPort: 0}
    """)
    svc = cs.services[0].doc.spec
    assert [(p.name, p.port, p.target_port, p.protocol, p.app_protocol) for p in svc.ports] == [
        ("http", 9080, "http-web", "TCP", None), ("grpc", 9090, 9091, "TCP", "grpc"), ("dns", 53, None, "UDP", None)]
    assert (svc.type, svc.cluster_ip) == ("NodePort", "10.96.1.1")
    assert [(e.field, e.message) for e in cs.errors] == [
        ("spec.ports[0].targetPort", "expected a port number or a port name"),
        ("spec.ports[1].targetPort", "port number 0 must be in the range 1..65535"),
    ]


def test_pod_without_status_and_config_map(tmp_path: Path) -> None:
    cs = load_one(tmp_path, """
        apiVersion: v1
        kind: Pod
        metadata:
          name: ratings-v1
          labels: {app: ratings, version: v1}
        spec:
          containers:
          - name: ratings
            image: docker.io/istio/examples-bookinfo-ratings-v1:1.20.2
            ports: [{containerPort: 9080}]
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: bookinfo}
        data:
          a: "1"
          b: hello
        immutable: true
    """)
    assert cs.issues == []
    pod = cs.pods[0].doc
    assert pod.status.pod_ip is None and pod.spec.service_account_name is None
    assert pod.metadata.labels == {"app": "ratings", "version": "v1"}
    assert cs.config_maps[0].doc.data == {"a": "1", "b": "hello"}


# --------------------------------------------------------------------------------------------
# Files, documents, ordering


def test_unknown_kind_is_a_warning_with_exact_text(tmp_path: Path) -> None:
    path = write(tmp_path, "authz.yaml", """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: allow-nothing
          namespace: bookinfo
        spec: {}
    """)
    cs = load_paths([path])
    assert cs.errors == []
    assert [str(w) for w in cs.warnings] == [
        f"{path}: document 1 (AuthorizationPolicy bookinfo/allow-nothing): "
        "unsupported kind AuthorizationPolicy (security.istio.io/v1); document skipped"
    ]
    assert cs.warnings[0].severity == "warning"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ok}
        spec: {host: ok}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: broken
        spec:
          host: reviews
         subsets: []
    """)
    cs = load_paths([path])
    assert messages(cs) == [
        f"{path}: document 2: YAML syntax error at line 12, column 2: did not find expected key "
        "(while parsing a block mapping)"
    ]
    assert cs.errors[0].line == 12
    assert [d.name for d in cs.destination_rules] == ["ok"]  # documents before the error still load


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yaml", """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          host: ratings
    """)
    cs = load_paths([path])
    assert messages(cs) == [f"{path}: document 1: YAML syntax error at line 6, column 3: found duplicate key 'host'"]


def test_missing_file_and_non_mapping_documents(tmp_path: Path) -> None:
    path = write(tmp_path, "odd.yaml", """
        - just
        - a list
        ---
        kind: VirtualService
        metadata: {name: x}
        ---
        apiVersion: v1
        metadata: {name: y}
    """)
    cs = load_paths([tmp_path / "nope.yaml", path])
    assert messages(cs) == [
        f"{tmp_path / 'nope.yaml'}: file not found",
        f"{path}: document 1: document must be a mapping, got a list",
        f"{path}: document 2: apiVersion: required field is missing",
        f"{path}: document 3: kind: required field is missing",
    ]
    with pytest.raises(ConfigError) as excinfo:
        cs.raise_on_errors()
    assert excinfo.value.issues == cs.errors
    assert str(excinfo.value).splitlines()[0] == f"{tmp_path / 'nope.yaml'}: file not found"


def test_empty_documents_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "multi.yaml", """
        ---
        # only a comment
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: a}
        spec: {host: a}
        ---
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: b}
        spec: {host: b}
    """)
    cs = load_paths([path])
    assert cs.issues == []
    assert [(d.name, d.ref.index) for d in cs.destination_rules] == [("a", 1), ("b", 3)]
    assert str(cs.destination_rules[1].ref) == f"{path}: document 4 (DestinationRule default/b)"


def test_directory_order_is_sorted_and_document_order_preserved(tmp_path: Path) -> None:
    def dr(name: str) -> str:
        return f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec: {{host: {name}}}\n"

    write(tmp_path, "conf/b.yaml", dr("b1") + "---\n" + dr("b2"))
    write(tmp_path, "conf/a.yml", dr("a1"))
    write(tmp_path, "conf/sub/c.yaml", dr("c1"))
    write(tmp_path, "conf/ab.yaml", dr("ab1"))
    write(tmp_path, "conf/.hidden/h.yaml", dr("hidden"))
    write(tmp_path, "conf/notes.txt", "ignored")
    extra = write(tmp_path, "extra.yaml", dr("z0"))
    cs = load_paths([extra, tmp_path / "conf", tmp_path / "conf" / "a.yml"])  # a.yml only once
    assert cs.issues == []
    # Subdirectories are not read, as with ``kubectl apply -f DIR`` (no -R).
    assert [d.name for d in cs.destination_rules] == ["z0", "a1", "ab1", "b1", "b2"]
    assert cs.destination_rules[0].ref.file == str(extra)


def test_directory_order_exact(tmp_path: Path) -> None:
    for name in ["20-vs.yaml", "10-dr.yaml", "30-se.yml"]:
        write(tmp_path, f"d/{name}", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{name[:2]}}}\n")
    cs = load_paths([tmp_path / "d"])
    assert [c.name for c in cs.config_maps] == ["cm-10", "cm-20", "cm-30"]


def test_empty_directory_warns(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cs = load_paths([tmp_path / "empty"])
    assert messages(cs) == [f"{tmp_path / 'empty'}: no *.yaml or *.yml files in directory"]
    assert cs.errors == []


def test_list_kind_is_expanded(tmp_path: Path) -> None:
    path = write(tmp_path, "list.yaml", """
        apiVersion: v1
        kind: List
        metadata: {resourceVersion: ""}
        items:
        - apiVersion: networking.istio.io/v1
          kind: DestinationRule
          metadata: {name: reviews, namespace: bookinfo, creationTimestamp: 2024-01-02T03:04:05Z}
          spec: {host: reviews}
        - apiVersion: networking.istio.io/v1
          kind: DestinationRule
          metadata: {name: ratings, namespace: bookinfo}
          spec:
            host: ratings
            subsets: [{name: v1}, {name: v1}]
        - apiVersion: apps/v1
          kind: Deployment
          metadata: {name: ratings-v1}
    """)
    cs = load_paths([path])
    assert messages(cs) == [
        f"{path}: document 1 (DestinationRule bookinfo/ratings): items[1].spec.subsets[1].name: "
        "duplicate subset names: v1",
        f"{path}: document 1 (Deployment default/ratings-v1): "
        "unsupported kind Deployment (apps/v1); document skipped",
    ]
    (dr,) = cs.destination_rules
    assert dr.ref == DocRef(str(path), 0, "DestinationRule", "bookinfo", "reviews")
    # Unquoted timestamps stay strings (as Kubernetes keeps them).
    assert dr.doc.metadata.creation_timestamp == "2024-01-02T03:04:05Z"


def test_duplicate_resources_are_errors(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                  "metadata: {name: reviews}\nspec: {host: reviews}\n")
    b = write(tmp_path, "b.yaml", "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
                                  "metadata: {name: reviews, namespace: default}\nspec: {host: reviews}\n"
                                  "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                  "metadata: {name: reviews, namespace: other}\nspec: {host: reviews}\n")
    cs = load_paths([a, b])
    assert messages(cs) == [
        f"{b}: document 1 (DestinationRule default/reviews): metadata.name: duplicate DestinationRule "
        f"default/reviews: already defined in {a}: document 1 (DestinationRule default/reviews)"
    ]
    assert [(d.namespace, d.ref.file) for d in cs.destination_rules] == [("default", str(a)), ("other", str(b))]


def test_issue_and_ref_formatting() -> None:
    ref = DocRef("config/bookinfo/vs.yaml", 2, "VirtualService", "default", "reviews")
    assert str(ref) == "config/bookinfo/vs.yaml: document 3 (VirtualService default/reviews)"
    issue = ConfigIssue(ref, "spec.http[0].route[1].weight", "weight -1 must not be negative", "error")
    assert str(issue) == ("config/bookinfo/vs.yaml: document 3 (VirtualService default/reviews): "
                          "spec.http[0].route[1].weight: weight -1 must not be negative")
    assert str(DocRef("mesh.yaml", 0, "MeshConfig")) == "mesh.yaml: document 1 (MeshConfig)"
    assert str(DocRef("x.yaml", -1)) == "x.yaml"
    assert format_path(("metadata", "labels", "app.kubernetes.io/name")) == 'metadata.labels["app.kubernetes.io/name"]'
    assert format_path(("spec", "http", 0, "match", 1, "headers", "x-user")) == "spec.http[0].match[1].headers.x-user"


# --------------------------------------------------------------------------------------------
# MeshConfig

MESH_CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
  labels:
    install.operator.istio.io/owning-resource: unknown
    istio.io/rev: default
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
      tracing:
        zipkin:
          address: zipkin.istio-system:9411
    enablePrometheusMerge: true
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
    defaultHttpRetryPolicy:
      attempts: 5
      retryOn: 5xx
    rootNamespace: istio-system
    trustDomain: example.org
    connectTimeout: 3s
  meshNetworks: 'networks: {}'
"""


def test_mesh_config_defaults() -> None:
    mesh = MeshConfig()
    assert mesh.outbound_traffic_policy.mode == "ALLOW_ANY"
    assert (mesh.access_log_file, mesh.access_log_encoding, mesh.access_log_format) == ("", "TEXT", "")
    assert (mesh.connect_timeout, mesh.trust_domain, mesh.root_namespace) == (10.0, "cluster.local", "istio-system")
    assert mesh.default_http_retry_policy is None and mesh.default_config == {}
    assert mesh.enable_tracing is True and mesh.path_normalization is None


def test_mesh_config_from_configmap(tmp_path: Path) -> None:
    path = write(tmp_path, "istio-cm.yaml", MESH_CONFIGMAP)
    cs = load_paths([path])
    assert cs.issues == []
    mesh = cs.mesh
    assert mesh.outbound_traffic_policy.mode == "REGISTRY_ONLY"
    assert (mesh.access_log_file, mesh.access_log_encoding) == ("/dev/stdout", "JSON")
    assert mesh.default_http_retry_policy == HTTPRetry(attempts=5, retry_on="5xx")
    assert mesh.default_config["tracing"]["zipkin"]["address"] == "zipkin.istio-system:9411"
    assert (mesh.trust_domain, mesh.connect_timeout) == ("example.org", 3.0)
    assert cs.mesh_source == DocRef(str(path), 0, "ConfigMap", "istio-system", "istio")
    assert len(cs.config_maps) == 1


def test_configmap_elsewhere_is_not_mesh_config(tmp_path: Path) -> None:
    cs = load_one(tmp_path, MESH_CONFIGMAP.replace("namespace: istio-system", "namespace: default"))
    assert cs.mesh == MeshConfig() and cs.mesh_source is None


def test_mesh_config_from_file_and_file_wins(tmp_path: Path) -> None:
    cm = write(tmp_path, "istio-cm.yaml", MESH_CONFIGMAP)
    mesh_file = write(tmp_path, "mesh.yaml", """
        outboundTrafficPolicy: {mode: ALLOW_ANY}
        accessLogFile: /tmp/access.log
        pathNormalization: {normalization: MERGE_SLASHES}
        someFutureField: {x: 1}
    """)
    only_file = load_paths([], mesh_config_file=str(mesh_file))
    assert only_file.issues == []
    assert only_file.mesh.access_log_file == "/tmp/access.log"
    assert only_file.mesh.path_normalization.normalization == "MERGE_SLASHES"
    assert only_file.mesh_source == DocRef(str(mesh_file), 0, "MeshConfig")

    both = load_paths([cm], mesh_config_file=str(mesh_file))
    assert both.issues == []
    assert both.mesh.outbound_traffic_policy.mode == "ALLOW_ANY"
    assert both.mesh.access_log_encoding == "TEXT"  # nothing merged from the ConfigMap
    assert both.mesh_source.file == str(mesh_file)


def test_mesh_config_errors(tmp_path: Path) -> None:
    cm = write(tmp_path, "istio-cm.yaml", MESH_CONFIGMAP.replace("mode: REGISTRY_ONLY", "mode: DENY_ALL"))
    cs = load_paths([cm])
    assert messages(cs) == [
        f"{cm}: document 1 (ConfigMap istio-system/istio): data.mesh.outboundTrafficPolicy.mode: "
        "must be one of 'ALLOW_ANY' or 'REGISTRY_ONLY', got 'DENY_ALL'"
    ]
    assert cs.mesh == MeshConfig()

    mesh_file = write(tmp_path, "mesh.yaml", "connectTimeout: 10\n")
    cs = load_paths([], mesh_config_file=mesh_file)
    assert messages(cs) == [
        f'{mesh_file}: document 1 (MeshConfig): connectTimeout: invalid duration 10: expected a string with a '
        'unit, e.g. "10s"'
    ]
    cs = load_paths([], mesh_config_file=tmp_path / "absent.yaml")
    assert messages(cs) == [f"{tmp_path / 'absent.yaml'}: mesh config file not found"]


def test_mesh_config_file_may_be_the_configmap(tmp_path: Path) -> None:
    cm = write(tmp_path, "istio-cm.yaml", MESH_CONFIGMAP)
    cs = load_paths([], mesh_config_file=cm)
    assert cs.issues == []
    assert cs.mesh.trust_domain == "example.org"
    assert cs.config_maps == []


def test_load_text() -> None:
    cs = load_text(vs_doc("- route:\n  - destination: {host: reviews}\n    weight: -2"), "inline.yaml")
    assert messages(cs) == [
        "inline.yaml: document 1 (VirtualService default/reviews): spec.http[0].route[0].weight: "
        "weight -2 must not be negative"
    ]
