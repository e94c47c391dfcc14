"""The Bookinfo demo as a user runs it: the 75/25 variant, and ``meshproxy demo`` stopped with Ctrl-C.

Separate from test_demo.py because the apps use the fixed ports of
config/bookinfo/bookinfo.yaml: only one demo can run at a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from meshproxy.demo.runner import Demo, default_config_dir
from tests.integration.test_demo import productpage, reviews_version
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


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
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(b"curl" in line for line in lines):
            time.sleep(0.1)  # the runner prints what to curl once everything is ready
        assert any(b"curl" in line for line in lines), b"".join(lines)
        deadline = time.monotonic() + 20
        version = ""
        while time.monotonic() < deadline:
            # The gateway may accept before every sidecar is ready: wait for a full page.
            try:
                version = reviews_version(productpage(f"http://127.0.0.1:{port}"))
                break
            except (OSError, AssertionError):
                time.sleep(0.2)
        assert version == "v1"
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert len(children) >= 6 + 7  # six apps, six sidecars and a gateway
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(5)
        assert proc.returncode == 0, b"".join(lines)
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/productpage", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
