"""The routing decision for one request: host → virtual host → route → destination.

Pure functions over the compiled tables; the random draw for weighted
destinations is an argument, so weighted routing is exact in tests (Envoy's
route selection takes its random value the same way).  The transport calls
``decide`` once per request and acts on the returned ``Decision``.
"""

from __future__ import annotations

from typing import Callable

from . import local_reply
from .local_reply import LocalReply
from .request import RequestContext
from .snapshot import DIRECT_RESPONSE, FORWARD, REDIRECT, Redirect, Route, RouteTable, VirtualHost, WeightedDestination


class Decision:
    """What to do with a request.

    Exactly one of: ``reply`` (answer locally), ``route.action`` REDIRECT /
    DIRECT_RESPONSE (answer from the route), or FORWARD with ``destination``.
    """

    __slots__ = ("route", "destination", "reply", "vhost")

    def __init__(
        self,
        route: Route | None,
        destination: WeightedDestination | None,
        reply: LocalReply | None,
        vhost: VirtualHost | None = None,
    ) -> None:
        self.route = route
        self.destination = destination
        self.reply = reply
        self.vhost = vhost


def decide(table: RouteTable | None, req: RequestContext, randrange: Callable[[int], int]) -> Decision:
    """Route ``req`` through ``table``.

    * no virtual host (gateway) or no matching route → 404, flag NR;
    * the sidecar's ``block_all`` catch-all → 502 (a direct response);
    * a destination whose cluster does not exist (undefined subset or port,
      unknown host) → 503, flag NC.
    """
    vhost = table.find(req.host) if table is not None else None
    if vhost is None:
        return Decision(None, None, local_reply.NO_ROUTE)
    route = vhost.select(req)
    if route is None:
        return Decision(None, None, local_reply.NO_ROUTE, vhost)
    if route.action != FORWARD:
        if route.action == DIRECT_RESPONSE and vhost.kind == VirtualHost.BLOCK_ALL:
            return Decision(route, None, local_reply.BLOCK_ALL, vhost)
        return Decision(route, None, None, vhost)
    total = route.total_weight
    dest = route.pick(randrange(total) if len(route.destinations) > 1 and total > 0 else 0)
    if dest.cluster is None:
        return Decision(route, dest, local_reply.NO_CLUSTER, vhost)
    return Decision(route, dest, None, vhost)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def redirect_location(redirect: Redirect, route: Route, req: RequestContext, listener_port: int) -> str:
    """The ``location`` of a VirtualService redirect, as Envoy's ``RedirectAction`` builds it.

    The scheme defaults to the request's; the host to the request's host with
    its port; ``port``/``derivePort`` replace the port; the default port of the
    resulting scheme is omitted; the path is replaced (``uri``) or its matched
    prefix rewritten; the query string is kept.
    """
    scheme = redirect.scheme or req.scheme
    if redirect.authority:
        host, _, port_text = redirect.authority.partition(":")
        port: int | None = int(port_text) if port_text.isdigit() else None
        if port is None and not redirect.port and not redirect.derive_port:
            port = None
    else:
        host = req.authority
        port = None
        colon = host.rfind(":")
        if colon != -1 and host[colon + 1 :].isdigit() and not host.endswith("]"):
            port = int(host[colon + 1 :])
            host = host[:colon]
        if redirect.scheme and port == _DEFAULT_PORTS.get(req.scheme):
            port = None
    if redirect.port:
        port = redirect.port
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        port = listener_port
    elif redirect.derive_port == "FROM_PROTOCOL_DEFAULT":
        port = None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    if redirect.path is not None:
        path = redirect.path
    elif redirect.prefix_rewrite is not None and route.match is not None and route.match.path is not None:
        path = redirect.prefix_rewrite + req.path[len(route.match.path.value) :]
    else:
        path = req.path
    if req.query and "?" not in path:
        path = f"{path}?{req.query}"
    authority = host if port is None else f"{host}:{port}"
    return f"{scheme}://{authority}{path}"
