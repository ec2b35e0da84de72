"""Repos and their scenarios (shell scripts): create, read, replace, delete."""

import base64
import json as jsonlib

from sanic import Request
from sanic.response import HTTPResponse, json, raw

from pieter import schedules
from pieter.api.body import json_object
from pieter.models import (
    check_deploy_key,
    check_env,
    check_hook_secret,
    check_known_hosts,
    check_name,
    check_script,
    check_settings,
    check_source,
)


async def list_repos(request: Request) -> HTTPResponse:
    return json(await request.app.ctx.store.repo_names())


async def get_repo(request: Request, repo: str) -> HTTPResponse:
    return json(await request.app.ctx.store.repo(check_name("repo", repo)))


async def put_repo(request: Request, repo: str) -> HTTPResponse:
    """Create (201) or update (200) a repo: the fields sent change, the others stay."""
    check_name("repo", repo)
    body = json_object(request, {"source", "secret", "secrets", "deploy_key", "known_hosts"})
    checks = {"source": check_source, "secret": check_hook_secret, "deploy_key": check_deploy_key,
              "known_hosts": check_known_hosts, "secrets": lambda v: jsonlib.dumps(check_env(v))}  # fmt: skip
    fields = {name: check(body[name]) for name, check in checks.items() if body.get(name) is not None}
    created, shown = await request.app.ctx.store.put_repo(repo, fields)
    return json(shown, status=201 if created else 200)


async def delete_repo(request: Request, repo: str) -> HTTPResponse:
    cancelled = await request.app.ctx.store.delete_repo(check_name("repo", repo))
    await schedules.forget(repo)  # its scenarios' timers
    return json({"deleted": repo, "cancelled_jobs": cancelled})


def scenario_body(scenario: dict) -> dict:
    """The original's wire form: the script in `data`, as text, or base64 when it is not UTF-8."""
    script = scenario.pop("script")
    try:
        scenario["data"] = script.decode()
    except UnicodeDecodeError:
        scenario["data"] = base64.b64encode(script).decode()
        scenario["encoding"] = "base64"
    return scenario


async def get_scenario(request: Request, repo: str, scenario: str) -> HTTPResponse:
    found = await request.app.ctx.store.scenario(check_name("repo", repo), check_name("scenario", scenario))
    return json(scenario_body(found))


async def get_script(request: Request, repo: str, scenario: str) -> HTTPResponse:
    found = await request.app.ctx.store.scenario(check_name("repo", repo), check_name("scenario", scenario))
    return raw(found["script"], content_type="application/octet-stream")


async def put_scenario(request: Request, repo: str, scenario: str) -> HTTPResponse:
    """The raw body is the script, byte for byte, whatever its Content-Type; settings come as query args."""
    check_name("repo", repo)
    check_name("scenario", scenario)
    settings = check_settings(dict(request.get_args(keep_blank_values=True)))
    script = check_script(request.body, request.app.ctx.config.max_script_bytes)
    store = request.app.ctx.store
    created = await store.put_scenario(repo, scenario, script, settings)
    return json(scenario_body(await store.scenario(repo, scenario)), status=201 if created else 200)


async def delete_scenario(request: Request, repo: str, scenario: str) -> HTTPResponse:
    cancelled = await request.app.ctx.store.delete_scenario(check_name("repo", repo), check_name("scenario", scenario))
    await schedules.forget(repo, scenario)  # its timer, if it has one
    return json({"deleted": scenario, "repo": repo, "cancelled_jobs": cancelled})
