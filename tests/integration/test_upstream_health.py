"""DestinationRule connectionPool / outlierDetection and hostile peers, over real sockets.

A meshproxy sidecar process in front of echo backends (tests/support/backend.py)
and a deliberately broken upstream (tests/support/hostile.py).  Timings are
generous: the box is small and noisy.  Exact bytes of the overflow reply are
compared with real Envoy in test_differential_envoy.py.
"""

from __future__ import annotations

import concurrent.futures
import h11
import os
import re
import socket
import time
from typing import Iterator

import pytest

from tests.support.backend import BackendProcess
from tests.support.client import Connection, get
from tests.support.hostile import HostileBackend
from tests.support.meshproxy_proc import MeshproxyProcess, write_config

OVERFLOW = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def config(ports: dict[str, int]) -> str:
    pods = [("main-1", "main", ports["main"]), ("good-1", "flaky", ports["good"]), ("bad-1", "flaky", ports["bad"]),
            ("hostile-1", "hostile", ports["hostile"])]
    out = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}
spec: {{containers: [{{name: app, ports: [{{name: http, containerPort: {port}}}]}}]}}
status: {{podIP: 127.0.0.1}}
""" for name, app, port in pods)
    for svc, app in (("pool", "main"), ("perconn", "main"), ("idle", "main"), ("plain", "main"), ("flaky", "flaky"),
                     ("hostile", "hostile")):
        out += f"""---
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: default}}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 9080, targetPort: http}}]
"""
    return out + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pool, namespace: default}
spec:
  host: pool
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: perconn, namespace: default}
spec:
  host: perconn
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: idle, namespace: default}
spec:
  host: idle
  trafficPolicy:
    connectionPool:
      http: {idleTimeout: 1s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: default}
spec:
  host: flaky
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 2s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hostile, namespace: default}
spec:
  hosts: [hostile]
  http:
  - retries: {attempts: 0}
    route: [{destination: {host: hostile}}]
"""


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, object]]:
    main, good = BackendProcess("main"), BackendProcess("good")
    bad, hostile = HostileBackend("500"), HostileBackend("ok")
    ports = {"main": main.port, "good": good.port, "bad": bad.port, "hostile": hostile.port}
    try:
        proxy = MeshproxyProcess.sidecar([write_config(config(ports))])
    except BaseException:
        for b in (main, good, bad, hostile):
            b.stop()
        raise
    yield {"proxy": proxy, "port": proxy.port, **ports}
    proxy.stop()
    for b in (main, good, bad, hostile):
        b.stop()


def stats(proxy: MeshproxyProcess) -> dict[str, int]:
    out = {}
    for line in proxy.admin("/stats").decode().splitlines():
        k, _, v = line.rpartition(": ")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out


def health_flags(proxy: MeshproxyProcess, cluster: str, port: int) -> str:
    text = proxy.admin("/clusters").decode()
    m = re.search(rf"^{re.escape(cluster)}::127\.0\.0\.1:{port}::health_flags::(\S+)$", text, re.M)
    assert m, text
    return m.group(1)


# --------------------------------------------------------------------------- circuit breaking


def test_overflow_under_concurrent_load(env: dict) -> None:
    port = env["port"]

    def one(_: int):
        return get(port, "/", "pool:9080", [("x-backend-delay-ms", "600")])

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        results = list(ex.map(one, range(10)))
    ok = [r for r in results if r.status == 200]
    overflow = [r for r in results if r.status == 503]
    # One connection, one pending request: most of ten simultaneous requests overflow.
    assert len(ok) >= 2 and len(overflow) >= 5, [r.status for r in results]
    assert len(ok) + len(overflow) == 10
    for r in overflow:
        assert r.body == OVERFLOW
        assert r.header("content-type") == "text/plain"
    s = stats(env["proxy"])
    assert s["cluster.outbound|9080||pool.default.svc.cluster.local.upstream_rq_pending_overflow"] >= len(overflow)
    assert s["cluster.outbound|9080||pool.default.svc.cluster.local.rq_pending_open"] == 0
    assert s["cluster.outbound|9080||pool.default.svc.cluster.local.rq_open"] == 0
    # After the burst the cluster serves again.
    assert get(port, "/", "pool:9080").status == 200


def test_thresholds_on_admin_clusters(env: dict) -> None:
    text = env["proxy"].admin("/clusters").decode()
    assert "outbound|9080||pool.default.svc.cluster.local::default_priority::max_connections::1\n" in text
    assert "outbound|9080||pool.default.svc.cluster.local::default_priority::max_pending_requests::1\n" in text
    assert "outbound|9080||plain.default.svc.cluster.local::default_priority::max_connections::4294967295\n" in text


def test_max_requests_per_connection_one(env: dict) -> None:
    proxy, port = env["proxy"], env["port"]
    before = stats(proxy)["cluster_manager.upstream_cx_total"]
    with Connection(port) as c:
        for _ in range(5):
            assert c.request("GET", "/", "perconn:9080").status == 200
    after = stats(proxy)["cluster_manager.upstream_cx_total"]
    assert after - before == 5


def test_upstream_idle_timeout(env: dict) -> None:
    proxy, port = env["proxy"], env["port"]
    assert get(port, "/", "idle:9080").status == 200
    closed = stats(proxy)["cluster_manager.upstream_cx_idle_timeout"]
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if stats(proxy)["cluster_manager.upstream_cx_idle_timeout"] > closed:
            break
        time.sleep(0.2)
    else:
        pytest.fail("idle upstream connection was not closed after idleTimeout 1s")
    assert get(port, "/", "idle:9080").status == 200


# --------------------------------------------------------------------------- outlier detection


def test_outlier_ejection_and_return(env: dict) -> None:
    proxy, port = env["proxy"], env["port"]
    cluster = "outbound|9080||flaky.default.svc.cluster.local"
    statuses = [get(port, "/", "flaky:9080").status for _ in range(12)]
    # Round robin: the bad endpoint answers 500 three times, then it is ejected.
    assert statuses.count(500) == 3, statuses
    assert health_flags(proxy, cluster, env["bad"]) == "/failed_outlier_check"
    assert health_flags(proxy, cluster, env["good"]) == "healthy"
    # Traffic moved away: every request now goes to the good backend.
    assert all(get(port, "/", "flaky:9080").status == 200 for _ in range(10))
    import json

    data = json.loads(proxy.admin("/clusters?format=json"))
    flaky = next(c for c in data["cluster_statuses"] if c["name"] == cluster)
    bad = next(h for h in flaky["host_statuses"] if h["address"].endswith(f":{env['bad']}"))
    assert bad["health_status"]["failed_outlier_check"] is True and bad["outlier"]["num_ejections"] == 1
    # baseEjectionTime 2s (checked every 1s interval): back within a few seconds.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and health_flags(proxy, cluster, env["bad"]) != "healthy":
        time.sleep(0.2)
    assert health_flags(proxy, cluster, env["bad"]) == "healthy"
    statuses = [get(port, "/", "flaky:9080").status for _ in range(4)]
    assert 500 in statuses


# --------------------------------------------------------------------------- hostile upstreams, leaks


def _proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _hostile_round(port: int, mode: str) -> int:
    """One request to the hostile upstream; returns the status or 0 for a cut connection."""
    try:
        with Connection(port, timeout=5) as c:
            return c.request("GET", f"/mode/{mode}", "hostile:9080").status
    except (ConnectionError, OSError, h11.RemoteProtocolError):
        return 0


def _disconnect_mid_request(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /mode/ok HTTP/1.1\r\nHost: hostile:9080\r\ncontent-length: 100\r\n\r\nabc")
    s.close()


def test_hostile_upstreams_do_not_leak(env: dict) -> None:
    proxy, port = env["proxy"], env["port"]
    pid = proxy.proc.pid
    for mode in ("ok", "garbage", "midreset", "early", "reset"):
        _hostile_round(port, mode)  # warm up
    time.sleep(0.5)
    fds0, tasks0 = _proc_fds(pid), stats(proxy)["server.asyncio_tasks"]
    seen: dict[str, set[int]] = {}
    for i in range(500):
        for mode in ("garbage", "midreset", "early", "reset"):
            seen.setdefault(mode, set()).add(_hostile_round(port, mode))
        _disconnect_mid_request(port)
    assert seen["garbage"] == {502}, seen
    assert seen["midreset"] == {0}, seen  # response started: the client's connection is cut
    assert seen["early"] == {503} and seen["reset"] == {503}, seen
    assert _hostile_round(port, "ok") == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fds, tasks = _proc_fds(pid), stats(proxy)["server.asyncio_tasks"]
        if fds <= fds0 + 2 and tasks <= tasks0 + 1:
            break
        time.sleep(0.2)
    assert fds <= fds0 + 2, (fds0, fds)
    assert tasks <= tasks0 + 1, (tasks0, tasks)
    text = proxy.admin("/clusters").decode()
    assert f"outbound|9080||hostile.default.svc.cluster.local::127.0.0.1:{env['hostile']}::rq_active::0" in text


def test_client_disconnect_cancels_upstream_attempt(env: dict) -> None:
    proxy, port = env["proxy"], env["port"]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: plain:9080\r\nx-backend-delay-ms: 3000\r\n\r\n")
    time.sleep(0.3)
    text = proxy.admin("/clusters").decode()
    key = f"outbound|9080||plain.default.svc.cluster.local::127.0.0.1:{env['main']}::rq_active::"
    assert key + "1" in text
    s.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and key + "0" not in proxy.admin("/clusters").decode():
        time.sleep(0.05)
    # Released long before the backend's 3 s answer.
    assert key + "0" in proxy.admin("/clusters").decode()


# --------------------------------------------------------------------------- slow / abusive clients


@pytest.fixture(scope="module")
def limited(env: dict) -> Iterator[MeshproxyProcess]:
    ports = {k: env[k] for k in ("main", "good", "bad", "hostile")}
    proxy = MeshproxyProcess.sidecar(
        [write_config(config(ports))],  # type: ignore[arg-type]
        extra=["--request-headers-timeout", "1", "--downstream-idle-timeout", "1", "--max-downstream-connections", "8"],
    )
    yield proxy
    proxy.stop()


def test_request_headers_timeout_408_and_others_served(limited: MeshproxyProcess) -> None:
    port = limited.port
    slow = socket.create_connection(("127.0.0.1", port), timeout=6)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: pla")
    t0 = time.monotonic()
    # Meanwhile an ordinary client is served at once.
    assert get(port, "/", "plain:9080").status == 200
    assert time.monotonic() - t0 < 0.9
    data = b""
    while True:
        chunk = slow.recv(4096)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert data.endswith(b"\r\n\r\nrequest header timeout")
    assert 0.8 < elapsed < 4, elapsed
    slow.close()


def test_downstream_idle_timeout_closes_kept_alive(limited: MeshproxyProcess) -> None:
    with Connection(limited.port) as c:
        assert c.request("GET", "/", "plain:9080").status == 200
        t0 = time.monotonic()
        assert c.is_closed_by_peer(timeout=5)
        assert 0.8 < time.monotonic() - t0 < 4.5


def test_connection_cap(limited: MeshproxyProcess) -> None:
    port = limited.port
    time.sleep(1.5)  # let connections of earlier tests go
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra.settimeout(3)
        try:
            extra.sendall(b"GET / HTTP/1.1\r\nHost: plain:9080\r\n\r\n")
            got = extra.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        assert got == b""
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert get(port, "/", "plain:9080").status == 200
    assert stats(limited)["http.downstream_cx_overflow"] >= 1
