"""A deliberately broken HTTP/1.1 upstream, run in a thread of the test process.

It reads one request head per connection (or several, with keep-alive) and then
misbehaves according to its ``mode`` -- or, when the request path starts with
``/mode/<name>``, according to that name:

``500``         a well-formed ``500`` with keep-alive (for outlier detection)
``garbage``     bytes that are not HTTP, then close
``midreset``    a head promising 1000 bytes, 10 bytes of body, then a TCP RST
``early``       close as soon as the head was read, answering nothing
``reset``       a TCP RST as soon as the head was read
``ok``          a well-formed ``200`` with keep-alive
"""

from __future__ import annotations

import socket
import struct
import threading

from .ports import free_port


class HostileBackend:
    def __init__(self, mode: str = "ok", port: int | None = None) -> None:
        self.mode = mode
        self.port = port or free_port()
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(512)
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            conn.settimeout(10)
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.requests += 1
                target = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
                mode = self.mode
                if target.startswith("/mode/"):
                    mode = target.split("/")[2]
                if mode == "ok":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    continue
                if mode == "500":
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail")
                    continue
                if mode == "garbage":
                    conn.sendall(b"\x00\x01 this is not HTTP at all \xff\r\n\r\n")
                elif mode == "midreset":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    _rst(conn)
                elif mode == "reset":
                    _rst(conn)
                return  # "early" and the rest: close
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "HostileBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rst(conn: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
