"""The `pieter` client commands against a real server: what a user types, what they read, the exit code."""

import functools
import http.server
import os
import pty
import re
import signal
import subprocess
import sys
import threading

from tests.conftest import wait_for_job, wait_for_log


def pieter(server, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "PIETER_URL": server.url, **settings}
    return subprocess.run([sys.executable, "-m", "pieter", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def on_a_terminal(server, *args: str) -> str:
    """What `pieter ARGS` shows with its stdout on a terminal (a pty), as its user reads it."""
    env = {**server.env, "PIETER_URL": server.url}
    terminal, tty = pty.openpty()
    client = subprocess.Popen([sys.executable, "-m", "pieter", *args], env=env, stdout=tty)
    os.close(tty)
    shown = b""
    try:
        while chunk := os.read(terminal, 1024):
            shown += chunk
    except OSError:  # EIO: the client has exited, the terminal's other end is closed
        pass
    os.close(terminal)
    assert client.wait(30) == 0
    return shown.decode().replace("\r\n", "\n")


def following(server, *args: str) -> subprocess.Popen[str]:
    """A client left running, as on a terminal: SIGINT raises KeyboardInterrupt in it even when the tests
    themselves run with SIGINT ignored (in the background), which a child would inherit."""
    env = {**server.env, "PIETER_URL": server.url}
    return subprocess.Popen([sys.executable, "-m", "pieter", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


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


def test_names_are_quoted_in_paths_so_the_server_judges_them(server, api):
    api.put("/repos/my.repo-1_x")
    api.put("/repos/my.repo-1_x/build_2.sh", content=b"echo fine\n")
    assert pieter(server, "run", "my.repo-1_x", "build_2.sh", "-f").stdout == "fine\n"
    for repo, scenario in (("a b", "x"), ("x?y", "z"), ("a/b", "x"), ("my.repo-1_x", "build_2.sh#x")):
        refused = pieter(server, "run", repo, scenario)
        assert refused.returncode == 1 and "400 invalid" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert api.get("/jobs").json()["total"] == 1


def test_a_bad_url_or_token_is_a_clear_error(server):
    bad_url = pieter(server, "repos", PIETER_URL="foo")
    assert bad_url.returncode == 1 and "PIETER_URL 'foo' is not an http:// or https:// URL" in bad_url.stderr
    bad_token = pieter(server, "repos", PIETER_TOKEN="secret\nsecret")
    assert bad_token.returncode == 1 and "PIETER_TOKEN must be printable ASCII" in bad_token.stderr
    assert "secret" not in bad_token.stderr


def test_a_server_that_is_not_pieter_is_a_clear_error(server, tmp_path):
    (tmp_path / "repos").write_text("<html>not JSON</html>\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_port}"
        not_json = pieter(server, "repos", PIETER_URL=url)
        not_found = pieter(server, "jobs", PIETER_URL=url)
        other.shutdown()
    assert not_json.returncode == 1 and f"the answer is not Pieter's JSON (is {url} Pieter?)" in not_json.stderr
    assert not_found.returncode == 1 and "GET /jobs?limit=20: 404" in not_found.stderr
    assert "Traceback" not in not_json.stderr + not_found.stderr


def test_ctrl_c_stops_the_client_quietly_and_not_the_job(server, api):
    api.put("/repos/demo")
    api.put("/repos/demo/wait", content=b"echo started\nsleep 30\n")
    run = following(server, "run", "demo", "wait", "-f")
    job_id = int(run.stderr.readline().split()[1])  # "job 1 queued"
    log = following(server, "log", str(job_id), "-f")
    assert run.stdout.readline() == "started\n" and log.stdout.readline() == "started\n"  # both streaming
    for client in (run, log):
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
        assert client.returncode == 130 and "Traceback" not in err and err.strip() == "", err
    assert api.get(f"/jobs/{job_id}").json()["state"] == "running"
    api.post(f"/jobs/{job_id}/cancel")


def test_a_server_gone_while_followed_is_an_error_not_a_success(start_server):
    server = start_server()
    with server.client() as api:
        api.put("/repos/demo")
        api.put("/repos/demo/wait", content=b"echo started\nsleep 30\n")
        run = following(server, "run", "demo", "wait", "-f")
        job_id = int(run.stderr.readline().split()[1])
        log = following(server, "log", str(job_id), "-f")
        assert run.stdout.readline() == "started\n" and log.stdout.readline() == "started\n"
    server.stop(9)
    for client in (run, log):
        _, err = client.communicate(timeout=30)
        assert client.returncode == 1 and f"the log stream ended, and whether job {job_id} did is unknown" in err, err
        assert "Traceback" not in err


def test_jobs_lines_up_its_columns_under_a_header_on_a_terminal_and_refuses_a_limit_below_1(server, api):
    for repo, scenario in (("a", "b"), ("a-longer-repo", "a-longer-scenario")):
        api.put(f"/repos/{repo}")
        api.put(f"/repos/{repo}/{scenario}", content=b"true\n")
        wait_for_job(api, api.patch(f"/repos/{repo}/{scenario}").json()["id"])
    lines = pieter(server, "jobs").stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["a-longer-repo/a-longer-scenario", "a/b"]
    assert len({line.index("success") for line in lines}) == 1, lines
    header, *rows = on_a_terminal(server, "jobs").splitlines()
    assert header.split() == ["ID", "REPO/SCENARIO", "STATE", "RESULT", "RC", "SECONDS"] and rows == lines
    for name, column in zip(re.finditer(r"\S+", header), re.finditer(r"\S+", rows[0])):
        assert name.start() == column.start() or name.end() == column.end(), (header, rows[0])  # aligned
    refused = pieter(server, "jobs", "--limit", "0")
    assert refused.returncode == 2 and "argument --limit: '0': expected a whole number, 1 or more" in refused.stderr
