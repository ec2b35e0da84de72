"""The dispatcher in-process, against a real Redis and the local runner: no server process, answers in seconds.

Two regressions pinned here: a claim loop that died silently on an unexpected Redis error (the queue then never
moved again), and a job's files (its secrets) left on disk when it was cancelled between being prepared and
being started.
"""

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pieter.config import Config
from pieter.dispatcher import Dispatcher
from pieter.runners.local import LocalRunner
from pieter.store import Store, connect


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pieter-dispatcher-"))
    path.chmod(0o755)  # jobs of a root test run as nobody
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_with(redis_url: str, state_dir: Path, test: Callable[[Store, Dispatcher], Any], store_class: type = Store,
             **settings: Any) -> None:  # fmt: skip
    """Run `test(store, dispatcher)` with a started dispatcher, stopped afterwards."""
    config = Config(redis_url=redis_url, state_dir=state_dir, runner="local", host="test-host", **settings)

    async def main() -> None:
        store = store_class(connect(redis_url))
        dispatcher = Dispatcher(store, LocalRunner(config), config)
        await store.put_repo("r", {"secrets": '{"TOKEN": "s3cr3t-token"}'})
        await store.put_scenario("r", "s", b'echo "job $PIETER_JOB_ID"\n', {})
        dispatcher.start()
        try:
            await test(store, dispatcher)
        finally:
            await dispatcher.stop()
            await store.redis.close()

    asyncio.run(main())


async def until(check: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{check} never held"
        await asyncio.sleep(0.02)


async def ended(store: Store, job_id: int) -> dict[str, Any]:
    async def done() -> bool:
        return (await store.job(job_id))["state"] not in ("queued", "running")

    await until(done)
    return dict(await store.job(job_id))


def test_claim_loop_survives_an_unexpected_redis_error(redis_server, db, state_dir, caplog):
    caplog.set_level(logging.WARNING)

    async def test(store: Store, dispatcher: Dispatcher) -> None:
        first = await store.create_job("r", "s", {})
        assert (await ended(store, first))["result"] == "success"
        db.delete("pieter:queue")
        db.set("pieter:queue", "something else wrote this key")

        async def troubled() -> bool:
            return dispatcher.status != "ok"

        await until(troubled)
        assert dispatcher.status.startswith("claim: ResponseError"), dispatcher.status
        await asyncio.sleep(3)
        db.delete("pieter:queue")
        second = await store.create_job("r", "s", {})
        job = await ended(store, second)
        assert (job["result"], job["tail"]) == ("success", [f"job {second}"])
        assert dispatcher.status == "ok"

    run_with(redis_server.url, state_dir, test)
    failures = [r for r in caplog.records if r.getMessage().startswith("the claim loop failed")]
    assert failures and failures[0].exc_info, "the error is logged with its traceback"


class CancelledAtStart(Store):
    """A cancel that lands after the job's files are written and before its record says `running`."""

    async def start_job(self, job_id: int, host: str, **fields: Any) -> bool:
        await self.cancel_job(job_id)
        return await super().start_job(job_id, host, **fields)


def test_a_job_cancelled_before_it_starts_leaves_no_files(redis_server, db, state_dir):
    async def test(store: Store, dispatcher: Dispatcher) -> None:
        ids = [await store.create_job("r", "s", {}) for _ in range(3)]
        for job_id in ids:
            assert (await ended(store, job_id))["state"] == "cancelled"
        await until(lambda: asyncio.sleep(0, dispatcher.idle))

    run_with(redis_server.url, state_dir, test, store_class=CancelledAtStart)
    assert list((state_dir / "jobs").iterdir()) == [], "the jobs' parameters and secrets stay on disk"


def test_jobs_run_in_queue_order_and_retention_keeps_the_newest(redis_server, db, state_dir):
    ids: list[int] = []

    async def test(store: Store, dispatcher: Dispatcher) -> None:
        ids.extend([await store.create_job("r", "s", {}) for _ in range(5)])
        jobs = [await ended(store, job_id) for job_id in ids[-2:]]
        assert all(job["result"] == "success" for job in jobs)
        assert jobs[0]["finished"] <= jobs[1]["started"], "one at a time (PIETER_MAX_JOBS=1), oldest first"
        assert [job["id"] for job in (await store.list_jobs("r", "s", None, 0, 10))[1]] == ids[:-3:-1]

    run_with(redis_server.url, state_dir, test, max_jobs=1, keep_jobs=2, keep_workspaces=1)
    assert [p.name for p in (state_dir / "workspaces").iterdir()] == [str(ids[-1])], "PIETER_KEEP_WORKSPACES=1"
    assert sorted(p.name for p in (state_dir / "artifacts").iterdir()) == [str(i) for i in ids[-2:]]
    assert list((state_dir / "jobs").iterdir()) == []
