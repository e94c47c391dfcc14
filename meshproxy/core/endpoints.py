"""Endpoints and load-balancer settings: the compiled, per-cluster inputs of load balancing.

An ``Endpoint`` is one upstream address of a cluster.  Its identity fields are
fixed at compile time; ``active_requests`` is the one live counter, kept on the
endpoint itself (as Envoy keeps stats on its ``HostImpl``) so that the
least-request balancer reads it with no lookup.  The transport increments it
when a request is sent upstream and decrements it when the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class Endpoint:
    """One upstream address (``address:port``) with its labels and LB weight."""

    __slots__ = ("address", "port", "labels", "weight", "service_account", "key", "active_requests", "healthy", "workload", "namespace",
                 "outlier", "pool_key")

    def __init__(
        self,
        address: str,
        port: int,
        labels: Mapping[str, str] = EMPTY_LABELS,
        weight: int = 1,
        service_account: str = "",
        workload: str = "",
        namespace: str = "",
    ) -> None:
        self.address = address
        self.port = port
        self.labels = labels
        self.weight = weight
        self.service_account = service_account
        #: "address:port", the name Envoy's admin and access log use for the host.
        self.key = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        self.active_requests = 0
        self.healthy = True
        #: The outlier detector's ``HostMonitor`` for this endpoint, when its cluster has one.
        self.outlier: Any = None
        #: Which idle connections this endpoint's requests may reuse: ``key``, or a cluster-private
        #: key when the cluster counts its connections (circuit breaking; Envoy pools per cluster).
        self.pool_key = self.key
        #: The workload (Deployment, WorkloadEntry) and namespace, for telemetry labels.
        self.workload = workload
        self.namespace = namespace

    def copy(self) -> "Endpoint":
        """The same address with fresh live counters (each cluster owns its endpoints' counters)."""
        return Endpoint(self.address, self.port, self.labels, self.weight, self.service_account, self.workload, self.namespace)

    def __repr__(self) -> str:
        return f"Endpoint({self.key})"


#: Load-balancer kinds, named after Envoy's cluster LB policies as Istio maps them.
LEAST_REQUEST = "LEAST_REQUEST"
ROUND_ROBIN = "ROUND_ROBIN"
RANDOM = "RANDOM"
PASSTHROUGH = "PASSTHROUGH"
RING_HASH = "RING_HASH"
MAGLEV = "MAGLEV"


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """What a consistent-hash balancer hashes (DestinationRule ``consistentHash``).

    Exactly one of the key fields is set.  ``cookie_ttl`` > 0 means the proxy
    generates the cookie when the request lacks it (Envoy's behaviour for
    ``httpCookie`` with a TTL); 0 hashes only an existing cookie.
    """

    header_name: str | None = None  # lower-case
    cookie_name: str | None = None
    cookie_path: str | None = None
    cookie_ttl: float = 0.0
    use_source_ip: bool = False
    query_parameter: str | None = None


@dataclass(frozen=True, slots=True)
class LbSettings:
    """A cluster's load-balancing policy after Istio's precedence rules were applied."""

    kind: str = LEAST_REQUEST
    hash_policy: HashPolicy | None = None
    ring_minimum_size: int = 1024
    maglev_table_size: int = 65537
    extra: Mapping[str, object] = field(default_factory=dict)
