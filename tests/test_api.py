"""The HTTP API against a real server and a real Redis: one request, then status and JSON."""

import subprocess

import pytest

from tests.conftest import snapshot, wait_for_job

SCRIPT = b"#!/bin/sh\necho hello\n"


@pytest.fixture
def scenario(api):
    assert api.put("/repos/demo", json={}).status_code == 201
    assert api.put("/repos/demo/build.sh", content=SCRIPT).status_code == 201
    return "/repos/demo/build.sh"


def test_service_info(api):
    info = api.get("/").json()
    assert info["name"] == "pieter-ci"
    assert info["runner"] == "local"
    assert info["redis"] == "ok"
    assert info["counts"]["repos"] == 0


def test_repo_lifecycle(api):
    assert api.get("/repos").json() == []
    created = api.put("/repos/pieter", json={"source": "https://example.com/pieter.git"})
    assert created.status_code == 201
    assert created.json()["source"] == "https://example.com/pieter.git"
    assert api.get("/repos").json() == ["pieter"]
    repo = api.get("/repos/pieter").json()
    assert repo["name"] == "pieter" and repo["scenarios"] == [] and repo["latest_job"] is None
    api.put("/repos/pieter/build.sh", content=SCRIPT)
    updated = api.put("/repos/pieter", json={"source": "/srv/pieter"})
    assert updated.status_code == 200
    assert updated.json()["source"] == "/srv/pieter"
    assert updated.json()["scenarios"] == ["build.sh"], "an update keeps the scenarios"
    assert api.put("/repos/pieter", content=b"").json()["source"] == "/srv/pieter", "an empty body changes nothing"
    deleted = api.delete("/repos/pieter")
    assert deleted.status_code == 200 and deleted.json()["deleted"] == "pieter"
    assert api.get("/repos/pieter").status_code == 404
    assert api.get("/repos/pieter/build.sh").status_code == 404


def test_repo_without_source(api):
    assert api.put("/repos/housekeeping").json()["source"] is None


def test_source_password_is_not_shown(api):
    repo = api.put("/repos/private", json={"source": "https://user:s3cret@example.com/x.git"}).json()
    assert "s3cret" not in repo["source"]
    assert "s3cret" not in api.get("/repos/private").text


def test_scenario_is_stored_byte_for_byte(api):
    api.put("/repos/demo")
    script = b'{"not": "parsed"}\n\xff\xfe binary \x00 tail'
    created = api.put("/repos/demo/odd", content=script, headers={"Content-Type": "application/json"})
    assert created.status_code == 201
    body = api.get("/repos/demo/odd").json()
    assert body["encoding"] == "base64"
    assert api.get("/repos/demo/odd/script").content == script


def test_scenario_text_and_settings(api, scenario):
    body = api.get(scenario).json()
    assert body["data"] == SCRIPT.decode() and "encoding" not in body
    assert body["settings"] == {}
    replaced = api.put(scenario + "?timeout=600&memory_max=512M", content=b"echo two\n")
    assert replaced.status_code == 200
    assert replaced.json()["settings"] == {"timeout": "600", "memory_max": "512M"}
    kept = api.put(scenario + "?timeout=", content=b"echo three\n").json()
    assert kept["settings"] == {"memory_max": "512M"}, "settings not sent are kept, an empty one is cleared"
    assert kept["data"] == "echo three\n"
    assert api.delete(scenario).status_code == 200
    assert api.get(scenario).status_code == 404
    assert api.get("/repos/demo").json()["scenarios"] == []


def test_patch_queues_a_job(api, scenario):
    response = api.patch(scenario, headers={"Content-Type": "application/json"})
    assert response.status_code == 201
    job = response.json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert job["name"] == job["id"] and job["repo"] == "demo" and job["scenario"] == "build.sh"
    assert job["state"] == "queued"
    done = wait_for_job(api, job["id"])
    assert done["state"] == "success" and done["result"] == "success" and done["rc"] == 0
    assert done["tail"] == ["hello"]
    assert done["duration"] >= 0 and done["finished"] >= done["started"] >= done["timestamp"]
    assert api.get(f"/jobs/{job['id']}/log").text == "hello\n"
    assert api.get("/repos/demo").json()["latest_job"] == job["id"]
    assert api.get(scenario).json()["latest_job"] == job["id"]


def test_job_keeps_a_snapshot_of_its_script(api, start_server, scenario):
    job = api.patch(scenario, json={"env": {"X": "1"}}).json()
    api.put(scenario, content=b"echo changed\n")
    assert wait_for_job(api, job["id"])["tail"] == ["hello"]


def test_job_ids_increase(api, scenario):
    ids = [api.patch(scenario).json()["id"] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_list_jobs_newest_first_with_filters(api, scenario):
    api.put("/repos/other")
    api.put("/repos/other/test", content=b"exit 3\n")
    ids = [api.patch(scenario).json()["id"] for _ in range(3)]
    other = api.patch("/repos/other/test").json()["id"]
    for job_id in [*ids, other]:
        wait_for_job(api, job_id)
    listing = api.get("/jobs").json()
    assert [j["id"] for j in listing["jobs"]] == [other, *ids[::-1]]
    assert listing["total"] == 4
    assert [j["id"] for j in api.get("/jobs?repo=demo&limit=2").json()["jobs"]] == ids[::-1][:2]
    assert [j["id"] for j in api.get("/jobs?repo=demo&offset=2").json()["jobs"]] == [ids[0]]
    failed = api.get("/jobs?state=fail").json()
    assert [j["id"] for j in failed["jobs"]] == [other] and failed["jobs"][0]["result"] == "exit-code"
    assert failed["jobs"][0]["rc"] == 3
    assert api.get("/jobs?repo=demo&scenario=build.sh&state=success").json()["total"] == 3
    assert api.get("/jobs?repo=other&state=success").json()["total"] == 0


def test_delete_job_removes_record_and_log(api, scenario, server):
    job_id = api.patch(scenario).json()["id"]
    wait_for_job(api, job_id)
    workspace = server.state_dir / "workspaces" / str(job_id)
    assert workspace.exists()
    assert api.delete(f"/jobs/{job_id}").json() == {"deleted": job_id}
    assert api.get(f"/jobs/{job_id}").status_code == 404
    assert api.get(f"/jobs/{job_id}/log").status_code == 404
    assert not workspace.exists()
    assert api.get("/jobs").json()["total"] == 0


def test_delete_scenario_cancels_queued_jobs_only(start_server, db):
    server = start_server(PIETER_MAX_JOBS="1")
    with server.client() as api:
        api.put("/repos/demo")
        api.put("/repos/demo/slow", content=b"sleep 1\necho done\n")
        running = api.patch("/repos/demo/slow").json()["id"]
        wait_for_job(api, running, ("running",))
        queued = api.patch("/repos/demo/slow").json()["id"]
        deleted = api.delete("/repos/demo/slow").json()
        assert deleted["cancelled_jobs"] == [queued]
        assert api.get(f"/jobs/{queued}").json()["state"] == "cancelled"
        assert wait_for_job(api, running)["state"] == "success", "a running job is left alone"


def test_retention_keeps_the_last_jobs(start_server, db):
    server = start_server(PIETER_KEEP_JOBS="2")
    with server.client() as api:
        api.put("/repos/demo")
        api.put("/repos/demo/quick", content=b"true\n")
        ids = []
        for _ in range(4):
            ids.append(api.patch("/repos/demo/quick").json()["id"])
            wait_for_job(api, ids[-1])
        assert [j["id"] for j in api.get("/jobs").json()["jobs"]] == ids[:1:-1]
        assert api.get(f"/jobs/{ids[0]}").status_code == 404
        assert not (server.state_dir / "workspaces" / str(ids[0])).exists()


def test_log_offset_and_follow(api):
    api.put("/repos/demo")
    api.put("/repos/demo/count", content=b"for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done\n")
    job_id = api.patch("/repos/demo/count").json()["id"]
    with api.stream("GET", f"/jobs/{job_id}/log?follow=1") as response:
        assert response.headers["content-type"].startswith("text/plain")
        followed = b"".join(response.iter_bytes())
    assert followed == b"".join(b"line %d\n" % i for i in range(1, 6))
    assert api.get(f"/jobs/{job_id}").json()["state"] == "success"
    assert api.get(f"/jobs/{job_id}/log?offset=3").text == "line 4\nline 5\n"


def test_cancel_a_queued_job(start_server, db):
    server = start_server(PIETER_MAX_JOBS="1")
    with server.client() as api:
        api.put("/repos/demo")
        api.put("/repos/demo/slow", content=b"sleep 2\n")
        first = api.patch("/repos/demo/slow").json()["id"]
        second = api.patch("/repos/demo/slow").json()["id"]
        cancelled = api.post(f"/jobs/{second}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["result"] == "cancelled"
        assert api.post(f"/jobs/{second}/cancel").status_code == 409
        api.post(f"/jobs/{first}/cancel")
        assert wait_for_job(api, first)["state"] == "cancelled"
        assert api.get(f"/jobs/{second}").json()["started"] is None, "a cancelled queued job never starts"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/repos/missing", 404),
        ("GET", "/repos/missing/build.sh", 404),
        ("PUT", "/repos/missing/build.sh", 404),
        ("PATCH", "/repos/missing/build.sh", 404),
        ("DELETE", "/repos/missing", 404),
        ("GET", "/jobs/12345", 404),
        ("GET", "/jobs/abc", 404),
        ("GET", "/jobs/0", 404),
        ("DELETE", "/jobs/-1", 404),
        ("POST", "/repos", 405),
        ("PATCH", "/jobs/1", 405),
        ("GET", "/jobs?limit=-1", 400),
        ("GET", "/jobs?limit=100000", 400),
        ("GET", "/jobs?state=sleeping", 400),
        ("GET", "/jobs?scenario=build.sh", 400),
        ("GET", "/jobs/1/log?offset=x", 400),
    ],
)
def test_errors_are_json(api, method, path, status):
    response = api.request(method, path, content=b"echo a script\n" if method == "PUT" else None)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str) and response.json()["error"]


BAD_NAMES = ["..", "a..b", ".hidden", "-dash", "a" * 65, "sp ace", "semi;colon", "uni\u00e9", "%00", "a%2Fb"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_repo_names_write_nothing(api, db, name):
    before = snapshot(db)
    response = api.put(f"/repos/{name}", json={"source": "/tmp/x"})
    assert 400 <= response.status_code < 500  # 405: the client already folded a ".." path
    assert "error" in response.json()
    assert snapshot(db) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_scenario_names_write_nothing(api, db, name):
    api.put("/repos/demo")
    before = snapshot(db)
    response = api.put(f"/repos/demo/{name}", content=SCRIPT)
    assert 400 <= response.status_code < 500  # 405: the client already folded a ".." path
    assert snapshot(db) == before


def test_long_name_of_64_is_fine_and_underscores_too(api):
    assert api.put("/repos/" + "a" * 64).status_code == 201
    assert api.put("/repos/my_repo.v2-x").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"source"',
        b'{"source": 5}',
        b'{"source": "--upload-pack=touch /tmp/pwned"}',
        b'{"source": "ext::sh -c touch% /tmp/pwned"}',
        b'{"source": "https://example.com/x\\nmore"}',
        b'{"unknown": 1}',
        b"[" * 100_000,
    ],
)
def test_bad_repo_bodies_write_nothing(api, db, body):
    before = snapshot(db)
    response = api.put("/repos/demo", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"secrets": ["A=1"]}, "secrets must be an object"),
        ({"secrets": {"1BAD": "x"}}, "invalid secrets name '1BAD'"),
        ({"secrets": {"LD_PRELOAD": "x"}}, "secrets name 'LD_PRELOAD' is not allowed"),
        ({"secrets": {"PIETER_X": "x"}}, "PIETER_* variables are set by Pieter"),
        ({"known_hosts": "garbage line"}, "known_hosts line 1 is not 'HOSTS KEYTYPE KEY'"),
        ({"known_hosts": "# ok\nhost ssh-ed25519 not*base64"}, "known_hosts line 2"),
        (
            {"deploy_key": "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n"},
            "deploy_key cannot be used",
        ),
    ],
)
def test_bad_private_fields_are_named_and_write_nothing(api, db, body, error):
    api.put("/repos/demo", json={"source": "https://example.com/x.git"})
    before = snapshot(db)
    response = api.put("/repos/demo", json={"source": "https://example.com/y.git", **body})
    assert response.status_code == 400 and error in response.json()["error"], response.text
    assert snapshot(db) == before


def test_a_deploy_key_with_a_passphrase_is_refused_and_a_plain_one_taken(api, tmp_path):
    for name, passphrase in (("locked", "pw"), ("plain", "")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", tmp_path / name], check=True)
    locked = api.put("/repos/demo", json={"deploy_key": (tmp_path / "locked").read_text()})
    assert locked.status_code == 400 and "passphrase" in locked.json()["error"], locked.text
    plain = api.put("/repos/demo", json={"deploy_key": (tmp_path / "plain").read_text()})
    assert plain.status_code == 201 and plain.json()["deploy_key"] is True


@pytest.mark.parametrize(
    "body",
    [
        b'{"env": {"LD_PRELOAD": "/tmp/evil.so"}}',
        b'{"env": {"BASH_ENV": "/tmp/x"}}',
        b'{"env": {"PYTHONSTARTUP": "/tmp/x"}}',
        b'{"env": {"1BAD": "x"}}',
        b'{"env": {"A-B": "x"}}',
        b'{"env": {"A": 1}}',
        b'{"env": {"A": "nul\\u0000byte"}}',
        b'{"env": ["A=1"]}',
        b'{"env": {"A": "x"}, "extra": 1}',
        b"{bad json",
    ],
)
def test_bad_job_parameters_write_nothing(api, db, scenario, body):
    before = snapshot(db)
    response = api.patch(scenario, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert snapshot(db) == before


@pytest.mark.parametrize("query", ["?bogus=1", "?timeout=-5", "?timeout=abc", "?memory_max=lots", "?cpu_quota=50"])
def test_bad_scenario_settings_write_nothing(api, db, query):
    api.put("/repos/demo")
    before = snapshot(db)
    response = api.put("/repos/demo/build.sh" + query, content=SCRIPT)
    assert response.status_code == 400
    assert snapshot(db) == before


@pytest.mark.parametrize("body", [b"", b"\n  \n"])
def test_an_empty_script_is_refused(api, db, body):
    api.put("/repos/demo")
    before = snapshot(db)
    response = api.put("/repos/demo/build.sh", content=body)
    assert response.status_code == 400 and "the script is empty" in response.json()["error"]
    assert snapshot(db) == before


def test_script_size_limit(start_server, db):
    server = start_server(PIETER_MAX_SCRIPT_BYTES="1000")
    with server.client() as api:
        api.put("/repos/demo")
        before = snapshot(db)
        too_big = api.put("/repos/demo/big", content=b"#" * 1001)
        assert too_big.status_code == 413 and "1000" in too_big.json()["error"]
        huge = api.put("/repos/demo/big", content=b"#" * 2_000_000)
        assert huge.status_code == 413 and huge.json()["error"]
        assert snapshot(db) == before
        assert api.put("/repos/demo/big", content=b"#" * 1000).status_code == 201
