"""Istio's standard metrics, with the request path paying almost nothing for them.

``istio_requests_total``, ``istio_request_duration_milliseconds``,
``istio_request_bytes`` and ``istio_response_bytes`` carry Istio's full label
set in Istio's order (pilot's stats filter / istio/proxy testdata).  Building
a label set is expensive (a couple of dozen strings), so it happens once per
*series*: the first request with a given (destination endpoint or cluster,
response code, response flags) builds the labels and a small mutable cell;
every later request does one dict lookup and a few integer additions.
The cells are rendered into Prometheus text at scrape time, on the scrape
page, so no lock or per-request label work happens on the hot path.

Histogram buckets are Envoy's defaults, which Istio keeps unless a pod
annotation overrides them.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Mapping

#: Envoy's default histogram buckets (source/common/stats/histogram_impl.cc).
BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)

LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)

UNKNOWN = "unknown"
DEFAULT_CLUSTER_ID = "Kubernetes"


def canonical_service(labels: Mapping[str, str], fallback: str) -> str:
    return (
        labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or fallback
    )


def canonical_revision(labels: Mapping[str, str]) -> str:
    return (
        labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )


class PeerInfo:
    """This proxy's own workload, as the ``source_*`` labels describe it."""

    def __init__(self, workload: str, namespace: str, labels: Mapping[str, str], cluster: str = DEFAULT_CLUSTER_ID) -> None:
        self.labels = (
            workload or UNKNOWN,
            canonical_service(labels, workload or UNKNOWN),
            canonical_revision(labels),
            namespace or UNKNOWN,
            UNKNOWN,  # source_principal: known only with mTLS
            labels.get("app", UNKNOWN),
            labels.get("version", UNKNOWN),
            cluster,
        )


def default_workload_name(mode: str, labels: Mapping[str, str]) -> str:
    """Istio's WORKLOAD_NAME when none is given: the gateway's deployment or app-version."""
    if mode == "gateway" and labels.get("istio"):
        return f"istio-{labels['istio']}"
    app = labels.get("app")
    if app and labels.get("version"):
        return f"{app}-{labels['version']}"
    return app or UNKNOWN


class _Series:
    """One label set's counters: request count and three histograms (bucket counts + sums)."""

    __slots__ = ("labels", "count", "duration", "duration_sum", "req_bytes", "req_bytes_sum", "resp_bytes", "resp_bytes_sum")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.count = 0
        n = len(BUCKETS) + 1
        self.duration = [0] * n
        self.duration_sum = 0.0
        self.req_bytes = [0] * n
        self.req_bytes_sum = 0
        self.resp_bytes = [0] * n
        self.resp_bytes_sum = 0


class RequestMetrics:
    """The istio_* HTTP metrics of one proxy process."""

    def __init__(self, source: PeerInfo, reporter: str = "source") -> None:
        self.source = source
        self.reporter = reporter
        self._series: dict[tuple[Any, int, str], _Series] = {}

    def record(self, destination: Any, service: Any, status: int, flags: str,
               duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """Count one finished request.  ``destination`` is the endpoint (or None), ``service``
        the cluster (or None); both are long-lived compiled objects, so they key the cache."""
        key = (destination if destination is not None else service, status, flags)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._labels(destination, service, status, flags))
        series.count += 1
        series.duration[bisect.bisect_left(BUCKETS, duration_ms)] += 1
        series.duration_sum += duration_ms
        series.req_bytes[bisect.bisect_left(BUCKETS, request_bytes)] += 1
        series.req_bytes_sum += request_bytes
        series.resp_bytes[bisect.bisect_left(BUCKETS, response_bytes)] += 1
        series.resp_bytes_sum += response_bytes

    def _labels(self, endpoint: Any, cluster: Any, status: int, flags: str) -> tuple[str, ...]:
        dest_labels: Mapping[str, str] = getattr(endpoint, "labels", None) or {}
        workload = getattr(endpoint, "workload", "") or UNKNOWN
        namespace = getattr(endpoint, "namespace", "") or UNKNOWN
        service = getattr(cluster, "service", "") or UNKNOWN
        service_name, service_namespace = UNKNOWN, UNKNOWN
        if cluster is not None and getattr(cluster, "name", "") == "PassthroughCluster":
            service_name = "PassthroughCluster"
            service = getattr(endpoint, "key", UNKNOWN) if endpoint is not None else UNKNOWN
        elif service != UNKNOWN:
            parts = service.split(".")
            service_name = parts[0]
            if len(parts) > 2 and parts[2] == "svc":
                service_namespace = parts[1]
        dest_app = dest_labels.get("app", UNKNOWN)
        return (
            self.reporter,
            *self.source.labels,
            workload,
            namespace,
            UNKNOWN,  # destination_principal: known only with mTLS
            dest_app,
            dest_labels.get("version", UNKNOWN),
            service,
            canonical_service(dest_labels, workload) if dest_labels else UNKNOWN,
            canonical_revision(dest_labels) if dest_labels else UNKNOWN,
            service_name,
            service_namespace,
            DEFAULT_CLUSTER_ID if endpoint is not None and dest_labels else UNKNOWN,
            "http",
            str(status),
            "",
            flags or "-",
            UNKNOWN,  # connection_security_policy: "unknown" on the client side
        )

    def exposition(self) -> bytes:
        """Prometheus text format with labels in Istio's order, as Envoy prints them.

        (prometheus-client would sort label names; dashboards do not care, but
        people diffing against Envoy's output do.)
        """
        out: list[str] = []
        series = list(self._series.values())
        rendered = [(s, _label_text(s.labels)) for s in series]
        out.append("# TYPE istio_requests_total counter")
        for s, labels in rendered:
            out.append(f"istio_requests_total{{{labels}}} {s.count}")
        for name, counts, total in (
            ("istio_request_bytes", "req_bytes", "req_bytes_sum"),
            ("istio_request_duration_milliseconds", "duration", "duration_sum"),
            ("istio_response_bytes", "resp_bytes", "resp_bytes_sum"),
        ):
            out.append(f"# TYPE {name} histogram")
            for s, labels in rendered:
                running = 0
                for bound, n in zip(_BOUNDS, getattr(s, counts)):
                    running += n
                    out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
                running += getattr(s, counts)[-1]
                out.append(f'{name}_bucket{{{labels},le="+Inf"}} {running}')
                out.append(f"{name}_sum{{{labels}}} {_number(getattr(s, total))}")
                out.append(f"{name}_count{{{labels}}} {running}")
        return ("\n".join(out) + "\n").encode()

    def totals(self) -> dict[tuple[str, ...], int]:
        return {s.labels: s.count for s in self._series.values()}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_BOUNDS = tuple(_number(b) for b in BUCKETS)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: tuple[str, ...]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in zip(LABELS, labels))


def label_dict(labels: Iterable[str]) -> dict[str, str]:
    return dict(zip(LABELS, labels))
