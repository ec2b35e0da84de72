"""The original Pieter README's httpie walkthrough, as written (a local git repo as the source), against a
real server: every step answers as documented and the job succeeds with its output in its log."""

import json
import shutil
import subprocess

import pytest

from tests.conftest import wait_for_job

pytestmark = pytest.mark.skipif(shutil.which("http") is None, reason="httpie is not installed (make test installs it)")


def http(*args: str, stdin: bytes | None = None) -> tuple[int, object]:
    """Run httpie as a user would; returns the HTTP status and the parsed JSON body."""
    command = ["http", "--check-status", "--print=hb", *args]
    if stdin is None:
        command.insert(1, "--ignore-stdin")  # no terminal here: httpie would wait for a body on stdin
    result = subprocess.run(command, input=stdin, capture_output=True, timeout=30)
    head, _, body = result.stdout.decode().partition("\r\n\r\n")
    if not body:
        head, _, body = result.stdout.decode().partition("\n\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body.strip() else None


def test_original_walkthrough(server, git_repo, tmp_path):
    base = server.url
    script = tmp_path / "test_script.sh"
    script.write_bytes(b'#!/bin/sh\necho "building $PIETER_REPO"\ncat hello.txt\n')

    assert http("GET", f"{base}/repos") == (200, [])
    status, repo = http("PUT", f"{base}/repos/pieter", f"source={git_repo}")
    assert status == 201 and repo["source"] == str(git_repo)
    status, repo = http("GET", f"{base}/repos/pieter")
    assert status == 200 and repo["name"] == "pieter"

    status, scenario = http("PUT", f"{base}/repos/pieter/build.sh", stdin=script.read_bytes())
    assert status == 201 and scenario["data"] == script.read_text()
    status, scenario = http("GET", f"{base}/repos/pieter/build.sh")
    assert status == 200 and scenario["data"] == script.read_text()

    status, job = http("PATCH", f"{base}/repos/pieter/build.sh")
    assert status == 201 and job["state"] == "queued"
    job_id = job["id"]
    with server.client() as api:
        wait_for_job(api, job_id)
        log = api.get(f"/jobs/{job_id}/log").text
    status, job = http("GET", f"{base}/jobs/{job_id}")
    assert status == 200 and job["state"] == "success" and job["rc"] == 0
    assert "building pieter" in log and "hello from the repo" in log

    assert http("DELETE", f"{base}/repos/pieter/build.sh")[0] == 200
    assert http("DELETE", f"{base}/repos/pieter")[0] == 200
    assert http("DELETE", f"{base}/jobs/{job_id}")[0] == 200
    assert http("GET", f"{base}/repos") == (200, [])
