"""What Envoy 1.40 accepts on an HTTP/1.1 connection under Istio's settings, as data and small functions.

Both HTTP/1 codecs (``http1`` on llhttp, ``h11_codec`` on h11) tokenize with their own engine
and then hold the result to these rules, so the two give the same verdicts.  When an engine
refuses a head outright, the codec hands the raw head to :func:`parse_request_head` /
:func:`parse_response_head` here, a small pure-Python model of Envoy's parser (Balsa) that
decides what Envoy would have said -- some heads llhttp and h11 refuse are fine for Envoy
(LF-only lines, folded headers, tabs between request-line tokens, ``MSEARCH`` ...).

Where the rules come from (Envoy 1.40, measured on raw sockets against the real binary and
checked against ``source/common/http/http1/{balsa_parser,codec_impl}.cc``):

* Balsa: request line split on runs of SP/HT; method in a fixed list; target validated like
  http-parser (origin-form, ``*``, absolute-form, CONNECT authority); version empty (HTTP/0.9)
  or ``HTTP/d.d``; header lines need a colon and a token name; continuation lines are joined
  and CR/LF removed from values; control characters anywhere in the head are refused
  (``http1.invalid_characters``); the head (request line, headers and the empty line, not any
  leading blank lines) is at most ``max_request_headers_kb`` = 60 KiB for requests and
  80 KiB for responses; two Content-Length headers are refused even when equal.  An
  HTTP/0.9 request line (no version) is a whole request; and "is HTTP/1.1" is decided by the
  line ending in ``HTTP/1.1``, so ``GET /HTTP/1.1`` passes as an HTTP/1.1 request without
  headers (measured; we reproduce it).
* Chunked bodies: hex size (any leading zeros, at most 64 bits), then SP/HT/';' and anything
  but CR; the size line must end CRLF; after the data everything up to the next LF is
  skipped; trailers follow the header-line rules (Envoy drops them, but refuses bad ones).
* Envoy's codec: more than 100 headers is 431; CL with TE is 400; TE other than one
  ``chunked`` is 501; CONNECT with a body is 400; Connection headers nominating 10+ tokens,
  X-Forwarded-* or a pseudo header, or ``te`` with a 256+ byte TE value are 400; absolute-form
  targets must parse as http(s) URLs; anything but HTTP/1.1 is 426 (Istio leaves
  ``accept_http_10`` off); a Host must be a valid authority.
* The connection manager: an HTTP/1.1 request without Host is 400 ``missing_host_header``.

``ProtocolError.details`` carries Envoy's response code details for the same input.
"""

from __future__ import annotations

import re

from .events import Headers, ProtocolError, RequestHead, ResponseHead

# --- limits ---------------------------------------------------------------------------------

MAX_REQUEST_HEAD_BYTES = 61440  # max_request_headers_kb default (60)
MAX_RESPONSE_HEAD_BYTES = 81920  # max_response_headers_kb default (80)
MAX_HEADERS = 100  # max_headers_count default, requests and responses
MAX_CONTENT_LENGTH = 2**64 - 1
MAX_CHUNK_LINE = 65536  # a chunk-size line longer than this is refused (Envoy's own limit not measured)

# --- response code details -------------------------------------------------------------------

CODEC_ERROR = "http1.codec_error"
INVALID_CHARACTERS = "http1.invalid_characters"
HEADERS_TOO_LARGE = "http1.headers_too_large"
TOO_MANY_HEADERS = "http1.too_many_headers"
CHUNKED_CONTENT_LENGTH = "http1.content_length_and_chunked_not_allowed"
INVALID_TRANSFER_ENCODING = "http1.invalid_transfer_encoding"
BODY_DISALLOWED = "http1.body_disallowed"
CONNECTION_HEADER_REJECTED = "http1.connection_header_rejected"
INVALID_URL = "http1.invalid_url"
INVALID_SCHEME = "http1.invalid_scheme"
LOW_VERSION = "low_version"
INVALID_AUTHORITY = "http.invalid_authority"
MISSING_HOST = "missing_host_header"
DOWNSTREAM_DISCONNECT = "downstream_remote_disconnect"
UPSTREAM_PROTOCOL_ERROR = "upstream_reset_before_response_started{protocol_error}"
UPSTREAM_PROTOCOL_ERROR_AFTER = "upstream_reset_after_response_started{protocol_error}"
UPSTREAM_TERMINATION = "upstream_reset_before_response_started{connection_termination}"
UPSTREAM_TERMINATION_AFTER = "upstream_reset_after_response_started{connection_termination}"

# Envoy logs response code 0 for a client that goes away mid-request: there is no reply.
DOWNSTREAM_DISCONNECT_STATUS = 0


def codec_error() -> ProtocolError:
    return ProtocolError(400, CODEC_ERROR)


def upstream_error(started: bool) -> ProtocolError:
    """A malformed response; Envoy answers 502 if nothing went downstream yet."""
    return ProtocolError(502, UPSTREAM_PROTOCOL_ERROR_AFTER if started else UPSTREAM_PROTOCOL_ERROR)


def upstream_eof(started: bool, in_head: bool = False) -> ProtocolError:
    """The upstream closed mid-response.  Measured: mid-head is a protocol error (502)."""
    if in_head:
        return ProtocolError(502, UPSTREAM_PROTOCOL_ERROR)
    return ProtocolError(503, UPSTREAM_TERMINATION_AFTER if started else UPSTREAM_TERMINATION)


# --- character classes ----------------------------------------------------------------------

# Balsa refuses these anywhere in a head (InvalidCharsLevel::kError): CTLs but HT, LF, CR.
INVALID_HEAD_CHARS = bytes(range(0x00, 0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20)) + b"\x7f"
# RFC 9110 tchar: header names and methods.
TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALL_BYTES = bytes(range(256))
_NON_TCHARS = _ALL_BYTES.translate(None, TCHARS)
_DIGITS = b"0123456789"
_HEXDIGITS = b"0123456789abcdefABCDEF"

# nghttp2's authority characters (HeaderUtility::authorityIsValid).
_AUTHORITY_RE = re.compile(rb"[A-Za-z0-9!$%&'()*+,\-.:;=@\[\]_~]*")


def has_invalid_chars(data: bytes) -> bool:
    return len(data.translate(None, INVALID_HEAD_CHARS)) != len(data)


def is_token(name: bytes) -> bool:
    return bool(name) and not name.translate(None, TCHARS)


def authority_is_valid(host: bytes) -> bool:
    return _AUTHORITY_RE.fullmatch(host) is not None


# --- methods --------------------------------------------------------------------------------

# Balsa's list (balsa_parser.cc isMethodValid) plus QUERY, which Envoy 1.40 also lets through.
METHODS: dict[bytes, str] = {
    m.encode(): m
    for m in (
        "ACL", "BIND", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LINK", "LOCK",
        "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MOVE", "MSEARCH", "NOTIFY", "OPTIONS",
        "PATCH", "POST", "PROPFIND", "PROPPATCH", "PURGE", "PUT", "QUERY", "REBIND", "REPORT",
        "SEARCH", "SOURCE", "SUBSCRIBE", "TRACE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
    )
}

METHOD_FIRST_BYTES = frozenset(m[0] for m in METHODS)

# --- head framing ---------------------------------------------------------------------------


def skip_blank_lines(buf: bytes, pos: int) -> int:
    """Skip CR and LF bytes before a message (Envoy ignores blank lines between requests)."""
    n = len(buf)
    while pos < n and buf[pos] in (13, 10):
        pos += 1
    return pos


def find_head_end(buf: bytes, start: int) -> int:
    """Index just past the blank line (LF [CR] LF) ending the head that begins at ``start``, or -1."""
    i = buf.find(b"\n\r\n", start)
    if i < 0:
        j = buf.find(b"\n\n", start)
        return j + 2 if j >= 0 else -1
    j = buf.find(b"\n\n", start, i + 1)
    return j + 2 if j >= 0 else i + 3


def split_lines(head: bytes) -> list[bytes]:
    """The head's lines without their LF and without one trailing CR; the blank last line dropped."""
    lines = head.split(b"\n")
    del lines[-2:]  # the blank line and the empty string after its LF
    return [line[:-1] if line[-1:] == b"\r" else line for line in lines]


# --- request line ---------------------------------------------------------------------------

_SPACES_RE = re.compile(rb"[ \t]+")
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
_SCHEME_RE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://")
_PATH_QUERY_CHARS = bytes([9, 12]) + bytes(range(0x21, 0x7F))
_BALSA_HOST_CHARS = b"!$%&'()*+,-.:;=@[]_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def target_is_valid(target: bytes, is_connect: bool) -> bool:
    """Balsa's isUrlValid: the target shapes http-parser accepts."""
    if not target:
        return False
    if target[0] in (0x2F, 0x2A):  # '/' or '*'
        return not target[1:].translate(None, _PATH_QUERY_CHARS)
    rest = target
    if not is_connect:
        m = _SCHEME_RE.match(target)
        if m is None:
            return False
        rest = target[m.end():]
    q = len(rest)
    for sep in (b"/", b"?"):
        k = rest.find(sep)
        if 0 <= k < q:
            q = k
    host, path = rest[:q], rest[q:]
    return not host.translate(None, _BALSA_HOST_CHARS) and b"@@" not in host and not path.translate(None, _PATH_QUERY_CHARS)


def check_request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """Split and validate a request line (no LF, trailing CR removed) as Balsa does.

    Returns ``(method, target, version)``; ``version`` is ``b""`` for an HTTP/0.9 request.
    Checks in Balsa's order: shape, method, target, version.
    """
    if not line or line[0] in (32, 9) or 13 in line:
        raise codec_error()
    tokens = _SPACES_RE.split(line.rstrip(b" \t"))
    method = tokens[0]
    target = tokens[1] if len(tokens) > 1 else b""
    version = b" ".join(tokens[2:])
    if method not in METHODS:
        raise codec_error()
    if not target_is_valid(target, method == b"CONNECT"):
        raise codec_error()
    if version and _VERSION_RE.fullmatch(version) is None:
        raise codec_error()
    return method, target, version


def early_request_line_error(buf: bytes, start: int) -> ProtocolError | None:
    """Envoy rejects a bad request line as soon as its LF arrives, before the rest of the head.

    Measured: a lower-case method or a leading space is answered at once; a line with control
    characters waits for the head (those are judged at its end).
    """
    nl = buf.find(b"\n", start)
    if nl < 0:
        return None
    if buf[start] not in METHOD_FIRST_BYTES:
        return codec_error()
    line = buf[start:nl]
    if line[-1:] == b"\r":
        line = line[:-1]
    if has_invalid_chars(line):
        return None
    try:
        check_request_line(line)
    except ProtocolError as exc:
        return exc
    return None


# --- absolute-form and CONNECT targets (Envoy's handlePath, Url::initialize) ----------------

_URL_HOST_RE = re.compile(rb"(?:[A-Za-z0-9\-_.!~*'()%;:&=+$,]*@)?(?:(\[[0-9A-Fa-f:.]+\])|([A-Za-z0-9.\-]+))(?::([0-9]*))?")


def _authority_ok(authority: bytes, allow_userinfo: bool, need_port: bool) -> bool:
    m = _URL_HOST_RE.fullmatch(authority)
    if m is None:
        return False
    if not allow_userinfo and b"@" in authority:
        return False
    port = m.group(3)
    if port is None:
        return not need_port
    return port != b"" and int(port) <= 65535


def check_target(method: bytes, target: bytes) -> None:
    """The target rules Envoy's codec applies after parsing (handlePath)."""
    is_connect = method == b"CONNECT"
    if not is_connect and (target[0] == 0x2F or (target[0] == 0x2A and method == b"OPTIONS")):
        return
    if is_connect:
        if not _authority_ok(target, allow_userinfo=False, need_port=True):
            raise ProtocolError(400, INVALID_URL)
        return
    if target[0] == 0x2A:  # '*' with anything but OPTIONS
        raise ProtocolError(400, INVALID_URL)
    scheme, _, rest = target.partition(b"://")
    cut = len(rest)
    for sep in (b"/", b"?", b"#"):
        k = rest.find(sep)
        if 0 <= k < cut:
            cut = k
    if not _authority_ok(rest[:cut], allow_userinfo=True, need_port=False):
        raise ProtocolError(400, INVALID_URL)
    if scheme.lower() not in (b"http", b"https"):
        raise ProtocolError(400, INVALID_SCHEME)


# --- header lines ---------------------------------------------------------------------------


def parse_header_lines(lines: list[bytes], max_headers: int | None, trailers: bool = False) -> Headers:
    """Balsa's header-block rules, then Envoy's per-header checks, in their order.

    ``lines`` come from :func:`split_lines` (the start line already removed).  Names are
    lower-cased; values lose CR and LF (continuation lines are joined that way) and outer
    spaces and tabs.  ``max_headers`` None means no count limit.  In ``trailers`` Envoy counts
    nothing and does not look at Content-Length (it drops HTTP/1 trailers by default).
    """
    raw: list[tuple[bytes, bytes]] = []
    name: bytes | None = None
    value = b""
    seen_cl = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if name is None:
                raise codec_error()  # continuation line before any header
            value += b"\n" + line
            continue
        if name is not None:
            raw.append((name, value))
        colon = line.find(b":")
        if colon <= 0:
            raise codec_error()
        name, value = line[:colon], line[colon + 1:]
    if name is not None:
        raw.append((name, value))
    headers: Headers = []
    for name, value in raw:
        if b"\r" in value or b"\n" in value:
            value = value.replace(b"\r", b"").replace(b"\n", b"")
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"content-length" and not trailers:
            if seen_cl:
                raise codec_error()
            seen_cl = True
            parse_content_length(value)
        headers.append((lname, value))
    for count, (name, _value) in enumerate(raw):
        if not is_token(name):
            raise codec_error()
        if max_headers is not None and count > max_headers:
            raise ProtocolError(431, TOO_MANY_HEADERS)
    if max_headers is not None and len(raw) > max_headers:
        raise ProtocolError(431, TOO_MANY_HEADERS)
    return headers


def parse_content_length(value: bytes) -> int:
    if not value or value.translate(None, _DIGITS):
        raise codec_error()
    n = int(value)
    if n > MAX_CONTENT_LENGTH:
        raise codec_error()
    return n


# --- the checks Envoy makes once a head is parsed -------------------------------------------


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip(b" \t").lower() for t in value.split(b",")]


def _joined(headers: Headers, name: bytes) -> bytes | None:
    values = [v for k, v in headers if k == name]
    if not values:
        return None
    return b",".join(values)


# the headers finish_request / finish_response look at
_FRAMING_NAMES = frozenset((b"connection", b"upgrade", b"content-length", b"transfer-encoding", b"host"))


def _framing_headers(headers: Headers) -> dict[bytes, bytes]:
    """``{name: _joined(headers, name)}`` for the names in ``_FRAMING_NAMES`` present, in one pass."""
    found: dict[bytes, bytes] = {}
    for k, v in headers:
        if k in _FRAMING_NAMES:
            prev = found.get(k)
            found[k] = v if prev is None else prev + b"," + v
    return found


def _connection_rejected(headers: Headers, connection: bytes) -> bool:
    """Utility::sanitizeConnectionHeader's refusals (it also strips; that is the core's job)."""
    tokens = [t for t in connection.split(b",") if t]
    if len(tokens) >= 10:
        return True
    for token in tokens:
        t = token.strip(b" \t\r\n\f\v").lower()
        if t in (b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto") or t[:1] == b":":
            return True
        if t == b"te":
            te = _joined(headers, b"te")
            if te is not None and len(te) >= 256:
                return True
    return False


def _strip_h2c(headers: Headers) -> Headers:
    """Envoy ignores h2c upgrades: drop Upgrade, HTTP2-Settings and those Connection tokens."""
    out: Headers = []
    for k, v in headers:
        if k in (b"upgrade", b"http2-settings"):
            continue
        if k == b"connection":
            kept = [t for t in v.split(b",") if t.strip(b" \t").lower() not in (b"upgrade", b"http2-settings")]
            v = b",".join(kept)
            if not v:
                continue
        out.append((k, v))
    return out


def finish_request(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: Headers,
) -> RequestHead:
    """Envoy's onHeadersComplete checks for a tokenized request, in Envoy's order; build the head.

    ``headers`` are lower-cased and stripped, count and per-line checks already done.  Returns
    the ``RequestHead`` (``upgrade`` set for CONNECT and non-h2c upgrades) or raises.
    """
    found = _framing_headers(headers)  # only Connection changes when the headers do below
    connection = found.get(b"connection")
    upgrade = False
    if connection is not None and b"upgrade" in _tokens(connection):
        up = found.get(b"upgrade")
        if up is not None:
            if up.lower() == b"h2c":
                headers = _strip_h2c(headers)
                connection = _joined(headers, b"connection")
            else:
                upgrade = True
    is_connect = method == b"CONNECT"
    content_length: int | None = None
    cl = found.get(b"content-length")  # at most one: Balsa refuses a second
    if is_connect:
        if cl is not None:
            if cl != b"0":
                raise ProtocolError(400, BODY_DISALLOWED)
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            cl = None
        upgrade = True
    te = found.get(b"transfer-encoding")
    if te is not None and cl is not None:
        raise ProtocolError(400, CHUNKED_CONTENT_LENGTH)
    chunked = False
    if te is not None:
        if te.lower() != b"chunked" or is_connect:
            raise ProtocolError(501, INVALID_TRANSFER_ENCODING)
        chunked = True
    if cl is not None:
        content_length = int(cl)
    if not upgrade and connection is not None and _connection_rejected(headers, connection):
        raise ProtocolError(400, CONNECTION_HEADER_REJECTED)
    check_target(method, target)
    if version != b"HTTP/1.1":
        raise ProtocolError(426, LOW_VERSION)
    host = found.get(b"host")
    absolute = not is_connect and target[0] not in (0x2F, 0x2A)
    if not (absolute or is_connect):  # else Envoy takes :authority from the target
        if host is None:
            raise ProtocolError(400, MISSING_HOST)
        if not authority_is_valid(host):
            raise ProtocolError(400, INVALID_AUTHORITY)
    keep_alive = connection is None or b"close" not in _tokens(connection)
    return RequestHead(
        METHODS[method],
        target.decode("latin-1"),
        "1.1",
        headers,
        keep_alive,
        chunked,
        content_length,
        upgrade,
    )


def headerless(buf: bytes, start: int, nl: int) -> bool:
    """Whether the request line ``buf[start:nl]`` has no version: an HTTP/0.9 request, which
    Balsa ends at that line (what follows is the next message)."""
    line = buf[start:nl]
    if line[-1:] == b"\r":
        line = line[:-1]
    return len(_SPACES_RE.split(line.strip(b" \t"))) < 3


def parse_request_head(head: bytes, max_headers: int = MAX_HEADERS) -> RequestHead:
    """A whole request head the way Envoy judges it: first byte through the blank line, or
    just the request line of an HTTP/0.9 request (see :func:`headerless`)."""
    if head[0] not in METHOD_FIRST_BYTES:
        raise codec_error()
    if has_invalid_chars(head):
        raise ProtocolError(400, INVALID_CHARACTERS)
    nl = head.find(b"\n")
    line = head[:nl] if head[nl - 1:nl] != b"\r" else head[:nl - 1]
    method, target, version = check_request_line(line)
    if not version:
        # HTTP/0.9: no header lines.  Envoy decides "is HTTP/1.1" by the line's ending
        # (BalsaParser::isHttp11), so a target ending in HTTP/1.1 passes as 1.1.
        return finish_request(method, target, b"HTTP/1.1" if line.endswith(b"HTTP/1.1") else b"", [])
    headers = parse_header_lines(split_lines(head)[1:], max_headers)
    return finish_request(method, target, version, headers)


# --- responses ------------------------------------------------------------------------------

_STATUS_LINE_RE = re.compile(rb"(HTTP/[0-9]\.[0-9])[ \t]+([0-9]+)(?:[ \t]+(.*))?[ \t]*")

BODY_NONE = 0  # the head is the whole response
BODY_LENGTH = 1  # content_length bytes follow
BODY_CHUNKED = 2
BODY_UNTIL_CLOSE = 3  # close-delimited, or raw bytes after 101


def parse_status_line(line: bytes) -> tuple[bytes, int, bytes]:
    m = _STATUS_LINE_RE.fullmatch(line)
    if m is None or 13 in line:
        raise upstream_error(False)
    return m.group(1), int(m.group(2)), (m.group(3) or b"").rstrip(b" \t")


def finish_response(
    version: bytes,
    status: int,
    reason: bytes,
    headers: Headers,
    request_method: str,
) -> tuple[ResponseHead, int]:
    """Envoy's client-codec checks for a tokenized response; returns the head and its body mode."""
    found = _framing_headers(headers)
    cl = found.get(b"content-length")
    te = found.get(b"transfer-encoding")
    if te is not None and cl is not None:
        raise upstream_error(False)
    chunked = False
    if te is not None:
        if te.lower() != b"chunked":
            raise upstream_error(False)
        chunked = True
    if status < 200 or status == 204:
        if te is not None:
            raise upstream_error(False)
        if cl is not None:
            if cl != b"0":
                raise upstream_error(False)
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            cl = None
    content_length = int(cl) if cl is not None else None
    connection = found.get(b"connection")
    tokens = _tokens(connection) if connection is not None else []
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    if status == 101:
        mode = BODY_UNTIL_CLOSE
        keep_alive = False
    elif 100 <= status < 200 or status in (204, 304) or request_method == "HEAD":
        mode = BODY_NONE
    elif chunked:
        mode = BODY_CHUNKED
    elif content_length is not None:
        mode = BODY_LENGTH if content_length else BODY_NONE
    else:
        mode = BODY_UNTIL_CLOSE
        keep_alive = False
    head = ResponseHead(status, reason.strip(b" \t"), version[5:].decode(), headers, keep_alive, chunked, content_length)
    return head, mode


def parse_response_head(head: bytes, request_method: str, max_headers: int = MAX_HEADERS) -> tuple[ResponseHead, int]:
    """A whole response head the way Envoy's upstream codec judges it (errors are 502)."""
    if has_invalid_chars(head):
        raise upstream_error(False)
    lines = split_lines(head)
    version, status, reason = parse_status_line(lines[0])
    try:
        headers = parse_header_lines(lines[1:], max_headers)
    except ProtocolError:
        raise upstream_error(False) from None
    return finish_response(version, status, reason, headers, request_method)


# --- chunked bodies -------------------------------------------------------------------------

_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t;][^\r]*)?")


def parse_chunk_size(line: bytes) -> int:
    """A chunk-size line including its LF; returns the size or -1 if Envoy would refuse it.

    Balsa: hex digits, then optionally SP/HT/';' and anything but CR; the line must end CRLF
    (a bare LF or a lone CR is refused); sizes past 64 bits are refused.  Leading zeros,
    trailing spaces and extensions are fine.
    """
    if line[-2:] != b"\r\n":
        return -1
    m = _CHUNK_SIZE_RE.fullmatch(line, 0, len(line) - 2)
    if m is None:
        return -1
    size = int(m.group(1), 16)
    return size if size <= MAX_CONTENT_LENGTH else -1


class ChunkedDecoder:
    """Envoy's chunked framing as a small state machine (the reference; ``http1`` inlines its own).

    ``feed(buf, pos)`` consumes from ``buf[pos:]`` and returns ``(pos, data, done)``: the new
    position, payload bytes decoded (possibly empty), and whether the message ended -- then
    ``trailers`` holds the trailer fields (or None).  Raises ``ProtocolError`` on bad framing.
    After a chunk's data Balsa skips everything up to the next LF (it does not insist on CRLF);
    trailers follow the header-line rules and share the head size limit.
    """

    __slots__ = ("_state", "_remaining", "_max_trailer_bytes", "trailers", "error")

    SIZE, DATA, DATA_END, TRAILERS = range(4)

    def __init__(self, max_trailer_bytes: int = MAX_REQUEST_HEAD_BYTES) -> None:
        self._state = self.SIZE
        self._remaining = 0
        self._max_trailer_bytes = max_trailer_bytes
        self.trailers: Headers | None = None
        self.error: ProtocolError | None = None

    def feed(self, buf: bytes, pos: int) -> tuple[int, bytes, bool]:
        """Decode from ``buf[pos:]``.  On a framing error after some payload in the same call,
        that payload is returned and the error left in ``error`` for the caller to raise next."""
        out: list[bytes] = []
        try:
            return self._feed(buf, pos, out)
        except ProtocolError as exc:
            if not out:
                raise
            self.error = exc
            return len(buf), b"".join(out), False

    def _feed(self, buf: bytes, pos: int, out: list[bytes]) -> tuple[int, bytes, bool]:
        n = len(buf)
        while pos < n:
            state = self._state
            if state == self.SIZE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if buf.find(b"\r", pos, n - 1) >= 0 or n - pos > MAX_CHUNK_LINE:
                        raise codec_error()  # a CR not followed by LF, or no end in sight
                    return pos, b"".join(out), False
                size = parse_chunk_size(buf[pos:nl + 1])
                if size < 0:
                    raise codec_error()
                pos = nl + 1
                if size == 0:
                    self._state = self.TRAILERS
                else:
                    self._remaining = size
                    self._state = self.DATA
            elif state == self.DATA:
                take = min(self._remaining, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self.DATA_END
            elif state == self.DATA_END:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    return n, b"".join(out), False
                pos = nl + 1
                self._state = self.SIZE
            else:  # TRAILERS
                if buf[pos:pos + 1] == b"\n" or buf[pos:pos + 2] == b"\r\n":
                    self.trailers = None
                    return pos + (1 if buf[pos] == 10 else 2), b"".join(out), True
                if buf[pos:pos + 1] == b"\r" and pos + 1 == n:
                    return pos, b"".join(out), False
                end = find_head_end(buf, pos)
                if end < 0:
                    if n - pos > self._max_trailer_bytes:
                        raise ProtocolError(431, HEADERS_TOO_LARGE)
                    return pos, b"".join(out), False
                block = buf[pos:end]
                if len(block) > self._max_trailer_bytes:
                    raise ProtocolError(431, HEADERS_TOO_LARGE)
                self.trailers = parse_trailers(block)
                return end, b"".join(out), True
        return pos, b"".join(out), False


def parse_trailers(block: bytes) -> Headers:
    """A trailer block (field lines through the blank line)."""
    if has_invalid_chars(block):
        raise ProtocolError(400, INVALID_CHARACTERS)
    lines = block.split(b"\n")
    del lines[-2:]
    lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
    return parse_header_lines(lines, None, trailers=True)
