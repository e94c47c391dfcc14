"""The Bookinfo demo: a whole mesh on one machine, one process per pod and proxy.

``run_demo`` (what ``meshproxy demo`` calls) and the ``Demo`` context manager
(what integration tests use) read the ``kind: Pod`` documents of the config,
then start

* one stand-in app per Pod (``python -m meshproxy.demo.apps``) on the Pod's
  ``containerPort`` at its ``status.podIP``;
* one sidecar per Pod (``python -m meshproxy sidecar``) that knows its workload
  by ``--namespace`` and ``--labels``, as istiod knows a proxy by its pod, with
  its own outbound and admin ports (the app is told ``--sidecar HOST:PORT``,
  standing in for iptables capture of its outbound calls);
* one ingress gateway (``python -m meshproxy gateway``) labelled
  ``istio=ingressgateway``, listening on the Gateway's port 8080.

Every proxy is given the same config: all ``*.yaml`` files of the config
directory (non-recursive), with ``virtual-service-reviews.yaml`` replaced by
``--reviews FILE`` when one is given.  The runner interprets nothing of it
beyond the Pods and Services it needs to know what to start.

Children run in their own sessions (process groups) so that a terminal's
Ctrl-C reaches only the runner, which then stops every group: SIGTERM, up to
5 s grace, SIGKILL.  If any child dies unexpectedly the demo reports it and
stops everything.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TextIO

import yaml

#: The default VirtualService for reviews, replaced by ``reviews_file``.
REVIEWS_FILE_NAME = "virtual-service-reviews.yaml"
#: The variant the startup banner suggests.
WEIGHTED_VARIANT = Path("variants") / "virtual-service-reviews-75-25.yaml"
#: The Gateway in gateway.yaml listens on this port; other ports use --port-offset.
GATEWAY_CONFIG_PORT = 8080
GATEWAY_LABELS = "istio=ingressgateway"

OUTBOUND_PORT_BASE = 15101
ADMIN_PORT_BASE = 15200  # the gateway takes the first, sidecars follow (15201+)
READY_TIMEOUT = 20.0
STOP_GRACE = 5.0


class DemoError(RuntimeError):
    """The demo could not start (bad config, busy port, a child not coming up)."""


class DemoInterrupted(DemoError):
    """Stopped by a signal before everything was ready."""


def default_config_dir() -> Path:
    """The packaged Bookinfo config (``meshproxy/demo/bookinfo``, a link to ``config/bookinfo``)."""
    packaged = Path(__file__).resolve().parent / "bookinfo"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "config" / "bookinfo"
    return source_tree if source_tree.is_dir() else packaged


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Workload:
    """One ``kind: Pod`` document: what the runner starts an app and a sidecar for."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    port: int  # containers[0].ports[0].containerPort
    port_name: str
    service_account: str
    container_ports: Mapping[str, int] = field(default_factory=dict)  # named ports of all containers

    @property
    def app(self) -> str:
        return self.labels.get("app", self.name)

    @property
    def version(self) -> str:
        return self.labels.get("version", "v1")

    def labels_arg(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())


@dataclass(frozen=True)
class ServicePort:
    """One port of a Kubernetes Service: ``port`` → ``target_port`` (number or name)."""

    service: str
    namespace: str
    selector: Mapping[str, str]
    port: int
    name: str
    target_port: int | str

    def selects(self, workload: Workload) -> bool:
        return (
            workload.namespace == self.namespace
            and bool(self.selector)
            and all(workload.labels.get(k) == v for k, v in self.selector.items())
        )

    def resolve(self, workload: Workload) -> int | None:
        """The pod port this Service port reaches on ``workload``, as Kubernetes resolves it.

        A named ``targetPort`` is looked up among the pod's container ports by
        name (so each pod may use its own number); a number is used as is;
        an unresolvable name means the pod is not an endpoint of this port.
        """
        if isinstance(self.target_port, int):
            return self.target_port
        return workload.container_ports.get(self.target_port)


def config_files(config_dir: Path, reviews_file: Path | None = None) -> list[Path]:
    """All ``*.yaml`` files of ``config_dir`` (not recursive), sorted; ``reviews_file`` replaces the default one."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise DemoError(f"config directory not found: {config_dir}")
    files = sorted(p for p in config_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if reviews_file is not None:
        reviews_file = Path(reviews_file)
        if not reviews_file.is_file():
            raise DemoError(f"reviews file not found: {reviews_file}")
        files = [p for p in files if p.name != REVIEWS_FILE_NAME and p.resolve() != reviews_file.resolve()]
        files.append(reviews_file)
    if not files:
        raise DemoError(f"no *.yaml files in {config_dir}")
    return files


def load_documents(files: Iterable[Path]) -> list[dict]:
    """Every YAML document of ``files`` (empty documents skipped; ``kind: List`` flattened)."""
    docs: list[dict] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = list(yaml.safe_load_all(fh))
        except (OSError, yaml.YAMLError) as exc:
            raise DemoError(f"{path}: {exc}") from exc
        for doc in loaded:
            if not doc:
                continue
            if not isinstance(doc, dict):
                raise DemoError(f"{path}: a document is not a mapping")
            if doc.get("kind") == "List":
                docs.extend(item for item in doc.get("items") or [] if isinstance(item, dict))
            else:
                docs.append(doc)
    return docs


def _namespace(doc: dict) -> str:
    return (doc.get("metadata") or {}).get("namespace") or "default"


def read_workloads(docs: Iterable[dict]) -> list[Workload]:
    """The ``kind: Pod`` documents, in order."""
    workloads = []
    for doc in docs:
        if doc.get("kind") != "Pod":
            continue
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        name = meta.get("name") or "?"
        containers = spec.get("containers") or []
        ports = (containers[0].get("ports") or []) if containers else []
        if not ports or "containerPort" not in ports[0]:
            raise DemoError(f"Pod {name}: spec.containers[0].ports[0].containerPort is required by the demo")
        named = {
            p["name"]: int(p["containerPort"])
            for c in containers
            for p in c.get("ports") or []
            if p.get("name") and "containerPort" in p
        }
        workloads.append(Workload(
            name=name,
            namespace=_namespace(doc),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            ip=(doc.get("status") or {}).get("podIP") or "127.0.0.1",
            port=int(ports[0]["containerPort"]),
            port_name=ports[0].get("name", ""),
            service_account=spec.get("serviceAccountName") or "default",
            container_ports=named,
        ))
    return workloads


def read_service_ports(docs: Iterable[dict]) -> list[ServicePort]:
    """Every port of every ``kind: Service`` document."""
    result = []
    for doc in docs:
        if doc.get("kind") != "Service":
            continue
        meta = doc.get("metadata") or {}
        spec = doc.get("spec") or {}
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            result.append(ServicePort(
                service=meta.get("name", "?"),
                namespace=_namespace(doc),
                selector={str(k): str(v) for k, v in (spec.get("selector") or {}).items()},
                port=int(port["port"]),
                name=port.get("name", ""),
                target_port=int(target) if isinstance(target, int) or str(target).isdigit() else str(target),
            ))
    return result


# --------------------------------------------------------------------------- processes


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports(base: int, count: int, taken: set[int], host: str = "127.0.0.1") -> list[int]:
    ports: list[int] = []
    port = base
    while len(ports) < count:
        if port > 65535:
            raise DemoError(f"no {count} free ports from {base}")
        if port not in taken and _port_is_free(host, port):
            ports.append(port)
            taken.add(port)
        port += 1
    return ports


def _connect_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connect_host(host), port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(_connect_host(host), port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: children get SIGTERM if the runner dies without cleaning up (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG fires when the creating *thread* exits
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One process of the demo and how to tell it is ready."""

    name: str  # e.g. "sidecar reviews-v2"
    argv: list[str]
    log_path: Path
    ready_check: Callable[[], bool]
    ready_what: str  # for error messages: what was polled
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> int | None:
        """The exit code once the child has exited (and was reaped), else None.

        Before reaping, the rest of the child's process group is SIGKILLed, so
        a crashed proxy leaves no workers behind.  The leader stays a zombie
        until then, so its pid — the group id — cannot have been reused.
        """
        if self.proc is None:
            return None
        if self.proc.returncode is not None:
            return self.proc.returncode
        if not _exited_unreaped(self.proc):
            return None
        _signal_group(self.proc, signal.SIGKILL)
        return self.proc.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def describe_failure(self, why: str) -> str:
        tail = self.tail()
        out = f"{self.name} {why}\n  command: {' '.join(self.argv)}\n  log: {self.log_path}"
        if tail:
            out += "\n  last output:\n" + "\n".join("    " + line for line in tail.splitlines())
        return out


def _exited_unreaped(proc: subprocess.Popen) -> bool:
    """Has the child exited?  Checked without reaping it where the platform allows."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll() is not None
    return info is not None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's process group (it leads its own session), or the child alone.

    Only called while the child is not yet reaped, so the group id is still ours.
    """
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- the demo


class Demo:
    """The Bookinfo mesh as child processes; a context manager for tests.

        with Demo() as demo:
            urllib.request.urlopen(demo.gateway_url + "/productpage")

    ``start()`` returns once every proxy answers ``/ready`` on its admin port
    and every app accepts connections, or raises ``DemoError`` (after
    stopping whatever did start) naming what did not come up.
    """

    def __init__(
        self,
        config_dir: Path | None = None,
        reviews_file: Path | None = None,
        gateway_port: int = GATEWAY_CONFIG_PORT,
        bind: str = "127.0.0.1",
        *,
        ready_timeout: float = READY_TIMEOUT,
        outbound_port_base: int = OUTBOUND_PORT_BASE,
        admin_port_base: int = ADMIN_PORT_BASE,
        log_dir: Path | None = None,
        keep_logs: bool = False,
        proxy_command: Sequence[str] | None = None,
        extra_proxy_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
        self.reviews_file = Path(reviews_file) if reviews_file is not None else None
        self.gateway_port = gateway_port
        self.bind = bind
        self.ready_timeout = ready_timeout
        self.outbound_port_base = outbound_port_base
        self.admin_port_base = admin_port_base
        self.proxy_command = list(proxy_command or (sys.executable, "-m", "meshproxy"))
        self.extra_proxy_args = list(extra_proxy_args)
        self._env_overrides = dict(env or {})
        self._log_dir_given = log_dir is not None
        self.log_dir: Path | None = Path(log_dir) if log_dir is not None else None
        self.keep_logs = keep_logs or self._log_dir_given

        self.files: list[Path] = []
        self.workloads: list[Workload] = []
        self.service_ports: list[ServicePort] = []
        self.config_args: list[str] = []  # "--config PATH" pairs given to every proxy
        self.children: list[Child] = []
        #: per workload name: (outbound port, admin port)
        self.sidecar_ports: dict[str, tuple[int, int]] = {}
        self.gateway_admin_port: int | None = None
        self.stats_ports: list[int] = []
        self.health_ports: list[int] = []
        self._started = False
        self._failed = False

    # -- public ---------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        host = _connect_host(self.bind)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.gateway_port}"

    def start(self, abort: threading.Event | None = None) -> "Demo":
        """Start everything and wait until ready; ``abort`` (set from a signal handler) interrupts the wait."""
        if self._started:
            return self
        self._started = True
        try:
            self._plan()
            self._spawn_all()
            self._wait_ready(abort)
        except BaseException as exc:
            self._failed = not isinstance(exc, DemoInterrupted)
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every child: SIGTERM to each process group, up to 5 s, then SIGKILL. Idempotent."""
        running = [c for c in self.children if c.proc is not None and c.proc.returncode is None]
        for child in running:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and not all(_exited_unreaped(c.proc) for c in running):
            time.sleep(0.05)
        for child in running:
            # SIGKILL what is left of each group (a slow leader, stray grandchildren),
            # then reap the leader: until then its pid, the group id, stays ours.
            _signal_group(child.proc, signal.SIGKILL)
            try:
                child.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                pass
        if self.log_dir is not None and not self.keep_logs and not self._failed:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def dead_child(self) -> Child | None:
        """The first child that has exited, if any (the demo needs every one)."""
        for child in self.children:
            if child.exited() is not None:
                return child
        return None

    def mark_failed(self) -> None:
        """Keep the logs when stopping (something went wrong)."""
        self._failed = True

    def __enter__(self) -> "Demo":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- planning -------------------------------------------------------------

    def _plan(self) -> None:
        self.files = config_files(self.config_dir, self.reviews_file)
        docs = load_documents(self.files)
        self.workloads = read_workloads(docs)
        self.service_ports = read_service_ports(docs)
        if not self.workloads:
            raise DemoError(f"no kind: Pod documents in {self.config_dir}: nothing to run")
        seen: dict[tuple[str, int], str] = {}
        for w in self.workloads:
            key = (w.ip, w.port)
            if key in seen:
                raise DemoError(f"Pods {seen[key]} and {w.name} both use {w.ip}:{w.port}")
            seen[key] = w.name
            if not _port_is_free(w.ip, w.port):
                raise DemoError(f"{w.ip}:{w.port} (Pod {w.name}) is already in use: is another demo running?")
        if not _port_is_free(self.bind, self.gateway_port):
            raise DemoError(f"gateway port {self.bind}:{self.gateway_port} is already in use")

        taken = {w.port for w in self.workloads} | {self.gateway_port}
        outbound = _free_ports(self.outbound_port_base, len(self.workloads), taken)
        admin = _free_ports(self.admin_port_base, len(self.workloads) + 1, taken)
        # Each proxy's Prometheus (Istio: 15090) and health (15021) ports, one pair per proxy.
        taken |= set(outbound) | set(admin)
        self.stats_ports = _free_ports(self.admin_port_base + 100, len(self.workloads) + 1, taken)
        taken |= set(self.stats_ports)
        self.health_ports = _free_ports(self.admin_port_base + 200, len(self.workloads) + 1, taken)
        self.gateway_admin_port = admin[0]
        for w, out_port, admin_port in zip(self.workloads, outbound, admin[1:]):
            self.sidecar_ports[w.name] = (out_port, admin_port)

        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="meshproxy-demo-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_args = self._config_args()

    def _config_args(self) -> list[str]:
        """``--config`` for every proxy: the directory itself, or each chosen file (the flag repeats)."""
        if self.reviews_file is None:
            return ["--config", str(self.config_dir.resolve())]
        return [arg for path in self.files for arg in ("--config", str(path.resolve()))]

    def _proxy_argv(self, mode: str, *extra: str) -> list[str]:
        return [*self.proxy_command, mode, *self.config_args, *extra, *self.extra_proxy_args]

    def _spawn_all(self) -> None:
        assert self.log_dir is not None
        python = sys.executable
        gw_admin = self.gateway_admin_port
        assert gw_admin is not None
        gw_args = ["--labels", GATEWAY_LABELS, "--admin-port", str(gw_admin), "--bind", self.bind,
                   "--stats-port", str(self.stats_ports[0]), "--health-port", str(self.health_ports[0])]
        if self.gateway_port != GATEWAY_CONFIG_PORT:
            gw_args += ["--port-offset", str(self.gateway_port - GATEWAY_CONFIG_PORT)]
        bind, gw_port = self.bind, self.gateway_port
        self.children.append(Child(
            name="gateway istio-ingressgateway",
            argv=self._proxy_argv("gateway", *gw_args),
            log_path=self.log_dir / "istio-ingressgateway.log",
            ready_check=lambda: _http_ok("127.0.0.1", gw_admin, "/ready") and _tcp_accepts(bind, gw_port),
            ready_what=f"http://127.0.0.1:{gw_admin}/ready and {bind}:{gw_port}",
        ))
        for i, w in enumerate(self.workloads, start=1):
            out_port, admin_port = self.sidecar_ports[w.name]
            self.children.append(Child(
                name=f"sidecar {w.name}",
                argv=self._proxy_argv(
                    "sidecar",
                    "--namespace", w.namespace,
                    "--labels", w.labels_arg(),
                    "--outbound-port", str(out_port),
                    "--admin-port", str(admin_port),
                    "--stats-port", str(self.stats_ports[i]),
                    "--health-port", str(self.health_ports[i]),
                    "--workload-name", w.name,
                ),
                log_path=self.log_dir / f"{w.name}.sidecar.log",
                ready_check=lambda a=admin_port: _http_ok("127.0.0.1", a, "/ready"),
                ready_what=f"http://127.0.0.1:{admin_port}/ready",
            ))
        for w in self.workloads:
            out_port, _ = self.sidecar_ports[w.name]
            self.children.append(Child(
                name=f"app {w.name}",
                argv=[python, "-m", "meshproxy.demo.apps", w.app, "--version", w.version,
                      "--port", str(w.port), "--bind", w.ip, "--sidecar", f"127.0.0.1:{out_port}"],
                log_path=self.log_dir / f"{w.name}.app.log",
                ready_check=lambda ip=w.ip, p=w.port: _tcp_accepts(ip, p),
                ready_what=f"TCP {w.ip}:{w.port}",
            ))

        env = self._child_env()
        preexec = _die_with_parent()
        for child in self.children:
            with open(child.log_path, "wb") as log:
                child.proc = subprocess.Popen(
                    child.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=preexec,
                )

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # so `-m meshproxy` works uninstalled
        paths = [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_root]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self._env_overrides)
        return env

    def _wait_ready(self, abort: threading.Event | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(self.children)
        while pending:
            if abort is not None and abort.is_set():
                raise DemoInterrupted("interrupted while starting")
            for child in list(pending):
                code = child.exited()
                if code is not None:
                    raise DemoError(child.describe_failure(f"exited with code {code} while starting"))
                if child.ready_check():
                    pending.remove(child)
            if not pending:
                return
            if time.monotonic() >= deadline:
                details = "\n".join(
                    c.describe_failure(f"not ready after {self.ready_timeout:g} s (polled {c.ready_what})")
                    for c in pending
                )
                raise DemoError(f"{len(pending)} of {len(self.children)} processes did not come up:\n{details}")
            time.sleep(0.1)

    # -- reporting ------------------------------------------------------------

    def banner(self) -> str:
        """What is running and what to curl."""
        host = self.gateway_url.removeprefix("http://")
        bookinfo = any(w.app == "productpage" for w in self.workloads)
        lines = [f"{'Bookinfo' if bookinfo else 'The mesh'} is up: {len(self.workloads)} workloads,"
                 f" {len(self.workloads)} sidecars, 1 ingress gateway."]
        lines.append(f"  {'gateway':<16} {self.gateway_url:<24} admin 127.0.0.1:{self.gateway_admin_port}")
        for w in self.workloads:
            out_port, admin_port = self.sidecar_ports[w.name]
            lines.append(
                f"  {w.name:<16} app {w.ip}:{w.port:<10} sidecar outbound 127.0.0.1:{out_port}"
                f"  admin 127.0.0.1:{admin_port}"
            )
        for sp in self.service_ports:
            backends = [f"{w.name}:{sp.resolve(w)}" for w in self.workloads if sp.selects(w) and sp.resolve(w)]
            lines.append(f"  service {sp.service}:{sp.port} -> {', '.join(backends) or 'no endpoints'}")
        reviews = self.reviews_file or (self.config_dir / REVIEWS_FILE_NAME)
        routing = f" (reviews routing: {_display(reviews)})" if bookinfo else ""
        lines.append(f"  config {_display(self.config_dir)}{routing}")
        lines.append(f"  logs   {self.log_dir}")
        lines.append("")
        lines.append("Try:")
        if bookinfo:
            lines.append(f"  curl {host}/productpage")
            lines.append(f"  curl -H 'end-user: jason' {host}/productpage")
            lines.append("")
            lines.append("Shift reviews traffic 75% v1 / 25% v3 (restart the demo with another reviews file):")
            lines.append(f"  meshproxy demo --reviews {_display(self.config_dir / WEIGHTED_VARIANT)}")
        else:
            lines.append(f"  curl -H 'Host: <a host of the Gateway>' {host}/  (see the YAML in {_display(self.config_dir)})")
        lines.append("")
        lines.append("Ctrl-C stops everything.")
        return "\n".join(lines)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- entry point


def run_demo(
    config_dir: Path,
    reviews_file: Path | None,
    gateway_port: int = GATEWAY_CONFIG_PORT,
    bind: str = "127.0.0.1",
    *,
    out: TextIO | None = None,
) -> int:
    """Run the demo until SIGINT/SIGTERM (→ 0) or until a child dies (→ 1)."""
    out = out or sys.stdout
    err = sys.stderr
    stop_requested = threading.Event()
    previous: dict[int, object] = {}

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    demo = Demo(config_dir, reviews_file, gateway_port, bind, keep_logs=True)
    try:
        print(f"Starting Bookinfo from {_display(Path(config_dir))} ...", file=out, flush=True)
        try:
            demo.start(abort=stop_requested)
        except DemoInterrupted:
            return 0
        except DemoError as exc:
            print(f"meshproxy demo: {exc}", file=err, flush=True)
            return 1
        if stop_requested.is_set():
            return 0
        print(demo.banner(), file=out, flush=True)
        while not stop_requested.wait(0.25):
            dead = demo.dead_child()
            if dead is not None:
                demo.mark_failed()
                print(
                    "meshproxy demo: " + dead.describe_failure(f"exited unexpectedly with code {dead.exited()}")
                    + "\nstopping everything.",
                    file=err,
                    flush=True,
                )
                return 1
        print("\nStopping ...", file=out, flush=True)
        return 0
    except KeyboardInterrupt:  # no handler could be installed (not the main thread)
        return 0
    finally:
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meshproxy.demo.runner``: the same as ``meshproxy demo``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m meshproxy.demo.runner", description="Run the Bookinfo demo.")
    parser.add_argument("--config-dir", type=Path, default=None, help="default: the packaged Bookinfo config")
    parser.add_argument("--reviews", type=Path, default=None, help=f"a file to use instead of {REVIEWS_FILE_NAME}")
    parser.add_argument("--port", type=int, default=GATEWAY_CONFIG_PORT, help="ingress gateway port")
    parser.add_argument("--bind", default="127.0.0.1", help="ingress gateway address")
    args = parser.parse_args(argv)
    return run_demo(args.config_dir or default_config_dir(), args.reviews, args.port, args.bind)


if __name__ == "__main__":
    sys.exit(main())
