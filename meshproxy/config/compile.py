"""Compile validated documents into a ``Snapshot`` -- what istiod does for one proxy.

Input: a ``ConfigSet`` (pydantic models, already validated) and who the proxy
is (``ProxyInfo``: sidecar or gateway, namespace, labels).  Output: immutable
route tables and clusters.  All of Istio's config-time decisions happen here,
once, so the request path only looks things up:

* which VirtualServices apply to this proxy (``gateways``, ``exportTo``,
  ``match.gateways``/``sourceLabels``/``sourceNamespace``/``port``);
* per-port route tables with Istio's vhost domains and, on a sidecar, the
  trailing ``allow_any``/``block_all`` catch-all; on a gateway, VirtualServices
  for one host merged;
* clusters per service port and DestinationRule subset, with the traffic
  policy precedence subset-port > subset > DR-port > DR (each component whole).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..core import balancer as balancer_mod
from ..core.endpoints import (
    LEAST_REQUEST,
    MAGLEV,
    PASSTHROUGH,
    RANDOM,
    RING_HASH,
    ROUND_ROBIN,
    Endpoint,
    HashPolicy,
    LbSettings,
)
from ..core.circuit import UNLIMITED, Circuit, CircuitLimits
from ..core.cors import CorsPolicy
from ..core.outlier import OutlierConfig, OutlierDetector
from ..core.fault import FaultPolicy, grpc_status_code, percent_to_fraction
from ..core.headers import HeaderPlan
from ..core.match import EXACT, HeaderMatcher, QueryMatcher, RouteMatch, StringMatcher, compile_regex
from ..core.snapshot import (
    DIRECT_RESPONSE,
    EDS,
    FORWARD,
    NO_RETRY,
    ORIGINAL_DST,
    PASSTHROUGH_CLUSTER,
    MirrorPolicy,
    REDIRECT,
    STRICT_DNS,
    Cluster,
    ListenerSpec,
    ProxyInfo,
    Redirect,
    RetryPolicy,
    Route,
    RouteTable,
    Snapshot,
    VirtualHost,
    WeightedDestination,
)
from .registry import ServiceInfo, build_registry, fqdn_for, iter_ports

DEFAULT_RETRY_ON = frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"})
DEFAULT_RETRY = RetryPolicy(num_retries=2, retry_on=DEFAULT_RETRY_ON)
ROOT_NAMESPACE = "istio-system"


@dataclass
class CompileOptions:
    """How the proxy runs (from the command line)."""

    outbound_port: int = 15001
    bind: str = "127.0.0.1"
    port_offset: int = 0
    outbound_traffic_policy: str | None = None  # overrides MeshConfig when set


@dataclass
class _VS:
    """A VirtualService in creation order, with its namespace-resolved hosts."""

    doc: Any
    ref: Any
    order: tuple[Any, ...]
    hosts: list[str]
    namespace: str
    name: str


@dataclass
class _Ctx:
    proxy: ProxyInfo
    services: dict[str, ServiceInfo]
    clusters: dict[str, Cluster]
    default_retry: RetryPolicy
    warnings: list[str] = field(default_factory=list)


def compile_snapshot(config: Any, proxy: ProxyInfo, options: CompileOptions, *, version: int = 1, rng: random.Random | None = None) -> Snapshot:
    """Compile ``config`` (a loader ``ConfigSet``) for one proxy."""
    rng = rng or random.Random()
    mesh = config.mesh
    policy = options.outbound_traffic_policy or _mesh_outbound_mode(mesh)
    proxy.outbound_policy = policy
    services = build_registry(config)
    default_retry = DEFAULT_RETRY
    if getattr(mesh, "default_http_retry_policy", None) is not None:
        default_retry = _retry_policy(mesh.default_http_retry_policy, DEFAULT_RETRY)
    connect_timeout = float(getattr(mesh, "connect_timeout", None) or 10.0)
    clusters = _build_clusters(config, services, proxy, rng, connect_timeout)
    ctx = _Ctx(proxy, services, clusters, default_retry)
    vss = _sorted_virtual_services(config, proxy)

    passthrough = Cluster(PASSTHROUGH_CLUSTER, ORIGINAL_DST, "", 0, "", (), LbSettings(PASSTHROUGH), None, connect_timeout)
    route_tables: dict[str, RouteTable] = {}
    listeners: list[ListenerSpec] = []
    default_table: RouteTable | None = None
    if proxy.mode == "gateway":
        route_tables, listeners = _gateway_tables(config, ctx, vss, options)
    else:
        route_tables = _sidecar_tables(ctx, vss, policy, passthrough)
        default_table = RouteTable("default", [_catch_all(policy, passthrough)])
        listeners = [ListenerSpec("virtualOutbound", options.bind, options.outbound_port, "*")]

    mesh_dump = {
        "outboundTrafficPolicy": {"mode": policy},
        "accessLogFile": getattr(mesh, "access_log_file", ""),
        "accessLogEncoding": getattr(mesh, "access_log_encoding", "TEXT"),
        "accessLogFormat": getattr(mesh, "access_log_format", "") or "",
        "terminationDrainDuration": (getattr(mesh, "default_config", None) or {}).get("terminationDrainDuration", "5s"),
        "tracing": (getattr(mesh, "default_config", None) or {}).get("tracing") or {},
        "connectTimeout": f"{connect_timeout:g}s",
        "defaultHttpRetryPolicy": default_retry.describe(),
    }
    dump = {"warnings": ctx.warnings} if ctx.warnings else {}
    return Snapshot(version, proxy, route_tables, clusters, listeners, mesh_dump, passthrough, default_table, dump)


def _mesh_outbound_mode(mesh: Any) -> str:
    otp = getattr(mesh, "outbound_traffic_policy", None)
    mode = getattr(otp, "mode", None) if otp is not None else None
    return str(mode or "ALLOW_ANY")


# --------------------------------------------------------------------------- clusters


def _build_clusters(config: Any, services: dict[str, ServiceInfo], proxy: ProxyInfo, rng: random.Random, connect_timeout: float) -> dict[str, Cluster]:
    clusters: dict[str, Cluster] = {}
    rules = _destination_rules(config, proxy)
    for svc in services.values():
        dr = _find_destination_rule(rules, svc.fqdn, proxy.namespace, svc.namespace)
        top = dr.spec.traffic_policy if dr is not None else None
        for port in svc.ports:
            if not port.http:
                continue
            endpoints = svc.endpoints.get(port.number, [])
            kind = EDS
            if svc.kind == "ServiceEntry":
                if svc.resolution == "NONE":
                    kind = ORIGINAL_DST
                elif svc.resolution.startswith("DNS"):
                    kind = STRICT_DNS
            base_policy = _port_policy(top, port.number)
            name = f"outbound|{port.number}||{svc.fqdn}"
            clusters[name] = _cluster(name, kind, svc, port.number, "", endpoints, base_policy, rng, connect_timeout)
            if dr is None:
                continue
            for subset in dr.spec.subsets:
                if f"outbound|{port.number}|{subset.name}|{svc.fqdn}" in clusters:
                    continue
                labels = dict(subset.labels or {})
                chosen = [e for e in endpoints if all(e.labels.get(k) == v for k, v in labels.items())]
                policy = _merge_subset_policy(base_policy, _port_policy(subset.traffic_policy, port.number))
                sname = f"outbound|{port.number}|{subset.name}|{svc.fqdn}"
                clusters[sname] = _cluster(sname, kind, svc, port.number, subset.name, chosen, policy, rng, connect_timeout)
    return clusters


def _cluster(name: str, kind: str, svc: ServiceInfo, port: int, subset: str, endpoints: Sequence[Endpoint],
             policy: dict[str, Any], rng: random.Random, connect_timeout: float) -> Cluster:
    lb = _lb_settings(policy.get("load_balancer"))
    if kind == ORIGINAL_DST:
        lb = LbSettings(PASSTHROUGH)
    # Fresh endpoint objects per cluster: their live counters belong to the cluster.
    eps = [e.copy() for e in endpoints]
    pool = policy.get("connection_pool")
    timeout = connect_timeout
    tcp = getattr(pool, "tcp", None) if pool is not None else None
    if tcp is not None and getattr(tcp, "connect_timeout", None):
        timeout = float(tcp.connect_timeout)
    od = policy.get("outlier_detection")
    outlier_config = OutlierConfig.from_istio(od) if od is not None and kind != ORIGINAL_DST else None
    panic = float(outlier_config.min_health_percent) if outlier_config is not None else 0.0
    bal = balancer_mod.make_balancer(lb, eps, random.Random(rng.random()), panic_threshold=panic)
    dump = {k: _model_dump(v) for k, v in policy.items() if v is not None}
    cluster = Cluster(name, kind, svc.fqdn, port, subset, eps, lb, bal, timeout, dump)
    if pool is not None:
        _apply_connection_pool(cluster, pool)
    if outlier_config is not None:
        cluster.outlier = OutlierDetector(outlier_config, eps, on_change=bal.refresh, rng=random.Random(rng.random()))
    return cluster


def _apply_connection_pool(cluster: Cluster, pool: Any) -> None:
    """Istio's ``applyConnectionPool``: circuit-breaker thresholds (unset or 0 = 2^32-1) and the
    HTTP protocol options ``idleTimeout`` (http's, else tcp's) and ``maxRequestsPerConnection``."""
    http = getattr(pool, "http", None)
    tcp = getattr(pool, "tcp", None)
    limits = CircuitLimits()
    idle = None
    if http is not None:
        if http.http2_max_requests:
            limits.max_requests = int(http.http2_max_requests)
        if http.http1_max_pending_requests:
            limits.max_pending_requests = int(http.http1_max_pending_requests)
        if http.max_retries:
            limits.max_retries = int(http.max_retries)
        if http.max_requests_per_connection:
            cluster.max_requests_per_connection = int(http.max_requests_per_connection)
        idle = http.idle_timeout
    if tcp is not None:
        if tcp.max_connections:
            limits.max_connections = int(tcp.max_connections)
        if idle is None:
            idle = tcp.idle_timeout
    if idle is not None:
        cluster.idle_timeout = float(idle)
    if all(getattr(limits, k) == UNLIMITED for k in CircuitLimits.__slots__):
        return  # Istio's defaults (2^32-1 everywhere): nothing to count
    cluster.circuit = Circuit(limits)
    for ep in cluster.endpoints:
        # Envoy's connection pools are per cluster: this cluster's connections are its own.
        ep.pool_key = f"{cluster.name}|{ep.key}"


def _model_dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(by_alias=True, exclude_none=True, mode="json") if dump else value


_COMPONENTS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


def _port_policy(policy: Any, port: int) -> dict[str, Any]:
    """A traffic policy's four components for ``port``: a matching portLevelSettings replaces all four."""
    if policy is None:
        return {}
    for pls in getattr(policy, "port_level_settings", None) or ():
        if pls.port is not None and pls.port.number == port:
            return {c: getattr(pls, c, None) for c in _COMPONENTS}
    return {c: getattr(policy, c, None) for c in _COMPONENTS}


def _merge_subset_policy(base: dict[str, Any], subset: dict[str, Any]) -> dict[str, Any]:
    """Istio's MergeSubsetTrafficPolicy: a component the subset sets replaces the parent's whole."""
    merged = dict(base)
    for component, value in subset.items():
        if value is not None:
            merged[component] = value
    return merged


_SIMPLE = {
    None: LEAST_REQUEST,
    "UNSPECIFIED": LEAST_REQUEST,
    "LEAST_REQUEST": LEAST_REQUEST,
    "LEAST_CONN": LEAST_REQUEST,
    "ROUND_ROBIN": ROUND_ROBIN,
    "RANDOM": RANDOM,
    "PASSTHROUGH": PASSTHROUGH,
}


def _lb_settings(lb: Any) -> LbSettings:
    if lb is None:
        return LbSettings(LEAST_REQUEST)
    ch = getattr(lb, "consistent_hash", None)
    if ch is None:
        return LbSettings(_SIMPLE.get(getattr(lb, "simple", None), LEAST_REQUEST))
    cookie = getattr(ch, "http_cookie", None)
    policy = HashPolicy(
        header_name=ch.http_header_name.lower() if ch.http_header_name else None,
        cookie_name=cookie.name if cookie is not None else None,
        cookie_path=getattr(cookie, "path", None) if cookie is not None else None,
        cookie_ttl=float(getattr(cookie, "ttl", None) or 0.0) if cookie is not None else 0.0,
        use_source_ip=bool(ch.use_source_ip),
        query_parameter=ch.http_query_parameter_name or None,
    )
    maglev = getattr(ch, "maglev", None)
    ring = getattr(ch, "ring_hash", None)
    if maglev is not None:
        return LbSettings(MAGLEV, policy, maglev_table_size=int(getattr(maglev, "table_size", None) or 65537))
    size = int(getattr(ring, "minimum_ring_size", None) or getattr(ch, "minimum_ring_size", None) or 1024)
    return LbSettings(RING_HASH, policy, ring_minimum_size=size)


def _destination_rules(config: Any, proxy: ProxyInfo) -> list[Any]:
    out = []
    for loaded in config.destination_rules:
        dr = loaded.doc
        if not _exported(dr.spec.export_to, dr.metadata.namespace, proxy.namespace):
            continue
        selector = getattr(dr.spec, "workload_selector", None)
        labels = dict(getattr(selector, "match_labels", None) or {}) if selector is not None else {}
        if labels and not all(proxy.labels.get(k) == v for k, v in labels.items()):
            continue
        out.append(dr)
    return out


def _find_destination_rule(rules: list[Any], fqdn: str, client_ns: str, service_ns: str) -> Any | None:
    """Istio's DR lookup: client namespace, then the service's namespace, then the root namespace.

    Several rules for one host in one namespace merge: the first definition of
    a subset wins and the first top-level traffic policy wins.
    """
    for ns in (client_ns, service_ns, ROOT_NAMESPACE):
        found = [dr for dr in rules if (dr.metadata.namespace or "default") == ns and _host_matches(fqdn_for(dr.spec.host, ns), fqdn)]
        if not found:
            continue
        # Exact host beats wildcard.
        found.sort(key=lambda dr: 0 if fqdn_for(dr.spec.host, ns) == fqdn else 1)
        if len(found) == 1:
            return found[0]
        return _merge_rules(found)
    return None


class _MergedRule:
    def __init__(self, metadata: Any, spec: Any) -> None:
        self.metadata = metadata
        self.spec = spec


class _MergedSpec:
    def __init__(self, host: str, traffic_policy: Any, subsets: list[Any]) -> None:
        self.host = host
        self.traffic_policy = traffic_policy
        self.subsets = subsets


def _merge_rules(rules: list[Any]) -> _MergedRule:
    policy = next((r.spec.traffic_policy for r in rules if r.spec.traffic_policy is not None), None)
    subsets: dict[str, Any] = {}
    for r in rules:
        for s in r.spec.subsets:
            subsets.setdefault(s.name, s)
    return _MergedRule(rules[0].metadata, _MergedSpec(rules[0].spec.host, policy, list(subsets.values())))


def _host_matches(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def _exported(export_to: Sequence[str], owner_ns: str, proxy_ns: str) -> bool:
    if not export_to:
        return True
    for target in export_to:
        if target == "*" or target == proxy_ns or (target == "." and owner_ns == proxy_ns):
            return True
    return False


# --------------------------------------------------------------------------- virtual services


def _sorted_virtual_services(config: Any, proxy: ProxyInfo) -> list[_VS]:
    """Visible VirtualServices, oldest first (creationTimestamp, else document order)."""
    out: list[_VS] = []
    for index, loaded in enumerate(config.virtual_services):
        vs = loaded.doc
        ns = vs.metadata.namespace or "default"
        if not _exported(vs.spec.export_to, ns, proxy.namespace):
            continue
        ts = getattr(vs.metadata, "creation_timestamp", None) or ""
        hosts = [fqdn_for(h, ns) for h in vs.spec.hosts]
        out.append(_VS(vs, loaded.ref, (0 if ts else 1, str(ts), index), hosts, ns, vs.metadata.name))
    out.sort(key=lambda v: v.order)
    return out


def _vs_gateways(vs: _VS) -> list[str]:
    """Fully qualified gateway names a VS binds to (``mesh`` when none are listed)."""
    gws = list(vs.doc.spec.gateways) or ["mesh"]
    return [_qualify_gateway(g, vs.namespace) for g in gws]


def _qualify_gateway(name: str, namespace: str) -> str:
    if name == "mesh" or "/" in name:
        return name
    if "." in name:
        # Deprecated form "name.namespace.svc.cluster.local" → "namespace/name".
        parts = name.split(".")
        return f"{parts[1]}/{parts[0]}"
    return f"{namespace}/{name}"


def _routes_for(vs: _VS, ctx: _Ctx, *, gateway_names: Iterable[str], port: int, vhost_name: str) -> list[Route]:
    """Envoy routes for one VS on one listener port, as Istio builds them."""
    routes: list[Route] = []
    vs_gateways = set(_vs_gateways(vs))
    active = set(gateway_names)
    for rule_index, rule in enumerate(vs.doc.spec.http):
        matches = list(rule.match) or [None]
        emitted_catch_all = False
        for match in matches:
            if match is not None:
                if match.port is not None and match.port != port:
                    continue
                if match.gateways:
                    mg = {_qualify_gateway(g, vs.namespace) for g in match.gateways}
                    if not (mg & active):
                        continue
                elif not (vs_gateways & active):
                    continue
                if match.source_labels and not all(ctx.proxy.labels.get(k) == v for k, v in match.source_labels.items()):
                    continue
                if match.source_namespace and match.source_namespace != ctx.proxy.namespace:
                    continue
            elif not (vs_gateways & active):
                continue
            compiled = _compile_match(match)
            route = _compile_route(vs, rule, rule_index, compiled, match, ctx, port)
            if route is not None:
                routes.append(route)
            if compiled is None:
                emitted_catch_all = True
                break
        if emitted_catch_all:
            # Istio stops emitting routes after the first catch-all.
            break
    return routes


def _compile_match(match: Any) -> RouteMatch | None:
    if match is None:
        return None
    ignore = bool(match.ignore_uri_case)
    path = StringMatcher.from_spec(match.uri, ignore_case=ignore) if match.uri is not None else None
    headers = [
        HeaderMatcher(name, StringMatcher.from_spec(m, presence_on_empty=True), False)
        for name, m in (match.headers or {}).items()
        if name.lower() not in ("uri", "scheme", "method", "authority")
    ]
    headers += [HeaderMatcher(name, StringMatcher.from_spec(m, presence_on_empty=True), True) for name, m in (match.without_headers or {}).items()]
    query = [QueryMatcher(name, StringMatcher.from_spec(m, presence_on_empty=True)) for name, m in (match.query_params or {}).items()]
    rm = RouteMatch(
        path=path,
        method=StringMatcher.from_spec(match.method) if match.method is not None else None,
        authority=StringMatcher.from_spec(match.authority) if match.authority is not None else None,
        scheme=StringMatcher.from_spec(match.scheme) if match.scheme is not None else None,
        headers=headers,
        query=query,
        name=match.name or "",
    )
    if path is None and rm.method is None and rm.authority is None and rm.scheme is None and not headers and not query:
        return None
    return rm


def _retry_policy(retries: Any, default: RetryPolicy) -> RetryPolicy:
    if retries is None:
        return default
    attempts = retries.attempts
    if attempts is not None and attempts <= 0:
        return NO_RETRY
    retry_on = set(default.retry_on)
    codes: set[int] = set(default.retriable_status_codes)
    if retries.retry_on:
        retry_on = set()
        codes = set()
        for token in retries.retry_on.split(","):
            token = token.strip()
            if not token:
                continue
            if token.isdigit():
                codes.add(int(token))
                retry_on.add("retriable-status-codes")
            else:
                retry_on.add(token)
    ignore_prev = retries.retry_ignore_previous_hosts
    return RetryPolicy(
        num_retries=attempts if attempts is not None else default.num_retries,
        retry_on=frozenset(retry_on),
        retriable_status_codes=frozenset(codes),
        per_try_timeout=float(retries.per_try_timeout or 0.0),
        backoff_base=float(getattr(retries, "backoff", None) or 0.025),
        ignore_previous_hosts=True if ignore_prev is None else bool(ignore_prev),
    )


_REDIRECT_CODES = {None: 301, 0: 301, 301: 301, 302: 302, 303: 303, 307: 307, 308: 308}


def _compile_route(vs: _VS, rule: Any, rule_index: int, match: RouteMatch | None, match_spec: Any, ctx: _Ctx, port: int) -> Route | None:
    name = rule.name or ""
    if match_spec is not None and match_spec.name:
        name = f"{name}.{match_spec.name}" if name else match_spec.name
    source = f"{vs.namespace}/{vs.name}"
    req_plan = HeaderPlan.from_ops(rule.headers.request) if rule.headers is not None else None
    resp_plan = HeaderPlan.from_ops(rule.headers.response) if rule.headers is not None else None
    if rule.redirect is not None:
        r = rule.redirect
        code = _REDIRECT_CODES.get(r.redirect_code)
        if code is None:
            ctx.warnings.append(f"{vs.ref}: redirectCode {r.redirect_code} unsupported; route dropped")
            return None
        # Istio's ApplyRedirect always sets path_redirect (the whole path), whatever the match.
        red = Redirect(r.uri, None, r.authority, r.scheme, r.port, r.derive_port, code)
        return Route(name, match, REDIRECT, redirect=red, request_headers=req_plan, response_headers=resp_plan, source=source)
    if rule.direct_response is not None:
        dr = rule.direct_response
        body = b""
        if dr.body is not None:
            if dr.body.string is not None:
                body = dr.body.string.encode()
            elif dr.body.bytes is not None:
                body = base64.b64decode(dr.body.bytes)
        return Route(name, match, DIRECT_RESPONSE, direct_status=dr.status, direct_body=body, response_headers=resp_plan, request_headers=req_plan, source=source)
    if not rule.route:
        return None
    dests: list[WeightedDestination] = []
    multi = len(rule.route) > 1
    for rd in rule.route:
        weight = rd.weight or 0
        if multi and weight <= 0:
            continue
        dests.append(_destination(rd, vs, ctx, port, weight if multi else 1))
    if not dests:
        return None
    prefix_rewrite = path_rewrite = None
    regex_rewrite = None
    host_rewrite = None
    rw = rule.rewrite
    if rw is not None:
        if rw.uri is not None:
            if match is not None and match.is_prefix:
                prefix_rewrite = rw.uri
            else:
                path_rewrite = rw.uri
        if rw.uri_regex_rewrite is not None:
            regex_rewrite = (compile_regex(rw.uri_regex_rewrite.match), _re2_substitution(rw.uri_regex_rewrite.rewrite))
        if rw.authority:
            host_rewrite = rw.authority
    if rule.headers is not None and rule.headers.request is not None:
        ops = rule.headers.request
        for key in ("host", ":authority"):
            value = (ops.set or {}).get(key) or (ops.add or {}).get(key)
            if value and host_rewrite is None:
                host_rewrite = value
    retry = _retry_policy(rule.retries, ctx.default_retry) if rule.retries is not None else ctx.default_retry
    return Route(
        name,
        match,
        FORWARD,
        destinations=dests,
        prefix_rewrite=prefix_rewrite,
        path_rewrite=path_rewrite,
        regex_rewrite=regex_rewrite,
        host_rewrite=host_rewrite,
        request_headers=req_plan,
        response_headers=resp_plan,
        timeout=float(rule.timeout or 0.0),
        retry=retry,
        source=source,
        fault=_fault_policy(rule.fault),
        cors=_cors_policy(rule.cors_policy),
        mirrors=_mirror_policies(rule, vs, ctx, port),
    )


def _fault_policy(fault: Any) -> FaultPolicy | None:
    """route.go ``TranslateFault``: percentages as Envoy fractional percents; unset → 0 (never fires)."""
    if fault is None:
        return None
    kwargs: dict[str, Any] = {}
    d = fault.delay
    if d is not None and d.fixed_delay is not None:
        value = d.percentage.value if d.percentage is not None else None
        kwargs["delay"] = float(d.fixed_delay)
        kwargs["delay_fraction"] = percent_to_fraction(value, d.percent)
    a = fault.abort
    if a is not None:
        if a.http_status is not None:
            kwargs["abort_status"] = int(a.http_status)
        elif a.grpc_status is not None:
            code = grpc_status_code(a.grpc_status)
            if code is None:
                return FaultPolicy(**kwargs) if kwargs else None
            kwargs["abort_grpc_status"] = code
        kwargs["abort_fraction"] = percent_to_fraction(a.percentage.value, None) if a.percentage is not None else (0, 100)
    if not kwargs:
        return None
    return FaultPolicy(**kwargs)


def _cors_policy(cors: Any) -> CorsPolicy | None:
    """route.go ``TranslateCORSPolicy``."""
    if cors is None:
        return None
    if cors.allow_origins:
        origins = [StringMatcher.from_spec(m) for m in cors.allow_origins]
    else:
        origins = [StringMatcher(EXACT, o) for o in cors.allow_origin]
    max_age = ""
    if cors.max_age is not None:
        max_age = str(int(cors.max_age))
    return CorsPolicy(
        origins,
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
        max_age=max_age,
        allow_credentials=bool(cors.allow_credentials),
        forward_unmatched=cors.unmatched_preflights != "IGNORE",
    )


def _mirror_policies(rule: Any, vs: _VS, ctx: _Ctx, port: int) -> list[MirrorPolicy]:
    """route.go ``MirrorPercent``/``MirrorPercentByPolicy``: absent → 100 %, explicit 0 → no mirror."""
    out: list[MirrorPolicy] = []
    entries: list[tuple[Any, tuple[int, int] | None]] = []
    if rule.mirror is not None:
        if rule.mirror_percentage is not None:
            v = rule.mirror_percentage.value
            entries.append((rule.mirror, percent_to_fraction(v) if v > 0 else None))
        elif rule.mirror_percent is not None:
            entries.append((rule.mirror, (rule.mirror_percent, 100) if rule.mirror_percent > 0 else None))
        else:
            entries.append((rule.mirror, (100, 100)))
    for m in rule.mirrors:
        if m.percentage is not None:
            v = m.percentage.value
            entries.append((m.destination, percent_to_fraction(v) if v > 0 else None))
        else:
            entries.append((m.destination, (100, 100)))
    for dest, fraction in entries:
        if fraction is None:
            continue
        host = fqdn_for(dest.host, vs.namespace)
        svc = ctx.services.get(host)
        number = dest.port.number if dest.port is not None and dest.port.number else None
        if number is None:
            number = svc.ports[0].number if svc is not None and len(svc.ports) == 1 else port
        name = f"outbound|{number}|{dest.subset or ''}|{host}"
        out.append(MirrorPolicy(name, ctx.clusters.get(name), fraction))
    return out


def _re2_substitution(rewrite: str) -> str:
    """Envoy's ``\\1`` group references are what re2's ``sub`` understands too."""
    return rewrite


def _destination(rd: Any, vs: _VS, ctx: _Ctx, port: int, weight: int) -> WeightedDestination:
    dest = rd.destination
    host = fqdn_for(dest.host, vs.namespace)
    svc = ctx.services.get(host)
    number: int | None = dest.port.number if dest.port is not None and dest.port.number else None
    if number is None:
        if svc is not None and len(svc.ports) == 1:
            number = svc.ports[0].number
        else:
            number = port
    subset = dest.subset or ""
    name = f"outbound|{number}|{subset}|{host}"
    cluster = ctx.clusters.get(name)
    req = resp = None
    if rd.headers is not None:
        req = HeaderPlan.from_ops(rd.headers.request)
        resp = HeaderPlan.from_ops(rd.headers.response)
    return WeightedDestination(name, cluster, weight, host, subset, number, req, resp)


# --------------------------------------------------------------------------- sidecar


def _catch_all(policy: str, passthrough: Cluster) -> VirtualHost:
    if policy == "REGISTRY_ONLY":
        route = Route("block_all", None, DIRECT_RESPONSE, direct_status=502)
        return VirtualHost("block_all", ["*"], [route], VirtualHost.BLOCK_ALL)
    dest = WeightedDestination(PASSTHROUGH_CLUSTER, passthrough, 1, "", "", 0)
    route = Route("allow_any", None, FORWARD, destinations=[dest], retry=NO_RETRY)
    return VirtualHost("allow_any", ["*"], [route], VirtualHost.ALLOW_ANY)


def _sidecar_tables(ctx: _Ctx, vss: list[_VS], policy: str, passthrough: Cluster) -> dict[str, RouteTable]:
    mesh_vss = [v for v in vss if "mesh" in _vs_gateways(v) or any(
        "mesh" in (m.gateways or []) for r in v.doc.spec.http for m in r.match)]
    # Host → the oldest VS that names it (sidecars do not merge; the oldest wins).
    by_host: dict[str, _VS] = {}
    for v in mesh_vss:
        for h in v.hosts:
            by_host.setdefault(h, v)
    wildcard_hosts = sorted((h for h in by_host if h.startswith("*")), key=len, reverse=True)
    services = ctx.services
    tables: dict[str, RouteTable] = {}
    ports = iter_ports(services.values())
    if 80 not in ports and any(h not in services for h in by_host):
        ports.append(80)
    for port in ports:
        vhosts: list[VirtualHost] = []
        claimed: set[str] = set()
        for svc in services.values():
            sp = svc.port(port)
            if sp is None or not sp.http:
                continue
            vs = by_host.get(svc.fqdn)
            if vs is None:
                for w in wildcard_hosts:
                    if svc.fqdn.endswith(w[1:]):
                        vs = by_host[w]
                        break
            vh_name = f"{svc.fqdn}:{port}"
            if vs is not None:
                routes = _routes_for(vs, ctx, gateway_names=["mesh"], port=port, vhost_name=vh_name)
            else:
                routes = [_default_route(svc, port, ctx)]
            domains = [d for d in svc.alt_names(ctx.proxy.namespace) if d not in claimed]
            claimed.update(domains)
            vhosts.append(VirtualHost(vh_name, domains, routes))
        if port == 80:
            for host, vs in by_host.items():
                if host in services or host in claimed:
                    continue
                routes = _routes_for(vs, ctx, gateway_names=["mesh"], port=port, vhost_name=f"{host}:{port}")
                claimed.add(host)
                vhosts.append(VirtualHost(f"{host}:{port}", [host], routes))
        vhosts.append(_catch_all(policy, passthrough))
        tables[str(port)] = RouteTable(str(port), vhosts)
    return tables


def _default_route(svc: ServiceInfo, port: int, ctx: _Ctx) -> Route:
    name = f"outbound|{port}||{svc.fqdn}"
    dest = WeightedDestination(name, ctx.clusters.get(name), 1, svc.fqdn, "", port)
    return Route("default", None, FORWARD, destinations=[dest], retry=ctx.default_retry)


# --------------------------------------------------------------------------- gateway

_HTTP_PROTOCOLS = {"HTTP", "HTTP2", "GRPC", "GRPC-WEB"}


def _gateway_tables(config: Any, ctx: _Ctx, vss: list[_VS], options: CompileOptions) -> tuple[dict[str, RouteTable], list[ListenerSpec]]:
    labels = ctx.proxy.labels
    # port -> list of (gateway qualified name, server)
    servers: dict[int, list[tuple[str, Any, str]]] = {}
    binds: dict[int, str] = {}
    for loaded in config.gateways:
        gw = loaded.doc
        selector = dict(gw.spec.selector or {})
        if selector and not all(labels.get(k) == v for k, v in selector.items()):
            continue
        gw_ns = gw.metadata.namespace or "default"
        qname = f"{gw_ns}/{gw.metadata.name}"
        for server in gw.spec.servers:
            protocol = (server.port.protocol or "HTTP").upper()
            if protocol not in _HTTP_PROTOCOLS:
                ctx.warnings.append(f"{loaded.ref}: server port {server.port.number} protocol {protocol} is not served yet")
                continue
            servers.setdefault(server.port.number, []).append((qname, server, gw_ns))
            if server.bind:
                binds.setdefault(server.port.number, server.bind)
    tables: dict[str, RouteTable] = {}
    listeners: list[ListenerSpec] = []
    for port, entries in servers.items():
        gateway_names = {q for q, _, _ in entries}
        # domain -> (vhost routes, catch-all routes)
        domains: dict[str, tuple[list[Route], list[Route]]] = {}
        redirect_domains: set[str] = set()
        for vs in vss:
            bound = set(_vs_gateways(vs)) & gateway_names
            has_match_gw = any(_qualify_gateway(g, vs.namespace) in gateway_names for r in vs.doc.spec.http for m in r.match for g in m.gateways)
            if not bound and not has_match_gw:
                continue
            for qname, server, gw_ns in entries:
                for vs_host in vs.hosts:
                    for server_host in server.hosts:
                        domain = _gateway_domain(vs_host, vs.namespace, server_host, gw_ns)
                        if domain is None:
                            continue
                        routes = _routes_for(vs, ctx, gateway_names=[qname], port=port, vhost_name=f"{domain}:{port}")
                        normal, catch_all = domains.setdefault(domain, ([], []))
                        for r in routes:
                            (catch_all if r.match is None else normal).append(r)
                        if server.tls is not None and getattr(server.tls, "https_redirect", False):
                            redirect_domains.add(domain)
        vhosts = []
        for domain, (normal, catch_all) in domains.items():
            routes = normal + catch_all
            if domain in redirect_domains:
                routes = [Route("https_redirect", None, REDIRECT, redirect=Redirect(None, None, None, "https", None, None, 301))]
            vhosts.append(VirtualHost(f"{domain}:{port}", [domain], routes))
        tables[str(port)] = RouteTable(str(port), vhosts)
        bind = binds.get(port) or options.bind
        listeners.append(ListenerSpec(f"0.0.0.0_{port}", bind, port + options.port_offset, str(port)))
    return tables, listeners


def _gateway_domain(vs_host: str, vs_ns: str, server_host: str, gw_ns: str) -> str | None:
    """The vhost domain when a VS host falls within a Gateway server host (``[ns/]host``)."""
    ns, _, host = server_host.rpartition("/")
    if ns and ns not in ("*",):
        wanted = gw_ns if ns == "." else ns
        if wanted != vs_ns:
            return None
    host = host.lower()
    if _wildcard_covers(host, vs_host):
        return vs_host
    if _wildcard_covers(vs_host, host):
        return host
    return None


def _wildcard_covers(pattern: str, host: str) -> bool:
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return False
