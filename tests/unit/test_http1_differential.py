"""Differential tests: ``http1`` (llhttp) and ``h11_codec`` (h11) must make the same calls.

The same bytes -- the measured Envoy verdict table, smuggling attempts built from every pair
of framing-header variants, mutated heads and bodies -- go to both codecs, whole and split at
random points, and the full call sequences (heads with every field, body bytes, trailers,
ends, errors with status and details) must be equal.  The two codecs share only the Envoy
rules (``h1_rules``); tokenizers, buffering and framing are separate code, so a bug in either
shows up here as a difference.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from meshproxy.protocols import h11_codec, http1

from .test_http1_codec import CH, H, POST, REQUEST_CASES, RESPONSE_CASES, R, RequestRecorder, ResponseRecorder

SEED = 20240611


def run_server(mod: Any, pieces: list[bytes], eof: bool) -> list[tuple[Any, ...]]:
    rec = RequestRecorder()
    codec = mod.ServerCodec(rec)
    for piece in pieces:
        codec.feed(piece)
    if eof:
        codec.feed_eof()
    return rec.events


def run_client(mod: Any, methods: list[str], pieces: list[bytes], eof: bool) -> list[tuple[Any, ...]]:
    rec = ResponseRecorder()
    codec = mod.ClientCodec(rec)
    for method in methods:
        codec.expect(method)
    for piece in pieces:
        codec.feed(piece)
    if eof:
        codec.feed_eof()
    return rec.events


def splits(data: bytes, rng: random.Random, count: int) -> list[list[bytes]]:
    """``data`` whole, then cut at ``count`` random sets of points."""
    out = [[data]]
    for _ in range(count):
        if len(data) < 2:
            break
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
        out.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])])
    return out


def assert_same_requests(data: bytes, rng: random.Random, count: int = 3) -> None:
    for pieces in splits(data, rng, count):
        for eof in (False, True):
            fast = run_server(http1, pieces, eof)
            ref = run_server(h11_codec, pieces, eof)
            assert fast == ref, f"input {data!r} split {[len(p) for p in pieces]} eof={eof}"


def assert_same_responses(methods: list[str], data: bytes, rng: random.Random, count: int = 3) -> None:
    for pieces in splits(data, rng, count):
        for eof in (False, True):
            fast = run_client(http1, methods, pieces, eof)
            ref = run_client(h11_codec, methods, pieces, eof)
            assert fast == ref, f"input {data!r} for {methods} split {[len(p) for p in pieces]} eof={eof}"


# --- 1. the measured verdict tables ----------------------------------------------------------


@pytest.mark.parametrize("name,data,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_table(name: str, data: bytes | list[bytes], expected: object) -> None:
    whole = b"".join(data) if isinstance(data, list) else data
    assert_same_requests(whole, random.Random(hash(name) ^ SEED), count=4 if len(whole) < 5000 else 1)


@pytest.mark.parametrize("name,method,data,expected", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_table(name: str, method: str, data: bytes | list[bytes], expected: object) -> None:
    whole = b"".join(data) if isinstance(data, list) else data
    assert_same_responses([method], whole, random.Random(hash(name) ^ SEED), count=4 if len(whole) < 5000 else 1)


# --- 2. smuggling: every pair of framing headers, with a second request behind --------------

FRAMING = [
    b"Content-Length: 6\r\n",
    b"Content-Length: 06\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 6 \r\n",
    b"Content-Length : 6\r\n",
    b"Content-Length: 6, 6\r\n",
    b"Content-Length: +6\r\n",
    b"Content-Length:\r\n 6\r\n",
    b"content-length: 6\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: Chunked\r\n",
    b"Transfer-Encoding: chunked \r\n",
    b"Transfer-Encoding : chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Transfer-Encoding:\r\n chunked\r\n",
    b"Transfer-Encoding:\tchunked\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n",
    b"X-Pad: x\r\n Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding\r\n",
    b"Connection: close\r\n",
    b"Connection: upgrade\r\nUpgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
]
BODIES = [
    b"0\r\n\r\n",
    b"6\r\nhello!\r\n0\r\n\r\n",
    b"hello!",
    b"3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
]


@pytest.mark.parametrize("first,second", list(itertools.combinations_with_replacement(range(len(FRAMING)), 2)))
def test_smuggling_pairs(first: int, second: int) -> None:
    rng = random.Random(SEED + first * 100 + second)
    for body in BODIES:
        data = b"POST / HTTP/1.1\r\nHost: a\r\n" + FRAMING[first] + FRAMING[second] + b"\r\n" + body + R(b"GET /next HTTP/1.1")
        assert_same_requests(data, rng, count=2)


# --- 3. mutated requests and responses ---------------------------------------------------------

INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b",", b";", b"\x00", b"\x01", b"\x0b", b"\x7f", b"\x80",
               b"\xff", b"0", b"9", b"f", b"x", b"/", b"*", b"?", b"#", b"@", b"%", b"H", b"HTTP/1.1", b"\r\n ",
               b"\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"Host: b\r\n"]

SEEDS_REQUESTS = [
    R(b"GET /a/b?c=d HTTP/1.1", H + b"User-Agent: x\r\nAccept: */*\r\n"),
    POST(b"Content-Length: 5\r\n", b"hello") + R(b"GET /2 HTTP/1.1"),
    CH + b"5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" + R(b"GET /3 HTTP/1.1"),
    R(b"GET http://b:80/x HTTP/1.1", b"Connection: keep-alive, x-y\r\nX-Y: 1\r\n"),
    R(b"CONNECT a:443 HTTP/1.1", b"Host: a:443\r\n") + b"\x16\x03",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(buf) + 1)
        op = rng.random()
        if op < 0.4:
            buf[pos:pos] = rng.choice(INTERESTING)
        elif op < 0.7 and pos < len(buf):
            del buf[pos:pos + rng.randint(1, 3)]
        elif pos < len(buf):
            buf[pos:pos + 1] = rng.choice(INTERESTING)
    return bytes(buf)


@pytest.mark.parametrize("batch", range(20))
def test_mutated_requests(batch: int) -> None:
    rng = random.Random(SEED * 31 + batch)
    for _ in range(150):
        assert_same_requests(mutate(rng.choice(SEEDS_REQUESTS), rng), rng, count=1)


SEEDS_RESPONSES = [
    (["GET"], b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"),
    (["GET", "GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
                     b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    (["HEAD", "GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
                      b"HTTP/1.1 204 No Content\r\n\r\n"),
    (["GET"], b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nclose-delimited body"),
]


@pytest.mark.parametrize("batch", range(10))
def test_mutated_responses(batch: int) -> None:
    rng = random.Random(SEED * 17 + batch)
    for _ in range(150):
        methods, data = rng.choice(SEEDS_RESPONSES)
        assert_same_responses(methods, mutate(data, rng), rng, count=1)


# --- 4. generated chunk-size lines -------------------------------------------------------------

SIZES = [b"5", b"05", b"0005", b"000000000000000000005", b"5 ", b"5\t", b"5 ;x", b"5;x=y", b'5;x="a b"', b"5 x",
         b" 5", b"0x5", b"5g", b"-5", b"+5", b"", b"5\x00", b"5,", b"5\r", b"5;\r", b"ffffffffffffffff",
         b"10000000000000000", b"5 5", b"5;\x01", b"5;\xc3\xa9"]
LINE_ENDS = [b"\r\n", b"\n", b"\r\r\n", b" \r\n"]
DATA_ENDS = [b"\r\n", b"\n", b"", b"X\r\n", b"\r\n\r\n"]


@pytest.mark.parametrize("size", SIZES)
def test_chunk_size_lines(size: bytes) -> None:
    rng = random.Random(SEED + len(size) * 7 + sum(size))
    for line_end, data_end in itertools.product(LINE_ENDS, DATA_ENDS):
        data = CH + size + line_end + b"hello" + data_end + b"0\r\n\r\n" + R(b"GET /n HTTP/1.1")
        assert_same_requests(data, rng, count=1)
