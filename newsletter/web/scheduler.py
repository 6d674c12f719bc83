"""`newsletter serve` sending scheduled issues itself (`[schedule] in_serve = true`, issue 14).

A background task of the app's lifespan: every `[schedule] check_every` seconds it runs
`scheduling.run_due` in a worker thread, one run at a time (a long send delays the next look,
it never overlaps it). With several server processes (`--workers`) each has such a task; the
store's claim makes sure only one of them sends a given schedule. At shutdown the task asks the
send in progress to stop (the messages in flight finish and are recorded) and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..errors import NewsletterError
from ..scheduling import DueRun, run_due

__all__ = ["ScheduleRunner"]


class ScheduleRunner:
    """Looks for due schedules until `stop()`; reports each run through `on_run`, and a
    failure to look (the store unreachable for a while) through `on_error`, then keeps going."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        on_run: Callable[[DueRun], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_run = on_run
        self.on_error = on_error
        self._stop = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _look(self) -> list[DueRun]:
        return run_due(self.settings, now=self.clock(), clock=self.clock, stop=self._stop)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                runs = await run_in_threadpool(self._look)
            except NewsletterError as err:
                if self.on_error is not None:
                    self.on_error(err.message)
            else:
                for done in runs:
                    if self.on_run is not None:
                        self.on_run(done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.schedule.check_every)
