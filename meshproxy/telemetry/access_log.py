"""Envoy's access log as Istio configures it: the default TEXT format, its JSON variant, custom formats.

A format string (``%OPERATOR%`` commands between literal text) is compiled
once into a list of literals and field getters; logging a request is then a
single pass over that list.  Lines are collected in memory and written by a
worker thread in batches, so a slow disk or a blocked stdout pipe never stalls
the event loop.  Empty values print as ``-`` (TEXT) or ``null`` (JSON), as in
Envoy.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

#: pilot/pkg/model/telemetry_logging.go: EnvoyTextLogFormat.
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

#: The JSON encoding's keys and operators (EnvoyJSONLogFormatIstio), in Istio's order.
ISTIO_JSON_FIELDS: tuple[tuple[str, str], ...] = (
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    ("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("route_name", "%ROUTE_NAME%"),
)


class Record(Protocol):
    """What the formatter reads; ``meshproxy.transport.stream.ProxyStream`` provides it."""

    def log_request_header(self, name: bytes) -> bytes | None: ...

    def log_response_header(self, name: bytes) -> bytes | None: ...

    def log_field(self, name: str) -> Any: ...


Getter = Callable[[Record], Any]

_COMMAND = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")


def _start_time(r: Record) -> str | None:
    t = r.log_field("start_time")
    if t is None:
        return None
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _header_getter(spec: str, response: bool) -> Getter:
    """``REQ(X-ENVOY-ORIGINAL-PATH?:PATH)``: the first header, else the alternative."""
    names = [n.strip().lower() for n in spec.split("?")]
    keys = [n.encode() for n in names]

    def get(r: Record) -> Any:
        for key in keys:
            if key.startswith(b":"):
                value = r.log_field(key.decode())
            else:
                value = r.log_response_header(key) if response else r.log_request_header(key)
            if value:
                return value.decode("latin-1") if isinstance(value, bytes) else value
        return None

    return get


def _field(name: str) -> Getter:
    return lambda r: r.log_field(name)


_SIMPLE: dict[str, Getter] = {
    "START_TIME": _start_time,
    "PROTOCOL": _field("protocol"),
    "RESPONSE_CODE": _field("response_code"),
    "RESPONSE_FLAGS": _field("response_flags"),
    "RESPONSE_CODE_DETAILS": _field("response_code_details"),
    "CONNECTION_TERMINATION_DETAILS": _field("connection_termination_details"),
    "UPSTREAM_TRANSPORT_FAILURE_REASON": _field("upstream_transport_failure_reason"),
    "BYTES_RECEIVED": _field("bytes_received"),
    "BYTES_SENT": _field("bytes_sent"),
    "DURATION": _field("duration"),
    "UPSTREAM_HOST": _field("upstream_host"),
    "UPSTREAM_CLUSTER": _field("upstream_cluster"),
    "UPSTREAM_CLUSTER_RAW": _field("upstream_cluster"),
    "UPSTREAM_LOCAL_ADDRESS": _field("upstream_local_address"),
    "DOWNSTREAM_LOCAL_ADDRESS": _field("downstream_local_address"),
    "DOWNSTREAM_REMOTE_ADDRESS": _field("downstream_remote_address"),
    "DOWNSTREAM_PEER_ADDRESS": _field("downstream_remote_address"),
    "REQUESTED_SERVER_NAME": _field("requested_server_name"),
    "ROUTE_NAME": _field("route_name"),
    "HOSTNAME": lambda r: os.uname().nodename,
}


class UnknownOperator(ValueError):
    pass


def compile_command(name: str, arg: str | None, max_len: str | None) -> Getter:
    if name in ("REQ", "RESP"):
        if not arg:
            raise UnknownOperator(f"%{name}% needs a header name")
        getter = _header_getter(arg, response=name == "RESP")
    elif name in _SIMPLE:
        getter = _SIMPLE[name]
    else:
        raise UnknownOperator(f"unsupported access log operator %{name}%")
    if max_len:
        limit = int(max_len)
        inner = getter

        def getter(r: Record, inner: Getter = inner) -> Any:  # type: ignore[no-redef]
            v = inner(r)
            return v[:limit] if isinstance(v, str) else v

    return getter


def compile_text(fmt: str) -> list[str | Getter]:
    """A TEXT format string as literals and getters, in order."""
    parts: list[str | Getter] = []
    pos = 0
    for m in _COMMAND.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        parts.append(compile_command(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return parts


class Formatter:
    """Turns a finished request into one log line (TEXT or JSON)."""

    def __init__(self, encoding: str = "TEXT", fmt: str = "") -> None:
        self.encoding = encoding.upper()
        if self.encoding == "JSON":
            if fmt:
                fields = json.loads(fmt)
                self.json_fields = [(k, compile_text(v)) for k, v in fields.items()]
            else:
                self.json_fields = [(k, compile_text(v)) for k, v in ISTIO_JSON_FIELDS]
        else:
            text = fmt or ISTIO_TEXT_FORMAT
            if not text.endswith("\n"):
                text += "\n"
            self.parts = compile_text(text)

    def format(self, r: Record) -> str:
        if self.encoding == "JSON":
            out: dict[str, Any] = {}
            for key, parts in self.json_fields:
                if len(parts) == 1 and not isinstance(parts[0], str):
                    out[key] = parts[0](r)
                else:
                    out[key] = "".join(p if isinstance(p, str) else _text(p(r)) for p in parts)
            return json.dumps(out, separators=(",", ":")) + "\n"
        return "".join(p if isinstance(p, str) else _text(p(r)) for p in self.parts)


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


class AccessLog:
    """Formats on the event loop, writes on a worker thread, in batches.

    ``path`` is a file, ``/dev/stdout`` or ``/dev/stderr``.  ``flush()`` waits
    until everything logged so far is written (for shutdown and tests).
    """

    def __init__(self, path: str, formatter: Formatter, *, interval: float = 0.05) -> None:
        self.path = path
        self.formatter = formatter
        self.interval = interval
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._written = 0
        self._queued = 0
        if path in ("/dev/stdout", "-"):
            self._fd = os.dup(1)
        elif path == "/dev/stderr":
            self._fd = os.dup(2)
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def log(self, record: Record) -> None:
        line = self.formatter.format(record)
        with self._cond:
            self._lines.append(line)
            self._queued += 1
            if len(self._lines) == 1:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if self._closed and not self._lines:
                    return
                batch = self._lines
                self._lines = []
            data = "".join(batch).encode()
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._fd, view)
                except InterruptedError:
                    continue
                except OSError:
                    break
                view = view[n:]
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()
            if self.interval:
                time.sleep(self.interval)

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            while self._written < target and time.monotonic() < deadline:
                self._cond.wait(0.05)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)
        os.close(self._fd)
