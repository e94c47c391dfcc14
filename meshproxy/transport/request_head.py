"""The upstream request head: which client headers go upstream, in which order, with what added.

Header order and edits are Envoy's under Istio (checked byte for byte by
tests/integration/test_differential_envoy.py): ``host`` first, the client's
headers in their order (hop-by-hop ones dropped, ``te`` cut to ``trailers``,
internal ``x-envoy-*`` control headers stripped), then ``x-forwarded-proto``,
(gateway) ``x-envoy-external-address``, ``x-request-id``, trace headers,
``x-envoy-attempt-count``, the route's header edits, and ``transfer-encoding``
last.  The head is returned in two parts around the attempt count, which
changes per retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.headers import HOP_BY_HOP
from ..core.request import RequestContext
from ..core.snapshot import Route, WeightedDestination
from ..protocols.events import Headers, RequestHead

if TYPE_CHECKING:  # pragma: no cover
    from .stream import ProxyStream

#: Request headers Envoy strips from requests it considers external -- which,
#: with Istio's config on Envoy >= 1.36, is every request.
_INTERNAL_ONLY = frozenset(
    {
        b"x-envoy-retry-on",
        b"x-envoy-retry-grpc-on",
        b"x-envoy-max-retries",
        b"x-envoy-upstream-alt-stat-name",
        b"x-envoy-upstream-rq-timeout-ms",
        b"x-envoy-upstream-rq-per-try-timeout-ms",
        b"x-envoy-upstream-rq-timeout-alt-response",
        b"x-envoy-hedge-on-per-try-timeout",
        b"x-envoy-retriable-status-codes",
        b"x-envoy-retriable-header-names",
        b"x-envoy-expected-rq-timeout-ms",
        b"x-envoy-internal",
        b"x-envoy-attempt-count",
    }
)
_INTERNAL_ONLY = _INTERNAL_ONLY | {b"x-forwarded-client-cert"}  # SANITIZE, Envoy's default on a sidecar
_EDGE_STRIP = _INTERNAL_ONLY | {b"x-envoy-decorator-operation", b"x-envoy-downstream-service-cluster", b"x-envoy-downstream-service-node"}
#: Set by the proxy itself when it rewrites; a client's values are dropped.
_ORIGINAL_HEADERS = frozenset({b"x-envoy-original-path", b"x-envoy-original-host"})
#: Request headers the one-pass sidecar serializer must look at; all others are copied as they are.
_PLAIN_SPECIAL = HOP_BY_HOP | _INTERNAL_ONLY | _ORIGINAL_HEADERS | {b"host", b"x-request-id", b"x-forwarded-proto"}
_ATTEMPT_SLOT = (b"x-envoy-attempt-count", b"")


#: Methods whose body-less requests Envoy forwards without adding ``content-length: 0``
#: (measured on Envoy 1.40: POST, PUT, PATCH, OPTIONS and WebDAV methods get it).
_NO_LENGTH_METHODS = frozenset({"GET", "HEAD", "DELETE", "TRACE", "CONNECT"})


def needs_zero_length(head: "RequestHead") -> bool:
    """Envoy's HTTP/1 encoder adds ``content-length: 0`` (last) to a request with no body and
    no framing whose method may carry one (RFC 9110 §8.6: a user agent SHOULD send it)."""
    return head.content_length is None and not head.upgrade and head.method not in _NO_LENGTH_METHODS


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case), or None."""
    for k, v in headers:
        if k == name:
            return v
    return None


def build_upstream_head(stream: "ProxyStream", req: RequestContext, route: Route, dest: WeightedDestination) -> tuple[bytes, bytes]:
    """The upstream request head, split where ``x-envoy-attempt-count`` goes.

    Header order is Envoy's: ``host`` first, the client's headers in their
    order (hop-by-hop ones dropped, ``te`` cut to ``trailers``), then
    ``x-forwarded-proto``, (gateway) ``x-envoy-external-address``,
    ``x-request-id``, ``x-envoy-attempt-count``, then the route's header
    edits, and ``transfer-encoding`` last.
    """
    state = stream.state
    head = stream.head
    edge = state.snapshot.proxy.edge
    tracer = state.tracer
    if tracer is None and not edge and route.plain and dest.request_headers is None:
        fast = plain_upstream_head(stream, req)
        if fast is not None:
            return fast
    span = None
    trace_drop: frozenset[bytes] = frozenset()
    rid: bytes | None = None
    if tracer is not None:
        # The request id decides sampling (Envoy packs its decision into it), so settle it first.
        incoming = header_value(head.headers, b"x-request-id")
        rid = incoming if incoming and not edge else stream._new_request_id()
        span = stream.span = tracer.start(head.headers, method=head.method, authority=req.authority,
                                        path=req.path_and_query, request_id=rid,
                                        peer_address=stream.down.remote_address)
        if span.request_id is not None and span.request_id != incoming:
            rid = stream.request_id = span.request_id
        trace_drop = span.TRACE_HEADERS
    path = req.path
    original: bytes | None = None
    if route.prefix_rewrite is not None or route.path_rewrite is not None or route.regex_rewrite is not None:
        new_path = route.rewrite_path(path)
        if new_path != path:
            original = req.path_and_query.encode("latin-1")
        path = new_path
    target = f"{path}?{req.query}" if req.query else path
    authority = route.host_rewrite or req.authority
    headers: Headers = [(b"host", authority.encode("latin-1"))]
    append = headers.append
    drop: frozenset[bytes] = HOP_BY_HOP
    strip = _EDGE_STRIP if edge else _INTERNAL_ONLY
    has_request_id = False
    has_proto = False
    has_xff = False
    has_external = False
    peer = stream.down.peer_ip
    for k, v in head.headers:
        if k in drop:
            if k == b"connection":
                tokens = frozenset(t.strip().lower() for t in v.split(b",") if t.strip())
                drop = HOP_BY_HOP | tokens
                headers = [h for h in headers if h[0] not in tokens or h[0] == b"host"]
                append = headers.append
            elif k == b"te" and b"trailers" in v.lower():
                append((b"te", b"trailers"))
            continue
        if k in strip or k == b"host" or k in trace_drop:
            continue
        if k == b"x-request-id":
            if has_request_id:
                continue
            has_request_id = True
            if rid is not None:
                v = rid
            elif edge or not v:
                # The edge does not trust a client's id; an empty one is replaced anywhere.
                v = stream._new_request_id()
        elif k == b"x-forwarded-proto":
            has_proto = True
            if edge:
                v = b"http"
        elif k == b"x-forwarded-for" and edge:
            has_xff = True
            v = v + b"," + state.xff_address(peer)
        elif k == b"x-envoy-external-address" and edge:
            if has_external:
                continue
            has_external = True
            v = peer.encode()
        elif k in _ORIGINAL_HEADERS:
            continue
        append((k, v))
    if edge and not has_xff:
        append((b"x-forwarded-for", state.xff_address(peer)))
    if not has_proto:
        append((b"x-forwarded-proto", b"http"))
    if edge and not has_external:
        append((b"x-envoy-external-address", peer.encode()))
    if not has_request_id:
        append((b"x-request-id", rid if rid is not None else stream._new_request_id()))
    if span is not None:
        headers.extend(span.outgoing_headers())  # type: ignore[attr-defined]
    append(_ATTEMPT_SLOT)
    if route.host_rewrite:
        append((b"x-envoy-original-host", req.authority.encode("latin-1")))
    if original is not None:
        append((b"x-envoy-original-path", original))
    if route.request_headers is not None:
        headers = route.request_headers.apply(headers)
    if dest.request_headers is not None:
        headers = dest.request_headers.apply(headers)
    if head.chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    elif needs_zero_length(head):
        headers.append((b"content-length", b"0"))
    at = next((i for i, h in enumerate(headers) if h is _ATTEMPT_SLOT), len(headers))
    line = b"%s %s HTTP/1.1\r\n" % (head.method.encode(), target.encode("latin-1"))
    prefix = line + b"".join([k + b": " + v + b"\r\n" for k, v in headers[:at]])
    suffix = b"".join([k + b": " + v + b"\r\n" for k, v in headers[at + 1 :]]) + b"\r\n"
    return prefix, suffix

def plain_upstream_head(stream: "ProxyStream", req: RequestContext) -> tuple[bytes, bytes] | None:
    """The common sidecar case, serialized in one pass: no rewrite, no header edits.

    Returns None when the request names hop-by-hop headers in ``Connection``
    (the general path handles that).
    """
    head = stream.head
    target = req.path_and_query if req.query else req.path
    parts = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (head.method.encode(), target.encode("latin-1"), req.authority.encode("latin-1"))]
    extend = parts.extend
    special = _PLAIN_SPECIAL
    has_request_id = has_proto = False
    for k, v in head.headers:
        if k in special:
            if k == b"x-request-id":
                if has_request_id:
                    continue
                has_request_id = True
                if not v:
                    v = stream._new_request_id()
            elif k == b"x-forwarded-proto":
                has_proto = True
            elif k == b"te":
                if b"trailers" in v.lower():
                    parts.append(b"te: trailers\r\n")
                continue
            elif k == b"connection":
                return None
            else:
                continue
        extend((k, b": ", v, b"\r\n"))
    if not has_proto:
        parts.append(b"x-forwarded-proto: http\r\n")
    if not has_request_id:
        extend((b"x-request-id: ", stream._new_request_id(), b"\r\n"))
    if head.chunked:
        return b"".join(parts), b"transfer-encoding: chunked\r\n\r\n"
    return b"".join(parts), (b"content-length: 0\r\n\r\n" if needs_zero_length(head) else b"\r\n")
