"""Pydantic models of the configuration meshproxy reads: Istio networking kinds,
the Kubernetes objects they refer to, and MeshConfig.

Conventions
-----------
* Python attribute names are the snake_case of Istio's JSON field names; the
  camelCase JSON name is the alias (``to_camel``, with explicit aliases where it
  gets the name wrong, e.g. ``consecutive_5xx_errors`` -> ``consecutive5xxErrors``).
* Every model is frozen and forbids unknown fields (except Kubernetes objects,
  ``ObjectMeta`` and ``MeshConfig``, which carry many fields meshproxy ignores).
* ``null`` is treated like an absent field (protobuf JSON semantics).
* Lists default to ``[]``, maps to ``{}``, optional scalars to ``None``.
* Durations (``"5s"``, ``"1.5s"``, ``"100ms"``, ``"1h30m"``) become ``float``
  seconds.
* Cheap checks that istiod's validation (pkg/config/validation) performs are
  model validators.  They raise :func:`config_error`, whose ``subloc`` context
  lets the loader report the exact field (``spec.http[0].redirect.redirectCode``).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    # helpers / scalar types
    "Duration", "STRICT_DURATIONS", "PortNumber", "SubsetName", "Protocol", "PROTOCOLS",
    "RETRY_ON_POLICIES", "IntOrString", "parse_duration", "compile_re2", "config_error",
    # shared
    "ObjectMeta", "Percent", "StringMatch", "PortSelector", "Destination", "WorkloadSelector",
    "ServiceEntryWorkloadSelector",
    # VirtualService
    "VirtualService", "VirtualServiceSpec", "HTTPRoute", "HTTPMatchRequest", "HTTPRouteDestination",
    "HTTPRedirect", "HTTPDirectResponse", "HTTPBody", "HTTPRewrite", "RegexRewrite", "Headers",
    "HeaderOperations", "HTTPRetry", "HTTPFaultInjection", "FaultDelay", "FaultAbort", "CorsPolicy",
    "HTTPMirrorPolicy", "Delegate",
    # DestinationRule
    "DestinationRule", "DestinationRuleSpec", "Subset", "TrafficPolicy", "PortTrafficPolicy",
    "LoadBalancerSettings", "ConsistentHashLB", "HTTPCookie", "HTTPCookieAttribute", "RingHash", "Maglev",
    "WarmupConfiguration", "ConnectionPoolSettings", "TCPSettings", "TcpKeepalive", "HTTPSettings",
    "OutlierDetection", "ClientTLSSettings",
    # Gateway
    "Gateway", "GatewaySpec", "Server", "Port", "ServerTLSSettings",
    # ServiceEntry / WorkloadEntry
    "ServiceEntry", "ServiceEntrySpec", "ServicePort", "WorkloadEntry", "WorkloadEntrySpec",
    # Kubernetes
    "Service", "ServiceSpec", "ServicePortK8s", "Pod", "PodSpec", "PodStatus", "Container",
    "ContainerPort", "ConfigMap",
    # MeshConfig
    "MeshConfig", "OutboundTrafficPolicy", "PathNormalization",
]


# --------------------------------------------------------------------------------------------
# Errors


def config_error(message: str, *subloc: str | int) -> PydanticCustomError:
    """An error for a model validator to raise.

    ``subloc`` is the path (aliases / list indices) below the model being
    validated; the loader appends it to the error's location so the report
    names the offending field rather than the enclosing object.
    """
    return PydanticCustomError("istio_validation", "{message}", {"message": message, "subloc": tuple(subloc)})


# --------------------------------------------------------------------------------------------
# Scalar types

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(value: str) -> float:
    """Parse a Go/protobuf duration string (``"1h30m"``, ``"1.5s"``, ``"100ms"``) into seconds.

    Raises ``ValueError`` for anything else, including negative durations.
    """
    text = value.strip()
    if text == "0":
        return 0.0
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {value!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def _validate_duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from_file = isinstance(info.context, dict) and info.context.get(STRICT_DURATIONS)
        if not from_file and value >= 0:
            return float(value)  # Python callers may pass seconds
        raise PydanticCustomError(
            "duration", 'invalid duration {value}: expected a string with a unit, e.g. "{value}s"', {"value": value}
        )
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "invalid duration: expected a string such as \"5s\"", {})
    try:
        return parse_duration(value)
    except ValueError:
        raise PydanticCustomError(
            "duration",
            'invalid duration "{value}": expected a number followed by a unit (h, m, s, ms, us, ns), e.g. "1.5s"',
            {"value": value},
        ) from None


STRICT_DURATIONS = "strict_durations"
"""Validation-context key: when true (the loader sets it), numbers are rejected as durations, as
Istio rejects them; Python callers constructing models may pass float seconds or a timedelta."""

Duration = Annotated[float, BeforeValidator(_validate_duration)]
"""A duration string (``"1.5s"``) parsed into float seconds."""


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise PydanticCustomError("port", "port number {value} must be in the range 1..65535", {"value": value})
    return value


PortNumber = Annotated[int, AfterValidator(_check_port)]
"""A TCP/UDP port number, 1..65535."""


def _int_or_string(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError("int_or_string", "expected a port number or a port name", {})
    if isinstance(value, int):
        return _check_port(value)
    if value.isdigit():
        return _check_port(int(value))
    return value


IntOrString = Annotated[int | str, PlainValidator(_int_or_string)]
"""Kubernetes ``IntOrString`` as used by ``targetPort``: a port number or a port name."""


def _check_weight(value: int) -> int:
    if value < 0:
        raise PydanticCustomError("weight", "weight {value} must not be negative", {"value": value})
    return value


Weight = Annotated[int, AfterValidator(_check_weight)]

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def compile_re2(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 (as Envoy does); raises ``ValueError`` with RE2's message."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else "invalid regex"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(str(detail)) from None


# --------------------------------------------------------------------------------------------
# Base classes


class IstioModel(BaseModel):
    """Base of every model: camelCase aliases, frozen, unknown fields rejected, null == absent."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(v is None for v in data.values()):
            return {k: v for k, v in data.items() if v is not None}
        return data


class LooseModel(IstioModel):
    """Like :class:`IstioModel` but silently ignores unknown fields (Kubernetes objects, MeshConfig)."""

    model_config = ConfigDict(extra="ignore")


class ObjectMeta(LooseModel):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: str | None = None

    @field_validator("namespace", mode="before")
    @classmethod
    def _empty_namespace(cls, value: Any) -> Any:
        return "default" if value == "" else value

    @field_validator("creation_timestamp", mode="before")
    @classmethod
    def _timestamp_to_str(cls, value: Any) -> Any:
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return value


class Resource(IstioModel):
    """A top-level document: apiVersion, kind, metadata, spec.  ``status`` is accepted and dropped
    unless the subclass declares it."""

    api_version: str
    kind: str
    metadata: ObjectMeta

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" in data and "status" not in cls.model_fields:
            data = {k: v for k, v in data.items() if k != "status"}
        return data


# --------------------------------------------------------------------------------------------
# Shared messages


class Percent(IstioModel):
    value: float = 0.0

    @field_validator("value")
    @classmethod
    def _range(cls, value: float) -> float:
        if not 0.0 <= value <= 100.0:
            raise PydanticCustomError("percent", "percentage {value} is not in the range 0..100", {"value": value})
        return value


class StringMatch(IstioModel):
    """``exact`` | ``prefix`` | ``regex``.  All unset (``{}``) means a presence match for headers
    and query parameters.  ``regex: "*"`` is accepted (Istio treats it as a presence match) and is
    not compiled; every other regex must compile under RE2."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        set_fields = [n for n in ("exact", "prefix", "regex") if getattr(self, n) is not None]
        if len(set_fields) > 1:
            raise config_error(
                f"only one of exact, prefix or regex may be set (found {' and '.join(set_fields)})", set_fields[1]
            )
        if self.regex is not None and self.regex != "*":
            if self.regex == "":
                raise config_error("regex string match should not be empty", "regex")
            try:
                compile_re2(self.regex)
            except ValueError as exc:
                raise config_error(f"invalid RE2 regex {self.regex!r}: {exc}", "regex") from None
        return self

    @property
    def is_presence(self) -> bool:
        """True for ``{}`` and ``regex: "*"`` (a presence match)."""
        return (self.exact is None and self.prefix is None and self.regex is None) or self.regex == "*"


def _null_match_to_presence(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_subset_name(value: str) -> str:
    if value == "":
        raise PydanticCustomError("subset", "subset name cannot be empty", {})
    if not _DNS1123_LABEL.match(value):
        raise config_error(
            f"subset name {value!r} is invalid: must be a DNS-1123 label (lower case letters, digits, '-')"
        )
    return value


SubsetName = Annotated[str, AfterValidator(_check_subset_name)]

PROTOCOLS = frozenset({
    "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2", "HTTPS", "TCP", "TLS", "UDP", "MONGO", "REDIS", "MYSQL",
    "THRIFT",
})
"""Port protocols Istio recognises (pkg/config/protocol, case-insensitive)."""


def _check_protocol(value: str) -> str:
    if value.upper() not in PROTOCOLS:
        raise config_error(f"unrecognized protocol {value!r}")
    return value


Protocol = Annotated[str, AfterValidator(_check_protocol)]


class PortSelector(IstioModel):
    number: PortNumber


class Destination(IstioModel):
    host: str
    subset: SubsetName | None = None
    port: PortSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value == "" or value == "*":
            raise config_error(f"invalid destination host {value!r}")
        return value


class WorkloadSelector(IstioModel):
    """``type.v1beta1.WorkloadSelector`` (DestinationRule, Sidecar): ``matchLabels``."""

    match_labels: dict[str, str] = {}


class ServiceEntryWorkloadSelector(IstioModel):
    """``networking.v1alpha3.WorkloadSelector`` (ServiceEntry): ``labels``."""

    labels: dict[str, str] = {}


# --------------------------------------------------------------------------------------------
# VirtualService


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    port: PortNumber | None = None
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    query_params: dict[str, StringMatch] = {}
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = {}
    source_namespace: str | None = None
    stat_prefix: str | None = None

    @field_validator("headers", "without_headers", "query_params", mode="before")
    @classmethod
    def _null_is_presence(cls, value: Any) -> Any:
        return _null_match_to_presence(value)

    @model_validator(mode="after")
    def _checks(self) -> HTTPMatchRequest:
        for field in ("uri", "scheme", "method", "authority"):
            sm: StringMatch | None = getattr(self, field)
            if sm is not None and sm.regex == "*":
                raise config_error("'*' is not a valid RE2 regex", field, "regex")
        return self


class HeaderOperations(IstioModel):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: Weight = 0
    headers: Headers | None = None


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> HTTPRedirect:
        if self.port is not None and self.derive_port is not None:
            raise config_error("only one of port or derivePort may be set", "derivePort")
        if self.uri is None and self.authority is None and self.scheme is None and self.port is None \
                and self.derive_port is None:
            raise config_error("redirect must specify uri, authority, scheme, port or derivePort")
        if self.redirect_code is not None and self.redirect_code not in (301, 302, 303, 307, 308):
            raise config_error(
                f"redirectCode {self.redirect_code} is not supported; use 301, 302, 303, 307 or 308",
                "redirectCode",
            )
        if self.scheme is not None and self.scheme not in ("http", "https"):
            raise config_error(f'invalid redirect scheme {self.scheme!r}, must be "http" or "https"', "scheme")
        return self


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None  # base64, as in protobuf JSON

    @model_validator(mode="after")
    def _checks(self) -> HTTPBody:
        if self.string is not None and self.bytes is not None:
            raise config_error("only one of string or bytes may be set", "bytes")
        if self.bytes is not None:
            try:
                base64.b64decode(self.bytes, validate=True)
            except (binascii.Error, ValueError):
                raise config_error("bytes must be base64-encoded", "bytes") from None
        if len(self.content) > 1024 * 1024:
            raise config_error("direct response body must be less than 1MB", "bytes" if self.bytes else "string")
        return self

    @property
    def content(self) -> bytes:
        """The body as bytes (``string`` UTF-8 encoded, or ``bytes`` base64-decoded)."""
        if self.bytes is not None:
            return base64.b64decode(self.bytes)
        return (self.string or "").encode("utf-8")


class HTTPDirectResponse(IstioModel):
    status: int
    body: HTTPBody | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, value: int) -> int:
        if not 200 <= value <= 599:
            raise PydanticCustomError("status", "HTTP status {value} is not in the range 200..599", {"value": value})
        return value


class RegexRewrite(IstioModel):
    match: str
    rewrite: str

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        try:
            compile_re2(value)
        except ValueError as exc:
            raise config_error(f"invalid RE2 regex {value!r}: {exc}") from None
        return value


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _checks(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise config_error("rewrite may only contain one of uri or uriRegexRewrite", "uriRegexRewrite")
        if self.uri is None and self.uri_regex_rewrite is None and self.authority is None:
            raise config_error("rewrite must specify at least one of uri, uriRegexRewrite or authority")
        return self


RETRY_ON_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
})
"""Envoy ``x-envoy-retry-on`` / ``x-envoy-retry-grpc-on`` conditions istiod accepts in ``retryOn``
(numeric HTTP status codes are accepted too)."""


class HTTPRetry(IstioModel):
    attempts: int | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None

    @field_validator("attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value < 0:
            raise PydanticCustomError("attempts", "attempts cannot be negative", {})
        return value

    @field_validator("retry_on")
    @classmethod
    def _retry_on(cls, value: str) -> str:
        for policy in value.split(","):
            if policy in RETRY_ON_POLICIES or (policy.isdigit() and 100 <= int(policy) <= 599):
                continue
            raise config_error(f"{policy!r} is not a valid retryOn policy")
        return value

    @model_validator(mode="after")
    def _disabled(self) -> HTTPRetry:
        if self.attempts == 0 and (self.per_try_timeout is not None or self.retry_on is not None
                                   or self.retry_remote_localities is not None):
            raise config_error("http retry policy configured when attempts are set to 0 (disabled)")
        return self


class FaultDelay(IstioModel):
    fixed_delay: Duration | None = None
    exponential_delay: Duration | None = None
    percentage: Percent | None = None
    percent: int | None = None  # deprecated integer percentage

    @model_validator(mode="after")
    def _checks(self) -> FaultDelay:
        if self.fixed_delay is None and self.exponential_delay is None:
            raise config_error("delay must specify fixedDelay")
        if self.exponential_delay is not None:
            raise config_error("exponentialDelay is not supported", "exponentialDelay")
        if self.percent is not None and not 0 <= self.percent <= 100:
            raise config_error(f"percentage {self.percent} is not in the range 0..100", "percent")
        return self


class FaultAbort(IstioModel):
    http_status: int | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="after")
    def _checks(self) -> FaultAbort:
        kinds = [n for n, v in (("httpStatus", self.http_status), ("grpcStatus", self.grpc_status),
                                ("http2Error", self.http2_error)) if v is not None]
        if not kinds:
            raise config_error("abort must specify httpStatus or grpcStatus")
        if len(kinds) > 1:
            raise config_error(f"only one of httpStatus or grpcStatus may be set (found {' and '.join(kinds)})",
                               kinds[1])
        if self.http2_error is not None:
            raise config_error("HTTP/2 abort fault injection is not supported", "http2Error")
        if self.http_status is not None and not 200 <= self.http_status <= 599:
            raise config_error(f"HTTP status {self.http_status} is not in the range 200..599", "httpStatus")
        return self


class HTTPFaultInjection(IstioModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _checks(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise config_error("HTTP fault injection must have an abort and/or a delay")
        return self


class CorsPolicy(IstioModel):
    allow_origin: list[str] = []  # deprecated
    allow_origins: list[StringMatch] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class HTTPMirrorPolicy(IstioModel):
    destination: Destination
    percentage: Percent | None = None


class Delegate(IstioModel):
    name: str
    namespace: str | None = None


_ROUTE_ACTIONS = (("route", "route"), ("redirect", "redirect"), ("direct_response", "directResponse"),
                  ("delegate", "delegate"))


class HTTPRoute(IstioModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percent: int | None = None  # deprecated, use mirror_percentage
    mirror_percentage: Percent | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    @model_validator(mode="after")
    def _checks(self) -> HTTPRoute:
        present = [alias for attr, alias in _ROUTE_ACTIONS if getattr(self, attr)]
        if not present:
            raise config_error("HTTP route must have one of route, redirect, directResponse or delegate")
        if len(present) > 1:
            raise config_error(f"HTTP route cannot contain both {present[0]} and {present[1]}", present[1])
        if self.rewrite is not None and (self.redirect is not None or self.direct_response is not None):
            other = "redirect" if self.redirect is not None else "directResponse"
            raise config_error(f"HTTP route cannot contain both rewrite and {other}", "rewrite")
        if self.fault is not None and (self.redirect is not None or self.direct_response is not None):
            other = "redirect" if self.redirect is not None else "directResponse"
            raise config_error(f"HTTP route cannot contain both fault and {other}", "fault")
        if self.mirror is not None and self.mirrors:
            raise config_error("HTTP route cannot contain both mirror and mirrors", "mirrors")
        if self.mirror_percent is not None and not 0 <= self.mirror_percent <= 100:
            raise config_error(f"mirrorPercent {self.mirror_percent} is not in the range 0..100", "mirrorPercent")
        if len(self.route) > 1 and sum(d.weight for d in self.route) == 0:
            raise config_error("total destination weight = 0", "route")
        return self


class VirtualServiceSpec(IstioModel):
    hosts: list[str] = []
    gateways: list[str] = []
    http: list[HTTPRoute] = []
    tls: list[dict[str, Any]] = []
    tcp: list[dict[str, Any]] = []
    export_to: list[str] = []

    @model_validator(mode="after")
    def _checks(self) -> VirtualServiceSpec:
        if not self.http and not self.tcp and not self.tls:
            raise config_error("http, tcp or tls must be provided in virtual service")
        bound_to_mesh = not self.gateways or "mesh" in self.gateways
        for i, host in enumerate(self.hosts):
            if host == "":
                raise config_error("host must not be empty", "hosts", i)
            if host == "*" and bound_to_mesh:
                raise config_error(
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway", "hosts", i
                )
        if not self.hosts:  # a delegate VirtualService
            if self.gateways:
                raise config_error("delegate virtual service must have no gateways specified", "gateways")
            if self.tls:
                raise config_error("delegate virtual service must have no tls route specified", "tls")
            if self.tcp:
                raise config_error("delegate virtual service must have no tcp route specified", "tcp")
            for i, route in enumerate(self.http):
                if route.delegate is not None:
                    raise config_error("delegate HTTP route cannot contain delegate", "http", i, "delegate")
        return self


class VirtualService(Resource):
    spec: VirtualServiceSpec


# --------------------------------------------------------------------------------------------
# DestinationRule


class HTTPCookieAttribute(IstioModel):
    name: str
    value: str | None = None


class HTTPCookie(IstioModel):
    name: str
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[HTTPCookieAttribute] = []


class RingHash(IstioModel):
    minimum_ring_size: int | None = None


class Maglev(IstioModel):
    table_size: int | None = None


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    minimum_ring_size: int | None = None  # deprecated, use ring_hash

    @model_validator(mode="after")
    def _checks(self) -> ConsistentHashLB:
        keys = [alias for alias, v in (("httpHeaderName", self.http_header_name), ("httpCookie", self.http_cookie),
                                       ("useSourceIp", self.use_source_ip),
                                       ("httpQueryParameterName", self.http_query_parameter_name))
                if v is not None]
        if len(keys) > 1:
            raise config_error(f"only one consistent hash key may be set (found {' and '.join(keys)})", keys[1])
        if self.ring_hash is not None and self.maglev is not None:
            raise config_error("only one of ringHash or maglev may be set", "maglev")
        return self


class WarmupConfiguration(IstioModel):
    duration: Duration | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class LoadBalancerSettings(IstioModel):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "ROUND_ROBIN", "RANDOM", "PASSTHROUGH", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: dict[str, Any] | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None

    @model_validator(mode="after")
    def _checks(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise config_error("only one of simple or consistentHash may be set", "consistentHash")
        if self.warmup is not None and self.warmup_duration_secs is not None:
            raise config_error("only one of warmup or warmupDurationSecs may be set", "warmup")
        return self


class TcpKeepalive(IstioModel):
    probes: int | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    max_connections: int | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class HTTPSettings(IstioModel):
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


def _non_negative(name: str, value: int | None, *loc: str) -> None:
    if value is not None and value < 0:
        raise config_error(f"{name} must not be negative", *loc)


class OutlierDetection(IstioModel):
    consecutive_errors: int | None = None  # deprecated
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_5xx_errors: int | None = Field(default=None, alias="consecutive5xxErrors")
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None

    @model_validator(mode="after")
    def _checks(self) -> OutlierDetection:
        _non_negative("consecutiveErrors", self.consecutive_errors, "consecutiveErrors")
        _non_negative("consecutiveLocalOriginFailures", self.consecutive_local_origin_failures,
                      "consecutiveLocalOriginFailures")
        _non_negative("consecutiveGatewayErrors", self.consecutive_gateway_errors, "consecutiveGatewayErrors")
        _non_negative("consecutive5xxErrors", self.consecutive_5xx_errors, "consecutive5xxErrors")
        for alias, value in (("maxEjectionPercent", self.max_ejection_percent),
                             ("minHealthPercent", self.min_health_percent)):
            if value is not None and not 0 <= value <= 100:
                raise config_error(f"{alias} {value} is not in the range 0..100", alias)
        return self


class ClientTLSSettings(IstioModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = []
    tunnel: dict[str, Any] | None = None
    proxy_protocol: dict[str, Any] | None = None
    retry_budget: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _checks(self) -> TrafficPolicy:
        seen: set[int] = set()
        for i, pls in enumerate(self.port_level_settings):
            if pls.port.number in seen:
                raise config_error(f"port level setting for port {pls.port.number} already defined",
                                   "portLevelSettings", i, "port", "number")
            seen.add(pls.port.number)
        return self


class Subset(IstioModel):
    name: SubsetName
    labels: dict[str, str] = {}
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
    workload_selector: WorkloadSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value == "":
            raise PydanticCustomError("host", "host must not be empty", {})
        return value

    @model_validator(mode="after")
    def _checks(self) -> DestinationRuleSpec:
        seen: set[str] = set()
        for i, subset in enumerate(self.subsets):
            if subset.name in seen:
                raise config_error(f"duplicate subset names: {subset.name}", "subsets", i, "name")
            seen.add(subset.name)
        return self


class DestinationRule(Resource):
    spec: DestinationRuleSpec


# --------------------------------------------------------------------------------------------
# Gateway


class Port(IstioModel):
    number: PortNumber
    protocol: Protocol
    name: str | None = None
    target_port: PortNumber | None = None


class ServerTLSSettings(IstioModel):
    https_redirect: bool | None = None
    mode: Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
                  "OPTIONAL_MUTUAL"] | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: list[str] = []
    tls_certificates: list[dict[str, Any]] = []
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    min_protocol_version: Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] | None = None
    max_protocol_version: Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] | None = None
    cipher_suites: list[str] = []


class Server(IstioModel):
    port: Port
    bind: str | None = None
    hosts: list[str] = []
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> Server:
        if not self.hosts:
            raise config_error("server config must contain at least one host", "hosts")
        return self


class GatewaySpec(IstioModel):
    selector: dict[str, str] = {}
    servers: list[Server] = []

    @model_validator(mode="after")
    def _checks(self) -> GatewaySpec:
        if not self.servers:
            raise config_error("gateway must have at least one server", "servers")
        names: set[str] = set()
        for i, server in enumerate(self.servers):
            if server.name:
                if server.name in names:
                    raise config_error(f"server name {server.name!r} is not unique", "servers", i, "name")
                names.add(server.name)
        return self


class Gateway(Resource):
    spec: GatewaySpec


# --------------------------------------------------------------------------------------------
# ServiceEntry / WorkloadEntry


class WorkloadEntrySpec(IstioModel):
    address: str | None = None
    ports: dict[str, PortNumber] = {}
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: Weight | None = None
    service_account: str | None = None


class WorkloadEntry(Resource):
    spec: WorkloadEntrySpec

    @model_validator(mode="after")
    def _checks(self) -> WorkloadEntry:
        if not self.spec.address and not self.spec.network:
            raise config_error("address is required", "spec", "address")
        return self


class ServicePort(IstioModel):
    number: PortNumber
    protocol: Protocol | None = None
    name: str | None = None
    target_port: PortNumber | None = None


class ServiceEntrySpec(IstioModel):
    hosts: list[str] = []
    addresses: list[str] = []
    ports: list[ServicePort] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] = "NONE"
    endpoints: list[WorkloadEntrySpec] = []
    workload_selector: ServiceEntryWorkloadSelector | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []

    @model_validator(mode="after")
    def _checks(self) -> ServiceEntrySpec:
        if not self.hosts:
            raise config_error("service entry must have at least one host", "hosts")
        for i, host in enumerate(self.hosts):
            if host in ("", "*"):
                raise config_error(f"invalid host {host!r}", "hosts", i)
        names: set[str] = set()
        numbers: set[int] = set()
        for i, port in enumerate(self.ports):
            if port.name is not None:
                if port.name in names:
                    raise config_error(f"service entry port name {port.name!r} already defined", "ports", i, "name")
                names.add(port.name)
            if port.number in numbers:
                raise config_error(f"service entry port {port.number} already defined", "ports", i, "number")
            numbers.add(port.number)
        if self.workload_selector is not None and self.endpoints:
            raise config_error("only one of workloadSelector or endpoints is allowed in a service entry",
                               "workloadSelector")
        if self.resolution == "NONE" and self.endpoints:
            raise config_error("no endpoints should be provided for resolution type NONE", "endpoints")
        if self.resolution == "DNS_ROUND_ROBIN" and len(self.endpoints) > 1:
            raise config_error("there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN", "endpoints")
        if any("/" in a for a in self.addresses) and self.resolution not in ("NONE", "STATIC"):
            raise config_error("CIDR addresses are allowed only for NONE/STATIC resolution types", "addresses")
        for i, ep in enumerate(self.endpoints):
            if not ep.address and not ep.network:
                raise config_error("address is required", "endpoints", i, "address")
            for port_name in ep.ports:
                if port_name not in names:
                    raise config_error(f"endpoint port {port_name!r} is not defined by the service entry",
                                       "endpoints", i, "ports", port_name)
        return self


class ServiceEntry(Resource):
    spec: ServiceEntrySpec


# --------------------------------------------------------------------------------------------
# Kubernetes objects (unknown fields ignored: real manifests carry many)


class K8sResource(Resource):
    model_config = ConfigDict(extra="ignore")


class ServicePortK8s(LooseModel):
    name: str | None = None
    port: PortNumber
    target_port: IntOrString | None = None
    app_protocol: str | None = None
    protocol: str = "TCP"


class ServiceSpec(LooseModel):
    ports: list[ServicePortK8s] = []
    selector: dict[str, str] = {}
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    type: str = "ClusterIP"
    external_name: str | None = None


class Service(K8sResource):
    spec: ServiceSpec = ServiceSpec()


class ContainerPort(LooseModel):
    name: str | None = None
    container_port: PortNumber
    protocol: str = "TCP"


class Container(LooseModel):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = []


class PodSpec(LooseModel):
    containers: list[Container] = []
    service_account_name: str | None = None


class PodStatus(LooseModel):
    pod_ip: str | None = Field(default=None, alias="podIP")


class Pod(K8sResource):
    spec: PodSpec = PodSpec()
    status: PodStatus = PodStatus()


class ConfigMap(K8sResource):
    data: dict[str, str] = {}


# --------------------------------------------------------------------------------------------
# MeshConfig (mesh/v1alpha1/config.proto) -- only the fields meshproxy reads are typed.


class OutboundTrafficPolicy(LooseModel):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


class PathNormalization(LooseModel):
    normalization: Literal["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = "DEFAULT"


class MeshConfig(LooseModel):
    outbound_traffic_policy: OutboundTrafficPolicy = OutboundTrafficPolicy()
    default_http_retry_policy: HTTPRetry | None = None
    access_log_file: str = ""
    access_log_encoding: Literal["TEXT", "JSON"] = "TEXT"
    access_log_format: str = ""
    connect_timeout: Duration = 10.0
    trust_domain: str = "cluster.local"
    trust_domain_aliases: list[str] = []
    root_namespace: str = "istio-system"
    default_config: dict[str, Any] = {}
    path_normalization: PathNormalization | None = None
    enable_tracing: bool = True
    enable_auto_mtls: bool = True
    protocol_detection_timeout: Duration | None = None
    dns_refresh_rate: Duration = 60.0
    tcp_keepalive: dict[str, Any] | None = None
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] | None = None
    locality_lb_setting: dict[str, Any] | None = None
    default_service_export_to: list[str] = []
    default_virtual_service_export_to: list[str] = []
    default_destination_rule_export_to: list[str] = []
    extension_providers: list[dict[str, Any]] = []
    default_providers: dict[str, Any] = {}
