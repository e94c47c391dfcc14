"""Compiled request matchers: Istio's ``StringMatch`` and ``HTTPMatchRequest``.

Everything here is built once by the config compiler and then only read.  A
``RouteMatch`` checks the cheapest conditions first (method, path) and the
header and query conditions last, and stops at the first miss.

Semantics follow Envoy's route matching as istiod configures it
(pilot/pkg/networking/core/route/route.go):

* URI ``exact``/``prefix`` are plain string comparisons on the normalized path
  without the query; ``regex`` is an RE2 *full* match.  ``ignoreUriCase``
  lower-cases both sides of exact/prefix only.
* A header that appears several times is matched against its values joined
  with ``,`` (Envoy's ``getAllOfHeaderAsString``).
* ``withoutHeaders`` inverts the match and treats a missing header as empty
  (``treat_missing_header_as_empty``), so an absent header satisfies it.
* A header or query matcher with no value (``{}``) or ``regex: "*"`` is a
  presence match.
"""

from __future__ import annotations

from typing import Sequence

import re2

from .request import RequestContext

EXACT = 0
PREFIX = 1
REGEX = 2
PRESENT = 3


def compile_regex(pattern: str) -> "re2._Regexp":
    """Compile an RE2 pattern (Istio's regex dialect); raises ``re2.error`` on bad input."""
    return re2.compile(pattern)


class StringMatcher:
    """One compiled ``StringMatch``: exact, prefix, RE2 full-match regex, or presence."""

    __slots__ = ("kind", "value", "regex", "ignore_case")

    def __init__(self, kind: int, value: str = "", ignore_case: bool = False) -> None:
        self.kind = kind
        self.ignore_case = ignore_case
        self.value = value.lower() if ignore_case else value
        self.regex = compile_regex(value) if kind == REGEX else None

    @classmethod
    def from_spec(cls, spec: object, *, ignore_case: bool = False, presence_on_empty: bool = False) -> "StringMatcher":
        """Build from a StringMatch model (fields ``exact``/``prefix``/``regex``)."""
        exact = getattr(spec, "exact", None)
        prefix = getattr(spec, "prefix", None)
        regex = getattr(spec, "regex", None)
        if exact is not None:
            return cls(EXACT, exact, ignore_case)
        if prefix is not None:
            if prefix == "" and presence_on_empty:
                return cls(PRESENT)
            return cls(PREFIX, prefix, ignore_case)
        if regex is not None:
            if regex == "*" and presence_on_empty:
                return cls(PRESENT)
            return cls(REGEX, regex)
        if presence_on_empty:
            return cls(PRESENT)
        # An empty StringMatch on uri/method/authority matches anything.
        return cls(PREFIX, "")

    def matches(self, value: str) -> bool:
        kind = self.kind
        if self.ignore_case:
            value = value.lower()
        if kind == PREFIX:
            return value.startswith(self.value)
        if kind == EXACT:
            return value == self.value
        if kind == REGEX:
            return self.regex.fullmatch(value) is not None  # type: ignore[union-attr]
        return True

    def describe(self) -> dict[str, str]:
        if self.kind == PRESENT:
            return {"present": "true"}
        name = ("exact", "prefix", "regex")[self.kind]
        return {name: self.value}


class HeaderMatcher:
    """A ``headers``/``withoutHeaders`` entry of an HTTPMatchRequest."""

    __slots__ = ("name", "matcher", "invert")

    def __init__(self, name: str, matcher: StringMatcher, invert: bool) -> None:
        self.name = name.lower().encode("latin-1")
        self.matcher = matcher
        self.invert = invert

    def matches(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        name = self.name
        found: list[bytes] | None = None
        for k, v in headers:
            if k == name:
                if found is None:
                    found = [v]
                else:
                    found.append(v)
        if found is None:
            if not self.invert:
                return False
            # Missing header treated as empty, then inverted.
            if self.matcher.kind == PRESENT:
                return True
            return not self.matcher.matches("")
        value = (found[0] if len(found) == 1 else b",".join(found)).decode("latin-1")
        result = self.matcher.matches(value)
        return not result if self.invert else result


class QueryMatcher:
    """A ``queryParams`` entry.  ``exact: ""`` matches ``?key`` and ``?key=``."""

    __slots__ = ("name", "matcher")

    def __init__(self, name: str, matcher: StringMatcher) -> None:
        self.name = name
        self.matcher = matcher

    def matches(self, params: dict[str, str]) -> bool:
        value = params.get(self.name)
        if value is None:
            return False
        return self.matcher.matches(value)


def parse_query(query: str) -> dict[str, str]:
    """Query parameters as Envoy's route matcher sees them: first value wins, not percent-decoded."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key not in params:
            params[key] = value
    return params


class RouteMatch:
    """One compiled ``HTTPMatchRequest`` (all fields AND'ed)."""

    __slots__ = ("path", "method", "authority", "scheme", "headers", "query", "name", "_describe")

    def __init__(
        self,
        *,
        path: StringMatcher | None = None,
        method: StringMatcher | None = None,
        authority: StringMatcher | None = None,
        scheme: StringMatcher | None = None,
        headers: Sequence[HeaderMatcher] = (),
        query: Sequence[QueryMatcher] = (),
        name: str = "",
    ) -> None:
        self.path = path
        self.method = method
        self.authority = authority
        self.scheme = scheme
        self.headers = tuple(headers)
        self.query = tuple(query)
        self.name = name

    def matches(self, req: RequestContext) -> bool:
        path = self.path
        if path is not None and not path.matches(req.path):
            return False
        if self.method is not None and not self.method.matches(req.method):
            return False
        if self.authority is not None and not self.authority.matches(req.authority):
            return False
        if self.scheme is not None and not self.scheme.matches(req.scheme):
            return False
        if self.headers:
            hs = req.headers
            for h in self.headers:
                if not h.matches(hs):
                    return False
        if self.query:
            params = req.query_params()
            for q in self.query:
                if not q.matches(params):
                    return False
        return True

    @property
    def is_prefix(self) -> bool:
        return self.path is not None and self.path.kind == PREFIX

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.path is not None:
            out["uri"] = self.path.describe()
            if self.path.ignore_case:
                out["ignoreUriCase"] = True
        if self.method is not None:
            out["method"] = self.method.describe()
        if self.authority is not None:
            out["authority"] = self.authority.describe()
        if self.scheme is not None:
            out["scheme"] = self.scheme.describe()
        for h in self.headers:
            key = "withoutHeaders" if h.invert else "headers"
            out.setdefault(key, {})[h.name.decode()] = h.matcher.describe()  # type: ignore[index]
        for q in self.query:
            out.setdefault("queryParams", {})[q.name] = q.matcher.describe()  # type: ignore[index]
        return out
