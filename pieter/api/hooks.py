"""Forge webhooks: `POST /hooks/{repo}/{scenario}` queues the scenario for a push (GitHub, Gitea, Forgejo, Gogs,
GitLab), checking out exactly the pushed commit. No bearer token: the request proves itself with the repo's
webhook secret (see forges.py), and one that does not gets 401 and changes nothing."""

from sanic import Request
from sanic.response import HTTPResponse, json

from pieter import forges
from pieter.models import check_name
from pieter.tokens import Unauthorized

KNOWN_EVENT_HEADERS = "X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event, X-Gogs-Event or X-Gitlab-Event"
SIGNATURE_NAMES = {
    "github": "X-Hub-Signature-256",
    "gitea": "X-Gitea-Signature",
    "forgejo": "X-Forgejo-Signature",
    "gogs": "X-Gogs-Signature",
    "gitlab": "X-Gitlab-Token",
}


async def hook(request: Request, repo: str, scenario: str) -> HTTPResponse:
    """201 with the job (`Location: /jobs/{id}`) for a push; 200 for a ping, a push the scenario skips or an
    event it ignores; 401 unless the request carries the repo's secret."""
    check_name("repo", repo)
    check_name("scenario", scenario)
    store = request.app.ctx.store
    settings = (await store.scenario(repo, scenario))["settings"]  # 404 names what is missing
    secret = (await store.repo_private(repo))["secret"]
    if not secret:
        raise Unauthorized(f'this repo accepts no webhooks: set a secret (PUT /repos/{repo} with {{"secret": ...}})')
    forge = forges.recognise(request.headers)
    if forge is None:
        raise Unauthorized(f"not a webhook of a known forge: no {KNOWN_EVENT_HEADERS} header")
    if not forges.verify(forge, request.headers, request.body, secret):
        header = SIGNATURE_NAMES[forge]
        if not request.headers.get(header):
            raise Unauthorized(f"the {forge} webhook has no {header} header: give the hook the repo's secret")
        raise Unauthorized(f"the {forge} webhook's {header} does not match the repo's secret")
    payload = forges.load(request.headers, request.body)
    event = forges.classify(forge, request.headers, payload)
    if event == "ping":
        return json({"ping": "ok"})
    if event != "push":
        return json({"ignored": event[:100]})
    push = forges.parse_push(forge, payload)
    if push.deleted:
        return json({"skipped": f"{push.ref[:200]} was deleted: nothing to build"})
    if push.skip_ci:
        return json({"skipped": "the push asked for no CI run (push option ci.skip)"})
    branches = settings.get("branches", "")
    if not forges.branch_matches(branches, push.branch):
        return json({"skipped": f"{push.ref[:200]} is not among the scenario's branches ({branches})"})
    job_id = await store.create_job(repo, scenario, push.env(), commit=push.commit)
    return json(await store.job(job_id), status=201, headers={"Location": f"/jobs/{job_id}"})
