"""`pieter collect <id>`, a job unit's `ExecStopPost=+` (root, outside the sandbox, when the unit stops): complete
the job's log from the journal and record how it ended, so both land while the server is stopped, restarted or
idle. It is the one writer of job state besides the server's dispatcher; the first end recorded wins (a cancel,
recorded by whoever cancelled, stays a cancel). Before it, leftovers.py has killed whatever the job left running.

Its settings come from a file only root can read (`collector_config`, written by the server): nothing on the
unit's command line or in its environment, which every user can read in /run/systemd/transient.
"""

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from pieter.config import Config
from pieter.joblog import JobLog
from pieter.models import Result, State
from pieter.runners import inputs
from pieter.runners.base import Outcome
from pieter.runners.follower import JournalFollower
from pieter.runners.manager import Manager, unit_name
from pieter.store import Store, connect, retrying
from pieter.workspaces import job_files

log = logging.getLogger(__name__)


def collector_config(config: Config) -> Path:
    """Write the settings the collector needs into `$PIETER_STATE_DIR/collector.conf` (root's only); its path."""
    path = config.state_dir / "collector.conf"
    settings = {"PIETER_REDIS_URL": config.redis, "PIETER_STATE_DIR": str(config.state_dir),
                "PIETER_LOG_MAX_BYTES": str(config.log_max_bytes)}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write("".join(f"{key}={value}\n" for key, value in settings.items()))
    os.replace(tmp, path)
    return path


def outcome_of(service_result: str, exit_code: str, exit_status: str, oom_killed: bool = False) -> Outcome:
    """How a unit ended, from what systemd tells its `ExecStopPost=` ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS of
    the main process: none when it never started, because the clone, the unit's ExecStartPre=, failed), and
    whether the kernel OOM-killed any of its processes (`oom-kill` on cgroup v2 whichever it was; on cgroup v1
    systemd sees only a signal, or a child's death as an exit code, so the memory cgroup's counter tells)."""
    if exit_code == "exited":
        rc: int | None = int(exit_status)
    elif exit_status:
        rc = -signal.Signals["SIG" + exit_status].value if not exit_status.isdigit() else -int(exit_status)
    else:
        rc = None
    if service_result == "success":
        return Outcome(Result.SUCCESS, rc)
    if oom_killed or service_result == "oom-kill":
        return Outcome(Result.OOM_KILL, rc)
    if service_result == "timeout":
        return Outcome(Result.TIMEOUT, rc)
    if service_result in ("signal", "core-dump"):
        return Outcome(Result.SIGNAL, rc)
    if service_result == "exit-code" and exit_code:
        return Outcome(Result.EXIT_CODE, rc)
    return Outcome(Result.ERROR, rc)  # the clone failed; resources, start-limit-hit, …: systemd could not run it


async def collect(config: Config, job_id: int, environ: dict[str, str]) -> None:
    store = Store(connect(config.redis), config.log_max_bytes)
    unit, invocation = unit_name(job_id), environ["INVOCATION_ID"]
    files = job_files(config.state_dir, job_id)
    # A clone that never asked for its secrets: nobody may, once the unit is gone (its dynamic uid is free again)
    files.handoff.unlink(missing_ok=True)
    manager = Manager()
    try:
        cgroup = await manager.control_group(unit)
    finally:
        manager.close()
    outcome = outcome_of(environ.get("SERVICE_RESULT", ""), environ.get("EXIT_CODE", ""),
                         environ.get("EXIT_STATUS", ""), oom_kills(cgroup) > 0)  # fmt: skip
    follower = JournalFollower(JobLog(store, job_id, inputs.masks(files)), unit, invocation)
    try:
        await retrying(lambda: store.transition(job_id, [State.RUNNING], State.RUNNING, invocation=invocation,
                                                unit=unit), "recording the invocation")  # fmt: skip
        try:
            await retrying(lambda: follower.drain(quiet=0.3), "completing the log")
        except Exception:  # the end matters more than the last lines: record it whatever happened here
            log.exception("job %s: could not complete its log from the journal", job_id)
        usage = resource_usage(cgroup)
        await retrying(lambda: store.finish_job(job_id, outcome.result, outcome.rc, **usage), "recording the end")
    finally:
        follower.close()
        with contextlib.suppress(Exception):
            await store.redis.close()


def read_counter(path: str, name: str) -> int | None:
    """`name N` from a cgroup file of such lines (memory.events, memory.oom_control, cpu.stat)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return None


def oom_kills(cgroup: str) -> int:
    """Processes of the unit's cgroup the kernel killed for want of memory (v1's counter, else v2's)."""
    if not cgroup:
        return 0
    for path in (f"/sys/fs/cgroup/memory{cgroup}/memory.oom_control", f"/sys/fs/cgroup{cgroup}/memory.events"):
        found = read_counter(path, "oom_kill")
        if found is not None:
            return found
    return 0


def resource_usage(cgroup: str) -> dict[str, Any]:
    """CPU time and peak memory of the unit's cgroup, where this host's cgroup layout reports them."""
    usage: dict[str, Any] = {}
    if not cgroup:
        return usage
    for path in (f"/sys/fs/cgroup/cpu,cpuacct{cgroup}/cpuacct.usage", f"/sys/fs/cgroup/cpuacct{cgroup}/cpuacct.usage"):
        with contextlib.suppress(OSError, ValueError):
            usage["cpu_seconds"] = round(int(Path(path).read_text()) * 1e-9, 3)
            break
    else:
        usec = read_counter(f"/sys/fs/cgroup{cgroup}/cpu.stat", "usage_usec")
        if usec is not None:
            usage["cpu_seconds"] = round(usec * 1e-6, 3)
    for path in (f"/sys/fs/cgroup/memory{cgroup}/memory.max_usage_in_bytes", f"/sys/fs/cgroup{cgroup}/memory.peak"):
        with contextlib.suppress(OSError, ValueError):
            usage["memory_peak"] = int(Path(path).read_text())
            break
    return usage
