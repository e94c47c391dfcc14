"""Configuration input: Istio/Kubernetes YAML -> validated pydantic models (see ``loader``)."""

from .loader import ConfigError, ConfigIssue, ConfigSet, DocRef, Loaded, load_paths, load_text
from .models import MeshConfig

__all__ = ["ConfigError", "ConfigIssue", "ConfigSet", "DocRef", "Loaded", "MeshConfig", "load_paths", "load_text"]
