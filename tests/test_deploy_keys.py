"""Private repositories: a deploy key clones over SSH from a real sshd (in the systemd sandbox), with host key
checking on; the key never appears in any GET, and the script cannot use it after the clone."""

import time

import pytest

from tests.conftest import wait_for_job

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


def test_deploy_key_clones_and_is_never_shown(api, ssh_repo):
    body = {"source": ssh_repo["source"], "deploy_key": ssh_repo["key"], "known_hosts": ssh_repo["known_hosts"]}
    job = queue(api, "private", body, b"cat secret.txt\nssh-add -l 2>&1 || true\n")
    log = api.get(f"/jobs/{job['id']}/log").text
    assert job["result"] == "success", log
    assert "private content" in log
    assert "Could not open a connection to your authentication agent" in log, "the agent is gone after the clone"
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
