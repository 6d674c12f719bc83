"""The preview's state and its background work: build once, then rebuild on every change.

A rebuild runs in a thread; its result replaces the state whole (or, on failure, the last good
build stays and the problems are shown). Requests that arrive during a rebuild are coalesced
into one more. Every change of state wakes the pages waiting on `/events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .model import EventCallback, PreviewBuild, PreviewEvent, PreviewFailure, Rebuild, failure_from
from .watch import Watcher

__all__ = ["Hub", "State"]


@dataclass(frozen=True)
class State:
    """What the page sees; replaced whole, never changed in place."""

    version: int = 0
    build_number: int = 0
    build: PreviewBuild | None = None
    failure: PreviewFailure | None = None
    building: bool = True
    built_at: float | None = None
    seconds: float | None = None


class Hub:
    """Owns the current state, the rebuild loop, the file watcher and the page notifications."""

    def __init__(
        self,
        rebuild: Rebuild,
        watch_paths: Sequence[Path],
        *,
        display_root: Path | None,
        on_event: EventCallback | None,
        debounce_ms: int,
    ) -> None:
        self._rebuild = rebuild
        self._watcher = Watcher(watch_paths, self.request_rebuild, debounce_ms=debounce_ms)
        self._display_root = display_root.absolute() if display_root else None
        self._on_event = on_event
        self.instance = secrets.token_hex(4)
        self.state = State()
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._pending: set[Path] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Watch, build once (a failure is shown, not raised), then rebuild on every change."""
        self._loop = asyncio.get_running_loop()
        # Watch first: an edit made during the first build then causes another build.
        watcher = asyncio.create_task(self._watcher.run())
        self._tasks.append(watcher)
        watching = asyncio.create_task(self._watcher.ready.wait())
        await asyncio.wait([watcher, watching], return_when=asyncio.FIRST_COMPLETED)
        watching.cancel()
        await self._build_once(())
        self._tasks.append(asyncio.create_task(self._builder()))

    async def stop(self) -> None:
        self.close()
        self._watcher.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def close(self) -> None:
        """End the event streams so the server can shut down (they would wait forever)."""
        self.closing = True
        self._publish(self.state)

    def close_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may stop between check and call
                self._loop.call_soon_threadsafe(self.close)

    def request_rebuild(self, changed: Sequence[Path] = ()) -> None:
        """Mark the build stale; the builder coalesces requests that arrive while it works."""
        self._pending.update(changed)
        self._dirty.set()
        if not self.state.building:
            self._publish(
                dataclasses.replace(self.state, version=self.state.version + 1, building=True)
            )

    async def wait_for_change(self, version: int, timeout: float) -> None:
        """Return when the state is newer than `version`, the hub closes, or `timeout` passes."""
        changed = self._changed
        if self.state.version != version or self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def _publish(self, state: State) -> None:
        self.state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _builder(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            changed = tuple(sorted(self._pending))
            self._pending.clear()
            await self._build_once(changed)

    async def _build_once(self, changed: tuple[Path, ...]) -> None:
        started = time.perf_counter()
        try:
            build = await asyncio.to_thread(self._rebuild)
        except Exception as err:  # any failure is shown on the page; the server keeps running
            seconds = time.perf_counter() - started
            failure = failure_from(err, self._display_root)
            state = dataclasses.replace(
                self.state,
                version=self.state.version + 1,
                failure=failure,
                building=self._dirty.is_set(),
                seconds=seconds,
            )
            event = PreviewEvent("failed", state.version, seconds, changed, failure)
        else:
            seconds = time.perf_counter() - started
            state = State(
                version=self.state.version + 1,
                build_number=self.state.build_number + 1,
                build=build,
                failure=None,
                building=self._dirty.is_set(),
                built_at=time.time(),
                seconds=seconds,
            )
            event = PreviewEvent("built", state.version, seconds, changed)
        self._publish(state)
        if self._on_event is not None:
            self._on_event(event)
