"""3. API: `GET /repos/{repo}` (a repo with 3 scenarios) with wrk, 32 connections, 2 threads, 10 s after a 2 s
warm-up: requests/s, p50 and p99. Then `PATCH /repos/{repo}/{scenario}` the same way with the dispatcher held
(PIETER_MAX_JOBS=1 and a first job that sleeps: no API pauses the dispatcher yet), so every PATCH only queues
a job; check: as many jobs queued as PATCHes answered 201.

Baseline: bench/bare.py, a bare Sanic handler doing one Redis GET, on the same Redis, in the same run.
"""

import re
import subprocess
from pathlib import Path

import httpx

from bench.common import PREFIX, Context, Figure, wait_until

CONNECTIONS, THREADS = 32, 2
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float, script: Path | None = None) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms), requests, and non-2xx answers of one wrk run."""
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", url]
    if script is not None:
        argv[-1:-1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def found(pattern: str) -> tuple[str, ...]:
        """The groups of the line of wrk's output that pattern matches; an error naming it if none does."""
        if (match := re.search(pattern, out, re.M)) is None:
            raise ValueError(f"wrk printed no line matching {pattern!r}:\n{out}")
        return match.groups()

    def latency(pct: str) -> float:
        value, unit = found(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)$")
        return float(value) * UNITS[unit]

    return {
        "rate": float(found(r"Requests/sec:\s+([\d.]+)")[0]),
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": int(found(r"(\d+) requests in")[0]),
        "errors": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
    }


def measure(url: str, seconds: float, script: Path | None = None) -> dict[str, float]:
    wrk(url, 2, script)  # warm-up
    return wrk(url, seconds, script)


def run(ctx: Context) -> list[Figure]:
    seconds = ctx.n(10, 3)
    patch_lua = ctx.workdir / "patch.lua"
    patch_lua.write_text('wrk.method = "PATCH"\n')
    with ctx.servers("api") as (db, pieter, bare):
        api = httpx.Client(base_url=pieter.url)
        api.put("/repos/bench", json={"source": "https://example.com/bench.git"})
        for name in ("build.sh", "test.sh", "deploy.sh"):
            api.put(f"/repos/bench/{name}", content=b"#!/bin/sh\nmake\n")
        db.set("bench:bench", api.get("/repos/bench").text)  # the bare handler returns as much
        base = measure(bare.url + "/repos/bench", seconds)
        get = measure(pieter.url + "/repos/bench", seconds)
    with ctx.servers("api-patch", PIETER_MAX_JOBS="1") as (db, pieter, bare):
        api = httpx.Client(base_url=pieter.url)
        api.put("/repos/bench", json={})
        api.put("/repos/bench/hold", content=b"sleep 600\n")
        api.put("/repos/bench/noop", content=b"true\n")
        held = api.patch("/repos/bench/hold").json()["id"]
        wait_until(lambda: db.hget(f"{PREFIX}job:{held}", "state") == b"running", 20, "the holding job")
        wrk(pieter.url + "/repos/bench/noop", 2, patch_lua)  # warm-up
        before = db.zcard(PREFIX + "jobs")
        patch = wrk(pieter.url + "/repos/bench/noop", seconds, patch_lua)
        made = db.zcard(PREFIX + "jobs") - before
        all_queued = db.zcard(PREFIX + "jobs:state:queued") == db.zcard(PREFIX + "jobs") - 1
    answered = patch["requests"] - patch["errors"]
    return [
        Figure("3 API", "GET /repos/{repo}, 32 connections", "req/s", [get["rate"]], "bare GET", [base["rate"]],
               "≥ 0.6×", get["rate"] >= 0.6 * base["rate"]),
        Figure("3 API", "GET /repos/{repo} p50", "ms", [get["p50"]], "bare GET", [base["p50"]]),
        Figure("3 API", "GET /repos/{repo} p99", "ms", [get["p99"]], "bare GET", [base["p99"]]),
        Figure("3 API", "PATCH (queue a job), 32 connections", "req/s", [patch["rate"]], "bare GET", [base["rate"]],
               "every 201 a queued job", made >= answered and all_queued,
               note=f"{answered} PATCHes answered 201 ({patch['errors']} other), {made} jobs made (wrk cuts the "
                    f"last requests short: their jobs exist, their answers are not counted), all of them still "
                    f"queued: {all_queued}; p50 {patch['p50']:.2f} ms, p99 {patch['p99']:.2f} ms"),
    ]  # fmt: skip
