"""The Bookinfo demo end to end: real app processes, a sidecar per app, an ingress gateway.

productpage calls details and reviews through its own sidecar with ``Host:
reviews:9080`` and forwards ``end-user``; the reviews VirtualService sends
jason to v2 and everyone else to v1; the 75/25 variant splits v1/v3.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from meshproxy.demo.runner import Demo, default_config_dir
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def productpage(url: str, user: str | None = None) -> str:
    request = urllib.request.Request(url + "/productpage", headers={"end-user": user} if user else {})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def reviews_version(page: str) -> str:
    for line in page.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "reviews":
            return words[1]
    raise AssertionError(f"no reviews line in:\n{page}")


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    with Demo(gateway_port=free_port(), outbound_port_base=free_port(), admin_port_base=free_port()) as d:
        yield d


def test_productpage_shows_reviews_v1_for_anonymous(demo) -> None:  # type: ignore[no-untyped-def]
    page = productpage(demo.gateway_url)
    assert "productpage v1" in page
    assert "details v1" in page
    assert reviews_version(page) == "v1"


def test_jason_sees_reviews_v2_with_ratings(demo) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        page = productpage(demo.gateway_url, "jason")
        assert reviews_version(page) == "v2"
        assert "ratings v1" in page


def test_gateway_does_not_route_unknown_paths(demo) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(demo.gateway_url + "/not-in-the-virtual-service", timeout=10)
    assert err.value.code == 404


def test_weighted_variant_splits_75_25() -> None:
    variant = default_config_dir() / "variants" / "virtual-service-reviews-75-25.yaml"
    with Demo(reviews_file=variant, gateway_port=free_port(), outbound_port_base=free_port(), admin_port_base=free_port()) as d:
        counts: Counter[str] = Counter(reviews_version(productpage(d.gateway_url)) for _ in range(200))
    assert set(counts) <= {"v1", "v3"}
    # Binomial(200, 0.25): mean 50, sd 6.1; 5 sd keeps this from ever flaking.
    assert abs(counts["v3"] - 50) < 5 * 6.13, counts


def test_meshproxy_demo_command_stops_everything_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshproxy", "demo", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 20
        page = ""
        while time.monotonic() < deadline:
            try:
                page = productpage(f"http://127.0.0.1:{port}")
                break
            except OSError:
                time.sleep(0.2)
        assert reviews_version(page) == "v1"
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert len(children) >= 6 + 7  # six apps, six sidecars and a gateway
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert b"curl" in out
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/productpage", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
