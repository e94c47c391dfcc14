"""meshproxy: Istio's data plane in Python."""

__version__ = "0.1.0"
