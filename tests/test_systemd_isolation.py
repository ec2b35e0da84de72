"""What a job's script can do to other jobs and to Pieter, tried against a real systemd (security round 2).

Each test is one finding: a job's unit holds nothing secret and names no repo; no process of a job outlives its
unit, however it ends; a job cannot forge its result, its journal lines or another job's; an OOM kill of a child
reads as `oom-kill`; /dev/shm is each job's own.
"""

import time

import pytest

from tests.conftest import wait_for_job, wait_for_log
from tests.test_systemd_runner import add, explain

# 64 busy loops that ignore SIGTERM, as a hostile script would start them
BUSY_LOOPS = b"""trap '' TERM
for i in $(seq 64); do (trap '' TERM; while :; do :; done) & done
echo "uid $(id -u)"
wait
"""
FORK_BOMB = b"""echo "uid $(id -u)"
bomb() { bomb | bomb & }
bomb
sleep 600
"""


@pytest.fixture
def api(systemd_pieter):
    with systemd_pieter.client() as client:
        yield client


def job_uid(api, job_id: int) -> int:
    wait_for_log(api, job_id, "uid ", timeout=60)
    line = next(line for line in api.get(f"/jobs/{job_id}/log").text.splitlines() if line.startswith("uid "))
    return int(line.split()[1])


def processes_of(systemd_pieter, uid: int) -> int:
    return int(systemd_pieter.sh(f"pgrep -c -U {uid} || true").strip() or 0)


def assert_nothing_left(systemd_pieter, job_id: int, uid: int) -> None:
    deadline = time.monotonic() + 20
    unit = f"pieter-job-{job_id}.service"
    while processes_of(systemd_pieter, uid) or systemd_pieter.sh(f"systemctl list-units -q --all --plain {unit}"):
        assert time.monotonic() < deadline, f"{processes_of(systemd_pieter, uid)} processes of uid {uid} left"
        time.sleep(0.2)


@pytest.mark.parametrize("script", [BUSY_LOOPS, FORK_BOMB], ids=["busy-loops-ignoring-TERM", "fork-bomb"])
def test_nothing_of_a_timed_out_job_outlives_its_unit(api, systemd_pieter, script):
    job_id = api.patch(add(api, "hostile", script, query="?timeout=4&tasks_max=512")).json()["id"]
    uid = job_uid(api, job_id)
    job = wait_for_job(api, job_id, timeout=90)
    assert (job["state"], job["result"]) == ("fail", "timeout"), explain(systemd_pieter, job_id)
    assert_nothing_left(systemd_pieter, job_id, uid)


@pytest.mark.parametrize("script", [BUSY_LOOPS, FORK_BOMB], ids=["busy-loops-ignoring-TERM", "fork-bomb"])
def test_nothing_of_a_cancelled_job_outlives_its_unit(api, systemd_pieter, script):
    job_id = api.patch(add(api, "hostile", script, query="?timeout=600&tasks_max=512")).json()["id"]
    uid = job_uid(api, job_id)
    time.sleep(1)
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert_nothing_left(systemd_pieter, job_id, uid)
    assert api.get(f"/jobs/{job_id}").json()["result"] == "cancelled"
    after = wait_for_job(api, api.patch(add(api, "after", b"echo fine\n")).json()["id"])
    assert after["result"] == "success", "the next job runs: no slot is held"


def test_the_unit_holds_no_secret_and_names_no_repo(api, systemd_pieter):
    api.put("/repos/hidden-repo", json={"secrets": {"API_KEY": "s3cr3t-value"}})
    api.put("/repos/hidden-repo/hidden-scenario", content=b"echo up\nsleep 30\n")
    job_id = api.patch("/repos/hidden-repo/hidden-scenario").json()["id"]
    wait_for_log(api, job_id, "up")
    probe = (
        b"""cat /run/systemd/transient/pieter-job-%d.service
cat /var/lib/pieter-ci/collector.conf 2>/dev/null && echo collector-conf-readable
"""
        % job_id
    )
    shown = wait_for_job(api, api.patch(add(api, "probe", probe)).json()["id"])
    log = api.get(f"/jobs/{shown['id']}/log").text
    api.post(f"/jobs/{job_id}/cancel")
    assert "ExecStopPost" in log, "the unit file is readable, as on any host"
    for secret in ("redis", "REDIS", "s3cr3t", "hidden-repo", "hidden-scenario", "collector-conf-readable"):
        assert secret not in log, f"{secret!r} in what a job can read:\n{log}"


def test_a_job_cannot_forge_a_failed_clone(api, systemd_pieter, tmp_path):
    systemd_pieter.sh("rm -rf /srv/forge && mkdir -p /srv/forge && cd /srv/forge && git init -q && touch f && "
                      "git add . && git -c user.name=t -c user.email=t@example.com commit -qm first")  # fmt: skip
    path = add(api, "forge", b": > .pieter-clone-failed\necho 'pieter: git clone failed: the job did not run'\nexit 1\n",
               source="/srv/forge")  # fmt: skip
    job = wait_for_job(api, api.patch(path).json()["id"])
    assert (job["result"], job["rc"]) == ("exit-code", 1), explain(systemd_pieter, job["id"])


def test_an_oom_killed_child_reads_as_oom_kill(api, systemd_pieter):
    script = b'#!/bin/sh\necho start\npython3 -c "b = bytearray(512 << 20)"\n'  # sh then exits 137
    job = wait_for_job(api, api.patch(add(api, "childhog", script, query="?memory_max=64M")).json()["id"])
    assert (job["state"], job["result"]) == ("fail", "oom-kill"), job


def test_a_job_cannot_write_into_another_jobs_journal_lines(api, systemd_pieter):
    victim = api.patch(add(api, "victim", b"echo victim starts\nsleep 4\necho victim ends\n")).json()["id"]
    wait_for_log(api, victim, "victim starts")
    forger = f"""#!/usr/bin/python3
from systemd import journal
journal.send("forged line", PIETER_JOB="{victim}", UNIT="pieter-job-{victim}.service",
             _SYSTEMD_UNIT="pieter-job-{victim}.service", _SYSTEMD_INVOCATION_ID="0" * 32)
print("sent")
""".encode()
    assert "sent" in wait_for_job(api, api.patch(add(api, "forger", forger)).json()["id"])["tail"]
    wait_for_job(api, victim)
    assert api.get(f"/jobs/{victim}/log").text == "victim starts\nvictim ends\n"
    trusted = systemd_pieter.sh(f"journalctl --no-pager -o cat _SYSTEMD_UNIT=pieter-job-{victim}.service")
    assert "forged" not in trusted, "journald sets _SYSTEMD_UNIT itself: the README's view is the job's own"


def test_dev_shm_is_each_jobs_own(api, systemd_pieter):
    writer = api.patch(add(api, "shm", b"echo mine > /dev/shm/left-by-a-job\necho written\nsleep 20\n")).json()["id"]
    wait_for_log(api, writer, "written")
    reader = wait_for_job(api, api.patch(add(api, "shmread", b"ls -A /dev/shm; echo listed\n")).json()["id"])
    host = systemd_pieter.sh("ls -A /dev/shm")
    api.post(f"/jobs/{writer}/cancel")
    assert reader["tail"] == ["listed"], reader
    assert "left-by-a-job" not in host
