"""Access log formatting: Istio's TEXT and JSON formats, custom formats, the batched writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshproxy.telemetry.access_log import AccessLog, Formatter, UnknownOperator, compile_text


class FakeRecord:
    def __init__(self, **fields: Any) -> None:
        self.fields = {
            "start_time": 1_700_000_000.123,
            ":method": "GET",
            ":path": "/reviews/0?x=1",
            ":authority": "reviews:9080",
            "protocol": "HTTP/1.1",
            "response_code": 200,
            "response_flags": "-",
            "response_code_details": "via_upstream",
            "connection_termination_details": None,
            "upstream_transport_failure_reason": None,
            "bytes_received": 0,
            "bytes_sent": 295,
            "duration": 3,
            "upstream_host": "127.0.0.1:19084",
            "upstream_cluster": "outbound|9080|v1|reviews.default.svc.cluster.local",
            "upstream_local_address": "127.0.0.1:51234",
            "downstream_local_address": "127.0.0.1:15001",
            "downstream_remote_address": "127.0.0.1:40000",
            "requested_server_name": None,
            "route_name": None,
            **fields,
        }
        self.request_headers = {b"user-agent": b"curl/8.0", b"x-request-id": b"abc"}
        self.response_headers = {b"x-envoy-upstream-service-time": b"2"}

    def log_field(self, name: str) -> Any:
        return self.fields.get(name)

    def log_request_header(self, name: bytes) -> bytes | None:
        return self.request_headers.get(name)

    def log_response_header(self, name: bytes) -> bytes | None:
        return self.response_headers.get(name)


def test_istio_default_text_format() -> None:
    line = Formatter().format(FakeRecord())
    assert line == (
        '[2023-11-14T22:13:20.123Z] "GET /reviews/0?x=1 HTTP/1.1" 200 - via_upstream - "-" 0 295 3 2 "-" '
        '"curl/8.0" "abc" "reviews:9080" "127.0.0.1:19084" outbound|9080|v1|reviews.default.svc.cluster.local '
        "127.0.0.1:51234 127.0.0.1:15001 127.0.0.1:40000 - -\n"
    )


def test_original_path_wins_over_path() -> None:
    r = FakeRecord()
    r.request_headers[b"x-envoy-original-path"] = b"/before/rewrite"
    assert '"GET /before/rewrite HTTP/1.1"' in Formatter().format(r)


def test_istio_json_format() -> None:
    entry = json.loads(Formatter("JSON").format(FakeRecord(route_name="default")))
    assert list(entry)[:4] == ["start_time", "method", "path", "protocol"]
    assert entry["response_code"] == 200 and entry["bytes_sent"] == 295
    assert entry["upstream_transport_failure_reason"] is None
    assert entry["route_name"] == "default" and entry["user_agent"] == "curl/8.0"


def test_custom_formats() -> None:
    assert Formatter(fmt="%REQ(:METHOD)% %RESPONSE_CODE% %REQ(USER-AGENT):4%").format(FakeRecord()) == "GET 200 curl\n"
    entry = json.loads(Formatter("JSON", '{"code": "%RESPONSE_CODE%", "what": "x %REQ(:AUTHORITY)%"}').format(FakeRecord()))
    assert entry == {"code": 200, "what": "x reviews:9080"}
    with pytest.raises(UnknownOperator):
        compile_text("%NOT_AN_OPERATOR%")


def test_writer_batches_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), Formatter(fmt="%RESPONSE_CODE%"))
    for code in range(200, 300):
        log.log(FakeRecord(response_code=code))
    log.close()
    assert path.read_text().splitlines() == [str(c) for c in range(200, 300)]
