"""The Prometheus exposition of one proxy: Istio's request metrics plus the proxy's own.

Served as ``/stats/prometheus`` on the admin port (as Envoy's admin serves it)
and on the stats port (15090 by default), where Istio's scrape annotations
point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .metrics import RequestMetrics

if TYPE_CHECKING:  # pragma: no cover
    from ..transport.server import ProxyState


class ProxyCollector(Collector):
    """Proxy-level figures, named after Envoy's where one exists."""

    def __init__(self, state: "ProxyState") -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        yield GaugeMetricFamily("envoy_http_downstream_cx_active", "Active downstream connections", value=len(state.connections))
        yield CounterMetricFamily("envoy_http_downstream_rq_completed", "Requests completed", value=state.requests_total)
        yield CounterMetricFamily("envoy_http_downstream_cx_protocol_error", "Downstream protocol errors", value=state.protocol_errors)
        yield CounterMetricFamily("envoy_cluster_manager_upstream_cx_total", "Upstream connections opened", value=state.pool.opened)
        idle = GaugeMetricFamily("meshproxy_upstream_pool_idle_connections", "Idle pooled upstream connections", labels=["upstream_host"])
        for host, n in sorted(state.pool.stats().items()):
            idle.add_metric([host], n)
        yield idle
        yield CounterMetricFamily("envoy_cluster_upstream_rq_retry", "Upstream retries", value=state.upstream_rq_retry)
        stats: dict[str, CounterMetricFamily] = {}
        for cluster in state.snapshot.clusters.values():
            for source in (getattr(cluster, "circuit", None), getattr(cluster, "outlier", None)):
                if source is None:
                    continue
                for key, value in source.stats().items():
                    family = stats.get(key)
                    if family is None:
                        family = stats[key] = CounterMetricFamily(
                            f"envoy_cluster_{key.removesuffix('_total')}", f"Envoy cluster stat {key}", labels=["cluster_name"])
                    family.add_metric([cluster.name], value)
        yield from stats.values()
        yield GaugeMetricFamily("meshproxy_config_version", "Version of the config being served", value=state.snapshot.version)
        yield CounterMetricFamily("meshproxy_config_reloads", "Config reloads that took effect", value=state.reloads)
        yield CounterMetricFamily("meshproxy_config_reload_failures", "Config reloads refused (the old config kept serving)", value=state.reload_failures)


class Exposition:
    """The whole page: Istio's metrics in Istio's label order, then the proxy's own (prometheus-client)."""

    def __init__(self, state: "ProxyState", metrics: RequestMetrics) -> None:
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProxyCollector(state))

    def render(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, self.metrics.exposition() + generate_latest(self.registry)
