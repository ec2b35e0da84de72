"""4. Log ingest: a job printing 1,000,000 numbered lines of 80 bytes (`seq -f %080.0f`): seconds from the PATCH
until every line is in Redis, lines lost (the log is read back and compared, line by line; the job must end
`success`), and the server's
peak RSS (VmHWM of a server started for this). PIETER_LOG_MAX_BYTES is raised to 200 MB (the default 16 MiB
would cut the log).

Baselines: local runner, the same lines through `seq … | cat > /dev/null`; systemd runner (sandbox), the same
lines through journald alone: a unit with a job's properties less the collector, until its last line is in
the journal (in_sandbox.py journald).
"""

import json
import subprocess
import time
from typing import Any

import httpx

from bench.common import PREFIX, Context, Db, Figure, memory_mb, wait_until

LINES = 1_000_000
SEQ = f"seq -f '%080.0f' 1 {LINES}"
SCRIPT = f"#!/bin/sh\n{SEQ}\n".encode()


def ingest(api: httpx.Client, db: Db, timeout: float) -> dict[str, Any]:
    """PATCH the flood job; seconds until all its lines are in Redis, then the lines found intact."""
    api.put("/repos/bench", json={})
    api.put("/repos/bench/flood", content=SCRIPT)
    key = None
    t0 = time.time()
    job_id = api.patch("/repos/bench/flood").json()["id"]
    key = f"{PREFIX}job:{job_id}"
    try:
        wait_until(lambda: db.llen(key + ":log") >= LINES, timeout, "every line in Redis", poll=0.02)
        seconds = time.time() - t0
    except TimeoutError:
        seconds = float("nan")
    wait_until(lambda: db.hget(key, "state") not in (b"queued", b"running"), timeout, "the job's end", poll=0.1)
    intact, expected, others = 0, 1, []
    for start in range(0, db.llen(key + ":log"), 100_000):
        for line in db.lrange(key + ":log", start, start + 99_999):
            if line == b"%080d" % expected:
                intact += 1
                expected += 1
            else:
                others.append(line.decode(errors="replace")[:100])
    result = db.hget(key, "result")
    return {"seconds": seconds, "lost": LINES - intact, "found": db.llen(key + ":log"), "others": others,
            "result": result.decode() if result else None}  # fmt: skip


def described(found: dict[str, Any]) -> str:
    others = found["others"]
    shown = "; other lines: " + ", ".join(f"`{line}`" for line in others[:3]) if others else ""
    return (f"the job's result: {found['result']}; {found['found']} lines in Redis, {found['lost']} of the "
            f"numbered lines lost, {len(others)} others{shown}")  # fmt: skip


def cat_baseline(runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(["sh", "-c", f"{SEQ} | cat >/dev/null"], check=True)
        times.append(time.monotonic() - t0)
    return times


def local(ctx: Context) -> list[Figure]:
    with ctx.servers("ingest", PIETER_LOG_MAX_BYTES="200000000") as (db, pieter, _):
        assert pieter.process is not None
        before = memory_mb(pieter.process.pid)
        with pieter.client() as api:
            found = ingest(api, db, timeout=300)
        peak = memory_mb(pieter.process.pid, "VmHWM")
    lost = found["lost"]
    return [
        Figure("4 log ingest", "local: 1M lines into Redis", "s", [found["seconds"]], "seq piped to cat >/dev/null",
               cat_baseline(), "0 lost, ends `success`", lost == 0 and found["result"] == "success", note="local: " + described(found)),
        Figure("4 log ingest", "local: peak server RSS", "MB", [peak], "its RSS before", [before], "< 150 MB",
               peak < 150),
    ]  # fmt: skip


def systemd(ctx: Context) -> list[Figure]:
    sandbox = ctx.sandbox()
    assert sandbox is not None
    journald = json.loads(ctx.in_sandbox("journald", str(LINES)))
    sandbox.sh("systemctl restart pieter-test.service")  # a fresh server: its VmHWM is this job's peak
    pid = sandbox.sh("systemctl show -p MainPID --value pieter-test.service").strip()
    before = memory_mb(0, status=sandbox.sh(f"cat /proc/{pid}/status"))
    with sandbox.client() as api:
        found = ingest(api, sandbox.redis(), timeout=300)
    peak = memory_mb(0, "VmHWM", status=sandbox.sh(f"cat /proc/{pid}/status"))
    lost = found["lost"]
    ratio_ok = found["seconds"] <= 2 * journald["seconds"]
    return [
        Figure("4 log ingest", "systemd: 1M lines into Redis", "s", [found["seconds"]], "journald alone",
               [journald["seconds"]], "≤ 2× (≥ 50% of the rate), 0 lost, ends `success`", ratio_ok and lost == 0 and found["result"] == "success",
               note=f"systemd: {described(found)}; journald alone kept "
                    f"{journald['lines']} of {LINES} lines; {journald['journal']}"),
        Figure("4 log ingest", "systemd: peak server RSS", "MB", [peak], "its RSS before", [before], "< 150 MB",
               peak < 150),
    ]  # fmt: skip


def run(ctx: Context) -> list[Figure]:
    return local(ctx) + (systemd(ctx) if ctx.sandbox() else [])
