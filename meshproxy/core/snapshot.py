"""The compiled configuration: immutable tables the request path reads.

A ``Snapshot`` is built by ``meshproxy.config.compile`` from validated
documents and published by swapping one reference; nothing on the request path
ever sees YAML or pydantic.  Its shape mirrors what istiod sends Envoy:

* ``RouteTable`` -- a route configuration (a sidecar has one per service port,
  named ``"9080"``; a gateway one per listener port);
* ``VirtualHost`` -- one per host, found by exact name, then the longest
  ``*.suffix``, then the longest ``prefix*``, then ``*``;
* ``Route`` -- one per ``match`` entry of each VirtualService ``http`` rule,
  in order (Istio emits one Envoy route per match), first match wins;
* ``Cluster`` -- ``outbound|<port>|<subset>|<fqdn>`` with its endpoints and
  load balancer.
"""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

from .endpoints import Endpoint, LbSettings
from .headers import HeaderPlan
from .match import RouteMatch
from .request import RequestContext

FORWARD = 0
REDIRECT = 1
DIRECT_RESPONSE = 2

#: Cluster kinds.
EDS = "EDS"
STRICT_DNS = "STRICT_DNS"
ORIGINAL_DST = "ORIGINAL_DST"

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"


class RetryPolicy:
    """Envoy's route retry policy as Istio fills it in (retry.go)."""

    __slots__ = ("num_retries", "retry_on", "retriable_status_codes", "per_try_timeout", "backoff_base", "ignore_previous_hosts")

    def __init__(
        self,
        num_retries: int = 2,
        retry_on: frozenset[str] = frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}),
        retriable_status_codes: frozenset[int] = frozenset(),
        per_try_timeout: float = 0.0,
        backoff_base: float = 0.025,
        ignore_previous_hosts: bool = True,
    ) -> None:
        self.num_retries = num_retries
        self.retry_on = retry_on
        self.retriable_status_codes = retriable_status_codes
        self.per_try_timeout = per_try_timeout
        self.backoff_base = backoff_base
        self.ignore_previous_hosts = ignore_previous_hosts

    def describe(self) -> dict[str, Any]:
        return {
            "num_retries": self.num_retries,
            "retry_on": ",".join(sorted(self.retry_on)),
            "retriable_status_codes": sorted(self.retriable_status_codes),
            "per_try_timeout": self.per_try_timeout,
            "retry_host_predicate": "previous_hosts" if self.ignore_previous_hosts else None,
        }


NO_RETRY = RetryPolicy(num_retries=0, retry_on=frozenset())


class MirrorPolicy:
    """One ``mirror``/``mirrors[]`` entry: a shadow copy to ``cluster`` for ``fraction`` of requests.

    ``fraction`` is Envoy's (numerator, denominator) from Istio's ``MirrorPercent``:
    absent → 100/HUNDRED; ``percentage.value`` v → int(v × 10000)/MILLION.
    """

    __slots__ = ("cluster_name", "cluster", "fraction")

    def __init__(self, cluster_name: str, cluster: "Cluster | None", fraction: tuple[int, int]) -> None:
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.fraction = fraction


class RoutePolicy:
    """A route's optional per-request policies, gathered so a route without any costs one check.

    ``fault`` (core.fault.FaultPolicy), ``cors`` (core.cors.CorsPolicy), ``mirrors``,
    ``timeout`` (the route timeout, 0 = none) and ``per_try_timeout`` (from the retry policy).
    """

    __slots__ = ("fault", "cors", "mirrors", "timeout", "per_try_timeout", "expected_timeout_header")

    def __init__(self, fault: Any = None, cors: Any = None, mirrors: Sequence[MirrorPolicy] = (),
                 timeout: float = 0.0, per_try_timeout: float = 0.0) -> None:
        self.fault = fault
        self.cors = cors
        self.mirrors = tuple(mirrors)
        self.timeout = timeout
        # Envoy (router.cc finalTimeout) drops a per-try timeout not below the route timeout.
        if timeout > 0 and per_try_timeout >= timeout:
            per_try_timeout = 0.0
        self.per_try_timeout = per_try_timeout
        #: ``x-envoy-expected-rq-timeout-ms`` on upstream requests: the per-try timeout if set,
        #: else the route timeout (before ``x-envoy-attempt-count``).
        expected = int((per_try_timeout or timeout) * 1000 + 1e-9)
        self.expected_timeout_header = b"x-envoy-expected-rq-timeout-ms: %d\r\n" % expected if expected > 0 else b""

    @classmethod
    def build(cls, fault: Any = None, cors: Any = None, mirrors: Sequence[MirrorPolicy] = (),
              timeout: float = 0.0, per_try_timeout: float = 0.0) -> "RoutePolicy | None":
        """None when there is nothing to do per request."""
        if fault is None and cors is None and not mirrors and timeout <= 0 and per_try_timeout <= 0:
            return None
        return cls(fault, cors, mirrors, timeout, per_try_timeout)


class Cluster:
    """An upstream cluster: a service port (optionally a subset) and its endpoints."""

    __slots__ = ("name", "kind", "service", "port", "subset", "endpoints", "lb", "balancer", "connect_timeout", "policy_dump",
                 "circuit", "outlier", "max_requests_per_connection", "idle_timeout")

    def __init__(
        self,
        name: str,
        kind: str,
        service: str,
        port: int,
        subset: str,
        endpoints: Sequence[Endpoint],
        lb: LbSettings,
        balancer: Any,
        connect_timeout: float = 10.0,
        policy_dump: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.service = service
        self.port = port
        self.subset = subset
        self.endpoints = tuple(endpoints)
        self.lb = lb
        self.balancer = balancer
        self.connect_timeout = connect_timeout
        self.policy_dump = policy_dump or {}
        #: Circuit breaking (``meshproxy.core.circuit.Circuit``); None without ``connectionPool``.
        self.circuit: Any = None
        #: Outlier detection (``meshproxy.core.outlier.OutlierDetector``); None without ``outlierDetection``.
        self.outlier: Any = None
        #: ``http.maxRequestsPerConnection`` (0: unlimited; 1: no keep-alive upstream).
        self.max_requests_per_connection = 0
        #: Idle upstream connections are closed after this (``http.idleTimeout``/``tcp.idleTimeout``;
        #: Envoy's default 1 h; 0 disables).
        self.idle_timeout = 3600.0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "service": self.service,
            "port": self.port,
            "subset": self.subset,
            "lb_policy": self.lb.kind,
            "connect_timeout": self.connect_timeout,
            "endpoints": [{"address": e.key, "labels": dict(e.labels), "weight": e.weight} for e in self.endpoints],
            "traffic_policy": dict(self.policy_dump),
        }


class WeightedDestination:
    """One ``route[]`` entry: a cluster plus its weight and per-destination headers."""

    __slots__ = ("cluster_name", "cluster", "weight", "request_headers", "response_headers", "host", "subset", "port")

    def __init__(
        self,
        cluster_name: str,
        cluster: Cluster | None,
        weight: int,
        host: str,
        subset: str,
        port: int,
        request_headers: HeaderPlan | None = None,
        response_headers: HeaderPlan | None = None,
    ) -> None:
        self.cluster_name = cluster_name
        self.cluster = cluster
        self.weight = weight
        self.host = host
        self.subset = subset
        self.port = port
        self.request_headers = request_headers
        self.response_headers = response_headers


class Redirect:
    """A compiled ``HTTPRedirect``."""

    __slots__ = ("path", "prefix_rewrite", "authority", "scheme", "port", "derive_port", "code")

    def __init__(
        self,
        path: str | None,
        prefix_rewrite: str | None,
        authority: str | None,
        scheme: str | None,
        port: int | None,
        derive_port: str | None,
        code: int,
    ) -> None:
        self.path = path
        self.prefix_rewrite = prefix_rewrite
        self.authority = authority
        self.scheme = scheme
        self.port = port
        self.derive_port = derive_port
        self.code = code


class Route:
    """One Envoy route: an optional match and exactly one action."""

    __slots__ = (
        "name",
        "match",
        "action",
        "destinations",
        "cumulative",
        "total_weight",
        "prefix_rewrite",
        "path_rewrite",
        "regex_rewrite",
        "host_rewrite",
        "request_headers",
        "response_headers",
        "timeout",
        "retry",
        "redirect",
        "direct_status",
        "direct_body",
        "source",
        "plain",
        "policy",
    )

    def __init__(
        self,
        name: str,
        match: RouteMatch | None,
        action: int,
        *,
        destinations: Sequence[WeightedDestination] = (),
        prefix_rewrite: str | None = None,
        path_rewrite: str | None = None,
        regex_rewrite: tuple[Any, str] | None = None,
        host_rewrite: str | None = None,
        request_headers: HeaderPlan | None = None,
        response_headers: HeaderPlan | None = None,
        timeout: float = 0.0,
        retry: RetryPolicy = NO_RETRY,
        redirect: Redirect | None = None,
        direct_status: int = 0,
        direct_body: bytes = b"",
        source: str = "",
        fault: Any = None,
        cors: Any = None,
        mirrors: Sequence[MirrorPolicy] = (),
    ) -> None:
        self.name = name
        self.match = match
        self.action = action
        self.destinations = tuple(destinations)
        cumulative: list[int] = []
        total = 0
        for d in self.destinations:
            total += d.weight
            cumulative.append(total)
        self.cumulative = tuple(cumulative)
        self.total_weight = total
        self.prefix_rewrite = prefix_rewrite
        self.path_rewrite = path_rewrite
        self.regex_rewrite = regex_rewrite
        self.host_rewrite = host_rewrite
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.timeout = timeout
        self.retry = retry
        self.redirect = redirect
        self.direct_status = direct_status
        self.direct_body = direct_body
        self.source = source
        #: Fault, CORS, mirrors and timeouts: None for the common route that has none of them.
        self.policy = RoutePolicy.build(fault, cors, mirrors, timeout if action == FORWARD else 0.0,
                                        retry.per_try_timeout if action == FORWARD and retry.num_retries > 0 else 0.0)
        #: No rewrite and no request header edits: the transport's one-pass serializer applies.
        self.plain = (
            prefix_rewrite is None and path_rewrite is None and regex_rewrite is None
            and host_rewrite is None and request_headers is None
        )

    def pick(self, value: int) -> WeightedDestination:
        """The destination for ``value`` in ``[0, total_weight)`` (the caller draws it at random).

        Taking the random value as an argument, as Envoy's route selection does,
        keeps weighted routing exact in tests.
        """
        dests = self.destinations
        if len(dests) == 1:
            return dests[0]
        return dests[bisect.bisect_right(self.cumulative, value)]

    def rewrite_path(self, path: str) -> str:
        """The upstream path after ``rewrite.uri`` / ``uriRegexRewrite``."""
        if self.prefix_rewrite is not None and self.match is not None and self.match.path is not None:
            matched = self.match.path.value
            return self.prefix_rewrite + path[len(matched) :]
        if self.path_rewrite is not None:
            return self.path_rewrite
        if self.regex_rewrite is not None:
            regex, substitution = self.regex_rewrite
            return regex.sub(substitution, path)
        return path

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "match": self.match.describe() if self.match else {"prefix": "/"}}
        if self.source:
            out["virtual_service"] = self.source
        if self.action == FORWARD:
            out["route"] = {
                "weighted_clusters": [
                    {"name": d.cluster_name, "weight": d.weight, "resolved": d.cluster is not None}
                    for d in self.destinations
                ],
                "timeout": f"{self.timeout:g}s",
                "retry_policy": self.retry.describe(),
            }
            if self.prefix_rewrite is not None:
                out["route"]["prefix_rewrite"] = self.prefix_rewrite
            if self.path_rewrite is not None:
                out["route"]["path_rewrite"] = self.path_rewrite
            if self.regex_rewrite is not None:
                out["route"]["regex_rewrite"] = {"pattern": self.regex_rewrite[0].pattern, "substitution": self.regex_rewrite[1]}
            if self.host_rewrite is not None:
                out["route"]["host_rewrite_literal"] = self.host_rewrite
            if self.policy is not None and self.policy.mirrors:
                out["route"]["request_mirror_policies"] = [
                    {"cluster": m.cluster_name, "runtime_fraction": {"numerator": m.fraction[0], "denominator": m.fraction[1]}}
                    for m in self.policy.mirrors
                ]
        if self.policy is not None and self.policy.fault is not None:
            out.setdefault("typed_per_filter_config", {})["envoy.filters.http.fault"] = self.policy.fault.describe()
        if self.policy is not None and self.policy.cors is not None:
            out.setdefault("typed_per_filter_config", {})["envoy.filters.http.cors"] = self.policy.cors.describe()
        elif self.action == REDIRECT and self.redirect is not None:
            r = self.redirect
            out["redirect"] = {
                k: v
                for k, v in {
                    "path_redirect": r.path,
                    "prefix_rewrite": r.prefix_rewrite,
                    "host_redirect": r.authority,
                    "scheme_redirect": r.scheme,
                    "port_redirect": r.port,
                    "derive_port": r.derive_port,
                    "response_code": r.code,
                }.items()
                if v is not None
            }
        else:
            out["direct_response"] = {"status": self.direct_status, "body": self.direct_body.decode("utf-8", "replace")}
        if self.request_headers is not None:
            out["request_headers"] = self.request_headers.describe()
        if self.response_headers is not None:
            out["response_headers"] = self.response_headers.describe()
        return out


class VirtualHost:
    """Routes for a set of domains, tried in order."""

    __slots__ = ("name", "domains", "routes", "kind")

    #: kinds: a normal vhost, or the sidecar catch-alls Istio generates.
    NORMAL = "normal"
    ALLOW_ANY = "allow_any"
    BLOCK_ALL = "block_all"

    def __init__(self, name: str, domains: Sequence[str], routes: Sequence[Route], kind: str = NORMAL) -> None:
        self.name = name
        self.domains = tuple(domains)
        self.routes = tuple(routes)
        self.kind = kind

    def select(self, req: RequestContext) -> Route | None:
        """The first route whose match accepts ``req`` (a route without a match accepts all)."""
        for route in self.routes:
            m = route.match
            if m is None or m.matches(req):
                return route
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "domains": list(self.domains), "routes": [r.describe() for r in self.routes]}


class RouteTable:
    """A route configuration: host → virtual host, with Envoy's domain precedence."""

    __slots__ = ("name", "exact", "suffixes", "prefixes", "catch_all", "virtual_hosts")

    def __init__(self, name: str, virtual_hosts: Sequence[VirtualHost]) -> None:
        self.name = name
        self.virtual_hosts = tuple(virtual_hosts)
        exact: dict[str, VirtualHost] = {}
        suffixes: list[tuple[str, VirtualHost]] = []
        prefixes: list[tuple[str, VirtualHost]] = []
        catch_all: VirtualHost | None = None
        for vh in self.virtual_hosts:
            for domain in vh.domains:
                d = domain.lower()
                if d == "*":
                    if catch_all is None:
                        catch_all = vh
                elif d.startswith("*"):
                    suffixes.append((d[1:], vh))
                elif d.endswith("*"):
                    prefixes.append((d[:-1], vh))
                else:
                    exact.setdefault(d, vh)
        # Longest wildcard first; on equal length the earlier declaration wins (stable sort).
        suffixes.sort(key=lambda item: -len(item[0]))
        prefixes.sort(key=lambda item: -len(item[0]))
        self.exact = exact
        self.suffixes = tuple(suffixes)
        self.prefixes = tuple(prefixes)
        self.catch_all = catch_all

    def find(self, host: str) -> VirtualHost | None:
        """Virtual host for a lower-case, port-less host name."""
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        for suffix, vh in self.suffixes:
            if len(host) > len(suffix) and host.endswith(suffix):
                return vh
        for prefix, vh in self.prefixes:
            if len(host) > len(prefix) and host.startswith(prefix):
                return vh
        return self.catch_all

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "virtual_hosts": [vh.describe() for vh in self.virtual_hosts]}


class ListenerSpec:
    """A port the proxy opens."""

    __slots__ = ("name", "bind", "port", "route_table", "protocol")

    def __init__(self, name: str, bind: str, port: int, route_table: str, protocol: str = "HTTP") -> None:
        self.name = name
        self.bind = bind
        self.port = port
        self.route_table = route_table
        self.protocol = protocol

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": f"{self.bind}:{self.port}", "route_config": self.route_table, "protocol": self.protocol}


class ProxyInfo:
    """Who this proxy is: its mode, namespace and labels (the Istio node metadata)."""

    __slots__ = ("mode", "namespace", "labels", "server_header", "outbound_policy", "edge")

    def __init__(self, mode: str, namespace: str, labels: Mapping[str, str], outbound_policy: str = "ALLOW_ANY") -> None:
        self.mode = mode
        self.namespace = namespace
        self.labels = dict(labels)
        #: Istio: outbound sidecar replies keep Envoy's default ``envoy``; gateways say ``istio-envoy``.
        self.server_header = b"istio-envoy" if mode == "gateway" else b"envoy"
        self.outbound_policy = outbound_policy
        #: Gateways are the edge: use_remote_address, x-forwarded-for appended.
        self.edge = mode == "gateway"


class Snapshot:
    """Everything the data path needs, compiled; replaced whole on reload."""

    __slots__ = ("version", "proxy", "route_tables", "clusters", "listeners", "mesh", "dump", "passthrough", "default_table")

    def __init__(
        self,
        version: int,
        proxy: ProxyInfo,
        route_tables: Mapping[str, RouteTable],
        clusters: Mapping[str, Cluster],
        listeners: Sequence[ListenerSpec],
        mesh: Mapping[str, Any],
        passthrough: Cluster | None,
        default_table: RouteTable | None,
        dump: Mapping[str, Any] | None = None,
    ) -> None:
        self.version = version
        self.proxy = proxy
        self.route_tables = dict(route_tables)
        self.clusters = dict(clusters)
        self.listeners = tuple(listeners)
        self.mesh = dict(mesh)
        self.passthrough = passthrough
        #: Sidecar: the table for a Host port that has no route configuration of its own.
        self.default_table = default_table
        self.dump = dict(dump or {})

    def table_for_port(self, port: int) -> RouteTable | None:
        table = self.route_tables.get(str(port))
        return table if table is not None else self.default_table

    def describe(self) -> dict[str, Any]:
        return {
            "version_info": str(self.version),
            "proxy": {"mode": self.proxy.mode, "namespace": self.proxy.namespace, "labels": self.proxy.labels},
            "mesh": self.mesh,
            "listeners": [listener.describe() for listener in self.listeners],
            "route_configs": [t.describe() for t in self.route_tables.values()],
            "clusters": [c.describe() for c in self.clusters.values()],
            **self.dump,
        }
