"""VirtualService resilience policies end to end: fault, timeout, retries, mirror, corsPolicy.

Real sockets: a meshproxy sidecar process in front of echo backends.  Retry counts
are read from the backend itself (``GET /__backend/count``, straight to the backend),
timeouts are checked within generous bounds, percentages statistically.  Exact
bytes where Envoy's matter are compared with real Envoy in test_differential_envoy.py.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Iterator

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import Connection
from tests.support.meshproxy_proc import MeshproxyProcess, write_config
from tests.support.ports import free_port

H = "reviews:9080"


def config(ports: dict[str, int]) -> str:
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}
spec: {{containers: [{{name: app, ports: [{{name: http, containerPort: {port}}}]}}]}}
status: {{podIP: 127.0.0.1}}
""" for name, app, port in (("reviews-1", "reviews", ports["main"]), ("shadow-1", "shadow", ports["shadow"]),
                            ("dead-1", "dead", ports["dead"])))
    services = "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: http}}]
""" for name in ("reviews", "shadow", "dead"))
    return services + pods + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /abort-half}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort-unset}}]
    fault: {abort: {httpStatus: 503}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort-grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /delay-abort}}]
    fault:
      delay: {fixedDelay: 200ms, percentage: {value: 100}}
      abort: {httpStatus: 503, percentage: {value: 100}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /timeout}}]
    timeout: 300ms
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /pertry-noretry}}]
    retries: {attempts: 2, retryOn: connect-failure, perTryTimeout: 200ms}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /pertry}}]
    retries: {attempts: 2, retryOn: 5xx, perTryTimeout: 200ms}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /retry-gateway}}]
    retries: {attempts: 3, retryOn: gateway-error}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /retry-409}}]
    retries: {attempts: 2, retryOn: retriable-4xx}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /retry-codes}}]
    retries: {attempts: 2, retryOn: "418"}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /retry-reset}}]
    retries: {attempts: 2, retryOn: reset}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /retry}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /mirror-dead}}]
    mirror: {host: dead}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /mirror-off}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 0}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /mirrors}}]
    mirrors: [{destination: {host: shadow}}, {destination: {host: shadow}, percentage: {value: 100}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /mirror}}]
    mirror: {host: shadow}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /cors-ignore}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET], unmatchedPreflights: IGNORE}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.b\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a, x-b]
      exposeHeaders: [x-e]
      maxAge: 10m
      allowCredentials: true
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, int]]:
    main, shadow = BackendProcess("main"), BackendProcess("shadow")
    ports = {"main": main.port, "shadow": shadow.port, "dead": free_port()}
    try:
        proxy = MeshproxyProcess.sidecar([write_config(config(ports))])
    except BaseException:
        main.stop()
        shadow.stop()
        raise
    ports["proxy"] = proxy.port
    yield ports
    proxy.stop()
    main.stop()
    shadow.stop()


def count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__backend/count", timeout=5) as r:
        return int(r.read())


def get(env: dict[str, int], path: str, *headers: tuple[str, str], method: str = "GET", body: bytes = b""):
    c = Connection(env["proxy"])
    try:
        t = time.monotonic()
        r = c.request(method, path, H, list(headers), body)
        return r, time.monotonic() - t
    finally:
        c.sock.close()


# ----------------------------------------------------------------------------- fault


def test_fault_abort_replies_before_any_upstream_attempt(env: dict[str, int]) -> None:
    before = count(env["main"])
    r, _ = get(env, "/abort")
    assert (r.status, r.body) == (418, b"fault filter abort")
    assert r.header("content-type") == "text/plain" and r.header("server") == "envoy"
    assert count(env["main"]) == before


def test_fault_abort_without_percentage_never_fires(env: dict[str, int]) -> None:
    for _ in range(20):
        r, _ = get(env, "/abort-unset")
        assert r.status == 200 and r.json()["name"] == "main"


def test_fault_abort_percentage_is_statistical(env: dict[str, int]) -> None:
    # 50 % of n=400 requests: mean 200, sigma 10; 5 sigma (150..250) makes a false failure ~1e-6.
    n = 400
    c = Connection(env["proxy"])
    aborted = 0
    for _ in range(n):
        r = c.request("GET", "/abort-half", H)
        if r.status == 503:
            assert r.body == b"fault filter abort"
            aborted += 1
        else:
            assert r.status == 200
    c.sock.close()
    assert 150 <= aborted <= 250


def test_fault_grpc_abort(env: dict[str, int]) -> None:
    r, _ = get(env, "/abort-grpc", ("content-type", "application/grpc"))
    assert r.status == 200 and r.body == b""
    assert r.header("grpc-status") == "14" and r.header("grpc-message") == "fault filter abort"
    r, _ = get(env, "/abort-grpc")
    assert (r.status, r.body) == (200, b"fault filter abort")


def test_fault_delay_then_forward(env: dict[str, int]) -> None:
    r, elapsed = get(env, "/delay")
    assert r.status == 200 and r.json()["name"] == "main"
    assert 0.28 <= elapsed < 2.0


def test_fault_delay_then_abort(env: dict[str, int]) -> None:
    before = count(env["main"])
    r, elapsed = get(env, "/delay-abort")
    assert (r.status, r.body) == (503, b"fault filter abort")
    assert 0.18 <= elapsed < 2.0
    assert count(env["main"]) == before


def test_fault_delay_keeps_a_post_body(env: dict[str, int]) -> None:
    r, _ = get(env, "/delay", method="POST", body=b"x" * 100_000)
    assert r.status == 200 and r.json()["body_length"] == 100_000


# ----------------------------------------------------------------------------- timeouts


def test_route_timeout_504(env: dict[str, int]) -> None:
    r, elapsed = get(env, "/timeout", ("x-backend-delay-ms", "2000"))
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert 0.28 <= elapsed < 1.5


def test_route_timeout_not_hit(env: dict[str, int]) -> None:
    r, _ = get(env, "/timeout", ("x-backend-delay-ms", "50"))
    assert r.status == 200


def test_no_timeout_by_default(env: dict[str, int]) -> None:
    r, elapsed = get(env, "/", ("x-backend-delay-ms", "1200"))
    assert r.status == 200 and elapsed >= 1.1


def test_per_try_timeout_retries_then_504(env: dict[str, int]) -> None:
    before = count(env["main"])
    r, elapsed = get(env, "/pertry", ("x-backend-delay-ms", "1000"))
    assert (r.status, r.body) == (504, b"upstream request timeout")
    # Three tries of 200 ms plus backoff (Envoy took 640 ms).
    assert 0.58 <= elapsed < 2.0
    time.sleep(1.2)  # the backend counts a request once it has answered
    assert count(env["main"]) - before == 3


def test_per_try_timeout_not_retried_by_connect_failure(env: dict[str, int]) -> None:
    r, elapsed = get(env, "/pertry-noretry", ("x-backend-delay-ms", "1000"))
    assert r.status == 504
    assert 0.18 <= elapsed < 0.6


# ----------------------------------------------------------------------------- retries


@pytest.mark.parametrize("path,status,attempts", [
    ("/retry", 503, 3), ("/retry", 500, 3), ("/retry", 404, 1),
    ("/retry-gateway", 502, 4), ("/retry-gateway", 500, 1),
    ("/retry-409", 409, 3), ("/retry-409", 400, 1),
    ("/retry-codes", 418, 3), ("/retry-codes", 503, 1),
    ("/", 503, 1),  # Istio's default policy no longer retries 503 (1.24)
])
def test_retry_on_status(env: dict[str, int], path: str, status: int, attempts: int) -> None:
    before = count(env["main"])
    r, _ = get(env, path, ("x-backend-status", str(status)))
    assert r.status == status
    assert r.json()["count"] - before == attempts
    assert r.seen_header("x-envoy-attempt-count") == str(attempts)


def test_retry_on_reset(env: dict[str, int]) -> None:
    before = count(env["main"])
    r, _ = get(env, "/retry-reset", ("x-backend-close", "1"))
    assert r.status == 503
    assert count(env["main"]) - before == 3


def test_retry_resends_a_buffered_body(env: dict[str, int]) -> None:
    before = count(env["main"])
    body = bytes(range(256)) * 400
    r, _ = get(env, "/retry", ("x-backend-status", "503"), method="POST", body=body)
    assert r.status == 503
    info = r.json()
    assert info["count"] - before == 3 and info["body_length"] == len(body)
    import hashlib
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_retry_resends_a_chunked_body(env: dict[str, int]) -> None:
    before = count(env["main"])
    c = Connection(env["proxy"])
    c.send(b"POST /retry HTTP/1.1\r\nHost: reviews:9080\r\nx-backend-status: 503\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    r = c.read_response()
    c.sock.close()
    assert r.status == 503 and r.json()["body_length"] == 11 and r.json()["count"] - before == 3


def test_body_over_the_buffer_limit_is_not_retried(env: dict[str, int]) -> None:
    before = count(env["main"])
    body = b"y" * (1024 * 1024 + 10)
    r, _ = get(env, "/retry", ("x-backend-status", "503"), method="POST", body=body)
    assert r.status == 503 and r.json()["body_length"] == len(body)
    assert r.json()["count"] - before == 1


# ----------------------------------------------------------------------------- mirror


def _wait_count(port: int, target: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    n = count(port)
    while n < target and time.monotonic() < deadline:
        time.sleep(0.05)
        n = count(port)
    return n


def test_mirror_sends_a_shadow_copy(env: dict[str, int]) -> None:
    before = count(env["shadow"])
    r, _ = get(env, "/mirror", method="POST", body=b"hello")
    assert r.status == 200 and r.json()["name"] == "main"
    assert _wait_count(env["shadow"], before + 1) == before + 1


def test_mirrors_list_and_zero_percent(env: dict[str, int]) -> None:
    before = count(env["shadow"])
    get(env, "/mirrors")
    assert _wait_count(env["shadow"], before + 2) == before + 2
    get(env, "/mirror-off")
    time.sleep(0.3)
    assert count(env["shadow"]) == before + 2


def test_mirror_never_slows_or_fails_the_main_request(env: dict[str, int]) -> None:
    for _ in range(5):
        r, elapsed = get(env, "/mirror-dead")
        assert r.status == 200 and elapsed < 0.5


# ----------------------------------------------------------------------------- CORS


def test_cors_preflight_answered_by_the_proxy(env: dict[str, int]) -> None:
    before = count(env["main"])
    r, _ = get(env, "/cors", ("Origin", "https://x.b.example"), ("Access-Control-Request-Method", "POST"), method="OPTIONS")
    assert r.status == 200 and r.body == b""
    assert [(k.decode(), v.decode()) for k, v in r.headers if k.startswith(b"access-control")] == [
        ("access-control-allow-origin", "https://x.b.example"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-a,x-b"),
        ("access-control-max-age", "600"),
        ("access-control-expose-headers", "x-e"),
    ]
    assert count(env["main"]) == before


def test_cors_unmatched_preflight_forwarded_or_ignored(env: dict[str, int]) -> None:
    r, _ = get(env, "/cors", ("Origin", "https://evil"), ("Access-Control-Request-Method", "POST"), method="OPTIONS")
    assert r.status == 200 and r.json()["name"] == "main" and r.header("access-control-allow-origin") is None
    r, _ = get(env, "/cors-ignore", ("Origin", "https://evil"), ("Access-Control-Request-Method", "POST"), method="OPTIONS")
    assert r.status == 200 and r.body == b""
    assert r.header("access-control-allow-origin") is None and r.header("access-control-allow-methods") == "GET"


def test_cors_simple_request_gets_allow_origin(env: dict[str, int]) -> None:
    r, _ = get(env, "/cors", ("Origin", "https://a.example"))
    assert r.status == 200 and r.json()["name"] == "main"
    assert r.header("access-control-allow-origin") == "https://a.example"
    assert r.header("access-control-allow-credentials") == "true"
    assert r.header("access-control-expose-headers") == "x-e"
    r, _ = get(env, "/cors", ("Origin", "https://evil"))
    assert r.header("access-control-allow-origin") is None
