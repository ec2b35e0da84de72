"""The systemd halves of the benchmarks, run inside the sandbox (by `Context.in_sandbox`) with the server's own
Python, so that Pieter and its baseline are timed by the same process on the same clock. Prints JSON.

The baseline unit is started by `SystemdRunner.run` itself with only its `follow` left out: the same
`properties()`, the same StartTransientUnit call over D-Bus; what differs from a Pieter job is
everything before it (HTTP, Redis, the queue, the workspace) and nothing after it.

    in_sandbox.py start N CLONES     N jobs of a repo without a source and N baseline units, alternating;
                                     in the first CLONES rounds also one of each with a shallow clone of a
                                     small local repo
    in_sandbox.py startcall N        N small units started over D-Bus and N by systemd-run, alternating
    in_sandbox.py journald LINES     a unit with a job's properties (less the collector) printing LINES lines:
                                     seconds until the last is in the journal, and how many are there
"""

import asyncio
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from systemd import journal

from pieter import workspaces
from pieter.config import load
from pieter.handoff import Handoff
from pieter.joblog import JobLog
from pieter.models import JobSpec, Result
from pieter.runners import inputs
from pieter.runners.base import Outcome
from pieter.runners.manager import Manager, unit_name
from pieter.runners.systemd import Property, SystemdRunner, command, prop
from pieter.store import PREFIX
from pieter.workspaces import JobFiles

RUN = "/run/pieter-test"  # tests/systemd_pieter.py's, where the server's socket and Redis are
STAMP_SCRIPT = b'#!/bin/bash\necho "T $EPOCHREALTIME"\n'  # bench/common.py's (this file runs on its own)
SOURCE = "/srv/bench-src"  # /tmp, /home and /root are hidden from job units
BASELINE_IDS = 900_000  # job ids of the baseline units, far above the server's


class Direct(SystemdRunner):
    """A unit with a job's properties, started exactly as the server starts it, and nothing more."""

    async def follow(self, job_id: int, log: JobLog) -> Outcome:
        return Outcome(Result.SUCCESS)


class PrintedLog(JobLog):
    """What the runner would log (only a unit systemd refused), on stderr."""

    def __init__(self) -> None:
        pass

    async def write(self, lines: Sequence[bytes]) -> None:
        print(b"\n".join(lines).decode(errors="replace"), file=sys.stderr)


class JournaldOnly(Direct):
    def properties(self, job: JobSpec, files: JobFiles) -> list[Property]:
        return [p for p in super().properties(job, files) if p[0] != "ExecStopPostEx"]


def server_environment() -> dict[str, str]:
    """The PIETER_* settings of the server's unit: the baseline computes its properties from the same ones."""
    out = subprocess.run(["systemctl", "show", "-p", "Environment", "--value", "pieter-test.service"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return dict(word.split("=", 1) for word in shlex.split(out))


def unit_gone(unit: str) -> bool:
    out = subprocess.run(["systemctl", "show", "-p", "ActiveState", "--value", unit], capture_output=True, text=True)
    return out.stdout.strip() in ("inactive", "failed", "")


def wait(check: Callable[[], object], timeout: float = 60, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(check)
        time.sleep(poll)


def first_stamp(lines: list[bytes]) -> float:
    return next(float(line[2:]) for line in lines if line.startswith(b"T "))


def unit_lines(unit: str) -> list[bytes]:
    reader = journal.Reader()
    reader.add_match(_SYSTEMD_UNIT=unit)
    lines = [entry["MESSAGE"].encode() if isinstance(entry["MESSAGE"], str) else entry["MESSAGE"] for entry in reader]
    reader.close()
    return lines


class Bench:
    def __init__(self) -> None:
        env = server_environment()
        self.config = load(env)
        self.api = httpx.Client(transport=httpx.HTTPTransport(uds=f"{RUN}/api.sock"), base_url="http://pieter",
                                timeout=60)  # fmt: skip
        self.db = redis.Redis(unix_socket_path=f"{RUN}/redis.sock")
        self.next_baseline = (
            BASELINE_IDS + int(time.time()) % 10_000 * 1000
        )  # unique per call: the journal keeps units' lines

    def pieter_job(self, path: str) -> float:
        """PATCH → the script's first instruction, for one job, waited for to its unit's end."""
        t0 = time.time()
        job_id = self.api.patch(path).json()["id"]
        wait(lambda: self.db.hget(f"{PREFIX}job:{job_id}", "state") not in (b"queued", b"running"))
        wait(lambda: unit_gone(unit_name(job_id)))
        return first_stamp(self.db.lrange(f"{PREFIX}job:{job_id}:log", 0, -1)) - t0

    def baseline_unit(self, runner: Direct, source: str = "", script: bytes = STAMP_SCRIPT) -> tuple[float, str]:
        """The start call → the script's first instruction, for one unit with a job's properties."""
        self.next_baseline += 1
        job = cast(JobSpec, {"id": self.next_baseline, "repo": "bench", "scenario": "baseline", "settings": {},
                             "env": {}, "raw_source": source, "script": script})  # fmt: skip
        files = workspaces.make(self.config.state_dir, job["id"], runner.make_workspace)
        inputs.write(files, job, {})
        handoff = Handoff(files.handoff, inputs.clone_secrets(job, {}), partial(runner.owns, job["id"]))

        async def start() -> float:
            runner.manager = Manager()  # a bus connection per event loop (each unit has an asyncio.run of its own)
            await handoff.open()
            t0 = time.time()
            await runner.run(job, files, PrintedLog())
            while source and not await asyncio.to_thread(unit_gone, unit_name(job["id"])):  # its clone asks
                await asyncio.sleep(0.01)
            handoff.close()
            runner.manager.close()
            return t0

        return asyncio.run(start()), unit_name(job["id"])

    def start(self, n: int, clones: int) -> dict[str, list[float]]:
        self.api.put("/repos/bench", json={"source": ""})
        self.api.put("/repos/bench/stamp", content=STAMP_SCRIPT)
        subprocess.run(["sh", "-c", f"rm -rf {SOURCE} && mkdir -p {SOURCE} && cd {SOURCE} && git init -q && "
                        "seq 1000 > numbers.txt && cp /etc/services . && git add . && "
                        "git -c user.name=b -c user.email=b@example.com commit -qm first"], check=True)  # fmt: skip
        self.api.put("/repos/benchsrc", json={"source": SOURCE})
        self.api.put("/repos/benchsrc/stamp", content=STAMP_SCRIPT)
        runner = Direct(self.config, None)  # type: ignore[arg-type]
        results: dict[str, list[float]] = {"pieter": [], "unit": [], "pieter_clone": [], "unit_clone": []}
        for i in range(n + 2):  # the first two warm caches up; the clones come in the same rounds (drift)
            rounds = [("/repos/bench/stamp", "", "")] + [("/repos/benchsrc/stamp", SOURCE, "_clone")] * (i < clones + 2)
            for path, source, suffix in rounds:
                pieter = self.pieter_job(path)
                t0, unit = self.baseline_unit(runner, source)
                wait(lambda: unit_gone(unit))  # noqa: B023
                if i >= 2:
                    results["pieter" + suffix].append(pieter)
                    results["unit" + suffix].append(first_stamp(unit_lines(unit)) - t0)
        return results

    def journald(self, lines: int) -> dict[str, Any]:
        script = f"#!/bin/sh\nseq -f '%080.0f' 1 {lines}\n".encode()
        last = b"%080d" % lines
        t0, unit = self.baseline_unit(JournaldOnly(self.config, None), script=script)  # type: ignore[arg-type]

        def last_line_in() -> bool:
            reader = journal.Reader()
            reader.add_match(_SYSTEMD_UNIT=unit)
            reader.seek_tail()
            entry = reader.get_previous()
            reader.close()
            return bool(entry) and entry.get("MESSAGE", "").encode() == last

        wait(last_line_in, timeout=300, poll=0.05)
        seconds = time.time() - t0
        count = subprocess.run(f"journalctl -q -o cat _SYSTEMD_UNIT={unit} | wc -l", shell=True, capture_output=True,
                               text=True).stdout  # fmt: skip
        usage = subprocess.run(["journalctl", "--disk-usage"], capture_output=True, text=True).stdout.strip()
        return {"seconds": seconds, "lines": int(count), "journal": usage}


def start_calls(n: int) -> dict[str, list[float]]:
    """What starting a unit over D-Bus saves against a `systemd-run` process (the runner's path until 0.2.0): the
    same small unit (`PrivateDevices=`, a shell writing the time to a file) started both ways, alternating; seconds
    from the call to the unit's first instruction."""
    stamps = Path("/run/pieter-bench-stamps")
    stamps.mkdir(exist_ok=True)
    manager = Manager()

    async def one(way: str, i: int) -> float:
        stamp = stamps / f"{way}-{i}-{time.time_ns()}"
        argv = ["/bin/sh", "-c", f"date +%s.%N > {stamp}.tmp && mv {stamp}.tmp {stamp}"]
        unit = f"pieter-bench-{way}-{stamp.name}.service"
        t0 = time.time()
        if way == "dbus":
            await manager.start_transient(unit, [prop("PrivateDevices", "b", True), prop("CollectMode", "s",
                                          "inactive-or-failed"), prop("ExecStart", "a(sasb)", [command(argv)])])  # fmt: skip
        else:
            started = await asyncio.create_subprocess_exec("systemd-run", "--no-block", "--quiet", "--collect",
                                                           f"--unit={unit}", "-p", "PrivateDevices=yes", "--", *argv)  # fmt: skip
            await started.wait()
        while not stamp.exists():
            await asyncio.sleep(0.001)
        return float(stamp.read_text()) - t0

    async def alternate() -> dict[str, list[float]]:
        found: dict[str, list[float]] = {"dbus": [], "systemd-run": []}
        for i in range(n + 3):  # the first three warm up
            for way in found:
                seconds = await asyncio.wait_for(one(way, i), 30)
                found[way] += [seconds] if i >= 3 else []
        manager.close()
        return found

    return asyncio.run(alternate())


if __name__ == "__main__":
    command_name, *args = sys.argv[1:]
    if command_name == "startcall":
        print(json.dumps(start_calls(int(args[0]))))
    else:
        bench = Bench()
        result = bench.start(int(args[0]), int(args[1])) if command_name == "start" else bench.journald(int(args[0]))
        print(json.dumps(result))
