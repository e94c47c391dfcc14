"""A raw-socket HTTP/1.1 test client that keeps every byte visible.

Requests go out exactly as written; responses are parsed with h11 (not with
meshproxy's own codec) into status, reason, the header list in wire order and
the body.  ``Connection`` objects keep one socket open across requests so
tests can check keep-alive, pipelining and closes.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import h11


@dataclass
class Response:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    def header_names(self) -> list[str]:
        return [k.decode() for k, _ in self.headers]

    def json(self) -> Any:
        return json.loads(self.body)

    def seen_header(self, name: str) -> str | None:
        """A request header as the echo backend received it (body is the backend's JSON)."""
        for k, v in self.json()["headers"]:
            if k == name:
                return v
        return None


class Connection:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, host: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        for k, v in headers or []:
            lines.append(f"{k}: {v}")
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers or []):
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return self.read_response(head=method == "HEAD")

    def read_response(self, head: bool = False) -> Response:
        """Read one response (after any 1xx) from the socket."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        # h11 needs to have "sent" a request to parse a response: feed it a synthetic one.
        if self.conn.our_state is h11.IDLE:
            self.conn.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=[("host", "x")]))
            self.conn.send(h11.EndOfMessage())
        informational: list[int] = []
        response: Response | None = None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self.conn.receive_data(data)
                if not data and self.conn.their_state is not h11.DONE:
                    if response is None:
                        raise ConnectionError("connection closed before a response")
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
                continue
            if isinstance(event, h11.Response):
                response = Response(event.status_code, event.reason, list(event.headers.raw_items()), b"", informational)
                continue
            if isinstance(event, h11.Data):
                assert response is not None
                response.body += bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed")

    def is_closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when the peer closes the connection within ``timeout`` (no more bytes)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the peer closes or goes quiet; return everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        s.settimeout(timeout)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def get(port: int, target: str, host: str, headers: list[tuple[str, str]] | None = None, method: str = "GET", body: bytes = b"") -> Response:
    with Connection(port) as c:
        return c.request(method, target, host, headers, body)
