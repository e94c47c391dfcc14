"""SpanExporter against a real HTTP collector stand-in on 127.0.0.1 (Zipkin v2 JSON and OTLP/HTTP JSON)."""

from __future__ import annotations

import http.server
import json
import random
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from meshproxy.telemetry.span_export import SpanExporter
from meshproxy.telemetry.tracing import Tracer


class Collector:
    """Records every POST (path, headers, parsed JSON body); answers ``status`` after ``delay`` s."""

    def __init__(self, status: int = 202, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        with self.lock:
            return [p[2] for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def tracer_for(exporter: SpanExporter, propagation: Any = "b3") -> Tracer:
    return Tracer(sampling=100.0, service_name="productpage.default", node_id="sidecar~10.0.0.1~pp.default~default.svc.cluster.local",
                  namespace="default", exporter=exporter, rng=random.Random(5), propagation=propagation,
                  canonical_service="productpage", canonical_revision="v1", mesh_id="cluster.local",
                  local_address="10.0.0.1")


def one_request(tracer: Tracer, headers: list[tuple[bytes, bytes]] = (), status: int = 200) -> Any:
    span = tracer.start([(b"user-agent", b"curl/8"), *headers], method="GET", authority="reviews:9080",
                        path="/api/v1/products", request_id=b"00002706-6f55-44ba-ad80-413f09f48a28")
    span.finish(status=status, response_flags="-", upstream_cluster="outbound|9080||reviews.default.svc.cluster.local",
                upstream_host="127.0.0.1:9080", request_size=0, response_size=5)
    return span


def test_zipkin_v2_json_to_api_v2_spans(collector: Collector) -> None:
    exp = SpanExporter(f"http://127.0.0.1:{collector.port}/api/v2/spans", format="zipkin",
                       service_name="productpage.default", batch_size=10, flush_interval=0.05)
    tracer = tracer_for(exp)
    parent = [(b"x-b3-traceid", b"463ac35c9f6413ad48485a3953bb6124"), (b"x-b3-spanid", b"a2fb4a1d1a96d312"),
              (b"x-b3-sampled", b"1")]
    spans = [one_request(tracer, parent), one_request(tracer, status=503)]
    exp.flush()
    exp.close()
    assert exp.sent == 2 and exp.dropped == 0
    path, headers, body = collector.posts[0]
    assert path == "/api/v2/spans"
    assert headers["content-type"] == "application/json"
    assert isinstance(body, list)
    got = [s for batch in collector.spans() for s in batch]
    assert len(got) == 2
    child, root = got
    assert child["traceId"] == "463ac35c9f6413ad48485a3953bb6124"
    assert child["parentId"] == "a2fb4a1d1a96d312"
    assert child["id"] == spans[0].span_id_hex
    assert child["kind"] == "CLIENT" and child["name"] == "reviews:9080"
    assert isinstance(child["timestamp"], int) and isinstance(child["duration"], int)
    assert child["timestamp"] > 1_600_000_000_000_000  # µs since the epoch
    assert child["localEndpoint"] == {"ipv4": "10.0.0.1", "port": 0, "serviceName": "productpage.default"}
    assert child["annotations"][0]["value"] == "cr"
    tags = child["tags"]
    assert tags["istio.canonical_service"] == "productpage" and tags["istio.mesh_id"] == "cluster.local"
    assert tags["istio.namespace"] == "default" and tags["component"] == "proxy"
    assert tags["node_id"].startswith("sidecar~") and tags["http.method"] == "GET"
    assert tags["http.url"] == "http://reviews:9080/api/v1/products" and tags["http.status_code"] == "200"
    assert tags["guid:x-request-id"] == "00002706-6f55-94ba-ad80-413f09f48a28"
    assert tags["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    assert tags["user_agent"] == "curl/8" and tags["response_size"] == "5" and tags["request_size"] == "0"
    assert "error" not in tags
    assert "parentId" not in root and root["traceId"][16:] == root["id"] and len(root["traceId"]) == 32
    assert root["tags"]["error"] == "true" and root["tags"]["http.status_code"] == "503"


def test_otlp_json_to_v1_traces(collector: Collector) -> None:
    collector.status = 200
    exp = SpanExporter(f"http://127.0.0.1:{collector.port}/v1/traces", format="otlp",
                       service_name="productpage.default", batch_size=10, flush_interval=0.05)
    tracer = tracer_for(exp, propagation="w3c")
    tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    span = one_request(tracer, [(b"traceparent", tp)])
    exp.close()
    assert exp.sent == 1
    path, headers, body = collector.posts[0]
    assert path == "/v1/traces" and headers["content-type"] == "application/json"
    (rs,) = body["resourceSpans"]
    assert rs["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "productpage.default"}}]
    (ss,) = rs["scopeSpans"]
    assert ss["scope"]["name"] == "envoy"
    (s,) = ss["spans"]
    assert s["traceId"] == "0af7651916cd43dd8448eb211c80319c" and s["parentSpanId"] == "b7ad6b7169203331"
    assert s["spanId"] == span.span_id_hex and s["kind"] == 3 and s["name"] == "egress reviews:9080"
    assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 1_600_000_000 * 10**9
    attrs = {a["key"]: a["value"]["stringValue"] for a in s["attributes"]}
    assert attrs["istio.canonical_service"] == "productpage" and attrs["http.status_code"] == "200"


def test_batches_respect_batch_size(collector: Collector) -> None:
    exp = SpanExporter(f"http://127.0.0.1:{collector.port}/api/v2/spans", format="zipkin",
                       service_name="s", batch_size=4, flush_interval=10.0)
    tracer = tracer_for(exp)
    for _ in range(8):
        one_request(tracer)
    deadline = time.monotonic() + 5
    while exp.sent < 8 and time.monotonic() < deadline:  # full batches go out without waiting for the timer
        time.sleep(0.01)
    assert [len(b) for b in collector.spans()] == [4, 4]
    one_request(tracer)
    exp.close()
    assert [len(b) for b in collector.spans()] == [4, 4, 1] and exp.sent == 9


def test_slow_collector_drops_instead_of_blocking() -> None:
    slow = Collector(delay=0.5)
    try:
        exp = SpanExporter(f"http://127.0.0.1:{slow.port}/api/v2/spans", format="zipkin", service_name="s",
                           batch_size=5, flush_interval=0.01, max_queue=20)
        tracer = tracer_for(exp)
        t0 = time.perf_counter()
        for _ in range(200):
            one_request(tracer)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.4  # never waited for the collector
        assert exp.dropped >= 200 - 20 - 5
        exp.close(timeout=5)
        assert exp.sent + exp.dropped == 200
        assert exp.sent >= 5
    finally:
        slow.close()


def test_collector_down_counts_failures() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here: connection refused
    exp = SpanExporter(f"http://127.0.0.1:{port}/api/v2/spans", format="zipkin", service_name="s",
                       batch_size=3, flush_interval=0.01, max_queue=100)
    tracer = tracer_for(exp)
    for _ in range(6):
        one_request(tracer)
    exp.flush(timeout=5)
    exp.close()
    assert exp.sent == 0 and exp.dropped == 6 and exp.failed_batches >= 2


def test_non_2xx_is_not_counted_as_sent() -> None:
    bad = Collector(status=500)
    try:
        exp = SpanExporter(f"http://127.0.0.1:{bad.port}/api/v2/spans", format="zipkin", service_name="s",
                           batch_size=10, flush_interval=0.01)
        one_request(tracer_for(exp))
        exp.close()
        assert exp.sent == 0 and exp.dropped == 1 and len(bad.posts) == 1
    finally:
        bad.close()


def test_export_after_close_is_dropped(collector: Collector) -> None:
    exp = SpanExporter(f"http://127.0.0.1:{collector.port}/api/v2/spans", format="zipkin", service_name="s")
    exp.close()
    one_request(tracer_for(exp))
    assert exp.dropped == 1 and exp.sent == 0
