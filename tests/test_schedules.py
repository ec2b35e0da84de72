"""Schedules (persistent systemd timers that queue a scenario) against the real systemd of the sandbox, and the
clear 409 of a server whose host is not booted with systemd (this one: PID 1 is not systemd)."""

import re
import time

import pytest

from pieter import schedules
from pieter.units import systemd_booted
from tests.conftest import wait_for_job
from tests.systemd_pieter import RUN

UNITS = "/etc/systemd/system"
# The timers' client talks HTTP to PIETER_URL (http://127.0.0.1:8000), the server in the sandbox listens on a
# unix socket: systemd's own proxy joins them. (A second ListenStream= on pieter-test.socket would not do: the
# server serves the first socket systemd passes it, and connections to the other wait for ever.)
PROXY_SOCKET = """[Socket]
ListenStream=127.0.0.1:8000
"""
PROXY_SERVICE = f"""[Unit]
Requires=pieter-test-tcp.socket
After=pieter-test-tcp.socket
[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd {RUN}/api.sock
"""
WIPE = f"""for f in {UNITS}/pieter-schedule-*.timer; do
  [ -e "$f" ] && systemctl disable --now "$(basename "$f")" >/dev/null 2>&1
done
rm -f {UNITS}/pieter-schedule-*; systemctl daemon-reload; systemctl reset-failed 'pieter-schedule-*' || true
"""


@pytest.fixture(scope="module")
def tcp_proxy(systemd_pieter):
    sb = systemd_pieter.sandbox
    sb.path(f"{UNITS}/pieter-test-tcp.socket").write_text(PROXY_SOCKET)
    sb.path(f"{UNITS}/pieter-test-tcp.service").write_text(PROXY_SERVICE)
    systemd_pieter.sh("systemctl daemon-reload && systemctl start pieter-test-tcp.socket")
    assert '"name":"pieter-ci"' in systemd_pieter.sh("curl -sS --max-time 20 http://127.0.0.1:8000/")
    yield
    systemd_pieter.sh(f"systemctl stop pieter-test-tcp.socket pieter-test-tcp.service; "
                      f"rm -f {UNITS}/pieter-test-tcp.*; systemctl daemon-reload")  # fmt: skip


@pytest.fixture
def sapi(systemd_pieter, tcp_proxy):
    """The sandbox's API; no schedule outlives the test (the sandbox serves the whole session)."""
    with systemd_pieter.client() as client:
        yield client
    systemd_pieter.sh(WIPE)


def scenario(api, repo: str, name: str, script: bytes = b'echo "scheduled $PIETER_REPO/$PIETER_SCENARIO"\n') -> str:
    api.put(f"/repos/{repo}", json={"source": ""})
    assert api.put(f"/repos/{repo}/{name}", content=script).status_code in (200, 201)
    return f"/repos/{repo}/{name}/schedule"


def timers(systemd_pieter) -> str:
    return systemd_pieter.sh("systemctl list-timers --all --no-pager --no-legend")


def schedule_files(systemd_pieter) -> list[str]:
    return sorted(p.name for p in systemd_pieter.sandbox.path(UNITS).glob("pieter-schedule-*"))


def systemd_escape(systemd_pieter, text: str) -> str:
    return systemd_pieter.sandbox.run("systemd-escape", "--", text).stdout.strip()


def test_a_schedule_is_a_persistent_timer_that_queues_jobs(sapi, systemd_pieter):
    path = scenario(sapi, "sched", "tick")
    put = sapi.put(path, json={"on_calendar": "*:*:0/5"})  # every 5 s
    assert put.status_code == 201, put.text
    unit = "pieter-schedule-sched-tick"
    body = put.json()
    assert body["on_calendar"] == "*:*:0/5" and body["unit"] == f"{unit}.timer" and body["state"] == "active"
    assert -5 <= body["next_elapse"] - time.time() <= 6, body
    assert schedule_files(systemd_pieter) == [f"{unit}.service", f"{unit}.timer"]
    timer = systemd_pieter.sandbox.path(f"{UNITS}/{unit}.timer").read_text()
    assert "OnCalendar=*:*:0/5\n" in timer and "Persistent=true\n" in timer and "WantedBy=timers.target\n" in timer
    service = systemd_pieter.sandbox.path(f"{UNITS}/{unit}.service").read_text()
    assert "Type=oneshot\n" in service and "-m pieter run sched tick\n" in service
    assert 'Environment="PIETER_URL=http://127.0.0.1:8000"' in service
    assert f"{unit}.timer" in timers(systemd_pieter)
    assert systemd_pieter.sh(f"systemctl is-enabled {unit}.timer").strip() == "enabled"
    assert systemd_pieter.sh(f"systemctl show -P Persistent {unit}.timer").strip() == "yes"

    deadline = time.monotonic() + 15
    while not (jobs := sapi.get("/jobs?repo=sched").json()["jobs"]):
        assert time.monotonic() < deadline, "no job queued by the timer: " + systemd_pieter.sh(
            f"journalctl --no-pager -u {unit}.service -u {unit}.timer", check=False)  # fmt: skip
        time.sleep(0.2)
    job = wait_for_job(sapi, jobs[-1]["id"], timeout=15)
    assert (job["scenario"], job["state"]) == ("tick", "success"), job
    assert job["tail"] == ["scheduled sched/tick"]
    shown = sapi.get(path).json()
    assert shown["on_calendar"] == "*:*:0/5" and shown["last_trigger"] is not None
    assert re.search(rf"^{job['id']}$", systemd_pieter.sh(f"journalctl --no-pager -o cat -u {unit}.service"), re.M)

    replaced = sapi.put(path, json={"on_calendar": "2099-01-01 06:00"})
    assert replaced.status_code == 200 and replaced.json()["on_calendar"] == "2099-01-01 06:00"
    assert replaced.json()["last_trigger"] is None, "a replaced schedule starts afresh"
    assert "2099-01-01 06:00:00" in systemd_pieter.sh(f"systemctl show -P TimersCalendar {unit}.timer")
    assert replaced.json()["next_elapse"] > time.time() + 70 * 365 * 86400, "2099, in whatever time zone"

    deleted = sapi.delete(path)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == f"{unit}.timer"
    assert schedule_files(systemd_pieter) == []
    assert unit not in timers(systemd_pieter)
    assert unit not in systemd_pieter.sh(f"ls {UNITS}/timers.target.wants /var/lib/systemd/timers")
    assert systemd_pieter.sh("systemctl list-units --all --plain --no-legend 'pieter-schedule-*'").strip() == ""
    assert sapi.get(path).status_code == 404
    assert sapi.delete(path).status_code == 404
    sapi.delete("/repos/sched")


@pytest.mark.parametrize(
    "expression",
    ["bogus", "25:00", "2001-01-01", "daily\nExecStartPre=/bin/false", "%n", "daily\\", "", "   ", 7, None],
)
def test_an_invalid_expression_is_refused_and_writes_nothing(sapi, systemd_pieter, expression):
    path = scenario(sapi, "sched-bad", "s")
    answer = sapi.put(path, json={"on_calendar": expression})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]
    assert schedule_files(systemd_pieter) == []
    assert sapi.get(path).status_code == 404


def test_other_refusals(sapi, systemd_pieter):
    path = scenario(sapi, "sched-bad", "s")
    assert sapi.put(path, json={"on_calendar": "daily", "when": "now"}).status_code == 400
    assert sapi.put(path, content=b"daily").status_code == 400
    assert sapi.put(path).status_code == 400
    assert sapi.put("/repos/sched-bad/nope/schedule", json={"on_calendar": "daily"}).status_code == 404
    assert sapi.put("/repos/nope/s/schedule", json={"on_calendar": "daily"}).status_code == 404
    assert sapi.put("/repos/sched-bad/..x/schedule", json={"on_calendar": "daily"}).status_code == 400
    assert sapi.get("/repos/sched-bad/s/schedule").status_code == 404
    assert schedule_files(systemd_pieter) == []
    sapi.delete("/repos/sched-bad")


def test_names_that_join_alike_get_distinct_units(sapi, systemd_pieter):
    long_repo, long_scenario = "r" + "-" * 63, "s" + "-" * 63  # escaped, longer than a unit name may be
    pairs = [("a-b", "c"), ("a", "b-c"), ("a.b", "c_d"), (long_repo, long_scenario)]
    units = []
    for repo, name in pairs:
        put = sapi.put(scenario(sapi, repo, name), json={"on_calendar": "daily"})
        assert put.status_code == 201, put.text
        units.append(put.json()["unit"])
    assert len(set(units)) == len(units)
    for (repo, name), unit in zip(pairs[:3], units[:3], strict=True):
        assert unit == f"pieter-schedule-{systemd_escape(systemd_pieter, f'{repo}/{name}')}.timer"
        assert schedules.escape(f"{repo}/{name}") == systemd_escape(systemd_pieter, f"{repo}/{name}")
    assert units[0] == r"pieter-schedule-a\x2db-c.timer" and units[1] == r"pieter-schedule-a-b\x2dc.timer"
    assert len(units[3]) <= 255 and units[3].startswith("pieter-schedule-_")
    listed = timers(systemd_pieter)
    assert all(unit in listed for unit in units), listed
    assert sapi.delete("/repos/a-b/c/schedule").status_code == 200
    assert sapi.get("/repos/a/b-c/schedule").json()["unit"] == units[1], "the other one stays"
    assert sapi.get(f"/repos/{long_repo}/{long_scenario}/schedule").json()["on_calendar"] == "daily"
    for repo, _ in pairs:
        sapi.delete(f"/repos/{repo}")
    assert schedule_files(systemd_pieter) == []


def test_deleting_a_scenario_or_its_repo_removes_its_schedules(sapi, systemd_pieter):
    for repo, name in [("sched-x", "one"), ("sched-x", "two"), ("sched-y", "one")]:
        assert sapi.put(scenario(sapi, repo, name), json={"on_calendar": "hourly"}).status_code == 201
    assert sapi.delete("/repos/sched-x/one").status_code == 200
    assert "pieter-schedule-sched\\x2dx-one.timer" not in timers(systemd_pieter)
    assert "pieter-schedule-sched\\x2dx-two.timer" in timers(systemd_pieter)
    assert sapi.delete("/repos/sched-x").status_code == 200
    assert schedule_files(systemd_pieter) == ["pieter-schedule-sched\\x2dy-one.service",
                                              "pieter-schedule-sched\\x2dy-one.timer"]  # fmt: skip
    assert "sched\\x2dx" not in timers(systemd_pieter)
    assert "sched\\x2dx" not in systemd_pieter.sh("systemctl list-units --all --plain --no-legend 'pieter-schedule-*'")
    sapi.delete("/repos/sched-y")
    assert schedule_files(systemd_pieter) == []


def test_without_systemd_schedules_are_a_clear_409(api):
    assert not systemd_booted(), "this test needs a host whose PID 1 is not systemd"
    api.put("/repos/plain", json={})
    api.put("/repos/plain/build", content=b"true\n")
    for method in ("PUT", "GET", "DELETE"):
        answer = api.request(method, "/repos/plain/build/schedule", json={"on_calendar": "daily"})
        assert answer.status_code == 409, answer.text
        assert "not booted with systemd" in answer.json()["error"]
    assert api.put("/repos/plain/build/schedule", json={"on_calendar": "daily\nx"}).status_code == 400
    assert api.delete("/repos/plain/build").status_code == 200, "deleting a scenario needs no systemd"
    assert api.delete("/repos/plain").status_code == 200
