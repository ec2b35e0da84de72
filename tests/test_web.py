"""The pages, their event stream, sign-in, badges and metrics over HTTP, against real servers and a real Redis
(the browser's view is tests/test_web_browser.py)."""

import re
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pieter
from pieter import tokens
from tests.conftest import wait_for_job

HTTPIE_ACCEPT = "application/json, */*;q=0.5"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def add_token(db, name: str = "web") -> str:
    secret = tokens.new_secret()
    db.hset("pieter:tokens", name, tokens.digest(secret))
    return secret


def scenario(api: httpx.Client, script: str = "echo hello\n", name: str = "build.sh", **settings: str) -> None:
    assert api.put("/repos/demo", json={"source": ""}).status_code in (200, 201)
    assert api.put(f"/repos/demo/{name}", content=script.encode(), params=settings).status_code in (200, 201)


def run(api: httpx.Client, name: str = "build.sh", **body: object) -> dict:
    return wait_for_job(api, api.patch(f"/repos/demo/{name}", json=body).json()["id"])


def test_browsers_get_the_pages_and_clients_keep_json(api):
    sent = api.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert sent.status_code == 303 and sent.headers["location"] == "/ui/"
    for accept in (HTTPIE_ACCEPT, "*/*"):
        info = api.get("/", headers={"Accept": accept})
        assert info.status_code == 200 and info.json()["name"] == "pieter-ci"
    page = api.get("/ui/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Overview</h1>" in page.text and "/ui/static/app.js" in page.text


def test_pages_show_jobs_and_escape_what_they_show(api):
    scenario(api, "echo '<b>bold</b>'\nexit 2\n")
    job = run(api, env={"WHO": "<script>alert(1)</script>"})
    page = api.get(f"/ui/jobs/{job['id']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert 'class="pill fail"' in page and "<dd>2</dd>" in page, "state and exit code"
    assert f'data-job="{job["id"]}" data-lines="1"' in page and "Re-run" in page and "Cancel" not in page
    overview = api.get("/ui/").text
    assert "Failing now (1)" in overview and f'href="/ui/jobs/{job["id"]}"' in overview
    history = api.get("/ui/repos/demo/build.sh").text
    assert '<svg class="chart"' in history and "0% of the last 1 finished" in history
    assert "/badge/demo/build.sh.svg" in history and "/hooks/demo/build.sh" in history
    assert 'id="run"' in history
    assert "build.sh" in api.get("/ui/repos/demo").text and "demo" in api.get("/ui/repos").text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [("/ui/jobs/0", 404, "no job '0'"), ("/ui/jobs/999", 404, "no job 999"), ("/ui/repos/..x", 400, "invalid repo"),
     ("/ui/repos/nope", 404, "no repo named 'nope'"), ("/ui/repos/demo/nope", 404, "no scenario named 'nope'"),
     ("/ui/events?after=x", 400, "Last-Event-ID"), ("/badge/demo/build.sh", 400, "ends in .svg"),
     ("/badge/demo/..svg", 400, "invalid scenario"), ("/jobs/1/log?limit=-1", 400, "limit")],
)  # fmt: skip
def test_bad_page_requests_are_4xx_json_naming_the_problem(api, path, status, says):
    scenario(api)
    response = api.get(path)
    assert response.status_code == status and says in response.json()["error"], response.text


def test_log_pages_with_offset_and_limit(api):
    scenario(api, "seq 1 10\n")
    job = run(api)
    assert api.get(f"/jobs/{job['id']}/log", params={"offset": 3, "limit": 2}).text == "4\n5\n"
    assert api.get(f"/jobs/{job['id']}/log", params={"offset": 8}).text == "9\n10\n", "no limit: to the end"
    assert api.get(f"/jobs/{job['id']}/log", params={"limit": 0}).text == ""


def events(text: str) -> list[tuple[str, str]]:
    """(id, data) of each event of an event-stream body."""
    return re.findall(r"^id: (\S+)\nevent: job\ndata: (.*)$", text, re.M)


def test_event_stream_sends_job_changes_and_resumes_after_last_event_id(api):
    scenario(api)
    job = run(api)
    backlog = events(api.get("/ui/events", headers={"Last-Event-ID": "0-0"}).text)
    mine = [data for _, data in backlog if f'"job": "{job["id"]}"' in data]
    assert [re.search(r'"state": "(\w+)"', d)[1] for d in mine] == ["queued", "running", "success"]  # type: ignore[index]
    after_first = events(api.get("/ui/events", headers={"Last-Event-ID": backlog[0][0]}).text)
    assert after_first == backlog[1:], "resumed after the id it was given, nothing twice"
    assert events(api.get("/ui/events").text) == [], "no id: from now on"


def test_event_stream_is_live_with_keepalives(server, api):
    scenario(api, "sleep 0.3\n")
    seen = ""
    with httpx.stream("GET", server.url + "/ui/events", headers={"Accept": "text/event-stream"}, timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        job_id = api.patch("/repos/demo/build.sh").json()["id"]
        deadline = time.monotonic() + 15
        while '"state": "success"' not in seen or ": keep-alive" not in seen:
            assert time.monotonic() < deadline, seen
            seen += next(lines) + "\n"
    assert f'"job": "{job_id}", "state": "queued"' in seen and f'"job": "{job_id}", "state": "running"' in seen


def test_sign_in_gives_a_session_cookie_that_ends(start_server, db):
    server = start_server(PIETER_REQUIRE_TOKEN="1")
    secret = add_token(db)
    with server.client() as api:
        assert api.get("/ui/jobs/1").headers["location"] == "/ui/signin?next=/ui/jobs/1"
        assert api.get("/ui/").status_code == 303 and api.get("/ui/signin").status_code == 200
        assert api.get("/ui/events").status_code == 401 and api.get("/repos").status_code == 401
        assert "pieter:repo" not in api.get("/ui/static/app.css").text and api.get("/metrics").status_code == 401
        wrong = api.post("/ui/signin", data={"token": "pieter_wrong", "next": "/ui/jobs/1"})
        assert wrong.status_code == 303 and "failed=1" in wrong.headers["location"] and not api.cookies
        assert "not valid" in api.get(wrong.headers["location"]).text
        good = api.post("/ui/signin", data={"token": secret, "next": "//elsewhere.example/"})
        assert good.status_code == 303 and good.headers["location"] == "/ui/", "no open redirect"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
        assert api.get("/ui/").status_code == 200 and api.get("/repos").status_code == 200, "the cookie signs in"
        kept = db.keys("pieter:session:*")
        assert len(kept) == 1 and 0 < db.ttl(kept[0]) <= 43200
        assert db.get(kept[0]).decode() == tokens.digest(secret), "the token's digest, not the token"
        assert api.post("/ui/signout").status_code == 303 and not db.keys("pieter:session:*")
        assert api.get("/ui/").status_code == 303
        api.post("/ui/signin", data={"token": secret})
        assert api.get("/ui/").status_code == 200
        db.hdel("pieter:tokens", "web")
        assert api.get("/ui/").status_code == 303, "a revoked token's sessions end with it"


def test_cross_site_requests_change_nothing(api, db):
    scenario(api, "sleep 30\n")
    job_id = api.patch("/repos/demo/build.sh").json()["id"]
    refused = api.post(f"/jobs/{job_id}/cancel", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-site" in refused.json()["error"]
    assert api.patch("/repos/demo/build.sh", headers={"Origin": "null"}).status_code == 403
    assert db.zcard("pieter:jobs") == 1 and api.get(f"/jobs/{job_id}").json()["state"] in ("queued", "running")
    own = api.post(f"/jobs/{job_id}/cancel", headers={"Origin": str(api.base_url).rstrip("/")})
    assert own.status_code == 200 and own.json()["state"] == "cancelled"


def test_badges(api):
    def badge(name: str) -> str:
        response = api.get(f"/badge/demo/{name}.svg")
        assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
        assert response.headers["cache-control"] == "no-cache"
        return re.search(r'aria-label="[^"]*: (\w+)"', response.text)[1]  # type: ignore[index]

    assert api.get("/badge/nope/nope.svg").status_code == 200, "never a 404"
    scenario(api, "exit 0\n")
    assert badge("build.sh") == "unknown" and badge("never.sh") == "unknown"
    run(api)
    assert badge("build.sh") == "success"
    scenario(api, "sleep 30\n")
    job_id = api.patch("/repos/demo/build.sh").json()["id"]
    wait_for_job(api, job_id, ("running",))
    assert badge("build.sh") == "running"
    api.post(f"/jobs/{job_id}/cancel")
    scenario(api, "exit 1\n")
    run(api)
    assert badge("build.sh") == "failing"


def test_badges_off_loopback_only_for_public_scenarios(start_server, db):
    server = start_server(PIETER_API_HOST="0.0.0.0")
    secret = add_token(db)
    with server.client() as api:
        api.headers["Authorization"] = f"Bearer {secret}"
        scenario(api)
        assert api.get("/badge/demo/build.sh.svg").status_code == 200
        del api.headers["Authorization"]
        for path in ("/badge/demo/build.sh.svg", "/badge/demo/nope.svg"):
            assert api.get(path).status_code == 401, "private by default, and says nothing of what exists"
        api.headers["Authorization"] = f"Bearer {secret}"
        scenario(api, badge="public")
        del api.headers["Authorization"]
        assert api.get("/badge/demo/build.sh.svg").status_code == 200
        assert api.get("/ui/repos/demo").status_code == 303 and api.get("/repos/demo").status_code == 401


def metrics(api: httpx.Client) -> dict[tuple[str, tuple], float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}  # fmt: skip


def test_metrics_parse_and_count_from_redis(start_server, server, api):
    scenario(api, "exit 0\n")
    for _ in range(2):
        run(api)
    scenario(api, "exit 1\n", name="bad.sh")
    run(api, name="bad.sh")
    scenario(api, "sleep 30\n", name="slow.sh")
    slow = api.patch("/repos/demo/slow.sh").json()["id"]
    wait_for_job(api, slow, ("running",))
    found = metrics(api)
    assert found[("pieter_jobs", (("state", "success"),))] == 2 and found[("pieter_jobs", (("state", "running"),))] == 1
    assert found[("pieter_runs_total", (("result", "success"),))] == 2
    assert found[("pieter_runs_total", (("result", "exit-code"),))] == 1
    assert found[("pieter_job_duration_seconds_count", ())] == 3
    assert found[("pieter_job_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert found[("pieter_queue_wait_seconds_count", ())] == 4 and found[("pieter_queue_length", ())] == 0
    host = (("host", server.env.get("PIETER_HOST") or socket.gethostname()),)
    assert found[("pieter_host_slots_in_use", host)] == 1 and found[("pieter_host_slots", host)] >= 1
    assert found[("pieter_redis_up", ())] == 1 and ("pieter_build_info", (("version", pieter.__version__),)) in found
    api.post(f"/jobs/{slow}/cancel")
    other = start_server()  # another server sharing the Redis reports the same counts
    with other.client() as second:
        assert metrics(second)[("pieter_runs_total", (("result", "success"),))] == 2
