"""7. The original's promise under load: "the daemon never consumes more than a couple of percent of your CPU".

Pieter's own CPU while jobs run, in % of one core over a window of 30 s (`--quick`: 5 s) once every job runs:
2 jobs each printing 1,000 lines/s; 8 jobs that only sleep; 1 job printing 20,000 lines/s. Local runner: the
server process (all its threads; the jobs are its children, not counted). systemd runner (sandbox): the server's
process and the processes it started and reaped (from /proc/PID/stat); the units' collectors run when a job ends,
outside the window, and are not counted.
Baseline: the jobs' own CPU over the same window (what they print with `os.times`), to show the work Pieter follows.
"""

import os
import time
from collections.abc import Callable

import httpx

from bench.common import Context, Db, Figure, cpu_seconds, job_ended, wait_until

PRINTER = """#!/usr/bin/python3
import os, sys, time
rate, seconds, n = {rate}, {seconds}, 0
t0 = time.monotonic()
while (now := time.monotonic() - t0) < seconds:
    while n < now * rate:
        print("line", n)
        n += 1
    sys.stdout.flush()
    time.sleep(0.01)
print("cpu", sum(os.times()[:2]))
"""
SLEEPER = """#!/usr/bin/python3
import os, time
time.sleep({seconds})
print("cpu", sum(os.times()[:2]))
"""
WORKLOADS = [("2 jobs × 1,000 lines/s", 2, PRINTER, 1000, True), ("8 jobs that sleep", 8, SLEEPER, 0, True),
             ("1 job × 20,000 lines/s", 1, PRINTER, 20000, False)]  # fmt: skip


def measure(
    api: httpx.Client, db: Db, reading: Callable[[], float], script: str, jobs: int, window: float
) -> tuple[float, float]:
    """Start the jobs, then Pieter's CPU % over the window (from `reading`, seconds of CPU) and the jobs' own."""
    api.put("/repos/bench", json={"source": ""})
    api.put("/repos/bench/cpu", content=script.encode())
    ids = [api.patch("/repos/bench/cpu").json()["id"] for _ in range(jobs)]
    wait_until(lambda: all(db.hget(f"pieter:job:{i}", "state") == b"running" for i in ids), 60, "the jobs run")
    time.sleep(1.0)
    before, t0 = reading(), time.monotonic()
    time.sleep(window)
    used, elapsed = reading() - before, time.monotonic() - t0
    for job_id in ids:
        wait_until(lambda: job_ended(db, job_id), 120, "the job's end", poll=0.1)  # noqa: B023
    own = sum(float(next(line for line in db.lrange(f"pieter:job:{i}:log", -3, -1) if line.startswith(b"cpu "))[4:])
              for i in ids)  # fmt: skip
    return 100 * used / elapsed, 100 * own / (window + 2)


def figures(ctx: Context, runner: str, api: httpx.Client, db: Db, reading: Callable[[], float]) -> list[Figure]:
    window = ctx.n(30, 5)
    found = []
    for name, jobs, script, rate, promised in WORKLOADS:
        pieter, own = measure(api, db, reading, script.format(rate=rate, seconds=window + 2), jobs, window)
        found.append(Figure("daemon cpu", f"{runner}, {name}", "% of a core", [pieter], "the jobs' own CPU", [own],
                            target="≤ 2 %" if promised else "", met=pieter <= 2 if promised else None))  # fmt: skip
    return found


def run(ctx: Context) -> list[Figure]:
    found: list[Figure] = []
    with ctx.servers("daemon-cpu", PIETER_MAX_JOBS="8") as (db, pieter, _):
        assert pieter.process is not None
        pid = pieter.process.pid
        with pieter.client() as api:
            found += figures(ctx, "local", api, db, lambda: cpu_seconds(pid))
    sandbox = ctx.sandbox()
    if sandbox is None:
        return found

    def server_cpu() -> float:  # utime, stime and its reaped children's, in clock ticks
        fields = "$(cut -d' ' -f14-17 /proc/$(systemctl show -P MainPID pieter-test.service)/stat)"
        return int(sandbox.sh(f"set -- {fields}; echo $(($1 + $2 + $3 + $4))")) / os.sysconf("SC_CLK_TCK")

    with sandbox.client() as api:
        found += figures(ctx, "systemd", api, sandbox.redis(), server_cpu)
    return found
