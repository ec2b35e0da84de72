"""Jobs run by the local runner, end to end through a real server and a real Redis."""

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for_job
from tests.git_http import basic, git_server


def add(api, repo: str, scenario: str, script: bytes, source: str | None = None, query: str = "") -> str:
    api.put(f"/repos/{repo}", json={"source": source} if source else {})
    assert api.put(f"/repos/{repo}/{scenario}{query}", content=script).status_code in (200, 201)
    return f"/repos/{repo}/{scenario}"


def test_job_clones_its_source_and_sees_its_environment(api, git_repo):
    path = add(api, "demo", "build", b"cat hello.txt\necho $PIETER_JOB_ID $PIETER_REPO $PIETER_SCENARIO\npwd\n",
               source=str(git_repo))  # fmt: skip
    job = api.patch(path).json()
    done = wait_for_job(api, job["id"])
    assert done["result"] == "success", api.get(f"/jobs/{job['id']}/log").text
    log = api.get(f"/jobs/{job['id']}/log").text.splitlines()
    assert "hello from the repo" in log
    assert f"{job['id']} demo build" in log
    assert log[-1].endswith(f"/workspaces/{job['id']}")


def test_failed_clone_is_an_error(api, tmp_path):
    path = add(api, "demo", "build", b"echo never\n", source=str(tmp_path / "missing"))
    done = wait_for_job(api, api.patch(path).json()["id"])
    assert (done["state"], done["result"]) == ("fail", "error")
    log = api.get(f"/jobs/{done['id']}/log").text
    assert "git clone failed" in log and "never" not in log


def test_a_script_cannot_make_its_failure_read_as_a_failed_clone(api, git_repo):
    script = b": > .pieter-clone-failed\necho 'pieter: git clone failed: the job did not run'\nexit 1\n"
    done = wait_for_job(api, api.patch(add(api, "demo", "forge", script, source=str(git_repo))).json()["id"])
    assert (done["result"], done["rc"]) == ("exit-code", 1)


def test_parameters_reach_the_script_only(api):
    path = add(api, "demo", "params", b'echo "[$GREETING]"\necho "[${PIETER_REDIS_URL:-}]"\n')
    job = api.patch(path, json={"env": {"GREETING": "hello 'quoted' $world\nline two"}}).json()
    assert job["env"] == {"GREETING": "hello 'quoted' $world\nline two"}
    wait_for_job(api, job["id"])
    assert api.get(f"/jobs/{job['id']}/log").text == "[hello 'quoted' $world\nline two]\n[]\n"


def test_script_with_a_shebang_runs_with_its_interpreter(api):
    path = add(api, "demo", "py", b"#!/usr/bin/env python3\nprint('from python', 6 * 7)\n")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["tail"] == ["from python 42"]


def test_cancel_kills_the_whole_tree(api, shared_dir):
    marker = shared_dir / "child.pid"
    path = add(api, "demo", "tree", f"sleep 300 &\necho $! > {marker}\necho started\nwait\n".encode())
    job_id = api.patch(path).json()["id"]
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    done = wait_for_job(api, job_id)
    assert (done["state"], done["result"]) == ("cancelled", "cancelled")
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and not _zombie(child):
        assert time.monotonic() < deadline, "the backgrounded child survived the cancel"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_timeout_fires(api):
    path = add(api, "demo", "sleepy", b"echo going to sleep\nsleep 600\n", query="?timeout=1")
    started = time.monotonic()
    done = wait_for_job(api, api.patch(path).json()["id"])
    assert (done["state"], done["result"]) == ("fail", "timeout")
    assert time.monotonic() - started < 10
    assert done["tail"] == ["going to sleep"]


def test_signal_and_exit_code(api):
    crash = add(api, "demo", "crash", b"kill -9 $$\n")
    fail = add(api, "demo", "fail", b"echo oops >&2\nexit 7\n")
    crashed = wait_for_job(api, api.patch(crash).json()["id"])
    failed = wait_for_job(api, api.patch(fail).json()["id"])
    assert (crashed["result"], crashed["rc"]) == ("signal", -9)
    assert (failed["result"], failed["rc"], failed["tail"]) == ("exit-code", 7, ["oops"])


def test_at_most_max_jobs_at_once(start_server, db, shared_dir):
    server = start_server(PIETER_MAX_JOBS="2")
    record = shared_dir / "record"
    script = f"echo start $(date +%s.%N) >> {record}\nsleep 0.3\necho end $(date +%s.%N) >> {record}\n"
    with server.client() as api:
        path = add(api, "demo", "par", script.encode())
        ids = [api.patch(path).json()["id"] for _ in range(10)]
        for job_id in ids:
            assert wait_for_job(api, job_id)["result"] == "success"
    events = sorted((float(t), kind) for kind, t in (line.split() for line in record.read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert len(events) == 20
    assert peak == 2, f"{peak} jobs ran at once"


def test_a_server_killed_mid_job_marks_it_lost_at_restart(start_server, db):
    server = start_server()
    with server.client() as api:
        path = add(api, "demo", "long", b"echo begun\nsleep 5\n")
        job_id = api.patch(path).json()["id"]
        wait_for_job(api, job_id, ("running",))
        time.sleep(0.3)
    server.stop(9)
    server.start()
    with server.client() as api:
        done = wait_for_job(api, job_id)
        assert (done["state"], done["result"]) == ("fail", "lost")
        assert "begun" in api.get(f"/jobs/{job_id}/log").text
        again = wait_for_job(api, api.patch(path.replace("long", "long")).json()["id"], ("running",))
        assert again["state"] == "running", "the queue moves on"


def test_jobs_queued_while_the_server_was_down_run_at_start(start_server, db):
    server = start_server()
    with server.client() as api:
        path = add(api, "demo", "quick", b"echo ok\n")
    server.stop()
    db_jobs = []
    server.start()
    with server.client() as api:
        db_jobs = [api.patch(path).json()["id"] for _ in range(3)]
        for job_id in db_jobs:
            assert wait_for_job(api, job_id)["result"] == "success"


@pytest.mark.parametrize("lines", [20_000])
def test_chatty_job_loses_no_line(api, lines):
    path = add(api, "demo", "chatty", f"seq 1 {lines}\n".encode())
    job_id = api.patch(path).json()["id"]
    wait_for_job(api, job_id)
    assert api.get(f"/jobs/{job_id}/log").text == "".join(f"{i}\n" for i in range(1, lines + 1))


def test_log_is_capped_with_a_marker(start_server, db):
    server = start_server(PIETER_LOG_MAX_BYTES="1000")
    with server.client() as api:
        path = add(api, "demo", "flood", b"seq 1 10000\n")
        job_id = api.patch(path).json()["id"]
        assert wait_for_job(api, job_id)["result"] == "success"
        log = api.get(f"/jobs/{job_id}/log").text.splitlines()
    assert log[:3] == ["1", "2", "3"]
    assert "log cut here" in log[-1]
    assert sum(len(line) + 1 for line in log[:-1]) <= 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root server drops jobs to PIETER_JOB_USER")
def test_jobs_never_run_as_root(api, server):
    path = add(api, "demo", "who", b"id -un\ntouch /root/pwned 2>/dev/null && echo wrote-root || echo denied\n")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["tail"] == ["nobody", "denied"]


def test_an_unknown_job_user_is_a_clear_error(start_server, db):
    if os.geteuid() != 0:
        pytest.skip("only a root server drops jobs to PIETER_JOB_USER")
    with pytest.raises(RuntimeError, match="PIETER_JOB_USER"):
        start_server(PIETER_JOB_USER="no-such-user")


def test_artifacts_are_kept_listed_and_served(api, server):
    path = add(api, "demo", "art", b"mkdir -p $PIETER_ARTIFACTS/reports\necho built > $PIETER_ARTIFACTS/app.bin\n"
                                   b"echo ok > $PIETER_ARTIFACTS/reports/test.txt\nln -s /etc/passwd $PIETER_ARTIFACTS/leak\n")  # fmt: skip
    job_id = api.patch(path).json()["id"]
    assert wait_for_job(api, job_id)["result"] == "success"
    listed = api.get(f"/jobs/{job_id}/artifacts").json()
    assert listed == {"artifacts": [{"path": "app.bin", "size": 6}, {"path": "reports/test.txt", "size": 3}],
                      "total_bytes": 9}  # fmt: skip
    assert api.get(f"/jobs/{job_id}/artifacts/reports/test.txt").content == b"ok\n"
    for bad in ["leak", "../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "reports", "missing"]:
        response = api.get(f"/jobs/{job_id}/artifacts/{bad}")
        assert response.status_code == 404, bad
    assert set(api.get("/").json()["disk"]) == {"workspaces", "artifacts"}  # measured once a minute
    api.delete(f"/jobs/{job_id}")
    assert not (server.state_dir / "artifacts" / str(job_id)).exists()


def test_oversized_artifacts_are_removed_with_a_log_line(start_server, db):
    server = start_server(PIETER_ARTIFACTS_MAX_BYTES="1000")
    with server.client() as api:
        path = add(api, "demo", "big", b"head -c 5000 /dev/zero > $PIETER_ARTIFACTS/big\n")
        job = wait_for_job(api, api.patch(path).json()["id"])
        assert job["result"] == "success"
        deadline = time.monotonic() + 10
        while "PIETER_ARTIFACTS_MAX_BYTES" not in api.get(f"/jobs/{job['id']}/log").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert api.get(f"/jobs/{job['id']}/artifacts").json()["artifacts"] == []


def test_workspaces_beyond_the_newest_are_removed(start_server, db):
    server = start_server(PIETER_KEEP_WORKSPACES="1")
    with server.client() as api:
        path = add(api, "demo", "ws", b"echo x > file\n")
        ids = [wait_for_job(api, api.patch(path).json()["id"])["id"] for _ in range(3)]
        time.sleep(0.3)
        kept = [i for i in ids if (server.state_dir / "workspaces" / str(i)).exists()]
        assert kept == [ids[-1]]
        assert all(api.get(f"/jobs/{i}").status_code == 200 for i in ids), "the records stay"


def test_jobs_older_than_keep_days_are_expired(start_server, db):
    server = start_server()
    with server.client() as api:
        path = add(api, "demo", "old", b"true\n")
        old = wait_for_job(api, api.patch(path).json()["id"])["id"]
    server.stop()
    db.hset(f"pieter:job:{old}", "timestamp", time.time() - 3 * 86400)
    server.env["PIETER_KEEP_DAYS"] = "2"
    server.start()
    with server.client() as api:
        new = wait_for_job(api, api.patch(path).json()["id"])["id"]
        deadline = time.monotonic() + 10
        while api.get(f"/jobs/{old}").status_code != 404:
            assert time.monotonic() < deadline, "the old job was not expired"
            time.sleep(0.1)
        assert api.get(f"/jobs/{new}").status_code == 200


def test_a_password_in_the_source_is_not_kept_in_the_clone(api, git_repo):
    with git_server(git_repo.parent, basic("user", "hunter2")) as server:
        source = f"http://user:hunter2@127.0.0.1:{server.server_address[1]}/{git_repo.name}"
        path = add(api, "demo", "remote", b"git remote -v\ncat .git/config\ncat hello.txt\n", source=source)
        job_id = api.patch(path).json()["id"]
        job = wait_for_job(api, job_id)
    log = api.get(f"/jobs/{job_id}/log").text
    assert job["result"] == "success" and "hello from the repo" in log, log
    assert "origin\thttp://user:***@127.0.0.1" in log and "hunter2" not in log and "hunter2" not in str(job), log


def test_repo_secrets_reach_the_script_masked_in_the_log(api):
    api.put("/repos/vault", json={"secrets": {"API_KEY": "s3cr3t-value"}, "secret": "w" * 20})
    shown = api.get("/repos/vault")
    assert shown.json()["secrets"] == ["API_KEY"] and shown.json()["webhook_secret"] is True
    assert "s3cr3t" not in shown.text and "wwww" not in shown.text
    path = add(api, "vault", "use", b'echo "key=$API_KEY"\n[ "$API_KEY" = s3cr3t-value ] && echo matches\n')
    job_id = api.patch(path, json={"env": {"API_KEY": "from-params"}}).json()["id"]
    wait_for_job(api, job_id)
    assert api.get(f"/jobs/{job_id}/log").text == "key=***\nmatches\n"
    assert "s3cr3t" not in api.get(f"/jobs/{job_id}").text


def test_a_job_checks_out_the_commit_it_is_given(api, git_repo):
    git = ["git", "-C", str(git_repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (git_repo / "hello.txt").write_text("second version\n")
    subprocess.run([*git, "commit", "-qam", "second"], check=True)
    path = add(api, "demo", "at", b"cat hello.txt\n", source=str(git_repo))
    pinned = wait_for_job(api, api.patch(path, json={"commit": first}).json()["id"])
    head = wait_for_job(api, api.patch(path).json()["id"])
    assert pinned["result"] == "success", api.get(f"/jobs/{pinned['id']}/log").text
    assert pinned["commit"] == first and pinned["tail"][-1] == "hello from the repo"
    assert head["tail"][-1] == "second version"
    assert api.patch(path, json={"commit": "not-a-sha"}).status_code == 400


# What the script tries, after the clone: the job's own directory, its workspace and environment, the handoff socket.
LOOK_FOR_CLONE_SECRETS = b"""
jobdir="${PIETER_WORKSPACE%/workspaces/*}/jobs/$PIETER_JOB_ID"
grep -rl -e "hunt""er2" -e "PRIVATE"" KEY" "$jobdir" . /proc/self/environ && echo LEAKED  # not this script
ssh-add -l 2>&1 | grep -q "Could not open" && echo "no agent"
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print("got", s.recv(99))' \\
    "$(cat "$jobdir/handoff")" 2>/dev/null || echo "handoff closed"
"""


def test_the_script_can_read_neither_the_source_password_nor_the_deploy_key(api, git_repo, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "key"], check=True)
    key = (tmp_path / "key").read_text()
    with git_server(git_repo.parent, basic("user", "hunter2")) as server:
        source = f"http://user:hunter2@127.0.0.1:{server.server_address[1]}/{git_repo.name}"
        api.put("/repos/demo", json={"source": source, "deploy_key": key})
        api.put("/repos/demo/look", content=LOOK_FOR_CLONE_SECRETS)
        job = wait_for_job(api, api.patch("/repos/demo/look").json()["id"])
    log = api.get(f"/jobs/{job['id']}/log").text
    assert job["result"] == "success", log
    assert "LEAKED" not in log and "got" not in log and "hunter2" not in log, log
    assert "no agent" in log and "handoff closed" in log, log


def processes_of(workspace: str) -> list[int]:
    """The processes carrying a job's PIETER_WORKSPACE (what every process of the job inherits)."""
    marker = f"\0PIETER_WORKSPACE={workspace}\0".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in b"\0" + f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_processes_a_job_starts_out_of_its_group_end_with_it(api, server):
    """setsid leaves the job's process group; the one that keeps the job's output open must not hold its end."""
    script = b"setsid sleep 300 </dev/null >/dev/null 2>&1 &\nsetsid sleep 301 &\nsleep 0.3\necho done\n"
    path = add(api, "demo", "leave", script)
    job_id = api.patch(path).json()["id"]
    job = wait_for_job(api, job_id, timeout=20)
    log = api.get(f"/jobs/{job_id}/log").text
    assert job["result"] == "success" and log.endswith(
        "done\npieter: 2 processes the job left behind were killed\n"
    ), log
    assert processes_of(str(server.state_dir / "workspaces" / str(job_id))) == []


def test_a_clone_cancelled_midway_leaves_no_agent_holding_the_key(api, server, tmp_path):
    """The deploy key's ssh-agent is part of the job: a cancel during the clone ends it too."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks: ssh waits for its banner
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "key"], check=True)
    api.put("/repos/stuck", json={"source": f"ssh://git@127.0.0.1:{silent.getsockname()[1]}/x.git",
                                  "deploy_key": (tmp_path / "key").read_text()})  # fmt: skip
    path = add(api, "stuck", "build", b"echo never\n")
    job_id = api.patch(path).json()["id"]
    workspace = str(server.state_dir / "workspaces" / str(job_id))
    deadline = time.monotonic() + 20
    while not any(b"ssh-agent" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_of(workspace)):
        assert time.monotonic() < deadline, "the clone's agent never ran"
        time.sleep(0.05)
    api.post(f"/jobs/{job_id}/cancel")
    assert wait_for_job(api, job_id)["state"] == "cancelled"
    deadline = time.monotonic() + 10
    while processes_of(workspace):
        assert time.monotonic() < deadline, f"left running: {processes_of(workspace)}"
        time.sleep(0.05)
    silent.close()


def test_a_failed_clone_of_a_commit_leaves_no_password_behind(api, server):
    api.put("/repos/pw", json={"source": "https://user:hunter2@127.0.0.1:9/x.git"})
    path = add(api, "pw", "build", b"echo never\n", source="https://user:hunter2@127.0.0.1:9/x.git")
    job = wait_for_job(api, api.patch(path, json={"commit": "a" * 40}).json()["id"])
    assert job["result"] == "error"
    workspace = server.state_dir / "workspaces" / str(job["id"])
    leaked = subprocess.run(["grep", "-rl", "hunter2", workspace], capture_output=True, text=True)
    assert leaked.stdout == "", leaked.stdout


def test_every_line_of_a_multiline_secret_is_masked(api):
    api.put("/repos/vault", json={"secrets": {"PEM": "first-line-AAA\nsecond-line-BBB\nxy", "SHORT": "ab"}})
    path = add(api, "vault", "show", b'echo "$PEM"\necho "short=$SHORT"\n')
    job_id = api.patch(path).json()["id"]
    wait_for_job(api, job_id)
    assert api.get(f"/jobs/{job_id}/log").text == "***\n***\nxy\nshort=ab\n"


def test_an_https_password_reaches_git_on_no_command_line(api, git_repo):
    """Any user may read a process's command line: the clone's URL goes without its credentials, which git gets
    from job.sh's credential helper."""
    with git_server(git_repo.parent, basic("bob", "hunter2"), delay=0.5) as server:
        source = f"http://bob:hunter2@127.0.0.1:{server.server_address[1]}/{git_repo.name}"
        job_id = api.patch(add(api, "auth", "build", b"cat hello.txt\n", source=source)).json()["id"]
        seen = set()
        while api.get(f"/jobs/{job_id}").json()["state"] in ("queued", "running"):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                with contextlib.suppress(OSError):
                    seen.add(Path(f"/proc/{pid}/cmdline").read_bytes())
    assert api.get(f"/jobs/{job_id}").json()["result"] == "success", api.get(f"/jobs/{job_id}/log").text
    assert basic("bob", "hunter2") in server.given
    clones = [line for line in seen if b"127.0.0.1" in line and b"git" in line]
    assert clones and not [line for line in clones if b"hunter2" in line], clones


def test_credentials_go_to_the_sources_server_only(api, git_repo):
    """A source that redirects to another server (another port: another origin) does not get it the password."""
    with git_server(git_repo.parent, basic("bob", "hunter2")) as elsewhere, \
            git_server(git_repo.parent, redirect=elsewhere.url) as source_server:  # fmt: skip
        source = f"http://bob:hunter2@127.0.0.1:{source_server.server_address[1]}/{git_repo.name}"
        job = wait_for_job(api, api.patch(add(api, "moved", "build", b"true\n", source=source)).json()["id"])
    assert job["result"] == "error"
    assert elsewhere.given and set(elsewhere.given) == {None}, elsewhere.given
