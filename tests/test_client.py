"""The `pieter` client commands against a real server: what a user types, what they read, the exit code."""

import subprocess
import sys

from tests.conftest import wait_for_job


def pieter(server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "PIETER_URL": server.url}
    return subprocess.run([sys.executable, "-m", "pieter", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_run_follow_streams_and_exits_with_the_jobs_code(server, api):
    api.put("/repos/demo")
    api.put("/repos/demo/build", content=b'echo "hello $WHO"\nexit 3\n')
    done = pieter(server, "run", "demo", "build", "-e", "WHO=world", "--follow")
    assert done.stdout == "hello world\n"
    assert done.returncode == 3
    assert "exit-code" in done.stderr


def test_run_follow_codes_for_timeout_and_success(server, api):
    api.put("/repos/demo")
    api.put("/repos/demo/ok", content=b"echo fine\n")
    api.put("/repos/demo/slow?timeout=1", content=b"sleep 30\n")
    assert pieter(server, "run", "demo", "ok", "-f").returncode == 0
    assert pieter(server, "run", "demo", "slow", "-f").returncode == 124


def test_repos_jobs_log_cancel(server, api):
    api.put("/repos/alpha")
    api.put("/repos/alpha/wait", content=b"echo waiting\nsleep 30\n")
    assert pieter(server, "repos").stdout.split() == ["alpha"]
    queued = pieter(server, "run", "alpha", "wait")
    job_id = int(queued.stdout)
    wait_for_job(api, job_id, ("running",))
    listed = pieter(server, "jobs", "--repo", "alpha")
    assert listed.stdout.split()[:3] == [str(job_id), "alpha/wait", "running"]
    assert "cancelled" in pieter(server, "cancel", str(job_id)).stdout
    assert pieter(server, "log", str(job_id), "-f").stdout == "waiting\n"
    again = pieter(server, "cancel", str(job_id))
    assert again.returncode == 1 and "409" in again.stderr


def test_unreachable_server_is_a_clear_error(server):
    server.env["PIETER_URL"] = "http://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-m", "pieter", "repos"], env=server.env, capture_output=True, text=True)
    assert done.returncode == 1 and "cannot reach http://127.0.0.1:9" in done.stderr
