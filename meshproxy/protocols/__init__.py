"""Wire protocols: bytes in, normalized head/data/end calls out (see ``events``).

* ``http1``     -- the HTTP/1.1 codec the proxy runs (llhttp via httptools for heads).
* ``h11_codec`` -- the same interface on h11, the reference the tests hold ``http1`` to.
* ``h1_rules``  -- what Envoy 1.40 accepts under Istio's settings, shared by both.
"""

from .events import Headers, ProtocolError, RequestHandler, RequestHead, ResponseHandler, ResponseHead

__all__ = ["Headers", "ProtocolError", "RequestHandler", "RequestHead", "ResponseHandler", "ResponseHead"]
