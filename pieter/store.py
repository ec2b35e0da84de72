"""The Redis layout. Every key is spelled here, and every change of state is one Lua call or MULTI/EXEC.

Keys (prefix `pieter:`; values readable in redis-cli):
    schema                      string   layout version (SCHEMA_VERSION)
    repos                       zset     repo names, score 0 (lexical order)
    repo:{repo}                 hash     name source created updated latest_job, and what no GET returns:
                                         secret (webhook), secrets (JSON: name → value), deploy_key, known_hosts
    repo:{repo}:scenarios       zset     scenario names, score 0
    scenario:{repo}:{scenario}  hash     script (raw bytes) created updated latest_job set:{setting}...
    job:next                    string   last job id given out (INCR)
    job:{id}                    hash     the job record (see JOB_FIELDS), script and source snapshots,
                                         log_bytes (-1 once the log was cut at its cap)
    job:{id}:log                list     the job's output lines, in order
    jobs                        zset     every job id, score = id
    jobs:repo:{repo}            zset     job ids of a repo
    jobs:scenario:{repo}:{scn}  zset     job ids of a scenario
    jobs:state:{state}          zset     job ids in each state
    jobs:repo:{repo}:state:{state}, jobs:scenario:{repo}:{scn}:state:{state}
                                zset     the same per repo and per scenario, so every filter of GET /jobs
                                         is one sorted set (no intersection on a request path)
    jobs:scenario:{repo}:{scn}:ended       zset  its ended jobs, for retention (PIETER_KEEP_JOBS)
    jobs:scenario:{repo}:{scn}:workspaces  zset  its ended jobs whose workspace is still on disk
    queue                       stream   one entry {job: id} per queued job; consumer group `runners`,
                                         one consumer per host; acked when the job has ended
    cancel                      pubsub   job ids cancelled, for the host that runs them
    tokens                      hash     API token name → SHA-256 hex digest of its secret (see tokens.py)
    events                      stream   {job, state, repo, scenario} per change of a job's state, capped near
                                         EVENTS_KEPT entries: what a page that reconnects missed (Last-Event-ID)
    events                      pubsub   the new entry's id, at once, for the pages' event streams
    stats:results               hash     result → jobs that ended so (a counter: pruning does not lower it)
    stats:duration_seconds, stats:queue_wait_seconds
                                hash     histograms of ended jobs' run time and of queue waits: bucket upper
                                         bound (`le`, cumulative) → count, `+Inf`, `sum`
    hosts                       hash     host → its slots (PIETER_MAX_JOBS); hosts:seen zset, score = last beat
    session:{sha256}            string   a page sign-in: the digest of the token it was made with; expires
Only job records hold state; indexes are kept in step by the same Lua call that changes a record.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions

from pieter.errors import BadRequest, Conflict, NotFound
from pieter.models import ENDED, Job, JobSpec, Result, State, redact_source

log = logging.getLogger(__name__)
T = TypeVar("T")
# What a Redis outage looks like to a client: a 503 for requests, a retry for jobs' writes.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError)
RETRY_SECONDS = 1.0


async def retrying(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a Redis step until Redis answers: a job's output and result must not be lost to an outage."""
    while True:
        try:
            return await step()
        except REDIS_DOWN as e:
            log.warning("Redis unavailable while %s (%s); retrying", what, e)
            await asyncio.sleep(RETRY_SECONDS)


SCHEMA_VERSION = "1"
PREFIX = "pieter:"
QUEUE = PREFIX + "queue"
GROUP = "runners"
CANCEL_CHANNEL = PREFIX + "cancel"
LOG_CUT_MARKER = b"[pieter: log cut here: it reached PIETER_LOG_MAX_BYTES]"

JOB_FIELDS = (
    "id", "repo", "scenario", "host", "state", "result", "rc", "env", "source", "settings",
    "timestamp", "started", "finished", "duration", "unit", "invocation", "cpu_seconds", "memory_peak", "commit",
)  # fmt: skip
INT_FIELDS = {"id", "rc", "memory_peak"}
FLOAT_FIELDS = {"timestamp", "started", "finished", "duration", "cpu_seconds"}

EVENTS = PREFIX + "events"
EVENTS_KEPT = 10_000
BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)  # seconds: the histograms' bucket bounds
HOST_BEAT_SECONDS = 15  # a host that has not beaten for 4 of these is not listed
SESSION_SECONDS = 12 * 3600

# Lua: what every change of a job's state also does, in the same call: an entry in the events stream, its id
# published (the pages' event streams), and the counters and histograms of /metrics.
_NOTIFY = """
local function observe(key, value)
  for _, le in ipairs({%s}) do
    if value <= le then redis.call('HINCRBY', key, tostring(le), 1) end
  end
  redis.call('HINCRBY', key, '+Inf', 1)
  redis.call('HINCRBYFLOAT', key, 'sum', string.format('%%.3f', value))
end
local function notify(prefix, key, id, to)
  local f = redis.call('HMGET', key, 'repo', 'scenario', 'timestamp', 'started', 'duration', 'result')
  if to == 'running' and tonumber(f[3] or '') and tonumber(f[4] or '') then
    observe(prefix .. 'stats:queue_wait_seconds', math.max(0, tonumber(f[4]) - tonumber(f[3])))
  elseif to == 'success' or to == 'fail' or to == 'cancelled' then
    redis.call('HINCRBY', prefix .. 'stats:results', f[6] or 'unknown', 1)
    if tonumber(f[5] or '') then observe(prefix .. 'stats:duration_seconds', tonumber(f[5])) end
  end
  local entry = redis.call('XADD', prefix .. 'events', 'MAXLEN', '~', '%d', '*',
                           'job', id, 'state', to, 'repo', f[1], 'scenario', f[2])
  redis.call('PUBLISH', prefix .. 'events', entry)
end
""" % (", ".join(map(str, BUCKETS)), EVENTS_KEPT)

# Lua: move job ARGV[2] from one of the states ARGV[3] (space separated) to ARGV[4], setting field pairs
# ARGV[5..]. Returns 'ok', or the state it found ('' if there is no such job) so the caller can say why.
_MOVE = (
    _NOTIFY
    + """
local function state_keys(prefix, repo, scenario, state)
  return {prefix .. 'jobs:state:' .. state, prefix .. 'jobs:repo:' .. repo .. ':state:' .. state,
          prefix .. 'jobs:scenario:' .. repo .. ':' .. scenario .. ':state:' .. state}
end
local function move(prefix, id, allowed, to, fields)
  local key = prefix .. 'job:' .. id
  local f = redis.call('HMGET', key, 'state', 'repo', 'scenario')
  local cur = f[1]
  if not cur then return '' end
  if not string.find(' ' .. allowed .. ' ', ' ' .. cur .. ' ', 1, true) then return cur end
  for _, k in ipairs(state_keys(prefix, f[2], f[3], cur)) do redis.call('ZREM', k, id) end
  for _, k in ipairs(state_keys(prefix, f[2], f[3], to)) do redis.call('ZADD', k, id, id) end
  redis.call('HSET', key, 'state', to)
  for i = 1, #fields, 2 do redis.call('HSET', key, fields[i], fields[i + 1]) end
  if to ~= 'queued' and to ~= 'running' then
    redis.call('ZADD', prefix .. 'jobs:scenario:' .. f[2] .. ':' .. f[3] .. ':ended', id, id)
    local started = tonumber(redis.call('HGET', key, 'started') or '')
    local finished = tonumber(redis.call('HGET', key, 'finished') or '')
    if started and finished then redis.call('HSET', key, 'duration', string.format('%.3f', finished - started)) end
  end
  notify(prefix, key, id, to)
  return 'ok'
end
"""
)
# Cancel every queued job of a scenario (ARGV: prefix, repo, scenario, now).
_CANCEL_QUEUED = """
local function cancel_queued(prefix, repo, scenario, now)
  local ids = redis.call('ZRANGE', prefix .. 'jobs:scenario:' .. repo .. ':' .. scenario, 0, -1)
  local cancelled = {}
  for _, id in ipairs(ids) do
    if move(prefix, id, 'queued', 'cancelled', {'result', 'cancelled', 'finished', now}) == 'ok' then
      table.insert(cancelled, id)
    end
  end
  return cancelled
end
"""
TRANSITION = _MOVE + "return move(ARGV[1], ARGV[2], ARGV[3], ARGV[4], {unpack(ARGV, 5)})"

CREATE_JOB = (
    _MOVE
    + """
local prefix, repo, scenario = ARGV[1], ARGV[2], ARGV[3]
local skey = prefix .. 'scenario:' .. repo .. ':' .. scenario
local rkey = prefix .. 'repo:' .. repo
if redis.call('EXISTS', skey) == 0 then return 0 end
local id = redis.call('INCR', prefix .. 'job:next')
local key = prefix .. 'job:' .. id
local settings = {}
local flat = redis.call('HGETALL', skey)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 4) == 'set:' then settings[string.sub(flat[i], 5)] = flat[i + 1] end
end
redis.call('HSET', key, 'id', id, 'repo', repo, 'scenario', scenario, 'state', 'queued', 'script', redis.call('HGET', skey, 'script'),
  'source', redis.call('HGET', rkey, 'source') or '', 'settings', cjson.encode(settings), unpack(ARGV, 4))
redis.call('ZADD', prefix .. 'jobs', id, id)
redis.call('ZADD', prefix .. 'jobs:repo:' .. repo, id, id)
redis.call('ZADD', prefix .. 'jobs:scenario:' .. repo .. ':' .. scenario, id, id)
for _, k in ipairs(state_keys(prefix, repo, scenario, 'queued')) do redis.call('ZADD', k, id, id) end
redis.call('XADD', prefix .. 'queue', '*', 'job', id)
redis.call('HSET', skey, 'latest_job', id)
redis.call('HSET', rkey, 'latest_job', id)
notify(prefix, key, id, 'queued')
return id
"""
)

PUT_SCENARIO = """
local prefix, repo, scenario, script, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rkey = prefix .. 'repo:' .. repo
local skey = prefix .. 'scenario:' .. repo .. ':' .. scenario
if redis.call('EXISTS', rkey) == 0 then return -1 end
local created = redis.call('EXISTS', skey) == 0
if created then redis.call('HSET', skey, 'created', now) end
redis.call('HSET', skey, 'script', script, 'updated', now)
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', skey, 'set:' .. ARGV[i])
  else redis.call('HSET', skey, 'set:' .. ARGV[i], ARGV[i + 1]) end
end
redis.call('ZADD', rkey .. ':scenarios', 0, scenario)
if created then return 1 else return 0 end
"""

# Create or update repo ARGV[2] with field pairs ARGV[5..]; answers what a GET would read (fields ARGV[4],
# a JSON list, and the scenarios), so a concurrent DELETE cannot turn the PUT's answer into a 404.
PUT_REPO = """
local prefix, repo, now = ARGV[1], ARGV[2], ARGV[3]
local rkey = prefix .. 'repo:' .. repo
local created = redis.call('EXISTS', rkey) == 0
if created then redis.call('HSET', rkey, 'name', repo, 'created', now, 'source', '') end
redis.call('HSET', rkey, 'updated', now)
for i = 5, #ARGV, 2 do redis.call('HSET', rkey, ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', prefix .. 'repos', 0, repo)
return {created and 1 or 0, redis.call('HMGET', rkey, unpack(cjson.decode(ARGV[4]))),
        redis.call('ZRANGE', rkey .. ':scenarios', 0, -1)}
"""

DELETE_SCENARIO = (
    _MOVE
    + _CANCEL_QUEUED
    + """
local prefix, repo, scenario, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('DEL', prefix .. 'scenario:' .. repo .. ':' .. scenario) == 0 then return false end
redis.call('ZREM', prefix .. 'repo:' .. repo .. ':scenarios', scenario)
return cancel_queued(prefix, repo, scenario, now)
"""
)

DELETE_REPO = (
    _MOVE
    + _CANCEL_QUEUED
    + """
local prefix, repo, now = ARGV[1], ARGV[2], ARGV[3]
local rkey = prefix .. 'repo:' .. repo
if redis.call('DEL', rkey) == 0 then return false end
local cancelled = {}
for _, scenario in ipairs(redis.call('ZRANGE', rkey .. ':scenarios', 0, -1)) do
  redis.call('DEL', prefix .. 'scenario:' .. repo .. ':' .. scenario)
  for _, id in ipairs(cancel_queued(prefix, repo, scenario, now)) do table.insert(cancelled, id) end
end
redis.call('DEL', rkey .. ':scenarios')
redis.call('ZREM', prefix .. 'repos', repo)
return cancelled
"""
)

DELETE_JOB = (
    _MOVE
    + """
local prefix, id = ARGV[1], ARGV[2]
local key = prefix .. 'job:' .. id
local f = redis.call('HMGET', key, 'repo', 'scenario', 'state')
if not f[3] then return 0 end
redis.call('ZREM', prefix .. 'jobs', id)
redis.call('ZREM', prefix .. 'jobs:repo:' .. f[1], id)
redis.call('ZREM', prefix .. 'jobs:scenario:' .. f[1] .. ':' .. f[2], id)
for _, k in ipairs(state_keys(prefix, f[1], f[2], f[3])) do redis.call('ZREM', k, id) end
local skey = prefix .. 'jobs:scenario:' .. f[1] .. ':' .. f[2]
redis.call('ZREM', skey .. ':ended', id)
redis.call('ZREM', skey .. ':workspaces', id)
redis.call('DEL', key, key .. ':log')
return 1
"""
)

# Append lines ARGV[7..] to job ARGV[2]'s log up to ARGV[3] bytes; past it, one marker line (ARGV[4]) and no
# more. A journal follower passes the cursor its lines start after (ARGV[5]) and the one they end at (ARGV[6]):
# when another writer got there first the stored cursor differs and nothing is written (-1), so two
# followers of one job (the server and the unit's collector) never write a line twice. '-' skips the check.
APPEND_LOG = """
local key = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 0 end
if ARGV[5] ~= '-' then
  if (redis.call('HGET', key, 'cursor') or '') ~= ARGV[5] then return -1 end
  redis.call('HSET', key, 'cursor', ARGV[6])
end
local used = tonumber(redis.call('HGET', key, 'log_bytes') or '0')
if used < 0 then return 0 end
local cap, batch = tonumber(ARGV[3]), {}
for i = 7, #ARGV do
  used = used + #ARGV[i] + 1
  if used > cap then
    table.insert(batch, ARGV[4])
    used = -1
    break
  end
  table.insert(batch, ARGV[i])
end
if #batch > 0 then redis.call('RPUSH', key .. ':log', unpack(batch)) end
redis.call('HSET', key, 'log_bytes', used)
return #batch
"""


REPO_FIELDS = ("source", "created", "updated", "latest_job", "secret", "secrets", "deploy_key", "known_hosts")


def repo_wire(name: str, values: list[bytes | None], scenarios: list[bytes]) -> dict[str, Any]:
    """A repo as the API shows it: its secrets reduced to whether they are set (and their names)."""
    source, created, updated, latest, secret, secrets, key, known = values
    return {
        "name": name,
        "source": redact_source(_text(source)) or None,
        "scenarios": [_text(s) for s in scenarios],
        "latest_job": int(latest) if latest else None,
        "created": float(created or 0),
        "updated": float(updated or 0),
        "webhook_secret": bool(secret),
        "secrets": sorted(json.loads(secrets or "{}")),
        "deploy_key": bool(key),
        "known_hosts": _text(known),
    }


def connect(url: str) -> "aioredis.Redis[bytes]":
    """A client that fails fast, so a Redis outage becomes a 503 rather than a hung request."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=10)


def _text(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _num(field: str, raw: bytes | None) -> Any:
    if raw is None or raw == b"":
        return None
    if field in INT_FIELDS:
        return int(raw)
    return float(raw) if field in FLOAT_FIELDS else raw.decode()


class Store:
    """The repos, scenarios, jobs, logs and queue, as one Redis holds them."""

    def __init__(self, client: "aioredis.Redis[bytes]", log_max_bytes: int = 16 * 1024 * 1024):
        self.redis = client
        self.log_max_bytes = log_max_bytes
        self._scripts = {
            name: client.register_script(body)
            for name, body in {
                "transition": TRANSITION,
                "create_job": CREATE_JOB,
                "put_scenario": PUT_SCENARIO,
                "put_repo": PUT_REPO,
                "delete_scenario": DELETE_SCENARIO,
                "delete_repo": DELETE_REPO,
                "delete_job": DELETE_JOB,
                "append_log": APPEND_LOG,
            }.items()
        }

    async def _run(self, script: str, *args: Any) -> Any:
        """Call a Lua script; each takes the key prefix first and builds its keys from it (one Redis, no cluster)."""
        return await self._scripts[script](args=[PREFIX, *args])

    async def prepare(self) -> None:
        """Check the layout version (writing it into an empty database) and make the queue's consumer group."""
        # SET ... GET answers the value it found (types-redis says bool)
        found: bytes | None = await self.redis.set(PREFIX + "schema", SCHEMA_VERSION, nx=True, get=True)  # type: ignore[assignment]
        if found is not None and found.decode() != SCHEMA_VERSION:
            raise RuntimeError(f"Redis holds Pieter data of layout {found.decode()}, this is {SCHEMA_VERSION}")
        await self.ensure_group()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # Repos
    async def repo_names(self) -> list[str]:
        return [_text(n) for n in await self.redis.zrange(PREFIX + "repos", 0, -1)]

    async def repo(self, name: str) -> dict[str, Any]:
        key = f"{PREFIX}repo:{name}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, *REPO_FIELDS)
            pipe.zrange(key + ":scenarios", 0, -1)
            values, scenarios = await pipe.execute()
        if values[1] is None:
            raise NotFound(f"no repo named {name!r}")
        return repo_wire(name, values, scenarios)

    async def put_repo(self, name: str, fields: dict[str, str]) -> tuple[bool, dict[str, Any]]:
        """Create or update a repo with the given fields, keeping the others: (created?, the repo as GET shows it)."""
        flat = [x for pair in fields.items() for x in pair]
        created, values, scenarios = await self._run("put_repo", name, time.time(), json.dumps(REPO_FIELDS), *flat)
        return bool(created), repo_wire(name, values, scenarios)

    async def repo_private(self, name: str) -> dict[str, Any]:
        """What a repo keeps from every GET: its webhook secret, secret variables, deploy key, known hosts."""
        secret, secrets, key, known = await self.redis.hmget(
            f"{PREFIX}repo:{name}", "secret", "secrets", "deploy_key", "known_hosts"
        )
        return {"secret": _text(secret), "secrets": json.loads(secrets or "{}"), "deploy_key": _text(key),
                "known_hosts": _text(known)}  # fmt: skip

    async def delete_repo(self, name: str) -> list[int]:
        """Remove a repo and its scenarios; returns the queued jobs this cancelled."""
        cancelled = await self._run("delete_repo", name, time.time())
        if cancelled is None:
            raise NotFound(f"no repo named {name!r}")
        return [int(i) for i in cancelled]

    # Scenarios
    async def scenario(self, repo: str, name: str) -> dict[str, Any]:
        flat = await self.redis.hgetall(f"{PREFIX}scenario:{repo}:{name}")
        if not flat:
            await self.repo(repo)  # 404 names the repo when that is what is missing
            raise NotFound(f"no scenario named {name!r} in repo {repo!r}")
        return {
            "repo": repo,
            "name": name,
            "script": flat[b"script"],
            "settings": {k[4:].decode(): v.decode() for k, v in flat.items() if k.startswith(b"set:")},
            "latest_job": int(flat[b"latest_job"]) if b"latest_job" in flat else None,
            "created": float(flat[b"created"]),
            "updated": float(flat[b"updated"]),
        }

    async def put_scenario(self, repo: str, name: str, script: bytes, settings: dict[str, str]) -> bool:
        """Store a script byte for byte with its settings ('' clears one); True when it was created."""
        flat = [x for pair in settings.items() for x in pair]
        created = await self._run("put_scenario", repo, name, script, time.time(), *flat)
        if created == -1:
            raise NotFound(f"no repo named {repo!r}")
        return bool(created)

    async def delete_scenario(self, repo: str, name: str) -> list[int]:
        cancelled = await self._run("delete_scenario", repo, name, time.time())
        if cancelled is None:
            await self.repo(repo)
            raise NotFound(f"no scenario named {name!r} in repo {repo!r}")
        return [int(i) for i in cancelled]

    # Jobs
    async def create_job(self, repo: str, scenario: str, env: dict[str, str], commit: str = "") -> int:
        """One step: a new id, the record with snapshots of script, source and settings, the queue entry.
        `commit`: check out that commit rather than the head of the default branch."""
        now = time.time()
        job_id = await self._run(
            "create_job", repo, scenario, "env", json.dumps(env), "timestamp", now, "commit", commit
        )
        if not job_id:
            await self.scenario(repo, scenario)  # raises the 404 that fits
            raise NotFound(f"no scenario named {scenario!r} in repo {repo!r}")
        return int(job_id)

    async def job(self, job_id: int) -> Job:
        """The job's wire form, with the tail of its output."""
        jobs = await self.jobs_by_id([job_id])
        if not jobs:
            raise NotFound(f"no job {job_id}")
        return jobs[0]

    async def jobs_by_id(self, ids: Iterable[int], tail: int = 10) -> list[Job]:
        ids = list(ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(f"{PREFIX}job:{job_id}", *JOB_FIELDS)
                pipe.lrange(f"{PREFIX}job:{job_id}:log", -tail, -1)
            replies = await pipe.execute()
        jobs: list[Job] = []
        for values, lines in zip(replies[::2], replies[1::2], strict=True):
            if values[0] is None:
                continue  # deleted meanwhile
            job: dict[str, Any] = {f: _num(f, v) for f, v in zip(JOB_FIELDS, values, strict=True)}
            job["name"] = job["id"]
            job["env"] = json.loads(job["env"] or "{}")
            job["settings"] = json.loads(job["settings"] or "{}")
            job["source"] = redact_source(job["source"]) if job["source"] else None
            job["tail"] = [line.decode(errors="replace") for line in lines]
            jobs.append(cast(Job, job))
        return jobs

    async def job_spec(self, job_id: int) -> JobSpec:
        """What a runner needs to run the job: the wire form plus the raw source and the script snapshot."""
        job = await self.job(job_id)
        script, source = await self.redis.hmget(f"{PREFIX}job:{job_id}", "script", "source")
        return cast(JobSpec, {**job, "raw_source": _text(source), "script": script or b""})

    async def list_jobs(
        self, repo: str | None, scenario: str | None, state: str | None, offset: int, limit: int
    ) -> tuple[int, list[Job]]:
        """Newest first; each combination of filters has its own index, read directly."""
        if scenario and not repo:
            raise BadRequest("filtering by scenario needs the repo too (?repo=R&scenario=S)")
        key = PREFIX + "jobs"
        if repo and scenario:
            key = f"{PREFIX}jobs:scenario:{repo}:{scenario}"
        elif repo:
            key = f"{PREFIX}jobs:repo:{repo}"
        if state:
            key = f"{key}:state:{state}" if repo else f"{PREFIX}jobs:state:{state}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zrevrange(key, offset, offset + max(limit, 1) - 1)  # (an end of -1 would mean "all")
            total, ids = await pipe.execute()
        ids = ids[:limit]
        return total, await self.jobs_by_id(int(i) for i in ids)

    async def job_ids(self, state: State) -> list[int]:
        return [int(i) for i in await self.redis.zrange(f"{PREFIX}jobs:state:{state.value}", 0, -1)]

    async def transition(self, job_id: int, allowed: Iterable[State], to: State, **fields: Any) -> str:
        """Move a job between states if it is in one of `allowed`; returns 'ok' or the state it was in."""
        flat = [str(x) if not isinstance(x, bytes) else x for pair in fields.items() for x in pair]
        found = await self._run("transition", job_id, " ".join(s.value for s in allowed), to.value, *flat)
        return _text(found)

    async def start_job(self, job_id: int, host: str, **fields: Any) -> bool:
        """queued → running on this host; False when the job is no longer queued (cancelled meanwhile)."""
        found = await self.transition(job_id, [State.QUEUED], State.RUNNING, host=host, started=time.time(), **fields)
        return found == "ok"

    async def finish_job(self, job_id: int, result: Result, rc: int | None = None, **fields: Any) -> bool:
        """Record how a job ended, once: the first writer wins, a later one changes nothing (returns False)."""
        if rc is not None:
            fields["rc"] = rc
        found = await self.transition(
            job_id, [State.QUEUED, State.RUNNING], result.state, result=result.value, finished=time.time(), **fields
        )
        return found == "ok"

    async def cancel_job(self, job_id: int) -> None:
        """Cancel a queued or running job and tell every host (the one running it stops it);
        Conflict when it has already ended."""
        found = await self.transition(
            job_id, [State.QUEUED, State.RUNNING], State.CANCELLED, result=Result.CANCELLED.value, finished=time.time()
        )
        if found == "":
            raise NotFound(f"no job {job_id}")
        if found != "ok":
            raise Conflict(f"job {job_id} has already ended ({found})")
        await self.redis.publish(CANCEL_CHANNEL, str(job_id))

    async def delete_job(self, job_id: int) -> None:
        if not await self._run("delete_job", job_id):
            raise NotFound(f"no job {job_id}")

    async def prune(self, repo: str, scenario: str, keep: int) -> list[int]:
        """Remove a scenario's ended jobs beyond its newest `keep` ended ones; returns their ids (for their files)."""
        old = await self.redis.zrevrange(f"{PREFIX}jobs:scenario:{repo}:{scenario}:ended", keep, -1)
        return [int(i) for i in old if await self._run("delete_job", int(i))]

    async def workspaces_beyond(self, repo: str, scenario: str, job_id: int, keep: int) -> list[int]:
        """Count an ended job's workspace as on disk; returns the jobs whose workspaces are now beyond the
        scenario's newest `keep` (the caller removes them: each is returned once)."""
        key = f"{PREFIX}jobs:scenario:{repo}:{scenario}:workspaces"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {str(job_id): job_id})
            pipe.zrevrange(key, keep, -1)
            pipe.zremrangebyrank(key, 0, -keep - 1)
            _, beyond, _ = await pipe.execute()
        return [int(i) for i in beyond]

    async def expire(self, before: float, batch: int = 500) -> list[int]:
        """Remove ended jobs queued before `before`, oldest first (ids grow with time); returns their ids."""
        removed = []
        for job in await self.jobs_by_id(int(i) for i in await self.redis.zrange(PREFIX + "jobs", 0, batch - 1)):
            if job["timestamp"] >= before:
                break
            if State(job["state"]) in ENDED and await self._run("delete_job", job["id"]):
                removed.append(job["id"])
        return removed

    # Logs
    async def append_log(self, job_id: int, lines: Sequence[bytes]) -> None:
        if lines:
            await self._run("append_log", job_id, self.log_max_bytes, LOG_CUT_MARKER, "-", "-", *lines)

    async def append_log_after(self, job_id: int, after: str, cursor: str, lines: Sequence[bytes]) -> bool:
        """Append lines read from the journal between cursors `after` ('' for the start) and `cursor`;
        False when another follower already wrote past `after` (re-read from `log_cursor`)."""
        args = (job_id, self.log_max_bytes, LOG_CUT_MARKER, after, cursor, *lines)
        return bool(await self._run("append_log", *args) != -1)

    async def log_cursor(self, job_id: int) -> str:
        """The journal cursor of the last line in the job's log ('' before the first)."""
        return _text(await self.redis.hget(f"{PREFIX}job:{job_id}", "cursor"))

    async def log(self, job_id: int, offset: int = 0, limit: int | None = None) -> list[bytes]:
        """The job's output lines after the first `offset` (at most `limit` of them)."""
        end = -1 if limit is None else offset + limit - 1
        return [] if limit == 0 else await self.redis.lrange(f"{PREFIX}job:{job_id}:log", offset, end)

    async def log_length(self, job_id: int) -> int:
        return int(await self.redis.llen(f"{PREFIX}job:{job_id}:log"))

    async def job_state(self, job_id: int) -> State:
        state = await self.redis.hget(f"{PREFIX}job:{job_id}", "state")
        if state is None:
            raise NotFound(f"no job {job_id}")
        return State(state.decode())

    # Queue
    async def claim(self, consumer: str, count: int, block_ms: int, own_pending: bool = False) -> list[tuple[str, int]]:
        """Take up to `count` queue entries for this host: (entry id, job id). `own_pending` re-reads the
        entries this consumer took earlier but did not ack (a server that stopped before they ended)."""
        try:
            reply = await self.redis.xreadgroup(
                GROUP,
                consumer,
                {QUEUE: "0" if own_pending else ">"},
                count=count,
                block=None if own_pending else block_ms,
            )
        except redis.exceptions.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            await self.ensure_group()
            return []
        return [
            (_text(entry), int(fields[b"job"])) for _, entries in reply or [] for entry, fields in entries if fields
        ]

    async def ack(self, entry: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(QUEUE, GROUP, entry)
            pipe.xdel(QUEUE, entry)
            await pipe.execute()

    # API tokens
    async def add_token(self, name: str, digest: str) -> None:
        if not await self.redis.hsetnx(PREFIX + "tokens", name, digest):
            raise Conflict(f"a token named {name!r} exists already: revoke it first")

    async def revoke_token(self, name: str) -> None:
        if not await self.redis.hdel(PREFIX + "tokens", name):
            raise NotFound(f"no token named {name!r}")

    async def token_names(self) -> list[str]:
        return sorted(_text(n) for n in await self.redis.hkeys(PREFIX + "tokens"))

    async def token_digests(self) -> list[str]:
        return [_text(d) for d in await self.redis.hvals(PREFIX + "tokens")]

    async def counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(PREFIX + "repos")
            pipe.zcard(PREFIX + "jobs")
            for state in State:
                pipe.zcard(f"{PREFIX}jobs:state:{state.value}")
            repos, jobs, *states = await pipe.execute()
        return {"repos": repos, "jobs": jobs, **{s.value: n for s, n in zip(State, states, strict=True)}}

    # Pages, event streams and metrics (pieter/web/)
    async def events_after(self, entry: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """The job changes recorded after stream entry `entry` (what a reconnecting page missed), oldest first."""
        found = await self.redis.xrange(EVENTS, min=f"({entry}", count=count)
        return [(_text(eid), {_text(k): _text(v) for k, v in fields.items()}) for eid, fields in found]

    async def event(self, entry: str) -> dict[str, str] | None:
        found = await self.redis.xrange(EVENTS, min=entry, max=entry)
        return {_text(k): _text(v) for k, v in found[0][1].items()} if found else None

    async def latest_event(self) -> str:
        """The id of the newest entry of the events stream ('0-0' when it is empty): where a new page starts."""
        found = await self.redis.xrevrange(EVENTS, count=1)
        return _text(found[0][0]) if found else "0-0"

    async def recent_durations(self, repo: str, scenario: str, count: int = 10) -> list[float]:
        """Run times of a scenario's newest successful jobs, for a running job's ETA."""
        ids = await self.redis.zrevrange(f"{PREFIX}jobs:scenario:{repo}:{scenario}:state:success", 0, count - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"{PREFIX}job:{int(job_id)}", "duration")
            found = await pipe.execute()
        return [float(d) for d in found if d]

    async def scenarios_latest(self) -> list[dict[str, Any]]:
        """Every scenario of every repo with its latest ended job's id, state and result (None if it never ended)."""
        repos = await self.repo_names()
        async with self.redis.pipeline(transaction=False) as pipe:
            for repo in repos:
                pipe.zrange(f"{PREFIX}repo:{repo}:scenarios", 0, -1)
            names = await pipe.execute()
        pairs = [(repo, _text(s)) for repo, scenarios in zip(repos, names, strict=True) for s in scenarios]
        async with self.redis.pipeline(transaction=False) as pipe:
            for repo, scenario in pairs:
                pipe.zrevrange(f"{PREFIX}jobs:scenario:{repo}:{scenario}:ended", 0, 0)
            latest = await pipe.execute()
        ids = [int(found[0]) if found else None for found in latest]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(f"{PREFIX}job:{job_id or 0}", "state", "result", "finished")
            records = await pipe.execute()
        return [{"repo": repo, "scenario": scenario, "job": job_id, "state": _text(state) or None,
                 "result": _text(result) or None, "finished": float(finished) if finished else None}
                for (repo, scenario), job_id, (state, result, finished) in zip(pairs, ids, records, strict=True)]  # fmt: skip

    async def beat(self, host: str, slots: int) -> None:
        """This host is up with `slots` job slots (the dispatcher says so every HOST_BEAT_SECONDS)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(PREFIX + "hosts", host, slots)
            pipe.zadd(PREFIX + "hosts:seen", {host: time.time()})
            await pipe.execute()

    async def hosts(self) -> list[dict[str, Any]]:
        """The hosts seen lately, with their slots and the jobs running there."""
        seen = await self.redis.zrangebyscore(PREFIX + "hosts:seen", time.time() - 4 * HOST_BEAT_SECONDS, "+inf")
        names = [_text(h) for h in seen]
        slots = await self.redis.hmget(PREFIX + "hosts", names) if names else []
        running = await self.jobs_by_id(await self.job_ids(State.RUNNING), tail=0)
        return [{"host": name, "slots": int(n or 0), "running": sum(1 for j in running if j["host"] == name)}
                for name, n in zip(names, slots, strict=True)]  # fmt: skip

    async def stats(self) -> dict[str, dict[str, float]]:
        """The counters and histograms kept by every change of state (_NOTIFY), for /metrics."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in ("results", "duration_seconds", "queue_wait_seconds"):
                pipe.hgetall(f"{PREFIX}stats:{name}")
            found = await pipe.execute()
        return {name: {_text(k): float(v) for k, v in values.items()}
                for name, values in zip(("results", "duration_seconds", "queue_wait_seconds"), found, strict=True)}  # fmt: skip

    async def oldest_queued(self) -> float | None:
        """When the oldest job still queued was queued (ids grow with time), or None."""
        first = await self.redis.zrange(PREFIX + "jobs:state:queued", 0, 0)
        stamp = await self.redis.hget(f"{PREFIX}job:{int(first[0])}", "timestamp") if first else None
        return float(stamp) if stamp else None

    async def add_session(self, session_digest: str, token_digest: str) -> None:
        await self.redis.set(f"{PREFIX}session:{session_digest}", token_digest, ex=SESSION_SECONDS)

    async def session_token(self, session_digest: str) -> str:
        """The digest of the token a session was made with ('' for none: unknown, expired or signed out)."""
        return _text(await self.redis.get(f"{PREFIX}session:{session_digest}"))

    async def delete_session(self, session_digest: str) -> None:
        await self.redis.delete(f"{PREFIX}session:{session_digest}")
