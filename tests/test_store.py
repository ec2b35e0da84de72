"""The store's verbs against a real Redis, in-process: each state change is one Lua call that checks the state it
finds, the first end recorded wins, and every index follows the record."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from pieter.errors import Conflict, NotFound
from pieter.models import Result, State
from pieter.store import LOG_CUT_MARKER, Store, connect


def run(redis_url: str, test: Callable[[Store], Awaitable[Any]], **store_args: Any) -> Any:
    async def main() -> Any:
        store = Store(connect(redis_url), **store_args)
        try:
            await store.prepare()
            await store.put_repo("r", {})
            await store.put_scenario("r", "s", b"true\n", {})
            return await test(store)
        finally:
            await store.redis.close()

    return asyncio.run(main())


def state_indexes(db: redis.Redis, job_id: int) -> dict[str, list[str]]:
    """In which state index (global, per repo, per scenario) the job is listed."""
    found: dict[str, list[str]] = {}
    for state in State:
        keys = [f"pieter:jobs:state:{state.value}", f"pieter:jobs:repo:r:state:{state.value}",
                f"pieter:jobs:scenario:r:s:state:{state.value}"]  # fmt: skip
        listed = [key for key in keys if db.zscore(key, job_id) is not None]
        if listed:
            found[state.value] = listed
    return found


def test_a_job_moves_queued_running_ended_with_its_indexes(redis_server, db):
    async def test(store: Store) -> list[Any]:
        job_id = await store.create_job("r", "s", {"A": "1"})
        seen = [state_indexes(db, job_id)]
        assert await store.start_job(job_id, "host-a")
        seen.append(state_indexes(db, job_id))
        assert await store.finish_job(job_id, Result.EXIT_CODE, 3)
        seen.append(state_indexes(db, job_id))
        return [job_id, seen, await store.job(job_id)]

    job_id, seen, job = run(redis_server.url, test)
    assert [list(s) for s in seen] == [["queued"], ["running"], ["fail"]]
    assert all(len(keys) == 3 for s in seen for keys in s.values()), "global, repo and scenario index alike"
    assert (job["state"], job["result"], job["rc"], job["host"]) == ("fail", "exit-code", 3, "host-a")
    assert job["duration"] == pytest.approx(job["finished"] - job["started"], abs=0.001)
    assert db.zscore("pieter:jobs:scenario:r:s:ended", job_id) is not None


@pytest.mark.parametrize("first", [Result.CANCELLED, Result.SUCCESS, Result.LOST])
def test_the_first_end_recorded_wins(redis_server, db, first):
    async def test(store: Store) -> list[Any]:
        job_id = await store.create_job("r", "s", {})
        await store.start_job(job_id, "host-a")
        if first is Result.CANCELLED:
            await store.cancel_job(job_id)
        else:
            assert await store.finish_job(job_id, first)
        later = await store.finish_job(job_id, Result.EXIT_CODE, 1)
        with pytest.raises(Conflict):
            await store.cancel_job(job_id)
        return [later, await store.job(job_id), state_indexes(db, job_id)]

    later, job, indexes = run(redis_server.url, test)
    assert later is False
    assert (job["result"], job["rc"]) == (first.value, None)
    assert list(indexes) == [first.state.value]


def test_a_cancelled_queued_job_is_not_started(redis_server, db):
    async def test(store: Store) -> list[Any]:
        job_id = await store.create_job("r", "s", {})
        await store.cancel_job(job_id)
        return [await store.start_job(job_id, "host-a"), await store.job(job_id)]

    started, job = run(redis_server.url, test)
    assert started is False and job["state"] == "cancelled" and job["host"] is None


def test_deleting_a_job_leaves_no_index_behind(redis_server, db):
    async def test(store: Store) -> int:
        job_id = await store.create_job("r", "s", {})
        await store.start_job(job_id, "host-a")
        await store.finish_job(job_id, Result.SUCCESS, 0)
        await store.workspaces_beyond("r", "s", job_id, 5)
        await store.delete_job(job_id)
        with pytest.raises(NotFound):
            await store.job(job_id)
        return job_id

    job_id = run(redis_server.url, test)
    for key in db.scan_iter("pieter:jobs*"):
        assert db.zscore(key, job_id) is None, key


def test_the_log_is_cut_once_at_its_cap(redis_server, db):
    async def test(store: Store) -> list[bytes]:
        job_id = await store.create_job("r", "s", {})
        await store.append_log(job_id, [b"x" * 40] * 3)  # 123 bytes with newlines: the third passes the cap
        await store.append_log(job_id, [b"more"])
        return await store.log(job_id)

    assert run(redis_server.url, test, log_max_bytes=100) == [b"x" * 40, b"x" * 40, LOG_CUT_MARKER]


def test_two_journal_followers_never_write_a_line_twice(redis_server, db):
    async def test(store: Store) -> list[Any]:
        job_id = await store.create_job("r", "s", {})
        first = await store.append_log_after(job_id, "", "c1", [b"one"])
        stale = await store.append_log_after(job_id, "", "c1", [b"one"])  # the other follower, one step behind
        cursor = await store.log_cursor(job_id)
        second = await store.append_log_after(job_id, cursor, "c2", [b"two"])
        return [first, stale, second, await store.log(job_id)]

    assert run(redis_server.url, test) == [True, False, True, [b"one", b"two"]]


def test_prune_keeps_a_scenarios_newest_ended_jobs(redis_server, db):
    async def test(store: Store) -> list[Any]:
        ids = [await store.create_job("r", "s", {}) for _ in range(4)]
        for job_id in ids[:3]:
            await store.finish_job(job_id, Result.SUCCESS, 0)
        pruned = await store.prune("r", "s", keep=2)
        total, left = await store.list_jobs("r", "s", None, 0, 10)
        return [ids, pruned, [job["id"] for job in left]]

    ids, pruned, left = run(redis_server.url, test)
    assert pruned == [ids[0]], "the oldest ended job goes; a queued one is never pruned"
    assert left == ids[:0:-1]
