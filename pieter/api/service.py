"""`GET /`: what this server is, and whether its database answers."""

import asyncio
import time

from sanic import DefaultSanic, Request
from sanic.response import HTTPResponse, json, redirect

from pieter import __version__, workspaces
from pieter.store import REDIS_DOWN

DISK_EVERY = 60.0


async def info(request: Request) -> HTTPResponse:
    """The service's JSON, except to a browser (it asks for text/html), which is sent to the pages."""
    if "text/html" in request.headers.get("accept", ""):
        return redirect("/ui/", status=303)
    ctx = request.app.ctx
    body = {
        "name": "pieter-ci",
        "version": __version__,
        "runner": ctx.runner.name,
        "host": ctx.config.host,
        "redis": "ok",
        "dispatcher": ctx.dispatcher.status,  # "ok", or why this host takes no jobs (or no cancels) now
        "running_here": len(ctx.dispatcher.tasks),
        "max_jobs": ctx.config.max_jobs,
    }
    try:
        body["counts"] = await ctx.store.counts()
    except REDIS_DOWN as e:
        body["redis"] = f"unavailable: {e}"
    body["disk"] = await disk_used(request.app)
    return json(body)


async def disk_used(app: DefaultSanic) -> dict[str, int]:
    """Bytes used by workspaces and artifacts, measured at most once a minute (a walk of the state dir)."""
    measured_at, usage = getattr(app.ctx, "disk_used", (float("-inf"), {}))
    if time.monotonic() - measured_at > DISK_EVERY:
        state_dir = app.ctx.config.state_dir
        usage = {kind: await asyncio.to_thread(workspaces.disk_usage, state_dir / kind)
                 for kind in ("workspaces", "artifacts")}  # fmt: skip
        app.ctx.disk_used = (time.monotonic(), usage)
    return usage
