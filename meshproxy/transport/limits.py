"""Limits that keep hostile or broken clients from starving others (downstream side).

* ``request_headers_timeout`` -- Envoy's HCM ``request_headers_timeout``: a
  client that started a request must finish its head within this many seconds,
  or it gets ``408`` ``request header timeout`` and the connection closes.
  Istio sets none on sidecars (0 = off, the default), so a client trickling its
  headers is served.
* ``idle_timeout`` -- Envoy's downstream ``common_http_protocol_options.idle_timeout``
  (1 h by default): a kept-alive connection with no request in flight is closed
  after this long.  0 disables.
* ``max_connections`` -- a cap on concurrent downstream connections (Envoy's
  overload manager ``global_downstream_max_connections``): a connection over
  the cap is closed as soon as it is accepted.  0 = no cap (the default).

The CLI builds one ``DownstreamLimits`` from its flags (``from_args``) and
hands it to ``ProxyState``.
"""

from __future__ import annotations

import argparse


class DownstreamLimits:
    __slots__ = ("request_headers_timeout", "idle_timeout", "max_connections")

    def __init__(self, request_headers_timeout: float = 0.0, idle_timeout: float = 3600.0, max_connections: int = 0) -> None:
        self.request_headers_timeout = request_headers_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections

    def copy(self) -> "DownstreamLimits":
        return DownstreamLimits(self.request_headers_timeout, self.idle_timeout, self.max_connections)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request-headers-timeout", dest="request_headers_timeout", type=float, default=0.0,
                   metavar="SECONDS", help="408 a client that takes longer to send a request head (0: off, Istio's sidecar default)")
    p.add_argument("--downstream-idle-timeout", dest="idle_timeout", type=float, default=3600.0,
                   metavar="SECONDS", help="close kept-alive client connections idle this long (Envoy default 3600; 0: never)")
    p.add_argument("--max-downstream-connections", dest="max_connections", type=int, default=0,
                   metavar="N", help="close client connections accepted over this many (0: no cap)")


def from_args(args: argparse.Namespace) -> DownstreamLimits:
    return DownstreamLimits(args.request_headers_timeout, args.idle_timeout, args.max_connections)
