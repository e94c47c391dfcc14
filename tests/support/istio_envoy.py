"""Static Envoy bootstraps equivalent to what istiod sends, for differential tests.

Each builder below mirrors one function of istio/istio (1.2x-1.31 line) so that a
stock Envoy behaves, request for request, like an Istio sidecar or gateway:

* HCM (``pilot/pkg/networking/core/listener_builder.go`` ``buildHTTPConnectionManager``,
  ``listener.go`` ``buildSidecarOutboundHTTPListenerOpts``, ``gateway.go``
  ``buildGatewayConnectionManager``, ``util/proxy_headers.go``): codec AUTO,
  ``normalize_path`` true (MeshConfig pathNormalization BASE), ``merge_slashes`` false,
  ``path_with_escaped_slashes_action`` KEEP_UNCHANGED, websocket upgrades,
  ``stream_idle_timeout`` 0s, ``proxy_100_continue`` true (ENABLE_100_CONTINUE_HEADERS),
  UUID request-id extension with ``use_request_id_for_trace_sampling``, empty access log,
  no tracing (the zipkin default was removed in 1.22). Sidecar outbound: no ``server_name``
  (so Envoy's own ``envoy``), ``use_remote_address`` false (PILOT_SIDECAR_USE_REMOTE_ADDRESS),
  no ``http_protocol_options`` (HTTP/1.0 refused). Gateway: ``server_name`` ``istio-envoy``,
  ``use_remote_address`` true, ``xff_num_trusted_hops`` 0, XFCC SANITIZE_SET,
  ``http_protocol_options: {}``.
* HTTP filters, in Istio's order: metadata exchange, grpc_stats, alpn, fault, cors, stats,
  router. ``istio.metadata_exchange``, ``istio.alpn`` and ``istio.stats`` exist only in
  istio/proxy's build, so they are left out here; what that changes is listed in
  ``NOT_REPRODUCED``. The router has ``suppress_envoy_headers`` false (Istio's default),
  so ``x-envoy-upstream-service-time`` and ``x-envoy-attempt-count`` are emitted.
* Routes (``route/route.go`` ``translateRoute``, ``route/retry/retry.go``): ``timeout: 0s``
  and ``max_grpc_timeout: 0s`` on every forwarding route, Istio's default retry policy,
  a ``decorator``, ``case_sensitive`` true, ``validate_clusters`` false,
  ``ignore_port_in_host_matching`` true, ``max_direct_response_body_size_bytes`` 1 MiB,
  ``include_request_attempt_count`` on every virtual host (``httproute.go``).
* Sidecar catch-all vhost (``httproute.go`` ``buildCatchAllVirtualHost``): ALLOW_ANY →
  ``allow_any`` to ``PassthroughCluster``; REGISTRY_ONLY → ``block_all`` direct 502.
* Clusters (``cluster_builder.go``): ``outbound|<port>|<subset>|<fqdn>``, LEAST_REQUEST,
  connect_timeout 10s, Istio's unlimited circuit breakers, upstream idle timeout 1h.
  Endpoints are STATIC here (istiod would send them over EDS; the behaviour is the same).
* Bootstrap runtime flags from ``pkg/bootstrap/config.go`` ``extractRuntimeFlags``.

Design: small functions that return plain dicts. Anything not covered can be passed
through as a raw Envoy v3 dict.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Sequence

MAX_UINT32 = 4294967295

#: What a stock Envoy cannot reproduce of an Istio proxy (istio/proxy-only filters).
NOT_REPRODUCED = (
    "istio.metadata_exchange: outbound requests would also carry x-envoy-peer-metadata and "
    "x-envoy-peer-metadata-id (and responses from a peer sidecar the same pair)",
    "istio.stats: istio_* metrics",
    "istio.alpn: only affects ALPN of upstream mTLS",
    "mTLS / transport_socket_matches (tlsMode-istio): plaintext only here",
)

#: Bootstrap runtime layer istio-agent writes (pkg/bootstrap/config.go extractRuntimeFlags).
ISTIO_RUNTIME_FLAGS: dict[str, Any] = {
    "overload.global_downstream_max_connections": 2147483647,
    "re2.max_program_size.error_level": 32768,
    "envoy.deprecated_features:envoy.config.listener.v3.Listener.hidden_envoy_deprecated_use_original_dst": True,
    "envoy.reloadable_features.http_reject_path_with_fragment": False,
}

_T = "type.googleapis.com/"
HCM_TYPE = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
RETRY_PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {"@type": _T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
}

#: Marker for "the VirtualService has no ``retries`` block" (→ Istio's default policy).
DEFAULT = object()

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"


# --------------------------------------------------------------------------- names


def cluster_name(fqdn: str, port: int, subset: str = "") -> str:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` (model.BuildSubsetKey)."""
    return f"outbound|{port}|{subset}|{fqdn}"


def service_domains(fqdn: str, proxy_namespace: str = "default", vips: Sequence[str] = (),
                    dns_suffix: str = "svc.cluster.local") -> list[str]:
    """Virtual-host domains istiod generates for a Kubernetes service seen by a sidecar.

    httproute.go ``generateVirtualHostDomains`` with the port left off (sidecars set
    ``ignore_port_in_host_matching``): FQDN, then the alt hosts of
    ``GenerateAltVirtualHosts`` -- the absolute ``FQDN.`` (PILOT_ENABLE_ABSOLUTE_FQDN_VHOST_DOMAIN,
    default on), then ``name``, ``name.ns.svc``, ``name.ns`` for the proxy's own namespace,
    or ``name.ns``, ``name.ns.svc`` for another namespace -- then the cluster VIPs.
    """
    domains = [fqdn, fqdn + "."]
    marker = "." + dns_suffix
    if fqdn.endswith(marker) and ".svc." in fqdn:
        name_ns = fqdn[: -len(marker)]  # "reviews.default"
        name, _, ns = name_ns.partition(".")
        if ns == proxy_namespace:
            domains += [name, name_ns + ".svc", name_ns]
        else:
            domains += [name_ns, name_ns + ".svc"]
    domains += list(vips)
    return domains


# --------------------------------------------------------------------------- routes


def retry_policy(retries: Any = DEFAULT, *, consistent_hash: bool = False) -> dict[str, Any] | None:
    """retry.go ``ConvertPolicy``: VS ``retries`` → Envoy ``retry_policy`` (None = no retries).

    ``retries`` is DEFAULT (no ``retries`` in the VS), or a dict with Istio's field names:
    ``attempts``, ``retryOn``, ``perTryTimeout``, ``retryIgnorePreviousHosts``, ``backoff``.
    Since 1.24 (EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY) the default has no retriable codes.
    """
    out: dict[str, Any] = {
        "retry_on": DEFAULT_RETRY_ON,
        "num_retries": 2,
        "host_selection_retry_max_attempts": 5,
    }
    if not consistent_hash:
        out["retry_host_predicate"] = [RETRY_PREVIOUS_HOSTS]
    if retries is DEFAULT or retries is None:
        return out
    attempts = int(retries.get("attempts", 0))
    if attempts <= 0:
        return None
    out["num_retries"] = attempts
    if retries.get("retryOn"):
        conditions, codes = [], []
        for part in str(retries["retryOn"]).split(","):
            part = part.strip()
            if not part:
                continue
            if part.isdigit() and 100 <= int(part) <= 599:
                codes.append(int(part))
            else:
                conditions.append(part)
        out["retry_on"] = ",".join(conditions)
        if codes:
            out["retriable_status_codes"] = codes
            if "retriable-status-codes" not in out["retry_on"]:
                out["retry_on"] += ",retriable-status-codes"
    if retries.get("perTryTimeout"):
        out["per_try_timeout"] = retries["perTryTimeout"]
    if "retryIgnorePreviousHosts" in retries:
        if retries["retryIgnorePreviousHosts"]:
            out["retry_host_predicate"] = [RETRY_PREVIOUS_HOSTS]
        else:
            out.pop("retry_host_predicate", None)
    if retries.get("backoff"):
        out["retry_back_off"] = {"base_interval": retries["backoff"]}
    return out


def route_match(prefix: str | None = "/", *, path: str | None = None, regex: str | None = None,
                headers: Iterable[dict[str, Any]] = (), ignore_uri_case: bool = False) -> dict[str, Any]:
    """route.go ``TranslateRouteMatch``: one of prefix/path/safe_regex, ``case_sensitive`` set."""
    m: dict[str, Any]
    if path is not None:
        m = {"path": path}
    elif regex is not None:
        m = {"safe_regex": {"regex": regex}}
    else:
        m = {"prefix": prefix or "/"}
    m["case_sensitive"] = not ignore_uri_case
    hs = list(headers)
    if hs:
        m["headers"] = hs
    return m


def _operation(match: dict[str, Any], cluster: str | None, vs_name: str, port: int) -> str:
    """route.go ``GetRouteOperation`` (decorator)."""
    if "prefix" in match:
        path = match["prefix"] + "*"
    elif "path" in match:
        path = match["path"]
    elif "safe_regex" in match:
        path = match["safe_regex"]["regex"]
    else:
        path = "/*"
    if cluster and cluster.count("|") == 3 and cluster.startswith(("outbound|", "inbound|")):
        _, p, _, host = cluster.split("|")
        return f"{host}:{p}{path}"
    return f"{vs_name}:{port}{path}"


def _header_ops(route: dict[str, Any], request_set: dict[str, str] | None, request_add: dict[str, str] | None,
                request_remove: Sequence[str] | None, response_set: dict[str, str] | None,
                response_add: dict[str, str] | None, response_remove: Sequence[str] | None) -> None:
    """route.go ``TranslateHeadersOperations``: set → OVERWRITE_IF_EXISTS_OR_ADD, add →
    APPEND_IF_EXISTS_OR_ADD, each group sorted by name, set before add."""

    def opts(d: dict[str, str] | None, append: bool) -> list[dict[str, Any]]:
        action = "APPEND_IF_EXISTS_OR_ADD" if append else "OVERWRITE_IF_EXISTS_OR_ADD"
        return [{"header": {"key": k, "value": v}, "append_action": action}
                for k, v in sorted((d or {}).items()) if not (k.startswith(":") or k.lower() == "host")]

    req = opts(request_set, False) + opts(request_add, True)
    resp = opts(response_set, False) + opts(response_add, True)
    if req:
        route["request_headers_to_add"] = req
    if resp:
        route["response_headers_to_add"] = resp
    if request_remove:
        route["request_headers_to_remove"] = list(request_remove)
    if response_remove:
        route["response_headers_to_remove"] = list(response_remove)


def route(cluster: str | None = None, *, weighted: Sequence[tuple[str, int]] | None = None,
          match: dict[str, Any] | None = None, name: str = "", vs_name: str = "vs", port: int = 9080,
          retries: Any = DEFAULT, timeout: str = "0s", host_rewrite: str | None = None,
          prefix_rewrite: str | None = None,
          request_set: dict[str, str] | None = None, request_add: dict[str, str] | None = None,
          request_remove: Sequence[str] | None = None, response_set: dict[str, str] | None = None,
          response_add: dict[str, str] | None = None, response_remove: Sequence[str] | None = None,
          ) -> dict[str, Any]:
    """A forwarding route as route.go ``translateRoute``/``applyHTTPRouteDestination`` builds it.

    ``weighted`` is ``[(cluster, weight), ...]`` (weight-0 entries dropped as Istio does).
    ``retries``: DEFAULT, or ``{"attempts": 0}`` to disable, or an Istio HTTPRetry dict.
    """
    match = match if match is not None else route_match("/")
    action: dict[str, Any] = {"timeout": timeout}
    if timeout in ("0s", "0"):
        action["max_grpc_timeout"] = "0s"
    if weighted:
        kept = [(c, w) for c, w in weighted if w]
        action["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in kept]}
    elif cluster is not None:
        action["cluster"] = cluster
    else:
        raise ValueError("route needs a cluster or weighted clusters")
    if prefix_rewrite is not None:
        action["prefix_rewrite"] = prefix_rewrite
    if host_rewrite is not None:
        action["host_rewrite_literal"] = host_rewrite
    policy = retry_policy(retries)
    if policy is not None:
        action["retry_policy"] = policy
    out: dict[str, Any] = {"match": match, "route": action,
                           "decorator": {"operation": _operation(match, cluster, vs_name, port)}}
    if name:
        out["name"] = name
    _header_ops(out, request_set, request_add, request_remove, response_set, response_add, response_remove)
    return out


def redirect_route(*, match: dict[str, Any] | None = None, uri: str = "", authority: str = "",
                   scheme: str = "", port: int | None = None, code: int = 301, name: str = "",
                   vs_name: str = "vs", listen_port: int = 9080) -> dict[str, Any]:
    """route.go ``ApplyRedirect`` (VS ``redirect``)."""
    codes = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
             308: "PERMANENT_REDIRECT"}
    match = match if match is not None else route_match("/")
    redirect: dict[str, Any] = {"path_redirect": uri, "response_code": codes[code]}
    if authority:
        redirect["host_redirect"] = authority
    if scheme:
        redirect["scheme_redirect"] = scheme
    if port is not None and not ((port == 80 and scheme in ("", "http")) or (port == 443 and scheme == "https")):
        redirect["port_redirect"] = port
    out: dict[str, Any] = {"match": match, "redirect": redirect,
                           "decorator": {"operation": _operation(match, None, vs_name, listen_port)}}
    if name:
        out["name"] = name
    return out


def direct_response_route(status: int, body: str | bytes | None = None, *, match: dict[str, Any] | None = None,
                          name: str = "", vs_name: str = "vs", listen_port: int = 9080,
                          response_set: dict[str, str] | None = None,
                          response_add: dict[str, str] | None = None) -> dict[str, Any]:
    """route.go ``ApplyDirectResponse`` (VS ``directResponse``); route headers still apply."""
    match = match if match is not None else route_match("/")
    action: dict[str, Any] = {"status": status}
    if isinstance(body, str):
        action["body"] = {"inline_string": body}
    elif isinstance(body, bytes):
        action["body"] = {"inline_bytes": base64.b64encode(body).decode()}
    out: dict[str, Any] = {"match": match, "direct_response": action,
                           "decorator": {"operation": _operation(match, None, vs_name, listen_port)}}
    if name:
        out["name"] = name
    _header_ops(out, None, None, None, response_set, response_add, None)
    return out


def virtual_host(name: str, domains: Sequence[str], routes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A vhost as httproute.go builds it (``include_request_attempt_count`` on)."""
    return {"name": name, "domains": list(domains), "routes": list(routes), "include_request_attempt_count": True}


def catch_all_vhost(outbound_policy: str = "ALLOW_ANY") -> dict[str, Any]:
    """httproute.go ``buildCatchAllVirtualHost``: ``allow_any`` or ``block_all``."""
    if outbound_policy == "ALLOW_ANY":
        return {
            "name": "allow_any",
            "domains": ["*"],
            "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                        "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s", "max_grpc_timeout": "0s"}}],
            "include_request_attempt_count": True,
        }
    if outbound_policy == "REGISTRY_ONLY":
        return {
            "name": "block_all",
            "domains": ["*"],
            "routes": [{"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}],
            "include_request_attempt_count": True,
        }
    raise ValueError(f"unknown outbound policy {outbound_policy!r}")


def route_configuration(name: str, vhosts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """RouteConfiguration as httproute.go / gateway.go emit it."""
    return {
        "name": name,
        "virtual_hosts": list(vhosts),
        "validate_clusters": False,
        "max_direct_response_body_size_bytes": 1048576,
        "ignore_port_in_host_matching": True,
    }


# --------------------------------------------------------------------------- clusters


def _circuit_breakers() -> dict[str, Any]:
    return {"thresholds": [{
        "max_connections": MAX_UINT32, "max_pending_requests": MAX_UINT32,
        "max_requests": MAX_UINT32, "max_retries": MAX_UINT32, "track_remaining": True,
    }]}


def outbound_cluster(name: str, endpoints: Sequence[tuple[str, int]], *, lb_policy: str = "LEAST_REQUEST",
                     connect_timeout: str = "10s") -> dict[str, Any]:
    """An outbound service cluster (cluster_builder.go defaults); STATIC stands in for EDS.

    ``endpoints`` may be empty: the cluster then has no healthy host (503 ``no healthy upstream``).
    """
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "lb_policy": lb_policy,
        "circuit_breakers": _circuit_breakers(),
        "common_lb_config": {},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "3600s"},
                "explicit_http_config": {"http_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": p}}}}
                for ip, p in endpoints
            ]}],
        },
    }


def passthrough_cluster(target: tuple[str, int] | None = None) -> dict[str, Any]:
    """``PassthroughCluster``. Istio's is ORIGINAL_DST (the IP:port the app dialled, known via
    iptables). A loopback test has no redirect, so ``target`` may stand in for that original
    destination as a STATIC endpoint; otherwise the cluster is ORIGINAL_DST as in Istio."""
    if target is not None:
        c = outbound_cluster(PASSTHROUGH_CLUSTER, [target], lb_policy="ROUND_ROBIN")
        c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].pop(
            "explicit_http_config")
        c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
            "use_downstream_protocol_config"] = {"http_protocol_options": {}, "http2_protocol_options": {}}
        return c
    return {
        "name": PASSTHROUGH_CLUSTER,
        "type": "ORIGINAL_DST",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": _circuit_breakers(),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": "3600s"},
                "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}},
            },
        },
    }


def blackhole_cluster() -> dict[str, Any]:
    """``BlackHoleCluster``: STATIC with no endpoints."""
    return {"name": BLACKHOLE_CLUSTER, "type": "STATIC", "connect_timeout": "10s"}


# --------------------------------------------------------------------------- HCM / listeners


def _http_filters() -> list[dict[str, Any]]:
    """listener_builder.go filter chain, minus the istio/proxy-only filters (see NOT_REPRODUCED)."""
    return [
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.router.v3.Router"}},
    ]


def _base_hcm(stat_prefix: str, route_config: dict[str, Any], use_remote_address: bool) -> dict[str, Any]:
    return {
        "@type": HCM_TYPE,
        "codec_type": "AUTO",
        "stat_prefix": stat_prefix,
        "route_config": route_config,
        "http_filters": _http_filters(),
        "access_log": [],
        "use_remote_address": use_remote_address,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "request_id_extension": {"typed_config": {
            "@type": _T + "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": True}},
        "proxy_100_continue": True,
    }


def sidecar_outbound_hcm(port: int, vhosts: Sequence[dict[str, Any]], *, outbound_policy: str = "ALLOW_ANY",
                         route_name: str | None = None, bind: str = "0.0.0.0") -> dict[str, Any]:
    """HCM of a sidecar's outbound HTTP listener for ``port`` (route config named ``"<port>"``)."""
    rc = route_configuration(route_name or str(port), [*vhosts, catch_all_vhost(outbound_policy)])
    hcm = _base_hcm(f"outbound_{bind}_{port}", rc, use_remote_address=False)
    # ph.ServerName "" → Envoy's default "envoy"; ServerHeaderTransformation OVERWRITE (the default).
    return hcm


def gateway_hcm(port: int, vhosts: Sequence[dict[str, Any]], *, route_name: str | None = None,
                num_trusted_proxies: int = 0, bind: str = "0.0.0.0") -> dict[str, Any]:
    """HCM of an ingress gateway's HTTP server on ``port`` (route config ``http.<port>``).

    No catch-all vhost: a Host that matches no vhost gets 404 ``NR``. With no vhost at all
    istiod emits ``blackhole:<port>`` with ``*`` and no routes (also 404).
    """
    if not vhosts:
        vhosts = [{"name": f"blackhole:{port}", "domains": ["*"], "routes": []}]
    rc = route_configuration(route_name or f"http.{port}", vhosts)
    hcm = _base_hcm(f"outbound_{bind}_{port}", rc, use_remote_address=True)
    hcm.update({
        "server_name": "istio-envoy",
        "xff_num_trusted_hops": num_trusted_proxies,
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "cert": True, "uri": True, "dns": True},
        "http_protocol_options": {},
    })
    return hcm


def gateway_vhost(host: str, port: int, routes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """gateway.go vhost: name ``host:port``, domains ``[host]``."""
    return virtual_host(f"{host}:{port}", [host], routes)


def _listener(name: str, address: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": address, "port_value": port}},
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], node_id: str) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": "meshproxy-test"},
        "layered_runtime": {"layers": [
            {"name": "global config", "static_layer": dict(ISTIO_RUNTIME_FLAGS)},
            {"name": "admin", "admin_layer": {}},
        ]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _clusters(clusters: dict[str, Sequence[tuple[str, int]]] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(clusters, dict):
        return [outbound_cluster(n, eps) for n, eps in clusters.items()]
    return list(clusters)


def sidecar_bootstrap(port: int, vhosts: Sequence[dict[str, Any]],
                      clusters: dict[str, Sequence[tuple[str, int]]] | Sequence[dict[str, Any]],
                      *, outbound_policy: str = "ALLOW_ANY", listen_address: str = "127.0.0.1",
                      service_port: int | None = None, passthrough: tuple[str, int] | None = None,
                      ) -> dict[str, Any]:
    """Bootstrap for one sidecar outbound HTTP listener, in explicit (captureMode NONE) style.

    ``port`` is where the test connects; ``service_port`` (default ``port``) names the route
    config and stat prefix, as the service port would in a pod. ``clusters`` maps cluster
    names to endpoint lists (or is a list of raw cluster dicts). ``PassthroughCluster`` and
    ``BlackHoleCluster`` are added as istiod adds them; ``passthrough`` gives the former a
    concrete target (see ``passthrough_cluster``).
    """
    sp = service_port or port
    hcm = sidecar_outbound_hcm(sp, vhosts, outbound_policy=outbound_policy)
    cl = _clusters(clusters)
    names = {c["name"] for c in cl}
    if PASSTHROUGH_CLUSTER not in names:
        cl.append(passthrough_cluster(passthrough))
    if BLACKHOLE_CLUSTER not in names:
        cl.append(blackhole_cluster())
    return _bootstrap([_listener(f"0.0.0.0_{sp}", listen_address, port, hcm)], cl,
                      "sidecar~127.0.0.1~sleep.default~default.svc.cluster.local")


def gateway_bootstrap(port: int, vhosts: Sequence[dict[str, Any]],
                      clusters: dict[str, Sequence[tuple[str, int]]] | Sequence[dict[str, Any]],
                      *, listen_address: str = "127.0.0.1", server_port: int | None = None,
                      num_trusted_proxies: int = 0) -> dict[str, Any]:
    """Bootstrap for an ingress gateway with one plaintext HTTP server.

    ``vhosts`` are usually built with ``gateway_vhost``; ``server_port`` (default ``port``)
    names the route config ``http.<server_port>``.
    """
    sp = server_port or port
    hcm = gateway_hcm(sp, vhosts, num_trusted_proxies=num_trusted_proxies)
    return _bootstrap([_listener(f"0.0.0.0_{sp}", listen_address, port, hcm)], _clusters(clusters),
                      "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local")
