"""Start meshproxy as a real child process (``python -m meshproxy ...``) for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from .ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def write_config(text: str, directory: str | None = None, name: str = "mesh.yaml") -> str:
    """Write YAML text to a fresh file and return its path."""
    directory = directory or tempfile.mkdtemp(prefix="meshproxy-cfg-")
    path = os.path.join(directory, name)
    Path(path).write_text(text)
    return path


class MeshproxyProcess:
    """``meshproxy sidecar|gateway ...`` as a child process, ready when its admin /ready says 200.

    ``args`` are the CLI arguments after the mode; ``--admin-port`` is added.
    Use ``sidecar()`` / ``gateway()`` for the common shapes.
    """

    def __init__(self, mode: str, args: Sequence[str], *, env: dict[str, str] | None = None, ready_timeout: float = 20.0) -> None:
        self.admin_port = free_port()
        self.stats_port = free_port()
        self.health_port = free_port()
        self.mode = mode
        self._log = tempfile.NamedTemporaryFile(prefix="meshproxy-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "meshproxy", mode, *args, "--admin-port", str(self.admin_port),
               "--stats-port", str(self.stats_port), "--health-port", str(self.health_port)]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self._wait_ready(ready_timeout)

    @classmethod
    def sidecar(cls, configs: Sequence[str], *, namespace: str = "default", labels: str = "app=sleep",
                extra: Sequence[str] = ()) -> "MeshproxyProcess":
        port = free_port()
        args: list[str] = []
        for c in configs:
            args += ["--config", c]
        args += ["--namespace", namespace, "--labels", labels, "--outbound-port", str(port), *extra]
        p = cls("sidecar", args)
        p.port = port
        return p

    @classmethod
    def gateway(cls, configs: Sequence[str], *, labels: str = "istio=ingressgateway", port_offset: int = 0,
                extra: Sequence[str] = ()) -> "MeshproxyProcess":
        args: list[str] = []
        for c in configs:
            args += ["--config", c]
        args += ["--labels", labels, "--bind", "127.0.0.1", "--port-offset", str(port_offset), *extra]
        return cls("gateway", args)

    port: int = 0

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"meshproxy exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"meshproxy did not become ready:\n{self.log()[-4000:]}")

    def admin(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "MeshproxyProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
