"""Istio's metrics and the health port, scraped from a running sidecar and gateway."""

from __future__ import annotations

import urllib.request
from textwrap import dedent
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshproxy.telemetry.metrics import BUCKETS, LABELS
from tests.support.backend import BackendProcess
from tests.support.client import Connection
from tests.support.meshproxy_proc import MeshproxyProcess, write_config

CONFIG = """
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v2-5b667bcbf8-x7k2p, namespace: default, labels: {{app: reviews, version: v2}}}}
spec: {{containers: [{{name: app}}]}}
status: {{podIP: 127.0.0.1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - match: [{{uri: {{prefix: /missing}}}}]
    route: [{{destination: {{host: reviews, subset: nope}}}}]
  - match: [{{uri: {{prefix: /api}}}}]
    route: [{{destination: {{host: reviews}}}}]
"""


@pytest.fixture(scope="module")
def proxy() -> Iterator[MeshproxyProcess]:
    with BackendProcess("reviews") as backend:
        path = write_config(dedent(CONFIG.format(port=backend.port)))
        with MeshproxyProcess.sidecar([path], labels="app=productpage,version=v1") as p:
            yield p


def scrape(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_istio_requests_total_with_istio_labels(proxy: MeshproxyProcess) -> None:
    with Connection(proxy.port) as c:
        for _ in range(3):
            assert c.request("POST", "/api", "reviews:9080", body=b"12345").status == 200
        assert c.request("GET", "/missing", "reviews:9080").status == 503
        assert c.request("GET", "/nothing", "reviews:9080").status == 404
    samples = scrape(proxy.stats_port)["istio_requests"]
    by_code = {s.labels["response_code"]: s for s in samples}
    ok = by_code["200"]
    assert ok.value == 3
    assert list(ok.labels) == list(LABELS)
    assert ok.labels == {
        "reporter": "source",
        "source_workload": "productpage-v1",
        "source_canonical_service": "productpage",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "default",
        "source_principal": "unknown",
        "source_app": "productpage",
        "source_version": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": "reviews-v2",
        "destination_workload_namespace": "default",
        "destination_principal": "unknown",
        "destination_app": "reviews",
        "destination_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_canonical_service": "reviews",
        "destination_canonical_revision": "v2",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "unknown",
    }
    assert by_code["503"].labels["response_flags"] == "NC" and by_code["503"].value == 1
    assert by_code["404"].labels["response_flags"] == "NR" and by_code["404"].labels["destination_service"] == "unknown"


def test_histograms_use_envoy_buckets_and_count_bodies(proxy: MeshproxyProcess) -> None:
    families = scrape(proxy.admin_port)  # the admin port serves the same page
    req_bytes = [s for s in families["istio_request_bytes"] if s.labels.get("response_code") == "200"]
    buckets = [s for s in req_bytes if s.name == "istio_request_bytes_bucket"]
    assert [float(s.labels["le"]) for s in buckets[:-1]] == [float(b) for b in BUCKETS]
    total = next(s for s in req_bytes if s.name == "istio_request_bytes_sum")
    count = next(s for s in req_bytes if s.name == "istio_request_bytes_count")
    assert total.value == 5 * count.value
    durations = [s for s in families["istio_request_duration_milliseconds"] if s.name.endswith("_count")]
    assert sum(s.value for s in durations) >= 5


def test_health_port_ready(proxy: MeshproxyProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.health_port}/healthz/ready", timeout=5) as r:
        assert r.status == 200


def test_access_log_text_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import time
    from pathlib import Path

    with BackendProcess("reviews") as backend:
        path = write_config(dedent(CONFIG.format(port=backend.port)), str(tmp_path))
        text_log, json_log = tmp_path / "access.log", tmp_path / "access.json"
        mesh = tmp_path / "meshconfig.yaml"
        mesh.write_text(f"accessLogFile: {text_log}\n")
        with MeshproxyProcess.sidecar([path], extra=["--mesh-config", str(mesh)]) as p:
            with Connection(p.port) as c:
                c.request("GET", "/api/items?x=1", "reviews:9080", [("User-Agent", "t/1"), ("x-request-id", "rid-1")])
                c.request("GET", "/missing", "reviews:9080")
        with MeshproxyProcess.sidecar([path], extra=["--access-log-file", str(json_log), "--access-log-encoding", "JSON"]) as p:
            get_ok = Connection(p.port)
            r = get_ok.request("POST", "/api", "reviews:9080", body=b"hello")
            get_ok.close()
            generated = r.seen_header("x-request-id")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(Path(text_log).read_text().splitlines()) < 2:
            time.sleep(0.05)
    lines = Path(text_log).read_text().splitlines()
    assert len(lines) == 2, lines
    ok, missing = lines
    assert ok.startswith("[") and '] "GET /api/items?x=1 HTTP/1.1" 200 - via_upstream - "-" 0 ' in ok
    assert f'"-" "t/1" "rid-1" "reviews:9080" "127.0.0.1:{backend.port}" outbound|9080||reviews.default.svc.cluster.local 127.0.0.1:' in ok
    assert ' "GET /missing HTTP/1.1" 503 NC cluster_not_found - "-" 0 0 ' in missing
    entry = json.loads(Path(json_log).read_text().splitlines()[0])
    assert entry["method"] == "POST" and entry["response_code"] == 200 and entry["bytes_received"] == 5
    assert entry["request_id"] == generated and entry["upstream_cluster"].startswith("outbound|9080||reviews")


def test_tracing_end_to_end_b3_headers_and_zipkin_spans(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from tests.integration.test_span_export import Collector

    collector = Collector()
    try:
        with BackendProcess("reviews") as backend:
            path = write_config(dedent(CONFIG.format(port=backend.port)), str(tmp_path))
            with MeshproxyProcess.sidecar([path], labels="app=productpage,version=v1",
                                          extra=["--zipkin-address", f"127.0.0.1:{collector.port}", "--trace-sampling", "100"]) as p:
                with Connection(p.port) as c:
                    fresh = c.request("GET", "/api/1", "reviews:9080")
                    joined = c.request("GET", "/api/2", "reviews:9080", [
                        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"),
                        ("x-b3-sampled", "1"), ("x-request-id", "fixed-id")])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and sum(len(s) for s in collector.spans()) < 2:
                    time.sleep(0.1)
    finally:
        collector.close()
    seen = dict(fresh.json()["headers"])
    assert len(seen["x-b3-traceid"]) == 32 and len(seen["x-b3-spanid"]) == 16 and seen["x-b3-sampled"] == "1"
    assert "x-b3-parentspanid" not in seen
    seen2 = dict(joined.json()["headers"])
    assert seen2["x-b3-traceid"] == "463ac35c9f6413ad48485a3953bb6124"
    assert seen2["x-b3-parentspanid"] == "a2fb4a1d1a96d312" and seen2["x-b3-spanid"] != "a2fb4a1d1a96d312"
    assert seen2["x-request-id"] == "fixed-id"
    spans = [span for batch in collector.spans() for span in batch]
    by_trace = {s["traceId"]: s for s in spans}
    span = by_trace["463ac35c9f6413ad48485a3953bb6124"]
    assert span["kind"] == "CLIENT" and span["parentId"] == "a2fb4a1d1a96d312" and span["id"] == seen2["x-b3-spanid"]
    assert span["tags"]["http.status_code"] == "200"
    assert span["tags"]["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert span["tags"]["guid:x-request-id"] == "fixed-id"
    assert by_trace[seen["x-b3-traceid"]]["tags"]["http.url"].endswith("/api/1")


def test_proxy_level_retry_and_cluster_stats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.ports import free_port

    dead = free_port()
    config = dedent(CONFIG.format(port=dead)) + dedent(
        """
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews, namespace: default}
        spec:
          host: reviews
          trafficPolicy:
            connectionPool: {http: {http1MaxPendingRequests: 10}}
            outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 1s}
        """
    )
    path = write_config(config, str(tmp_path))
    with MeshproxyProcess.sidecar([path]) as p:
        with Connection(p.port) as c:
            assert c.request("GET", "/api", "reviews:9080").status == 503
        families = scrape(p.stats_port)
    retries = families["envoy_cluster_upstream_rq_retry"][0].value
    assert retries == 2  # Istio's default policy: two retries on connect-failure
    assert "envoy_cluster_upstream_rq_pending_overflow" in families
    assert "envoy_cluster_outlier_detection_ejections_enforced" in families, sorted(families)


def test_w3c_traceparent_joined_and_otlp_export(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from tests.integration.test_span_export import Collector

    collector = Collector()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        with BackendProcess("reviews") as backend:
            path = write_config(dedent(CONFIG.format(port=backend.port)), str(tmp_path))
            with MeshproxyProcess.sidecar([path], extra=[
                    "--otlp-endpoint", f"http://127.0.0.1:{collector.port}/v1/traces", "--trace-sampling", "100"]) as p:
                with Connection(p.port) as c:
                    r = c.request("GET", "/api/w3c", "reviews:9080", [
                        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"), ("tracestate", "vendor=x")])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not collector.spans():
                    time.sleep(0.1)
    finally:
        collector.close()
    seen = dict(r.json()["headers"])
    version, got_trace, span_id, flags = seen["traceparent"].split("-")
    assert (version, got_trace) == ("00", trace_id) and span_id != "00f067aa0ba902b7"
    assert seen["tracestate"] == "vendor=x"
    assert "x-b3-traceid" not in seen  # the OpenTelemetry tracer speaks W3C only
    body = collector.spans()[0]
    spans = [s for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert spans and spans[0]["parentSpanId"] == "00f067aa0ba902b7"
