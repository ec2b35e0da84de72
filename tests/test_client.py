"""The `pieter` client commands against a real server: what a user types, what they read, the exit code."""

import os
import pty
import re
import subprocess
import sys

from tests.conftest import wait_for_job, wait_for_log


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


def test_run_follow_exits_130_when_the_job_is_cancelled(server, api):
    api.put("/repos/demo")
    api.put("/repos/demo/wait", content=b"echo started\nsleep 30\n")
    env = {**server.env, "PIETER_URL": server.url}
    following = subprocess.Popen([sys.executable, "-m", "pieter", "run", "demo", "wait", "-f"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    job_id = int(following.stderr.readline().split()[1])  # "job 1 queued"
    wait_for_log(api, job_id, "started")
    api.post(f"/jobs/{job_id}/cancel")
    out, err = following.communicate(timeout=30)
    assert following.returncode == 130 and out == "started\n" and "cancelled" in err, err


def test_a_progress_line_on_a_terminal_and_none_when_piped(start_server):
    server = start_server(PIETER_MAX_JOBS="1")
    with server.client() as api:
        api.put("/repos/demo")
        api.put("/repos/demo/block", content=b"sleep 30\n")
        api.put("/repos/demo/quick", content=b"echo done\n")
        blocker = api.patch("/repos/demo/block").json()["id"]
        wait_for_job(api, blocker, ("running",))
        env = {**server.env, "PIETER_URL": server.url}
        argv = [sys.executable, "-m", "pieter", "run", "demo", "quick", "-f"]
        terminal, tty = pty.openpty()
        on_terminal = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=tty)
        os.close(tty)
        piped = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shown = b""
        while shown.count(b"queued ") < 3:  # a few refreshes of the line while the job waits
            shown += os.read(terminal, 1024)
        api.post(f"/jobs/{blocker}/cancel")
        assert on_terminal.wait(30) == 0 and on_terminal.stdout.read() == b"done\n"
        assert piped.wait(30) == 0 and piped.stdout.read() == b"done\n"
        os.close(terminal)
    assert re.search(rb"\rjob \d+: queued +\d+\.\d s", shown), shown
    assert b"\r" not in piped.stderr.read(), "piped: plain lines only"
