"""Bearer tokens: made with `pieter token`, stored hashed, optional on loopback except for jobs' users,
required elsewhere."""

import json
import os
import pwd
import subprocess
import sys

import pytest

from pieter import tokens
from tests.conftest import wait_for_job


def pieter_token(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pieter", "token", *args], env=server.env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def test_optional_on_loopback_but_checked_when_given(server, api):
    assert api.get("/repos").status_code == 200
    wrong = api.get("/repos", headers={"Authorization": "Bearer pieter_wrong"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    made = pieter_token(server, "add", "ci")
    secret = made.stdout.strip()
    assert made.returncode == 0 and secret.startswith("pieter_")
    assert api.get("/repos", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_required_token_lifecycle(start_server, db):
    server = start_server(PIETER_REQUIRE_TOKEN="1")
    with server.client() as api:
        none_yet = api.get("/repos")
        assert none_yet.status_code == 401 and "pieter token add" in none_yet.json()["error"]
        secret = pieter_token(server, "add", "deploy").stdout.strip()
        assert secret.encode() not in b"".join(v for v in db.hvals("pieter:tokens")), "only a digest is kept"
        assert db.hget("pieter:tokens", "deploy").decode() == tokens.digest(secret)
        assert pieter_token(server, "add", "deploy").returncode == 1, "a name is not made twice"
        assert api.get("/repos").status_code == 401
        assert api.put("/repos/x").status_code == 401 and not db.exists("pieter:repo:x"), "refused: nothing written"
        assert api.get("/repos", headers={"Authorization": "Basic abc"}).status_code == 401
        assert api.get("/repos", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert pieter_token(server, "list").stdout.split() == ["deploy"]
        httpie = subprocess.run(["http", "--ignore-stdin", "--check-status", "-A", "bearer", "-a", secret,
                                 f"{server.url}/repos"], capture_output=True, timeout=30)  # fmt: skip
        assert httpie.returncode == 0, httpie.stderr
        assert pieter_token(server, "revoke", "deploy").returncode == 0
        assert api.get("/repos", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_required_off_loopback(start_server, db):
    server = start_server(PIETER_API_HOST="0.0.0.0")
    with server.client() as api:
        response = api.get("/repos")
        assert response.status_code == 401
        secret = pieter_token(server, "add", "ci").stdout.strip()
        assert api.get("/repos", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def curl_as(uid: int, url: str, token: str | None = None) -> tuple[int, object]:
    """GET url with curl running as `uid`: the status and the JSON body."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "curl", "-s",
                          "-w", r"\n%{http_code}", *auth, url], capture_output=True, text=True, timeout=30,
                         check=True).stdout  # fmt: skip
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as the job user needs root")
@pytest.mark.parametrize("uid", [pwd.getpwnam("nobody").pw_uid, 61300])  # PIETER_JOB_USER; a DynamicUser= uid
def test_jobs_users_need_a_token_on_loopback(server, api, uid):
    status, body = curl_as(uid, f"{server.url}/repos")
    assert status == 401 and body["error"].startswith("requests from a job's processes need a token, and none")
    secret = pieter_token(server, "add", "ci").stdout.strip()
    status, body = curl_as(uid, f"{server.url}/repos")
    assert status == 401 and "requests from a job's processes need a token: send" in body["error"]
    assert curl_as(uid, f"{server.url}/repos", secret) == (200, [])
    assert curl_as(1000, f"{server.url}/repos") == (200, []), "another user of the host needs none"
    assert api.get("/repos").status_code == 200, "nor does root"


def test_a_job_cannot_drive_the_api(server, api):
    """The finding itself: a job's script calls the API on 127.0.0.1 and changes nothing."""
    assert api.put("/repos/victim", json={"source": ""}).status_code == 201
    assert api.put("/repos/victim/build.sh", content=b"echo original\n").status_code == 201
    attack = (f"curl -s -X PUT --data-binary 'echo pwned' {server.url}/repos/victim/build.sh; echo\n"
              f"curl -s -X DELETE {server.url}/repos/victim\n")  # fmt: skip
    assert api.put("/repos/attacker", json={"source": ""}).status_code == 201
    assert api.put("/repos/attacker/evil.sh", content=attack.encode()).status_code == 201
    job = wait_for_job(api, api.patch("/repos/attacker/evil.sh").json()["id"])
    refused = [json.loads(line)["error"] for line in api.get(f"/jobs/{job['id']}/log").text.splitlines()]
    assert refused == [refused[0]] * 2 and refused[0].startswith("requests from a job's processes need a token")
    assert api.get("/repos/victim/build.sh/script").text == "echo original\n"


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                             ("0.0.0.0", False), ("192.0.2.7", False), ("::", False)])  # fmt: skip
def test_what_counts_as_local(host, local):
    assert tokens.is_local(None, host) is local


def test_a_token_that_is_not_utf8_is_refused_not_a_crash(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"GET /repos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
