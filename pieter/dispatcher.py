"""The dispatcher: takes jobs from the queue up to PIETER_MAX_JOBS at once, runs each with the runner,
records how it ended, and acks its queue entry only then (so a job claimed by a server that died is
found again). It also listens for cancels, which may come from any server sharing the Redis.
"""

import asyncio
import logging
import time
from functools import partial
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.exceptions

from pieter import workspaces
from pieter.config import Config
from pieter.errors import NotFound
from pieter.handoff import Handoff
from pieter.models import Result, State, mask_secrets
from pieter.runners.base import Outcome, Runner
from pieter.store import CANCEL_CHANNEL, REDIS_DOWN, Store

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_SECONDS = 1.0
EXPIRE_EVERY = 300.0


async def retrying(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a Redis step until Redis answers: a job's output and result must not be lost to an outage."""
    while True:
        try:
            return await step()
        except REDIS_DOWN as e:
            log.warning("Redis unavailable while %s (%s); retrying", what, e)
            await asyncio.sleep(RETRY_SECONDS)


class Dispatcher:
    def __init__(self, store: Store, runner: Runner, config: Config):
        self.store = store
        self.runner = runner
        self.config = config
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.paused = False  # benchmarks pause it to measure the API alone
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._loops = [asyncio.create_task(loop()) for loop in (self._claim_loop, self._cancel_loop, self._expire_loop)]

    async def stop(self) -> None:
        """Stop taking jobs; the runner decides what becomes of running ones (local: they end, lost)."""
        for task in [*self._loops, *self.tasks.values()]:
            task.cancel()
        await asyncio.gather(*self._loops, *self.tasks.values(), return_exceptions=True)

    @property
    def idle(self) -> bool:
        return not self.tasks

    async def _claim_loop(self) -> None:
        await retrying(self._recover, "recovering this host's jobs")
        while True:
            try:
                free = self.config.max_jobs - len(self.tasks)
                if free <= 0 or self.paused:
                    await asyncio.wait([*self.tasks.values()] or [asyncio.sleep(0.2)], timeout=1.0,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    continue
                for entry, job_id in await self.store.claim(self.config.host, free, block_ms=1000):
                    self._launch(entry, job_id, self._run(entry, job_id))
            except REDIS_DOWN as e:
                log.warning("Redis unavailable (%s); the queue waits", e)
                await asyncio.sleep(RETRY_SECONDS)

    def _launch(self, entry: str, job_id: int, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: the dispatcher failed", job_id)
                await self._log(
                    job_id, [b"pieter: internal error while running this job; the server log has the details"]
                )
                await retrying(lambda: self.store.finish_job(job_id, Result.ERROR), "recording an error")
                await retrying(lambda: self.store.ack(entry), "acking a job")
            finally:
                self.tasks.pop(job_id, None)

        self.tasks[job_id] = asyncio.create_task(guarded())

    async def _recover(self) -> None:
        """At start: follow this host's jobs left running by an earlier server, and take up the queue
        entries it claimed but never finished."""
        await self.store.prepare()
        pending = dict((job_id, entry) for entry, job_id in
                       await self.store.claim(self.config.host, 10_000, 0, own_pending=True))  # fmt: skip
        for job in await self.store.jobs_by_id(await self.store.job_ids(State.RUNNING)):
            if job["host"] == self.config.host and job["id"] not in self.tasks:
                entry = pending.pop(job["id"], "")
                self._launch(entry, job["id"], self._reattach(entry, job))
        for job_id, entry in pending.items():
            self._launch(entry, job_id, self._run(entry, job_id))

    async def _run(self, entry: str, job_id: int) -> None:
        try:
            job = await retrying(lambda: self.store.job_spec(job_id), "reading a job")
        except NotFound:
            job = None
        if job is None or job["state"] != State.QUEUED.value:  # deleted or cancelled while queued
            await retrying(lambda: self.store.ack(entry), "acking a job")
            return
        private = await retrying(lambda: self.store.repo_private(job["repo"]), "reading the repo's secrets")
        files = workspaces.job_files(self.config.state_dir, job_id)
        handoff = Handoff(files.handoff, workspaces.clone_secrets(job, private), partial(self.runner.owns, job_id))
        try:
            workspaces.prepare(self.config.state_dir, job, self.runner.make_workspace, private)
            await handoff.open()
        except OSError as e:
            handoff.close()
            await self._log(job_id, [f"pieter: cannot prepare the workspace: {e}".encode()])
            await self._finish(entry, job, Outcome(Result.ERROR))
            return
        try:
            if not await retrying(lambda: self.store.start_job(job_id, self.config.host), "starting a job"):
                await retrying(lambda: self.store.ack(entry), "acking a job")
                return
            masks = workspaces.secrets_to_mask(files)
            outcome = await self.runner.run(job, files, lambda lines: self._log(job_id, mask_secrets(lines, masks)))
        finally:
            handoff.close()
        await self._finish(entry, job, outcome)

    async def _reattach(self, entry: str, job: dict[str, Any]) -> None:
        outcome = await self.runner.reattach(job, lambda lines: self._log(job["id"], lines))
        await self._finish(entry, job, outcome)

    async def _log(self, job_id: int, lines: list[bytes]) -> None:
        await retrying(lambda: self.store.append_log(job_id, lines), "writing a job's log")

    async def _finish(self, entry: str, job: dict[str, Any], outcome: Outcome) -> None:
        """Record the outcome (unless a cancel got there first), ack the entry, apply retention."""
        await retrying(lambda: self.store.finish_job(job["id"], outcome.result, outcome.rc, **outcome.extra),
                       "recording a job's result")  # fmt: skip
        if entry:
            await retrying(lambda: self.store.ack(entry), "acking a job")
        # What the server handed the job (parameters, secrets, a deploy key) is not kept past its end
        await asyncio.to_thread(workspaces.remove_tree, workspaces.job_files(self.config.state_dir, job["id"]).job_dir)
        await self._limit_artifacts(job["id"])
        await self._apply_retention(job)

    async def _limit_artifacts(self, job_id: int) -> None:
        files = workspaces.job_files(self.config.state_dir, job_id)
        size = sum(a["size"] for a in await asyncio.to_thread(workspaces.artifacts, files))
        if size > self.config.artifacts_max_bytes:
            await asyncio.to_thread(workspaces.remove_tree, files.artifacts)
            await self._log(job_id, [f"pieter: the job's artifacts ({size} bytes) were removed: they exceed "
                                     f"PIETER_ARTIFACTS_MAX_BYTES={self.config.artifacts_max_bytes}".encode()])  # fmt: skip

    async def _apply_retention(self, job: dict[str, Any]) -> None:
        """Keep a scenario's newest `keep_jobs` jobs, and the newest `PIETER_KEEP_WORKSPACES` workspaces."""
        repo, scenario, state_dir = job["repo"], job["scenario"], self.config.state_dir
        keep = int(job["settings"].get("keep_jobs") or self.config.keep_jobs)
        for old in await retrying(lambda: self.store.prune(repo, scenario, keep), "pruning jobs"):
            await asyncio.to_thread(workspaces.remove, state_dir, old)
        beyond = await retrying(lambda: self.store.workspaces_beyond(repo, scenario, job["id"],
                                                                     self.config.keep_workspaces), "pruning workspaces")  # fmt: skip
        for old in beyond:
            await asyncio.to_thread(workspaces.remove_workspace, state_dir, old)

    async def _expire_loop(self) -> None:
        """Every few minutes, remove the ended jobs older than PIETER_KEEP_DAYS."""
        while self.config.keep_days:
            try:
                cutoff = time.time() - self.config.keep_days * 86400
                for old in await self.store.expire(cutoff):
                    await asyncio.to_thread(workspaces.remove, self.config.state_dir, old)
            except REDIS_DOWN as e:
                log.warning("Redis unavailable (%s); expiry waits", e)
            await asyncio.sleep(EXPIRE_EVERY)

    async def cancel(self, job_id: int) -> None:
        """Stop a job if it runs here (its record already says `cancelled`)."""
        if job_id in self.tasks:
            await self.runner.cancel(job_id)

    async def _cancel_loop(self) -> None:
        """Cancels published by any server sharing this Redis, for the jobs that run on this host."""
        while True:
            try:
                async with self.store.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            await self.cancel(int(message["data"]))
            except redis.exceptions.TimeoutError:
                continue  # a quiet channel outlasts the client's socket timeout: listen again
            except REDIS_DOWN as e:
                log.warning("Redis unavailable (%s); cancels wait", e)
                await asyncio.sleep(RETRY_SECONDS)
