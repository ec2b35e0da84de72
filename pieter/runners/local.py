"""The local runner: each job a subprocess of the server, in its own session, for hosts without systemd.

Its jobs are the server's children and end with it; a job found `running` at the next start is `lost`.
When the server runs as root, jobs run as PIETER_JOB_USER (default `nobody`), never as root.
"""

import asyncio
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

from pieter import processes
from pieter.config import Config, ConfigError
from pieter.joblog import JobLog
from pieter.models import Job, JobSpec, Result, effective_settings
from pieter.runners import inputs
from pieter.runners.base import Outcome
from pieter.workspaces import JobFiles

log = logging.getLogger(__name__)

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
FLUSH_LINES = 1000  # at most this many lines per write to Redis
FLUSH_SECONDS = 0.1  # and lines wait at most this long before they are written
MAX_LINE = 64 * 1024  # a longer line is split: Redis keeps lines, not unbounded blobs


async def pump_lines(stream: asyncio.StreamReader, sink: Callable[[list[bytes]], Awaitable[None]]) -> None:
    """Read a job's output and pass it on in lines, in batches, without holding a quiet line back."""
    pending: list[bytes] = []
    partial = b""
    while True:
        try:
            data = await asyncio.wait_for(stream.read(65536), FLUSH_SECONDS if pending else None)
        except TimeoutError:
            await sink(pending)
            pending = []
            continue
        if not data:
            break
        *lines, partial = (partial + data).split(b"\n")
        pending.extend(lines)
        while len(partial) > MAX_LINE:
            pending.append(partial[:MAX_LINE])
            partial = partial[MAX_LINE:]
        if len(pending) >= FLUSH_LINES:
            for start in range(0, len(pending), FLUSH_LINES):
                await sink(pending[start : start + FLUSH_LINES])
            pending = []
    if partial:
        pending.append(partial)
    for start in range(0, len(pending), FLUSH_LINES):
        await sink(pending[start : start + FLUSH_LINES])


def kill_leftovers(workspace: str, uid: int, group: int = 0) -> int:
    """SIGKILL the processes a job left behind: started out of its process `group` (setsid; the group itself,
    already killed, may still be dying), or left when its server died. Found among the job user's processes by
    PIETER_WORKSPACE in their environment (which names this server's state dir and the job): a process that
    rewrote its environment escapes, as it would escape any search without cgroups (the systemd runner's units
    kill their whole cgroup). Returns how many."""
    marker = f"\0PIETER_WORKSPACE={workspace}\0".encode()
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid or os.getpgid(int(pid)) == group:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in b"\0" + f.read():
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
        except OSError:
            pass  # gone meanwhile, or not ours to read
    return killed


def exit_outcome(rc: int) -> Outcome:
    """How a script that exited with `rc` (negative: killed by that signal) ended."""
    if rc == 0:
        return Outcome(Result.SUCCESS, 0)
    return Outcome(Result.SIGNAL, rc) if rc < 0 else Outcome(Result.EXIT_CODE, rc)


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class LocalRunner:
    name = "local"
    make_workspace = True

    def __init__(self, config: Config):
        self.config = config
        self.running: dict[int, subprocess.Popen[bytes]] = {}  # a job's step that runs now
        self.cancelled: set[int] = set()  # jobs whose next step must not start
        self.identity: tuple[int, int] | None = None  # (uid, gid) to drop to, when the server is root
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(config.job_user)
            except KeyError:
                raise ConfigError(f"PIETER_JOB_USER={config.job_user!r}: no such user") from None
            if user.pw_uid == 0:
                raise ConfigError("PIETER_JOB_USER must not be root: jobs never run as root")
            self.identity = (user.pw_uid, user.pw_gid)

    @property
    def job_uid(self) -> int:
        return self.identity[0] if self.identity else os.getuid()

    def command(self, files: JobFiles, step: str) -> list[str]:
        """A step of job.sh, as the job's user: the server's root drops to it with setpriv (util-linux)."""
        argv = ["/bin/sh", str(inputs.JOB_WRAPPER), step, str(files.job_dir)]
        if self.identity is None:
            return argv
        uid, gid = self.identity
        for path in (files.job_dir, *inputs.handed(files), files.workspace, files.artifacts):
            os.chown(path, uid, gid)
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]

    async def run(self, job: JobSpec, files: JobFiles, log: JobLog) -> Outcome:
        """The clone (when the job has a source), then the script: two processes, so that only a clone that
        failed reads as `error`, whatever the script does. The timeout covers both."""
        timeout = effective_settings(job, self.config).timeout
        deadline = time.monotonic() + timeout if timeout else None
        try:
            if job["raw_source"]:
                rc, timed_out = await self._step(job, files, log, "clone", deadline)
                if timed_out:
                    return Outcome(Result.TIMEOUT, rc)
                if rc != 0:  # the clone failed (or a cancel stopped it, and the cancel is recorded already)
                    return Outcome(Result.ERROR, rc)
                if job["id"] in self.cancelled:
                    return Outcome(Result.CANCELLED)
            rc, timed_out = await self._step(job, files, log, "run", deadline)
            return Outcome(Result.TIMEOUT, rc) if timed_out else exit_outcome(rc)
        finally:
            self.cancelled.discard(job["id"])

    async def _step(self, job: JobSpec, files: JobFiles, log: JobLog, step: str,
                    deadline: float | None) -> tuple[int, bool]:  # fmt: skip
        """Run one step of job.sh to its end: its return code, and whether it ran past the deadline."""
        proc = processes.spawn(
            self.command(files, step), cwd=files.workspace, env=inputs.environment(job, files),
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.running[job["id"]] = proc
        pump = asyncio.create_task(pump_lines(processes.reader_of(proc.stdout), log.write))
        timed_out = False
        try:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            await asyncio.wait_for(processes.exited(proc), left)
        except TimeoutError:
            timed_out = True
            await self._stop(proc)
        except asyncio.CancelledError:  # the server is stopping: the job goes with it
            await self._stop(proc)
            raise
        finally:
            kill_group(proc.pid, signal.SIGKILL)  # children the script left behind die with it
            self.running.pop(job["id"], None)
        # and those it started out of its group (they could hold its output open, or write artifacts late)
        killed = await asyncio.to_thread(kill_leftovers, str(files.workspace), self.job_uid, proc.pid)
        await pump
        if killed:
            await log.write([f"pieter: {killed} processes the job left behind were killed".encode()])
        return proc.returncode, timed_out

    async def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the job's whole process group, SIGKILL after a grace period."""
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(processes.exited(proc), KILL_GRACE)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await processes.exited(proc)

    async def reattach(self, job: Job, files: JobFiles, log: JobLog) -> Outcome:
        """A local job cannot outlive the server that ran it: it is lost, and what is left of it is killed."""
        killed = await asyncio.to_thread(kill_leftovers, str(files.workspace), self.job_uid)
        await log.write([f"pieter: the server stopped while this job ran; its result is lost "
                         f"({killed} leftover processes killed)".encode()])  # fmt: skip
        return Outcome(Result.LOST)

    async def cancel(self, job_id: int) -> None:
        """Stop the step that runs, and start no other."""
        proc = self.running.get(job_id)
        if proc is not None:
            self.cancelled.add(job_id)
            await self._stop(proc)

    def owns(self, job_id: int, pid: int, uid: int) -> bool:
        """A process in the job's session (jobs share their user, not their session: no process can join one)."""
        proc = self.running.get(job_id)
        try:
            return proc is not None and os.getsid(pid) == proc.pid
        except OSError:
            return False
