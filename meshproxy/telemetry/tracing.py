"""Distributed tracing as Envoy does it under Istio: join or start a trace, decide sampling, report spans.

Sans-IO: :class:`Tracer` only looks at request headers and returns the headers the
upstream request must carry; finished spans become :class:`SpanRecord` objects
handed to an exporter (:mod:`meshproxy.telemetry.span_export` ships them to a
Zipkin or OTLP collector from a worker thread).

What is reproduced (checked against Envoy 1.40 with Istio's tracing config:
``random_sampling`` = MeshConfig sampling %, ``client_sampling``/``overall_sampling`` 100,
Zipkin ``HTTP_JSON``, ``trace_id_128bit: true``, ``shared_span_context: false``):

* **Sampling** (``ConnectionManagerUtility::mutateTracingRequestHeader`` + the UUID
  request-id extension with ``use_request_id_for_trace_sampling``): a prior decision packed
  in ``x-request-id`` (character 14: ``9`` sampled, ``a`` forced, ``b`` client) is kept;
  otherwise ``x-client-trace-id`` → traced, ``x-envoy-force-trace`` → traced, else the
  first 8 hex digits of the request id modulo 10000 are compared with
  ``round(sampling * 100)``.  A new decision is written back into the request id
  (:attr:`Span.request_id`).  The tracer's header decision then wins: ``b3`` /
  ``x-b3-sampled`` (and ``traceparent`` flags when W3C extraction is on for Zipkin).
* **Zipkin context** (span_context_extractor.cc): ``b3`` single header first, then
  ``x-b3-traceid`` + ``x-b3-spanid`` (+ ``x-b3-parentspanid``), then, with
  ``propagation="b3+w3c"`` (``USE_B3_WITH_W3C_PROPAGATION``), ``traceparent``.  Malformed
  B3 ids make Envoy give up tracing the request (NullSpan): headers pass through untouched.
  A malformed ``traceparent`` is ignored (new root).  ``x-b3-flags`` is not read and passes
  through.
* **IDs**: span ids 64-bit random; a root trace id is ``random64 (high) || span id (low)``
  (Envoy reuses the root span id as the low half); 64-bit incoming trace ids stay 64-bit.
* **Injection** order: ``x-b3-traceid, x-b3-spanid, [x-b3-parentspanid], x-b3-sampled``
  (``1``/``0``), then ``traceparent`` ``00-<trace32>-<span>-<01|00>`` when W3C propagation
  is on.  If the request carried a ``b3`` single header, Envoy answers in kind: one ``b3``
  header ``<trace>-<span>-<1|0>[-<parent>]`` instead of the ``x-b3-*`` set.
  Headers are injected even when the span is not sampled (``x-b3-sampled: 0``).
* **OpenTelemetry tracer** (``propagation="w3c"``): only ``traceparent``/``tracestate``;
  the sampled flag comes from Envoy's own decision (an incoming ``-01`` is not honoured),
  ``tracestate`` is always emitted (empty when absent), a malformed ``traceparent`` → NullSpan.
* **Span fields/tags** (HttpTracerUtility::finalizeDownstreamSpan + Istio custom tags):
  see :meth:`Span.finish`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

__all__ = ["Tracer", "Span", "SpanRecord", "SpanSink", "TRACE_HEADERS"]

Propagation = Literal["b3", "b3+w3c", "w3c"]

# Trace reasons packed into a UUID x-request-id (envoy source/extensions/request_id/uuid/config.h).
_UUID_LENGTH = 36
_TRACE_BYTE_POSITION = 14
_TRACE_SAMPLED = ord("9")
_TRACE_FORCED = ord("a")
_TRACE_CLIENT = ord("b")
_TRACED_BYTES = frozenset((_TRACE_SAMPLED, _TRACE_FORCED, _TRACE_CLIENT))

_MASK64 = (1 << 64) - 1
_HEX = frozenset(b"0123456789abcdefABCDEF")

#: Every header name a span may rewrite.  The transport drops these from the incoming request and
#: appends :meth:`Span.outgoing_headers` (which re-emits the ones Envoy leaves untouched).
TRACE_HEADERS: frozenset[bytes] = frozenset(
    (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"b3", b"traceparent", b"tracestate")
)

# Header name -> slot in the per-request scan (first value wins, as Envoy reads entry [0]).
_B3, _TID, _SID, _PID, _SAMPLED, _TP, _TS, _CLIENT_TRACE, _FORCE_TRACE, _UA, _DS_CLUSTER, _XFP = range(12)
_SCAN: dict[bytes, int] = {
    b"b3": _B3,
    b"x-b3-traceid": _TID,
    b"x-b3-spanid": _SID,
    b"x-b3-parentspanid": _PID,
    b"x-b3-sampled": _SAMPLED,
    b"traceparent": _TP,
    b"tracestate": _TS,
    b"x-client-trace-id": _CLIENT_TRACE,
    b"x-envoy-force-trace": _FORCE_TRACE,
    b"user-agent": _UA,
    b"x-envoy-downstream-service-cluster": _DS_CLUSTER,
    b"x-forwarded-proto": _XFP,
}
_NSLOTS = 12


class _BadContext(Exception):
    """Envoy's ExtractorException: the request is not traced at all (NullSpan)."""


def _hex64(value: bytes) -> int:
    """StringUtil::atoull(s, 16): the whole string must be hex and fit in 64 bits."""
    if not value or len(value) > 16 or not _HEX.issuperset(value):
        raise _BadContext(value)
    return int(value, 16)


def _b3_single_sampled(b3: bytes) -> bool | None:
    """Sampling state from a ``b3`` header (extractSampled): None = no decision in the header."""
    n = len(b3)
    if n == 1:
        pos = 0
    elif n in (35, 52):
        pos = 34
    elif n in (51, 68):
        pos = 50
    else:
        return None
    c = b3[pos]
    if c == 0x30:  # '0'
        return False
    if c in (0x31, 0x64):  # '1', 'd'
        return True
    return None


def _parse_b3_single(b3: bytes) -> tuple[int, int, int, int] | None:
    """``{trace}-{span}[-{sampled}[-{parent}]]`` → (trace_high, trace_low, span, parent); None for a
    sampling-only header.  Raises _BadContext like extractSpanContextFromB3SingleFormat."""
    n = len(b3)
    if n == 0:
        raise _BadContext(b"empty")
    if n == 1:
        if b3 in (b"0", b"1", b"d"):
            return None
        raise _BadContext(b3)
    if n < 33 or n > 68:
        raise _BadContext(b3)
    high = 0
    if n > 32 and b3[32:33] == b"-":
        high = _hex64(b3[0:16])
        low = _hex64(b3[16:32])
        pos = 32
    else:
        low = _hex64(b3[0:16])
        pos = 16
    if b3[pos:pos + 1] != b"-":
        raise _BadContext(b3)
    pos += 1
    span = _hex64(b3[pos:pos + 16])
    pos += 16
    parent = 0
    if n > pos:
        if n == pos + 1 or b3[pos:pos + 1] != b"-":
            raise _BadContext(b3)
        pos += 1
        if n == pos + 1 or (n >= pos + 2 and b3[pos + 1:pos + 2] == b"-"):
            if b3[pos:pos + 1] not in (b"0", b"1", b"d"):
                raise _BadContext(b3)
            pos += 1
        else:
            raise _BadContext(b3)
        if n > pos:
            if n != pos + 17:
                raise _BadContext(b3)
            parent = _hex64(b3[pos + 1:])
    return high, low, span, parent


def _parse_traceparent(tp: bytes) -> tuple[int, int, bool] | None:
    """W3C ``00-<32 hex>-<16 hex>-<2 hex>`` → (trace128, parent span, sampled); None if invalid."""
    if len(tp) < 55:
        return None
    parts = tp.split(b"-")
    if len(parts) < 4:
        return None
    version, trace, span, flags = parts[0], parts[1], parts[2], parts[3]
    if (len(version) != 2 or len(trace) != 32 or len(span) != 16 or len(flags) != 2
            or not _HEX.issuperset(version + trace + span + flags)):
        return None
    if version.lower() == b"ff" or (version == b"00" and len(parts) != 4):
        return None
    t = int(trace, 16)
    s = int(span, 16)
    if t == 0 or s == 0:
        return None
    return t, s, bool(int(flags, 16) & 1)


class SpanSink(Protocol):
    """What a Tracer needs from an exporter (SpanExporter satisfies it)."""

    def export(self, span_record: "SpanRecord") -> None: ...


@dataclass(slots=True)
class SpanRecord:
    """A finished span, format-neutral; the exporter serializes it off the event loop."""

    trace_id: int            # 64 or 128 bits
    trace_id_128: bool       # render as 32 hex digits (else 16)
    span_id: int
    parent_id: int           # 0 = root
    name: str                # Zipkin span name (the request's host)
    operation: str           # Envoy's operation name ("egress <host>" / "ingress"), the OTLP span name
    kind: str                # "CLIENT" | "SERVER"
    start_us: int            # wall clock, µs since the epoch
    duration_us: int
    tags: dict[str, str]
    service_name: str
    local_address: str = ""
    trace_state: str = ""
    sampled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}" if self.trace_id_128 else f"{self.trace_id:016x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    @property
    def parent_id_hex(self) -> str:
        return f"{self.parent_id:016x}"

    def to_zipkin(self) -> dict[str, Any]:
        """Zipkin v2 JSON span as Envoy's JsonV2Serializer writes it (span_buffer.cc)."""
        endpoint: dict[str, Any] = {}
        if self.local_address:
            endpoint["ipv6" if ":" in self.local_address else "ipv4"] = self.local_address
            endpoint["port"] = 0
        if self.service_name:
            endpoint["serviceName"] = self.service_name
        out: dict[str, Any] = {"traceId": self.trace_id_hex}
        if self.parent_id:
            out["parentId"] = self.parent_id_hex
        out["id"] = self.span_id_hex
        out["kind"] = self.kind
        if self.name:
            out["name"] = self.name
        out["timestamp"] = self.start_us
        out["duration"] = self.duration_us
        out["localEndpoint"] = endpoint
        if self.tags:
            out["tags"] = dict(self.tags)
        # The closing annotation (cr for a client span, ss for a server span) is serialized as a
        # plain annotation, as Envoy does.
        out["annotations"] = [{"timestamp": self.start_us + self.duration_us,
                               "value": "cr" if self.kind == "CLIENT" else "ss"}]
        return out

    def to_otlp_span(self) -> dict[str, Any]:
        """OTLP/JSON ``Span`` (opentelemetry-proto trace.proto, JSON mapping: hex ids, int64 as strings)."""
        start_ns = self.start_us * 1000
        span: dict[str, Any] = {"traceId": f"{self.trace_id:032x}", "spanId": self.span_id_hex}
        if self.trace_state:
            span["traceState"] = self.trace_state
        if self.parent_id:
            span["parentSpanId"] = self.parent_id_hex
        span["name"] = self.operation
        span["kind"] = 3 if self.kind == "CLIENT" else 2  # SPAN_KIND_CLIENT / SPAN_KIND_SERVER
        span["startTimeUnixNano"] = str(start_ns)
        span["endTimeUnixNano"] = str(start_ns + self.duration_us * 1000)
        span["attributes"] = [{"key": k, "value": {"stringValue": v}} for k, v in self.tags.items()]
        if self.tags.get("error") == "true":
            span["status"] = {"code": 2}  # STATUS_CODE_ERROR
        return span


def _default_clock_us() -> int:
    return time.time_ns() // 1000


class Tracer:
    """Per-proxy tracer (one HCM ``tracing`` block).  Cheap to call per request."""

    def __init__(self, *, sampling: float, service_name: str, node_id: str, namespace: str,
                 exporter: SpanSink | None, rng: random.Random | None = None,
                 clock_us: Callable[[], int] | None = None,
                 propagation: Propagation = "b3",
                 kind: Literal["CLIENT", "SERVER"] = "CLIENT",
                 canonical_service: str = "unknown", canonical_revision: str = "latest",
                 mesh_id: str = "unknown", cluster_id: str = "unknown",
                 enable_istio_tags: bool = True, custom_tags: dict[str, str] | None = None,
                 local_address: str = "", max_path_tag_length: int = 256,
                 trace_id_128bit: bool = True, use_request_id_for_sampling: bool = True) -> None:
        """``sampling``: percent 0..100 (Envoy rounds ``sampling * 100`` to a /10000 fraction).

        ``service_name``: the span's local service = the Envoy node cluster (``<app>.<namespace>``).
        ``propagation``: ``"b3"`` = Zipkin ``USE_B3`` (Istio's default), ``"b3+w3c"`` = Zipkin
        ``USE_B3_WITH_W3C_PROPAGATION``, ``"w3c"`` = Envoy's OpenTelemetry tracer.
        ``clock_us``: wall clock in µs (timestamps and durations; inject for tests).
        """
        if propagation not in ("b3", "b3+w3c", "w3c"):
            raise ValueError(f"unknown propagation {propagation!r}")
        self.sampling = float(sampling)
        self._numerator = min(10000, max(0, int(self.sampling * 100 + 0.5)))
        self.service_name = service_name
        self.node_id = node_id
        self.namespace = namespace
        self.exporter = exporter
        self._rng = rng if rng is not None else random.Random()
        self._bits = self._rng.getrandbits
        self._clock = clock_us or _default_clock_us
        self.propagation: Propagation = propagation
        self._b3 = propagation != "w3c"
        self._w3c = propagation != "b3"
        self.kind = kind
        self.local_address = local_address
        self.max_path_tag_length = max_path_tag_length
        self.trace_id_128bit = trace_id_128bit
        self.use_request_id_for_sampling = use_request_id_for_sampling
        # Istio's custom tags (pilot tracing.go buildServiceTags) + user literals, sorted by name.
        tags: dict[str, str] = {}
        if enable_istio_tags:
            tags.update({
                "istio.canonical_revision": canonical_revision or "latest",
                "istio.canonical_service": canonical_service or "unknown",
                "istio.mesh_id": mesh_id or "unknown",
                "istio.namespace": namespace or "default",
                "istio.cluster_id": cluster_id or "unknown",
            })
        if custom_tags:
            tags.update(custom_tags)
        self.custom_tags: tuple[tuple[str, str], ...] = tuple(sorted((k, v) for k, v in tags.items() if k and v))

    # -- sampling -----------------------------------------------------------------------------

    def _decide(self, request_id: bytes | None, client_trace: bool, force_trace: bool) -> tuple[bool, bytes | None]:
        """Envoy's HCM decision → (traced, request id with the trace reason packed in)."""
        rid = request_id
        uuid_like = rid is not None and len(rid) == _UUID_LENGTH
        if uuid_like and rid[_TRACE_BYTE_POSITION] in _TRACED_BYTES:  # type: ignore[index]
            return True, rid
        mark = 0
        if client_trace:
            mark = _TRACE_CLIENT
        elif force_trace:
            mark = _TRACE_FORCED
        else:
            value = -1
            if rid is not None and self.use_request_id_for_sampling and len(rid) >= 8:
                head = rid[:8]
                if _HEX.issuperset(head):
                    value = int(head, 16) % 10000
            if value < 0:
                value = self._bits(32) % 10000
            if value < self._numerator:
                mark = _TRACE_SAMPLED
        if not mark:
            return False, rid
        if uuid_like:
            rid = rid[:_TRACE_BYTE_POSITION] + bytes((mark,)) + rid[_TRACE_BYTE_POSITION + 1:]  # type: ignore[index]
        return True, rid

    # -- per request --------------------------------------------------------------------------

    def start(self, headers: list[tuple[bytes, bytes]], *, method: str, authority: str, path: str,
              request_id: bytes | None, scheme: str = "http", protocol: str = "HTTP/1.1",
              peer_address: str = "") -> "Span":
        """Join the incoming trace (or start one) for this request; see the module docstring."""
        slots: list[bytes | None] = [None] * _NSLOTS
        scan = _SCAN
        passthrough: list[tuple[bytes, bytes]] | None = None
        for name, value in headers:
            idx = scan.get(name)
            if idx is None:
                continue
            if slots[idx] is None:
                slots[idx] = value
            if name in TRACE_HEADERS:
                if passthrough is None:
                    passthrough = []
                passthrough.append((name, value))

        traced, rid = self._decide(request_id, slots[_CLIENT_TRACE] is not None, slots[_FORCE_TRACE] is not None)
        span = Span.__new__(Span)
        span._tracer = self
        span._incoming = passthrough
        span.request_id = rid
        span.method = method
        span.authority = authority
        span.path = path
        span.scheme = scheme
        span.protocol = protocol
        span.peer_address = peer_address
        span._ua = slots[_UA]
        span._ds_cluster = slots[_DS_CLUSTER]
        span._xfp = slots[_XFP]
        span._client_trace_id = slots[_CLIENT_TRACE]
        span._finished = False
        span.start_us = self._clock()
        span.trace_state = b""
        span.b3_single = False
        span.null = False
        span.parent_id = 0
        try:
            if self._b3:
                self._join_zipkin(span, slots, traced)
            else:
                self._join_otel(span, slots, traced)
        except _BadContext:
            span.null = True
            span.sampled = False
            span.trace_id = span.span_id = 0
            span.trace_id_128 = False
        return span

    def _join_zipkin(self, span: "Span", slots: list[bytes | None], traced: bool) -> None:
        b3 = slots[_B3]
        tp_ctx = None
        sampled: bool | None = None
        if b3 is not None:
            sampled = _b3_single_sampled(b3)
        elif slots[_SAMPLED] is not None:
            sampled = slots[_SAMPLED] in (b"1", b"true")
        elif self._w3c and slots[_TP] is not None:
            # Envoy 1.40 takes the traceparent flag even when x-b3-traceid/x-b3-spanid carry the context.
            tp_ctx = _parse_traceparent(slots[_TP])  # type: ignore[arg-type]
            if tp_ctx is not None:
                sampled = tp_ctx[2]
        span.sampled = traced if sampled is None else sampled

        ctx: tuple[int, int, int, int] | None = None  # (high, low, span, parent)
        trace_128 = self.trace_id_128bit
        if b3 is not None:
            span.b3_single = True
            ctx = _parse_b3_single(b3)
            if ctx is not None:
                trace_128 = ctx[0] != 0 or (len(b3) > 32 and b3[32:33] == b"-")
        elif slots[_TID] is not None and slots[_SID] is not None:
            tid = slots[_TID]
            if len(tid) == 32:  # type: ignore[arg-type]
                high, low = _hex64(tid[:16]), _hex64(tid[16:])  # type: ignore[index]
                trace_128 = True
            else:
                high, low = 0, _hex64(tid)  # type: ignore[arg-type]
                trace_128 = False
            sid = _hex64(slots[_SID])  # type: ignore[arg-type]
            pid = slots[_PID]
            ctx = (high, low, sid, _hex64(pid) if pid else 0)
        elif self._w3c and slots[_TP] is not None:
            if tp_ctx is None:
                tp_ctx = _parse_traceparent(slots[_TP])  # type: ignore[arg-type]
            if tp_ctx is not None:
                ctx = (tp_ctx[0] >> 64, tp_ctx[0] & _MASK64, tp_ctx[1], 0)
                trace_128 = True

        bits = self._bits
        span_id = bits(64)
        if ctx is None:  # root: Envoy reuses the span id as the trace id's low half
            span.trace_id = ((bits(64) << 64) | span_id) if trace_128 else span_id
            span.parent_id = 0
        else:
            span.trace_id = (ctx[0] << 64) | ctx[1]
            span.parent_id = ctx[2]  # shared_span_context=false: the incoming span is our parent
        span.trace_id_128 = trace_128
        span.span_id = span_id

    def _join_otel(self, span: "Span", slots: list[bytes | None], traced: bool) -> None:
        tp = slots[_TP]
        span.sampled = traced  # Envoy's OTel tracer (no sampler) follows the HCM decision
        bits = self._bits
        if tp is not None:
            ctx = _parse_traceparent(tp)
            if ctx is None:
                raise _BadContext(tp)
            span.trace_id = ctx[0]
            span.parent_id = ctx[1]
            span.trace_state = slots[_TS] or b""
        else:
            span.trace_id = (bits(64) << 64) | bits(64)
            span.parent_id = 0
        span.trace_id_128 = True
        span.span_id = bits(64)


class Span:
    """This proxy's span for one request (CLIENT for sidecar outbound / gateway)."""

    __slots__ = ("_tracer", "_incoming", "request_id", "method", "authority", "path", "scheme", "protocol",
                 "peer_address", "_ua", "_ds_cluster", "_xfp", "_client_trace_id", "_finished", "start_us", "trace_state",
                 "b3_single", "null", "sampled", "trace_id", "trace_id_128", "span_id", "parent_id")

    #: Header names to drop from the incoming request before appending :meth:`outgoing_headers`.
    TRACE_HEADERS: frozenset[bytes] = TRACE_HEADERS

    sampled: bool
    #: The x-request-id as Envoy forwards it (trace reason packed at index 14 when it changed the
    #: decision); None if the request had none.
    request_id: bytes | None

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}" if self.trace_id_128 else f"{self.trace_id:016x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    def outgoing_headers(self) -> list[tuple[bytes, bytes]]:
        """All TRACE_HEADERS the upstream request carries: Envoy's injected ones, in Envoy's order,
        preceded by the incoming ones Envoy leaves alone."""
        incoming = self._incoming
        if self.null:
            return list(incoming) if incoming else []
        tracer = self._tracer
        sampled = b"1" if self.sampled else b"0"
        span_hex = b"%016x" % self.span_id
        out: list[tuple[bytes, bytes]] = []
        if tracer._b3:
            if incoming:
                keep = (b"traceparent", b"tracestate") if not tracer._w3c else (b"tracestate",)
                if self.b3_single:
                    keep = keep + (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled")
                out.extend(h for h in incoming if h[0] in keep)
            trace_hex = (b"%032x" if self.trace_id_128 else b"%016x") % self.trace_id
            if self.b3_single:
                value = trace_hex + b"-" + span_hex + b"-" + sampled
                if self.parent_id:
                    value += b"-%016x" % self.parent_id
                out.append((b"b3", value))
            else:
                out.append((b"x-b3-traceid", trace_hex))
                out.append((b"x-b3-spanid", span_hex))
                if self.parent_id:
                    out.append((b"x-b3-parentspanid", b"%016x" % self.parent_id))
                out.append((b"x-b3-sampled", sampled))
            if tracer._w3c:
                out.append((b"traceparent", b"00-%032x-%s-0%s" % (self.trace_id, span_hex, sampled)))
        else:
            if incoming:
                out.extend(h for h in incoming if h[0] not in (b"traceparent", b"tracestate"))
            out.append((b"traceparent", b"00-%032x-%s-0%s" % (self.trace_id, span_hex, sampled)))
            out.append((b"tracestate", self.trace_state))
        return out

    def finish(self, *, status: int, response_flags: str, upstream_cluster: str, upstream_host: str,
               request_size: int, response_size: int, upstream_cluster_name: str | None = None) -> None:
        """Record the span (if sampled) into the exporter.  Never raises, never blocks.

        ``status`` 0 = no response sent (tagged ``http.status_code: "0"`` and ``error``).
        ``upstream_cluster`` empty = no upstream host was selected (no upstream tags).
        ``upstream_host`` is accepted for the transport's convenience; Envoy 1.40's downstream span
        does not carry it.
        """
        try:
            if self._finished or self.null or not self.sampled:
                self._finished = True
                return
            self._finished = True
            tracer = self._tracer
            exporter = tracer.exporter
            if exporter is None:
                return
            exporter.export(self._record(status, response_flags, upstream_cluster, request_size, response_size,
                                         upstream_cluster_name))
        except Exception:  # noqa: BLE001 - tracing must never break a request
            pass

    def _record(self, status: int, response_flags: str, upstream_cluster: str, request_size: int,
                response_size: int, upstream_cluster_name: str | None) -> SpanRecord:
        tracer = self._tracer
        end = tracer._clock()
        tags: dict[str, str] = dict(tracer.custom_tags)
        if self.request_id:
            tags["guid:x-request-id"] = self.request_id.decode("latin-1")
        scheme = self._xfp.decode("latin-1") if self._xfp else self.scheme
        path = self.path[: tracer.max_path_tag_length] if tracer.max_path_tag_length else self.path
        tags["http.url"] = f"{scheme}://{self.authority}{path}"
        tags["http.method"] = self.method
        tags["downstream_cluster"] = self._ds_cluster.decode("latin-1") if self._ds_cluster else "-"
        tags["user_agent"] = self._ua.decode("latin-1") if self._ua else "-"
        tags["http.protocol"] = self.protocol or "-"
        if self.peer_address:
            tags["peer.address"] = self.peer_address
        if self._client_trace_id:
            tags["guid:x-client-trace-id"] = self._client_trace_id.decode("latin-1")
        tags["node_id"] = tracer.node_id
        tags["component"] = "proxy"
        tags["response_size"] = str(response_size)
        tags["request_size"] = str(request_size)
        tags["http.status_code"] = str(status)
        tags["response_flags"] = response_flags or "-"
        if upstream_cluster:
            tags["upstream_cluster"] = upstream_cluster
            tags["upstream_cluster.name"] = upstream_cluster_name or upstream_cluster
        if status == 0 or 500 <= status <= 599:
            tags["error"] = "true"
        tags = {k: v for k, v in tags.items() if v}  # Zipkin's setTag ignores empty values
        operation = f"egress {self.authority}" if tracer.kind == "CLIENT" else "ingress"
        return SpanRecord(
            trace_id=self.trace_id, trace_id_128=self.trace_id_128, span_id=self.span_id,
            parent_id=self.parent_id, name=self.authority, operation=operation, kind=tracer.kind,
            start_us=self.start_us, duration_us=max(0, end - self.start_us), tags=tags,
            service_name=tracer.service_name, local_address=tracer.local_address,
            trace_state=self.trace_state.decode("latin-1") if self.trace_state else "",
            sampled=True,
        )
