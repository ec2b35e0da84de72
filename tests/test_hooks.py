"""Forge webhooks, POST /hooks/{repo}/{scenario} (or the original's /webhooks/...), through a real server and a
real Redis: each forge's signed push queues a job that checks out exactly the pushed commit with the push in its
environment; anything unsigned, wrongly signed or sent to a repo without a secret gets 401 and leaves Redis as it
was. Payloads: tests/payloads/ (the forges' samples, and payloads built from their current formats; see its README)."""

import hashlib
import hmac
import json
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest

from pieter import forges
from tests.conftest import snapshot, wait_for_job

PAYLOADS = Path(__file__).resolve().parent / "payloads"
SECRET = "s3cret-webhook-key-0123456789"
SCRIPT = b"""cat hello.txt
echo "head=$(git rev-parse HEAD)"
echo "forge=$PIETER_FORGE ref=$PIETER_REF branch=$PIETER_BRANCH commit=$PIETER_COMMIT"
echo "author=$PIETER_AUTHOR"
printf 'message=%s\\n' "$PIETER_MESSAGE"
"""
DEFAULT_EVENT = {"github": "push", "gitea": "push", "forgejo": "push", "gogs": "push", "gitlab": "Push Hook"}


def hex_hmac(secret: str, data: bytes, digest=hashlib.sha256) -> str:
    return hmac.new(secret.encode(), data, digest).hexdigest()


def forge_headers(forge: str, body: bytes, secret: str = SECRET, event: str | None = None,
                  signed: bytes | None = None) -> dict[str, str]:  # fmt: skip
    """The headers `forge` sends with `body`, as its delivery code does (Forgejo's include Gitea's, Gitea's
    include Gogs' and GitHub's). `signed`: what the HMAC covers when it is not the body (a form's payload)."""
    event = event or DEFAULT_EVENT[forge]
    data = body if signed is None else signed
    sha256, sha1, delivery = hex_hmac(secret, data), hex_hmac(secret, data, hashlib.sha1), str(uuid.uuid4())
    if forge == "github":
        return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-GitHub-Hook-ID": "512345678",
                "X-GitHub-Hook-Installation-Target-Type": "repository", "X-Hub-Signature": "sha1=" + sha1,
                "X-Hub-Signature-256": "sha256=" + sha256, "User-Agent": "GitHub-Hookshot/a1b2c3d"}  # fmt: skip
    if forge == "gitlab":
        return {"X-Gitlab-Event": event, "X-Gitlab-Token": secret, "X-Gitlab-Instance": "https://gitlab.example.com",
                "X-Gitlab-Webhook-UUID": str(uuid.uuid4()), "X-Gitlab-Event-UUID": delivery,
                "User-Agent": "GitLab/17.11.1"}  # fmt: skip
    if forge == "gogs":
        return {"X-Gogs-Delivery": delivery, "X-Gogs-Event": event, "X-Gogs-Signature": sha256,
                "User-Agent": "GogsServer"}  # fmt: skip
    headers = {}
    if forge == "forgejo":
        headers.update({"X-Forgejo-Delivery": delivery, "X-Forgejo-Event": event, "X-Forgejo-Event-Type": event,
                        "X-Forgejo-Signature": sha256})  # fmt: skip
    headers.update({"X-Gitea-Delivery": delivery, "X-Gitea-Event": event, "X-Gitea-Event-Type": event,
                    "X-Gitea-Signature": sha256, "X-Gogs-Delivery": delivery, "X-Gogs-Event": event,
                    "X-Gogs-Event-Type": event, "X-Gogs-Signature": sha256, "X-Hub-Signature": "sha1=" + sha1,
                    "X-Hub-Signature-256": "sha256=" + sha256, "X-GitHub-Delivery": delivery, "X-GitHub-Event": event,
                    "X-GitHub-Event-Type": event, "User-Agent": "Go-http-client/1.1"})  # fmt: skip
    return headers


def post(api: httpx.Client, forge: str, body: bytes | dict, repo: str = "demo", scenario: str = "build.sh",
         hooks: str = "/hooks", **kwargs) -> httpx.Response:  # fmt: skip
    """A signed delivery; `headers=` replaces the forge's."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = kwargs.pop("headers", None) or forge_headers(forge, body, **kwargs)
    return api.post(f"{hooks}/{repo}/{scenario}", content=body,
                    headers={"Content-Type": "application/json", **headers})  # fmt: skip


def payload_text(name: str) -> str:
    return (PAYLOADS / name).read_text()


def pinned(name: str, commit: str) -> dict:
    """The payload with its pushed commit (GitLab's checkout_sha, else after) replaced by `commit` everywhere."""
    text = payload_text(name)
    data = json.loads(text)
    return json.loads(text.replace(data.get("checkout_sha") or data["after"], commit))


def git(repo: Path, *args: str) -> str:
    run = ["git", "-C", str(repo), "-c", "user.email=test@example.com", "-c", "user.name=test", *args]
    return subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def no_server_errors(tmp_path: Path):
    """Whatever a test sends, the servers it started log no internal error."""
    yield
    for log in tmp_path.glob("server*/server.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "internal error" not in text, text[-3000:]


@pytest.fixture
def two_commits(git_repo: Path) -> tuple[str, str]:
    """The test repo with a second commit on top of the first: (first sha, second sha)."""
    first = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "hello.txt").write_text("second version\n")
    git(git_repo, "commit", "-qam", "second")
    return first, git(git_repo, "rev-parse", "HEAD")


def setup(api: httpx.Client, source: str = "", secret: str | None = SECRET, query: str = "",
          script: bytes = SCRIPT) -> None:  # fmt: skip
    body = {"source": source} | ({"secret": secret} if secret is not None else {})
    assert api.put("/repos/demo", json=body).status_code in (200, 201)
    assert api.put(f"/repos/demo/build.sh{query}", content=script).status_code in (200, 201)


# What each payload's push says, read off the files by hand.
PUSHES = {
    "github-push.json": ("github", "refs/heads/changes", "changes",
                         "baxterthehacker <baxterthehacker@users.noreply.github.com>", "Update README.md"),
    "github-push-main.json": ("github", "refs/heads/main", "main", "Mona Lisa Octocat <mona@github.com>",
                              "Fix the widget's spin\n\nIt spun the wrong way round."),
    "gitea-push.json": ("gitea", "refs/heads/develop", "develop", "Gitea <someone@gitea.io>", "Webhooks Yay!"),
    "forgejo-push.json": ("forgejo", "refs/heads/main", "main", "Alice Liddell <alice@example.org>",
                          "Turn the widget on\n\nWith a switch."),
    "gogs-push.json": ("gogs", "refs/heads/develop", "develop", "Unknwon <u@gogs.io>", "!@#0^%>>>><<<<>>>>"),
    "gitlab-push.json": ("gitlab", "refs/heads/master", "master", "GitLab dev user <gitlabdev@dv6700.(none)>",
                         "fixed readme"),
    "gitlab-push-current.json": ("gitlab", "refs/heads/main", "main", "Jordi Mallach <jordi@example.com>",
                                 "Polish the widget\n\nRound the corners."),
    "gitlab-tag-push.json": ("gitlab", "refs/tags/v1.0.0", "", "John Smith <john@example.com>", "Release 1.0.0"),
}  # fmt: skip


def expected_env(name: str, commit: str) -> dict[str, str]:
    forge, ref, branch, author, message = PUSHES[name]
    return {"PIETER_FORGE": forge, "PIETER_REF": ref, "PIETER_BRANCH": branch, "PIETER_COMMIT": commit,
            "PIETER_AUTHOR": author, "PIETER_MESSAGE": message}  # fmt: skip


@pytest.mark.parametrize("name", list(PUSHES))
def test_a_signed_push_builds_exactly_the_pushed_commit(api, git_repo, two_commits, name):
    first, second = two_commits
    setup(api, source=str(git_repo))
    forge = PUSHES[name][0]
    response = post(api, forge, pinned(name, first))
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["commit"] == first and job["state"] == "queued"
    assert job["env"] == expected_env(name, first)
    done = wait_for_job(api, job["id"])
    log = api.get(f"/jobs/{job['id']}/log").text
    assert done["result"] == "success", log
    _, ref, branch, author, message = PUSHES[name]
    assert "hello from the repo\n" in log and "second version" not in log, log  # the first commit's file
    assert f"head={first}\n" in log
    assert f"forge={forge} ref={ref} branch={branch} commit={first}\n" in log
    assert f"author={author}\nmessage={message}\n" in log


def test_the_forges_samples_are_read_as_sent(api):
    """The copied sample payloads, byte for byte as the forges published them."""
    setup(api, script=b"true\n")
    for name in ["github-push.json", "gitea-push.json", "gogs-push.json", "gitlab-push.json"]:
        body = (PAYLOADS / name).read_bytes()
        sample = json.loads(body)
        commit = sample.get("checkout_sha") or sample["after"]
        response = post(api, PUSHES[name][0], body)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["commit"] == commit
        assert response.json()["env"] == expected_env(name, commit), name
    odd = pinned("github-push-main.json", "4" * 40)
    odd["head_commit"]["message"] = "lone \udc80 surrogate, NUL \x00 and more" + "x" * 40_000
    response = post(api, "github", json.dumps(odd).encode())  # ASCII JSON, escapes and all
    assert response.status_code == 201, response.text
    message = response.json()["env"]["PIETER_MESSAGE"]
    assert message.startswith("lone ? surrogate, NUL  and more") and len(message) == 32768
    assert wait_for_job(api, response.json()["id"])["result"] == "success"


def test_forgejo_headers_alone_are_enough(api, git_repo, two_commits):
    """A Forgejo delivery with only its own X-Forgejo-* headers (no Gitea, Gogs or GitHub copies)."""
    first, _ = two_commits
    setup(api, source=str(git_repo))
    body = json.dumps(pinned("forgejo-push.json", first)).encode()
    headers = {k: v for k, v in forge_headers("forgejo", body).items() if k.startswith("X-Forgejo-")}
    response = post(api, "forgejo", body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["env"]["PIETER_FORGE"] == "forgejo"
    assert wait_for_job(api, response.json()["id"])["result"] == "success"
    assert f"hello from the repo\nhead={first}\n" in api.get(f"/jobs/{response.json()['id']}/log").text


def post_form(api: httpx.Client, forge: str, body: bytes, signed: bytes | None = None) -> httpx.Response:
    headers = {**forge_headers(forge, body, signed=signed), "Content-Type": "application/x-www-form-urlencoded"}
    return api.post("/hooks/demo/build.sh", content=body, headers=headers)


def test_form_encoded_deliveries(api):
    """GitHub's default content type: `payload=<json>`, the raw body signed; Gitea's and Gogs': the JSON signed."""
    setup(api, script=b"true\n")
    for forge, name in [("github", "github-push-main.json"), ("gitea", "gitea-push.json"), ("gogs", "gogs-push.json")]:
        text = payload_text(name)
        body = urllib.parse.urlencode({"payload": text}).encode()
        response = post_form(api, forge, body, signed=None if forge == "github" else text.encode())
        assert response.status_code == 201, (forge, response.text)
        assert response.json()["commit"] == json.loads(text)["after"]
    accented = pinned("github-push-main.json", "3" * 40)
    accented["head_commit"]["message"] = "Réparer le widget ☂"
    text = json.dumps(accented, ensure_ascii=False)
    response = post_form(api, "forgejo", urllib.parse.urlencode({"payload": text}).encode(), signed=text.encode())
    assert response.status_code == 201 and response.json()["env"]["PIETER_MESSAGE"] == "Réparer le widget ☂"
    for body in [b"payload=\xc3\xa9\xff", b"payload=%FF%FE", b"payload=", b"other=1", b"\xff" * 10]:
        response = post_form(api, "gitea", body)
        assert response.status_code == 400 and "JSON" in response.json()["error"], (body, response.text)


def settle(api: httpx.Client, db, job_id: int) -> None:
    """Wait until the job has ended and the server is done with it (its queue entry acked and gone)."""
    wait_for_job(api, job_id)
    deadline = time.monotonic() + 10
    while db.xlen("pieter:queue"):
        assert time.monotonic() < deadline, "the job's queue entry was never acked"
        time.sleep(0.02)


def refused(api, db, requests: list[tuple[str, bytes, dict]], status: int = 401) -> list[str]:
    """Send each (forge, body, headers); every one gets `status` and Redis does not change. Their errors."""
    before = snapshot(db)
    errors = []
    for forge, body, headers in requests:
        headers = {"Content-Type": "application/json", **headers}
        response = api.post("/hooks/demo/build.sh", content=body, headers=headers)
        assert response.status_code == status, (forge, headers, response.text)
        errors.append(response.json()["error"])
    assert snapshot(db) == before
    return errors


def test_unsigned_or_wrongly_signed_deliveries_get_401_and_change_nothing(api, db, git_repo):
    setup(api, source=str(git_repo))
    body = json.dumps(pinned("github-push-main.json", git(git_repo, "rev-parse", "HEAD"))).encode()
    good = forge_headers("github", body)
    other = forge_headers("github", body, secret="another-secret-entirely")
    tampered = forge_headers("github", body.replace(b"refs/heads/main", b"refs/heads/evil"))
    gitea = forge_headers("gitea", body)
    gitlab = forge_headers("gitlab", body)
    requests = [
        ("none", body, {}),  # no forge's headers at all
        ("github", body, {"X-GitHub-Event": "push"}),  # no signature
        ("github", body, other),  # signed with another secret
        ("github", body, tampered),  # the signature of another body
        ("github", body, {**good, "X-Hub-Signature-256": good["X-Hub-Signature-256"][:-2]}),  # cut short
        ("github", body, {**good, "X-Hub-Signature-256": good["X-Hub-Signature-256"].removeprefix("sha256=")}),
        ("github", body, {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}),  # only the SHA-1 one
        ("github", body, {**good, "X-Hub-Signature-256": "sha256=" + "0" * 64}),
        ("github", body, {**good, "X-Hub-Signature-256": ("sha256=é" + "0" * 63).encode("latin-1")}),  # not ASCII
        ("gitea", body, {**gitea, "X-Gitea-Signature": ""}),  # what Gitea sends for a hook without a secret
        ("gitea", body, {**gitea, "X-Gitea-Signature": other["X-Hub-Signature-256"][7:]}),
        ("gogs", body, {**forge_headers("gogs", body), "X-Gogs-Signature": good["X-Hub-Signature-256"]}),
        ("gitlab", body, {**gitlab, "X-Gitlab-Token": SECRET[:-1]}),
        ("gitlab", body, {**gitlab, "X-Gitlab-Token": SECRET + "x"}),
        ("gitlab", body, {**gitlab, "X-Gitlab-Token": b"\xff\xfe" + SECRET.encode()}),  # not UTF-8
        ("gitlab", body, {k: v for k, v in gitlab.items() if k != "X-Gitlab-Token"}),
        ("github", b'{"zen": "hi"}', forge_headers("github", b"{}", event="ping")),  # a ping, another body's signature
    ]
    errors = refused(api, db, requests)
    assert "not a webhook of a known forge" in errors[0]
    assert "no X-Hub-Signature-256 header" in errors[1]
    assert "does not match the repo's secret" in errors[2]
    assert "no X-Gitlab-Token header" in errors[-2]
    assert all(SECRET not in error for error in errors)
    assert post(api, "github", body).status_code == 201  # the same body, rightly signed


def test_a_repo_without_a_secret_accepts_no_hooks(api, db):
    setup(api, secret=None)
    body = json.dumps(pinned("github-push-main.json", "a" * 40)).encode()
    errors = refused(api, db, [(forge, body, forge_headers(forge, body)) for forge in DEFAULT_EVENT])
    assert set(errors) == {'this repo accepts no webhooks: set a secret (PUT /repos/demo with {"secret": ...})'}
    assert api.put("/repos/demo", json={"secret": SECRET}).status_code == 200
    assert api.get("/repos/demo").json()["webhook_secret"] is True and SECRET not in api.get("/repos/demo").text
    job = post(api, "github", body)
    assert job.status_code == 201, job.text
    settle(api, db, job.json()["id"])
    assert api.put("/repos/demo", json={"secret": ""}).status_code == 200  # removed again: no more hooks
    refused(api, db, [("github", body, forge_headers("github", body))])


def test_pings_and_test_deliveries_are_answered_and_run_nothing(api, db):
    setup(api)
    before = snapshot(db)
    deliveries = [
        ("github", "github-ping.json", "ping"),
        ("gitea", "gitea-test-delivery.json", None),
        ("forgejo", "gitea-test-delivery.json", None),
        ("gogs", "gogs-test-delivery.json", None),
    ]
    for forge, name, event in deliveries:
        response = post(api, forge, (PAYLOADS / name).read_bytes(), event=event)
        assert (response.status_code, response.json()) == (200, {"ping": "ok"}), (forge, response.text)
    assert snapshot(db) == before


def test_pushes_that_build_nothing(api, db):
    """A deleted branch, GitLab's test sample (push option ci.skip) and events other than pushes: 200, no job."""
    setup(api)
    before = snapshot(db)
    skipped = [
        ("github", "github-push-delete.json", None, "refs/heads/feature/old was deleted"),
        ("gitlab", "gitlab-test-sample.json", None, "ci.skip"),
    ]
    for forge, name, event, reason in skipped:
        response = post(api, forge, (PAYLOADS / name).read_bytes(), event=event)
        assert response.status_code == 200 and reason in response.json()["skipped"], response.text
    deleted = json.loads(payload_text("gitlab-push-current.json")) | {"after": "0" * 40, "checkout_sha": None}
    assert "was deleted" in post(api, "gitlab", deleted).json()["skipped"]
    ignored = [("github", "issues"), ("gitea", "create"), ("forgejo", "pull_request"), ("gogs", "release"),
               ("gitlab", "Merge Request Hook"), ("gitlab", "System Hook")]  # fmt: skip
    for forge, event in ignored:
        response = post(api, forge, {"action": "opened", "after": "x"}, event=event)
        assert (response.status_code, response.json()) == (200, {"ignored": event}), response.text
    odd = post(api, "gitea", b"{}", headers={**forge_headers("gitea", b"{}"), "X-Gitea-Event": b"\xffpush\xc3"})
    assert odd.status_code == 200 and "push" in odd.json()["ignored"], odd.text  # not UTF-8: still only a name
    assert snapshot(db) == before


def test_the_branch_filter(api, db):
    setup(api, query="?branches=main,release/*", script=b"true\n")
    main = pinned("github-push-main.json", "1" * 40)
    for ref in ["refs/heads/main", "refs/heads/release/2.0", "refs/heads/release/2.0/hotfix"]:
        response = post(api, "github", main | {"ref": ref})
        assert response.status_code == 201, response.text
        assert response.json()["env"]["PIETER_BRANCH"] == ref.removeprefix("refs/heads/")
        settle(api, db, response.json()["id"])
    before = snapshot(db)
    for ref in ["refs/heads/feature/x", "refs/heads/mainline", "refs/heads/Main", "refs/tags/main"]:
        response = post(api, "github", main | {"ref": ref})
        assert response.status_code == 200, response.text
        assert response.json() == {"skipped": f"{ref} is not among the scenario's branches (main,release/*)"}
    tag = post(api, "gitlab", (PAYLOADS / "gitlab-tag-push.json").read_bytes(), event="Tag Push Hook")
    assert tag.json() == {"skipped": "refs/tags/v1.0.0 is not among the scenario's branches (main,release/*)"}
    assert snapshot(db) == before
    assert api.put("/repos/demo/build.sh?branches=", content=b"true\n").status_code == 200  # filter cleared
    assert post(api, "github", main | {"ref": "refs/heads/feature/x"}).status_code == 201


def test_malformed_deliveries(api, db):
    setup(api)
    bad = [b"{not json", b"[1, 2]", b'"push"', b"", b"{" * 100_000,
           json.dumps({"ref": "refs/heads/main"}).encode(),  # no after
           json.dumps({"ref": 7, "after": "a" * 40}).encode(),
           json.dumps({"ref": "refs/heads/main", "after": "not-a-sha"}).encode(),
           json.dumps({"ref": "refs/heads/main", "after": "A" * 40}).encode(),
           json.dumps({"ref": "refs/heads/ma\nin", "after": "a" * 40}).encode()]  # not a git ref  # fmt: skip
    errors = refused(api, db, [("github", body, forge_headers("github", body)) for body in bad], status=400)
    assert "malformed JSON in the webhook's body" in errors[0] and "JSON object" in errors[1]
    assert "not a valid git ref" in errors[-1]
    refused(api, db, [("github", b"{not json", forge_headers("github", b"other"))])  # unsigned: 401 before 400
    for path, status in [("/hooks/nope/build.sh", 404), ("/hooks/demo/nope", 404), ("/hooks/..x/build.sh", 400)]:
        response = api.post(path, content=b"{}", headers=forge_headers("github", b"{}"))
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"]


def test_no_bearer_token_needed_where_tokens_are_required(start_server, db):
    server = start_server(PIETER_REQUIRE_TOKEN="1")
    token = "pieter_test-token-for-the-hooks"
    db.hset("pieter:tokens", "tester", hashlib.sha256(token.encode()).hexdigest())
    with server.client() as api:
        assert api.get("/repos").status_code == 401
        api.headers["Authorization"] = f"Bearer {token}"
        setup(api, script=b"true\n")
    with server.client() as anonymous:
        body = json.dumps(pinned("github-push-main.json", "2" * 40)).encode()
        response = post(anonymous, "github", body)
        assert response.status_code == 201, response.text
        assert anonymous.get(response.headers["location"]).status_code == 401  # the rest of the API still is closed
        assert post(anonymous, "github", body, headers={"X-GitHub-Event": "push"}).status_code == 401
        assert post(anonymous, "github", (PAYLOADS / "github-ping.json").read_bytes(), event="ping").status_code == 200


def test_the_original_webhooks_path(start_server, db, git_repo, two_commits):
    """The original Pieter's POST /webhooks/{repo}/{scenario}: the same hook, with no bearer token either."""
    first, _ = two_commits
    server = start_server(PIETER_REQUIRE_TOKEN="1")
    token = "pieter_test-token-for-the-hooks"
    db.hset("pieter:tokens", "tester", hashlib.sha256(token.encode()).hexdigest())
    with server.client() as api:
        api.headers["Authorization"] = f"Bearer {token}"
        setup(api, source=str(git_repo))
        with server.client() as anonymous:
            response = post(anonymous, "github", pinned("github-push-main.json", first), hooks="/webhooks")
        assert response.status_code == 201, response.text
        assert response.json()["commit"] == first
        assert wait_for_job(api, response.json()["id"])["result"] == "success"
        assert f"head={first}\n" in api.get(f"/jobs/{response.json()['id']}/log").text


def test_recognising_the_forge_from_its_headers():
    body = b"{}"
    for forge in DEFAULT_EVENT:
        headers = forge_headers(forge, body)
        assert forges.recognise(headers) == forge
        assert forges.recognise({k.lower(): v for k, v in headers.items()}) == forge
        assert forges.verify(forge, headers, body, SECRET)
        assert not forges.verify(forge, headers, body + b" ", SECRET) or forge == "gitlab"  # GitLab signs nothing
        assert not forges.verify(forge, headers, body, SECRET + "x")
    assert forges.recognise({"Content-Type": "application/json", "X-GitHub-Event": ""}) is None


def test_branch_globs():
    assert forges.branch_matches("", "anything") and forges.branch_matches("", "")
    assert forges.branch_matches("main,release/*", "release/1.0")
    assert forges.branch_matches("release/*", "release/1.0/rc")  # `*` crosses `/`
    assert forges.branch_matches("v?.x", "v1.x") and not forges.branch_matches("v?.x", "v10.x")
    assert not forges.branch_matches("main", "main2") and not forges.branch_matches("main", "")
