"""Ship finished spans to a collector from a worker thread, never from the event loop.

:meth:`SpanExporter.export` only appends to a bounded in-memory queue (a lock and a
deque append); when the queue is full the span is dropped and counted, so a slow or
dead collector can never stall request handling.  The worker thread wakes every
``flush_interval`` seconds, or as soon as ``batch_size`` spans are waiting, serializes
a batch and POSTs it:

* ``format="zipkin"``: Zipkin v2 JSON array (``Content-Type: application/json``) to
  ``http://host:port/api/v2/spans``, as Envoy's Zipkin tracer with Istio's
  ``collector_endpoint_version: HTTP_JSON`` does (Envoy batches by
  ``tracing.zipkin.min_flush_spans`` = 5 and a 5 s flush timer, 5 s request timeout).
* ``format="otlp"``: an OTLP/HTTP JSON ``ExportTraceServiceRequest`` to
  ``http://host:port/v1/traces``, resource ``service.name`` = the proxy's service name,
  scope ``envoy``.  (Envoy's own OTLP/HTTP exporter sends the protobuf encoding; the JSON
  encoding is the same message under the OTLP JSON mapping.)

Counters: ``sent`` (spans in batches the collector accepted with a 2xx), ``dropped``
(spans refused because the queue was full, plus spans in batches that failed to
send), ``failed_batches``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import deque
from typing import Any, Literal
from urllib.parse import urlsplit

from .tracing import SpanRecord

__all__ = ["SpanExporter", "serialize_zipkin", "serialize_otlp"]


def serialize_zipkin(records: list[SpanRecord]) -> bytes:
    return json.dumps([r.to_zipkin() for r in records], separators=(",", ":")).encode()


def serialize_otlp(records: list[SpanRecord], service_name: str) -> bytes:
    body: dict[str, Any] = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service_name}}]},
        "scopeSpans": [{"scope": {"name": "envoy"}, "spans": [r.to_otlp_span() for r in records]}],
    }]}
    return json.dumps(body, separators=(",", ":")).encode()


class SpanExporter:
    """Batched, bounded, thread-backed span shipper; safe to call from any thread."""

    def __init__(self, url: str, *, format: Literal["zipkin", "otlp"], service_name: str,  # noqa: A002
                 batch_size: int = 100, flush_interval: float = 1.0, max_queue: int = 10000,
                 timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
        if format not in ("zipkin", "otlp"):
            raise ValueError(f"unknown span format {format!r}")
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"collector url must be http://host:port/path, got {url!r}")
        self.url = url
        self.format = format
        self.service_name = service_name
        self.batch_size = max(1, int(batch_size))
        self.flush_interval = float(flush_interval)
        self.max_queue = max(1, int(max_queue))
        self.timeout = float(timeout)
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Host": parts.netloc}
        if headers:
            self._headers.update(headers)
        self.sent = 0
        self.dropped = 0
        self.failed_batches = 0
        self._queue: deque[SpanRecord] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._closed = False
        self._flush_requested = False
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="meshproxy-span-export", daemon=True)
        self._thread.start()

    # -- producer side (event loop) -----------------------------------------------------------

    def export(self, span_record: SpanRecord) -> None:
        """Queue one finished span; drops it (``dropped += 1``) when the queue is full or closed."""
        cond = self._cond
        with cond:
            if self._closed or len(self._queue) >= self.max_queue:
                self.dropped += 1
                return
            self._queue.append(span_record)
            if len(self._queue) >= self.batch_size:
                cond.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float = 5.0) -> None:
        """Block (not for the event loop) until everything queued so far was sent or dropped."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while (self._queue or self._in_flight) and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            self._flush_requested = False

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued (bounded by ``timeout``), then stop the worker."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- worker thread ------------------------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        next_flush = time.monotonic() + self.flush_interval
        while True:
            with cond:
                while not self._closed:
                    if len(self._queue) >= self.batch_size or (self._queue and self._flush_requested):
                        break
                    now = time.monotonic()
                    if now >= next_flush:
                        next_flush = now + self.flush_interval
                        if self._queue:
                            break
                    cond.wait(max(0.0, next_flush - now))
                if self._closed:
                    return
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                self._in_flight = n
            ok = False
            try:
                ok = self._post(batch)
            except Exception:  # noqa: BLE001 - any failure just loses this batch
                ok = False
            with cond:
                self._in_flight = 0
                if ok:
                    self.sent += n
                else:
                    self.dropped += n
                    self.failed_batches += 1
                cond.notify_all()

    def _post(self, batch: list[SpanRecord]) -> bool:
        body = serialize_zipkin(batch) if self.format == "zipkin" else serialize_otlp(batch, self.service_name)
        headers = dict(self._headers)
        headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):  # one retry on a stale keep-alive connection
            conn = self._conn
            if conn is None:
                conn = self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            try:
                conn.request("POST", self._path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    conn.close()
                    self._conn = None
                return 200 <= resp.status < 300
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._conn = None
                if attempt:
                    return False
            except OSError:
                conn.close()
                self._conn = None
                return False
        return False
