"""A real HTTP/1.1 backend process for integration tests.

Built on h11 and asyncio streams -- deliberately not on meshproxy's own codec,
so a codec bug cannot hide itself on both sides of a test.

It answers every request with JSON describing what it received::

    {"name": ..., "method": ..., "target": ..., "headers": [[k, v], ...],
     "body_length": N, "body_sha256": ..., "count": <requests served so far>}

Requests steer it with headers (all optional):

``x-backend-status``     status code to answer with (default 200)
``x-backend-delay-ms``   wait this long before answering
``x-backend-echo``       answer with the request body itself instead of JSON
``x-backend-set``        ``name=value`` header to add to the response (repeatable)
``x-backend-size``       answer with this many bytes of ``x`` (streamed in 64 KiB pieces)
``x-backend-close``      close the connection without answering

A request with ``Expect: 100-continue`` gets ``100 Continue`` before its body is read
(unless it also carries ``x-backend-no-continue``).

``GET /__backend/count`` answers with the number of requests served.

Run as ``python -m tests.support.backend --name NAME --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from typing import Any

import h11

from .ports import free_port, wait_for_port


class _State:
    count = 0


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    if conn.their_state in (h11.IDLE, h11.DONE, h11.CLOSED):
                        return
                continue
            if isinstance(event, (h11.ConnectionClosed,)):
                return
            if not isinstance(event, h11.Request):
                return
            request = event
            body = hashlib.sha256()
            body_chunks: list[bytes] = []
            length = 0
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue and not any(
                        k.lower() == b"x-backend-no-continue" for k, _ in request.headers
                    ):
                        # What a real server does for ``Expect: 100-continue``.
                        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                    data = await reader.read(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Data):
                    length += len(ev.data)
                    body.update(ev.data)
                    if len(body_chunks) < 4096:
                        body_chunks.append(bytes(ev.data))
                    continue
                if isinstance(ev, h11.EndOfMessage):
                    break
                return
            _State.count += 1
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
            if "x-backend-close" in headers:
                writer.close()
                return
            delay = headers.get("x-backend-delay-ms")
            if delay:
                await asyncio.sleep(int(delay) / 1000)
            status = int(headers.get("x-backend-status", "200"))
            extra: list[tuple[str, str]] = []
            for k, v in request.headers:
                if k.lower() == b"x-backend-set":
                    hk, _, hv = v.decode().partition("=")
                    extra.append((hk, hv))
            target = request.target.decode("latin-1")
            if target == "/__backend/count":
                payload = str(_State.count - 1).encode()
                _State.count -= 1
            elif "x-backend-echo" in headers:
                payload = b"".join(body_chunks)
            elif "x-backend-size" in headers:
                payload = b""
            else:
                info: dict[str, Any] = {
                    "name": name,
                    "method": request.method.decode(),
                    "target": target,
                    "headers": [[k.decode(), v.decode("latin-1")] for k, v in request.headers],
                    "body_length": length,
                    "body_sha256": body.hexdigest(),
                    "count": _State.count,
                }
                payload = json.dumps(info).encode()
            if "x-backend-size" in headers:
                size = int(headers["x-backend-size"])
                resp_headers = [("content-length", str(size)), *extra]
                writer.write(conn.send(h11.Response(status_code=status, headers=resp_headers)))
                sent = 0
                while sent < size:
                    n = min(65536, size - sent)
                    writer.write(conn.send(h11.Data(data=b"x" * n)))
                    await writer.drain()
                    sent += n
            else:
                ctype = "application/octet-stream" if "x-backend-echo" in headers else "application/json"
                resp_headers = [("content-type", ctype), ("content-length", str(len(payload))), ("x-backend-name", name), *extra]
                no_body = request.method == b"HEAD" or status in (204, 304)
                if no_body and status in (204, 304):
                    resp_headers = [h for h in resp_headers if h[0] != "content-length"]
                writer.write(conn.send(h11.Response(status_code=status, headers=resp_headers)))
                if not no_body:
                    writer.write(conn.send(h11.Data(data=payload)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve(name: str, host: str, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, name), host, port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.host, args.port))


class BackendProcess:
    """The backend above as a child process; a context manager that always stops it."""

    def __init__(self, name: str = "backend", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.backend", "--name", name, "--port", str(self.port)],
            cwd=root,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "BackendProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
