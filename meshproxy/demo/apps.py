"""Stand-in Bookinfo workloads: tiny HTTP/1.1 servers, one process per workload.

    python -m meshproxy.demo.apps reviews --version v2 --port 19085 --sidecar 127.0.0.1:15104

They behave like Istio's Bookinfo sample where the mesh can see it:

* every answer is JSON carrying ``{"service": ..., "version": ...}`` (productpage
  answers readable text by default, JSON on ``Accept: application/json``);
* productpage calls details (``GET /details/0``) and reviews (``GET /reviews/0``);
  reviews v2 and v3 call ratings (``GET /ratings/0``); reviews v1 does not;
* every outbound call goes THROUGH THE WORKLOAD'S SIDECAR: the app connects to
  the ``--sidecar`` address and names the service in ``Host`` (``reviews:9080``),
  which is what an application under iptables capture effectively does;
* apps forward the tracing headers and ``end-user``, as Istio requires of
  applications (istio.io "Distributed tracing overview"; Bookinfo's
  productpage forwards ``end-user`` after login);
* Bookinfo's client timeouts are kept, because Istio's fault-injection and
  timeout tasks are explained by them: productpage → details 3 s;
  productpage → reviews 3 s, tried twice; reviews v2 → ratings 10 s,
  reviews v3 → ratings 2.5 s.

Any other app name (``httpbin``, ``hello``...) runs a small httpbin-like echo
server (``/status/<code>``, ``/delay/<seconds>``, ``/headers``, anything else
echoes the request), handy for gateway and fault examples.

These are test apps, not the hot path: asyncio streams and httptools keep the
code short; connections are kept alive in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import urllib.parse
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable

import httptools

#: Headers an application must copy from its inbound request to its outbound
#: calls so that the proxies can join one trace (istio.io tracing overview),
#: plus what Bookinfo's productpage forwards for routing (end-user, user-agent).
PROPAGATED_HEADERS: tuple[str, ...] = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "grpc-trace-bin",
    "x-cloud-trace-context",
    "sw8",
    "end-user",
    "user-agent",
)

#: Bookinfo's stars per reviews version.
STAR_COLORS = {"v1": None, "v2": "black", "v3": "red"}

SERVICE_PORT = 9080



# --------------------------------------------------------------------------- messages


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    keep_alive: bool

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def propagated(self) -> dict[str, str]:
        return {k: v for k in PROPAGATED_HEADERS if (v := self.headers.get(k))}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool) -> bytes:
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"date: {formatdate(usegmt=True)}",
            f"content-type: {self.content_type}",
            f"content-length: {len(self.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if not keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, indent=None, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json", headers or [])


def text_response(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8", headers or [])


# --------------------------------------------------------------------------- server


class _RequestParser:
    """httptools callbacks collecting complete requests (pipelining-safe)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.complete: list[Request] = []
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._keep_alive = True

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {val}" if key in self._headers else val

    def on_headers_complete(self) -> None:
        self._keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        self.complete.append(
            Request(
                method=self.parser.get_method().decode("latin-1"),
                path=urllib.parse.unquote((url.path or b"/").decode("latin-1")),
                query=(url.query or b"").decode("latin-1"),
                headers=self._headers,
                body=b"".join(self._body),
                keep_alive=self._keep_alive,
            )
        )


Handler = Callable[[Request], Awaitable[Response]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    """Serve requests on one connection, in order, until either side closes."""
    parser = _RequestParser()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            try:
                parser.feed(data)
            except httptools.HttpParserUpgrade:
                writer.write(text_response(400, "upgrade not supported\n").encode(keep_alive=False))
                return
            except httptools.HttpParserError as exc:
                writer.write(text_response(400, f"bad request: {exc}\n").encode(keep_alive=False))
                return
            while parser.complete:
                request = parser.complete.pop(0)
                try:
                    response = await handler(request)
                except Exception as exc:  # a test app: report, do not die
                    response = json_response(500, {"error": f"{type(exc).__name__}: {exc}"})
                writer.write(response.encode(keep_alive=request.keep_alive))
                await writer.drain()
                if not request.keep_alive:
                    return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# --------------------------------------------------------------------------- client


@dataclass(slots=True)
class UpstreamResult:
    """An outbound call's outcome: ``status`` is None when no response came back."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def describe(self) -> str:
        """Why the call failed, for humans: ``503`` or ``timeout`` or ``connection refused``."""
        return str(self.status) if self.status is not None else self.error


class _ResponseParser:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.keep_alive = False
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {val}" if key in self.headers else val

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # llhttp answers "keep alive?" reliably only before the message completes
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class _StaleConnection(Exception):
    """A pooled connection was closed by the peer before answering anything."""


class UpstreamClient:
    """HTTP/1.1 client to one address (the sidecar) with a small keep-alive pool.

    Each outbound call names its service in ``Host``; the sidecar routes it.
    Concurrent calls take separate connections; idle ones are reused.
    """

    def __init__(self, host: str, port: int, max_idle: int = 8) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(
        self,
        method: str,
        path: str,
        authority: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 10.0,
    ) -> UpstreamResult:
        head = [f"{method} {path} HTTP/1.1", f"host: {authority}"]
        for name, value in (headers or {}).items():
            if name not in ("host", "content-length", "connection", "transfer-encoding"):
                head.append(f"{name}: {value}")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"content-length: {len(body)}")
        wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            return await asyncio.wait_for(self._exchange(wire), timeout)
        except asyncio.TimeoutError:
            return UpstreamResult(None, error="timeout")
        except ConnectionRefusedError:
            return UpstreamResult(None, error="connection refused")
        except (OSError, httptools.HttpParserError, _StaleConnection) as exc:
            return UpstreamResult(None, error=str(exc) or type(exc).__name__)

    async def _exchange(self, wire: bytes) -> UpstreamResult:
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange_on(conn, wire)
            except _StaleConnection:
                continue  # the peer closed it while idle: try the next one
        conn = await asyncio.open_connection(self.host, self.port)
        return await self._exchange_on(conn, wire)

    async def _exchange_on(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], wire: bytes
    ) -> UpstreamResult:
        reader, writer = conn
        keep = False
        try:
            writer.write(wire)
            await writer.drain()
            parsed = _ResponseParser()
            received = False
            while not parsed.done:
                try:
                    data = await reader.read(65536)
                except ConnectionResetError:
                    if not received:
                        raise _StaleConnection("connection reset") from None
                    raise
                if not data:
                    if not received:
                        raise _StaleConnection("connection closed before any response")
                    if parsed.headers_done:  # body delimited by close
                        break
                    raise ConnectionError("connection closed mid-response")
                received = True
                parsed.parser.feed_data(data)
            keep = parsed.done and parsed.keep_alive
            return UpstreamResult(parsed.parser.get_status_code(), parsed.headers, b"".join(parsed.body))
        finally:
            if keep and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class _NoSidecar:
    """Stands in for the client when an app was started without ``--sidecar``."""

    async def request(self, *args: object, **kwargs: object) -> UpstreamResult:
        return UpstreamResult(None, error="no sidecar configured")

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- apps


@dataclass
class AppContext:
    service: str
    version: str
    client: UpstreamClient | _NoSidecar
    hostname: str = field(default_factory=socket.gethostname)

    def identity(self) -> dict[str, str]:
        return {"service": self.service, "version": self.version}

    def request_info(self, req: Request) -> dict[str, object]:
        """What reached the app: lets tests see what the proxies added."""
        return {"method": req.method, "path": req.path, "query": req.query, "headers": req.headers}


def _product_id(path: str, prefix: str) -> str | None:
    rest = path[len(prefix):] if path.startswith(prefix) else None
    return rest if rest and "/" not in rest else None


def _not_found(ctx: AppContext, req: Request) -> Response:
    return json_response(404, {**ctx.identity(), "error": "not found", "path": req.path})


# details -------------------------------------------------------------------


async def details_app(ctx: AppContext, req: Request) -> Response:
    if req.path == "/health":
        return json_response(200, {**ctx.identity(), "status": "Details is healthy"})
    pid = _product_id(req.path, "/details/")
    if pid is None:
        return _not_found(ctx, req)
    return json_response(200, {
        **ctx.identity(),
        "id": pid,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
        "request": ctx.request_info(req),
    })


# ratings -------------------------------------------------------------------


async def ratings_app(ctx: AppContext, req: Request) -> Response:
    if req.path == "/health":
        return json_response(200, {**ctx.identity(), "status": "Ratings is healthy"})
    pid = _product_id(req.path, "/ratings/")
    if pid is None:
        return _not_found(ctx, req)
    return json_response(200, {
        **ctx.identity(),
        "id": pid,
        "ratings": {"Reviewer1": 5, "Reviewer2": 4},
        "request": ctx.request_info(req),
    })


# reviews -------------------------------------------------------------------

_REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    ("Reviewer2", "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."),
)


async def reviews_app(ctx: AppContext, req: Request) -> Response:
    if req.path == "/health":
        return json_response(200, {**ctx.identity(), "status": "Reviews is healthy"})
    pid = _product_id(req.path, "/reviews/")
    if pid is None:
        return _not_found(ctx, req)
    color = STAR_COLORS.get(ctx.version, "black")
    payload: dict[str, object] = {**ctx.identity(), "id": pid, "podname": ctx.hostname, "clustername": "null"}
    reviews = [{"reviewer": name, "text": text} for name, text in _REVIEWS]
    if color is not None:
        # Bookinfo's reviews: 10 s ratings timeout for black stars, 2.5 s for red.
        timeout = 10.0 if color == "black" else 2.5
        result = await ctx.client.request(
            "GET", f"/ratings/{pid}", f"ratings:{SERVICE_PORT}", req.propagated(), timeout=timeout
        )
        if result.ok:
            data = result.json()
            stars = data.get("ratings", {})
            for review in reviews:
                review["rating"] = {"stars": stars.get(review["reviewer"], 0), "color": color}
            payload["ratings"] = {"status": 200, "service": data.get("service"), "version": data.get("version")}
        else:
            for review in reviews:
                review["rating"] = {"error": "Ratings service is currently unavailable"}
            payload["ratings"] = {"status": result.status, "error": result.describe()}
    payload["reviews"] = reviews
    payload["request"] = ctx.request_info(req)
    return json_response(200, payload)


# productpage ---------------------------------------------------------------

_PRODUCTS = [{
    "id": 0,
    "title": "The Comedy of Errors",
    "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: "
    "The Comedy of Errors is one of William Shakespeare's early plays.",
}]


def _cookie(req: Request, name: str) -> str:
    for part in req.header("cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return urllib.parse.unquote(value)
    return ""


def _end_user(req: Request) -> str:
    """The logged-in user: the ``end-user`` header if a client sent one, else the login cookie."""
    return req.header("end-user") or _cookie(req, "user")


def _outbound_headers(req: Request) -> dict[str, str]:
    headers = req.propagated()
    user = _end_user(req)
    if user:
        headers["end-user"] = user
    else:
        headers.pop("end-user", None)
    return headers


async def _get_details(ctx: AppContext, pid: str, headers: dict[str, str]) -> UpstreamResult:
    return await ctx.client.request("GET", f"/details/{pid}", f"details:{SERVICE_PORT}", headers, timeout=3.0)


async def _get_reviews(ctx: AppContext, pid: str, headers: dict[str, str]) -> UpstreamResult:
    # Bookinfo's productpage tries reviews twice with a 3 s timeout each: the
    # "6 seconds" of Istio's fault-injection task.
    result = UpstreamResult(None, error="not called")
    for _ in range(2):
        result = await ctx.client.request("GET", f"/reviews/{pid}", f"reviews:{SERVICE_PORT}", headers, timeout=3.0)
        if result.ok:
            break
    return result


def _reviews_line(reviews: UpstreamResult) -> tuple[str, str]:
    """('reviews v2 (black stars)', 'ratings v1') or the unavailable forms."""
    if not reviews.ok:
        return (f"reviews: unavailable ({reviews.describe()})", "ratings: unknown (reviews unavailable)")
    data = reviews.json()
    version = data.get("version", "?")
    ratings = data.get("ratings")
    if ratings is None:
        return (f"reviews {version} (no stars)", f"ratings: not called by reviews {version}")
    if ratings.get("status") != 200:
        detail = ratings.get("status") or ratings.get("error") or "?"
        return (f"reviews {version} (ratings unavailable)", f"ratings: unavailable ({detail})")
    color = next((r["rating"].get("color") for r in data.get("reviews", []) if "rating" in r), None)
    return (f"reviews {version} ({color} stars)", f"ratings {ratings.get('version', '?')}")


def _wants_json(req: Request) -> bool:
    return "application/json" in req.header("accept") or "format=json" in req.query


async def productpage_app(ctx: AppContext, req: Request) -> Response:
    path = req.path
    if path == "/health":
        return json_response(200, {**ctx.identity(), "status": "Productpage is healthy"})
    if path == "/login":
        form = urllib.parse.parse_qs(req.body.decode("latin-1") or req.query)
        user = (form.get("username") or [""])[0]
        if not user:
            return text_response(400, "login: give a username (POST username=jason)\n")
        cookie = f"user={urllib.parse.quote(user)}; Path=/"
        return text_response(302, f"logged in as {user}\n", [("location", "/productpage"), ("set-cookie", cookie)])
    if path == "/logout":
        return text_response(302, "logged out\n", [
            ("location", "/productpage"), ("set-cookie", "user=; Path=/; Max-Age=0")])
    if path.startswith("/static"):
        return text_response(200, f"static asset {path} from {ctx.service} {ctx.version}\n")
    if path == "/":
        return text_response(200, f"{ctx.service} {ctx.version}: try /productpage or /api/v1/products\n")
    if path == "/api/v1/products":
        return json_response(200, {**ctx.identity(), "products": _PRODUCTS})
    if path.startswith("/api/v1/products/"):
        return await _product_api(ctx, req, path[len("/api/v1/products/"):].split("/"))
    if path != "/productpage":
        return _not_found(ctx, req)

    headers = _outbound_headers(req)
    details, reviews = await asyncio.gather(_get_details(ctx, "0", headers), _get_reviews(ctx, "0", headers))
    details_line = (f"details {details.json().get('version', '?')}" if details.ok
                    else f"details: unavailable ({details.describe()})")
    reviews_line, ratings_line = _reviews_line(reviews)
    user = _end_user(req)
    if _wants_json(req):
        return json_response(200, {
            **ctx.identity(),
            "user": user or None,
            "product": _PRODUCTS[0],
            "details": details.json() if details.ok else {"status": details.status, "error": details.describe()},
            "reviews": reviews.json() if reviews.ok else {"status": reviews.status, "error": reviews.describe()},
            "summary": [f"{ctx.service} {ctx.version}", details_line, reviews_line, ratings_line],
            "request": ctx.request_info(req),
        })
    lines = [f"{ctx.service} {ctx.version}", details_line, reviews_line, ratings_line]
    if user:
        lines.append(f"end-user: {user}")
    return text_response(200, "\n".join(lines) + "\n")


async def _product_api(ctx: AppContext, req: Request, parts: list[str]) -> Response:
    """Bookinfo's REST API: /api/v1/products/<id>[/reviews|/ratings]."""
    headers = _outbound_headers(req)
    pid = parts[0]
    if len(parts) == 1:
        result = await _get_details(ctx, pid, headers)
    elif parts[1:] == ["reviews"]:
        result = await _get_reviews(ctx, pid, headers)
    elif parts[1:] == ["ratings"]:
        result = await ctx.client.request("GET", f"/ratings/{pid}", f"ratings:{SERVICE_PORT}", headers, timeout=3.0)
    else:
        return _not_found(ctx, req)
    if result.ok:
        return Response(200, result.body, result.headers.get("content-type", "application/json"))
    status = result.status if result.status is not None else 503
    return json_response(status, {**ctx.identity(), "error": f"upstream unavailable ({result.describe()})"})


# httpbin-like echo -----------------------------------------------------------


async def echo_app(ctx: AppContext, req: Request) -> Response:
    """Any other app name: a few httpbin endpoints, otherwise echo the request."""
    parts = req.path.strip("/").split("/")
    base = {**ctx.identity(), "request": ctx.request_info(req), "body_length": len(req.body)}
    if parts[0] == "status" and len(parts) == 2 and parts[1].isdigit():
        code = int(parts[1])
        return json_response(code, {**base, "status": code})
    if parts[0] == "delay" and len(parts) == 2:
        try:
            seconds = min(float(parts[1]), 60.0)
        except ValueError:
            return _not_found(ctx, req)
        await asyncio.sleep(seconds)
        return json_response(200, {**base, "delayed": seconds})
    if parts[0] == "headers":
        return json_response(200, {**ctx.identity(), "headers": req.headers})
    return json_response(200, base)


APPS: dict[str, Callable[[AppContext, Request], Awaitable[Response]]] = {
    "productpage": productpage_app,
    "details": details_app,
    "ratings": ratings_app,
    "reviews": reviews_app,
}


# --------------------------------------------------------------------------- main


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(app: str, version: str, host: str, port: int, sidecar: tuple[str, int] | None,
                ready: Callable[[], None] | None = None) -> None:
    """Run one workload until SIGTERM/SIGINT (or cancellation)."""
    client: UpstreamClient | _NoSidecar = UpstreamClient(*sidecar) if sidecar else _NoSidecar()
    ctx = AppContext(app, version, client)
    app_fn = APPS.get(app, echo_app)

    async def handler(req: Request) -> Response:
        return await app_fn(ctx, req)

    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, handler), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    via = f", outbound via {sidecar[0]}:{sidecar[1]}" if sidecar else ""
    print(f"{app} {version} listening on {host}:{port}{via} (pid {os.getpid()})", file=sys.stderr, flush=True)
    if ready:
        ready()
    try:
        await stop.wait()
    finally:
        server.close()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshproxy.demo.apps", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", help="productpage, details, ratings, reviews; anything else runs an httpbin-like echo")
    parser.add_argument("--version", default="v1", help="workload version label (reviews: v1 none, v2 black, v3 red)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (the Pod's containerPort)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (the Pod's IP)")
    parser.add_argument("--sidecar", type=parse_address, default=None,
                        help="HOST:PORT of this workload's sidecar outbound listener; all calls go there")
    args = parser.parse_args(argv)
    coro = serve(args.app, args.version, args.bind, args.port, args.sidecar)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"{args.app} {args.version}: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
