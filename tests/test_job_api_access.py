"""A systemd job cannot drive the API: its script calls the server on 127.0.0.1:8000 (on a cgroup-v1 host such as
this one nothing stops the connection: IPAddressDeny= needs cgroup v2) and gets 401; another repo's script is
unchanged. The sandbox's server listens on 127.0.0.1:8000 for this test, as the package's socket does."""

import json
import time

import pytest

DROP_IN = "/run/systemd/system/pieter-test.socket.d/tcp.conf"
URL = "http://127.0.0.1:8000"
ATTACK = f"""curl -s -X PUT --data-binary 'echo pwned' {URL}/repos/victim/build.sh; echo
curl -s -X DELETE {URL}/repos/victim; echo
"""


def relisten(systemd_pieter) -> None:
    systemd_pieter.sh("systemctl stop pieter-test.socket pieter-test.service && systemctl daemon-reload && "
                      "systemctl start pieter-test.socket")  # fmt: skip


@pytest.fixture
def api_on_loopback(systemd_pieter):
    """The sandbox's server on 127.0.0.1:8000 instead of its unix socket, until the test ends."""
    systemd_pieter.sh(f"mkdir -p {DROP_IN.rsplit('/', 1)[0]} && "
                      f"printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:8000\\n' > {DROP_IN}")  # fmt: skip
    relisten(systemd_pieter)
    yield
    systemd_pieter.sh(f"rm -f {DROP_IN}")
    relisten(systemd_pieter)


def call(systemd_pieter, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    """A request from root inside the sandbox, without a token: its status and body."""
    data = ["-H", "Content-Type: application/json", "--data-binary", "@-"] if body is not None else []
    out = systemd_pieter.sandbox.run("curl", "-s", "-X", method, "-w", "\n%{http_code}", *data, URL + path,
                                     input=body).stdout  # fmt: skip
    text, _, status = out.rpartition("\n")
    return int(status), text


def test_a_job_calling_the_api_on_loopback_gets_401(systemd_pieter, api_on_loopback):
    assert call(systemd_pieter, "PUT", "/repos/victim", '{"source": ""}')[0] in (200, 201)  # root needs no token
    assert call(systemd_pieter, "PUT", "/repos/victim/build.sh", "echo original\n")[0] in (200, 201)
    assert call(systemd_pieter, "PUT", "/repos/attacker", '{"source": ""}')[0] in (200, 201)
    assert call(systemd_pieter, "PUT", "/repos/attacker/evil.sh", ATTACK)[0] in (200, 201)
    status, text = call(systemd_pieter, "PATCH", "/repos/attacker/evil.sh")
    assert status == 201, text
    job = json.loads(text)
    deadline = time.monotonic() + 60
    while job["state"] not in ("success", "fail", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = json.loads(call(systemd_pieter, "GET", f"/jobs/{job['id']}")[1])
    log = call(systemd_pieter, "GET", f"/jobs/{job['id']}/log")[1]
    refused = [json.loads(line)["error"] for line in log.splitlines()]
    assert len(refused) == 2 and all(e.startswith("requests from a job's processes need a token") for e in refused)
    assert call(systemd_pieter, "GET", "/repos/victim/build.sh/script") == (200, "echo original\n")
    for repo in ("victim", "attacker"):
        call(systemd_pieter, "DELETE", f"/repos/{repo}")
