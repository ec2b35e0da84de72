"""2. Job throughput: 1,000 trivial jobs queued at once (through `Store.create_job`, before the server starts),
run by the local runner at PIETER_MAX_JOBS = nproc until the queue is empty: jobs/s from the first script's
start to the last one's end (the scripts append their stamps to a file, which pruning does not touch).
Checks: every job ran exactly once and succeeded (none lost), and at no moment did more than PIETER_MAX_JOBS
jobs run (by the server's started/finished, and by the scripts' stamps).
Passes: retention raised to keep every record for the checks (PIETER_KEEP_JOBS, workspaces as configured);
the default retention; and a diagnostic with nothing to prune (jobs nor workspaces), which shows what the
retention step costs per job with a long queue behind it.

Baseline: the same script by `sh -c` fork/exec from a pool of PIETER_MAX_JOBS threads.
"""

import asyncio
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import PREFIX, Context, Figure, ms, wait_until
from pieter.store import QUEUE, Store, connect


def script(out: Path) -> bytes:
    """Prints its start, then appends `id start end` to `out` (one write: lines never interleave)."""
    return f'#!/bin/bash\nt=$EPOCHREALTIME\necho "T $t"\necho "$PIETER_JOB_ID $t $EPOCHREALTIME" >>{out}\n'.encode()


def stamps_file(ctx: Context, name: str) -> Path:
    out = ctx.workdir / f"{name}.stamps"
    out.touch(mode=0o666)
    out.chmod(0o666)  # local jobs of a root server run as `nobody`
    return out


def queue(url: str, body: bytes, n: int) -> None:
    async def go() -> None:
        store = Store(connect(url))
        await store.prepare()
        await store.put_repo("bench", {})
        await store.put_scenario("bench", "trivial", body, {})
        for start in range(0, n, 100):
            await asyncio.gather(*(store.create_job("bench", "trivial", {}) for _ in range(start, min(n, start + 100))))
        await store.redis.close()
        await store.redis.connection_pool.disconnect()  # or its connections complain once the loop is gone

    asyncio.run(go())


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at any moment (an end at t comes before a start at t)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def read_stamps(out: Path, n: int) -> dict[str, Any]:
    """jobs/s from the first start to the last end; how many of the n jobs ran exactly once."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for line in out.read_text().splitlines():
        job_id, began, ended = line.split()
        runs.setdefault(job_id, []).append((float(began), float(ended)))
    intervals = [r for rs in runs.values() for r in rs]
    first, last = min(a for a, _ in intervals), max(b for _, b in intervals)
    once = sum(len(rs) == 1 for rs in runs.values())
    return {"rate": n / (last - first), "once": once, "most": most_at_once(intervals)}


def pieter_pass(ctx: Context, name: str, n: int, limit: int, **settings: str) -> dict[str, Any]:
    out = stamps_file(ctx, name)
    with ctx.servers(name, before=lambda url: queue(url, script(out), n), PIETER_MAX_JOBS=str(limit),
                     **settings) as (db, _, _):  # fmt: skip
        wait_until(lambda: db.xlen(QUEUE) == 0, 600, "the queue to empty", poll=0.05)
        pipe = db.pipeline(transaction=False)
        for job_id in db.zrange(PREFIX + "jobs", 0, -1):
            pipe.hmget(f"{PREFIX}job:{int(job_id)}", "state", "started", "finished")
        records = pipe.execute()
    server = [(float(started), float(finished)) for _, started, finished in records]
    return {**read_stamps(out, n), "records": len(records), "success": sum(s == b"success" for s, _, _ in records),
            "per_job": [f - s for s, f in server], "most_server": most_at_once(server)}  # fmt: skip


def baseline(ctx: Context, n: int, limit: int) -> dict[str, Any]:
    out = stamps_file(ctx, "baseline")
    path = ctx.workdir / "trivial.sh"
    path.write_bytes(script(out))

    def one(i: int) -> float:
        t0 = time.monotonic()
        subprocess.run(["/bin/sh", "-c", 'exec /bin/bash "$0"', str(path)], capture_output=True, check=True,
                       env={"PIETER_JOB_ID": str(i)})  # fmt: skip
        return time.monotonic() - t0

    with ThreadPoolExecutor(limit) as pool:
        per_job = list(pool.map(one, range(n)))
    return {**read_stamps(out, n), "per_job": per_job}


def run(ctx: Context) -> list[Figure]:
    n, limit = ctx.n(1000, 200), os.cpu_count() or 1
    kept = pieter_pass(ctx, "throughput", n, limit, PIETER_KEEP_JOBS=str(n))
    pruned = pieter_pass(ctx, "throughput-pruned", n, limit)
    free = pieter_pass(ctx, "throughput-free", n, limit, PIETER_KEEP_JOBS=str(n), PIETER_KEEP_WORKSPACES=str(n))
    base = baseline(ctx, n, limit)
    held = max(kept["most"], kept["most_server"]) <= limit
    whole = kept["once"] == kept["success"] == n
    return [
        Figure("2 throughput", f"{n} jobs queued at once, {limit} at a time", "jobs/s", [kept["rate"]],
               "sh -c pool", [base["rate"]], "limit held, 0 lost", held and whole,
               note=f"{kept['once']} of {n} jobs ran exactly once, {kept['success']} recorded `success`; at most "
                    f"{kept['most_server']} ran at once by the server's records, {kept['most']} by the scripts' "
                    f"stamps (limit {limit}). PIETER_KEEP_JOBS={n} keeps every record for these checks."),
        Figure("2 throughput", "per job, start to end (server's record)", "ms", ms(kept["per_job"]),
               "sh -c", ms(base["per_job"])),
        Figure("2 throughput", f"{n} jobs, default retention (50 jobs, 5 workspaces)", "jobs/s", [pruned["rate"]],
               "sh -c pool", [base["rate"]], "limit held, 0 lost", pruned["once"] == n and pruned["most"] <= limit,
               note=f"{pruned['once']} of {n} jobs ran exactly once (by the stamps; "
                    f"{pruned['records']} records are left after pruning)"),
        Figure("2 throughput", f"diagnostic: {n} jobs, nothing to prune (KEEP_JOBS = KEEP_WORKSPACES = {n})", "jobs/s",
               [free["rate"]], "sh -c pool", [base["rate"]], "limit held, 0 lost",
               free["once"] == free["success"] == n and free["most"] <= limit),
    ]  # fmt: skip
