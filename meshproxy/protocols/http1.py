"""The hot-path HTTP/1.1 codec: llhttp (httptools) for heads, plain Python for framing.

Judged like Envoy 1.40 under Istio (see ``h1_rules`` for the rules and where they come from).

How it is built, and why:

* The codec finds each head's end itself (the first LF [CR] LF) and gives llhttp exactly that
  head.  llhttp never sees a body, so the codec always knows where every message starts and
  ends -- pipelined requests, smuggling attempts and a head llhttp refuses are all judged on
  the exact bytes of that message.  On the common path the end is found with one fast search
  for CRLF CRLF: that is the first LF [CR] LF unless an LF without a CR before it comes
  earlier, and llhttp refuses every head with such a bare LF, so a head llhttp accepts was cut
  right -- one it refuses is cut again with the exact search before anything is decided.
* One llhttp parser per connection: a request parser goes on to the next message when llhttp
  finished the last one (no body, keep-alive), else it is re-initialized (``__init__`` again
  is ``llhttp_init``: a new parser without the allocations); a response parser is
  re-initialized for every head, since llhttp would wait for the body it never sees.
* llhttp is stricter than Envoy in places (LF-only lines, folded headers, tabs in the request
  line, ``MSEARCH``, a bare CR in a value) and laxer in others (``M-SEARCH``, absolute URLs
  Envoy's URL parser refuses, HTTP/2.0, ``gzip, chunked``, control characters in a reason
  phrase).  When llhttp refuses a head, the head goes to ``h1_rules.parse_request_head``, a
  model of Envoy's parser, which gives Envoy's verdict (and a head, when Envoy accepts).  When
  llhttp accepts, the Envoy checks it does not make run in Python -- on a typical request just
  the method lookup, the header count and a cached Host check.
* HTTP/0.9 request lines (no version) are whole requests, as in Envoy: they are framed and
  judged by the rules without llhttp.
* Bodies: Content-Length is counted; chunked is decoded here with Envoy's rules (hex size,
  then SP/HT/';' and anything but CR; CRLF line end; data; skip to LF; trailers); upgrades
  and CONNECT turn the rest of the connection into raw data.

Callbacks are made synchronously, in order, from ``feed``.  After a ``ProtocolError`` the
codec calls ``on_protocol_error`` once and ignores everything after.
"""

from __future__ import annotations

import re
from collections import deque

from httptools import HttpRequestParser, HttpResponseParser
from httptools.parser.errors import HttpParserError, HttpParserUpgrade

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
    "REASONS",
]

# states
_HEAD = 0
_BODY = 1  # Content-Length body, or a chunk's data
_CHUNK_SIZE = 2
_CHUNK_END = 3  # after a chunk's data: skip to LF
_TRAILERS = 4
_RAW = 5  # after an upgrade / CONNECT (requests) or 101 / close-delimited (responses)
_CLOSED = 6  # the last message said Connection: close; later bytes are ignored
_DEAD = 7  # after a protocol error

_METHODS = rules.METHODS
_METHOD_FIRST = frozenset(m[0] for m in _METHODS)
# headers the codec looks at; a request with any but Host takes the general (slower) path
_PLAIN_CONNECTION = (b"keep-alive", b"close")
_WATCHED = frozenset((b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade"))
_HEAD_END = re.compile(rb"\n\r?\n").search  # the blank line ending a head (one pass)
# ServerCodec._run's "usual" request line: METHOD SP target SP HTTP/1.1 CRLF, where METHOD is the
# text before the first SP (neither starting with SP/HT) and the target starts with neither.
_USUAL_LINE = re.compile(rb"[^ \t\n][^ \n]* [^ \t\n][^\n]* HTTP/1\.1\r\n").match
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t;][^\r\n]*)?\r\n")
_BODY_NONE = rules.BODY_NONE
_BODY_LENGTH = rules.BODY_LENGTH
_BODY_CHUNKED = rules.BODY_CHUNKED
_MAX_CHUNK_LINE = rules.MAX_CHUNK_LINE
_MAX_CONTENT_LENGTH = rules.MAX_CONTENT_LENGTH

_valid_hosts: dict[bytes, bool] = {}


def _host_ok(host: bytes) -> bool:
    """``rules.authority_is_valid``, remembered: a connection sends the same Host again and again."""
    ok = _valid_hosts.get(host)
    if ok is None:
        ok = rules.authority_is_valid(host)
        if len(host) <= 255:
            if len(_valid_hosts) >= 4096:
                _valid_hosts.clear()
            _valid_hosts[host] = ok
    return ok


class _Collected:
    """llhttp's callbacks for one head: the target, the header list (names lower-cased, values
    stripped) and the few headers the codec itself must look at (``watched``).  One per codec,
    reset before each head."""

    __slots__ = ("url", "reason", "headers", "watched")

    # Callbacks httptools looks up but the codec has no use for: None, so llhttp never calls
    # into Python for them (and httptools finds them without a failed attribute lookup).
    on_message_begin = None
    on_headers_complete = None
    on_body = None
    on_message_complete = None
    on_chunk_header = None
    on_chunk_complete = None

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: Headers = []
        self.watched: Headers = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        pair = (name, value.rstrip(b" \t"))  # llhttp keeps trailing whitespace
        self.headers.append(pair)
        if name in _WATCHED:
            self.watched.append(pair)


class _Framing:
    """Shared body framing for both directions; subclasses parse heads and name callbacks."""

    __slots__ = (
        "_state",
        "_buf",
        "_scan",
        "_remaining",
        "_chunked",
        "_trailer_limit",
        "_max_head",
        "_max_headers",
        "_line_checked",
        "_keep_alive",
    )

    def __init__(self, max_header_bytes: int, max_headers: int) -> None:
        self._state = _HEAD
        self._buf = bytearray()
        self._scan = 0
        self._remaining = 0
        self._chunked = False
        self._trailer_limit = max_header_bytes
        self._max_head = max_header_bytes
        self._max_headers = max_headers
        self._line_checked = False
        self._keep_alive = True

    # -- waiting for more bytes without rescanning or recopying everything ------------------

    def _ready(self, buf: bytearray) -> bool:
        """True once the buffered bytes may complete what the current state waits for."""
        state = self._state
        scan = self._scan
        if state == _CHUNK_SIZE:
            if buf.find(b"\n", scan) >= 0 or buf.find(b"\r", scan, len(buf) - 1) >= 0 or len(buf) > _MAX_CHUNK_LINE:
                return True
        else:  # _HEAD, _TRAILERS
            if state == _TRAILERS and (buf[0] == 10 or (buf[0] == 13 and len(buf) > 1)):
                return True  # the blank line ending a chunked body without trailers
            limit = self._max_head if state == _HEAD else self._trailer_limit
            if len(buf) > limit or _HEAD_END(buf, scan) is not None:
                return True
            if state == _HEAD and not self._line_checked and buf.find(b"\n", scan) >= 0:
                return True
        self._scan = max(0, len(buf) - 3)
        return False

    def _keep(self, data: bytes, pos: int) -> None:
        self._buf = bytearray(data[pos:]) if pos else bytearray(data)
        self._scan = 0

    # -- chunked bodies (Envoy's rules; h1_rules.ChunkedDecoder is the reference) -------------

    def _chunk_size(self, data: bytes, pos: int) -> int:
        """Parse a chunk-size line at ``pos``; returns the position after it, or -1 to wait."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            if data.find(b"\r", pos, len(data) - 1) >= 0 or len(data) - pos > _MAX_CHUNK_LINE:
                raise rules.codec_error()
            return -1
        m = _CHUNK_LINE.match(data, pos)
        if m is None or m.end() != nl + 1:
            raise rules.codec_error()
        size = int(m.group(1), 16)
        if size > _MAX_CONTENT_LENGTH:
            raise rules.codec_error()
        if size:
            self._remaining = size
            self._state = _BODY
        else:
            self._state = _TRAILERS
        return nl + 1

    def _trailers(self, data: bytes, pos: int) -> tuple[int, Headers | None]:
        """Parse the trailer section at ``pos``: ``(end, trailers)``, ``end`` -1 to wait."""
        n = len(data)
        first = data[pos]
        if first == 10:
            return pos + 1, None
        if first == 13:
            if pos + 1 == n:
                return -1, None
            if data[pos + 1] == 10:
                return pos + 2, None
        end = rules.find_head_end(data, pos)
        if end < 0:
            if n - pos > self._trailer_limit:
                raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
            return -1, None
        if end - pos > self._trailer_limit:
            raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
        return end, rules.parse_trailers(data[pos:end])


class ServerCodec(_Framing):
    """Parses requests from a downstream client; see the module docstring."""

    __slots__ = ("_handler", "_parser", "_col", "_fresh")

    def __init__(self, handler: RequestHandler, *, max_header_bytes: int = rules.MAX_REQUEST_HEAD_BYTES, max_headers: int = rules.MAX_HEADERS) -> None:
        super().__init__(max_header_bytes, max_headers)
        self._handler = handler
        self._col = col = _Collected()
        self._parser = HttpRequestParser(col)
        self._fresh = True  # llhttp waits for the start of a message (else re-initialize it)

    def feed(self, data: bytes) -> None:
        state = self._state
        if state >= _CLOSED or not data:
            return
        if state == _RAW:
            self._handler.on_request_data(data)
            return
        if self._buf:
            buf = self._buf
            buf += data
            if not self._ready(buf):
                return
            data = bytes(buf)
            self._buf = bytearray()
        try:
            self._run(data)
        except ProtocolError as exc:
            self._state = _DEAD
            self._buf = bytearray()
            self._handler.on_protocol_error(exc)

    def feed_eof(self) -> None:
        state = self._state
        if state >= _CLOSED:
            return
        if state == _RAW:
            self._state = _CLOSED
            self._handler.on_request_end(None)
            return
        if state == _HEAD and not self._buf:
            self._state = _CLOSED
            return
        self._state = _DEAD
        self._handler.on_protocol_error(ProtocolError(rules.DOWNSTREAM_DISCONNECT_STATUS, rules.DOWNSTREAM_DISCONNECT))

    def _run(self, data: bytes) -> None:
        handler = self._handler
        n = len(data)
        pos = 0
        while pos < n:
            state = self._state
            if state == _HEAD:
                c = data[pos]
                if c == 13 or c == 10:
                    pos = rules.skip_blank_lines(data, pos)
                    if pos == n:
                        return
                head = None
                if _USUAL_LINE(data, pos) is not None:
                    # The usual "METHOD SP target SP HTTP/1.1 CRLF" line.  Guess that the head
                    # ends at the first CRLF CRLF: right whenever llhttp accepts the head (it
                    # refuses a bare LF, the only way a blank line could come earlier); when it
                    # refuses, _parse_head returns None and the exact search below decides.
                    end = data.find(b"\r\n\r\n", pos) + 4
                    if end > 3 and end - pos <= self._max_head:
                        head = self._parse_head(data[pos:end] if pos or end != n else data, True, True)
                if head is None:
                    nl = data.find(b"\n", pos)
                    # the usual "METHOD SP target SP HTTP/1.1 CRLF" line, recognised cheaply
                    sp = data.find(b" ", pos, nl)
                    usual = (
                        sp > pos
                        and nl - 10 > sp + 1
                        and data[sp + 1] not in (32, 9)
                        and data[pos] not in (32, 9)
                        and data.startswith(b" HTTP/1.1\r", nl - 10)
                    )
                    if nl >= 0 and not usual and rules.headerless(data, pos, nl):
                        end = nl + 1  # HTTP/0.9: the request line is the whole request
                    else:
                        m = _HEAD_END(data, pos)
                        end = m.end() if m is not None else -1
                    if end < 0:
                        if n - pos > self._max_head:
                            raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
                        if nl >= 0 and not self._line_checked:
                            self._line_checked = True
                            early = rules.early_request_line_error(data, pos)
                            if early is not None:
                                raise early
                        self._keep(data, pos)
                        return
                    if end - pos > self._max_head:
                        raise ProtocolError(431, rules.HEADERS_TOO_LARGE)
                    if end == nl + 1:
                        head = rules.parse_request_head(data[pos:end], self._max_headers)
                    else:
                        head = self._parse_head(data[pos:end] if pos or end != n else data, usual, False)
                self._line_checked = False
                pos = end
                handler.on_request_head(head)
                if head.upgrade:
                    self._state = _RAW
                    if pos < n:
                        handler.on_request_data(data[pos:])
                    return
                self._chunked = chunked = head.chunked
                self._keep_alive = keep_alive = head.keep_alive
                if chunked:
                    self._state = _CHUNK_SIZE
                elif head.content_length:
                    self._remaining = head.content_length
                    self._state = _BODY
                else:  # self._end(None), inlined
                    self._state = _HEAD if keep_alive else _CLOSED
                    handler.on_request_end(None)
            elif state == _BODY:
                take = n - pos
                remaining = self._remaining
                if take > remaining:
                    take = remaining
                handler.on_request_data(data if take == n else data[pos:pos + take])
                pos += take
                remaining -= take
                self._remaining = remaining
                if not remaining:
                    if self._chunked:
                        self._state = _CHUNK_END
                    else:  # self._end(None), inlined
                        self._state = _HEAD if self._keep_alive else _CLOSED
                        handler.on_request_end(None)
            elif state == _CHUNK_SIZE:
                end = self._chunk_size(data, pos)
                if end < 0:
                    self._keep(data, pos)
                    return
                pos = end
            elif state == _CHUNK_END:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return
                pos = nl + 1
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end, trailers = self._trailers(data, pos)
                if end < 0:
                    self._keep(data, pos)
                    return
                pos = end
                self._end(trailers)
            else:  # _CLOSED: after a Connection: close request the rest is ignored
                return

    def _end(self, trailers: Headers | None) -> None:
        self._state = _HEAD if self._keep_alive else _CLOSED
        self._handler.on_request_end(trailers)

    def _parse_head(self, head: bytes, usual: bool, guessed: bool) -> RequestHead | None:
        """One complete head (first byte through the blank line) to a ``RequestHead``.

        ``usual``: the request line is "METHOD SP target SP HTTP/1.1" (see ``_run``).
        ``guessed``: the head's end is a guess, right if llhttp accepts the head; returns None
        if it does not."""
        if head[0] not in _METHOD_FIRST:
            raise rules.codec_error()
        parser = self._parser
        col = self._col
        fresh = self._fresh
        if fresh:
            self._fresh = False  # until this message proves to leave llhttp ready for the next
        else:
            parser.__init__(col)  # llhttp_init again: the same as a new parser, cheaper
        col.url = b""
        col.headers = headers = []
        col.watched = watched = []
        clean = True
        try:
            parser.feed_data(head)
        except HttpParserUpgrade:
            clean = False
        except HttpParserError:
            if guessed:
                # The exact attempt meets llhttp as this one did: re-initialized again, or (as
                # the parser of the last message) still refusing, as it would refuse that head.
                self._fresh = fresh
                return None
            return rules.parse_request_head(head, self._max_headers)
        if len(headers) > self._max_headers:
            raise ProtocolError(431, rules.TOO_MANY_HEADERS)
        method_b = parser.get_method()
        method = _METHODS.get(method_b)
        if method is None:
            raise rules.codec_error()
        url = col.url
        if not url:  # llhttp takes "CONNECT \r\n" as HTTP/0.9 with no target
            return rules.parse_request_head(head, self._max_headers)
        # The common case stays here: origin-form target, HTTP/1.1, and of the watched headers
        # one Host, maybe a Content-Length (llhttp refused duplicates and bad values) and a
        # plain keep-alive or close.
        host: bytes | None = None
        content_length: bytes | None = None
        keep_alive = True
        general = not usual or url[0] != 0x2F or method_b == b"CONNECT"
        if not general:
            for name, value in watched:
                if name == b"host" and host is None:
                    host = value
                elif name == b"content-length":
                    content_length = value
                elif name == b"connection" and (value := value.lower()) in _PLAIN_CONNECTION:
                    keep_alive = value != b"close"
                else:
                    general = True
                    break
        if general:
            if not rules.target_is_valid(url, method_b == b"CONNECT"):
                raise rules.codec_error()
            version = parser.get_http_version()
            head_obj = rules.finish_request(method_b, url, b"HTTP/" + version.encode(), headers)
            if clean and not (head_obj.upgrade or head_obj.chunked or head_obj.content_length) and head_obj.keep_alive:
                self._fresh = True  # llhttp finished this message and can take the next
            return head_obj
        if host is None:
            raise ProtocolError(400, rules.MISSING_HOST)
        ok = _valid_hosts.get(host)
        if ok is None:
            ok = _host_ok(host)
        if not ok:
            raise ProtocolError(400, rules.INVALID_AUTHORITY)
        length = None if content_length is None else int(content_length)
        if clean and keep_alive and not length:
            self._fresh = True  # llhttp finished this message and can take the next
        return RequestHead(method, url.decode("latin-1"), "1.1", headers, keep_alive, False, length, False)


class ClientCodec(_Framing):
    """Parses responses from an upstream, one per ``expect(method)``, tolerant like Envoy's upstream codec.

    * 1xx other than 101 arrive as ``on_response_head`` (status 1xx) with no end; the final head
      follows.  101 is a head, then every later byte is ``on_response_data`` until EOF, which
      ends it (``on_response_end(None)``).
    * 204, 304 and responses to HEAD have no body (whatever their framing headers say);
      a response without Content-Length or chunked framing is close-delimited.
    * Errors carry Envoy's upstream verdicts: 502 ``upstream_reset_before_response_started
      {protocol_error}`` for a malformed head, ``..._after_response_started...`` once a final
      head was delivered; EOF before any byte of an expected response is 503
      ``...{connection_termination}``, EOF mid-head 502 (measured), mid-body 503.
    * Bytes that arrive when no response is expected (after the last one completed) are an
      error, as in Envoy (the connection must be closed; nothing is owed downstream).
    * The default head limit is 80 KiB, Envoy's ``max_response_headers_kb`` default.
    """

    __slots__ = ("_handler", "_pending", "_method", "_started", "_seen", "_parser", "_col")

    def __init__(self, handler: ResponseHandler, *, max_header_bytes: int = rules.MAX_RESPONSE_HEAD_BYTES, max_headers: int = rules.MAX_HEADERS) -> None:
        super().__init__(max_header_bytes, max_headers)
        self._handler = handler
        self._col = col = _Collected()
        self._parser = HttpResponseParser(col)
        self._pending: deque[str] = deque()
        self._method = ""
        self._started = False  # a final head of the current response was delivered
        self._seen = False  # a byte of the current response arrived

    def expect(self, method: str) -> None:
        """Register a request just sent (in order), so its response is framed for ``method``."""
        self._pending.append(method)

    def feed(self, data: bytes) -> None:
        state = self._state
        if state >= _CLOSED or not data:
            if state == _CLOSED and data:
                self._fail(rules.upstream_error(False))
            return
        if state == _RAW:
            self._handler.on_response_data(data)
            return
        if self._buf:
            buf = self._buf
            buf += data
            if not self._ready(buf):
                return
            data = bytes(buf)
            self._buf = bytearray()
        try:
            self._run(data)
        except ProtocolError as exc:
            if not exc.details.startswith("upstream_"):  # framing errors in a body or trailers
                exc = rules.upstream_error(self._started)
            self._fail(exc)

    def _fail(self, exc: ProtocolError) -> None:
        self._state = _DEAD
        self._buf = bytearray()
        self._handler.on_protocol_error(exc)

    def feed_eof(self) -> None:
        state = self._state
        if state == _DEAD:
            return
        if state == _RAW:
            self._state = _DEAD
            self._handler.on_response_end(None)
            return
        if state == _HEAD:
            if self._buf:
                self._fail(rules.upstream_eof(False, in_head=True))
            elif self._pending or self._seen:
                self._fail(rules.upstream_eof(False))
            else:
                self._state = _DEAD
            return
        if state == _CLOSED:
            self._state = _DEAD
            return
        self._fail(rules.upstream_eof(self._started))

    def _run(self, data: bytes) -> None:
        handler = self._handler
        n = len(data)
        pos = 0
        while pos < n:
            state = self._state
            if state == _HEAD:
                if not self._seen:
                    if not self._pending:
                        raise rules.upstream_error(False)  # nothing was asked for
                    self._method = self._pending.popleft()
                    self._seen = True
                if data[pos] != 0x48:  # Envoy: a response starts with 'H'
                    raise rules.upstream_error(False)
                # Guess that the head ends at the first CRLF CRLF: right whenever llhttp accepts
                # the head (it refuses a bare LF, the only way a blank line could come earlier);
                # when it refuses, _parse_head returns None and the exact search decides.
                parsed = None
                end = data.find(b"\r\n\r\n", pos) + 4
                if end > 3 and end - pos <= self._max_head:
                    parsed = self._parse_head(data[pos:end] if pos or end != n else data, True)
                if parsed is None:
                    m = _HEAD_END(data, pos)
                    end = m.end() if m is not None else -1
                    if end < 0:
                        if n - pos > self._max_head:
                            raise rules.upstream_error(False)
                        self._line_checked = True
                        self._keep(data, pos)
                        return
                    if end - pos > self._max_head:
                        raise rules.upstream_error(False)
                    parsed = self._parse_head(data[pos:end] if pos or end != n else data, False)
                head, mode = parsed
                pos = end
                status = head.status
                if 100 <= status < 200 and status != 101:
                    handler.on_response_head(head)  # informational: the final head follows
                    continue
                self._started = True
                self._keep_alive = head.keep_alive
                handler.on_response_head(head)
                if mode == _BODY_LENGTH:
                    self._remaining = head.content_length  # type: ignore[assignment]
                    self._chunked = False
                    self._state = _BODY
                elif mode == _BODY_NONE:
                    self._end(None)
                elif mode == _BODY_CHUNKED:
                    self._chunked = True
                    self._state = _CHUNK_SIZE
                else:
                    self._state = _RAW
                    if pos < n:
                        handler.on_response_data(data[pos:])
                    return
            elif state == _BODY:
                take = n - pos
                remaining = self._remaining
                if take > remaining:
                    take = remaining
                handler.on_response_data(data if take == n else data[pos:pos + take])
                pos += take
                remaining -= take
                self._remaining = remaining
                if not remaining:
                    if self._chunked:
                        self._state = _CHUNK_END
                    else:  # self._end(None), inlined
                        self._started = False
                        self._seen = False
                        self._state = _HEAD if self._keep_alive else _CLOSED
                        handler.on_response_end(None)
            elif state == _CHUNK_SIZE:
                end = self._chunk_size(data, pos)
                if end < 0:
                    self._keep(data, pos)
                    return
                pos = end
            elif state == _CHUNK_END:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return
                pos = nl + 1
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end, trailers = self._trailers(data, pos)
                if end < 0:
                    self._keep(data, pos)
                    return
                pos = end
                self._end(trailers)
            else:  # _CLOSED: the upstream said Connection: close, yet sends more
                raise rules.upstream_error(False)

    def _end(self, trailers: Headers | None) -> None:
        self._started = False
        self._seen = False
        self._state = _HEAD if self._keep_alive else _CLOSED
        self._handler.on_response_end(trailers)

    def _parse_head(self, head: bytes, guessed: bool) -> tuple[ResponseHead, int] | None:
        """One complete head to a ``ResponseHead`` and its body mode.  ``guessed``: the head's
        end is a guess, right if llhttp accepts the head; returns None if it does not."""
        # llhttp keeps state after a head whose body it never saw: llhttp_init it for each head
        # (calling __init__ again is exactly a new parser, minus the allocations)
        parser = self._parser
        col = self._col
        parser.__init__(col)
        col.reason = b""
        col.headers = headers = []
        col.watched = watched = []
        try:
            parser.feed_data(head)
        except HttpParserError:
            if guessed:
                return None
            try:
                return rules.parse_response_head(head, self._method, self._max_headers)
            except ProtocolError:
                raise rules.upstream_error(False) from None
        except HttpParserUpgrade:
            pass
        if len(headers) > self._max_headers:
            raise rules.upstream_error(False)
        reason = col.reason
        if reason != b"OK" and rules.has_invalid_chars(reason):  # llhttp allows control characters there
            raise rules.upstream_error(False)
        status = parser.get_status_code()
        if head.startswith(b"HTTP/1.1"):
            if 200 <= status and status != 204 and status != 304 and self._method != "HEAD":
                # The common case, decided here exactly as rules.finish_response would: one
                # Content-Length (llhttp refused bad values) or one chunked Transfer-Encoding,
                # at most one Connection header.
                content_length: bytes | None = None
                te: bytes | None = None
                connection: bytes | None = None
                for name, value in watched:
                    if name == b"content-length" and content_length is None:
                        content_length = value
                    elif name == b"connection" and connection is None:
                        connection = value
                    elif name == b"transfer-encoding" and te is None:
                        te = value
                    elif name != b"upgrade":  # finish_response does not look at Upgrade
                        break
                else:
                    if connection is None:
                        keep_alive = True
                    else:
                        low = connection.lower()
                        keep_alive = low == b"keep-alive" or (low != b"close" and b"close" not in rules._tokens(connection))
                    if te is None:
                        if content_length is not None:
                            length = int(content_length)
                            response = ResponseHead(status, reason.strip(b" \t"), "1.1", headers, keep_alive, False, length)
                            return response, (_BODY_LENGTH if length else _BODY_NONE)
                    elif content_length is None and te.lower() == b"chunked":
                        response = ResponseHead(status, reason.strip(b" \t"), "1.1", headers, keep_alive, True, None)
                        return response, _BODY_CHUNKED
            version = b"HTTP/1.1"
        else:
            version = head[:8]
        return rules.finish_response(version, status, reason, headers, self._method)


# --- encoders -------------------------------------------------------------------------------

# Envoy's reason phrases (CodeUtility::toString); anything else is "Unknown", as Envoy sends.
REASONS: dict[int, bytes] = {
    code: phrase.encode()
    for code, phrase in {
        100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
        200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
        204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
        208: "Already Reported", 226: "IM Used",
        300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
        304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
        400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
        404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
        407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
        411: "Length Required", 412: "Precondition Failed", 413: "Payload Too Large",
        414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
        417: "Expectation Failed", 421: "Misdirected Request", 422: "Unprocessable Entity",
        423: "Locked", 424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
        428: "Precondition Required", 429: "Too Many Requests",
        431: "Request Header Fields Too Large",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
        503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
        506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
        510: "Not Extended", 511: "Network Authentication Required",
        599: "Last Unassigned Server Error Code",
    }.items()
}

_STATUS_LINES: dict[int, bytes] = {}

LAST_CHUNK: bytes = b"0\r\n\r\n"


def encode_request_head(method: str, target: str, headers: Headers) -> bytes:
    """``METHOD target HTTP/1.1`` and the header lines, ending with the blank line."""
    if not headers:
        return (method + " " + target + " HTTP/1.1\r\n\r\n").encode("latin-1")
    return (
        (method + " " + target + " HTTP/1.1\r\n").encode("latin-1")
        + b"\r\n".join([k + b": " + v for k, v in headers])
        + b"\r\n\r\n"
    )


def encode_response_head(status: int, headers: Headers, reason: bytes | None = None) -> bytes:
    """The status line (Envoy's reason phrase unless ``reason`` is given) and header lines."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is None:
            line = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown"))
            if len(_STATUS_LINES) < 1024:
                _STATUS_LINES[status] = line
    else:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    if not headers:
        return line + b"\r\n"
    return line + b"\r\n".join([k + b": " + v for k, v in headers]) + b"\r\n\r\n"


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data encodes to nothing (it would end the body)."""
    if not data:
        return b""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def encode_trailers(trailers: Headers) -> bytes:
    """The end of a chunked body carrying trailers (use ``LAST_CHUNK`` when there are none)."""
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + b"\r\n".join([k + b": " + v for k, v in trailers]) + b"\r\n\r\n"
