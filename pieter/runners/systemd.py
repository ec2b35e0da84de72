"""The systemd runner: each job a transient service `pieter-job-<id>.service`, made with `systemd-run`.

A job's unit runs `job.sh` as a user of its own (DynamicUser), with CPU, memory, task and runtime limits, in
`pieter-jobs.slice`: its clone as the unit's `ExecStartPre=`, its script as `ExecStart=`. Its output goes to the
journal; the server copies it into the job's log while it runs (runners/follower.py), and when the unit stops,
its `ExecStopPost=+` commands kill whatever the job left running (leftovers.py) and complete the log and record
the end (runners/collector.py), so both land even when the server is down: jobs are not the server's children.
Nothing of the job is on the unit's command line or in its environment, which any user can read in
/run/systemd/transient: its environment, parameters and script reach it as credential files.

Why a service and not a scope (`systemd-run --scope`): a scope's processes are forked by the caller, so systemd
cannot sandbox them (no DynamicUser=, ProtectSystem=, …), and a scope has no RuntimeMaxSec=, no ExecStopPost=
and no result of its own once the server that started it has exited idle.
"""

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from pieter.config import Config, ConfigError
from pieter.joblog import JobLog
from pieter.journal import first_invocation, unit_end
from pieter.models import Job, JobSpec, Result, State, effective_settings
from pieter.processes import output
from pieter.runners import inputs
from pieter.runners.base import Outcome
from pieter.runners.collector import collector_config, outcome_of
from pieter.runners.follower import JournalFollower
from pieter.runners.manager import ACTIVE, Manager, SystemdError, unit_name
from pieter.store import REDIS_DOWN, Store
from pieter.units import exec_line, pieter_command, pieter_environment
from pieter.workspaces import JobFiles, job_files

logger = logging.getLogger(__name__)  # `log` is a job's log here

SLICE = "pieter-jobs.slice"
STATE_ROOT = Path("/var/lib")  # StateDirectory= paths are relative to it
LEFTOVERS = Path(__file__).with_name("leftovers.py")
COLLECTOR_GRACE = 5.0  # seconds a stopped unit's collector has to record its end before the journal is asked
LOST_AFTER = 30.0  # seconds a unit may be stopped, with no end recorded nor logged by systemd, before it is `lost`
POLL = 0.5
# The sandbox every job unit gets (DynamicUser= already implies ProtectSystem=strict, PrivateTmp=,
# RemoveIPC=, NoNewPrivileges= and RestrictSUIDSGID=), chosen so that compilers, JITs and network clones work.
# /dev/shm: PrivateDevices= binds the host's into the unit's /dev, shared by every job; each gets its own.
SANDBOX = (
    "DynamicUser=yes", "ProtectHome=yes", "PrivateDevices=yes", "PrivateIPC=yes", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
    "ProtectHostname=yes", "RestrictRealtime=yes", "LockPersonality=yes", "CapabilityBoundingSet=",
    "ProtectProc=invisible", "SystemCallArchitectures=native", "UMask=0077", "TemporaryFileSystem=/dev/shm:mode=1777",
)  # fmt: skip
# Tighter still, unless a scenario says `sandbox==relaxed`: these stop some builds (debuggers and sanitizers
# need ptrace, container tools need namespaces), and then the scenario may relax them.
STRICT = (
    "SystemCallFilter=@system-service", "SystemCallErrorNumber=EPERM", "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "PrivateUsers=yes",
)  # fmt: skip


def cgroup_v2() -> bool:
    """A unified cgroup hierarchy: only there do IP filters (IPAddressDeny=) work."""
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


class SystemdRunner:
    name = "systemd"
    make_workspace = False  # StateDirectory= makes it, owned by the job's dynamic user

    def __init__(self, config: Config, store: Store):
        self.config, self.store = config, store
        try:
            self.state_directory = config.state_dir.relative_to(STATE_ROOT)
        except ValueError:
            raise ConfigError(f"PIETER_STATE_DIR={config.state_dir} must be under {STATE_ROOT} for the systemd "
                              "runner (job workspaces are the units' StateDirectory=)") from None  # fmt: skip
        self.ip_filters = cgroup_v2()
        self.manager = Manager()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        environment = {**pieter_environment(config), "PIETER_CONFIG": str(collector_config(config))}
        self.collector = ["/usr/bin/env", *(f"{k}={v}" for k, v in environment.items()), *pieter_command("collect")]

    def properties(self, job: JobSpec, files: JobFiles) -> list[str]:
        settings = effective_settings(job, self.config)
        job_id = str(job["id"])
        props = [
            f"Description=Pieter CI job {job_id}",
            *SANDBOX,
            f"StateDirectory={self.state_directory / 'workspaces' / job_id} "
            f"{self.state_directory / 'artifacts' / job_id}",
            f"WorkingDirectory={files.workspace}",
            "CPUAccounting=yes",
            "MemoryAccounting=yes",
            f"CPUQuota={settings.cpu_quota}",
            f"MemoryMax={settings.memory_max}",
            f"TasksMax={settings.tasks_max}",
            # No line lost to journald's rate limit. `LogRateLimitIntervalSec=0` would say so, but systemd 252
            # does not hand a 0 to journald (it exports only non-zero limits), which then keeps its default
            # (10,000 lines per 30 s, scaled by free disk): a burst no job reaches does the same.
            "LogRateLimitIntervalSec=1s",
            "LogRateLimitBurst=100000000",
            "ExecStopPost=+" + exec_line([sys.executable, "-I", "-S", str(LEFTOVERS), str(files.workspace)]),
            "ExecStopPost=+" + exec_line([*self.collector, job_id]),
            # The job's files, and job.sh itself: a job cannot see /tmp, /home or /root, where a checkout of
            # Pieter may live, so systemd hands it copies only its user can read.
            *(f"LoadCredential={f.name}:{f}" for f in [*inputs.handed(files), inputs.JOB_WRAPPER,
                                                        inputs.CLONE_CONFIG, inputs.RECEIVER]),
            "TimeoutStopSec=5s",  # a job that ignores SIGTERM (a timeout, a cancel) is killed 5 s later
        ]  # fmt: skip
        if job["raw_source"]:  # the clone: its own step, so that only its failure reads as `error`
            props.append("ExecStartPre=" + step_line("clone"))
        if settings.timeout:
            props += [f"RuntimeMaxSec={settings.timeout}", f"TimeoutStartSec={settings.timeout}"]  # script, clone
        else:
            props.append("TimeoutStartSec=infinity")
        if settings.sandbox != "relaxed":
            props += STRICT
            if self.ip_filters:
                props.append("IPAddressDeny=localhost")  # the API and anything else on loopback (needs cgroup v2 BPF)
        return props

    async def run(self, job: JobSpec, files: JobFiles, log: JobLog) -> Outcome:
        argv = ["systemd-run", f"--unit={unit_name(job['id'])}", "--collect", "--quiet", "--no-block",
                f"--slice={SLICE}"]  # fmt: skip
        for prop in self.properties(job, files):
            argv += ["--property", prop]
        rc, out = await output(*argv, "--", "/bin/sh", "-c", 'exec /bin/sh "$CREDENTIALS_DIRECTORY/job.sh" run')
        if rc != 0:
            await log.write([f"pieter: systemd-run failed: {out}".encode()])
            return Outcome(Result.ERROR)
        return await self.follow(job["id"], log)

    async def reattach(self, job: Job, files: JobFiles, log: JobLog) -> Outcome:
        return await self.follow(job["id"], log)

    async def follow(self, job_id: int, log: JobLog) -> Outcome:
        """Copy the unit's output into the job's log until its end is recorded (by its collector, or by a
        cancel), and return that end. A unit stopped with no end recorded (its collector did not run) ends as
        systemd's journal says it did, or `lost` when even that is missing."""
        following = Following(self, job_id, log)
        try:
            while (end := await following.step()) is None:
                pass
            return end
        finally:
            following.close()

    async def find_invocation(self, unit: str, started: float | None) -> str:
        """The id of the unit's run: from systemd while it is loaded, else from the journal."""
        if await self.manager.unit_state(unit):
            return await self.manager.invocation(unit)
        return await asyncio.to_thread(first_invocation, unit, started - 1) if started else ""

    async def cancel(self, job_id: int) -> None:
        """Stop the unit: systemd kills its whole cgroup, leftovers.py whatever escaped; its collector still
        completes the log."""
        try:
            await self.manager.stop(unit_name(job_id))
        except SystemdError as e:  # gone meanwhile, say
            logger.warning("job %s: stopping its unit failed: %s", job_id, e)

    def owns(self, job_id: int, pid: int, uid: int) -> bool:
        """A process running as the unit's dynamic user: only the unit's processes do, and systemd gave that user
        the workspace when the unit started. (Uids, not /proc: the server cannot see jobs' processes.)"""
        try:
            owner = job_files(self.config.state_dir, job_id).workspace.stat().st_uid
        except OSError:
            return False
        return uid == owner != os.geteuid()


class Following:
    """One job's unit followed by the server, a round at a time (see SystemdRunner.follow)."""

    def __init__(self, runner: SystemdRunner, job_id: int, log: JobLog):
        self.runner, self.job_id, self.log = runner, job_id, log
        self.unit = unit_name(job_id)
        self.follower: JournalFollower | None = None  # once the unit's invocation id is known
        self.stopped_since: float | None = None  # when the unit was first seen stopped with no end recorded

    async def step(self) -> Outcome | None:
        """One round: the recorded end if there is one; else copy what the journal has (waiting up to POLL s),
        see whether the unit still runs, and return its end only once it has stopped with none recorded."""
        try:
            job = await self.runner.store.job(self.job_id)
            if job["state"] not in (State.QUEUED.value, State.RUNNING.value):
                await self.drain()
                return Outcome(Result(job["result"]), job["rc"])
            copied = await self.copy(job)
        except REDIS_DOWN as e:  # the unit goes on; so do we, once Redis is back
            logger.warning("job %s: Redis unavailable (%s); following resumes when it is back", self.job_id, e)
            await asyncio.sleep(1.0)
            return None
        except Exception:  # the journal, the bus: the collector still completes the log; start afresh
            logger.exception("job %s: following its journal or unit failed; starting again", self.job_id)
            self.close()
            await asyncio.sleep(POLL)
            return None
        if copied or await self.runner.manager.unit_state(self.unit) in ACTIVE:
            self.stopped_since = None
            return None
        self.stopped_since = self.stopped_since or time.monotonic()
        return await self.end_without_collector(time.monotonic() - self.stopped_since)

    async def copy(self, job: Job) -> int:
        """Copy the unit's new lines into the log; how many."""
        if self.follower is None:
            invocation = job["invocation"] or await self.runner.find_invocation(self.unit, job["started"])
            if not invocation:  # not started yet
                await asyncio.sleep(POLL)
                return 0
            self.follower = JournalFollower(self.log, self.unit, invocation)
        return await self.follower.step(POLL)

    async def end_without_collector(self, stopped_for: float) -> Outcome | None:
        """The end of a unit that stopped `stopped_for` seconds ago with no end recorded: None while its
        collector may still record it, then what systemd logged, then `lost`."""
        if stopped_for < COLLECTOR_GRACE:
            return None
        invocation = self.follower.invocation if self.follower is not None else ""
        end = await asyncio.to_thread(unit_end, self.unit, invocation) if invocation else None
        if end is None and stopped_for < LOST_AFTER:
            return None
        await self.drain()
        return outcome_of(*end) if end else Outcome(Result.LOST)

    async def drain(self) -> None:
        if self.follower is not None:
            await self.follower.drain(quiet=0.2)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
            self.follower = None


def step_line(step: str) -> str:
    """The Exec line of a step of job.sh, from the unit's credentials."""
    return exec_line(["/bin/sh", "-c", f'exec /bin/sh "$CREDENTIALS_DIRECTORY/job.sh" {step}'])
