"""`GET /`: what this server is, and whether its database answers."""

from sanic import Request
from sanic.response import HTTPResponse, json

from pieter import __version__
from pieter.dispatcher import REDIS_DOWN


async def info(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    body = {
        "name": "pieter-ci",
        "version": __version__,
        "runner": ctx.runner.name,
        "host": ctx.config.host,
        "redis": "ok",
        "running_here": len(ctx.dispatcher.tasks),
        "max_jobs": ctx.config.max_jobs,
    }
    try:
        body["counts"] = await ctx.store.counts()
    except REDIS_DOWN as e:
        body["redis"] = f"unavailable: {e}"
    return json(body)
