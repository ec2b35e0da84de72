"""The systemd runner: each job a transient service `pieter-job-<id>.service`, made with `systemd-run`.

A job's unit runs `job.sh` as a user of its own (DynamicUser), with CPU, memory, task and runtime limits, in
`pieter-jobs.slice`. Its output goes to the journal; the server follows it into Redis while it runs
(`LogFollower`), and the unit's own `ExecStopPost=+pieter collect <id>` completes the log and records the
result when the unit stops, so both land even when the server is down: jobs are not the server's children.
The parameters reach the job as a credential file, never as unit `Environment=`, which the privileged
collector would inherit.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import signal
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from pieter.config import Config, ConfigError
from pieter.models import Result, State, mask_secrets
from pieter.processes import output
from pieter.runners.base import CLONE_FAILED_MARKER, JobFiles, LogSink, Outcome
from pieter.store import REDIS_DOWN, Store
from pieter.workspaces import (
    CLONE_CONFIG, JOB_WRAPPER, RECEIVER, job_environment, job_files, job_inputs, secrets_to_mask,
)  # fmt: skip

log = logging.getLogger(__name__)
T = TypeVar("T")

SLICE = "pieter-jobs.slice"
STATE_ROOT = Path("/var/lib")  # StateDirectory= paths are relative to it
CGROUP_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()  # a unified hierarchy: IP filters work
COLLECTOR_GRACE = 5.0  # seconds a gone unit's collector has to record its end before the journal is asked
LOST_AFTER = 30.0  # seconds a unit may be gone, with no end recorded nor logged by systemd, before it is `lost`
POLL = 0.5
# The sandbox every job unit gets (DynamicUser= already implies ProtectSystem=strict, PrivateTmp=,
# RemoveIPC=, NoNewPrivileges= and RestrictSUIDSGID=), chosen so that compilers, JITs and network clones work.
SANDBOX = (
    "DynamicUser=yes", "ProtectHome=yes", "PrivateDevices=yes", "PrivateIPC=yes", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
    "ProtectHostname=yes", "RestrictRealtime=yes", "LockPersonality=yes", "CapabilityBoundingSet=",
    "ProtectProc=invisible", "SystemCallArchitectures=native", "UMask=0077",
)  # fmt: skip
# Tighter still, unless a scenario says `sandbox==relaxed`: these stop some builds (debuggers and sanitizers
# need ptrace, container tools need namespaces), and then the scenario may relax them.
STRICT = (
    "SystemCallFilter=@system-service", "SystemCallErrorNumber=EPERM", "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "PrivateUsers=yes",
)  # fmt: skip


def unit_name(job_id: int) -> str:
    return f"pieter-job-{job_id}.service"


def exec_line(argv: list[str]) -> str:
    """An argv as one `Exec*=` line: quoted, with `$` and `%` escaped so systemd passes them as they are."""
    words = []
    for arg in argv:
        arg = arg.replace("%", "%%").replace("$", "$$")
        if not re.fullmatch(r"[A-Za-z0-9_./:=@+,-]+", arg):
            arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(arg)
    return " ".join(words)


def outcome_of(service_result: str, exit_code: str, exit_status: str, workspace: Path) -> Outcome:
    """How a unit ended, from what systemd tells its `ExecStopPost=` ($SERVICE_RESULT, $EXIT_CODE,
    $EXIT_STATUS). An OOM kill reads `oom-kill` on cgroup v2 and `signal` (KILL) on cgroup v1."""
    if exit_code == "exited":
        rc: int | None = int(exit_status)
    elif exit_status:
        rc = -signal.Signals["SIG" + exit_status].value if not exit_status.isdigit() else -int(exit_status)
    else:
        rc = None
    if service_result == "success":
        return Outcome(Result.SUCCESS, rc)
    if service_result in ("timeout", "oom-kill"):
        return Outcome(Result(service_result), rc)
    if service_result in ("signal", "core-dump"):
        return Outcome(Result.SIGNAL, rc)
    if service_result == "exit-code":
        failed_clone = (workspace / CLONE_FAILED_MARKER).exists()
        return Outcome(Result.ERROR if failed_clone else Result.EXIT_CODE, rc)
    return Outcome(Result.ERROR, rc)  # resources, start-limit-hit, …: systemd could not run it


async def unit_state(unit: str) -> str:
    """The unit's ActiveState while it is loaded, '' once it is gone. Asks for loaded units only:
    `systemctl show` of a gone unit would make systemd try to load it, and log that it cannot."""
    rc, out = await output("systemctl", "list-units", "--all", "--plain", "--no-legend", unit)
    fields = out.split()
    return fields[2] if rc == 0 and len(fields) > 2 and fields[0] == unit else ""


async def unit_property(unit: str, name: str) -> str:
    """A property of a loaded unit ('' when the unit is gone: systemd then answers with defaults)."""
    rc, out = await output("systemctl", "show", "--property", f"LoadState,{name}", unit)
    values = dict(line.partition("=")[::2] for line in out.splitlines())  # in systemd's order, not ours
    return values.get(name, "") if rc == 0 and values.get("LoadState") == "loaded" else ""


class LogFollower:
    """Copies one run's journal lines into the job's Redis log from the cursor stored there. Two followers
    of one job (the server's, the collector's) may run at once: the store's cursor check keeps out doubles."""

    def __init__(self, store: Store, job_id: int, unit: str, invocation: str, masks: list[bytes]):
        from pieter.journal import JobJournal

        self.store, self.job_id, self.invocation, self.masks = store, job_id, invocation, masks
        self.journal = JobJournal(unit, invocation)
        self.cursor: str | None = None
        # The reader blocks: it runs off the loop, always in this one thread, so that `close()` waits for a read
        # that a cancelled step left running (closing a reader another thread is inside crashes the process).
        self.thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"journal-{job_id}")

    async def _blocking(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, call, *args)

    async def step(self, wait: float) -> int:
        """Copy what is there (waiting up to `wait` s for something); returns the number of lines read."""
        if self.cursor is None:
            self.cursor = await self.store.log_cursor(self.job_id)
            await self._blocking(self.journal.seek, self.cursor)
        lines, cursor = await self._blocking(self.journal.read, 1000, wait)
        if lines and await self.store.append_log_after(self.job_id, self.cursor, cursor,
                                                       mask_secrets(lines, self.masks)):  # fmt: skip
            self.cursor = cursor
        elif lines:
            self.cursor = None  # another follower wrote these: continue from where it got to
        return len(lines)

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


class SystemdRunner:
    name = "systemd"

    def __init__(self, config: Config, store: Store):
        self.config, self.store = config, store
        try:
            self.state_directory = config.state_dir.relative_to(STATE_ROOT)
        except ValueError:
            raise ConfigError(f"PIETER_STATE_DIR={config.state_dir} must be under {STATE_ROOT} for the systemd "
                              "runner (job workspaces are the units' StateDirectory=)") from None  # fmt: skip
        self.make_workspace = False  # StateDirectory= makes it, owned by the job's dynamic user

    def properties(self, job: dict[str, Any], files: JobFiles) -> list[str]:
        settings, config = job["settings"], self.config
        timeout = int(settings.get("timeout") or config.job_timeout)
        environment = job_environment(job, files)
        collector = [
            "/usr/bin/env",
            f"PIETER_REDIS_URL={config.redis}",
            f"PIETER_STATE_DIR={config.state_dir}",
            f"PIETER_LOG_MAX_BYTES={config.log_max_bytes}",
            f"PIETER_CONFIG={os.environ.get('PIETER_CONFIG', '/etc/pieter-ci/pieter.conf')}",
            *([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []),
            sys.executable, "-m", "pieter", "collect", str(job["id"]),
        ]  # fmt: skip
        props = [
            *SANDBOX,
            f"StateDirectory={self.state_directory / 'workspaces' / str(job['id'])} "
            f"{self.state_directory / 'artifacts' / str(job['id'])}",
            f"WorkingDirectory={files.workspace}",
            "CPUAccounting=yes",
            "MemoryAccounting=yes",
            f"CPUQuota={settings.get('cpu_quota') or config.job_cpu_quota}",
            f"MemoryMax={settings.get('memory_max') or config.job_memory_max}",
            f"TasksMax={settings.get('tasks_max') or config.job_tasks_max}",
            f"LogExtraFields=PIETER_JOB={job['id']}",
            # No line lost to journald's rate limit. `LogRateLimitIntervalSec=0` would say so, but systemd 252
            # does not hand a 0 to journald (it exports only non-zero limits), which then keeps its default
            # (10,000 lines per 30 s, scaled by free disk): a burst no job reaches does the same.
            "LogRateLimitIntervalSec=1s",
            "LogRateLimitBurst=100000000",
            "ExecStopPost=+" + exec_line(collector),
            *(f"Environment={exec_line([f'{k}={v}'])}" for k, v in environment.items()),
            # The job's files, and job.sh itself: a job cannot see /tmp, /home or /root, where a checkout of
            # Pieter may live, so systemd hands it copies only its user can read.
            *(f"LoadCredential={f.name}:{f}" for f in [*job_inputs(files), JOB_WRAPPER, CLONE_CONFIG, RECEIVER]),
        ]
        props.append("TimeoutStopSec=5s")  # a job that ignores SIGTERM (a timeout, a cancel) is killed 5 s later
        if timeout:
            props.append(f"RuntimeMaxSec={timeout}")
        if settings.get("sandbox") != "relaxed":
            props += STRICT
            if CGROUP_V2:
                props.append("IPAddressDeny=localhost")  # the API and anything else on loopback (needs cgroup v2 BPF)
        return props

    async def run(self, job: dict[str, Any], files: JobFiles, log_sink: LogSink) -> Outcome:
        unit = unit_name(job["id"])
        argv = ["systemd-run", f"--unit={unit}", "--collect", "--quiet", f"--slice={SLICE}"]
        for prop in self.properties(job, files):
            argv += ["--property", prop]
        rc, out = await output(
            *argv, "--", "/bin/sh", "-c", f'exec /bin/sh "$CREDENTIALS_DIRECTORY/{JOB_WRAPPER.name}"'
        )
        if rc != 0:
            await log_sink([f"pieter: systemd-run failed: {out}".encode()])
            return Outcome(Result.ERROR)
        return await self.follow(job["id"])

    async def reattach(self, job: dict[str, Any], log_sink: LogSink) -> Outcome:
        return await self.follow(job["id"])

    async def follow(self, job_id: int) -> Outcome:
        """Copy the unit's output into Redis until its end is recorded (by its collector, or by a cancel),
        and return that end. A unit gone with no end recorded (its collector did not run) ends as systemd's
        journal says it did, or `lost` when even that is missing."""
        from pieter.journal import unit_end

        unit = unit_name(job_id)
        follower: LogFollower | None = None
        gone_for = 0.0
        try:
            while True:
                try:
                    job = await self.store.job(job_id)
                except REDIS_DOWN as e:  # the unit goes on; so do we, once Redis is back
                    log.warning("job %s: Redis unavailable (%s); following resumes when it is back", job_id, e)
                    if follower is not None:
                        follower.cursor = None  # re-read where the log got to
                    await asyncio.sleep(1.0)
                    continue
                if job["state"] not in (State.QUEUED.value, State.RUNNING.value):
                    if follower is not None:
                        await follower.drain(quiet=0.2)
                    return Outcome(Result(job["result"]), job["rc"])
                if follower is None:
                    invocation = job["invocation"] or await self.find_invocation(unit, job["started"])
                    if invocation:
                        masks = secrets_to_mask(job_files(self.config.state_dir, job_id))
                        follower = LogFollower(self.store, job_id, unit, invocation, masks)
                        if not job["invocation"]:
                            await self.store.transition(job_id, [State.RUNNING], State.RUNNING,
                                                        invocation=invocation, unit=unit)  # fmt: skip
                try:
                    copied = await follower.step(POLL) if follower is not None else await asyncio.sleep(POLL) or 0
                except REDIS_DOWN:
                    follower.cursor = None  # type: ignore[union-attr]
                    continue
                except Exception:  # the journal: the collector still completes the log; start afresh
                    log.exception("job %s: following its journal failed; starting again", job_id)
                    follower.close()  # type: ignore[union-attr]
                    follower = None
                    await asyncio.sleep(POLL)
                    continue
                if copied or await unit_state(unit):
                    gone_for = 0.0
                    continue
                gone_for += POLL
                if gone_for < COLLECTOR_GRACE:
                    continue  # its collector may be recording the end right now
                invocation = follower.invocation if follower is not None else ""
                end = await asyncio.to_thread(unit_end, unit, invocation) if invocation else None
                if end is not None or gone_for >= LOST_AFTER:
                    if follower is not None:
                        await follower.drain(quiet=0.2)
                    files = job_files(self.config.state_dir, job_id)
                    return outcome_of(*end, files.workspace) if end else Outcome(Result.LOST)
        finally:
            if follower is not None:
                follower.close()

    async def find_invocation(self, unit: str, started: float | None) -> str:
        """The id of the unit's run: from systemd while it is loaded, else from the journal."""
        if await unit_state(unit):
            return await unit_property(unit, "InvocationID")
        from pieter.journal import first_invocation

        return await asyncio.to_thread(first_invocation, unit, started - 1) if started else ""

    async def cancel(self, job_id: int) -> None:
        """Stop the unit: systemd kills its whole cgroup; its collector still completes the log."""
        rc, out = await output("systemctl", "stop", "--no-block", unit_name(job_id))
        if rc != 0:
            log.warning("job %s: systemctl stop failed: %s", job_id, out)

    def owns(self, job_id: int, pid: int, uid: int) -> bool:
        """A process running as the unit's dynamic user: only the unit's processes do, and systemd gave that user
        the workspace when the unit started. (Uids, not /proc: the server cannot see jobs' processes.)"""
        try:
            owner = job_files(self.config.state_dir, job_id).workspace.stat().st_uid
        except OSError:
            return False
        return uid == owner != os.geteuid()


async def collect(config: Config, job_id: int, environ: dict[str, str]) -> None:
    """`pieter collect <id>`, the job unit's `ExecStopPost=+`: complete the log, record the end (the
    first end recorded wins: a cancel, recorded by whoever cancelled, stays a cancel)."""
    from pieter.dispatcher import retrying
    from pieter.store import connect

    store = Store(connect(config.redis), config.log_max_bytes)
    unit, invocation = unit_name(job_id), environ["INVOCATION_ID"]
    files = job_files(config.state_dir, job_id)
    # A clone that never asked for its secrets: nobody may, once the unit is gone (its dynamic uid is free again)
    files.handoff.unlink(missing_ok=True)
    outcome = outcome_of(environ.get("SERVICE_RESULT", ""), environ.get("EXIT_CODE", ""),
                         environ.get("EXIT_STATUS", ""), files.workspace)  # fmt: skip
    follower = LogFollower(store, job_id, unit, invocation, secrets_to_mask(files))
    try:
        await retrying(lambda: store.transition(job_id, [State.RUNNING], State.RUNNING, invocation=invocation,
                                                unit=unit), "recording the invocation")  # fmt: skip
        try:
            await retrying(lambda: follower.drain(quiet=0.3), "completing the log")
        except Exception:  # the end matters more than the last lines: record it whatever happened here
            log.exception("job %s: could not complete its log from the journal", job_id)
        usage = await resource_usage(unit)
        await retrying(lambda: store.finish_job(job_id, outcome.result, outcome.rc, **usage), "recording the end")
    finally:
        follower.close()
        with contextlib.suppress(Exception):
            await store.redis.close()


async def resource_usage(unit: str) -> dict[str, Any]:
    """CPU time and peak memory of the unit's cgroup, where this host's cgroup layout reports them."""
    usage: dict[str, Any] = {}
    cgroup = await unit_property(unit, "ControlGroup")
    if not cgroup:
        return usage
    readings = {
        "cpu_seconds": [(f"/sys/fs/cgroup/cpu,cpuacct{cgroup}/cpuacct.usage", 1e-9),
                        (f"/sys/fs/cgroup/cpuacct{cgroup}/cpuacct.usage", 1e-9),
                        (f"/sys/fs/cgroup{cgroup}/cpu.stat", 1e-6)],
        "memory_peak": [(f"/sys/fs/cgroup/memory{cgroup}/memory.max_usage_in_bytes", 1),
                        (f"/sys/fs/cgroup{cgroup}/memory.peak", 1)],
    }  # fmt: skip
    for field, places in readings.items():
        for path, scale in places:
            with contextlib.suppress(OSError, ValueError):
                text = Path(path).read_text()
                if path.endswith("cpu.stat"):
                    text = dict(line.split() for line in text.splitlines())["usage_usec"]
                value = int(text) * scale
                usage[field] = round(value, 3) if field == "cpu_seconds" else int(value)
                break
    return usage
