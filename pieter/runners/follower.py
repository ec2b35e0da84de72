"""The live copy of a job unit's output from the journal into its log: the server's while the unit runs, and
the collector's when it stops (runners/collector.py). Both may run at once; the log's cursor keeps out doubles.
"""

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from pieter.joblog import JobLog
from pieter.journal import JobJournal
from pieter.store import REDIS_DOWN

T = TypeVar("T")


class JournalFollower:
    """Copies one run's journal lines (matched by unit and invocation id) into the job's log, from the cursor
    stored with the log: where this follower, or the other one, got to."""

    def __init__(self, log: JobLog, unit: str, invocation: str):
        self.log, self.invocation = log, invocation
        self.journal = JobJournal(unit, invocation)
        self.cursor: str | None = None  # None: read it from the log before the next copy
        # The reader blocks: it runs off the loop, always in this one thread, so that `close()` waits for a read
        # that a cancelled step left running (closing a reader another thread is inside crashes the process).
        self.thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"journal-{unit}")

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, call, *args)

    async def step(self, wait: float) -> int:
        """Copy what is there (waiting up to `wait` s for something); the number of lines read. A Redis outage
        is raised, and the next step starts again from the stored cursor."""
        try:
            if self.cursor is None:
                self.cursor = await self.log.cursor()
                await self._blocking(self.journal.seek, self.cursor)
            lines, cursor = await self._blocking(self.journal.read, 1000, wait)
            if lines:
                written = await self.log.write_after(self.cursor, cursor, lines)
                self.cursor = cursor if written else None  # not written: the other follower got there first
            return len(lines)
        except REDIS_DOWN:
            self.cursor = None
            raise

    async def drain(self, quiet: float) -> None:
        """Copy until the journal has had nothing new for `quiet` seconds (journald may still be reading
        the last of a stopped unit's output from its stream)."""
        waited = 0.0
        while waited < quiet:
            if await self.step(0.1):
                waited = 0.0
            else:
                waited += 0.1

    def close(self) -> None:
        self.thread.submit(self.journal.close)
        self.thread.shutdown(wait=False)
