"""Send the same raw bytes to two proxies and reduce their answers to comparable values.

Used by ``tests/integration/test_differential_envoy.py`` (real Envoy vs meshproxy). The
wire reader here is independent of meshproxy's codec and of h11: it keeps the status
line, every header line (name case, order, value) and the body (de-chunked) exactly as
received, and notes whether the peer closed or reset the connection.

``normalize`` then masks only what legitimately varies between two proxies answering the
same request: ``date`` (checked to be an IMF-fixdate), UUID ``x-request-id`` values,
``x-envoy-upstream-service-time`` (checked to be digits), and the echo backend's
``count``. When a body is the echo backend's JSON report, its ``content-length`` (which
depends on the digits of ``count``) is checked against the body and then masked. A value
that does not have the expected form is left as is, so the difference shows.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

UUID_RE = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DATE_RE = re.compile(rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                     rb"\d{4} \d\d:\d\d:\d\d GMT$")


class _Closed(Exception):
    """The peer closed (``how`` = "eof") or reset ("reset") the connection mid-read."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


@dataclass
class WireReply:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    interim: list[bytes] = field(default_factory=list)
    framing: str = ""  # "content-length", "chunked", "close", "none"

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


@dataclass
class Outcome:
    """Everything one proxy answered on one connection."""

    replies: list[WireReply]
    error: str | None = None  # why fewer replies than expected arrived ("eof"/"reset"/"timeout"/...)
    closed: str | None = None  # "eof"/"reset"/"open" when checked, None when not checked
    extra: bytes = b""  # bytes after the last expected reply


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise _Closed("reset")
        except socket.timeout:
            raise _Closed("timeout")
        if not data:
            raise _Closed("eof")
        self.buf += data

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i != -1:
                out = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return out[:-1] if out.endswith(b"\r") else out
            self._fill()

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def until_close(self) -> bytes:
        try:
            while True:
                self._fill()
        except _Closed:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def head(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        status = self.line()
        headers: list[tuple[bytes, bytes]] = []
        while True:
            line = self.line()
            if line == b"":
                return status, headers
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(b" \t")))

    def reply(self, head_request: bool) -> WireReply:
        interim: list[bytes] = []
        while True:
            status_line, headers = self.head()
            parts = status_line.split(b" ", 2)
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if 100 <= code < 200 and code != 101:
                interim.append(status_line)
                continue
            break
        reply = WireReply(status_line, headers, b"", interim)
        te = reply.header(b"transfer-encoding")
        cl = reply.header(b"content-length")
        if head_request or code in (204, 304) or 100 <= code < 200:
            reply.framing = "none"
        elif te is not None and te.lower() == b"chunked":
            reply.framing = "chunked"
            body = bytearray()
            while True:
                size = int(self.line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.line() != b"":  # trailers
                        pass
                    break
                body += self.exactly(size)
                self.line()
            reply.body = bytes(body)
        elif cl is not None:
            reply.framing = "content-length"
            reply.body = self.exactly(int(cl))
        else:
            reply.framing = "close"
            reply.body = self.until_close()
        return reply


def exchange(port: int, raw: bytes, heads: list[bool], *, check_close: float | None = None,
             timeout: float = 15.0) -> Outcome:
    """Send ``raw`` on a fresh connection, read ``len(heads)`` replies (``heads[i]``: reply i
    answers a HEAD), then optionally wait ``check_close`` seconds for the peer to close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer and close before it has read everything
        reader = _Reader(sock)
        out = Outcome([])
        for head in heads:
            try:
                out.replies.append(reader.reply(head))
            except _Closed as exc:
                out.error = f"{exc.how} after {len(out.replies)} repl{'y' if len(out.replies) == 1 else 'ies'}" + (
                    f" (partial: {bytes(reader.buf[:200])!r})" if reader.buf else "")
                out.closed = "reset" if exc.how == "reset" else "eof"
                break
            except ValueError as exc:
                out.error = f"unparseable reply: {exc}: {bytes(reader.buf[:200])!r}"
                break
        if check_close is not None and out.closed is None:
            out.closed = _wait_close(sock, reader, check_close)
        out.extra = bytes(reader.buf)
        return out
    finally:
        sock.close()


def _wait_close(sock: socket.socket, reader: _Reader, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "open"
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return "open"
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return "reset"
        if not data:
            return "eof"
        reader.buf += data


def exchange_both(ports: tuple[int, int], raw: bytes, heads: list[bool], *,
                  check_close: float | None = None) -> tuple[Outcome, Outcome]:
    """``exchange`` with both proxies at once (so a close check waits only once)."""
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(exchange, ports[0], raw, heads, check_close=check_close)
        b = pool.submit(exchange, ports[1], raw, heads, check_close=check_close)
        return a.result(), b.result()


# --------------------------------------------------------------------------- normalization


def _backend_report(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and {"name", "headers", "count"} <= doc.keys():
        return doc
    return None


def _mask_value(name: bytes, value: bytes) -> bytes:
    lk = name.lower()
    if lk == b"date" and DATE_RE.match(value):
        return b"<date>"
    if lk == b"x-request-id" and UUID_RE.match(value):
        return b"<uuid>"
    if lk == b"x-envoy-upstream-service-time" and value.isdigit():
        return b"<ms>"
    return value


def normalize_reply(reply: WireReply, *, head_request: bool = False) -> dict[str, Any]:
    report = _backend_report(reply.body) if reply.body else None
    headers: list[str] = []
    for k, v in reply.headers:
        v = _mask_value(k, v)
        if k.lower() == b"content-length":
            if report is not None and v == str(len(reply.body)).encode():
                v = b"<len of backend report>"
            elif head_request and (reply.header(b"content-type") or b"").startswith(b"application/json") \
                    and v.isdigit():
                v = b"<len of backend report>"
        headers.append(f"{k.decode('latin-1')}: {v.decode('latin-1')}")
    out: dict[str, Any] = {"status": reply.status_line.decode("latin-1"), "headers": headers}
    if reply.interim:
        out["interim"] = [s.decode("latin-1") for s in reply.interim]
    if report is not None:
        seen = []
        for k, v in report["headers"]:
            mv = _mask_value(k.encode("latin-1"), v.encode("latin-1")).decode("latin-1")
            if k.lower() in ("date", "x-envoy-upstream-service-time"):
                mv = v  # only response-side values vary; a request header is compared as sent
            seen.append(f"{k}: {mv}")
        out["backend"] = {
            "name": report["name"], "method": report["method"], "target": report["target"],
            "body_length": report["body_length"], "body_sha256": report["body_sha256"][:12],
        }
        out["backend_saw_headers"] = seen
    else:
        out["body"] = reply.body.decode("latin-1")
    return out


def normalize(outcome: Outcome, heads: list[bool]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "replies": [normalize_reply(r, head_request=h) for r, h in zip(outcome.replies, heads)],
    }
    if outcome.error is not None:
        # Only the kind of failure is compared, not the partial bytes.
        # Only the kind of failure is compared, not the partial bytes; a reset counts as a close.
        out["error"] = outcome.error.split(" (partial")[0].replace("reset after", "closed after").replace(
            "eof after", "closed after")
    if outcome.closed is not None:
        out["connection"] = "open" if outcome.closed == "open" else "closed"
    if outcome.extra:
        out["extra_bytes"] = outcome.extra[:200].decode("latin-1")
    return out
