"""Jobs: queue one (PATCH on a scenario), list, read, cancel, delete, and read or follow its log."""

import asyncio
import contextlib
import os
import re
from email.utils import formatdate
from urllib.parse import quote, unquote

from sanic import Request
from sanic.response import HTTPResponse, json, raw

from pieter import artifacts, workspaces
from pieter.api.body import json_object
from pieter.errors import BadRequest, Conflict, NotFound
from pieter.models import ENDED, State, check_commit, check_env, check_name

FOLLOW_POLL_SECONDS = 0.2
MAX_PAGE = 200
ARTIFACT_CHUNK = 65536


def job_id_of(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", text) or int(text) == 0:
        raise NotFound(f"no job {text[:40]!r}: job ids are positive whole numbers")
    return int(text)


def whole_number(request: Request, name: str, default: int, highest: int) -> int:
    text = request.args.get(name, str(default))
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > highest:
        raise BadRequest(f"{name} must be a whole number from 0 to {highest}")
    return int(text)


async def queue_job(request: Request, repo: str, scenario: str) -> HTTPResponse:
    """201 with the job and `Location: /jobs/{id}`; the job snapshots the script and source now."""
    check_name("repo", repo)
    check_name("scenario", scenario)
    body = json_object(request, {"env", "commit"})
    env = check_env(body.get("env", {}))
    commit = check_commit(body.get("commit", ""))
    store = request.app.ctx.store
    job_id = await store.create_job(repo, scenario, env, commit)
    return json(await store.job(job_id), status=201, headers={"Location": f"/jobs/{job_id}"})


async def list_jobs(request: Request) -> HTTPResponse:
    """Newest first; `?repo=&scenario=&state=&offset=&limit=`."""
    repo = request.args.get("repo")
    scenario = request.args.get("scenario")
    state = request.args.get("state")
    if state is not None and state not in {s.value for s in State}:
        raise BadRequest(f"state must be one of {', '.join(s.value for s in State)}")
    offset = whole_number(request, "offset", 0, 10**9)
    limit = whole_number(request, "limit", 20, MAX_PAGE)
    total, jobs = await request.app.ctx.store.list_jobs(
        repo and check_name("repo", repo), scenario and check_name("scenario", scenario), state, offset, limit
    )
    return json({"jobs": jobs, "total": total, "offset": offset, "limit": limit})


async def get_job(request: Request, job_id: str) -> HTTPResponse:
    return json(await request.app.ctx.store.job(job_id_of(job_id)))


async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
    """Cancel a queued or running job (409 when it has already ended); a running one is stopped."""
    number = job_id_of(job_id)
    ctx = request.app.ctx
    await ctx.store.cancel_job(number)
    await ctx.dispatcher.cancel(number)
    return json(await ctx.store.job(number))


async def delete_job(request: Request, job_id: str) -> HTTPResponse:
    """Cancel the job if it has not ended, then remove its record, log and workspace."""
    number = job_id_of(job_id)
    ctx = request.app.ctx
    with contextlib.suppress(Conflict):  # an ended job is simply deleted
        await ctx.store.cancel_job(number)
        await ctx.dispatcher.cancel(number)
    task = ctx.dispatcher.tasks.get(number)
    if task is not None:  # let the runner finish stopping it before its files go
        await asyncio.wait([task], timeout=10)
    await ctx.store.delete_job(number)
    await asyncio.to_thread(workspaces.remove_all, ctx.config.state_dir, number)
    return json({"deleted": number})


async def get_log(request: Request, job_id: str) -> HTTPResponse | None:
    """Plain text; `?offset=N` skips the first N lines, `?limit=N` gives at most N; `?follow=1` streams until
    the job has ended."""
    number = job_id_of(job_id)
    store = request.app.ctx.store
    offset = whole_number(request, "offset", 0, 10**9)
    limit = whole_number(request, "limit", 0, 10**9) if "limit" in request.args else None
    state = await store.job_state(number)
    if request.args.get("follow") not in ("1", "true", "yes"):
        return raw(_text(await store.log(number, offset, limit)), content_type="text/plain; charset=utf-8")
    response = await request.respond(content_type="text/plain; charset=utf-8")
    while True:
        ended = state in ENDED  # read before the lines: an ended job's log is complete
        lines = await store.log(number, offset)
        if lines:
            await response.send(_text(lines))
            offset += len(lines)
        elif ended:
            break
        else:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        try:
            state = await store.job_state(number)
        except NotFound:  # deleted while followed: what was sent is all there is
            break
    await response.eof()
    return None


async def list_artifacts(request: Request, job_id: str) -> HTTPResponse:
    """The files the job kept under $PIETER_ARTIFACTS: path and size of each."""
    number = job_id_of(job_id)
    await request.app.ctx.store.job_state(number)  # 404 for an unknown job
    files = workspaces.job_files(request.app.ctx.config.state_dir, number)
    found = await asyncio.to_thread(artifacts.listing, files)
    return json({"artifacts": found, "total_bytes": sum(a["size"] for a in found)})


async def get_artifact(request: Request, job_id: str, path: str) -> HTTPResponse | None:
    """One artifact's bytes, streamed from the file `artifacts.open_artifact` opened: never opened again by name,
    which the running job could by then have made a link to anywhere."""
    number = job_id_of(job_id)
    await request.app.ctx.store.job_state(number)
    files = workspaces.job_files(request.app.ctx.config.state_dir, number)
    relative = unquote(path)  # Sanic hands a path parameter over still percent-encoded
    try:
        found = await asyncio.to_thread(artifacts.open_artifact, files, relative)
    except LookupError:
        raise NotFound(f"job {number} has no artifact {relative[:200]!r}") from None
    with found:
        status = os.fstat(found.fileno())
        headers = {"content-length": str(status.st_size), "content-disposition": _attachment(relative),
                   "last-modified": formatdate(status.st_mtime, usegmt=True)}  # fmt: skip
        response = await request.respond(content_type="application/octet-stream", headers=headers)
        left = status.st_size  # what content-length promised, though a running job may still write to the file
        while left and (chunk := await asyncio.to_thread(found.read, min(left, ARTIFACT_CHUNK))):
            await response.send(chunk)
            left -= len(chunk)
        await response.eof()  # a file cut short meanwhile: Sanic drops the connection, the client sees it short
    return None


def _attachment(relative: str) -> str:
    """Content-Disposition naming the file: RFC 6266's `filename*` carries any name, `filename` an ASCII one for
    old clients (and nothing that could end the quoted string or the header)."""
    name = relative.rsplit("/", 1)[-1]
    plain = re.sub(r'[^ -~]|["\\]', "_", name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def _text(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)
