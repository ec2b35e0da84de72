"""A scenario's schedule: a persistent systemd timer that queues it (see pieter/schedules.py)."""

from sanic import Request
from sanic.response import HTTPResponse, json

from pieter import schedules
from pieter.api.body import json_object
from pieter.errors import NotFound
from pieter.models import check_name


async def put_schedule(request: Request, repo: str, scenario: str) -> HTTPResponse:
    """Install (201) or replace (200) the schedule: `{"on_calendar": "<OnCalendar= expression>"}`."""
    check_name("repo", repo)
    check_name("scenario", scenario)
    expression = schedules.check_calendar(json_object(request, {"on_calendar"}).get("on_calendar"))
    schedules.require()
    store = request.app.ctx.store
    await store.scenario(repo, scenario)  # 404 for a scenario that is not there
    await schedules.validate(expression)
    created = await schedules.install(request.app.ctx.config, repo, scenario, expression)
    try:
        await store.scenario(repo, scenario)
    except NotFound:  # deleted while the timer was being installed: no schedule of a gone scenario stays
        await schedules.forget(repo, scenario)
        raise
    return json(await schedules.status(repo, scenario), status=201 if created else 200)


async def get_schedule(request: Request, repo: str, scenario: str) -> HTTPResponse:
    check_name("repo", repo)
    check_name("scenario", scenario)
    schedules.require()
    return json(await schedules.status(repo, scenario))


async def delete_schedule(request: Request, repo: str, scenario: str) -> HTTPResponse:
    check_name("repo", repo)
    check_name("scenario", scenario)
    schedules.require()
    removed = await schedules.remove(repo, scenario)
    return json({"deleted": removed["unit"], "repo": repo, "scenario": scenario, "on_calendar": removed["on_calendar"]})
