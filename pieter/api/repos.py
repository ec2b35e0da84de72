"""Repos and their scenarios (shell scripts): create, read, replace, delete."""

import asyncio
import base64
import json as jsonlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse, json, raw

from pieter import schedules
from pieter.api.body import json_object
from pieter.errors import BadRequest
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


def deploy_key_problem(key: str) -> str | None:
    """Why ssh could not use the key in a job's clone (which cannot type a passphrase), as ssh-keygen says it;
    None when it can, or where ssh-keygen is missing (openssh-client is only recommended). Blocking."""
    if not key or shutil.which("ssh-keygen") is None:
        return None
    read = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", "/dev/stdin"], input=key.encode(),
                          capture_output=True, timeout=10, check=False)  # fmt: skip
    said = read.stderr.decode(errors="replace").strip().splitlines()
    return None if read.returncode == 0 else (said[-1].rpartition(": ")[2] if said else "unreadable")


async def get_repo(request: Request, repo: str) -> HTTPResponse:
    return json(await request.app.ctx.store.repo(check_name("repo", repo)))


async def put_repo(request: Request, repo: str) -> HTTPResponse:
    """Create (201) or update (200) a repo: the fields sent change, the others stay."""
    check_name("repo", repo)
    body = json_object(request, {"source", "secret", "secrets", "deploy_key", "known_hosts"})
    checks: dict[str, Callable[[object], str]] = {
        "source": check_source, "secret": check_hook_secret, "deploy_key": check_deploy_key,
        "known_hosts": check_known_hosts, "secrets": lambda v: jsonlib.dumps(check_env(v, "secrets"))}  # fmt: skip
    fields = {name: check(body[name]) for name, check in checks.items() if body.get(name) is not None}
    if fields.get("deploy_key") and (problem := await asyncio.to_thread(deploy_key_problem, fields["deploy_key"])):
        raise BadRequest(f"deploy_key cannot be used: {problem} (ssh-keygen; a job cannot type a passphrase)")
    created, shown = await request.app.ctx.store.put_repo(repo, fields)
    return json(shown, status=201 if created else 200)


async def delete_repo(request: Request, repo: str) -> HTTPResponse:
    cancelled = await request.app.ctx.store.delete_repo(check_name("repo", repo))
    await schedules.forget(repo)  # its scenarios' timers
    return json({"deleted": repo, "cancelled_jobs": cancelled})


def scenario_body(scenario: dict[str, Any]) -> dict[str, Any]:
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
