"""Local replies: the answers the proxy writes itself, byte-for-byte as Envoy does.

Envoy's ``sendLocalReply`` writes ``content-length`` then, when there is a
body, ``content-type: text/plain``, then ``date`` and ``server``.  Each reply
also carries the response flag and response-code details Envoy would log
(``%RESPONSE_FLAGS%``, ``%RESPONSE_CODE_DETAILS%``), kept for telemetry.
"""

from __future__ import annotations

from http import HTTPStatus

from ..protocols.events import Headers


#: Envoy's reason phrases (source/common/http/codes.cc); codes it does not know say "Unknown".
_ENVOY_UNKNOWN = {103, 418}
STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus if s.value not in _ENVOY_UNKNOWN
}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = STATUS_LINES[status] = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


class LocalReply:
    """What to answer, and why (flag and details for the access log and metrics)."""

    __slots__ = ("status", "body", "details", "flags")

    def __init__(self, status: int, body: bytes, details: str, flags: str) -> None:
        self.status = status
        self.body = body
        self.details = details
        self.flags = flags


NO_ROUTE = LocalReply(404, b"", "route_not_found", "NR")
NO_CLUSTER = LocalReply(503, b"", "cluster_not_found", "NC")
NO_HEALTHY_UPSTREAM = LocalReply(503, b"no healthy upstream", "no_healthy_upstream", "UH")
BLOCK_ALL = LocalReply(502, b"", "direct_response", "-")

CONNECT_ERROR_PREFIX = b"upstream connect error or disconnect/reset before headers. "


def upstream_failure(reason: str, *, retried: bool, flags: str, details: str) -> LocalReply:
    """503 for a failed upstream attempt, worded as Envoy's router words it.

    ``reason`` is Envoy's reset reason text, e.g. ``remote connection failure,
    transport failure reason: delayed connect error: Connection refused``.
    """
    lead = b"retried and the latest reset reason: " if retried else b"reset reason: "
    return LocalReply(503, CONNECT_ERROR_PREFIX + lead + reason.encode(), details, flags)


def render(
    status: int,
    body: bytes,
    server: bytes,
    date: bytes,
    *,
    extra: Headers | None = None,
    route_headers: Headers | None = None,
    close: bool = False,
    head_only: bool = False,
    late: Headers | None = None,
) -> bytes:
    """The full response bytes of a local reply, in Envoy's header order.

    Observed on Envoy 1.40 (tests/integration/test_envoy_reference.py):

    * no body: ``[extra]``, ``date``, ``server``, ``content-length: 0``
      (204/304: no content-length at all);
    * a body: ``content-length``, ``content-type: text/plain``, ``date``, ``server``;
    * a body and route response headers: ``content-type`` (the route's if it
      sets one), the route's headers, ``content-length``, ``date``, ``server``;
    * ``connection: close`` when the connection closes afterwards: last after a
      body, before ``content-length: 0`` without one.

    ``extra`` is what the reply itself adds (a redirect's ``location``);
    ``route_headers`` the route's response header edits, already applied.
    ``head_only`` answers a HEAD: the same headers, no body.  ``late`` are headers a filter
    adds on the way out (CORS on a router reply): just before ``date``.
    """
    parts = [status_line(status)]
    if extra:
        for k, v in extra:
            parts.append(k + b": " + v + b"\r\n")
    if body:
        if route_headers:
            if not any(k == b"content-type" for k, _ in route_headers):
                parts.append(b"content-type: text/plain\r\n")
            for k, v in route_headers:
                parts.append(k + b": " + v + b"\r\n")
            parts.append(b"content-length: %d\r\n" % len(body))
        else:
            parts.append(b"content-length: %d\r\ncontent-type: text/plain\r\n" % len(body))
        if late:
            for k, v in late:
                parts.append(k + b": " + v + b"\r\n")
        parts.append(b"date: " + date + b"\r\nserver: " + server + b"\r\n")
    else:
        if route_headers:
            for k, v in route_headers:
                parts.append(k + b": " + v + b"\r\n")
        if late:
            for k, v in late:
                parts.append(k + b": " + v + b"\r\n")
        parts.append(b"date: " + date + b"\r\nserver: " + server + b"\r\n")
        if close:
            parts.append(b"connection: close\r\n")
            close = False
        if status not in (204, 304):
            parts.append(b"content-length: 0\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)
