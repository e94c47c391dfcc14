"""The reference HTTP/1.1 codec: h11 for heads, the interface of ``http1`` exactly.

It exists to hold the fast codec to account: the differential tests feed both the same bytes
and require the same calls.  It is written for clarity, not speed, and shares with ``http1``
only the Envoy rules in ``h1_rules`` -- the tokenizing (h11's regexes here, llhttp there),
the buffering and the framing loops are separate code.

h11 is a strict RFC 9112 parser and Envoy is not, so around h11:

* the head's bytes are checked first for what h11 lets through and Envoy refuses (control
  characters, a second or comma-joined Content-Length that h11 quietly merges);
* heads h11 refuses, and heads with folded lines (h11 joins them with one space, Envoy keeps
  the continuation's whitespace), are judged by ``h1_rules.parse_request_head``;
* after h11, the Envoy checks h11 does not make (method list, target shapes, version, header
  count, Host, Connection ...) run through ``h1_rules.finish_request``;
* bodies are framed here: Content-Length by counting and chunked by
  ``h1_rules.ChunkedDecoder``, because Envoy's chunk rules (extensions after spaces, junk
  skipped to LF after the data) are not h11's.
"""

from __future__ import annotations

from typing import Callable

import re
from collections import deque

import h11

from . import h1_rules as rules
from .events import Headers, ProtocolError, RequestHandler, RequestHead, ResponseHandler, ResponseHead

__all__ = [
    "ServerCodec",
    "ClientCodec",
    "encode_request_head",
    "encode_response_head",
    "encode_chunk",
    "encode_trailers",
    "LAST_CHUNK",
]

_CL_LINE = re.compile(rb"^content-length[ \t]*:([^\n]*)$", re.IGNORECASE | re.MULTILINE)
_TE_LINE = re.compile(rb"^transfer-encoding:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def _h11_headers(event: h11.Request | h11.Response | h11.InformationalResponse, head: bytes) -> Headers:
    """h11's header list, with the Transfer-Encoding value as sent (h11 lower-cases it)."""
    headers: Headers = [(bytes(name), bytes(value)) for name, value in event.headers]
    if any(name == b"transfer-encoding" for name, _ in headers):
        raw = iter(_TE_LINE.findall(head))
        headers = [(name, next(raw)) if name == b"transfer-encoding" else (name, value) for name, value in headers]
    return headers


def _raw_content_length_ok(head: bytes) -> None:
    """Envoy (Balsa) refuses a second Content-Length and lists in it; h11 merges them."""
    values = _CL_LINE.findall(head)
    if len(values) > 1:
        raise rules.codec_error()
    if values:
        rules.parse_content_length(values[0].strip(b" \t\r"))


def _folded(head: bytes) -> bool:
    return b"\n " in head or b"\n\t" in head


def _request_via_h11(head: bytes, max_headers: int) -> RequestHead:
    if head[0] not in rules.METHOD_FIRST_BYTES:
        raise rules.codec_error()
    if rules.has_invalid_chars(head):
        raise ProtocolError(400, rules.INVALID_CHARACTERS)
    if _folded(head):
        return rules.parse_request_head(head, max_headers)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return rules.parse_request_head(head, max_headers)
    if not isinstance(event, h11.Request):
        return rules.parse_request_head(head, max_headers)
    method = bytes(event.method)
    target = bytes(event.target)
    if method not in rules.METHODS:
        raise rules.codec_error()
    if not rules.target_is_valid(target, method == b"CONNECT"):
        raise rules.codec_error()
    _raw_content_length_ok(head)
    headers = _h11_headers(event, head)
    if len(headers) > max_headers:
        raise ProtocolError(431, rules.TOO_MANY_HEADERS)
    return rules.finish_request(method, target, b"HTTP/" + bytes(event.http_version), headers)


def _response_via_h11(head: bytes, method: str, max_headers: int) -> tuple[ResponseHead, int]:
    if head[:1] != b"H" or rules.has_invalid_chars(head):
        raise rules.upstream_error(False)
    if _folded(head):
        return rules.parse_response_head(head, method, max_headers)
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(head) + 1)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "upstream")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return rules.parse_response_head(head, method, max_headers)
    if not isinstance(event, (h11.Response, h11.InformationalResponse)):
        return rules.parse_response_head(head, method, max_headers)
    try:
        _raw_content_length_ok(head)
    except ProtocolError:
        raise rules.upstream_error(False) from None
    headers = _h11_headers(event, head)
    if len(headers) > max_headers:
        raise rules.upstream_error(False)
    return rules.finish_response(
        b"HTTP/" + bytes(event.http_version), event.status_code, bytes(event.reason), headers, method
    )


def _body_step(codec: "ServerCodec | ClientCodec", buf: bytearray, on_data: Callable[[bytes], None]) -> bool:
    """One step of a Content-Length or chunked body, shared by both directions.

    Hands payload to ``on_data``, ends the message when the body is complete,
    and returns False when more input is needed before anything else can happen.
    """
    if codec._mode == "length":
        piece = bytes(buf[: codec._remaining])
        del buf[: len(piece)]
        codec._remaining -= len(piece)
        on_data(piece)
        if not codec._remaining:
            codec._finish(None)
        return True
    decoder = codec._decoder
    assert decoder is not None
    used, payload, done = decoder.feed(bytes(buf), 0)
    del buf[:used]
    if payload:
        on_data(payload)
    if decoder.error is not None:
        raise decoder.error
    if done:
        codec._finish(decoder.trailers)
        return True
    return bool(used and buf)


class ServerCodec:
    """Parses requests from a downstream client (same contract as ``http1.ServerCodec``)."""

    __slots__ = ("_handler", "_max_head", "_max_headers", "_buf", "_mode", "_remaining", "_decoder", "_keep_alive", "_early_checked")

    def __init__(self, handler: RequestHandler, *, max_header_bytes: int = rules.MAX_REQUEST_HEAD_BYTES, max_headers: int = rules.MAX_HEADERS) -> None:
        self._handler = handler
        self._max_head = max_header_bytes
        self._max_headers = max_headers
        self._buf = bytearray()
        self._mode = "head"  # head | length | chunked | raw | closed | dead
        self._remaining = 0
        self._decoder: rules.ChunkedDecoder | None = None
        self._keep_alive = True
        self._early_checked = False

    def feed(self, data: bytes) -> None:
        if self._mode in ("closed", "dead") or not data:
            return
        if self._mode == "raw":
            self._handler.on_request_data(bytes(data))
            return
        self._buf += data
        try:
            self._process()
        except ProtocolError as exc:
            self._mode = "dead"
            self._buf.clear()
            self._handler.on_protocol_error(exc)

    def feed_eof(self) -> None:
        mode = self._mode
        if mode in ("closed", "dead"):
            return
        if mode == "raw":
            self._mode = "closed"
            self._handler.on_request_end(None)
            return
        if mode == "head" and not self._buf:
            self._mode = "closed"
            return
        self._mode = "dead"
        self._handler.on_protocol_error(ProtocolError(rules.DOWNSTREAM_DISCONNECT_STATUS, rules.DOWNSTREAM_DISCONNECT))

    def _process(self) -> None:
        buf = self._buf
        handler = self._handler
        while buf:
            mode = self._mode
            if mode == "head":
                blank = 0
                while blank < len(buf) and buf[blank] in (13, 10):
                    blank += 1
                del buf[:blank]
                if not buf:
                    return
                data = bytes(buf)
                line_end = data.find(b"\n")
                zero_nine = line_end >= 0 and rules.headerless(data, 0, line_end)
                end = line_end + 1 if zero_nine else rules.find_head_end(data, 0)
                if end < 0:
                    if len(buf) > self._max_head:
                        raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
                    if not self._early_checked and line_end >= 0:
                        self._early_checked = True
                        early = rules.early_request_line_error(data, 0)
                        if early is not None:
                            raise early
                    return
                if end > self._max_head:
                    raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
                head_bytes = data[:end]
                del buf[:end]
                self._early_checked = False
                if zero_nine:  # HTTP/0.9: the request line alone; h11 has no such thing
                    head = rules.parse_request_head(head_bytes, self._max_headers)
                else:
                    head = _request_via_h11(head_bytes, self._max_headers)
                handler.on_request_head(head)
                if head.upgrade:
                    self._mode = "raw"
                    if buf:
                        rest = bytes(buf)
                        buf.clear()
                        handler.on_request_data(rest)
                    return
                self._keep_alive = head.keep_alive
                if head.chunked:
                    self._mode = "chunked"
                    self._decoder = rules.ChunkedDecoder(self._max_head)
                elif head.content_length:
                    self._mode = "length"
                    self._remaining = head.content_length
                else:
                    self._finish(None)
            elif mode == "length" or mode == "chunked":
                if not _body_step(self, buf, handler.on_request_data):
                    return
            else:  # closed: ignore whatever follows a Connection: close request
                buf.clear()
                return

    def _finish(self, trailers: Headers | None) -> None:
        self._mode = "head" if self._keep_alive else "closed"
        self._decoder = None
        self._handler.on_request_end(trailers)


class ClientCodec:
    """Parses responses from an upstream (same contract as ``http1.ClientCodec``)."""

    __slots__ = ("_handler", "_max_head", "_max_headers", "_buf", "_mode", "_remaining", "_decoder", "_pending", "_method", "_final_seen", "_keep_alive")

    def __init__(self, handler: ResponseHandler, *, max_header_bytes: int = rules.MAX_RESPONSE_HEAD_BYTES, max_headers: int = rules.MAX_HEADERS) -> None:
        self._handler = handler
        self._max_head = max_header_bytes
        self._max_headers = max_headers
        self._buf = bytearray()
        self._mode = "head"  # head | length | chunked | raw | closed | dead
        self._remaining = 0
        self._decoder: rules.ChunkedDecoder | None = None
        self._pending: deque[str] = deque()
        self._method: str | None = None  # the request the current response answers
        self._final_seen = False
        self._keep_alive = True

    def expect(self, method: str) -> None:
        self._pending.append(method)

    def feed(self, data: bytes) -> None:
        if self._mode == "dead" or not data:
            return
        if self._mode == "raw":
            self._handler.on_response_data(bytes(data))
            return
        self._buf += data
        try:
            if self._mode == "closed":
                raise rules.upstream_error(False)
            self._process()
        except ProtocolError as exc:
            if not exc.details.startswith("upstream_"):
                exc = rules.upstream_error(self._final_seen)
            self._mode = "dead"
            self._buf.clear()
            self._handler.on_protocol_error(exc)

    def feed_eof(self) -> None:
        mode = self._mode
        if mode == "dead":
            return
        if mode == "raw":
            self._mode = "dead"
            self._handler.on_response_end(None)
            return
        if mode == "closed" or (mode == "head" and not self._buf and self._method is None and not self._pending):
            self._mode = "dead"
            return
        self._mode = "dead"
        if mode == "head":
            error = rules.upstream_eof(False, in_head=bool(self._buf))
        else:
            error = rules.upstream_eof(self._final_seen)
        self._handler.on_protocol_error(error)

    def _process(self) -> None:
        buf = self._buf
        handler = self._handler
        while buf:
            mode = self._mode
            if mode == "head":
                if self._method is None:
                    if not self._pending:
                        raise rules.upstream_error(False)
                    self._method = self._pending.popleft()
                if buf[0] != ord("H"):
                    raise rules.upstream_error(False)
                end = rules.find_head_end(bytes(buf), 0)
                if end < 0:
                    if len(buf) > self._max_head:
                        raise rules.upstream_error(False)
                    return
                if end > self._max_head:
                    raise rules.upstream_error(False)
                head_bytes = bytes(buf[:end])
                del buf[:end]
                head, body = _response_via_h11(head_bytes, self._method, self._max_headers)
                if 100 <= head.status < 200 and head.status != 101:
                    handler.on_response_head(head)
                    continue
                self._final_seen = True
                self._keep_alive = head.keep_alive
                handler.on_response_head(head)
                if body == rules.BODY_NONE:
                    self._finish(None)
                elif body == rules.BODY_LENGTH:
                    self._mode = "length"
                    self._remaining = head.content_length or 0
                elif body == rules.BODY_CHUNKED:
                    self._mode = "chunked"
                    self._decoder = rules.ChunkedDecoder(self._max_head)
                else:
                    self._mode = "raw"
                    if buf:
                        rest = bytes(buf)
                        buf.clear()
                        handler.on_response_data(rest)
                    return
            elif mode == "length" or mode == "chunked":
                if not _body_step(self, buf, handler.on_response_data):
                    return
            else:  # closed: the upstream said Connection: close and kept talking
                raise rules.upstream_error(False)

    def _finish(self, trailers: Headers | None) -> None:
        self._mode = "head" if self._keep_alive else "closed"
        self._decoder = None
        self._method = None
        self._final_seen = False
        self._handler.on_response_end(trailers)


# --- encoders (written independently of http1's; the tests hold them equal) -----------------

LAST_CHUNK: bytes = b"0\r\n\r\n"


def _field_lines(headers: Headers) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def encode_request_head(method: str, target: str, headers: Headers) -> bytes:
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + _field_lines(headers) + b"\r\n"


def encode_response_head(status: int, headers: Headers, reason: bytes | None = None) -> bytes:
    from .http1 import REASONS

    phrase = reason if reason is not None else REASONS.get(status, b"Unknown")
    return b"HTTP/1.1 " + str(status).encode() + b" " + phrase + b"\r\n" + _field_lines(headers) + b"\r\n"


def encode_chunk(data: bytes) -> bytes:
    if not data:
        return b""
    return format(len(data), "x").encode() + b"\r\n" + bytes(data) + b"\r\n"


def encode_trailers(trailers: Headers) -> bytes:
    return b"0\r\n" + _field_lines(trailers) + b"\r\n"
