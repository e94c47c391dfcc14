"""The request as the routing core sees it, and how a raw request-target becomes one.

The transport builds one ``RequestContext`` per request from the codec's
``RequestHead``; the core never sees bytes on the wire.  Path handling follows
Istio's defaults: the ``#fragment`` is stripped and the path normalized per
RFC 3986 (MeshConfig ``pathNormalization: BASE``, Envoy ``normalize_path``)
before any route matching.  Adjacent slashes are kept (Istio's BASE does not
merge them).
"""

from __future__ import annotations

from ..protocols.events import Headers


class RequestContext:
    """Normalized view of one request for host lookup and route matching.

    ``authority`` is the raw Host/``:authority`` value (port included, as the
    VirtualService ``authority`` match sees it); ``host`` is it lower-cased with
    the port removed (what virtual-host lookup uses since Istio 1.16);
    ``port`` is the port written in it, or None.
    """

    __slots__ = ("method", "path", "query", "authority", "host", "port", "scheme", "headers", "_params", "source_ip")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        authority: str,
        scheme: str,
        headers: Headers,
        source_ip: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.authority = authority
        self.host, self.port = split_host_port(authority)
        self.scheme = scheme
        self.headers = headers
        self.source_ip = source_ip
        self._params: dict[str, str] | None = None

    def query_params(self) -> dict[str, str]:
        params = self._params
        if params is None:
            from .match import parse_query

            params = self._params = parse_query(self.query)
        return params

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def split_host_port(authority: str) -> tuple[str, int | None]:
    """``"Reviews:9080"`` → ``("reviews", 9080)``; IPv6 literals keep their brackets."""
    host = authority
    port: int | None = None
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            host = host[: end + 1]
    else:
        colon = host.rfind(":")
        if colon != -1 and host[colon + 1 :].isdigit():
            port = int(host[colon + 1 :])
            host = host[:colon]
    if host.endswith("."):
        host = host[:-1]
    return host.lower(), port


class BadTarget(ValueError):
    """A request-target the proxy refuses (Envoy answers 400)."""


def split_target(target: str) -> tuple[str | None, str, str]:
    """Split a request-target into (authority from absolute-form or None, path, query).

    The fragment is dropped (Istio strips ``#fragment``); the path is
    normalized.  ``*`` (OPTIONS) is returned as the path ``*``.
    """
    authority: str | None = None
    if not target.startswith("/"):
        if target == "*":
            return None, "*", ""
        lower = target[:8].lower()
        if lower.startswith("http://") or lower.startswith("https://"):
            rest = target[target.index("//") + 2 :]
            slash = rest.find("/")
            qmark = rest.find("?")
            cut = min(i for i in (slash, qmark, len(rest)) if i != -1)
            authority = rest[:cut]
            target = rest[cut:] or "/"
            if not target.startswith("/"):
                target = "/" + target
        else:
            raise BadTarget(target)
    hash_at = target.find("#")
    if hash_at != -1:
        target = target[:hash_at]
    q = target.find("?")
    if q == -1:
        path, query = target, ""
    else:
        path, query = target[:q], target[q + 1 :]
    if "." in path or "\\" in path or "%" in path:
        path = normalize_path(path)
    return authority, path, query


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _decode_unreserved(path: str) -> str:
    """Percent-decode only unreserved characters and upper-case other escapes (RFC 3986 §6.2.2)."""
    out: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == "%" and i + 3 <= n:
            hexpart = path[i + 1 : i + 3]
            try:
                code = int(hexpart, 16)
            except ValueError:
                out.append(c)
                i += 1
                continue
            if code in _UNRESERVED:
                out.append(chr(code))
            else:
                out.append("%" + hexpart.upper())
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def normalize_path(path: str) -> str:
    """RFC 3986 path normalization as Envoy's ``normalize_path`` does it.

    Backslashes become slashes, unreserved percent-escapes are decoded, and
    ``.``/``..`` segments are removed (``..`` above the root stays at the root).
    """
    if "\\" in path:
        path = path.replace("\\", "/")
    if "%" in path:
        path = _decode_unreserved(path)
    if "." not in path:
        return path
    segments = path.split("/")
    out: list[str] = []
    for seg in segments[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    result = "/" + "/".join(out)
    if segments[-1] in (".", "..") and not result.endswith("/"):
        result += "/"
    return result
