"""Sans-IO decisions of the VirtualService resilience policies: fault, CORS, retries, mirror compile."""

from __future__ import annotations

import random

from meshproxy.config.compile import CompileOptions, compile_snapshot
from meshproxy.config.loader import load_text
from meshproxy.core import flags
from meshproxy.core.cors import CorsPolicy, apply_to_response, evaluate
from meshproxy.core.fault import FaultPolicy, fires, grpc_status_code, percent_to_fraction
from meshproxy.core.match import EXACT, PREFIX, REGEX, StringMatcher
from meshproxy.core.retry import retriable_response, retries_connect_failure, retries_per_try_timeout, retries_reset
from meshproxy.core.snapshot import ProxyInfo, RetryPolicy


# ----------------------------------------------------------------------------- fault

def test_percent_conversion_is_istios() -> None:
    assert percent_to_fraction(50.0) == (500000, 1_000_000)
    assert percent_to_fraction(0.1) == (1000, 1_000_000)
    assert percent_to_fraction(None, 30) == (30, 100)
    assert percent_to_fraction(None, None) == (0, 100)


def test_fires_is_random_mod_denominator_below_numerator() -> None:
    assert fires(1, 100, 0) and not fires(1, 100, 1) and fires(1, 100, 200)
    assert not fires(0, 100, 0)
    assert fires(1_000_000, 1_000_000, 2**64 - 1)


def test_abort_unset_percentage_never_fires() -> None:
    p = FaultPolicy(abort_status=503)
    assert all(p.abort_for(r) is None for r in range(1000))


def test_abort_reply_and_grpc_status() -> None:
    p = FaultPolicy(abort_status=418, abort_fraction=(100, 100))
    reply = p.abort_for(12345)
    assert reply is not None and (reply.status, reply.body, reply.flags, reply.details) == (418, b"fault filter abort", "FI", "fault_filter_abort")
    g = FaultPolicy(abort_grpc_status=grpc_status_code("UNAVAILABLE"), abort_fraction=(100, 100))
    assert g.abort_grpc_status == 14 and g.abort_for(7).status == 200  # type: ignore[union-attr]


def test_abort_fraction_is_statistically_right() -> None:
    rng = random.Random(7)
    p = FaultPolicy(abort_status=503, abort_fraction=percent_to_fraction(25.0))
    n = 20000
    hits = sum(p.abort_for(rng.getrandbits(64)) is not None for _ in range(n))
    assert abs(hits - n * 0.25) < 5 * (n * 0.25 * 0.75) ** 0.5


def test_delay_truncated_to_milliseconds() -> None:
    assert FaultPolicy(delay=0.0005, delay_fraction=(100, 100)).delay_for(0) == 0.0
    assert FaultPolicy(delay=0.2509, delay_fraction=(100, 100)).delay_for(0) == 0.25
    assert FaultPolicy(delay=1.0, delay_fraction=(0, 100)).delay_for(0) == 0.0


# ----------------------------------------------------------------------------- CORS

def _cors(**kw: object) -> CorsPolicy:
    origins = kw.pop("origins", [StringMatcher(EXACT, "https://a.example"), StringMatcher(PREFIX, "https://p.")])
    return CorsPolicy(origins, **kw)  # type: ignore[arg-type]


def test_preflight_answer_headers_in_envoys_order() -> None:
    p = _cors(allow_methods="GET,POST", allow_headers="x-a", expose_headers="x-e", max_age="600", allow_credentials=True)
    d = evaluate(p, "OPTIONS", [(b"origin", b"https://p.q"), (b"access-control-request-method", b"PUT")])
    assert d.preflight == [
        (b"access-control-allow-origin", b"https://p.q"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-allow-methods", b"GET,POST"),
        (b"access-control-allow-headers", b"x-a"),
        (b"access-control-max-age", b"600"),
        (b"access-control-expose-headers", b"x-e"),
    ]


def test_not_a_preflight() -> None:
    p = _cors()
    assert evaluate(p, "OPTIONS", [(b"origin", b"https://a.example")]).preflight is None
    assert evaluate(p, "GET", [(b"origin", b"https://a.example"), (b"access-control-request-method", b"GET")]).preflight is None
    assert evaluate(p, "OPTIONS", [(b"origin", b""), (b"access-control-request-method", b"GET")]).origin is None


def test_unmatched_preflight_forward_or_ignore() -> None:
    req = [(b"origin", b"https://evil"), (b"access-control-request-method", b"GET")]
    fwd = evaluate(_cors(allow_methods="GET"), "OPTIONS", req)
    assert fwd.preflight is None and fwd.origin is None
    ign = evaluate(_cors(allow_methods="GET", forward_unmatched=False), "OPTIONS", req)
    assert ign.preflight == [(b"access-control-allow-methods", b"GET")] and ign.origin is None


def test_star_echoes_request_method_and_headers_and_matches_any_origin() -> None:
    p = _cors(origins=[StringMatcher(EXACT, "*")], allow_methods="*", allow_headers="*")
    d = evaluate(p, "OPTIONS", [(b"origin", b"https://zz"), (b"access-control-request-method", b"PUT"),
                                (b"access-control-request-headers", b"x-q, x-r")])
    assert d.preflight == [(b"access-control-allow-origin", b"https://zz"), (b"access-control-allow-methods", b"PUT"),
                           (b"access-control-allow-headers", b"x-q, x-r")]
    assert _cors(origins=[StringMatcher(REGEX, ".*")]).origin_allowed("anything")


def test_simple_response_headers_set_in_place() -> None:
    p = _cors(expose_headers="x-e", allow_credentials=True)
    out = apply_to_response(p, b"https://a.example", [(b"x-a", b"1"), (b"access-control-allow-origin", b"foo"), (b"x-t", b"0")])
    assert out == [(b"x-a", b"1"), (b"access-control-allow-origin", b"https://a.example"), (b"x-t", b"0"),
                   (b"access-control-allow-credentials", b"true"), (b"access-control-expose-headers", b"x-e")]


# ----------------------------------------------------------------------------- retries

def test_retry_conditions() -> None:
    r4 = RetryPolicy(num_retries=1, retry_on=frozenset({"retriable-4xx"}))
    assert retriable_response(r4, 409, None) and not retriable_response(r4, 404, None)
    rl = RetryPolicy(num_retries=1, retry_on=frozenset({"envoy-ratelimited"}))
    assert retriable_response(rl, 429, None, ratelimited=True) and not retriable_response(rl, 429, None)
    rh = RetryPolicy(num_retries=1, retry_on=frozenset({"retriable-headers"}))
    assert not retriable_response(rh, 503, None)
    grpc = RetryPolicy(num_retries=1, retry_on=frozenset({"deadline-exceeded", "internal", "resource-exhausted"}))
    assert all(retriable_response(grpc, 200, c) for c in (b"4", b"13", b"8")) and not retriable_response(grpc, 200, b"14")


def test_reset_before_request_covers_connect_failures_only() -> None:
    p = RetryPolicy(num_retries=2, retry_on=frozenset({"reset-before-request"}))
    assert retries_connect_failure(p) and not retries_reset(p) and not retries_per_try_timeout(p)


def test_per_try_timeout_retried_by_5xx_gateway_error_reset() -> None:
    for cond in ("5xx", "gateway-error", "reset"):
        assert retries_per_try_timeout(RetryPolicy(num_retries=1, retry_on=frozenset({cond})))
    assert not retries_per_try_timeout(RetryPolicy(num_retries=1, retry_on=frozenset({"connect-failure"})))
    assert not retries_per_try_timeout(RetryPolicy(num_retries=0, retry_on=frozenset({"5xx"})))


def test_flags_in_envoys_order() -> None:
    assert flags.add("-", "URX", "UF") == "UF,URX"
    assert flags.add("DI", "UT") == "UT,DI"
    assert flags.add("-", "-") == "-"


# ----------------------------------------------------------------------------- compile

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: default}
spec: {selector: {app: svc}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: default}
spec: {selector: {app: shadow}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc]
  http:
  - match: [{uri: {prefix: /p}}]
    timeout: 2s
    fault: {delay: {fixedDelay: 1s}, abort: {httpStatus: 500, percentage: {value: 12.5}}}
    mirror: {host: shadow}
    mirrorPercentage: {value: 10}
    corsPolicy: {allowOrigins: [{prefix: "https://"}], maxAge: 90s, allowCredentials: false}
    retries: {attempts: 3, perTryTimeout: 1s}
    route: [{destination: {host: svc}}]
  - match: [{uri: {prefix: /off}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 0}
    route: [{destination: {host: svc}}]
  - route: [{destination: {host: svc}}]
"""


def test_compiled_policies() -> None:
    snap = compile_snapshot(load_text(CONFIG), ProxyInfo("sidecar", "default", {}), CompileOptions())
    p, off, plain = snap.route_tables["80"].find("svc").routes  # type: ignore[union-attr]
    assert plain.policy is None and off.policy is None  # the hot path: one attribute check
    pol = p.policy
    assert pol is not None and pol.timeout == 2.0 and pol.per_try_timeout == 1.0
    assert pol.fault.delay == 1.0 and pol.fault.delay_fraction == (0, 100)  # unset percentage: never
    assert pol.fault.abort_fraction == (125000, 1_000_000)
    assert pol.cors.max_age == b"90" and not pol.cors.allow_credentials and pol.cors.forward_unmatched
    (m,) = pol.mirrors
    assert m.cluster_name == "outbound|8080||shadow.default.svc.cluster.local" and m.cluster is not None
    assert m.fraction == (100000, 1_000_000)
    assert "typed_per_filter_config" in p.describe()
