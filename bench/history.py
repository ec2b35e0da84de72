"""6. History scale: 1k, then 10k, then 100k finished jobs in Redis (5 scenarios of one repo, 9 in 10
succeeded, 5 log lines each), written by the Store's own Lua scripts (create, start, finish, append to the log)
so the key layout is the real one; each batch is one MULTI/EXEC that also trims the queue stream, so the
running server never sees the jobs as queued. Retention is raised (nothing is pruned: no job runs).

At each size, 100 rounds (fewer, at least 20, once they take 8 s) of sequential requests, interleaved:
`GET /jobs?limit=50`, `GET /repos/{repo}`, and `GET /jobs?repo=R&state=success&limit=50` (a filtered page,
which intersects two indexes); baseline the bare GET server, in the same rounds. Redis memory per job: growth of `used_memory` ÷ jobs, beside the bytes of one
job's record and log (the raw data).
"""

import asyncio
import json
import time

import httpx

from bench.common import PREFIX, Context, Figure, ms, wait_until
from pieter.store import LOG_CUT_MARKER, QUEUE, Store, connect

SIZES = (1_000, 10_000, 100_000)
SCENARIOS = [f"s{i}.sh" for i in range(5)]
SCRIPT = b"#!/bin/sh\nset -eu\n" + b"".join(b"echo step %d && make -j2 target-%d\n" % (i, i) for i in range(8))
LOG = [b"%02d:00 some output of the build, as long as a typical line of a build log" % i for i in range(5)]
BATCH = 1000
TIME_BOX = 8  # seconds of requests per size at most (at least 20 rounds)


async def add_jobs(url: str, count: int) -> None:
    """Add `count` finished jobs, BATCH per MULTI/EXEC, through the Store's scripts."""
    store = Store(connect(url), 16 * 1024 * 1024)
    scripts = store._scripts  # the Store's own Lua (its methods await each call: too slow for 100k jobs)
    next_id = int(await store.redis.get(PREFIX + "job:next") or 0)
    for start in range(0, count, BATCH):
        now = time.time()
        async with store.redis.pipeline(transaction=True) as pipe:
            for job_id in range(next_id + start + 1, next_id + min(count, start + BATCH) + 1):
                scenario = SCENARIOS[job_id % len(SCENARIOS)]
                ok = job_id % 10 != 0
                await scripts["create_job"](args=[PREFIX, "hist", scenario, "env", "{}", "timestamp", now], client=pipe)
                await scripts["transition"](args=[PREFIX, job_id, "queued", "running", "host", "bench",
                                                  "started", now + 1], client=pipe)  # fmt: skip
                await scripts["transition"](args=[PREFIX, job_id, "running", "success" if ok else "fail",
                                                  "result", "success" if ok else "exit-code", "rc", 0 if ok else 1,
                                                  "finished", now + 30], client=pipe)  # fmt: skip
                await scripts["append_log"](args=[PREFIX, job_id, store.log_max_bytes, LOG_CUT_MARKER, "-", "-", *LOG],
                                            client=pipe)  # fmt: skip
            pipe.xtrim(QUEUE, maxlen=0)
            await pipe.execute()
    await store.redis.close()
    await store.redis.connection_pool.disconnect()  # or its connections complain once the loop is gone


def timed(api: httpx.Client, path: str) -> float:
    t0 = time.perf_counter()
    response = api.get(path)
    elapsed = time.perf_counter() - t0
    assert response.status_code == 200, response.text
    return elapsed


def run(ctx: Context) -> list[Figure]:
    rounds = ctx.n(100, 30)
    paths = {"GET /jobs?limit=50": "/jobs?limit=50", "GET /repos/{repo}": "/repos/hist",
             "GET /jobs?repo&state, limit=50": "/jobs?repo=hist&state=success&limit=50"}  # fmt: skip
    figures = []
    with ctx.servers("history", PIETER_KEEP_JOBS="1000000") as (db, pieter, bare):
        api, base = httpx.Client(base_url=pieter.url), httpx.Client(base_url=bare.url)
        api.put("/repos/hist", json={"source": "https://example.com/hist.git"})
        for scenario in SCENARIOS:
            api.put(f"/repos/hist/{scenario}", content=SCRIPT)
        db.set("bench:hist", api.get("/repos/hist").text)
        empty = db.info("memory")["used_memory"]
        have = 0
        for size in SIZES:
            asyncio.run(add_jobs(pieter.env["PIETER_REDIS_URL"], size - have))
            have = size
            wait_until(lambda: api.get("/").json()["counts"]["jobs"] == have, 10, "the jobs")  # noqa: B023
            per_job = (db.info("memory")["used_memory"] - empty) / size
            times: dict[str, list[float]] = {name: [] for name in [*paths, "bare"]}
            began = time.monotonic()
            for i in range(rounds):
                if i >= 20 and time.monotonic() - began > TIME_BOX:
                    break  # a slow query: enough samples
                times["bare"].append(timed(base, "/repos/hist"))
                for name, path in paths.items():
                    times[name].append(timed(api, path))
            for name in paths:
                p50 = ms(times[name])
                figures.append(Figure("6 history", f"{name} at {size // 1000}k jobs", "ms", p50, "bare GET",
                                      ms(times["bare"]), "< 10 ms p50, flat", sorted(p50)[len(p50) // 2] < 10))  # fmt: skip
            record = db.hgetall(f"{PREFIX}job:{have}")
            raw = sum(len(k) + len(v) for k, v in record.items()) + sum(
                map(len, db.lrange(f"{PREFIX}job:{have}:log", 0, -1))
            )
            figures.append(Figure("6 history", f"Redis memory per job at {size // 1000}k jobs", "bytes", [per_job],
                                  "raw record + log", [raw]))  # fmt: skip
        total = api.get("/jobs?limit=1").json()["total"]
    figures[-1].note = f"{total} jobs listed; a job record: {json.dumps(sorted(k.decode() for k in record))}"
    return figures
