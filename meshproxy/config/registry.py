"""The service registry without Kubernetes: Services, Pods, WorkloadEntries, ServiceEntries.

This is what istiod's service registry computes from the Kubernetes API, done
from documents: each ``Service`` selects ``Pod`` and ``WorkloadEntry``
documents by labels, and each of its ports resolves, per endpoint, to a
concrete port -- a *named* ``targetPort`` resolves to the pod's container port
of that name, exactly as Kubernetes' endpoints controller does, which is what
lets several pods share 127.0.0.1 on different ports.  ``ServiceEntry``
documents add hosts with inline endpoints (or a workloadSelector).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable

from ..core.endpoints import Endpoint

CLUSTER_DOMAIN = "svc.cluster.local"

#: Port-name prefixes / protocols that are not HTTP (Istio's protocol selection).
_NON_HTTP = ("tcp", "tls", "https", "mongo", "mysql", "redis", "udp")


def port_is_http(name: str | None, protocol: str | None, app_protocol: str | None = None) -> bool:
    """Whether a service port carries HTTP (explicit ``http*``/``grpc*`` or unnamed and sniffed)."""
    for label in (app_protocol, protocol, name):
        if not label:
            continue
        token = label.lower().split("-")[0]
        if token in _NON_HTTP:
            return False
        if token.startswith(("http", "grpc")):
            return True
    return True


@dataclass
class ServicePort:
    name: str
    number: int
    target_port: int | str | None
    http: bool


@dataclass
class ServiceInfo:
    """One service host with its ports and endpoints (per port)."""

    fqdn: str
    name: str
    namespace: str
    ports: list[ServicePort]
    kind: str  # "Kubernetes" or "ServiceEntry"
    resolution: str = "STATIC"
    addresses: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    #: port number -> endpoints
    endpoints: dict[int, list[Endpoint]] = field(default_factory=dict)
    source: str = ""

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def alt_names(self, proxy_namespace: str) -> list[str]:
        """Host names a sidecar accepts for this service (Istio's vhost domains)."""
        if self.kind != "Kubernetes":
            return [self.fqdn, *self.addresses]
        names = [self.fqdn]
        if proxy_namespace == self.namespace:
            names.append(self.name)
        names += [f"{self.name}.{self.namespace}", f"{self.name}.{self.namespace}.svc", *self.addresses]
        return names


def _labels(mapping: dict[str, str] | None) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(mapping or {}))


def _selects(selector: dict[str, str], labels: dict[str, str] | Any) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def fqdn_for(host: str, namespace: str) -> str:
    """Istio's short-name rule: a host without a dot is ``name.<namespace>.svc.cluster.local``."""
    if "." in host or host == "*" or host.startswith("*"):
        return host.lower()
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}".lower()


def build_registry(config: Any) -> dict[str, ServiceInfo]:
    """All services by host name, in document order."""
    services: dict[str, ServiceInfo] = {}
    pods = [p.doc for p in config.pods]
    workload_entries = [w.doc for w in config.workload_entries]

    for loaded in config.services:
        svc = loaded.doc
        ns = svc.metadata.namespace or "default"
        spec = svc.spec
        fqdn = f"{svc.metadata.name}.{ns}.{CLUSTER_DOMAIN}"
        ports = [
            ServicePort(
                name=p.name or "",
                number=p.port,
                target_port=p.target_port,
                http=port_is_http(p.name, None, p.app_protocol),
            )
            for p in spec.ports
        ]
        cluster_ip = getattr(spec, "cluster_ip", None)
        addresses = (cluster_ip,) if cluster_ip and cluster_ip != "None" else ()
        info = ServiceInfo(fqdn, svc.metadata.name, ns, ports, "Kubernetes", addresses=addresses, source=str(loaded.ref))
        selector = dict(spec.selector or {})
        for port in ports:
            eps: list[Endpoint] = []
            for pod in pods:
                if (pod.metadata.namespace or "default") != ns or not _selects(selector, pod.metadata.labels or {}):
                    continue
                status = getattr(pod, "status", None)
                address = getattr(status, "pod_ip", None) if status is not None else None
                if not address:
                    continue
                target = _resolve_pod_port(pod, port)
                if target is None:
                    continue
                sa = getattr(pod.spec, "service_account_name", None) or "default"
                eps.append(Endpoint(address, target, _labels(pod.metadata.labels), 1, sa, workload_name(pod.metadata.name), ns))
            for we in workload_entries:
                if (we.metadata.namespace or "default") != ns or not _selects(selector, we.spec.labels or {}):
                    continue
                target = _resolve_workload_entry_port(we.spec, port)
                if target is None or not we.spec.address:
                    continue
                eps.append(Endpoint(we.spec.address, target, _labels(we.spec.labels), we.spec.weight or 1,
                                    we.spec.service_account or "default", we.metadata.name, ns))
            info.endpoints[port.number] = eps
        services.setdefault(fqdn, info)

    for loaded in config.service_entries:
        se = loaded.doc
        ns = se.metadata.namespace or "default"
        spec = se.spec
        resolution = (spec.resolution or "NONE").upper()
        ports = [
            ServicePort(name=p.name or "", number=p.number, target_port=p.target_port, http=port_is_http(p.name, p.protocol))
            for p in spec.ports
        ]
        for host in spec.hosts:
            fqdn = fqdn_for(host, ns)
            info = ServiceInfo(
                fqdn,
                host.split(".")[0],
                ns,
                ports,
                "ServiceEntry",
                resolution=resolution,
                addresses=tuple(a for a in spec.addresses if "/" not in a),
                export_to=tuple(spec.export_to),
                source=str(loaded.ref),
            )
            selector = dict(getattr(spec.workload_selector, "labels", None) or {}) if spec.workload_selector else {}
            for port in ports:
                eps = []
                for ep in spec.endpoints:
                    target = _resolve_workload_entry_port(ep, port)
                    address = ep.address or (host if resolution.startswith("DNS") else "")
                    if target is None or not address:
                        continue
                    eps.append(Endpoint(address, target, _labels(ep.labels), ep.weight or 1, ep.service_account or ""))
                if selector:
                    for we in workload_entries:
                        if (we.metadata.namespace or "default") == ns and _selects(selector, we.spec.labels or {}):
                            target = _resolve_workload_entry_port(we.spec, port)
                            if target is not None and we.spec.address:
                                eps.append(Endpoint(we.spec.address, target, _labels(we.spec.labels), we.spec.weight or 1))
                    for pod in pods:
                        if (pod.metadata.namespace or "default") == ns and _selects(selector, pod.metadata.labels or {}):
                            status = getattr(pod, "status", None)
                            address = getattr(status, "pod_ip", None) if status is not None else None
                            if address:
                                eps.append(Endpoint(address, _target_number(port), _labels(pod.metadata.labels)))
                if not eps and resolution.startswith("DNS") and not spec.endpoints and not selector:
                    # DNS resolution without endpoints resolves the host itself.
                    eps.append(Endpoint(host, _target_number(port)))
                info.endpoints[port.number] = eps
            services.setdefault(fqdn, info)
    return services


_POD_SUFFIX = re.compile(r"-[a-z0-9]{6,10}-[a-z0-9]{5}$")


def workload_name(pod_name: str) -> str:
    """A Deployment's name from its pod's (``reviews-v2-5b667bcbf8-x7k2p`` → ``reviews-v2``)."""
    return _POD_SUFFIX.sub("", pod_name or "")


def _target_number(port: ServicePort) -> int:
    return port.target_port if isinstance(port.target_port, int) else port.number


def _resolve_pod_port(pod: Any, port: ServicePort) -> int | None:
    target = port.target_port
    if target is None or target == "":
        return port.number
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == target:
                return int(cp.container_port)
    return None


def _resolve_workload_entry_port(spec: Any, port: ServicePort) -> int | None:
    ports = dict(getattr(spec, "ports", None) or {})
    if port.name and port.name in ports:
        return int(ports[port.name])
    target = port.target_port
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    if isinstance(target, str) and target:
        return None if target not in ports else int(ports[target])
    return port.number


def iter_ports(services: Iterable[ServiceInfo]) -> list[int]:
    seen: dict[int, None] = {}
    for s in services:
        for p in s.ports:
            if p.http:
                seen.setdefault(p.number, None)
    return list(seen)
