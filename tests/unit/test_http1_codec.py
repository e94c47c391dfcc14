"""The HTTP/1.1 codecs, both of them, held to Envoy 1.40's behaviour under Istio.

One suite, parametrized over ``http1`` (llhttp) and ``h11_codec`` (h11).  The verdict tables
(``REQUEST_CASES``, ``RESPONSE_CASES``) were recorded from a real Envoy 1.40 on raw sockets
(``tests/integration/test_http1_verdicts_envoy.py`` re-checks them against the binary); here
they run without Envoy.

An outcome is recorded per message: ``OK`` when a request ends (or, for an upgrade, when its
head arrives), ``(status, details)`` for a ``ProtocolError``.  A message still incomplete when
the input runs out records nothing -- Envoy does not answer it either.
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest

from meshproxy.protocols import h11_codec, http1
from meshproxy.protocols import h1_rules as rules
from meshproxy.protocols.events import Headers, ProtocolError, RequestHead, ResponseHead

CODECS = [pytest.param(http1, id="http1"), pytest.param(h11_codec, id="h11")]

OK = "ok"
CODEC = (400, rules.CODEC_ERROR)
INVALID_CHARS = (400, rules.INVALID_CHARACTERS)
LOW_VERSION = (426, rules.LOW_VERSION)
INVALID_URL = (400, rules.INVALID_URL)
UPSTREAM_PROTOCOL_ERROR = (502, rules.UPSTREAM_PROTOCOL_ERROR)
UPSTREAM_TERMINATION = (503, rules.UPSTREAM_TERMINATION)


# --- recorders ------------------------------------------------------------------------------


class RequestRecorder:
    """Records every call a ServerCodec makes, and the per-message outcomes."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.outcomes: list[object] = []
        self.heads: list[RequestHead] = []
        self.errors: list[ProtocolError] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.method, head.target, head.http_version, list(head.headers),
                            head.keep_alive, head.chunked, head.content_length, head.upgrade))
        if head.upgrade:
            self.outcomes.append(OK)

    def on_request_data(self, data: bytes) -> None:
        assert isinstance(data, bytes) and data
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))

    def on_request_end(self, trailers: Headers | None) -> None:
        self.events.append(("end", trailers))
        if not (self.heads and self.heads[-1].upgrade):
            self.outcomes.append(OK)

    def on_protocol_error(self, error: ProtocolError) -> None:
        self.errors.append(error)
        self.events.append(("error", error.status, error.details))
        self.outcomes.append((error.status, error.details))

    @property
    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "data")


class ResponseRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.heads: list[ResponseHead] = []
        self.errors: list[ProtocolError] = []

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)
        self.events.append(("head", head.status, head.reason, head.http_version, list(head.headers),
                            head.keep_alive, head.chunked, head.content_length))

    def on_response_data(self, data: bytes) -> None:
        assert isinstance(data, bytes) and data
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))

    def on_response_end(self, trailers: Headers | None) -> None:
        self.events.append(("end", trailers))

    def on_protocol_error(self, error: ProtocolError) -> None:
        self.errors.append(error)
        self.events.append(("error", error.status, error.details))

    @property
    def first_outcome(self) -> object:
        """The final status Envoy would forward, or the error it would answer with."""
        for event in self.events:
            if event[0] == "head" and not (100 <= event[1] < 200 and event[1] != 101):
                return event[1]
            if event[0] == "error":
                return (event[1], event[2])
        return None


def feed_requests(codec_mod: ModuleType, data: bytes | list[bytes], **kwargs: Any) -> RequestRecorder:
    rec = RequestRecorder()
    codec = codec_mod.ServerCodec(rec, **kwargs)
    for piece in data if isinstance(data, list) else [data]:
        codec.feed(piece)
    return rec


def feed_responses(codec_mod: ModuleType, method: str, data: bytes | list[bytes], eof: bool = True) -> ResponseRecorder:
    rec = ResponseRecorder()
    codec = codec_mod.ClientCodec(rec)
    codec.expect(method)
    for piece in data if isinstance(data, list) else [data]:
        codec.feed(piece)
    if eof:
        codec.feed_eof()
    return rec


# --- request inputs -------------------------------------------------------------------------

H = b"Host: a\r\n"


def R(line: bytes = b"GET / HTTP/1.1", hdrs: bytes = H, body: bytes = b"") -> bytes:
    return line + b"\r\n" + hdrs + b"\r\n" + body


def POST(hdrs: bytes, body: bytes = b"") -> bytes:
    return R(b"POST / HTTP/1.1", H + hdrs, body)


CH = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def pad_head(total: int, lf: bool = False) -> bytes:
    nl = b"\n" if lf else b"\r\n"
    base = b"GET / HTTP/1.1" + nl + b"Host: a" + nl + b"X-Pad: " + nl + nl
    return b"GET / HTTP/1.1" + nl + b"Host: a" + nl + b"X-Pad: " + b"v" * (total - len(base)) + nl + nl


def pad_url(total: int) -> bytes:
    base = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    return b"GET /" + b"p" * (total - len(base)) + b" HTTP/1.1\r\nHost: a\r\n\r\n"


def many(n: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"


# Envoy's verdicts, as measured (status and response code details); OK = forwarded (or refused
# later by the connection manager for reasons that are not the codec's: routes, path
# normalization, upgrades not configured ...).
REQUEST_CASES: list[tuple[str, bytes | list[bytes], list[object]]] = [
    ("plain GET", R(), [OK]),
    ("pipelined two", R() + R(b"GET /x HTTP/1.1"), [OK, OK]),
    # --- Content-Length / Transfer-Encoding (smuggling) ---
    ("CL and TE", POST(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), [(400, "http1.content_length_and_chunked_not_allowed")]),
    ("TE and CL", POST(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), [(400, "http1.content_length_and_chunked_not_allowed")]),
    ("CL 0 and TE identity", POST(b"Content-Length: 0\r\nTransfer-Encoding: identity\r\n"), [(400, "http1.content_length_and_chunked_not_allowed")]),
    ("two CL equal", POST(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), [CODEC]),
    ("two CL different", POST(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), [CODEC]),
    ("CL list", POST(b"Content-Length: 5, 5\r\n", b"hello"), [CODEC]),
    ("CL letters", POST(b"Content-Length: 5x\r\n", b"hello"), [CODEC]),
    ("CL negative", POST(b"Content-Length: -5\r\n", b"hello"), [CODEC]),
    ("CL plus", POST(b"Content-Length: +5\r\n", b"hello"), [CODEC]),
    ("CL empty", POST(b"Content-Length: \r\n"), [CODEC]),
    ("CL hex", POST(b"Content-Length: 0x5\r\n", b"hello"), [CODEC]),
    ("CL inner space", POST(b"Content-Length: 1 2\r\n"), [CODEC]),
    ("CL overflow", POST(b"Content-Length: 99999999999999999999999\r\n"), [CODEC]),
    ("CL 2^64", POST(b"Content-Length: 18446744073709551616\r\n"), [CODEC]),
    ("CL leading zeros", POST(b"Content-Length: 0005\r\n", b"hello"), [OK]),
    ("CL 00", POST(b"Content-Length: 00\r\n"), [OK]),
    ("CL tab around", POST(b"Content-Length:\t5\t\r\n", b"hello"), [OK]),
    ("CL folded value", POST(b"Content-Length:\r\n 5\r\n", b"hello"), [OK]),
    ("CL folded two values", POST(b"Content-Length: 5\r\n 5\r\n", b"hello"), [CODEC]),
    ("CL space before colon", POST(b"Content-Length : 5\r\n", b"hello"), [CODEC]),
    ("CL 0 on GET", R(hdrs=H + b"Content-Length: 0\r\n"), [OK]),
    ("TE chunked, identity", POST(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE identity", POST(b"Transfer-Encoding: identity\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE xchunked", POST(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE gzip, chunked", POST(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE chunked twice", POST(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE trailing comma", POST(b"Transfer-Encoding: chunked,\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE empty", POST(b"Transfer-Encoding:\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE Chunked", POST(b"Transfer-Encoding: Chunked\r\n", b"0\r\n\r\n"), [OK]),
    ("TE CHUNKED upper name", POST(b"TRANSFER-ENCODING: CHUNKED\r\n", b"0\r\n\r\n"), [OK]),
    ("TE spaces around", POST(b"Transfer-Encoding:  chunked \r\n", b"0\r\n\r\n"), [OK]),
    ("TE tab", POST(b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n"), [OK]),
    ("TE space before colon", POST(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), [CODEC]),
    ("TE value on folded line", POST(b"Transfer-Encoding:\r\n chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), [OK]),
    ("TE chunked then folded junk", POST(b"Transfer-Encoding: chunked\r\n x\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("TE hidden in folded line", POST(b"X-A: b\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), [OK, CODEC]),
    ("TE and two CL", POST(b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\nContent-Length: 0\r\n"), [CODEC]),
    ("no Host and TE identity", R(b"POST / HTTP/1.1", b"Transfer-Encoding: identity\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("no Host and bad CL", R(b"POST / HTTP/1.1", b"Content-Length: x\r\n"), [CODEC]),
    ("CL body then next request", POST(b"Content-Length: 2\r\n", b"hi") + R(b"GET /n HTTP/1.1"), [OK, OK]),
    ("CL body then garbage", POST(b"Content-Length: 2\r\n", b"hiXYZ\r\n\r\n"), [OK, CODEC]),
    ("CL body then CRLF then request", POST(b"Content-Length: 2\r\n", b"hi\r\n") + R(b"GET /n HTTP/1.1"), [OK, OK]),
    ("CL body holding a whole request", POST(b"Content-Length: %d\r\n" % len(R(b"GET /s HTTP/1.1")), R(b"GET /s HTTP/1.1")), [OK]),
    ("TE chunked and TE x", POST(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("blank line before chunk size", CH + b"5\r\nhello\r\n\r\n0\r\n\r\n", [CODEC]),
    ("chunk data with NUL and CRLF", CH + b"7\r\nh\x00\r\nllo\r\n0\r\n\r\n", [OK]),
    ("chunked body smuggles a request", CH + b"0\r\n\r\n" + R(b"GET /admin HTTP/1.1") + b"X", [OK, OK]),
    # --- chunked bodies ---
    ("chunked ok", CH + b"5\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk 0x5", CH + b"0x5\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk 5g", CH + b"5g\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk leading space", CH + b" 5\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk trailing space", CH + b"5 \r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk trailing spaces", CH + b"5   \r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk trailing tab", CH + b"5\t\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk negative", CH + b"-5\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk plus", CH + b"+5\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk empty size", CH + b"\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk > 64 bits", CH + b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk 2^64", CH + b"10000000000000000\r\nhello", [CODEC]),
    ("chunk leading zeros", CH + b"0005\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk 30 leading zeros", CH + b"000000000000000000000000000005\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk uppercase hex", CH + b"A\r\nhellohello\r\n0\r\n\r\n", [OK]),
    ("chunk extension", CH + b"5;a=b\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk extension spaced", CH + b"5; a = b\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk extension quoted", CH + b'5;a="b c"\r\nhello\r\n0\r\n\r\n', [OK]),
    ("chunk extension bare", CH + b"5;\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk space then extension", CH + b"5 ;a=b\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk space then junk", CH + b"5 x\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk tab then junk", CH + b"5\tx\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk space then digit", CH + b"5 5\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk extension with ctl", CH + b"5;a\x01\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk extension with UTF-8", CH + b"5;a\xc3\xa9\r\nhello\r\n0\r\n\r\n", [OK]),
    ("chunk extension with bare LF", CH + b"5;a\nb\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk extension with bare CR", CH + b"5;a\rb\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk size then NUL", CH + b"5\x00\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk size then comma", CH + b"5,\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk size then =", CH + b"5=\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk semicolon first", CH + b";5\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk size CR CR LF", CH + b"5\r\r\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunk size LF only", CH + b"5\nhello\r\n0\r\n\r\n", [CODEC]),
    ("chunked LF only everywhere", CH + b"5\nhello\n0\n\n", [CODEC]),
    ("chunk data then LF", CH + b"5\r\nhello\n0\r\n\r\n", [OK]),
    ("chunk data then junk", CH + b"5\r\nhelloX\r\n0\r\n\r\n", [OK]),
    ("chunk data short", CH + b"5\r\nhell\r\n0\r\n\r\n", [OK]),
    ("chunk data then 5000 junk bytes", CH + b"5\r\nhello" + b"J" * 5000 + b"\r\n0\r\n\r\n", [OK]),
    ("last chunk extension", CH + b"5\r\nhello\r\n0;x=y\r\n\r\n", [OK]),
    ("last chunk 000", CH + b"5\r\nhello\r\n000\r\n\r\n", [OK]),
    ("last chunk trailing space", CH + b"5\r\nhello\r\n0 \r\n\r\n", [OK]),
    ("last chunk then LF", CH + b"5\r\nhello\r\n0\r\n\n", [OK]),
    ("trailers", CH + b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n", [OK]),
    ("trailer without colon", CH + b"0\r\nXT\r\n\r\n", [CODEC]),
    ("trailer bad name", CH + b"0\r\nX T: 1\r\n\r\n", [CODEC]),
    ("trailer with ctl", CH + b"0\r\nX-T: a\x01\r\n\r\n", [INVALID_CHARS]),
    ("trailer folded", CH + b"0\r\nX-T: a\r\n b\r\n\r\n", [OK]),
    ("trailer space before colon", CH + b"0\r\nX-T : a\r\n\r\n", [CODEC]),
    ("trailer empty name", CH + b"0\r\n: a\r\n\r\n", [CODEC]),
    ("trailer LF end", CH + b"0\r\nX-T: 1\n\n", [OK]),
    ("trailer whitespace line", CH + b"0\r\n \r\n\r\n", [CODEC]),
    ("trailer Content-Length", CH + b"0\r\nContent-Length: 5\r\n\r\n", [OK]),
    ("trailer two Content-Length", CH + b"0\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", [OK]),
    ("trailer Transfer-Encoding", CH + b"0\r\nTransfer-Encoding: chunked\r\n\r\n", [OK]),
    ("120 trailers", CH + b"0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(120)) + b"\r\n", [OK]),
    ("trailers too large", CH + b"0\r\nX-T: " + b"v" * 61440 + b"\r\n\r\n", [(431, "http1.headers_too_large")]),
    ("chunked then next request", CH + b"0\r\n\r\n" + R(b"GET /n HTTP/1.1"), [OK, OK]),
    ("last chunk missing CRLF then request", CH + b"0\r\n" + R(b"GET /n HTTP/1.1"), [CODEC]),
    ("chunked then garbage", CH + b"5\r\nhello\r\n0\r\n\r\nXYZ\r\n\r\n", [OK, CODEC]),
    ("chunked in pieces", [CH + b"5\r\nhe", b"llo\r\n", b"0\r\n", b"\r\n"], [OK]),
    ("chunk split inside", [CH + b"a\r\nhel", b"lohello\r\n0\r\n\r\n"], [OK]),
    # --- versions ---
    ("HTTP/1.0", R(b"GET / HTTP/1.0"), [LOW_VERSION]),
    ("HTTP/1.0 no Host", R(b"GET / HTTP/1.0", b""), [LOW_VERSION]),
    ("HTTP/0.9", b"GET /\r\n\r\n", [LOW_VERSION]),
    ("HTTP/2.0", R(b"GET / HTTP/2.0"), [LOW_VERSION]),
    ("HTTP/1.2", R(b"GET / HTTP/1.2"), [LOW_VERSION]),
    ("HTTP/3.1", R(b"GET / HTTP/3.1"), [LOW_VERSION]),
    ("missing version", R(b"GET / "), [LOW_VERSION]),
    ("lower-case version", R(b"GET / http/1.1"), [CODEC]),
    ("HTTP/1.10", R(b"GET / HTTP/1.10"), [CODEC]),
    ("HTTP/01.1", R(b"GET / HTTP/01.1"), [CODEC]),
    ("HTTP/1.1x", R(b"GET / HTTP/1.1x"), [CODEC]),
    ("xHTTP/1.1", R(b"GET / xHTTP/1.1"), [CODEC]),
    ("HTTP/1", R(b"GET / HTTP/1"), [CODEC]),
    ("HTTP/11", R(b"GET / HTTP/11"), [CODEC]),
    ("version then junk", R(b"GET / HTTP/1.1 foo"), [CODEC]),
    ("four tokens", R(b"GET / a HTTP/1.1"), [CODEC]),
    ("method only", R(b"GET"), [CODEC]),
    ("HTTP/1.0 CL and TE", R(b"POST / HTTP/1.0", H + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"), [(400, "http1.content_length_and_chunked_not_allowed")]),
    ("HTTP/1.0 TE identity", R(b"POST / HTTP/1.0", H + b"Transfer-Encoding: identity\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    ("HTTP/1.0 bad target", R(b"GET * HTTP/1.0"), [INVALID_URL]),
    ("HTTP/0.9 line only", b"GET /\r\n", [LOW_VERSION]),
    ("HTTP/0.9 target ending in HTTP/1.1", b"GET /HTTP/1.1\r\n", [(400, "missing_host_header")]),
    ("HTTP/0.9 ending in HTTP/1.1, header after", b"GET /HTTP/1.1\r\nHost: a\r\n\r\n", [(400, "missing_host_header")]),
    ("HTTP/0.9 ending in HTTP/1.1 and a space", b"GET /HTTP/1.1 \r\nHost: a\r\n\r\n", [LOW_VERSION]),
    ("HTTP/0.9 ending in http/1.1", b"GET /http/1.1\r\n", [LOW_VERSION]),
    ("HTTP/0.9 with a tab", b"GET\t/HTTP/1.1\r\n", [(400, "missing_host_header")]),
    ("HTTP/0.9 absolute-form ending in HTTP/1.1", b"GET http://b/HTTP/1.1\r\nX: y\r\n\r\n", [OK, CODEC]),
    ("HTTP/0.9 absolute-form then a request", b"GET http://b/HTTP/1.1\r\n" + R(b"GET /n HTTP/1.1"), [OK, OK]),
    ("method, two spaces, version", R(b"POST  HTTP/1.1"), [CODEC]),
    ("method and version only", R(b"GET HTTP/1.1"), [CODEC]),
    ("HTTP/1.0 two CL", R(b"GET / HTTP/1.0", H + b"Content-Length: 0\r\nContent-Length: 0\r\n"), [CODEC]),
    # --- request line shape ---
    ("two spaces after method", R(b"GET  / HTTP/1.1"), [OK]),
    ("two spaces before version", R(b"GET /  HTTP/1.1"), [OK]),
    ("tabs between tokens", R(b"GET\t/\tHTTP/1.1"), [OK]),
    ("space after version", R(b"GET / HTTP/1.1 "), [OK]),
    ("leading CRLF", b"\r\n" + R(), [OK]),
    ("leading CRLF CRLF", b"\r\n\r\n" + R(), [OK]),
    ("leading LF", b"\n" + R(), [OK]),
    ("leading CR", b"\r" + R(), [OK]),
    ("leading space", R(b" GET / HTTP/1.1"), [CODEC]),
    ("leading tab", R(b"\tGET / HTTP/1.1"), [CODEC]),
    ("leading NUL", R(b"\x00GET / HTTP/1.1"), [CODEC]),
    ("CRLF between requests", R() + b"\r\n" + R(b"GET /n HTTP/1.1"), [OK, OK]),
    ("blank lines only", b"\r\n\r\n", []),
    ("empty target", R(b"GET  HTTP/1.1"), [CODEC]),
    # --- targets ---
    ("absolute-form", R(b"GET http://b/x HTTP/1.1"), [OK]),
    ("absolute-form https", R(b"GET https://b/x?q HTTP/1.1"), [OK]),
    ("absolute-form no path", R(b"GET http://b HTTP/1.1"), [OK]),
    ("absolute-form upper scheme", R(b"GET HTTP://b/x HTTP/1.1"), [OK]),
    ("absolute-form ftp", R(b"GET ftp://b/x HTTP/1.1"), [(400, "http1.invalid_scheme")]),
    ("absolute-form h2 scheme", R(b"GET h2://b/x HTTP/1.1"), [(400, "http1.invalid_scheme")]),
    ("absolute-form digit scheme", R(b"GET 1h://b/x HTTP/1.1"), [CODEC]),
    ("absolute-form ht1p", R(b"GET ht1p://b/x HTTP/1.1"), [(400, "http1.invalid_scheme")]),
    ("absolute-form one slash", R(b"GET http:/b/x HTTP/1.1"), [CODEC]),
    ("absolute-form port 65535", R(b"GET http://b:65535/x HTTP/1.1"), [OK]),
    ("absolute-form port 65536", R(b"GET http://b:65536/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form empty port", R(b"GET http://b:/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form port letters", R(b"GET http://b:8a/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form empty host", R(b"GET http:///x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form IPv6", R(b"GET http://[::1]:80/x HTTP/1.1"), [OK]),
    ("absolute-form bad IPv6", R(b"GET http://[zz]/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form userinfo", R(b"GET http://u:p@b/x HTTP/1.1"), [OK]),
    ("absolute-form empty host after @", R(b"GET http://b@/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form @@", R(b"GET http://u@@b/x HTTP/1.1"), [CODEC]),
    ("absolute-form underscore host", R(b"GET http://a_b/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form percent host", R(b"GET http://%41/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form ! in host", R(b"GET http://b!/x HTTP/1.1"), [INVALID_URL]),
    ("absolute-form query only", R(b"GET http://b?q HTTP/1.1"), [OK]),
    ("absolute-form fragment in host", R(b"GET http://b#f HTTP/1.1"), [CODEC]),
    ("absolute-form space in host", R(b"GET http://a b/x HTTP/1.1"), [CODEC]),
    ("absolute-form UTF-8 host", R(b"GET http://\xc3\xa9/x HTTP/1.1"), [CODEC]),
    ("absolute-form no Host header", R(b"GET http://b/x HTTP/1.1", b""), [OK]),
    ("relative without slash", R(b"GET a/b HTTP/1.1"), [CODEC]),
    ("query-only target", R(b"GET ?a HTTP/1.1"), [CODEC]),
    ("OPTIONS *", R(b"OPTIONS * HTTP/1.1"), [OK]),
    ("OPTIONS *x", R(b"OPTIONS *x HTTP/1.1"), [OK]),
    ("GET *", R(b"GET * HTTP/1.1"), [INVALID_URL]),
    ("double slash", R(b"GET //x HTTP/1.1"), [OK]),
    ("path specials", R(b'GET /"<>\\^`{|}[]~ HTTP/1.1'), [OK]),
    ("path DEL", R(b"GET /a\x7fb HTTP/1.1"), [INVALID_CHARS]),
    ("path tab", R(b"GET /a\tb HTTP/1.1"), [CODEC]),
    ("path form feed", R(b"GET /a\x0cb HTTP/1.1"), [INVALID_CHARS]),
    ("path CR", R(b"GET /a\rb HTTP/1.1"), [CODEC]),
    ("path ctl", R(b"GET /a\x01b HTTP/1.1"), [INVALID_CHARS]),
    ("path NUL", R(b"GET /a\x00b HTTP/1.1"), [INVALID_CHARS]),
    ("path UTF-8", "GET /é HTTP/1.1\r\nHost: a\r\n\r\n".encode(), [CODEC]),
    ("path 0x80", R(b"GET /a\x80b HTTP/1.1"), [CODEC]),
    ("path space", R(b"GET /a b HTTP/1.1"), [CODEC]),
    ("CONNECT authority", R(b"CONNECT a:80 HTTP/1.1", b"Host: a:80\r\n"), [OK]),
    ("CONNECT no port", R(b"CONNECT a HTTP/1.1"), [INVALID_URL]),
    ("CONNECT empty port", R(b"CONNECT a: HTTP/1.1"), [INVALID_URL]),
    ("CONNECT IPv6", R(b"CONNECT [::1]:443 HTTP/1.1"), [OK]),
    ("CONNECT port letters", R(b"CONNECT a:b HTTP/1.1"), [INVALID_URL]),
    ("CONNECT absolute URL", R(b"CONNECT http://a:80 HTTP/1.1"), [INVALID_URL]),
    ("CONNECT with path", R(b"CONNECT a:80/x HTTP/1.1"), [INVALID_URL]),
    ("CONNECT userinfo", R(b"CONNECT u@a:80 HTTP/1.1"), [INVALID_URL]),
    ("CONNECT underscore", R(b"CONNECT a_b:80 HTTP/1.1"), [INVALID_URL]),
    ("CONNECT port too big", R(b"CONNECT a:99999 HTTP/1.1"), [INVALID_URL]),
    ("CONNECT *", R(b"CONNECT * HTTP/1.1"), [INVALID_URL]),
    ("CONNECT origin path", R(b"CONNECT /x HTTP/1.1"), [INVALID_URL]),
    ("CONNECT CL 0", R(b"CONNECT a:80 HTTP/1.1", b"Host: a:80\r\nContent-Length: 0\r\n"), [OK]),
    ("CONNECT CL 5", R(b"CONNECT a:80 HTTP/1.1", b"Host: a:80\r\nContent-Length: 5\r\n", b"hello"), [(400, "http1.body_disallowed")]),
    ("CONNECT TE", R(b"CONNECT a:80 HTTP/1.1", b"Host: a:80\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), [(501, "http1.invalid_transfer_encoding")]),
    # --- header lines ---
    ("header name with space", R(hdrs=H + b"X A: b\r\n"), [CODEC]),
    ('header name with "', R(hdrs=H + b'X"A: b\r\n'), [CODEC]),
    ("header name with @", R(hdrs=H + b"X@A: b\r\n"), [CODEC]),
    ("header name with /", R(hdrs=H + b"X/A: b\r\n"), [CODEC]),
    ("header name with {", R(hdrs=H + b"X{A: b\r\n"), [CODEC]),
    ("header name UTF-8", R(hdrs=H + b"X\xc3\xa9: b\r\n"), [CODEC]),
    ("header name ctl", R(hdrs=H + b"X\x01A: b\r\n"), [INVALID_CHARS]),
    ("header name tab", R(hdrs=H + b"X\tA: b\r\n"), [CODEC]),
    ("header name DEL", R(hdrs=H + b"X\x7fA: b\r\n"), [INVALID_CHARS]),
    ("header name underscore", R(hdrs=H + b"X_A: b\r\n"), [OK]),
    ("header without colon", R(hdrs=H + b"XA\r\n"), [CODEC]),
    ("header empty name", R(hdrs=H + b": b\r\n"), [CODEC]),
    ("space before colon", R(hdrs=H + b"X-A : b\r\n"), [CODEC]),
    ("tab before colon", R(hdrs=H + b"X-A\t: b\r\n"), [CODEC]),
    ("Host space before colon", R(hdrs=b"Host : a\r\n"), [CODEC]),
    ("value ctl", R(hdrs=H + b"X-A: b\x01c\r\n"), [INVALID_CHARS]),
    ("value NUL", R(hdrs=H + b"X-A: b\x00c\r\n"), [INVALID_CHARS]),
    ("value DEL", R(hdrs=H + b"X-A: b\x7fc\r\n"), [INVALID_CHARS]),
    ("value VT", R(hdrs=H + b"X-A: b\x0bc\r\n"), [INVALID_CHARS]),
    ("value FF", R(hdrs=H + b"X-A: b\x0cc\r\n"), [INVALID_CHARS]),
    ("value tab inside", R(hdrs=H + b"X-A: b\tc\r\n"), [OK]),
    ("value UTF-8", R(hdrs=H + b"X-A: b\xc3\xa9c\r\n"), [OK]),
    ("value 0xff", R(hdrs=H + b"X-A: b\xffc\r\n"), [OK]),
    ("value bare CR", R(hdrs=H + b"X-A: b\rc\r\n"), [OK]),
    ("value CR CR LF", R(hdrs=H + b"X-A: bc\r\r\n"), [OK]),
    ("value empty", R(hdrs=H + b"X-A:\r\n"), [OK]),
    ("value outer whitespace", R(hdrs=H + b"X-A: \t b \t \r\n"), [OK]),
    ("value without space", R(hdrs=H + b"X-A:b\r\n"), [OK]),
    ("first header line folded", R(hdrs=b" X-A: b\r\n" + H), [CODEC]),
    ("folded with tab", R(hdrs=H + b"X-A: b\r\n\tc\r\n"), [OK]),
    ("folded twice", R(hdrs=H + b"X-A: b\r\n  c  \r\n d\r\n"), [OK]),
    ("folded blank continuation", R(hdrs=H + b"X-A: b\r\n \r\n"), [OK]),
    ("folded onto empty value", R(hdrs=H + b"X-A:\r\n c\r\n"), [OK]),
    ("LF-only request", b"GET / HTTP/1.1\nHost: a\n\n", [OK]),
    ("LF-only folded", b"GET / HTTP/1.1\nHost: a\nX-A: b\n c\n\n", [OK]),
    ("mixed LF and CRLF", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\n", [OK]),
    ("LF lines then CRLF end", b"GET / HTTP/1.1\nHost: a\n\r\n", [OK]),
    ("duplicate header", R(hdrs=H + b"X-A: 1\r\nX-A: 2\r\n"), [OK]),
    ("mixed-case name", R(hdrs=H + b"X-Foo-BAR: 1\r\n"), [OK]),
    # --- Host ---
    ("no Host", R(hdrs=b""), [(400, "missing_host_header")]),
    ("empty Host", R(hdrs=b"Host:\r\n"), [OK]),
    ("two Hosts", R(hdrs=b"Host: a\r\nHost: b\r\n"), [OK]),
    ("Host with port", R(hdrs=b"Host: a:8080\r\n"), [OK]),
    ("Host with space", R(hdrs=b"Host: a b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with slash", R(hdrs=b"Host: a/b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with userinfo", R(hdrs=b"Host: u@a\r\n"), [OK]),
    ("Host UTF-8", R(hdrs=b"Host: \xc3\xa9\r\n"), [(400, "http.invalid_authority")]),
    ("Host underscore", R(hdrs=b"Host: a_b\r\n"), [OK]),
    ("Host IPv6", R(hdrs=b"Host: [::1]:80\r\n"), [OK]),
    ('Host with "', R(hdrs=b'Host: a"b\r\n'), [(400, "http.invalid_authority")]),
    ("Host with %", R(hdrs=b"Host: a%41\r\n"), [OK]),
    ("Host with {", R(hdrs=b"Host: a{b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with backslash", R(hdrs=b"Host: a\\b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with #", R(hdrs=b"Host: a#b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with ?", R(hdrs=b"Host: a?b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with |", R(hdrs=b"Host: a|b\r\n"), [(400, "http.invalid_authority")]),
    ("Host with tab inside", R(hdrs=b"Host: a\tb\r\n"), [(400, "http.invalid_authority")]),
    ("Host bad port", R(hdrs=b"Host: a:xx\r\n"), [OK]),
    ("Host trailing colon", R(hdrs=b"Host: a:\r\n"), [OK]),
    ("two Hosts one bad", R(hdrs=b"Host: a\r\nHost: b/c\r\n"), [(400, "http.invalid_authority")]),
    # --- Connection / Upgrade ---
    ("Connection: close", R(hdrs=H + b"Connection: close\r\n"), [OK]),
    ("Connection: close then request", R(hdrs=H + b"Connection: close\r\n") + R(b"GET /n HTTP/1.1"), [OK]),
    ("Connection: keep-alive", R(hdrs=H + b"Connection: keep-alive\r\n"), [OK]),
    ("Connection 9 tokens", R(hdrs=H + b"Connection: a,b,c,d,e,f,g,h,i\r\n"), [OK]),
    ("Connection 10 tokens", R(hdrs=H + b"Connection: a,b,c,d,e,f,g,h,i,j\r\n"), [(400, "http1.connection_header_rejected")]),
    ("Connection empty tokens", R(hdrs=H + b"Connection: a,,,,,,,,,,,,b\r\n"), [OK]),
    ("Connection split over two headers", R(hdrs=H + b"Connection: a,b,c,d,e\r\nConnection: f,g,h,i,j\r\n"), [(400, "http1.connection_header_rejected")]),
    ("Connection nominates te with big TE", R(hdrs=H + b"Connection: te\r\nTE: " + b"x" * 300 + b"\r\n"), [(400, "http1.connection_header_rejected")]),
    ("Connection nominates te", R(hdrs=H + b"Connection: te\r\nTE: trailers\r\n"), [OK]),
    ("Connection nominates x-forwarded-for", R(hdrs=H + b"Connection: x-forwarded-for\r\n"), [(400, "http1.connection_header_rejected")]),
    ("Connection nominates pseudo header", R(hdrs=H + b"Connection: :path\r\n"), [(400, "http1.connection_header_rejected")]),
    ("Connection nominates custom", R(hdrs=H + b"Connection: x-foo\r\nX-Foo: 1\r\n"), [OK]),
    ("websocket upgrade", R(hdrs=H + b"Connection: upgrade\r\nUpgrade: websocket\r\n"), [OK]),
    ("h2c upgrade", R(hdrs=H + b"Connection: upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n"), [OK]),
    ("Expect 100-continue", POST(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"hi"), [OK]),
    # --- limits ---
    ("head 61440 bytes", pad_head(61440), [OK]),
    ("head 61441 bytes", pad_head(61441), [(431, "http1.headers_too_large")]),
    ("head 61440 bytes LF-only", pad_head(61440, lf=True), [OK]),
    ("head 61441 bytes LF-only", pad_head(61441, lf=True), [(431, "http1.headers_too_large")]),
    ("leading CRLFs + head 61440", b"\r\n\r\n" + pad_head(61440), [OK]),
    ("target fills 61440", pad_url(61440), [OK]),
    ("target fills 61441", pad_url(61441), [(431, "http1.headers_too_large")]),
    ("61441 bytes, no end", b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"v" * 61441, [(431, "http1.headers_too_large")]),
    ("100 headers", many(100), [OK]),
    ("101 headers", many(101), [(431, "http1.too_many_headers")]),
    # --- incomplete, partial ---
    ("partial valid head", b"GET / HTTP/1.1\r\nHost: a\r\n", []),
    ("partial, bad method line", b"GXT / HTTP/1.1\r\n", [CODEC]),
    ("partial, lower-case method line", b"get / HTTP/1.1\r\n", [CODEC]),
    ("partial, leading space line", b" GET / HTTP/1.1\r\n", [CODEC]),
    ("partial, ctl in target", b"GET /\x01 HTTP/1.1\r\nHost: a\r\n", []),
    ("partial, HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\n", []),
    ("single x", b"x", []),
    ("CL body incomplete", POST(b"Content-Length: 10\r\n", b"hi"), []),
    ("CL 2^64-1 body incomplete", POST(b"Content-Length: 18446744073709551615\r\n", b"hi"), []),
    ("chunk of 2^64-1 incomplete", CH + b"ffffffffffffffff\r\nhello", []),
    ("header bytes one at a time", [bytes([b]) for b in R(hdrs=H + b"X-A: 1\r\n")], [OK]),
]

ACCEPTED_METHODS = ["ACL", "BIND", "CHECKOUT", "COPY", "DELETE", "GET", "HEAD", "LINK", "LOCK", "MERGE",
                    "MKACTIVITY", "MKCALENDAR", "MKCOL", "MOVE", "MSEARCH", "NOTIFY", "OPTIONS", "PATCH", "POST",
                    "PROPFIND", "PROPPATCH", "PURGE", "PUT", "QUERY", "REBIND", "REPORT", "SEARCH", "SOURCE",
                    "SUBSCRIBE", "TRACE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE"]
REFUSED_METHODS = ["M-SEARCH", "PRI", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN",
                   "GET_PARAMETER", "RECORD", "FLUSH", "Get", "get", "FOO"]
REQUEST_CASES += [("method " + m, R(m.encode() + b" / HTTP/1.1"), [OK]) for m in ACCEPTED_METHODS]
REQUEST_CASES += [("method " + m, R(m.encode() + b" / HTTP/1.1"), [CODEC]) for m in REFUSED_METHODS]


# --- response inputs: (name, request method, bytes, first outcome) --------------------------
# The outcome is the final status Envoy forwards, or the local reply it makes instead.

OK200 = b"HTTP/1.1 200 OK\r\n"
RESPONSE_CASES: list[tuple[str, str, bytes | list[bytes], object]] = [
    ("content-length", "GET", OK200 + b"Content-Length: 2\r\n\r\nhi", 200),
    ("HTTP/1.0 content-length", "GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", 200),
    ("HTTP/1.0 close-delimited", "GET", b"HTTP/1.0 200 OK\r\n\r\nhello", 200),
    ("HTTP/1.1 close-delimited", "GET", OK200 + b"\r\nhello", 200),
    ("close-delimited in pieces", "GET", [OK200 + b"\r\nhel", b"lo"], 200),
    ("chunked with trailers", "GET", OK200 + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nx-t: 1\r\n\r\n", 200),
    ("CL and TE", "GET", OK200 + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("two CL", "GET", OK200 + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi", UPSTREAM_PROTOCOL_ERROR),
    ("bad CL", "GET", OK200 + b"Content-Length: x\r\n\r\nhi", UPSTREAM_PROTOCOL_ERROR),
    ("CL 2^64", "GET", OK200 + b"Content-Length: 18446744073709551616\r\n\r\nhi", UPSTREAM_PROTOCOL_ERROR),
    ("TE identity", "GET", OK200 + b"Transfer-Encoding: identity\r\n\r\nhi", UPSTREAM_PROTOCOL_ERROR),
    ("TE gzip, chunked", "GET", OK200 + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("TE twice", "GET", OK200 + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("TE empty", "GET", OK200 + b"Transfer-Encoding:\r\n\r\nhi", UPSTREAM_PROTOCOL_ERROR),
    ("TE Chunked", "GET", OK200 + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", 200),
    ("bad chunk size", "GET", OK200 + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n", 200),
    ("chunk trailing space", "GET", OK200 + b"Transfer-Encoding: chunked\r\n\r\n2 \r\nhi\r\n0\r\n\r\n", 200),
    ("head cut short", "GET", OK200 + b"Content-Le", UPSTREAM_PROTOCOL_ERROR),
    ("nothing", "GET", b"", UPSTREAM_TERMINATION),
    ("garbage", "GET", b"FOO BAR\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("leading CRLF", "GET", b"\r\n" + OK200 + b"Content-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("status 20", "GET", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", 20),
    ("status 1000", "GET", b"HTTP/1.1 1000 OK\r\nContent-Length: 0\r\n\r\n", 1000),
    ("status 600", "GET", b"HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n", 600),
    ("status letters", "GET", b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("status missing", "GET", b"HTTP/1.1  OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("status 200x", "GET", b"HTTP/1.1 200x OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("no reason", "GET", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 200),
    ("no reason, space", "GET", b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 200),
    ("UTF-8 reason", "GET", b"HTTP/1.1 200 \xc3\xa9\r\nContent-Length: 0\r\n\r\n", 200),
    ("HTTP/2.0", "GET", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200),
    ("HTTP/0.9", "GET", b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n", 200),
    ("lower-case version", "GET", b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("HTTP/1", "GET", b"HTTP/1 200 OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("HTTP/1.10", "GET", b"HTTP/1.10 200 OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("no version", "GET", b"200 OK\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("tabs in status line", "GET", b"HTTP/1.1\t200\tOK\r\nContent-Length: 0\r\n\r\n", 200),
    ("two spaces in status line", "GET", b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", 200),
    ("100 then 200", "GET", b"HTTP/1.1 100 Continue\r\n\r\n" + OK200 + b"Content-Length: 2\r\n\r\nhi", 200),
    ("103 then 200", "GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK200 + b"Content-Length: 2\r\n\r\nhi", 200),
    ("100 with CL", "GET", b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n" + OK200 + b"Content-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("204 with CL 0", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204),
    ("204 with CL 5", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("204 with TE", "GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("204 then bytes", "GET", b"HTTP/1.1 204 No Content\r\n\r\nhello", 204),
    ("304 with CL 5", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304),
    ("304 with TE", "GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 304),
    ("HEAD with CL 5", "HEAD", OK200 + b"Content-Length: 5\r\n\r\n", 200),
    ("HEAD chunked", "HEAD", OK200 + b"Transfer-Encoding: chunked\r\n\r\n", 200),
    ("CL 0 and TE", "GET", OK200 + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("bytes after the response", "GET", OK200 + b"Content-Length: 2\r\n\r\nhiEXTRA", 200),
    ("header ctl", "GET", OK200 + b"X-A: a\x01b\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("header NUL", "GET", OK200 + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("header bare CR", "GET", OK200 + b"X-A: a\rb\r\nContent-Length: 0\r\n\r\n", 200),
    ("header UTF-8 value", "GET", OK200 + b"X-A: a\xc3\xa9b\r\nContent-Length: 0\r\n\r\n", 200),
    ("header UTF-8 name", "GET", OK200 + b"X\xc3\xa9: b\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("header without colon", "GET", OK200 + b"XA\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("space before colon", "GET", OK200 + b"X-A : b\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("folded header", "GET", OK200 + b"X-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", 200),
    ("LF-only", "GET", b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nhi", 200),
    ("100 headers", "GET", OK200 + b"".join(b"X-H%d: v\r\n" % i for i in range(99)) + b"Content-Length: 0\r\n\r\n", 200),
    ("101 headers", "GET", OK200 + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"Content-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("head 81920 bytes", "GET", OK200 + b"Content-Length: 0\r\nX-Pad: " + b"v" * (81920 - len(OK200 + b"Content-Length: 0\r\nX-Pad: \r\n\r\n")) + b"\r\n\r\n", 200),
    ("head 81921 bytes", "GET", OK200 + b"Content-Length: 0\r\nX-Pad: " + b"v" * (81921 - len(OK200 + b"Content-Length: 0\r\nX-Pad: \r\n\r\n")) + b"\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("Connection: close", "GET", OK200 + b"Connection: close\r\nContent-Length: 2\r\n\r\nhi", 200),
    ("101 switching", "GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", 101),
    ("CL body cut short", "GET", OK200 + b"Content-Length: 10\r\n\r\nhi", 200),
    ("chunked cut short", "GET", OK200 + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n", 200),
    ("reason with VT", "GET", b"HTTP/1.1 404 Not\x0bFound\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("reason with NUL", "GET", b"HTTP/1.1 404 Not\x00Found\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
    ("reason with tab", "GET", b"HTTP/1.1 404 Not\tFound\r\nContent-Length: 0\r\n\r\n", 404),
    ("reason with DEL", "GET", b"HTTP/1.1 404 Not\x7fFound\r\nContent-Length: 0\r\n\r\n", UPSTREAM_PROTOCOL_ERROR),
]


# --- the verdict tables -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name,data,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_verdict(codec: ModuleType, name: str, data: bytes | list[bytes], expected: list[object]) -> None:
    assert feed_requests(codec, data).outcomes == expected


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name,data,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_verdict_in_pieces(codec: ModuleType, name: str, data: bytes | list[bytes], expected: list[object]) -> None:
    """The same verdicts when the bytes trickle in (one at a time; 997 at a time for big inputs)."""
    whole = b"".join(data) if isinstance(data, list) else data
    step = 1 if len(whole) < 5000 else 997
    assert feed_requests(codec, [whole[i:i + step] for i in range(0, len(whole), step)]).outcomes == expected


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name,method,data,expected", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_verdict(codec: ModuleType, name: str, method: str, data: bytes | list[bytes], expected: object) -> None:
    assert feed_responses(codec, method, data).first_outcome == expected


# --- what a request head looks like ---------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_typical_get(codec: ModuleType) -> None:
    rec = feed_requests(codec, b"GET /productpage?u=1 HTTP/1.1\r\nHost: productpage:9080\r\nUser-Agent: curl/8\r\n"
                               b"Accept: */*\r\nX-Request-Id:  abc \t\r\n\r\n")
    assert rec.events == [
        ("head", "GET", "/productpage?u=1", "1.1",
         [(b"host", b"productpage:9080"), (b"user-agent", b"curl/8"), (b"accept", b"*/*"), (b"x-request-id", b"abc")],
         True, False, None, False),
        ("end", None),
    ]
    head = rec.heads[0]
    assert head.get(b"host") == b"productpage:9080" and not head.has_body


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("raw,value", [
    (b"X-A: b\r\n\tc\r\n", b"b\tc"),            # Envoy drops the CRLF and keeps the continuation's whitespace
    (b"X-A: b\r\n  c  \r\n d\r\n", b"b  c   d"),
    (b"X-A: b\r\n \r\n", b"b"),
    (b"X-A:\r\n c\r\n", b"c"),
    (b"X-A: b\rc\r\n", b"bc"),                  # a bare CR is removed
    (b"X-A: bc\r\r\n", b"bc"),
    (b"X-A: \t b \t \r\n", b"b"),
    (b"X-A: b\xc3\xa9c\r\n", b"b\xc3\xa9c"),
    (b"X-A:\r\n", b""),
])
def test_header_values_as_envoy_forwards_them(codec: ModuleType, raw: bytes, value: bytes) -> None:
    rec = feed_requests(codec, R(hdrs=H + raw))
    assert rec.heads[0].headers == [(b"host", b"a"), (b"x-a", value)]


@pytest.mark.parametrize("codec", CODECS)
def test_lf_only_and_folded_request(codec: ModuleType) -> None:
    rec = feed_requests(codec, b"GET / HTTP/1.1\nHost: a\nX-A: b\n c\n\n")
    assert rec.heads[0].headers == [(b"host", b"a"), (b"x-a", b"b c")]


@pytest.mark.parametrize("codec", CODECS)
def test_duplicates_kept_in_order(codec: ModuleType) -> None:
    rec = feed_requests(codec, R(hdrs=b"Host: a\r\nHost: b\r\nX-A: 1\r\nx-a: 2\r\n"))
    assert rec.heads[0].headers == [(b"host", b"a"), (b"host", b"b"), (b"x-a", b"1"), (b"x-a", b"2")]


@pytest.mark.parametrize("codec", CODECS)
def test_absolute_form_and_options_star_kept_raw(codec: ModuleType) -> None:
    rec = feed_requests(codec, R(b"GET http://b:8080/x?y HTTP/1.1", b"") + R(b"OPTIONS * HTTP/1.1"))
    assert [h.target for h in rec.heads] == ["http://b:8080/x?y", "*"]


@pytest.mark.parametrize("codec", CODECS)
def test_keep_alive(codec: ModuleType) -> None:
    assert feed_requests(codec, R()).heads[0].keep_alive
    assert feed_requests(codec, R(hdrs=H + b"Connection: keep-alive\r\n")).heads[0].keep_alive
    assert not feed_requests(codec, R(hdrs=H + b"Connection: Keep-Alive, Close\r\n")).heads[0].keep_alive


@pytest.mark.parametrize("codec", CODECS)
def test_input_after_connection_close_is_ignored(codec: ModuleType) -> None:
    rec = feed_requests(codec, [R(hdrs=H + b"Connection: close\r\n") + b"GET /x HTTP/1.1\r\n", b"garbage\r\n\r\n"])
    assert [e[0] for e in rec.events] == ["head", "end"]


# --- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_content_length_body_then_pipelined_request(codec: ModuleType) -> None:
    rec = feed_requests(codec, POST(b"Content-Length: 5\r\n", b"hello") + R(b"GET /next HTTP/1.1"))
    assert [e[0] for e in rec.events] == ["head", "data", "end", "head", "end"]
    assert rec.heads[0].content_length == 5 and rec.heads[0].has_body
    assert rec.body == b"hello" and rec.heads[1].target == "/next"


@pytest.mark.parametrize("codec", CODECS)
def test_body_longer_than_content_length_is_the_next_request(codec: ModuleType) -> None:
    rec = feed_requests(codec, POST(b"Content-Length: 2\r\n", b"hiGET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert rec.body == b"hi" and [h.target for h in rec.heads] == ["/", "/x"]
    rec = feed_requests(codec, POST(b"Content-Length: 2\r\n", b"hi\x00junk\r\n\r\n"))
    assert rec.outcomes == [OK, CODEC]


@pytest.mark.parametrize("codec", CODECS)
def test_chunked_body_dechunked_with_trailers(codec: ModuleType) -> None:
    rec = feed_requests(codec, CH + b"5;ext=1\r\nhello\r\n006 \r\n world\r\n0\r\nX-Checksum: abc\r\nX-More:  1 \r\n\r\n")
    assert rec.heads[0].chunked and rec.heads[0].content_length is None and rec.heads[0].has_body
    assert rec.body == b"hello world"
    assert rec.events[-1] == ("end", [(b"x-checksum", b"abc"), (b"x-more", b"1")])


@pytest.mark.parametrize("codec", CODECS)
def test_chunked_without_trailers_ends_with_none(codec: ModuleType) -> None:
    rec = feed_requests(codec, CH + b"3\r\nabc\r\n0\r\n\r\n")
    assert rec.events[-1] == ("end", None)


@pytest.mark.parametrize("codec", CODECS)
def test_chunked_every_split_point(codec: ModuleType) -> None:
    data = CH + b"5\r\nhello\r\n1a;x=y\r\n" + b"z" * 26 + b"\r\n0\r\nT: 1\r\n\r\n" + R(b"GET /n HTTP/1.1")
    whole = feed_requests(codec, data).events
    for cut in range(1, len(data)):
        assert feed_requests(codec, [data[:cut], data[cut:]]).events == whole, cut


@pytest.mark.parametrize("codec", CODECS)
def test_large_body_streams_as_fed(codec: ModuleType) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(POST(b"Content-Length: 3000000\r\n"))
    pieces = 0
    for _ in range(30):
        server.feed(b"x" * 100000)
        pieces += 1
        assert len(rec.body) == pieces * 100000  # delivered as it arrives, not buffered whole
    assert rec.events[-1] == ("end", None)


@pytest.mark.parametrize("codec", CODECS)
def test_upgrade_turns_into_raw_data(codec: ModuleType) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(R(hdrs=H + b"Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n") + b"\x81\x05hello")
    server.feed(b"GET / HTTP/1.1\r\n\r\n")
    server.feed_eof()
    assert rec.heads[0].upgrade
    assert rec.body == b"\x81\x05helloGET / HTTP/1.1\r\n\r\n"
    assert rec.events[-1] == ("end", None)


@pytest.mark.parametrize("codec", CODECS)
def test_connect_is_an_upgrade(codec: ModuleType) -> None:
    rec = feed_requests(codec, R(b"CONNECT a:443 HTTP/1.1", b"Host: a:443\r\nContent-Length: 0\r\n") + b"\x16\x03\x01")
    head = rec.heads[0]
    assert head.upgrade and head.target == "a:443" and head.content_length is None
    assert head.headers == [(b"host", b"a:443")]  # CL: 0 dropped, as Envoy does
    assert rec.body == b"\x16\x03\x01"


@pytest.mark.parametrize("codec", CODECS)
def test_h2c_upgrade_is_ignored_like_envoy(codec: ModuleType) -> None:
    rec = feed_requests(codec, R(hdrs=H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n"))
    head = rec.heads[0]
    assert not head.upgrade and head.headers == [(b"host", b"a")]
    assert rec.outcomes == [OK]


# --- errors and EOF ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_error_reported_once_then_input_ignored(codec: ModuleType) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(R() + R(b"GET / HTTP/1.0"))
    server.feed(R())
    server.feed_eof()
    assert rec.outcomes == [OK, LOW_VERSION]
    assert len(rec.errors) == 1


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHo", POST(b"Content-Length: 5\r\n", b"he"), CH + b"5\r\nhel", CH + b"0\r\nX: 1\r\n"])
def test_eof_mid_request(codec: ModuleType, data: bytes) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(data)
    server.feed_eof()
    assert rec.errors[-1].status == 0 and rec.errors[-1].details == "downstream_remote_disconnect"


@pytest.mark.parametrize("codec", CODECS)
def test_eof_between_requests_is_quiet(codec: ModuleType) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(R() + b"\r\n")
    server.feed_eof()
    server.feed_eof()
    assert rec.outcomes == [OK] and not rec.errors


@pytest.mark.parametrize("codec", CODECS)
def test_limits_are_configurable(codec: ModuleType) -> None:
    assert feed_requests(codec, pad_head(1000), max_header_bytes=1000).outcomes == [OK]
    assert feed_requests(codec, pad_head(1001), max_header_bytes=1000).outcomes == [(431, rules.HEADERS_TOO_LARGE)]
    assert feed_requests(codec, many(10), max_headers=10).outcomes == [OK]
    assert feed_requests(codec, many(11), max_headers=10).outcomes == [(431, rules.TOO_MANY_HEADERS)]


@pytest.mark.parametrize("codec", CODECS)
def test_oversized_head_refused_before_it_ends(codec: ModuleType) -> None:
    rec = RequestRecorder()
    server = codec.ServerCodec(rec)
    server.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ")
    for _ in range(70):
        server.feed(b"v" * 1000)
    assert rec.outcomes == [(431, rules.HEADERS_TOO_LARGE)]


# --- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_response_with_content_length(codec: ModuleType) -> None:
    rec = feed_responses(codec, "GET", OK200 + b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert rec.events == [
        ("head", 200, b"OK", "1.1", [(b"content-type", b"text/plain"), (b"content-length", b"5")], True, False, 5),
        ("data", b"hello"),
        ("end", None),
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_response_chunked_with_trailers(codec: ModuleType) -> None:
    rec = feed_responses(codec, "GET", OK200 + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3 \r\n!!!\r\n0\r\ngrpc-status: 0\r\n\r\n")
    assert rec.heads[0].chunked and rec.events[1:] == [("data", b"hi!!!"), ("end", [(b"grpc-status", b"0")])]


@pytest.mark.parametrize("codec", CODECS)
def test_response_close_delimited(codec: ModuleType) -> None:
    rec = feed_responses(codec, "GET", [b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhel", b"lo"], eof=False)
    assert rec.events[-1] == ("data", b"hello")
    assert not rec.heads[0].keep_alive and rec.heads[0].http_version == "1.0"
    rec = feed_responses(codec, "GET", [b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nhel", b"lo"])
    assert rec.events[-1] == ("end", None)


@pytest.mark.parametrize("codec", CODECS)
def test_informational_then_final(codec: ModuleType) -> None:
    rec = feed_responses(codec, "POST", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"
                                       + OK200 + b"Content-Length: 2\r\n\r\nok")
    assert [(e[0], e[1]) for e in rec.events] == [("head", 100), ("head", 103), ("head", 200), ("data", b"ok"), ("end", None)]


@pytest.mark.parametrize("codec", CODECS)
def test_switching_protocols_then_raw(codec: ModuleType) -> None:
    rec = feed_responses(codec, "GET", [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi", b"\x88\x00"])
    assert rec.events[0][1] == 101
    assert rec.events[1:] == [("data", b"\x81\x02hi\x88\x00"), ("end", None)]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("method,head", [
    ("HEAD", OK200 + b"Content-Length: 5\r\n\r\n"),
    ("HEAD", OK200 + b"Transfer-Encoding: chunked\r\n\r\n"),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
])
def test_bodiless_responses(codec: ModuleType, method: str, head: bytes) -> None:
    rec = ResponseRecorder()
    client = codec.ClientCodec(rec)
    client.expect(method)
    client.expect("GET")
    client.feed(head + OK200 + b"Content-Length: 1\r\n\r\nx")
    assert [e[0] for e in rec.events] == ["head", "end", "head", "data", "end"]


@pytest.mark.parametrize("codec", CODECS)
def test_pipelined_responses_follow_expect_order(codec: ModuleType) -> None:
    rec = ResponseRecorder()
    client = codec.ClientCodec(rec)
    for method in ("GET", "HEAD", "GET"):
        client.expect(method)
    client.feed(OK200 + b"Content-Length: 1\r\n\r\na" + OK200 + b"Content-Length: 9\r\n\r\n" + OK200 + b"Content-Length: 1\r\n\r\nc")
    assert [e[1] for e in rec.events if e[0] == "data"] == [b"a", b"c"]
    assert not rec.errors


@pytest.mark.parametrize("codec", CODECS)
def test_204_drops_zero_content_length(codec: ModuleType) -> None:
    rec = feed_responses(codec, "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n\r\n")
    assert rec.heads[0].headers == [(b"x", b"y")] and rec.heads[0].content_length is None


@pytest.mark.parametrize("codec", CODECS)
def test_unrequested_bytes_are_an_error(codec: ModuleType) -> None:
    rec = ResponseRecorder()
    client = codec.ClientCodec(rec)
    client.feed(OK200 + b"Content-Length: 0\r\n\r\n")
    assert rec.events == [("error", 502, rules.UPSTREAM_PROTOCOL_ERROR)]
    rec = feed_responses(codec, "GET", OK200 + b"Content-Length: 2\r\n\r\nhiEXTRA")
    assert [e[0] for e in rec.events] == ["head", "data", "end", "error"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data,status,details", [
    (b"", 503, rules.UPSTREAM_TERMINATION),
    (b"HTTP/1.1 200 OK\r\nContent-Le", 502, rules.UPSTREAM_PROTOCOL_ERROR),
    (b"HTTP/1.1 100 Continue\r\n\r\n", 503, rules.UPSTREAM_TERMINATION),
    (OK200 + b"Content-Length: 10\r\n\r\nhi", 503, rules.UPSTREAM_TERMINATION_AFTER),
    (OK200 + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n", 503, rules.UPSTREAM_TERMINATION_AFTER),
    (OK200 + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\nzz\r\n", 502, rules.UPSTREAM_PROTOCOL_ERROR_AFTER),
])
def test_response_errors_and_eof(codec: ModuleType, data: bytes, status: int, details: str) -> None:
    rec = feed_responses(codec, "GET", data)
    assert len(rec.errors) == 1
    assert (rec.errors[0].status, rec.errors[0].details) == (status, details)


@pytest.mark.parametrize("codec", CODECS)
def test_eof_with_nothing_expected_is_quiet(codec: ModuleType) -> None:
    rec = ResponseRecorder()
    client = codec.ClientCodec(rec)
    client.expect("GET")
    client.feed(OK200 + b"Content-Length: 0\r\n\r\n")
    client.feed_eof()
    assert [e[0] for e in rec.events] == ["head", "end"]


# --- encoders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_encoders(codec: ModuleType) -> None:
    hs = [(b"host", b"a"), (b"x-b", b"1")]
    assert codec.encode_request_head("GET", "/x?y", hs) == b"GET /x?y HTTP/1.1\r\nhost: a\r\nx-b: 1\r\n\r\n"
    assert codec.encode_request_head("GET", "/", []) == b"GET / HTTP/1.1\r\n\r\n"
    assert codec.encode_response_head(200, hs) == b"HTTP/1.1 200 OK\r\nhost: a\r\nx-b: 1\r\n\r\n"
    assert codec.encode_response_head(404, []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert codec.encode_response_head(431, []) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"
    assert codec.encode_response_head(299, []) == b"HTTP/1.1 299 Unknown\r\n\r\n"
    assert codec.encode_response_head(200, [], b"Fine") == b"HTTP/1.1 200 Fine\r\n\r\n"
    assert codec.encode_chunk(b"hello world!") == b"c\r\nhello world!\r\n"
    assert codec.encode_chunk(b"") == b""
    assert codec.LAST_CHUNK == b"0\r\n\r\n"
    assert codec.encode_trailers([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"
    assert codec.encode_trailers([]) == codec.LAST_CHUNK


@pytest.mark.parametrize("codec", CODECS)
def test_encoded_messages_parse_back(codec: ModuleType) -> None:
    rng = random.Random(7)
    body = bytes(rng.randrange(256) for _ in range(5000))
    wire = (codec.encode_request_head("PUT", "/up", [(b"host", b"h"), (b"transfer-encoding", b"chunked")])
            + b"".join(codec.encode_chunk(body[i:i + 999]) for i in range(0, len(body), 999))
            + codec.encode_trailers([(b"x-sum", b"1")]))
    rec = feed_requests(codec, wire)
    assert rec.body == body and rec.events[-1] == ("end", [(b"x-sum", b"1")])
    wire = codec.encode_response_head(201, [(b"content-length", b"3")]) + b"abc"
    resp = feed_responses(codec, "PUT", wire)
    assert resp.heads[0].status == 201 and resp.heads[0].reason == b"Created" and resp.events[-1] == ("end", None)


def test_reason_phrases_are_envoys() -> None:
    assert http1.REASONS[200] == b"OK" and http1.REASONS[426] == b"Upgrade Required"
    assert http1.REASONS[599] == b"Last Unassigned Server Error Code"
    assert 418 not in http1.REASONS  # Envoy answers "Unknown"
