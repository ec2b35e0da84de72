"""The runner protocol: how the dispatcher starts a job, follows it to its end, and stops it.

A runner's job may outlive the server (a systemd unit does): `run` follows a job it starts, `reattach`
follows one an earlier server process started on this host, and each returns the job's `Outcome`. The
dispatcher records outcomes; a runner never writes job state itself.
"""

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from pieter.models import Result

LogSink = Callable[[list[bytes]], Awaitable[None]]
# The job wrapper leaves this file in the workspace when the clone failed (its log says why), so the job
# reads as result `error`, not `exit-code`. Only the job itself could fake it, mislabelling only itself.
CLONE_FAILED_MARKER = ".pieter-clone-failed"


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: Result
    rc: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # cpu_seconds, memory_peak, ... if known


@dataclasses.dataclass(frozen=True)
class JobFiles:
    """Where a job lives on disk: `job_dir` holds what the server wrote for it, `workspace` is its cwd,
    `artifacts` what it keeps after it ends ($PIETER_ARTIFACTS), `handoff` the socket its clone step receives
    the source and deploy key from (pieter/handoff.py)."""

    job_dir: Path
    workspace: Path
    artifacts: Path
    handoff: Path

    def outcome(self, rc: int) -> Outcome:
        """How a job that exited with `rc` (negative: killed by that signal) ended."""
        if rc == 0:
            return Outcome(Result.SUCCESS, 0)
        if rc < 0:
            return Outcome(Result.SIGNAL, rc)
        if (self.workspace / CLONE_FAILED_MARKER).exists():
            return Outcome(Result.ERROR, rc)
        return Outcome(Result.EXIT_CODE, rc)


class Runner(Protocol):
    name: str
    make_workspace: bool  # False: the runner's unit makes workspace and artifacts dirs (systemd's StateDirectory=)

    async def run(self, job: dict[str, Any], files: JobFiles, log: LogSink) -> Outcome:
        """Start the job, feed its output lines to `log` as they come, and return how it ended."""

    async def reattach(self, job: dict[str, Any], log: LogSink) -> Outcome:
        """Follow a job that an earlier server process on this host started, to its end."""

    async def cancel(self, job_id: int) -> None:
        """Stop a running job and its whole process tree; its `run` then returns."""

    def owns(self, job_id: int, pid: int, uid: int) -> bool:
        """Whether the process `pid` running as `uid` (a peer of the job's handoff socket) belongs to the job."""
