"""VirtualService ``corsPolicy``: Envoy's CORS filter decisions, sans-IO.

Istio (route.go ``TranslateCORSPolicy``) puts the policy on the route with
``filter_enabled`` 100 %, ``allowOrigins`` as string matchers, the lists
joined with ``,``, ``maxAge`` in whole seconds, and
``forward_not_matching_preflights`` false only for ``unmatchedPreflights:
IGNORE``.  Envoy 1.40's cors_filter.cc then, for a route (not a redirect or
direct response) with a policy and a non-empty ``Origin``:

* the origin is allowed when a matcher matches it, or matches the literal
  ``*``;
* a preflight (``OPTIONS`` with a non-empty ``Access-Control-Request-Method``)
  is answered by the proxy with 200 -- unless the origin is not allowed and
  unmatched preflights are forwarded;  the answer carries
  ``access-control-allow-origin`` (only when allowed), ``-allow-credentials``,
  ``-allow-methods`` (``*`` echoes the requested method), ``-allow-headers``
  (``*`` echoes the requested headers), ``-max-age``, and then -- the filter's
  encode pass runs on its own reply -- ``-expose-headers``;
* any other response to an allowed origin (proxied or a later local reply)
  gets ``access-control-allow-origin``, ``-allow-credentials`` and
  ``-expose-headers`` set (replacing upstream values in place).
"""

from __future__ import annotations

from typing import Sequence

from ..protocols.events import Headers
from .match import StringMatcher


class CorsPolicy:
    __slots__ = ("origins", "allow_methods", "allow_headers", "expose_headers", "max_age", "allow_credentials", "forward_unmatched")

    def __init__(
        self,
        origins: Sequence[StringMatcher],
        allow_methods: str = "",
        allow_headers: str = "",
        expose_headers: str = "",
        max_age: str = "",
        allow_credentials: bool = False,
        forward_unmatched: bool = True,
    ) -> None:
        self.origins = tuple(origins)
        self.allow_methods = allow_methods.encode("latin-1")
        self.allow_headers = allow_headers.encode("latin-1")
        self.expose_headers = expose_headers.encode("latin-1")
        self.max_age = max_age.encode("latin-1")
        self.allow_credentials = allow_credentials
        self.forward_unmatched = forward_unmatched

    def origin_allowed(self, origin: str) -> bool:
        for m in self.origins:
            if m.matches("*") or m.matches(origin):
                return True
        return False

    def response_headers(self, origin: bytes) -> Headers:
        """What an allowed origin's responses get (the filter's encode pass), in Envoy's order."""
        out: Headers = [(b"access-control-allow-origin", origin)]
        if self.allow_credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose_headers:
            out.append((b"access-control-expose-headers", self.expose_headers))
        return out

    def describe(self) -> dict[str, object]:
        return {
            "allow_origin_string_match": [m.describe() for m in self.origins],
            "allow_methods": self.allow_methods.decode("latin-1"),
            "allow_headers": self.allow_headers.decode("latin-1"),
            "expose_headers": self.expose_headers.decode("latin-1"),
            "max_age": self.max_age.decode("latin-1"),
            "allow_credentials": self.allow_credentials,
            "forward_not_matching_preflights": self.forward_unmatched,
        }


class CorsDecision:
    """``preflight``: the headers of the proxy's own 200 answer (None: go on);
    ``origin``: the latched allowed origin whose responses get CORS headers (None: none)."""

    __slots__ = ("preflight", "origin")

    def __init__(self, preflight: Headers | None, origin: bytes | None) -> None:
        self.preflight = preflight
        self.origin = origin


NO_CORS = CorsDecision(None, None)


def evaluate(policy: CorsPolicy, method: str, headers: Headers) -> CorsDecision:
    """Envoy's ``CorsFilter::decodeHeaders`` for one request."""
    origin = request_method = request_headers = None
    for k, v in headers:
        if k == b"origin":
            if origin is None:
                origin = v
        elif k == b"access-control-request-method":
            if request_method is None:
                request_method = v
        elif k == b"access-control-request-headers":
            if request_headers is None:
                request_headers = v
    if not origin:
        return NO_CORS
    allowed = policy.origin_allowed(origin.decode("latin-1"))
    latched = origin if allowed else None
    if method != "OPTIONS" or not request_method:
        return CorsDecision(None, latched)
    if not allowed and policy.forward_unmatched:
        return CorsDecision(None, None)
    out: Headers = []
    if allowed:
        out.append((b"access-control-allow-origin", origin))
    if policy.allow_credentials:
        out.append((b"access-control-allow-credentials", b"true"))
    if policy.allow_methods:
        out.append((b"access-control-allow-methods", request_method if policy.allow_methods == b"*" else policy.allow_methods))
    if policy.allow_headers:
        value = (request_headers or b"") if policy.allow_headers == b"*" else policy.allow_headers
        out.append((b"access-control-allow-headers", value))
    if policy.max_age:
        out.append((b"access-control-max-age", policy.max_age))
    if allowed and policy.expose_headers:
        out.append((b"access-control-expose-headers", policy.expose_headers))
    return CorsDecision(out, latched)


def apply_to_response(policy: CorsPolicy, origin: bytes, headers: Headers) -> Headers:
    """Envoy's ``CorsFilter::encodeHeaders``: set (in place, else append) the CORS response headers."""
    out = list(headers)
    for name, value in policy.response_headers(origin):
        for i, (k, _) in enumerate(out):
            if k == name:
                out[i] = (name, value)
                break
        else:
            out.append((name, value))
    return out
