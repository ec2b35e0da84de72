"""The server under systemd socket activation: started by the first connection, gone when idle, started
again by the next one; running jobs go on meanwhile; a bad configuration answers 503 instead of crashing."""

import time

import pytest

from tests.conftest import wait_for_job, wait_for_log

DROP_IN = "/run/systemd/system/pieter-test.service.d/test.conf"


@pytest.fixture
def service(systemd_pieter):
    """Lets a test set the server's environment with a drop-in; restores the plain service afterwards."""

    def configure(**settings: str) -> None:
        path = systemd_pieter.sandbox.path(DROP_IN)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[Service]\n" + "".join(f"Environment={k}={v}\n" for k, v in settings.items()))
        systemd_pieter.sh("systemctl daemon-reload && systemctl stop pieter-test.service")

    yield configure
    systemd_pieter.sh(f"rm -f {DROP_IN} && systemctl daemon-reload && systemctl stop pieter-test.service")


def is_active(systemd_pieter) -> str:
    return systemd_pieter.sh("systemctl is-active pieter-test.service || true").strip()


def wait_inactive(systemd_pieter, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while is_active(systemd_pieter) not in ("inactive", "failed"):
        assert time.monotonic() < deadline, "the server did not exit when idle"
        time.sleep(0.2)
    assert is_active(systemd_pieter) == "inactive", systemd_pieter.sh("journalctl -u pieter-test -n 20 --no-pager")


def test_started_by_the_first_request(systemd_pieter, service):
    service()
    assert is_active(systemd_pieter) == "inactive"
    with systemd_pieter.client() as api:
        assert api.get("/").status_code == 200
    assert is_active(systemd_pieter) == "active"


def test_exits_when_idle_and_comes_back(systemd_pieter, service):
    service(PIETER_IDLE_EXIT="2")
    with systemd_pieter.client() as api:
        api.put("/repos/idle")
        api.put("/repos/idle/slow", content=b"echo begun\nsleep 4\necho done\n")
        job_id = api.patch("/repos/idle/slow").json()["id"]
        wait_for_log(api, job_id, "begun")  # its unit runs, not only its record
    wait_inactive(systemd_pieter)  # a systemd job does not keep the server up: its unit records its end
    time.sleep(3)
    with systemd_pieter.client() as api:
        job = wait_for_job(api, job_id)
        assert job["result"] == "success"
        assert api.get(f"/jobs/{job_id}/log").text == "begun\ndone\n"
    wait_inactive(systemd_pieter)
    with systemd_pieter.client() as api:
        assert api.get("/repos/idle").status_code == 200, "the next connection is answered"


def test_bad_configuration_answers_503_and_keeps_the_socket(systemd_pieter, service):
    service(PIETER_MAX_JOBS="lots")
    with systemd_pieter.client() as api:
        for _ in range(3):
            response = api.get("/repos")
            assert response.status_code == 503
            assert "PIETER_MAX_JOBS" in response.json()["error"]
    assert is_active(systemd_pieter) == "active"
    assert systemd_pieter.sh("systemctl is-active pieter-test.socket").strip() == "active"
