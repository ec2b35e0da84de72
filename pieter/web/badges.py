"""`GET /badge/{repo}/{scenario}.svg`: the scenario's state as a flat badge, for READMEs and dashboards.

Never a 404: an unknown or never-run scenario is the grey `unknown` (a badge in a README must not break).
Where the API needs a token, a request without one gets the badge only for a scenario whose `badge` setting is
`public`; every other gets the 401, so a private CI tells nothing, not even which scenarios exist.
"""

from sanic import Request
from sanic.response import HTTPResponse, raw

from pieter.errors import BadRequest, NotFound
from pieter.models import State, check_name
from pieter.store import Store
from pieter.tokens import Unauthorized
from pieter.web.svg import badge as draw

RECENT = 10  # ended jobs looked through for the last success or failure (cancelled ones say nothing)


async def badge(request: Request, repo: str, name: str) -> HTTPResponse:
    if not name.endswith(".svg"):
        raise BadRequest("a badge's path ends in .svg: /badge/{repo}/{scenario}.svg")
    scenario = check_name("scenario", name[: -len(".svg")])
    check_name("repo", repo)
    store = request.app.ctx.store
    try:
        settings = (await store.scenario(repo, scenario))["settings"]
    except NotFound:
        settings = {}
    if getattr(request.ctx, "anonymous", False) and settings.get("badge") != "public":
        raise Unauthorized("this badge needs a token, or its scenario the setting badge=public")
    svg = draw(scenario, await message(store, repo, scenario))
    return raw(svg, content_type="image/svg+xml", headers={"cache-control": "no-cache"})


async def message(store: Store, repo: str, scenario: str) -> str:
    running, _ = await store.list_jobs(repo, scenario, State.RUNNING.value, 0, 0)
    if running:
        return "running"
    _, recent = await store.list_jobs(repo, scenario, None, 0, RECENT)
    for job in recent:
        if job["state"] in (State.SUCCESS.value, State.FAIL.value):
            return "success" if job["state"] == State.SUCCESS.value else "failing"
    return "unknown"
