"""The runner protocol: how the dispatcher starts a job, follows it to its end, and stops it.

A runner's job may outlive the server (a systemd unit does): `run` follows a job it starts, `reattach`
follows one an earlier server process started on this host, and each returns the job's `Outcome`. The
dispatcher records outcomes and owns the job's files; a runner writes no job record, and its job's output goes
into the `JobLog` the dispatcher hands it. The one other writer of job state is the systemd unit's own collector
(runners/collector.py), which records a unit's end when no server is there to see it: the store's first-writer-
wins transitions and the log's cursor keep the two apart.
"""

import dataclasses
from typing import Protocol

from pieter.joblog import JobLog
from pieter.models import Job, JobSpec, Result
from pieter.workspaces import JobFiles


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: Result
    rc: int | None = None


class Runner(Protocol):
    name: str
    make_workspace: bool  # False: the runner's unit makes workspace and artifacts dirs (systemd's StateDirectory=)

    async def run(self, job: JobSpec, files: JobFiles, log: JobLog) -> Outcome:
        """Start the job, feed its output lines to `log` as they come, and return how it ended."""

    async def reattach(self, job: Job, files: JobFiles, log: JobLog) -> Outcome:
        """Follow a job that an earlier server process on this host started, to its end."""

    async def cancel(self, job_id: int) -> None:
        """Stop a running job and its whole process tree; its `run` then returns."""

    def owns(self, job_id: int, pid: int, uid: int) -> bool:
        """Whether the process `pid` running as `uid` (a peer of the job's handoff socket) belongs to the job."""
