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

A cluster with circuit breaking (``Cluster.circuit``) counts this stream as
pending while it waits for a connection and as active while attached to one,
and its retries as concurrent retries; a refused slot is Envoy's overflow (503
``UO``, never retried).  A cluster with outlier detection hears of every
attempt's outcome through the endpoint's ``HostMonitor`` (``Endpoint.outlier``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..core import cors as cors_mod
from ..core import flags as flags_mod
from ..core import local_reply
from ..core import outlier as outlier_mod
from ..core.balancer import compute_hash
from ..core.endpoints import Endpoint
from ..core.headers import HOP_BY_HOP
from ..core.ids import new_request_id
from ..core.local_reply import LocalReply, status_line
from ..core.request import BadTarget, RequestContext, split_target
from ..core.fault import render_grpc_abort
from ..core.retry import (
    RETRY_BUFFER_LIMIT,
    backoff_seconds,
    retriable_response,
    retries_connect_failure,
    retries_per_try_timeout,
    retries_reset,
)
from ..core.router import Decision, decide, redirect_location
from ..core.snapshot import DIRECT_RESPONSE, FORWARD, ORIGINAL_DST, REDIRECT, Cluster, Route, RoutePolicy, WeightedDestination
from ..protocols.events import Headers, ProtocolError, RequestHead, ResponseHead
from .shadow import ShadowRequest, shadow_head
from .health import arm_outlier_timer
from .request_head import build_upstream_head, header_value
from .upstream import HIGH_WATER, UpstreamConnection, wake_waiter

if TYPE_CHECKING:  # pragma: no cover
    from .downstream import DownstreamConnection

_RESPONSE_SKIP = HOP_BY_HOP | {b"server", b"x-envoy-upstream-service-time"}
_NO_BODY_STATUS = (204, 304)


def _connect_failure_reason(exc: BaseException) -> str:
    """Envoy 1.40's reset reason for a failed connect (it no longer appends a transport reason)."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "connection timeout"
    return "remote connection failure"


#: Response headers the proxy replaces or drops.
_RESPONSE_SPECIAL = HOP_BY_HOP | {b"server", b"date", b"x-envoy-upstream-service-time"}
_TIMEOUT_BODY = b"upstream request timeout"


class _PolicyState:
    """Per-request state of a route's fault / CORS / mirror / timeout policy (only when it has one)."""

    __slots__ = ("policy", "decision", "route_timer", "try_timer", "cors_origin", "shadows", "router_started")

    def __init__(self, policy: RoutePolicy) -> None:
        self.policy = policy
        self.decision: Decision | None = None
        self.route_timer: asyncio.TimerHandle | None = None
        self.try_timer: asyncio.TimerHandle | None = None
        self.cors_origin: bytes | None = None
        self.shadows: list[ShadowRequest] = []
        self.router_started = False


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
        "request_id",
        "span",
        "upstream_service_ms",
        "upstream_local",
        "px",
        "body_copy",
        "body_copy_size",
        "pend_key",
        "holds_request",
        "holds_retry",
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
        #: For the access log: the id sent upstream when the proxy made one, the upstream's
        #: service time and the local address of the upstream connection.
        self.request_id: bytes | None = None
        #: The tracing span (``meshproxy.telemetry.tracing.Span``) when a tracer is configured.
        self.span: object | None = None
        self.upstream_service_ms = -1
        self.upstream_local = ""
        #: Fault / CORS / mirror / timeout state; None for a route without such policy.
        self.px: _PolicyState | None = None
        #: The request body kept for a retry (None: not kept, or over the buffer limit).
        self.body_copy: list[bytes] | None = None
        self.body_copy_size = 0
        #: Circuit breaking: the pool key while this stream holds a pending-request slot,
        #: and whether it holds an active-request / a retry slot.
        self.pend_key: str | None = None
        self.holds_request = False
        self.holds_retry = False

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
        if route is not None and route.policy is not None and route.action == FORWARD:
            # Istio's filter order: fault (delay, then abort), CORS, then the router.
            px = self.px = _PolicyState(route.policy)
            px.decision = decision
            if self._fault():
                return
            if self._cors():
                return
        self._route(decision)

    def _route(self, decision: Decision) -> None:
        """The router's part: answer locally, or forward."""
        route = decision.route
        req = self.req
        assert req is not None
        listener = self.down.listener
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
        if self.head.has_body and route.retry.num_retries > 0:
            self.body_copy = list(self.pending_body)
            self.body_copy_size = self.pending_size
            if self.body_copy_size > RETRY_BUFFER_LIMIT:
                self.body_copy = None
        px = self.px
        if px is not None:
            px.router_started = True
            if px.policy.expected_timeout_header:
                prefix, suffix = self.upstream_head
                self.upstream_head = (prefix + px.policy.expected_timeout_header, suffix)
            if px.policy.mirrors:
                self._start_shadows(px)
            if px.policy.timeout > 0 and (self.request_ended or not self.head.has_body):
                self._arm_route_timeout(px)
        self._attempt()

    # ------------------------------------------------------------------ policies (fault, CORS, mirror, timeouts)
    def _fault(self) -> bool:
        """Envoy's fault filter: True when the request was delayed or aborted."""
        px = self.px
        assert px is not None
        fault = px.policy.fault
        if fault is None:
            return False
        rng = self.state.rng
        delay = fault.delay_for(rng.getrandbits(64))
        if delay > 0:
            self.flags = flags_mod.add(self.flags, "DI")
            self.retry_handle = self.state.loop.call_later(delay, self._after_delay)
            return True
        return self._fault_abort()

    def _fault_abort(self) -> bool:
        px = self.px
        assert px is not None
        fault = px.policy.fault
        reply = fault.abort_for(self.state.rng.getrandbits(64))
        if reply is None:
            return False
        if fault.abort_grpc_status is not None and self.req is not None:
            ctype = self.req.header(b"content-type")
            if ctype is not None and ctype.startswith(b"application/grpc"):
                state = self.state
                raw = render_grpc_abort(fault.abort_grpc_status, state.snapshot.proxy.server_header, state.date())
                self.local_reply(reply, raw=raw)
                return True
        self.local_reply(reply)
        return True

    def _after_delay(self) -> None:
        self.retry_handle = None
        px = self.px
        if self.done or px is None or px.decision is None:
            return
        if self._fault_abort() or self._cors():
            return
        self._route(px.decision)

    def _cors(self) -> bool:
        """Envoy's CORS filter: True when the proxy answered a preflight itself."""
        px = self.px
        assert px is not None
        policy = px.policy.cors
        if policy is None:
            return False
        decision = cors_mod.evaluate(policy, self.head.method, self.head.headers)
        if decision.preflight is not None:
            self.local_reply(LocalReply(200, b"", "cors_response", "-"), extra=decision.preflight)
            return True
        px.cors_origin = decision.origin
        return False

    def _start_shadows(self, px: _PolicyState) -> None:
        rng = self.state.rng
        head = None
        for mirror in px.policy.mirrors:
            if mirror.cluster is None:
                continue
            n, d = mirror.fraction
            if rng.getrandbits(64) % d >= n:
                continue
            if head is None:
                head = shadow_head(*self.upstream_head)
            shadow = ShadowRequest(self.state, mirror.cluster, head, self.head.method, self.head.chunked, self.hash_key)
            for chunk in self.pending_body:
                shadow.feed(chunk)
            if self.request_ended:
                shadow.end(self.request_trailers)
            px.shadows.append(shadow)

    def _arm_route_timeout(self, px: _PolicyState) -> None:
        if px.route_timer is None:
            px.route_timer = self.state.loop.call_later(px.policy.timeout, self._on_route_timeout)

    def _on_route_timeout(self) -> None:
        """The route ``timeout`` expired: 504 ``upstream request timeout`` (UT), or a cut
        connection when the response had already started."""
        px = self.px
        if px is not None:
            px.route_timer = None
        if self.done:
            return
        self._cancel_timers()
        conn = self.upstream
        if conn is not None:
            self._report(outlier_mod.TIMEOUT, 504)
            self._release_upstream(conn, reusable=False)
        if self.response_started:
            self.flags = flags_mod.add(self.flags, "UT")
            self.down.abort()
            self._complete(aborted=True)
            return
        self.local_reply(LocalReply(504, _TIMEOUT_BODY, "upstream_response_timeout", "UT"))

    def _on_per_try_timeout(self) -> None:
        """``retries.perTryTimeout`` expired before the response started: retry when the policy
        retries resets (5xx / gateway-error / reset) and attempts remain, else 504 (UT)."""
        px = self.px
        if px is not None:
            px.try_timer = None
        if self.done or self.response_started:
            return
        route = self.route
        assert route is not None
        policy = route.retry
        conn = self.upstream
        if conn is not None:
            self._report(outlier_mod.TIMEOUT, 504)
        if retries_per_try_timeout(policy) and self._body_retriable():
            if self.attempts <= policy.num_retries and self._retry_allowed():
                self._retry_after_failure(conn)
                return
            if self.attempts > policy.num_retries:
                self.flags = flags_mod.add(self.flags, "URX")
        if conn is not None:
            self._release_upstream(conn, reusable=False)
        self.local_reply(LocalReply(504, _TIMEOUT_BODY, "upstream_per_try_timeout", "UT"))

    def _cancel_timers(self) -> None:
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        px = self.px
        if px is not None:
            if px.route_timer is not None:
                px.route_timer.cancel()
                px.route_timer = None
            if px.try_timer is not None:
                px.try_timer.cancel()
                px.try_timer = None

    def _body_retriable(self) -> bool:
        """A request with a body is retried only while all of it is kept (within the buffer limit)."""
        return not self.head.has_body or self.body_copy is not None

    def _observe_body(self, data: bytes) -> None:
        copy = self.body_copy
        if copy is not None:
            self.body_copy_size += len(data)
            if self.body_copy_size > RETRY_BUFFER_LIMIT:
                # Envoy: "the request payload exceeds the buffer limit; give up on the retry".
                self.body_copy = None
            else:
                copy.append(data)
        px = self.px
        if px is not None and px.shadows:
            for shadow in px.shadows:
                shadow.feed(data)

    def _build_upstream_head(self, req: RequestContext, route: Route, dest: WeightedDestination) -> tuple[bytes, bytes]:
        return build_upstream_head(self, req, route, dest)

    def _new_request_id(self) -> bytes:
        rid = self.request_id = new_request_id()
        return rid

    def _attempt(self) -> None:
        """Pick an endpoint and get a connection to it (pooled or new)."""
        cluster = self.cluster
        assert cluster is not None and self.req is not None
        if self.attempts:
            # A retry: the request goes out again, with the whole kept body.
            copy = self.body_copy
            if copy is not None:
                self.pending_body = list(copy)
                self.pending_size = self.body_copy_size
            self.request_sent = False
        self.attempts += 1
        if cluster.kind == ORIGINAL_DST or cluster.balancer.passthrough:
            # PassthroughCluster, a NONE-resolution ServiceEntry or a PASSTHROUGH load balancer:
            # connect where the client meant to go (in explicit mode, the Host's host:port).
            endpoint = self.state.passthrough_endpoint(self.req.host, self.req.port or 80)
        else:
            tried = self.tried
            route = self.route
            if tried and route is not None and not route.retry.ignore_previous_hosts:
                tried = []
            endpoint = cluster.balancer.choose(self.hash_key, tried or None)
            if endpoint is None:
                self.local_reply(local_reply.NO_HEALTHY_UPSTREAM)
                return
        self.endpoint = endpoint
        circuit = cluster.circuit
        if circuit is not None:
            self._attempt_counted(circuit, endpoint, cluster)
            return
        conn = self.state.pool.take(endpoint.key)
        if conn is not None:
            self._attach(conn)
            return
        self.state.loop.create_task(self._connect(endpoint, cluster))

    # ------------------------------------------------------------------ circuit breaking
    def _attempt_counted(self, circuit, endpoint: Endpoint, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
        """``_attempt`` for a cluster with a ``Circuit`` (Envoy's ConnPoolImplBase::newStream)."""
        key = endpoint.pool_key
        conn = self.state.pool.take(key)
        if conn is not None:
            self._attach_counted(circuit, conn)
            return
        if not circuit.try_pend():
            self._overflow()
            return
        self.pend_key = key
        self._acquire(circuit, endpoint, cluster)

    def _acquire(self, circuit, endpoint: Endpoint, cluster: Cluster) -> None:  # type: ignore[no-untyped-def]
        """Holding a pending slot: take an idle connection, open one, or wait for one."""
        key = endpoint.pool_key
        conn = self.state.pool.take(key)
        if conn is not None:
            self._end_pending()
            self._attach_counted(circuit, conn)
        elif circuit.may_connect(key):
            circuit.connection_opened(key)
            self.state.loop.create_task(self._connect(endpoint, cluster, circuit))
        else:
            circuit.wait(key, self)

    def wake(self) -> None:
        """A connection to our endpoint was released or closed: try again (called by the pool)."""
        if self.done or self.pend_key is None or self.endpoint is None or self.cluster is None:
            return
        circuit = self.cluster.circuit
        if circuit is not None:
            self._acquire(circuit, self.endpoint, self.cluster)

    def _attach_counted(self, circuit, conn: UpstreamConnection) -> None:  # type: ignore[no-untyped-def]
        if not circuit.try_request():
            self._recycle(conn)
            self._overflow()
            return
        if conn.circuit is not circuit:
            # A connection counted by this cluster's previous config (a reload): count it here now.
            if conn.circuit is not None:
                conn.circuit.connection_closed(conn.key)
            circuit.connection_opened(conn.key)
            conn.circuit = circuit
        self.holds_request = True
        self._attach(conn)

    def _end_pending(self) -> None:
        key = self.pend_key
        if key is None:
            return
        self.pend_key = None
        cluster = self.cluster
        circuit = cluster.circuit if cluster is not None else None
        if circuit is not None:
            circuit.unwait(key, self)
            circuit.end_pending()

    def _release_slots(self) -> None:
        """The stream is over: give back whatever circuit slots it still holds."""
        if self.pend_key is not None:
            self._end_pending()
        cluster = self.cluster
        circuit = cluster.circuit if cluster is not None else None
        if circuit is not None:
            if self.holds_request:
                self.holds_request = False
                circuit.end_request()
            if self.holds_retry:
                self.holds_retry = False
                circuit.end_retry()

    def _overflow(self) -> None:
        """A circuit breaker refused: 503 ``... reset reason: overflow`` (UO) with Envoy's
        ``x-envoy-overloaded: true``; Envoy never retries it."""
        self.local_reply(
            local_reply.upstream_failure(
                "overflow", retried=self.attempts > 1, flags="UO", details="upstream_reset_before_response_started{overflow}"
            ),
            extra=[(b"x-envoy-overloaded", b"true")],
        )

    def _retry_allowed(self) -> bool:
        """Take a concurrent-retry slot when the cluster counts them; refused: flag UO, no retry."""
        cluster = self.cluster
        circuit = cluster.circuit if cluster is not None else None
        if circuit is None:
            return True
        if self.holds_retry or circuit.try_retry():
            self.holds_retry = True
            return True
        self.flags = flags_mod.add(self.flags, "UO")
        return False

    def _recycle(self, conn: UpstreamConnection) -> None:
        cluster = self.cluster
        self.state.pool.put(conn, cluster.idle_timeout if cluster is not None else 3600.0)

    # ------------------------------------------------------------------ outlier detection
    def _report(self, result: int, code: int | None = None) -> None:
        """Tell the endpoint's outlier monitor (if any) how the attempt went."""
        endpoint = self.endpoint
        mon = endpoint.outlier if endpoint is not None else None
        if mon is None:
            return
        if result:
            mon.put_result(result, code)
        else:
            mon.put_http_code(code)
        detector = mon.detector
        if detector.ejections_active and not detector.armed:
            arm_outlier_timer(self.state.loop, detector)

    # ------------------------------------------------------------------ connecting
    async def _connect(self, endpoint: Endpoint, cluster: Cluster, circuit=None) -> None:  # type: ignore[no-untyped-def]
        key = endpoint.pool_key if circuit is not None else endpoint.key
        try:
            conn = await self.state.pool.connect(endpoint.address, endpoint.port, key, cluster.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            if circuit is not None:
                circuit.connection_closed(key)
                if circuit.waiters:
                    wake_waiter(circuit, key)
                if self.endpoint is endpoint:
                    self._end_pending()
            self._connect_failed(endpoint, exc)
            return
        except asyncio.CancelledError:
            if circuit is not None:
                circuit.connection_closed(key)
            raise
        if circuit is not None:
            conn.circuit = circuit
        if endpoint.outlier is not None:
            endpoint.outlier.put_result(outlier_mod.CONNECT_SUCCESS)
        if self.done:
            self.state.pool.put(conn, cluster.idle_timeout)
            return
        if circuit is not None:
            self._end_pending()
            self._attach_counted(circuit, conn)
            return
        self._attach(conn)

    def _connect_failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        if self.done:
            return
        if endpoint.outlier is not None:
            self._report(outlier_mod.CONNECT_FAILED)
        self.tried.append(endpoint)
        route = self.route
        assert route is not None
        reason = _connect_failure_reason(exc)
        policy = route.retry
        retries_done = self.attempts - 1
        if retries_connect_failure(policy) and retries_done < policy.num_retries and self._retry_allowed():
            delay = backoff_seconds(policy, retries_done + 1, self.state.randrange)
            self.retry_handle = self.state.loop.call_later(delay, self._retry)
            return
        retried = self.attempts > 1
        flags = "UF,URX" if retried else "UF"
        self.local_reply(local_reply.upstream_failure(reason, retried=retried, flags=flags, details="upstream_reset_before_response_started{remote_connection_failure}"))

    def _retry_after_failure(self, conn: UpstreamConnection | None) -> None:
        """Drop the current attempt's connection and schedule the next attempt."""
        px = self.px
        if px is not None and px.try_timer is not None:
            px.try_timer.cancel()
            px.try_timer = None
        if conn is not None:
            self._release_upstream(conn, reusable=False)
        if self.endpoint is not None:
            self.tried.append(self.endpoint)
        route = self.route
        assert route is not None
        delay = backoff_seconds(route.retry, self.attempts, self.state.randrange)
        self.retry_handle = self.state.loop.call_later(delay, self._retry)

    def _retry(self) -> None:
        self.state.upstream_rq_retry += 1
        self.retry_handle = None
        if self.holds_retry:
            # Envoy holds the retry slot for the backoff; the new attempt is an ordinary request.
            self.holds_retry = False
            circuit = self.cluster.circuit if self.cluster is not None else None
            if circuit is not None:
                circuit.end_retry()
        if not self.done:
            self._attempt()

    def _attach(self, conn: UpstreamConnection) -> None:
        conn.stream = self
        self.upstream_local = conn.local_address
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
        if self.body_copy is not None or self.px is not None:
            self._observe_body(data)
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
        px = self.px
        if px is not None and px.router_started:
            for shadow in px.shadows:
                shadow.end(trailers)
            if px.policy.timeout > 0:
                # Envoy's route timeout starts once the whole request has been received.
                self._arm_route_timeout(px)
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            self._finish_request(conn.transport)

    def _finish_request(self, transport: asyncio.Transport) -> None:
        if self.request_sent:
            return
        self.request_sent = True
        px = self.px
        if px is not None and px.policy.per_try_timeout > 0 and px.try_timer is None:
            px.try_timer = self.state.loop.call_later(px.policy.per_try_timeout, self._on_per_try_timeout)
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
        endpoint = self.endpoint
        if endpoint is not None and endpoint.outlier is not None:
            self._report(0, status)
        route = self.route
        px = self.px
        if px is not None and px.try_timer is not None:
            px.try_timer.cancel()
            px.try_timer = None
        if route is not None:
            retry = route.retry
            if (
                retry.num_retries > 0
                and self.upstream is not None
                and retriable_response(
                    retry, status, rh.get(b"grpc-status"),
                    "envoy-ratelimited" in retry.retry_on and rh.get(b"x-envoy-ratelimited") is not None,
                )
            ):
                if self.attempts <= retry.num_retries and self._body_retriable() and self._retry_allowed():
                    # Discard this answer (and its connection) and try again, as Envoy's router does.
                    self._retry_after_failure(self.upstream)
                    return
                if self.attempts > retry.num_retries:
                    self.flags = flags_mod.add(self.flags, "URX")
        self.status = status
        self.response_started = True
        self.upstream_keep_alive = rh.keep_alive
        state = self.state
        elapsed_ms = self.upstream_service_ms = int((state.loop.time() - self.t_upstream) * 1000)
        no_body = self.response_no_body or status in _NO_BODY_STATUS
        server = state.snapshot.proxy.server_header
        headers = rh.headers
        dest = self.dest
        cors_origin = px.cors_origin if px is not None else None
        edits = (
            (route is not None and route.response_headers is not None)
            or (dest is not None and dest.response_headers is not None)
            or cors_origin is not None
        )
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
            if cors_origin is not None and px is not None:
                tail = cors_mod.apply_to_response(px.policy.cors, cors_origin, tail)
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
        reusable = self.request_sent and self.upstream_keep_alive
        cluster = self.cluster
        if cluster is not None and cluster.max_requests_per_connection and conn.requests >= cluster.max_requests_per_connection:
            reusable = False  # maxRequestsPerConnection reached (1: no keep-alive upstream)
        self._release_upstream(conn, reusable)
        self._complete()

    def _detach(self, conn: UpstreamConnection) -> None:
        """Stop counting ``conn``'s request as active on its endpoint."""
        if self.upstream is conn:
            self.upstream = None
            endpoint = self.endpoint
            if endpoint is not None:
                endpoint.active_requests -= 1
            if self.holds_request:
                self.holds_request = False
                self.cluster.circuit.end_request()  # type: ignore[union-attr]

    def _release_upstream(self, conn: UpstreamConnection, reusable: bool) -> None:
        self._detach(conn)
        conn.stream = None
        if reusable and not conn.closed:
            cluster = self.cluster
            self.state.pool.put(conn, cluster.idle_timeout if cluster is not None else 3600.0)
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
        endpoint = self.endpoint
        if endpoint is not None and endpoint.outlier is not None:
            self._report(outlier_mod.CONNECT_FAILED)
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
        px = self.px
        if px is not None and px.try_timer is not None:
            px.try_timer.cancel()
            px.try_timer = None
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
            and self._body_retriable()
            and self._retry_allowed()
        )

    def downstream_lost(self) -> None:
        """The client went away: cancel the upstream attempt (flag DC)."""
        if self.done:
            return
        self.flags = flags_mod.add(self.flags, "DC")
        self.cork = None
        self._cancel_timers()
        self._abandon_shadows()
        conn = self.upstream
        if conn is not None:
            self._release_upstream(conn, reusable=False)
        self.done = True
        if self.pend_key is not None or self.holds_retry:
            self._release_slots()
        # Envoy logs and counts a request the client abandoned (response code 0 if none was sent).
        self.state.on_stream_complete(self)

    # ------------------------------------------------------------------ access log (meshproxy.telemetry.access_log.Record)
    def log_field(self, name: str) -> object:
        req = self.req
        if name == "start_time":
            return self.t_start + self.state.wall_offset
        if name == ":method":
            return self.head.method
        if name == ":path":
            return req.path_and_query if req is not None else self.head.target
        if name == ":authority":
            return req.authority if req is not None else None
        if name == "protocol":
            return "HTTP/" + self.head.http_version
        if name == "response_code":
            return self.status
        if name == "response_flags":
            return self.flags
        if name == "response_code_details":
            return self.details or ("via_upstream" if self.status else None)
        if name == "bytes_received":
            return self.request_body_bytes
        if name == "bytes_sent":
            return self.response_body_bytes
        if name == "duration":
            return int((self.state.loop.time() - self.t_start) * 1000)
        if name == "upstream_host":
            return self.endpoint.key if self.endpoint is not None and self.attempts else None
        if name == "upstream_cluster":
            return self.cluster.name if self.cluster is not None else None
        if name == "upstream_local_address":
            return self.upstream_local or None
        if name == "downstream_local_address":
            return self.down.local_address or None
        if name == "downstream_remote_address":
            return self.down.remote_address or None
        if name == "route_name":
            return (self.route.name or None) if self.route is not None else None
        return None

    def log_request_header(self, name: bytes) -> bytes | None:
        if name == b"x-request-id" and self.request_id is not None:
            return self.request_id
        return header_value(self.head.headers, name)

    def log_response_header(self, name: bytes) -> bytes | None:
        if name == b"x-envoy-upstream-service-time" and self.upstream_service_ms >= 0:
            return b"%d" % self.upstream_service_ms
        return None

    # ------------------------------------------------------------------ local replies
    def local_reply(
        self,
        reply: LocalReply,
        *,
        route: Route | None = None,
        extra: Headers | None = None,
        close: bool = False,
        raw: bytes | None = None,
    ) -> None:
        if self.done or self.response_started:
            return
        self.status = reply.status
        self.flags = reply.flags if self.flags == "-" else flags_mod.add(self.flags, reply.flags)
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
        px = self.px
        late = None
        if px is not None and px.cors_origin is not None:
            # The CORS filter's encode pass also sees replies the router makes after it.
            late = px.policy.cors.response_headers(px.cors_origin)
        data = raw if raw is not None else local_reply.render(
            reply.status,
            reply.body,
            state.snapshot.proxy.server_header,
            state.date(),
            extra=extra,
            route_headers=route_headers,
            close=close,
            head_only=self.response_no_body,
            late=late,
        )
        self.down.write(data)
        self._complete(local=True)

    def _complete(self, *, aborted: bool = False, local: bool = False) -> None:
        if self.done:
            return
        self.done = True
        if self.pend_key is not None or self.holds_retry:
            self._release_slots()
        if self.cork is not None:
            # Flush before the connection moves on to a pipelined request.
            self.uncork()
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        if self.px is not None:
            self._cancel_timers()
            if not self.request_ended:
                self._abandon_shadows()
        self.state.on_stream_complete(self)
        self.down.stream_done(self, keep_alive=self.keep_alive and not aborted)

    def _abandon_shadows(self) -> None:
        px = self.px
        if px is not None:
            for shadow in px.shadows:
                if not shadow.ended:
                    shadow.abandon()

    # ------------------------------------------------------------------ backpressure
    def pause_downstream_reading(self) -> None:
        self.down.pause_reading_for(self)

    def resume_downstream_reading(self) -> None:
        self.down.resume_reading_for(self)
