"""The dispatcher: takes jobs from the queue up to PIETER_MAX_JOBS at once, runs each with the runner,
records how it ended, and acks its queue entry only then (so a job claimed by a server that died is
found again). It also listens for cancels, which may come from any server sharing the Redis.

Its loops (claim, cancel, beat, expiry) never end on an error: each is logged with its traceback, the loop backs off
and goes on, and `status` (shown by `GET /`) says what is wrong meanwhile.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import redis.exceptions

from pieter import artifacts, workspaces
from pieter.config import Config
from pieter.errors import NotFound
from pieter.handoff import Handoff
from pieter.joblog import JobLog
from pieter.models import Job, JobSpec, Result, State, effective_settings
from pieter.runners import inputs
from pieter.runners.base import Outcome, Runner
from pieter.store import CANCEL_CHANNEL, HOST_BEAT_SECONDS, REDIS_DOWN, RETRY_SECONDS, Store, retrying
from pieter.workspaces import JobFiles

log = logging.getLogger(__name__)
EXPIRE_EVERY = 300.0
BACKOFF_MAX = 10.0  # seconds between two tries of a loop that keeps failing


class Dispatcher:
    def __init__(self, store: Store, runner: Runner, config: Config):
        self.store = store
        self.runner = runner
        self.config = config
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.trouble: dict[str, str] = {}  # loop → what went wrong in its last round, while it goes wrong
        self._recovered = False
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        rounds = {"claim": self._claim_round, "cancel": self._cancel_round, "beat": self._beat_round}
        if self.config.keep_days:
            rounds["expiry"] = self._expire_round
        self._loops = [asyncio.create_task(self._forever(name, round_)) for name, round_ in rounds.items()]

    async def stop(self) -> None:
        """Stop taking jobs; the runner decides what becomes of running ones (local: they end, lost)."""
        for task in [*self._loops, *self.tasks.values()]:
            task.cancel()
        await asyncio.gather(*self._loops, *self.tasks.values(), return_exceptions=True)

    @property
    def idle(self) -> bool:
        return not self.tasks

    @property
    def status(self) -> str:
        """'ok', or what keeps a loop from working (the claim loop's: this host takes no jobs meanwhile)."""
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.trouble.items())) or "ok"

    async def _forever(self, name: str, round_: Callable[[], Awaitable[None]]) -> None:
        """Run a loop's round again and again, whatever it raises."""
        backoff = RETRY_SECONDS
        while True:
            try:
                await round_()
                self.trouble.pop(name, None)
                backoff = RETRY_SECONDS
                continue
            except REDIS_DOWN as e:  # no backoff: the loop goes on as soon as Redis is back
                self.trouble[name] = f"Redis unavailable ({e})"
                log.warning("the %s loop waits: Redis unavailable (%s)", name, e)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except Exception as e:
                self.trouble[name] = f"{type(e).__name__}: {e}"[:500]
                log.exception("the %s loop failed; trying again in %.0f s", name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _claim_round(self) -> None:
        if not self._recovered:
            await self._recover()
            self._recovered = True
        free = self.config.max_jobs - len(self.tasks)
        if free <= 0:
            await asyncio.wait(self.tasks.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            return
        for entry, job_id in await self.store.claim(self.config.host, free, block_ms=1000):
            self._launch(entry, job_id, self._run(entry, job_id))

    def _launch(self, entry: str, job_id: int, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: the dispatcher failed", job_id)
                await JobLog(self.store, job_id, []).write(
                    [b"pieter: internal error while running this job; the server log has the details"]
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
            if job_id not in self.tasks:
                self._launch(entry, job_id, self._run(entry, job_id))

    async def _run(self, entry: str, job_id: int) -> None:
        try:
            job = await retrying(lambda: self.store.job_spec(job_id), "reading a job")
        except NotFound:  # deleted while queued
            await retrying(lambda: self.store.ack(entry), "acking a job")
            return
        if job["state"] != State.QUEUED.value:  # cancelled while queued
            await retrying(lambda: self.store.ack(entry), "acking a job")
            return
        private = await retrying(lambda: self.store.repo_private(job["repo"]), "reading the repo's secrets")
        files = workspaces.job_files(self.config.state_dir, job_id)
        async with self._owning(files):
            outcome = await self._start(entry, job, files, private)
            if outcome is not None:
                await self._finish(entry, job, files, outcome)

    async def _start(self, entry: str, job: JobSpec, files: JobFiles, private: dict[str, Any]) -> Outcome | None:
        """Write the job's files and run it to its end; None when it was cancelled before it started."""
        handoff = Handoff(files.handoff, inputs.clone_secrets(job, private), partial(self.runner.owns, job["id"]))
        try:
            try:
                await self._prepare(job, private)
                await handoff.open()
            except OSError as e:
                await JobLog(self.store, job["id"], []).write([f"pieter: cannot prepare the workspace: {e}".encode()])
                return Outcome(Result.ERROR)
            if not await retrying(lambda: self.store.start_job(job["id"], self.config.host), "starting a job"):
                await retrying(lambda: self.store.ack(entry), "acking a job")
                return None
            return await self.runner.run(job, files, JobLog(self.store, job["id"], inputs.masks(files)))
        finally:
            handoff.close()

    async def _prepare(self, job: JobSpec, private: dict[str, Any]) -> None:
        """Write the job's files: a few small ones of the server's own, written on the loop, where a thread hop
        would cost more than the writes (bench throughput, 1000 jobs: 138 jobs/s through threads, 193 here).
        Only an earlier job's tree of the same id, of any size, is removed in a thread."""
        state_dir, job_id = self.config.state_dir, job["id"]
        if workspaces.left_behind(workspaces.job_files(state_dir, job_id)):
            await asyncio.to_thread(workspaces.remove_all, state_dir, job_id)
        inputs.write(workspaces.make(state_dir, job_id, self.runner.make_workspace), job, private)

    async def _reattach(self, entry: str, job: Job) -> None:
        files = workspaces.job_files(self.config.state_dir, job["id"])
        async with self._owning(files):
            outcome = await self.runner.reattach(job, files, JobLog(self.store, job["id"], inputs.masks(files)))
            await self._finish(entry, job, files, outcome)

    @contextlib.asynccontextmanager
    async def _owning(self, files: JobFiles) -> AsyncIterator[None]:
        """Remove what the server handed a job (parameters, secrets, a deploy key) when its run here ends, on every
        path but one: a server that stops while the job runs leaves it to the next one, which reattaches to the job
        (a unit outlives the server, and its collector reads the masks)."""
        stopping = False
        try:
            yield
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            if not stopping:  # the server's own few files, as in _prepare: on the loop
                workspaces.remove_inputs(files)

    async def _finish(self, entry: str, job: Job, files: JobFiles, outcome: Outcome) -> None:
        """Record the outcome (unless a cancel got there first), ack the entry, apply retention."""
        await retrying(lambda: self.store.finish_job(job["id"], outcome.result, outcome.rc),
                       "recording a job's result")  # fmt: skip
        if entry:
            await retrying(lambda: self.store.ack(entry), "acking a job")
        limit = self.config.artifacts_max_bytes
        removed = await asyncio.to_thread(artifacts.remove_if_over, files, limit) if artifacts.any_left(files) else 0
        if removed:
            await JobLog(self.store, job["id"], []).write([f"pieter: the job's artifacts ({removed} bytes) were "
                                                           f"removed: they exceed PIETER_ARTIFACTS_MAX_BYTES={limit}".encode()])  # fmt: skip
        await self._apply_retention(job)

    async def _apply_retention(self, job: Job) -> None:
        """Keep a scenario's newest `keep_jobs` jobs, and the newest `PIETER_KEEP_WORKSPACES` workspaces."""
        repo, scenario, state_dir = job["repo"], job["scenario"], self.config.state_dir
        keep = effective_settings(job, self.config).keep_jobs
        for old in await retrying(lambda: self.store.prune(repo, scenario, keep), "pruning jobs"):
            await asyncio.to_thread(workspaces.remove_all, state_dir, old)
        beyond = await retrying(lambda: self.store.workspaces_beyond(repo, scenario, job["id"],
                                                                     self.config.keep_workspaces), "pruning workspaces")  # fmt: skip
        for old in beyond:
            await asyncio.to_thread(workspaces.remove_workspace, state_dir, old)

    async def _beat_round(self) -> None:
        """Tell every server sharing the Redis (the overview, /metrics) that this host is up, and its slots."""
        await self.store.beat(self.config.host, self.config.max_jobs)
        await asyncio.sleep(HOST_BEAT_SECONDS)

    async def _expire_round(self) -> None:
        """Remove the ended jobs older than PIETER_KEEP_DAYS, then wait a few minutes."""
        cutoff = time.time() - self.config.keep_days * 86400
        for old in await self.store.expire(cutoff):
            await asyncio.to_thread(workspaces.remove_all, self.config.state_dir, old)
        await asyncio.sleep(EXPIRE_EVERY)

    async def cancel(self, job_id: int) -> None:
        """Stop a job if it runs here (its record already says `cancelled`). The API calls this directly, so that
        a job of this host stops at once even while the cancel channel reconnects; the channel brings the same
        cancel to every host, this one too, where a second stop changes nothing."""
        if job_id in self.tasks:
            await self.runner.cancel(job_id)

    async def _cancel_round(self) -> None:
        """Cancels published by any server sharing this Redis, until the subscription ends."""
        try:
            async with self.store.redis.pubsub() as pubsub:
                await pubsub.subscribe(CANCEL_CHANNEL)
                self.trouble.pop("cancel", None)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await self._cancel_message(message["data"])
        except redis.exceptions.TimeoutError:
            return  # a quiet channel outlasts the client's socket timeout: listen again

    async def _cancel_message(self, data: bytes) -> None:
        try:
            job_id = int(data)
        except ValueError:
            log.warning("ignored a message on %s that is not a job id: %r", CANCEL_CHANNEL, data[:80])
            return
        await self.cancel(job_id)
