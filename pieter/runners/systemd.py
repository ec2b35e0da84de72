"""The systemd runner: each job a transient service `pieter-job-<id>.service`, started over D-Bus.

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
import errno
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dbus_next.signature import Variant

from pieter.config import Config, ConfigError
from pieter.joblog import JobLog
from pieter.journal import first_invocation, unit_end
from pieter.models import Job, JobSpec, Result, State, effective_settings
from pieter.runners import inputs
from pieter.runners.base import Outcome
from pieter.runners.collector import collector_config, outcome_of
from pieter.runners.follower import JournalFollower
from pieter.runners.manager import ACTIVE, Manager, SystemdError, unit_name
from pieter.store import REDIS_DOWN, Store
from pieter.units import pieter_command, pieter_environment
from pieter.workspaces import JobFiles, job_files

logger = logging.getLogger(__name__)  # `log` is a job's log here

SLICE = "pieter-jobs.slice"
STATE_ROOT = Path("/var/lib")  # StateDirectory= paths are relative to it
LEFTOVERS = Path(__file__).with_name("leftovers.py")
COLLECTOR_GRACE = 5.0  # seconds a stopped unit's collector has to record its end before the journal is asked
LOST_AFTER = 30.0  # seconds a unit may be stopped, with no end recorded nor logged by systemd, before it is `lost`
POLL = 0.5
Property = list[Any]  # [name, Variant]: one of StartTransientUnit's properties (systemd.resource-control(5) and
# systemd.exec(5) name them; org.freedesktop.systemd1(5) gives their D-Bus types)
INFINITY = 2**64 - 1  # systemd's USEC_INFINITY


def prop(name: str, signature: str, value: Any) -> Property:
    return [name, Variant(signature, value)]


# The sandbox every job unit gets (DynamicUser= already implies ProtectSystem=strict, PrivateTmp=,
# RemoveIPC=, NoNewPrivileges= and RestrictSUIDSGID=), chosen so that compilers, JITs and network clones work.
# /dev/shm: PrivateDevices= binds the host's into the unit's /dev, shared by every job; each gets its own.
SANDBOX = [
    *(prop(name, "b", True) for name in (
        "DynamicUser", "PrivateDevices", "PrivateIPC", "ProtectKernelTunables", "ProtectKernelModules",
        "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictRealtime",
        "LockPersonality")),
    prop("ProtectHome", "s", "yes"), prop("ProtectProc", "s", "invisible"), prop("CapabilityBoundingSet", "t", 0),
    prop("SystemCallArchitectures", "as", ["native"]), prop("UMask", "u", 0o077),
    prop("TemporaryFileSystem", "a(ss)", [["/dev/shm", "mode=1777"]]),
]  # fmt: skip
# Tighter still, unless a scenario says `sandbox==relaxed`: these stop some builds (debuggers and sanitizers
# need ptrace, container tools need namespaces), and then the scenario may relax them.
STRICT = [
    prop("SystemCallFilter", "(bas)", [True, ["@system-service"]]), prop("SystemCallErrorNumber", "i", errno.EPERM),
    prop("RestrictNamespaces", "t", 0),  # no namespace type allowed
    prop("RestrictAddressFamilies", "(bas)", [True, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]]),
    prop("PrivateUsers", "b", True),
]  # fmt: skip
# IPAddressDeny=localhost: the API and anything else on loopback (needs cgroup v2's BPF)
DENY_LOOPBACK = prop("IPAddressDeny", "a(iayu)", [[socket.AF_INET, bytes([127, 0, 0, 0]), 8],
                                                   [socket.AF_INET6, bytes(15) + b"\x01", 128]])  # fmt: skip
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def cpu_quota(percent: str) -> Property:
    """CPUQuota=150% as systemd-run sends it: CPU time per second of wall clock, in µs."""
    return prop("CPUQuotaPerSecUSec", "t", int(percent.rstrip("%")) * 10_000)


def memory_max(size: str) -> Property:
    """MemoryMax=512M (base 1024) or MemoryMax=25% (of the host's memory, as a fraction of 2^32 - 1)."""
    if size.endswith("%"):
        return prop("MemoryMaxScale", "u", int(size[:-1]) * 100 * (2**32 - 1) // 10_000)
    return prop("MemoryMax", "t", int(size.rstrip("KMGT")) * SIZE_UNITS[size.lstrip("0123456789")])


def command(argv: list[str]) -> list[Any]:
    """An Exec*= command: its path, its argv, and whether a failure is ignored (never)."""
    return [argv[0], argv, False]


def privileged(argv: list[str]) -> list[Any]:
    """An Exec*Ex= command run with full privileges, outside the sandbox: a unit file's `+` prefix."""
    return [argv[0], argv, ["privileged"]]


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

    def properties(self, job: JobSpec, files: JobFiles) -> list[Property]:
        """What the job's unit is made of: the sandbox, its limits, its steps and its ExecStopPost= programs."""
        settings = effective_settings(job, self.config)
        job_id = str(job["id"])
        timeout = settings.timeout * 1_000_000 or INFINITY
        steps = [("ExecStartPre", "clone")] if job["raw_source"] else []  # its own step: only its failure is `error`
        props = [
            prop("Description", "s", f"Pieter CI job {job_id}"),
            prop("Slice", "s", SLICE),
            prop("CollectMode", "s", "inactive-or-failed"),  # gone once it ended, failed or not
            *SANDBOX,
            prop("StateDirectory", "as", [str(self.state_directory / kind / job_id) for kind in ("workspaces", "artifacts")]),
            prop("WorkingDirectory", "s", str(files.workspace)),
            prop("CPUAccounting", "b", True),
            prop("MemoryAccounting", "b", True),
            cpu_quota(settings.cpu_quota),
            memory_max(settings.memory_max),
            prop("TasksMax", "t", settings.tasks_max),
            # No line lost to journald's rate limit. An interval of 0 would say so, but systemd 252 does not hand
            # a 0 to journald (it exports only non-zero limits), which then keeps its default (10,000 lines per
            # 30 s, scaled by free disk): a burst no job reaches does the same.
            prop("LogRateLimitIntervalUSec", "t", 1_000_000),
            prop("LogRateLimitBurst", "u", 100_000_000),
            prop("ExecStopPostEx", "a(sasas)", [
                privileged([sys.executable, "-I", "-S", str(LEFTOVERS), str(files.workspace)]),
                privileged([*self.collector, job_id])]),
            # The job's files, and job.sh itself: a job cannot see /tmp, /home or /root, where a checkout of
            # Pieter may live, so systemd hands it copies only its user can read.
            prop("LoadCredential", "a(ss)", [[f.name, str(f)] for f in [*inputs.handed(files), inputs.JOB_WRAPPER,
                                                                          inputs.CLONE_CONFIG, inputs.RECEIVER]]),
            prop("TimeoutStopUSec", "t", 5_000_000),  # a job that ignores SIGTERM (a timeout, a cancel): killed 5 s later
            prop("TimeoutStartUSec", "t", timeout),  # the clone's
            *([prop("RuntimeMaxUSec", "t", timeout)] if settings.timeout else []),  # the script's
            *(prop(name, "a(sasb)", [command(step_argv(step))]) for name, step in [*steps, ("ExecStart", "run")]),
        ]  # fmt: skip
        if settings.sandbox != "relaxed":
            props += STRICT
            if self.ip_filters:
                props.append(DENY_LOOPBACK)
        return props

    async def run(self, job: JobSpec, files: JobFiles, log: JobLog) -> Outcome:
        try:
            await self.manager.start_transient(unit_name(job["id"]), self.properties(job, files))
        except SystemdError as e:
            await log.write([f"pieter: systemd could not start the job's unit: {e}".encode()])
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


def step_argv(step: str) -> list[str]:
    """A step of job.sh, from the unit's credentials (systemd expands the variable as sh would)."""
    return ["/bin/sh", "-c", f'exec /bin/sh "$CREDENTIALS_DIRECTORY/job.sh" {step}']
