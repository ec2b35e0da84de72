"""1. Job start latency: PATCH → the script's first instruction (it prints `$EPOCHREALTIME`), for jobs run one
at a time, each waited for to its end. Pieter and its baseline alternate, so drift hits both alike.

Local runner: baseline `sh -c 'exec /bin/bash SCRIPT'` from Python (a bare fork/exec of the same script).
systemd runner (in the sandbox, see in_sandbox.py): baseline a unit with the same properties, started by the same D-Bus call.
Shallow clone: what a `git clone --depth 1` of a small local repo adds to the start, beside a bare clone.
"""

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import PREFIX, STAMP_SCRIPT, Context, Db, Figure, job_ended, ms, stamp, wait_until
from pieter.runners.inputs import CLONE_CONFIG

WARMUP = 2


def pieter_job(api: httpx.Client, db: Db, path: str) -> float:
    t0 = time.time()
    job_id = api.patch(path).json()["id"]
    wait_until(lambda: job_ended(db, job_id), 30, f"job {job_id}", poll=0.002)
    return stamp(db.lrange(f"{PREFIX}job:{job_id}:log", 0, -1)) - t0


def fork_exec(script: Path) -> float:
    t0 = time.time()
    out = subprocess.run(["/bin/sh", "-c", 'exec /bin/bash "$0"', script], capture_output=True, check=True).stdout
    return stamp(out.splitlines()) - t0


def bare_clone(source: Path, into: Path) -> float:
    shutil.rmtree(into, ignore_errors=True)
    t0 = time.time()
    subprocess.run(["git", "clone", "-q", "--no-local", "--depth", "1", "--", str(source), str(into)], check=True,
                   env={"GIT_CONFIG_GLOBAL": str(CLONE_CONFIG), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return time.time() - t0


def make_source(path: Path) -> Path:
    """A small git repo: two files, one commit."""
    path.mkdir(parents=True)
    (path / "numbers.txt").write_text("".join(f"{i}\n" for i in range(1000)))
    shutil.copy("/etc/services", path)
    git = ["git", "-C", str(path), "-c", "user.name=b", "-c", "user.email=b@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run([*git, *args], check=True)
    return path


def setup(api: httpx.Client, source: Path) -> None:
    api.put("/repos/bench", json={})
    api.put("/repos/bench/stamp", content=STAMP_SCRIPT)
    api.put("/repos/benchsrc", json={"source": str(source)})
    api.put("/repos/benchsrc/stamp", content=STAMP_SCRIPT)


def local(ctx: Context) -> list[Figure]:
    """Pieter as configured, the same on asyncio's own event loop instead of uvloop (a diagnostic: uvloop
    forks the whole server for each job, CPython's subprocess uses vfork), and the baseline, in turn."""
    n, clones = ctx.n(200, 20), ctx.n(50, 10)
    script = ctx.workdir / "stamp.sh"
    script.write_bytes(STAMP_SCRIPT)
    source = make_source(ctx.workdir / "src")
    found: dict[str, list[float]] = {"pieter": [], "asyncio": [], "base": [], "clone": [], "bare clone": []}
    with (
        ctx.servers("start") as (db, server, _),
        ctx.servers("start-asyncio", SANIC_USE_UVLOOP="False") as (db2, server2, _),
    ):
        with server.client() as api, server2.client() as api2:
            setup(api, source)
            setup(api2, source)
            for i in range(WARMUP + n):  # the clones come in the first rounds, beside plain jobs (drift)
                samples = {
                    "pieter": pieter_job(api, db, "/repos/bench/stamp"),
                    "base": fork_exec(script),
                    "asyncio": pieter_job(api2, db2, "/repos/bench/stamp"),
                }
                if i < WARMUP + clones:
                    samples["clone"] = pieter_job(api, db, "/repos/benchsrc/stamp") - samples["pieter"]
                    samples["bare clone"] = bare_clone(source, ctx.workdir / "clone")
                for name, value in samples.items():
                    found[name] += [value] if i >= WARMUP else []
    p, b = statistics.median(ms(found["pieter"])), statistics.median(ms(found["base"]))
    return [
        Figure("1 start", f"local runner, {n} jobs", "ms", ms(found["pieter"]), "sh -c fork/exec", ms(found["base"]),
               "≤ 2× + 5 ms", p <= 2 * b + 5),
        Figure("1 start", "local, diagnostic: the server on asyncio's loop, not uvloop", "ms", ms(found["asyncio"]),
               "sh -c fork/exec", ms(found["base"]), "≤ 2× + 5 ms", statistics.median(ms(found["asyncio"])) <= 2 * b + 5),
        Figure("1 start", f"local: a shallow clone adds, {clones} jobs", "ms", ms(found["clone"]),
               "bare git clone", ms(found["bare clone"])),
    ]  # fmt: skip


def systemd(ctx: Context) -> list[Figure]:
    n, clones = ctx.n(100, 10), ctx.n(20, 5)
    found = json.loads(ctx.in_sandbox("start", str(n), str(clones)))
    pieter, unit = found["pieter"], found["unit"]
    calls = json.loads(ctx.in_sandbox("startcall", str(n)))

    def adds(kind: str) -> list[float]:  # each clone beside the plain job of its round
        return ms([clone - plain for clone, plain in zip(found[kind + "_clone"], found[kind])])

    return [
        Figure("1 start", f"systemd runner, {n} jobs", "ms", ms(pieter), "same-properties unit", ms(unit),
               "≤ 1.3×", statistics.median(pieter) <= 1.3 * statistics.median(unit)),
        Figure("1 start", f"systemd: a shallow clone adds, {clones} jobs", "ms", adds("pieter"), "same in the unit",
               adds("unit")),
        Figure("1 start", f"systemd: a small unit started over D-Bus, {n} units", "ms", ms(calls["dbus"]),
               "the same by systemd-run", ms(calls["systemd-run"])),
    ]  # fmt: skip


def run(ctx: Context) -> list[Figure]:
    return local(ctx) + (systemd(ctx) if ctx.sandbox() else [])
