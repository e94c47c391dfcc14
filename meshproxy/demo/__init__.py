"""The Bookinfo demo: stand-in apps (``apps``) and the orchestrator (``runner``).

``meshproxy demo`` calls ``run_demo(default_config_dir(), reviews_file, ...)``;
tests use ``Demo`` as a context manager.  Imports are lazy so that
``python -m meshproxy.demo.apps`` starts without loading the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Demo", "DemoError", "default_config_dir", "run_demo"]

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Demo, DemoError, default_config_dir, run_demo


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
