"""The systemd runner against a real systemd: limits, journal, results across server restarts, cancel."""

import time

import pytest

from tests.conftest import wait_for_job, wait_for_log


@pytest.fixture
def api(systemd_pieter):
    with systemd_pieter.client() as client:
        yield client


def add(api, scenario: str, script: bytes, query: str = "", source: str | None = None) -> str:
    api.put("/repos/sys", json={"source": source or ""})  # "" clears an earlier test's source
    assert api.put(f"/repos/sys/{scenario}{query}", content=script).status_code in (200, 201)
    return f"/repos/sys/{scenario}"


def explain(systemd_pieter, job_id: int) -> str:
    """What systemd and the server said about a job, for an assertion's message."""
    return systemd_pieter.sh(f"journalctl --no-pager -o short-monotonic -u pieter-job-{job_id}; "
                             "journalctl --no-pager -o short-monotonic -u pieter-test -n 30", check=False)  # fmt: skip


def journal_lines(systemd_pieter, job_id: int) -> list[str]:
    """The job's own lines in the journal: `journalctl -u` less systemd's messages about the unit."""
    unit = f"pieter-job-{job_id}.service"
    return systemd_pieter.sh(f"journalctl --no-pager -o cat _SYSTEMD_UNIT={unit}").splitlines()


def test_server_uses_the_systemd_runner(api):
    assert api.get("/").json()["runner"] == "systemd"


def test_job_output_is_in_the_journal_and_in_redis(api, systemd_pieter):
    path = add(api, "hello", b"echo hello from a unit\necho second line >&2\nid -un\n")
    job_id = api.patch(path).json()["id"]
    job = wait_for_job(api, job_id)
    assert (job["state"], job["result"], job["rc"]) == ("success", "success", 0)
    log = api.get(f"/jobs/{job_id}/log").text.splitlines()
    assert log[:2] == ["hello from a unit", "second line"]
    assert log == journal_lines(systemd_pieter, job_id)
    shown = systemd_pieter.sh(f"journalctl --no-pager -o cat -u pieter-job-{job_id}")
    assert "hello from a unit" in shown
    assert job["invocation"] and job["unit"] == f"pieter-job-{job_id}.service"


def test_job_clones_a_local_source_as_its_own_user(api, systemd_pieter):
    # /tmp, /home and /root are private or hidden in a job's unit: a local source lives elsewhere (/srv)
    systemd_pieter.sh("rm -rf /srv/demo && mkdir -p /srv/demo && cd /srv/demo && git init -q && "
                      "echo 'hello from the repo' > hello.txt && git add . && "
                      "git -c user.name=t -c user.email=t@example.com commit -qm first")  # fmt: skip
    path = add(api, "clone", b"cat hello.txt\nid -u\n", source="/srv/demo")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["result"] == "success", api.get(f"/jobs/{job['id']}/log").text
    assert "hello from the repo" in job["tail"]
    assert int(job["tail"][-1]) != 0, "the job must not run as root"


def test_failed_clone_is_an_error(api):
    path = add(api, "badclone", b"echo never\n", source="/nonexistent/repo")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert (job["state"], job["result"]) == ("fail", "error")
    assert "git clone failed" in api.get(f"/jobs/{job['id']}/log").text


def test_memory_limit_kills_a_hog(api):
    hog = b"#!/usr/bin/python3\nb = []\nwhile len(b) < 128:\n    b.append(bytearray(8 << 20))\nprint('survived')\n"
    path = add(api, "hog", hog, query="?memory_max=64M")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["state"] == "fail"
    assert job["result"] in ("oom-kill", "signal"), job  # cgroup v2 / cgroup v1
    assert "survived" not in job["tail"]


def test_cpu_quota_holds(api):
    busy = b"#!/usr/bin/python3\nimport time\nt = time.time()\nwhile time.time() - t < 3:\n    pass\nprint(time.process_time())\n"
    path = add(api, "busy", busy, query="?cpu_quota=20%")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["result"] == "success"
    cpu_seconds = float(job["tail"][-1])
    assert cpu_seconds <= 0.25 * 3, f"{cpu_seconds} CPU-s in 3 s at CPUQuota=20%"
    assert job["memory_peak"] > 1_000_000, "the unit's peak memory is recorded (cgroup v1 and v2 report it)"


def test_timeout_ends_a_job(api, systemd_pieter):
    path = add(api, "sleepy", b"echo sleeping\nsleep 600\n", query="?timeout=2")
    started = time.monotonic()
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert (job["state"], job["result"]) == ("fail", "timeout"), explain(systemd_pieter, job["id"])
    assert time.monotonic() - started < 30


def test_exit_code_is_recorded(api):
    job = wait_for_job(api, api.patch(add(api, "three", b"exit 3\n")).json()["id"])
    assert (job["result"], job["rc"]) == ("exit-code", 3)


def test_killed_server_loses_nothing(api, systemd_pieter):
    path = add(api, "slow", b"for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\n")
    job_id = api.patch(path).json()["id"]
    wait_for_log(api, job_id, "tick 1")  # its unit runs, not only its record
    systemd_pieter.sh("systemctl kill --signal=KILL pieter-test.service")
    time.sleep(4)
    assert api.get("/").status_code == 200, "the socket starts the server again"
    job = wait_for_job(api, job_id)
    assert (job["state"], job["result"]) == ("success", "success"), explain(systemd_pieter, job_id)
    assert api.get(f"/jobs/{job_id}/log").text == "".join(f"tick {i}\n" for i in range(1, 7))


def test_a_hundred_thousand_lines_lose_none(api, systemd_pieter):
    path = add(api, "chatty", b"seq 1 100000\n")
    job_id = api.patch(path).json()["id"]
    job = wait_for_job(api, job_id, timeout=120)
    assert job["result"] == "success"
    expected = [str(i) for i in range(1, 100001)]
    assert api.get(f"/jobs/{job_id}/log").text.splitlines() == expected
    assert journal_lines(systemd_pieter, job_id) == expected


def test_a_job_cannot_read_another_jobs_workspace(api):
    holder = add(api, "holder", b"echo secret > secret.txt\npwd\nsleep 5\n")
    holder_id = api.patch(holder).json()["id"]
    deadline = time.monotonic() + 20
    while len(api.get(f"/jobs/{holder_id}").json()["tail"]) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    snoop = add(api, "snoop", f"cat /var/lib/pieter-ci/workspaces/{holder_id}/secret.txt\n".encode())
    job = wait_for_job(api, api.patch(snoop).json()["id"])
    assert job["result"] == "exit-code", job
    assert "secret" not in job["tail"]
    api.post(f"/jobs/{holder_id}/cancel")


def test_cancel_kills_the_whole_tree(api, systemd_pieter):
    path = add(api, "tree", b"sleep 4242 &\necho started\nwait\n")
    job_id = api.patch(path).json()["id"]
    wait_for_log(api, job_id, "started")
    assert systemd_pieter.sh("pgrep -f 'sleep [4]242' || true").strip()
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_for_job(api, job_id)
    assert (job["state"], job["result"]) == ("cancelled", "cancelled")
    deadline = time.monotonic() + 20
    while systemd_pieter.sh("pgrep -f 'sleep [4]242' || true").strip():
        assert time.monotonic() < deadline, "the backgrounded sleep survived the cancel"
        time.sleep(0.1)


def test_parameters_reach_the_script_but_not_the_unit(api, systemd_pieter):
    assert api.patch(add(api, "p", b"true\n"), json={"env": {"LD_PRELOAD": "/tmp/x.so"}}).status_code == 400
    path = add(api, "params", b'echo "token=$TOKEN"\nsleep 2\n')
    job_id = api.patch(path, json={"env": {"TOKEN": "s3cr3t-value"}}).json()["id"]
    wait_for_log(api, job_id, "token=")  # its unit runs, not only its record
    environment = systemd_pieter.sh(f"systemctl show -P Environment pieter-job-{job_id}.service")
    assert environment.strip() == "", "the job's environment is a credential file, not the unit's Environment="
    exec_stop_post = systemd_pieter.sh(f"systemctl show -P ExecStopPost pieter-job-{job_id}.service")
    assert "collect" in exec_stop_post and "s3cr3t" not in exec_stop_post
    job = wait_for_job(api, job_id)
    assert job["tail"] == ["token=s3cr3t-value"]


def test_a_job_cannot_reach_redis_nor_other_units_journals(api, systemd_pieter):
    probe = b"""#!/usr/bin/python3
import socket, subprocess
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/run/pieter-test/redis.sock")
    print("redis: reached")
except OSError as e:
    print("redis:", type(e).__name__)
shown = subprocess.run(["journalctl", "--no-pager", "-o", "cat", "-u", "pieter-test.service"],
                       capture_output=True, text=True).stdout
print("journal:", "Sanic" in shown)
"""
    job = wait_for_job(api, api.patch(add(api, "probe", probe)).json()["id"])
    assert job["tail"] == ["redis: PermissionError", "journal: False"], job["tail"]


def test_job_unit_exposure_is_low(api, systemd_pieter):
    job_id = api.patch(add(api, "idle", b"echo up\nsleep 30\n")).json()["id"]
    wait_for_log(api, job_id, "up")  # its unit runs, not only its record
    report = systemd_pieter.sh(f"systemd-analyze security --no-pager pieter-job-{job_id}.service")
    exposure = float(report.rsplit("Overall exposure level", 1)[1].split(":")[1].split()[0])
    assert exposure <= 1.5, report
    api.post(f"/jobs/{job_id}/cancel")


def test_relaxed_sandbox_allows_namespaces(api):
    script = b"unshare --user --map-root-user id -u && echo namespaces-ok || echo refused\n"
    strict = wait_for_job(api, api.patch(add(api, "ns", script)).json()["id"])
    relaxed = wait_for_job(api, api.patch(add(api, "ns", script, query="?sandbox=relaxed")).json()["id"])
    assert strict["tail"][-1] == "refused"
    assert relaxed["tail"][-1] == "namespaces-ok", relaxed["tail"]


def test_artifacts_of_a_unit_are_kept(api):
    path = add(api, "art", b"echo built > $PIETER_ARTIFACTS/app.txt\ntouch $PIETER_WORKSPACE/scratch\n")
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert job["result"] == "success", api.get(f"/jobs/{job['id']}/log").text
    assert api.get(f"/jobs/{job['id']}/artifacts").json()["artifacts"] == [{"path": "app.txt", "size": 6}]
    assert api.get(f"/jobs/{job['id']}/artifacts/app.txt").content == b"built\n"


def test_result_lands_when_a_reload_dropped_the_collector(api, systemd_pieter):
    """systemd 252 cannot read back a transient unit's `ExecStopPost=+` after `systemctl daemon-reload`
    (every package install does one): the server then takes the end from what systemd logged."""
    path = add(api, "reload", b"echo before\nsleep 2\necho after\nexit 3\n")
    job_id = api.patch(path).json()["id"]
    wait_for_log(api, job_id, "before")  # its unit runs, not only its record
    systemd_pieter.sh("systemctl daemon-reload")
    job = wait_for_job(api, job_id, timeout=60)
    assert (job["state"], job["result"], job["rc"]) == ("fail", "exit-code", 3), explain(systemd_pieter, job_id)
    assert api.get(f"/jobs/{job_id}/log").text == "before\nafter\n"


def test_repo_secrets_are_masked_in_redis(api, systemd_pieter):
    api.put("/repos/vault", json={"secrets": {"API_KEY": "s3cr3t-value"}})
    api.put("/repos/vault/use", content=b'echo "key=$API_KEY"\n')
    job_id = api.patch("/repos/vault/use").json()["id"]
    job = wait_for_job(api, job_id)
    assert job["result"] == "success"
    assert api.get(f"/jobs/{job_id}/log").text == "key=***\n"
