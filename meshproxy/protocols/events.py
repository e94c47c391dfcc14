"""The normalized message vocabulary shared by every HTTP codec.

A codec turns wire bytes into calls on a handler (``on_request_head``,
``on_request_data``, ``on_request_end`` / the response equivalents) and turns
heads back into bytes.  Everything above the codec -- routing, policy, the
proxy's stream logic -- speaks only this vocabulary, so HTTP/2 can plug in
later by producing the same calls.

Callbacks rather than event objects: the HTTP/1 hot path creates one
``RequestHead`` per request and nothing else, which is what keeps the proxy
fast (an event object per body chunk would cost more than the routing).

Header names are lower-case ``bytes`` and values are ``bytes`` exactly as they
arrived (outer whitespace stripped).  Envoy lower-cases HTTP/1 header names too
(unless ``preserveHttp1HeaderCase``), so what we forward matches what it does.
"""

from __future__ import annotations

from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class RequestHead:
    """A parsed request head.

    ``target`` is the raw request-target as sent (origin-form ``/a?b``,
    absolute-form ``http://h/a``, ``*`` or authority-form for CONNECT).  Path
    normalization and absolute-form handling belong to the core, not the codec.
    """

    __slots__ = (
        "method",
        "target",
        "http_version",
        "headers",
        "keep_alive",
        "chunked",
        "content_length",
        "upgrade",
    )

    def __init__(
        self,
        method: str,
        target: str,
        http_version: str,
        headers: Headers,
        keep_alive: bool,
        chunked: bool,
        content_length: int | None,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        self.upgrade = upgrade

    def get(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (lower-case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"RequestHead({self.method} {self.target} HTTP/{self.http_version}, {len(self.headers)} headers)"


class ResponseHead:
    """A parsed response head (from an upstream)."""

    __slots__ = ("status", "reason", "http_version", "headers", "keep_alive", "chunked", "content_length")

    def __init__(
        self,
        status: int,
        reason: bytes,
        http_version: str,
        headers: Headers,
        keep_alive: bool,
        chunked: bool,
        content_length: int | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length

    def get(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class ProtocolError(Exception):
    """Input the codec refuses.

    ``status`` is the local reply Envoy gives for it (400, 426, 431, 501 ...),
    ``details`` the response code details Envoy logs for it (for instance
    ``http1.codec_error``); the connection is always closed afterwards.
    """

    def __init__(self, status: int, details: str) -> None:
        super().__init__(f"{status} {details}")
        self.status = status
        self.details = details


class RequestHandler(Protocol):
    """What a server-side codec calls as it parses a request stream."""

    def on_request_head(self, head: RequestHead) -> None: ...

    def on_request_data(self, data: bytes) -> None: ...

    def on_request_end(self, trailers: Headers | None) -> None: ...

    def on_protocol_error(self, error: ProtocolError) -> None: ...


class ResponseHandler(Protocol):
    """What a client-side codec calls as it parses a response stream."""

    def on_response_head(self, head: ResponseHead) -> None: ...

    def on_response_data(self, data: bytes) -> None: ...

    def on_response_end(self, trailers: Headers | None) -> None: ...

    def on_protocol_error(self, error: ProtocolError) -> None: ...
