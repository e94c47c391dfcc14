"""Live configuration: reload on file changes and SIGHUP, never replacing a good config with a bad one.

The new config is loaded and compiled on a worker thread (YAML parsing and
compilation never run on the event loop), then published by one reference swap
in ``ProxyServer.apply``.  A file that fails to load or validate is reported --
every problem with file, document and field -- and counted, and the old config
keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger("meshproxy.reload")


class Reloader:
    """Serializes reloads; ``version`` grows by one with each config that took effect."""

    def __init__(self, build: Callable[[int], Any], proxy: Any, state: Any, version: int = 1) -> None:
        self.build = build  # version -> Snapshot, raises ConfigError
        self.proxy = proxy
        self.state = state
        self.version = version
        self._lock = asyncio.Lock()

    async def reload(self, reason: str) -> bool:
        from .config.loader import ConfigError

        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                snapshot = await loop.run_in_executor(None, self.build, self.version + 1)
            except ConfigError as exc:
                self.state.reload_failures += 1
                log.error("config reload (%s) refused; still serving version %d:", reason, self.version)
                for issue in exc.issues:
                    log.error("  %s", issue)
                return False
            except Exception:  # a compile bug must not take the proxy down
                self.state.reload_failures += 1
                log.exception("config reload (%s) failed; still serving version %d", reason, self.version)
                return False
            self.version += 1
            await self.proxy.apply(snapshot)
            self.state.reloads += 1
            log.info("config version %d in effect (%s)", self.version, reason)
            return True


def _targets(paths: Sequence[str]) -> tuple[list[str], Callable[[str], bool]]:
    """Directories to watch, and which changed paths matter (the files given, YAML in dirs given)."""
    files = set()
    dirs = set()
    for p in paths:
        path = Path(p).resolve()
        if path.is_dir():
            dirs.add(path)
        else:
            files.add(path)
    watch = sorted({str(d) for d in dirs} | {str(f.parent) for f in files})

    def relevant(changed: str) -> bool:
        c = Path(changed).resolve()
        if c in files:
            return True
        return c.parent in dirs and c.suffix in (".yaml", ".yml")

    return watch, relevant


async def watch_files(paths: Sequence[str], reloader: Reloader, stop: asyncio.Event) -> None:
    """Reload whenever a config file changes (watchfiles: inotify on Linux, debounced)."""
    from watchfiles import awatch

    watch, relevant = _targets(paths)
    if not watch:
        return
    try:
        async for changes in awatch(*watch, stop_event=stop, debounce=100, step=20, recursive=False):
            if any(relevant(path) for _, path in changes):
                await reloader.reload("file change")
    except Exception:  # the watcher dying must not take the proxy down
        log.exception("config watcher stopped; SIGHUP still reloads")
