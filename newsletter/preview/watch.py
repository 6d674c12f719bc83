"""Watching the files a preview depends on, and saying which changed.

Folders are watched recursively; files and missing folders through their nearest existing
parent. Whenever the set of existing paths changes (e.g. `templates/` was created) the watches
are set up again, so a new folder is then watched recursively too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

__all__ = ["DEFAULT_DEBOUNCE_MS", "Watcher"]

# watchfiles waits this long for more changes before reporting a batch (editors write in bursts).
DEFAULT_DEBOUNCE_MS = 50

_DEFAULT_FILTER = DefaultFilter()


@dataclass(frozen=True)
class _WatchGroup:
    """Folders watched the same way; `wanted` filters a non-recursive group to given paths."""

    folders: tuple[Path, ...]
    recursive: bool
    wanted: frozenset[Path] = frozenset()

    def accepts(self, change: Change, path: str) -> bool:
        if self.recursive:
            return _DEFAULT_FILTER(change, path)
        changed = Path(path)
        return any(changed == want or changed in want.parents for want in self.wanted)


def _watch_groups(paths: Sequence[Path]) -> tuple[_WatchGroup, ...]:
    """Folders are watched recursively; files and missing folders through their nearest parent.

    Watching a file's folder (not the file) still sees editors that save by writing a new file
    and renaming it over the old one, and a missing `templates/` is noticed when it is created.
    """
    folders = sorted({path for path in paths if path.is_dir()})
    others = [path for path in paths if not path.is_dir()]
    groups = []
    if folders:
        groups.append(_WatchGroup(tuple(folders), recursive=True))
    if others:
        parents = sorted({_nearest_existing(path.parent) for path in others})
        groups.append(_WatchGroup(tuple(parents), recursive=False, wanted=frozenset(others)))
    return tuple(groups)


def _nearest_existing(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


class Watcher:
    """Calls `on_change` with the changed paths (an empty list: something may have changed).

    `ready` is set once the OS watches are in place: from then on no change is missed.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        on_change: Callable[[Sequence[Path]], None],
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        self._paths = [path.absolute() for path in paths]
        self._on_change = on_change
        self._debounce_ms = debounce_ms
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._round_stop = asyncio.Event()
        self._force_polling = False

    def stop(self) -> None:
        self._stopping.set()
        self._round_stop.set()

    async def run(self) -> None:
        """Watch until `stop()`."""
        first = True
        while not self._stopping.is_set():
            groups = _watch_groups(self._paths)
            if not first:
                # A change made while the watchers restarted would be missed: report one anyway.
                self._on_change(())
            first = False
            if not groups:
                self.ready.set()
                await self._stopping.wait()
                return
            self._round_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                for group in groups:
                    tasks.create_task(self._watch_group(group, groups, self._round_stop))
                # Each watcher sets up its OS watches in its first step, before it first waits;
                # once they ran, no change is missed, so the server may say it is ready.
                await asyncio.sleep(0)
                self.ready.set()

    async def _watch_group(
        self, group: _WatchGroup, groups: tuple[_WatchGroup, ...], round_stop: asyncio.Event
    ) -> None:
        try:
            async for changes in awatch(
                *group.folders,
                watch_filter=group.accepts,
                recursive=group.recursive,
                step=self._debounce_ms,
                stop_event=round_stop,
                rust_timeout=1000,
                force_polling=self._force_polling or None,
            ):
                self._on_change([Path(path) for _, path in changes])
                if _watch_groups(self._paths) != groups:
                    round_stop.set()
        except OSError as err:
            if not isinstance(err, FileNotFoundError):
                # e.g. the system's limit of file watches is reached: polling still works.
                self._force_polling = True
            # (A watched folder may also have vanished between listing and watching.)
            await asyncio.sleep(0.2)
            round_stop.set()
