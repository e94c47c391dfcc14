"""One proxied request/response exchange: decode (request path) and encode (response path).

A ``ProxyStream`` is created when a request head arrives.  It asks the core
for a routing decision, answers locally when the core says so, and otherwise
picks an endpoint, takes or opens an upstream connection and streams the body
both ways with backpressure: request bytes that arrive before the upstream is
connected wait in a small buffer (reading from the client pauses past 64 KiB);
response bytes go straight to the client, and upstream reading pauses while
the client's write buffer is over its high-water mark.  Nothing is buffered
whole.

Connect failures are retried per the route's retry policy (Istio's default:
2 retries on connect-failure) on another endpoint when there is one; nothing
has been sent upstream at that point, so the buffered body is intact.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..core import local_reply
from ..core.balancer import compute_hash
from ..core.endpoints import Endpoint
from ..core.headers import HOP_BY_HOP
from ..core.ids import new_request_id
from ..core.local_reply import LocalReply, status_line
from ..core.request import BadTarget, RequestContext, split_target
from ..core.retry import backoff_seconds, retriable_response, retries_connect_failure, retries_reset
from ..core.router import decide, redirect_location
from ..core.snapshot import DIRECT_RESPONSE, ORIGINAL_DST, REDIRECT, Cluster, Route, WeightedDestination
from ..protocols.events import Headers, ProtocolError, RequestHead, ResponseHead
from .upstream import HIGH_WATER, UpstreamConnection

if TYPE_CHECKING:  # pragma: no cover
    from .downstream import DownstreamConnection

_RESPONSE_SKIP = HOP_BY_HOP | {b"server", b"x-envoy-upstream-service-time"}
_NO_BODY_STATUS = (204, 304)


def _connect_failure_reason(exc: BaseException) -> str:
    """Envoy 1.40's reset reason for a failed connect (it no longer appends a transport reason)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connection timeout"
    return "remote connection failure"


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
#: Response headers the proxy replaces or drops.
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"server", b"date", b"x-envoy-upstream-service-time"}
_ATTEMPT_SLOT = (b"x-envoy-attempt-count", b"")


def _host_header(headers: Headers) -> str:
    """The Host value; several Host lines are joined with ``,`` as Envoy joins them (so no vhost matches)."""
    found: bytes | None = None
    for k, v in headers:
        if k == b"host":
            found = v if found is None else found + b"," + v
    return found.decode("latin-1") if found is not None else ""


class ProxyStream:
    __slots__ = (
        "down",
        "state",
        "head",
        "req",
        "route",
        "dest",
        "cluster",
        "endpoint",
        "upstream",
        "upstream_head",
        "pending_body",
        "pending_size",
        "request_ended",
        "request_trailers",
        "request_sent",
        "response_started",
        "response_chunked",
        "response_no_body",
        "keep_alive",
        "t_start",
        "t_upstream",
        "attempts",
        "tried",
        "done",
        "set_cookie",
        "hash_key",
        "flags",
        "details",
        "status",
        "retry_handle",
        "request_body_bytes",
        "response_body_bytes",
        "upstream_keep_alive",
        "pipelined",
        "cork",
    )

    def __init__(self, down: "DownstreamConnection", head: RequestHead) -> None:
        self.down = down
        self.state = down.state
        self.head = head
        self.req: RequestContext | None = None
        self.route: Route | None = None
        self.dest: WeightedDestination | None = None
        self.cluster: Cluster | None = None
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.upstream_head: tuple[bytes, bytes] = (b"", b"")
        self.pending_body: list[bytes] = []
        self.pending_size = 0
        self.request_ended = False
        self.request_trailers: Headers | None = None
        self.request_sent = False
        self.response_started = False
        self.response_chunked = False
        self.response_no_body = head.method == "HEAD"
        self.keep_alive = head.keep_alive
        self.t_start = 0.0
        self.t_upstream = 0.0
        self.attempts = 0
        self.tried: list[Endpoint] = []
        self.done = False
        self.set_cookie: bytes | None = None
        self.hash_key: int | None = None
        self.flags = "-"
        self.details = ""
        self.status = 0
        self.retry_handle: asyncio.TimerHandle | None = None
        self.request_body_bytes = 0
        self.response_body_bytes = 0
        self.upstream_keep_alive = True
        self.pipelined = False
        #: While the upstream connection feeds its codec, response bytes collect here and go
        #: out in one write: a head and a small body cost one syscall, not two.
        self.cork: list[bytes] | None = None

    # ------------------------------------------------------------------ decode path
    def preload(self, chunks: list[bytes], ended: bool, trailers: Headers | None) -> None:
        """Hand over what already arrived of a pipelined request before ``start``."""
        self.pending_body = chunks
        self.pending_size = sum(len(c) for c in chunks)
        self.request_body_bytes = self.pending_size
        self.request_ended = ended
        self.request_trailers = trailers
        #: Envoy closes the connection after a local reply to a request that waited behind another.
        self.pipelined = True

    def start(self) -> None:
        state = self.state
        head = self.head
        self.t_start = state.loop.time()
        try:
            abs_authority, path, query = split_target(head.target)
        except BadTarget:
            self.local_reply(local_reply.LocalReply(400, b"Bad Request", "http1.invalid_url", "DPE"), close=True)
            return
        authority = abs_authority
        if authority is None:
            authority = _host_header(head.headers)
        req = RequestContext(head.method, path, query, authority, "http", head.headers, self.down.peer_ip)
        self.req = req
        snapshot = state.snapshot
        listener = self.down.listener
        if listener.route_table == "*":
            table = snapshot.table_for_port(req.port or 80)
        else:
            table = snapshot.route_tables.get(listener.route_table)
        decision = decide(table, req, state.randrange)
        route = decision.route
        self.route = route
        if decision.reply is not None:
            self.dest = decision.destination
            self.local_reply(decision.reply, route=route)
            return
        assert route is not None
        if route.action == REDIRECT:
            location = redirect_location(route.redirect, route, req, listener.port)  # type: ignore[arg-type]
            extra = [(b"location", location.encode("latin-1"))]
            self.local_reply(LocalReply(route.redirect.code, b"", "direct_response", "-"), route=route, extra=extra)  # type: ignore[union-attr]
            return
        if route.action == DIRECT_RESPONSE:
            self.local_reply(LocalReply(route.direct_status, route.direct_body, "direct_response", "-"), route=route)
            return
        dest = decision.destination
        assert dest is not None and dest.cluster is not None
        self.dest = dest
        self.cluster = dest.cluster
        hash_policy = dest.cluster.lb.hash_policy
        if hash_policy is not None:
            self.hash_key, self.set_cookie = compute_hash(
                hash_policy, header=req.header, query=req.query, source_ip=req.source_ip
            )
        self.upstream_head = self._build_upstream_head(req, route, dest)
        self._attempt()

    def _build_upstream_head(self, req: RequestContext, route: Route, dest: WeightedDestination) -> tuple[bytes, bytes]:
        """The upstream request head, split where ``x-envoy-attempt-count`` goes.

        Header order is Envoy's: ``host`` first, the client's headers in their
        order (hop-by-hop ones dropped, ``te`` cut to ``trailers``), then
        ``x-forwarded-proto``, (gateway) ``x-envoy-external-address``,
        ``x-request-id``, ``x-envoy-attempt-count``, then the route's header
        edits, and ``transfer-encoding`` last.
        """
        state = self.state
        head = self.head
        edge = state.snapshot.proxy.edge
        if not edge and route.plain and dest.request_headers is None:
            fast = self._plain_upstream_head(req)
            if fast is not None:
                return fast
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
        peer = self.down.peer_ip
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
            if k in strip or k == b"host":
                continue
            if k == b"x-request-id":
                if has_request_id:
                    continue
                has_request_id = True
                if edge or not v:
                    # The edge does not trust a client's id; an empty one is replaced anywhere.
                    v = new_request_id()
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
            append((b"x-request-id", new_request_id()))
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
        at = next((i for i, h in enumerate(headers) if h is _ATTEMPT_SLOT), len(headers))
        line = b"%s %s HTTP/1.1\r\n" % (head.method.encode(), target.encode("latin-1"))
        prefix = line + b"".join([k + b": " + v + b"\r\n" for k, v in headers[:at]])
        suffix = b"".join([k + b": " + v + b"\r\n" for k, v in headers[at + 1 :]]) + b"\r\n"
        return prefix, suffix

    def _plain_upstream_head(self, req: RequestContext) -> tuple[bytes, bytes] | None:
        """The common sidecar case, serialized in one pass: no rewrite, no header edits.

        Returns None when the request names hop-by-hop headers in ``Connection``
        (the general path handles that).
        """
        head = self.head
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
                        v = new_request_id()
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
            extend((b"x-request-id: ", new_request_id(), b"\r\n"))
        return b"".join(parts), (b"transfer-encoding: chunked\r\n\r\n" if head.chunked else b"\r\n")

    def _attempt(self) -> None:
        """Pick an endpoint and get a connection to it (pooled or new)."""
        cluster = self.cluster
        assert cluster is not None and self.req is not None
        self.attempts += 1
        if cluster.kind == ORIGINAL_DST or cluster.balancer.passthrough:
            # PassthroughCluster, a NONE-resolution ServiceEntry or a PASSTHROUGH load balancer:
            # connect where the client meant to go (in explicit mode, the Host's host:port).
            endpoint = self.state.passthrough_endpoint(self.req.host, self.req.port or 80)
        else:
            endpoint = cluster.balancer.choose(self.hash_key, self.tried or None)
            if endpoint is None:
                self.local_reply(local_reply.NO_HEALTHY_UPSTREAM)
                return
        self.endpoint = endpoint
        conn = self.state.pool.take(endpoint.key)
        if conn is not None:
            self._attach(conn)
            return
        self.state.loop.create_task(self._connect(endpoint, cluster))

    async def _connect(self, endpoint: Endpoint, cluster: Cluster) -> None:
        try:
            conn = await self.state.pool.connect(endpoint.address, endpoint.port, endpoint.key, cluster.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._connect_failed(endpoint, exc)
            return
        except asyncio.CancelledError:
            raise
        if self.done:
            self.state.pool.put(conn)
            return
        self._attach(conn)

    def _connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        if self.done:
            return
        self.tried.append(endpoint)
        route = self.route
        assert route is not None
        reason = _connect_failure_reason(exc)
        policy = route.retry
        retries_done = self.attempts - 1
        if retries_connect_failure(policy) and retries_done < policy.num_retries:
            delay = backoff_seconds(policy, retries_done + 1, self.state.randrange)
            self.retry_handle = self.state.loop.call_later(delay, self._retry)
            return
        retried = self.attempts > 1
        flags = "URX,UF" if retried else "UF"
        self.local_reply(local_reply.upstream_failure(reason, retried=retried, flags=flags, details="upstream_reset_before_response_started{remote_connection_failure}"))

    def _retry_after_failure(self, conn: UpstreamConnection | None) -> None:
        """Drop the current attempt's connection and schedule the next attempt."""
        if conn is not None:
            self._release_upstream(conn, reusable=False)
        if self.endpoint is not None:
            self.tried.append(self.endpoint)
        route = self.route
        assert route is not None
        delay = backoff_seconds(route.retry, self.attempts, self.state.randrange)
        self.retry_handle = self.state.loop.call_later(delay, self._retry)

    def _retry(self) -> None:
        self.retry_handle = None
        if not self.done:
            self._attempt()

    def _attach(self, conn: UpstreamConnection) -> None:
        conn.stream = self
        conn.requests += 1
        self.upstream = conn
        endpoint = self.endpoint
        if endpoint is not None:
            endpoint.active_requests += 1
        conn.codec.expect(self.head.method)
        transport = conn.transport
        assert transport is not None
        self.t_upstream = self.state.loop.time()
        prefix, suffix = self.upstream_head
        attempt = b"%sx-envoy-attempt-count: %d\r\n%s" % (prefix, self.attempts, suffix)
        pending = self.pending_body
        chunked = self.head.chunked
        if pending:
            if chunked:
                parts = [attempt]
                for chunk in pending:
                    parts.append(b"%x\r\n" % len(chunk))
                    parts.append(chunk)
                    parts.append(b"\r\n")
                transport.writelines(parts)
            else:
                transport.writelines([attempt, *pending])
            self.pending_body = []
            self.pending_size = 0
            self.down.resume_reading_for(self)
        else:
            transport.write(attempt)
        if self.request_ended:
            self._finish_request(transport)

    def request_data(self, data: bytes) -> None:
        self.request_body_bytes += len(data)
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            if self.head.chunked:
                conn.transport.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
            else:
                conn.transport.write(data)
            return
        if self.done:
            return
        self.pending_body.append(data)
        self.pending_size += len(data)
        if self.pending_size > HIGH_WATER:
            self.down.pause_reading_for(self)

    def request_end(self, trailers: Headers | None) -> None:
        self.request_ended = True
        self.request_trailers = trailers
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            self._finish_request(conn.transport)

    def _finish_request(self, transport: asyncio.Transport) -> None:
        if self.request_sent:
            return
        self.request_sent = True
        if self.head.chunked:
            trailers = self.request_trailers
            if trailers:
                transport.write(b"0\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in trailers) + b"\r\n")
            else:
                transport.write(b"0\r\n\r\n")

    # ------------------------------------------------------------------ encode path
    def on_response_head(self, rh: ResponseHead) -> None:
        status = rh.status
        down = self.down
        if status < 200:
            if status == 100 and not self.response_started:
                down.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        route = self.route
        if (
            route is not None
            and route.retry.num_retries > 0
            and self.attempts <= route.retry.num_retries
            and not self.head.has_body
            and retriable_response(route.retry, status, rh.get(b"grpc-status"))
            and self.upstream is not None
        ):
            # Discard this answer (and its connection) and try again, as Envoy's router does.
            self._retry_after_failure(self.upstream)
            return
        self.status = status
        self.response_started = True
        self.upstream_keep_alive = rh.keep_alive
        state = self.state
        elapsed_ms = int((state.loop.time() - self.t_upstream) * 1000)
        no_body = self.response_no_body or status in _NO_BODY_STATUS
        server = state.snapshot.proxy.server_header
        headers = rh.headers
        dest = self.dest
        edits = (route is not None and route.response_headers is not None) or (dest is not None and dest.response_headers is not None)
        parts = [status_line(status)]
        extend = parts.extend
        has_server = has_date = False
        tail: Headers = []
        for k, v in headers:
            if k in _RESPONSE_SPECIAL:
                if k == b"server":
                    # Envoy overwrites the upstream's server header where it stands.
                    v = server
                    has_server = True
                elif k == b"date":
                    has_date = True
                else:
                    continue
            if edits:
                tail.append((k, v))
            else:
                extend((k, b": ", v, b"\r\n"))
        if edits:
            tail.append((b"x-envoy-upstream-service-time", b"%d" % elapsed_ms))
            if route is not None and route.response_headers is not None:
                tail = route.response_headers.apply(tail)
            if dest is not None and dest.response_headers is not None:
                tail = dest.response_headers.apply(tail)
            for k, v in tail:
                extend((k, b": ", v, b"\r\n"))
        else:
            parts.append(b"x-envoy-upstream-service-time: %d\r\n" % elapsed_ms)
        if self.set_cookie is not None:
            extend((b"set-cookie: ", self.set_cookie, b"\r\n"))
        if not no_body and rh.content_length is None:
            if self.head.http_version == "1.1":
                self.response_chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not has_date:
            extend((b"date: ", state.date(), b"\r\n"))
        if not has_server:
            extend((b"server: ", server, b"\r\n"))
        if not self.keep_alive or down.draining:
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        cork = self.cork
        if cork is not None:
            cork.append(head)
        else:
            down.write(head)

    def on_response_data(self, data: bytes) -> None:
        if self.response_no_body or self.done:
            return
        self.response_body_bytes += len(data)
        cork = self.cork
        if cork is None:
            cork = self.cork = []
            try:
                self._body_piece(cork, data)
            finally:
                self.uncork()
        else:
            self._body_piece(cork, data)

    def _body_piece(self, out: list[bytes], data: bytes) -> None:
        if self.response_chunked:
            out.append(b"%x\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        else:
            out.append(data)

    def uncork(self) -> None:
        """Write what collected during one upstream read (see ``cork``)."""
        cork = self.cork
        self.cork = None
        if cork:
            if len(cork) == 1:
                self.down.write(cork[0])
            else:
                self.down.writelines(cork)

    def on_response_end(self, conn: UpstreamConnection, trailers: Headers | None) -> None:
        if self.response_chunked:
            end = (b"0\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in trailers) + b"\r\n") if trailers else b"0\r\n\r\n"
            if self.cork is not None:
                self.cork.append(end)
            else:
                self.down.write(end)
        self._release_upstream(conn, reusable=self.request_sent and self.upstream_keep_alive)
        self._complete()

    def _detach(self, conn: UpstreamConnection) -> None:
        """Stop counting ``conn``'s request as active on its endpoint."""
        if self.upstream is conn:
            self.upstream = None
            endpoint = self.endpoint
            if endpoint is not None:
                endpoint.active_requests -= 1

    def _release_upstream(self, conn: UpstreamConnection, reusable: bool) -> None:
        self._detach(conn)
        conn.stream = None
        if reusable and not conn.closed:
            self.state.pool.put(conn)
        else:
            conn.close()

    def upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        """The upstream connection closed under us."""
        self._upstream_failed(conn, "upstream_reset_before_response_started{connection_termination}", 503)

    def upstream_protocol_error(self, conn: UpstreamConnection, error: ProtocolError) -> None:
        """The upstream sent something unparseable, or closed mid-response."""
        self._upstream_failed(conn, error.details, error.status)

    def _upstream_failed(self, conn: UpstreamConnection, details: str, status: int) -> None:
        """Envoy's answer to a reset or a protocol error: 503 (UC) or 502 (UPE) before the
        response started -- after a retry when the policy allows -- and a cut connection after."""
        self._detach(conn)
        if self.done:
            return
        termination = "connection_termination" in details
        if self.response_started:
            # Mid-response: the client cannot be told anything but a cut connection.
            self.flags = "UC" if termination else "UPE"
            self.down.abort()
            self._complete(aborted=True)
            return
        if termination and self._may_retry_reset():
            self._retry_after_failure(None)
            return
        if termination:
            reply = local_reply.upstream_failure("connection termination", retried=self.attempts > 1, flags="UC", details=details)
        else:
            reply = local_reply.upstream_failure("protocol error", retried=self.attempts > 1, flags="UPE", details=details)
            reply.status = status if status >= 500 else 502
        self.local_reply(reply)

    def _may_retry_reset(self) -> bool:
        route = self.route
        return (
            route is not None
            and retries_reset(route.retry)
            and self.attempts <= route.retry.num_retries
            and not self.head.has_body
        )

    def downstream_lost(self) -> None:
        """The client went away: cancel the upstream attempt (flag DC)."""
        if self.done:
            return
        self.flags = "DC"
        self.cork = None
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        conn = self.upstream
        if conn is not None:
            self._release_upstream(conn, reusable=False)
        self.done = True

    # ------------------------------------------------------------------ local replies
    def local_reply(
        self,
        reply: LocalReply,
        *,
        route: Route | None = None,
        extra: Headers | None = None,
        close: bool = False,
    ) -> None:
        if self.done or self.response_started:
            return
        self.status = reply.status
        self.flags = reply.flags
        self.details = reply.details
        route_headers: Headers | None = None
        if route is not None and route.response_headers is not None:
            route_headers = route.response_headers.apply([])
        if not self.keep_alive or (self.head.has_body and not self.request_ended):
            # The rest of the request body will not be read: close afterwards, as Envoy does.
            close = True
        if self.down.draining:
            close = True
        # A request that waited behind another: Envoy closes after the reply, without saying so.
        self.keep_alive = self.keep_alive and not close and not self.pipelined
        state = self.state
        self.response_started = True
        data = local_reply.render(
            reply.status,
            reply.body,
            state.snapshot.proxy.server_header,
            state.date(),
            extra=extra,
            route_headers=route_headers,
            close=close,
            head_only=self.response_no_body,
        )
        self.down.write(data)
        self._complete(local=True)

    def _complete(self, *, aborted: bool = False, local: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if self.cork is not None:
            # Flush before the connection moves on to a pipelined request.
            self.uncork()
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        self.state.on_stream_complete(self)
        self.down.stream_done(self, keep_alive=self.keep_alive and not aborted)

    # ------------------------------------------------------------------ backpressure
    def pause_downstream_reading(self) -> None:
        self.down.pause_reading_for(self)

    def resume_downstream_reading(self) -> None:
        self.down.resume_reading_for(self)
