"""Private repositories: a deploy key clones over SSH from a real sshd (in the systemd sandbox), with host key
checking on; the key never appears in any GET, and the script cannot use it after the clone."""

import time

import pytest

from tests.conftest import wait_for_job, wait_for_log
from tests.systemd_pieter import ROOT

SSH_SETUP = """
set -e
id git >/dev/null 2>&1 || useradd --system --create-home --home-dir /srv/git-home --shell /usr/bin/git-shell git
rm -rf /srv/git /tmp/deploy && mkdir -p /srv/git /tmp/deploy /srv/git-home/.ssh
ssh-keygen -q -t ed25519 -N '' -f /tmp/deploy/key
cp /tmp/deploy/key.pub /srv/git-home/.ssh/authorized_keys
git init -q --bare /srv/git/private.git
git clone -q /srv/git/private.git /tmp/deploy/work
cd /tmp/deploy/work && echo 'private content' > secret.txt && git add . \\
  && git -c user.name=t -c user.email=t@example.com commit -qm first && git push -q origin HEAD
chown -R git: /srv/git /srv/git-home && chmod 700 /srv/git-home/.ssh
systemctl start ssh
"""


@pytest.fixture(scope="module")
def ssh_repo(systemd_pieter):
    """A bare repo served by sshd to one key, and that key plus the host's key line for known_hosts."""
    systemd_pieter.sh(SSH_SETUP)
    deadline = time.monotonic() + 20
    while "ssh" not in systemd_pieter.sh("ss -ltnp | grep ':22 ' || true"):
        assert time.monotonic() < deadline, "sshd did not start"
        time.sleep(0.1)
    key = systemd_pieter.sh("cat /tmp/deploy/key")
    host_key = systemd_pieter.sh("cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub").strip()
    return {"source": "git@127.0.0.1:/srv/git/private.git", "key": key, "known_hosts": f"127.0.0.1 {host_key}\n"}


@pytest.fixture
def api(systemd_pieter):
    with systemd_pieter.client() as client:
        yield client


def queue(api, repo: str, body: dict, script: bytes) -> dict:
    assert api.put(f"/repos/{repo}", json=body).status_code in (200, 201)
    api.put(f"/repos/{repo}/build", content=script)
    return wait_for_job(api, api.patch(f"/repos/{repo}/build").json()["id"], timeout=60)


# What the script tries after the clone: the agent, its credentials, the state dir, and the handoff socket.
LOOK_FOR_THE_KEY = b"""cat secret.txt
ssh-add -l 2>&1 || true
grep -rl "PRIVATE"" KEY" "$CREDENTIALS_DIRECTORY" "${PIETER_WORKSPACE%/workspaces/*}" /tmp /proc/self/environ \\
    2>/dev/null && echo LEAKED
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print("got", s.recv(99))' \\
    "$(cat "$CREDENTIALS_DIRECTORY/handoff")" 2>/dev/null || echo "handoff closed"
"""


def test_deploy_key_clones_and_is_never_shown(api, ssh_repo):
    body = {"source": ssh_repo["source"], "deploy_key": ssh_repo["key"], "known_hosts": ssh_repo["known_hosts"]}
    job = queue(api, "private", body, LOOK_FOR_THE_KEY)
    log = api.get(f"/jobs/{job['id']}/log").text
    assert job["result"] == "success", log
    assert "private content" in log
    assert "Could not open a connection to your authentication agent" in log, "the agent is gone after the clone"
    assert "LEAKED" not in log and "got" not in log and "handoff closed" in log, log
    shown = api.get("/repos/private")
    assert shown.json()["deploy_key"] is True
    assert "PRIVATE KEY" not in shown.text and "PRIVATE KEY" not in api.get(f"/jobs/{job['id']}").text


def test_without_the_key_the_clone_fails(api, ssh_repo):
    job = queue(api, "nokey", {"source": ssh_repo["source"], "known_hosts": ssh_repo["known_hosts"]}, b"true\n")
    assert (job["state"], job["result"]) == ("fail", "error")


def test_host_key_checking_stays_on(api, ssh_repo):
    wrong = "127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJ3ZXJ0eXVpb3BhbHNrZGpmaGd6eGN2Ym5tMTIzNDU2\n"
    body = {"source": ssh_repo["source"], "deploy_key": ssh_repo["key"], "known_hosts": wrong}
    job = queue(api, "wronghost", body, b"true\n")
    assert (job["state"], job["result"]) == ("fail", "error")
    log = api.get(f"/jobs/{job['id']}/log").text
    assert "Host key verification failed" in log or "HOST IDENTIFICATION HAS CHANGED" in log, log


def test_a_deploy_key_must_look_like_one(api):
    response = api.put("/repos/badkey", json={"deploy_key": "not a key"})
    assert response.status_code == 400 and "deploy_key" in response.json()["error"]


def test_the_handoff_answers_the_jobs_processes_only(api, systemd_pieter):
    """SystemdRunner.owns, asked about a running job's own process and about others (the server asks it for
    each peer of the job's handoff socket)."""
    assert api.put("/repos/owner").status_code in (200, 201)
    api.put("/repos/owner/wait", content=b"echo started\nsleep 30\n")
    job_id = api.patch("/repos/owner/wait").json()["id"]
    wait_for_log(api, job_id, "started")  # its main process runs as the job's user (not yet while systemd sets up)
    pid = systemd_pieter.sh(f"systemctl show -P MainPID pieter-job-{job_id}.service").strip()
    uid = int(systemd_pieter.sh(f"stat -c %u /proc/{pid}"))
    asks = systemd_pieter.sh(
        f"PIETER_STATE_DIR=/var/lib/pieter-ci PIETER_CONFIG=/nonexistent {ROOT}/.venv/bin/python -c '"
        "from pieter.config import load; from pieter.runners.systemd import SystemdRunner; "
        "runner = SystemdRunner(load(), None); "
        f"print([runner.owns({job_id}, {pid}, uid) for uid in ({uid}, 65534, 0)], runner.owns({job_id} + 1, {pid}, {uid}))'"
    )
    api.post(f"/jobs/{job_id}/cancel")
    assert uid not in (0, 65534), "the job runs as a dynamic user"
    assert asks.strip() == "[True, False, False] False"
