"""Faults, each against real Redis, real server processes and, where it says so, the real systemd (the booted
sandbox of tests/systemd_pieter.py): the server killed with SIGKILL mid-job, Redis restarted mid-job (with the
append-only persistence the package configures), a job hitting its memory limit, a job forking 10,000
processes, a job past its timeout, the workspace's disk full, a job printing a secret parameter.

After each: no job is lost (but the one documented case: a local job whose server was killed is `lost`) or stuck
in `running`, the server answers, and the queue moves on (a following job succeeds).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import PieterServer, RedisServer, snapshot, wait_for_job
from tests.systemd_pieter import RUN

ENDED = ("success", "fail", "cancelled")


def add(api: httpx.Client, repo: str, scenario: str, script: bytes, query: str = "", source: str = "") -> str:
    api.put(f"/repos/{repo}", json={"source": source})
    response = api.put(f"/repos/{repo}/{scenario}{query}", content=script)
    assert response.status_code in (200, 201), response.text
    return f"/repos/{repo}/{scenario}"


def wait_until(predicate, timeout: float = 30, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def log_of(api: httpx.Client, job_id: int) -> str:
    return api.get(f"/jobs/{job_id}/log").text


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def moves_on(api: httpx.Client, repo: str = "after") -> None:
    """The aftermath every fault test checks: the server answers with Redis, no job is left `running` or
    `queued`, and a following job runs to success."""
    info = api.get("/")
    assert info.status_code == 200 and info.json()["redis"] == "ok", info.text
    wait_until(lambda: api.get("/jobs?state=running").json()["total"] == 0, 60, "no job running")
    wait_until(lambda: api.get("/jobs?state=queued").json()["total"] == 0, 60, "no job queued")
    path = add(api, repo, "next", b"echo the queue moves on\n")
    job = wait_for_job(api, api.patch(path).json()["id"], timeout=60)
    assert (job["state"], job["tail"]) == ("success", ["the queue moves on"]), job


def no_job_lost(api: httpx.Client, ids: list[int], allowed_lost: tuple[int, ...] = ()) -> dict[int, dict]:
    """Every job still exists and has ended; only `allowed_lost` may be `lost`."""
    jobs = {}
    for job_id in ids:
        response = api.get(f"/jobs/{job_id}")
        assert response.status_code == 200, f"job {job_id} vanished: {response.text}"
        jobs[job_id] = job = response.json()
        assert job["state"] in ENDED, job
        if job["result"] == "lost":
            assert job_id in allowed_lost, f"job {job_id} lost: {job}"
    return jobs


# ------------------------------------------------------------------------------------------ local runner
@pytest.fixture
def own_redis(tmp_path):
    """A Redis of this test's own with the persistence the package configures (appendonly, everysec)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def local_server(tmp_path, own_redis):
    """A factory of `pieter serve` (local runner) processes sharing one state directory, so a killed server
    can be started again as it was; all stopped at the end."""
    servers: list[PieterServer] = []

    def start(**settings: str) -> PieterServer:
        server = PieterServer(tmp_path / "server", own_redis.url, PIETER_CONFIG="/nonexistent", **settings)
        if servers:
            server.port, server.url = servers[0].port, servers[0].url  # the same address, as systemd would
            server.env["PIETER_API_PORT"] = str(server.port)
            shutil.rmtree(server.state_dir)
            server.state_dir = servers[0].state_dir  # and the same state directory
            server.env["PIETER_STATE_DIR"] = servers[0].env["PIETER_STATE_DIR"]
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process is not None:
            server.stop()
    if servers:
        shutil.rmtree(servers[0].state_dir, ignore_errors=True)


def test_local_server_killed_mid_job(local_server, shared_dir):
    """SIGKILL to the server while a job runs and two wait: on the restart the running job is recorded as
    `lost` (a local job is the server's child: README), its processes do not run on unsupervised, and the
    queued jobs run."""
    server = local_server(PIETER_MAX_JOBS="1")
    api = server.client()
    pids = shared_dir / "pids"
    path = add(api, "demo", "slow", f"echo $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\necho started\nwait\n".encode())
    quick = add(api, "demo", "quick", b"echo quick\n")
    running = api.patch(path).json()["id"]
    queued = [api.patch(quick).json()["id"] for _ in range(2)]
    wait_until(lambda: "started" in log_of(api, running), what="the job to start")
    server.stop(signal.SIGKILL)
    job_pids = [int(p) for p in pids.read_text().split()]

    server = local_server(PIETER_MAX_JOBS="1")
    api = server.client()
    lost = wait_for_job(api, running, timeout=30)
    assert (lost["state"], lost["result"]) == ("fail", "lost"), lost
    assert "the server stopped while this job ran" in log_of(api, running)
    for job_id in queued:
        assert wait_for_job(api, job_id, timeout=30)["result"] == "success"
    no_job_lost(api, [running, *queued], allowed_lost=(running,))
    try:
        wait_until(lambda: not any(alive(p) for p in job_pids), 15, "the lost job's processes to be gone")
    finally:
        for pid in job_pids:  # what the test itself must not leave behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    moves_on(api)


def test_local_redis_restarted_mid_job(local_server, own_redis):
    """Redis stopped (SIGTERM: it writes its append-only file) and started again while a job writes its log:
    the job ends `success` with every line exactly once, and a following job runs."""
    server = local_server()
    api = server.client()
    path = add(api, "demo", "ticks", b"for i in $(seq 1 12); do echo tick $i; sleep 0.25; done\n")
    job_id = api.patch(path).json()["id"]
    wait_until(lambda: "tick 2" in log_of(api, job_id), what="the first ticks")
    own_redis.stop()
    assert api.get("/repos").status_code == 503, "Redis is down: a clear 503"
    time.sleep(1.5)
    own_redis.start()
    wait_until(lambda: api.get("/repos").status_code == 200, 30, "the server to see Redis again")
    job = wait_for_job(api, job_id, timeout=60)
    assert (job["state"], job["result"]) == ("success", "success"), job
    assert log_of(api, job_id) == "".join(f"tick {i}\n" for i in range(1, 13))
    no_job_lost(api, [job_id])
    moves_on(api)


def test_local_job_past_its_timeout(local_server, shared_dir):
    """A job that ignores SIGTERM and runs past its timeout is killed with its children (SIGKILL after the
    grace period): `timeout`, nothing left running."""
    server = local_server()
    api = server.client()
    pids = shared_dir / "pids"
    script = f"trap '' TERM\necho $$ >> {pids}\nsleep 300 &\necho $! >> {pids}\necho waiting\nwait\nwait\n".encode()
    path = add(api, "demo", "stubborn", script, query="?timeout=1")
    started = time.monotonic()
    job = wait_for_job(api, api.patch(path).json()["id"], timeout=60)
    assert (job["state"], job["result"]) == ("fail", "timeout"), job
    assert time.monotonic() - started < 30
    wait_until(lambda: not any(alive(int(p)) for p in pids.read_text().split()), 15, "the job's processes to end")
    no_job_lost(api, [job["id"]])
    moves_on(api)


@pytest.fixture
def small_disk():
    """A 4 MiB tmpfs, mounted for the test (readable by all: jobs run as nobody) and unmounted after."""
    path = Path(os.environ.get("PIETER_TEST_TMP", "/tmp")) / f"pieter-small-disk-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(mode=0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "pieter-small-disk", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def test_local_workspace_disk_full(local_server, small_disk):
    """The state directory on a 4 MiB disk: a job that fills it fails with its own error; while the disk is
    full the next job fails clearly (`error`, the log says why); the server lives on, and once the hog's
    workspace is deleted jobs run again."""
    server = local_server(PIETER_STATE_DIR=str(small_disk / "state"))
    api = server.client()
    hog = add(api, "demo", "hog", b"dd if=/dev/zero of=big bs=64k count=1000 2>&1\nrc=$?\necho dd=$rc\nexit $rc\n")
    filled = wait_for_job(api, api.patch(hog).json()["id"], timeout=60)
    assert (filled["state"], filled["result"], filled["tail"][-1]) == ("fail", "exit-code", "dd=1"), filled
    assert "No space left on device" in log_of(api, filled["id"])
    assert api.get("/").status_code == 200
    filler = small_disk / "filler"  # what the hog's ended job gave back (its directory) is taken again
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()

    blocked = wait_for_job(api, api.patch(add(api, "demo", "small", b"echo fits\n")).json()["id"], timeout=60)
    assert (blocked["state"], blocked["result"]) == ("fail", "error"), blocked
    assert "No space left on device" in log_of(api, blocked["id"]), log_of(api, blocked["id"])
    assert api.get("/").status_code == 200

    assert api.delete(f"/jobs/{filled['id']}").status_code == 200
    filler.unlink()
    no_job_lost(api, [blocked["id"]])
    moves_on(api)


def test_local_secret_parameter_printed(local_server, git_repo):
    """What the log keeps: a parameter the job prints is kept as printed (the log is the job's output, byte for
    byte: no masking); the job record shows its parameters to API clients; the server's own log has none.
    A password in the source URL is masked in the clone line and never reaches the job's log or the API."""
    server = local_server()
    api = server.client()
    secret = "s3cr3t-Value_42"
    path = add(api, "demo", "leaky", b'echo "token=$TOKEN"\necho "$TOKEN" | rev\n')
    job = wait_for_job(api, api.patch(path, json={"env": {"TOKEN": secret}}).json()["id"])
    assert job["result"] == "success"
    assert log_of(api, job["id"]) == f"token={secret}\n{secret[::-1]}\n", "the log keeps what the job printed"
    assert api.get(f"/jobs/{job['id']}").json()["env"] == {"TOKEN": secret}, "the record keeps the parameters"
    assert secret not in server.output.read_text(errors="replace"), "the server's own log never has it"

    repo_secret = "r3p0-Secret-77"
    assert api.put("/repos/demo", json={"secrets": {"REPO_TOKEN": repo_secret}}).status_code == 200
    masked = wait_for_job(api, api.patch(add(api, "demo", "masked", b'echo "repo=$REPO_TOKEN"\n')).json()["id"])
    assert log_of(api, masked["id"]) == "repo=***\n", "a repo secret is masked in the log"
    assert repo_secret not in api.get(f"/jobs/{masked['id']}").text + api.get("/repos/demo").text

    # Jobs that come later run as the same user: they must not find an ended job's inputs on disk.
    snoop = add(api, "other", "snoop", f'cat "$PIETER_WORKSPACE/../../jobs/{job["id"]}/params.sh" '
                                       f'"$PIETER_WORKSPACE/../../jobs/{masked["id"]}/params.sh"\n'.encode())  # fmt: skip
    snooped = wait_for_job(api, api.patch(snoop).json()["id"])
    assert secret not in log_of(api, snooped["id"]) and "***" not in log_of(api, snooped["id"]), log_of(
        api, snooped["id"]
    )
    assert snooped["result"] == "exit-code", "the ended jobs' parameter files are gone or unreadable"

    password = "pa55-Word-9"
    unreachable = add(api, "private", "clone", b"echo never\n", source=f"https://user:{password}@127.0.0.1:9/x.git")
    failed = wait_for_job(api, api.patch(unreachable).json()["id"], timeout=60)
    assert (failed["state"], failed["result"]) == ("fail", "error"), failed
    log = log_of(api, failed["id"])
    assert "pieter: cloning https://user:***@127.0.0.1:9/x.git" in log and "git clone failed" in log, log
    assert password not in log and password not in api.get(f"/jobs/{failed['id']}").text
    assert password not in api.get("/repos/private").text
    assert password not in server.output.read_text(errors="replace")
    no_job_lost(api, [job["id"], failed["id"]])
    moves_on(api)


# ------------------------------------------------------------------------------------------------ systemd
@pytest.fixture
def sd(systemd_pieter):
    with systemd_pieter.client() as client:
        yield client


def unit_gone(systemd_pieter, job_id: int) -> bool:
    return systemd_pieter.sh(f"systemctl show -P LoadState pieter-job-{job_id}.service").strip() == "not-found"


# A job past its timeout, or cancelled, gets SIGTERM and then, this long after, SIGKILL: the local runner's grace
# (KILL_GRACE, 5 s) plus room for a loaded host. systemd's default stop timeout (90 s) would be far past it.
STOP_GRACE = 20


def test_systemd_server_killed_mid_job(sd, systemd_pieter):
    """SIGKILL to the socket-activated server while jobs run and more wait: the units go on, their collectors
    record their ends, the next server (started by the socket) takes up the queue: nothing lost."""
    slow = add(sd, "sdkill", "slow", b"for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done\n")
    ids = [sd.patch(slow).json()["id"] for _ in range(6)]  # PIETER_MAX_JOBS=4: two wait in the queue
    wait_until(lambda: "tick 1" in log_of(sd, ids[0]), 60, "the first unit to run")  # not only its record
    systemd_pieter.sh("systemctl kill --signal=KILL pieter-test.service")
    time.sleep(1)
    for job_id in ids:
        job = wait_for_job(sd, job_id, timeout=90)
        assert (job["state"], job["result"]) == ("success", "success"), (job, log_of(sd, job_id))
        assert log_of(sd, job_id) == "".join(f"tick {i}\n" for i in range(1, 7))
    no_job_lost(sd, ids)
    moves_on(sd, "sdkill-after")


REDIS_UNIT = "pieter-test-redis"
REDIS_ARGS = f"--port 0 --unixsocket {RUN}/redis.sock --unixsocketperm 700 --save ''"


def _pings(systemd_pieter) -> bool:
    try:
        return bool(systemd_pieter.redis().ping())
    except Exception:
        return False


def persistent_sandbox_redis(systemd_pieter) -> str:
    """Give the sandbox's Redis the package's persistence (appendonly, everysec) without losing its data:
    switched on at run time, so that a restart with `--appendonly yes` loads it all back. Returns its dir."""
    db = systemd_pieter.redis()
    if db.config_get("appendonly")["appendonly"] != "yes":
        db.config_set("appendonly", "yes")
    wait_until(lambda: not int(db.info("persistence")["aof_rewrite_in_progress"])
               and not int(db.info("persistence")["aof_rewrite_scheduled"]), 30, "the first append-only file")  # fmt: skip
    return db.config_get("dir")["dir"]


def restart_sandbox_redis(systemd_pieter, directory: str) -> None:
    """Stop the sandbox's Redis as `systemctl restart` would (SIGTERM: it writes its append-only file and
    exits), pause, and start it again with persistence: it loads its data back."""
    systemd_pieter.sh(
        f"systemctl stop {REDIS_UNIT}.service; systemctl reset-failed {REDIS_UNIT}.service 2>/dev/null; true"
    )
    assert not _pings(systemd_pieter)
    time.sleep(1.5)
    systemd_pieter.sh(f"systemd-run --collect --unit={REDIS_UNIT} -- redis-server {REDIS_ARGS} "
                      f"--appendonly yes --appendfsync everysec --dir {directory}")  # fmt: skip
    wait_until(lambda: _pings(systemd_pieter), 20, "the sandbox's Redis")


def server_journal(systemd_pieter) -> str:
    return systemd_pieter.sh("journalctl --no-pager -o cat -n 80 -u pieter-test.service", check=False)


def test_systemd_redis_restarted_mid_job(sd, systemd_pieter):
    """The sandbox's Redis, given the package's persistence, restarted (SIGTERM, as `systemctl restart` does)
    while a job unit writes: the unit runs on, server and collector retry, and the job ends `success` with its
    whole log exactly once; what was there before is still there; the queue moves on. (The sandbox's Redis
    stays persistent for the rest of the session.)"""
    directory = persistent_sandbox_redis(systemd_pieter)
    path = add(sd, "sdredis", "ticks", b"for i in $(seq 1 16); do echo tick $i; sleep 0.25; done\n")
    job_id = sd.patch(path).json()["id"]
    wait_until(lambda: "tick 2" in log_of(sd, job_id), 60, "the first ticks")
    before = sd.get("/repos").json()
    restart_sandbox_redis(systemd_pieter, directory)
    job = wait_for_job(sd, job_id, timeout=90)
    if (job["state"], job["result"]) != ("success", "success"):
        Path("/tmp/sdjournal.txt").write_text(server_journal(systemd_pieter))
    assert (job["state"], job["result"]) == ("success", "success"), (job, log_of(sd, job_id))
    assert log_of(sd, job_id) == "".join(f"tick {i}\n" for i in range(1, 17))
    assert sd.get("/repos").json() == before, "the append-only file kept the data"
    no_job_lost(sd, [job_id])
    moves_on(sd, "sdredis-after")


def test_systemd_memory_limit(sd, systemd_pieter):
    """A job past its memory_max is killed (`oom-kill` on cgroup v2, `signal` on v1); the host lives on."""
    hog = b"#!/usr/bin/python3\nb = []\nwhile True:\n    b.append(bytearray(8 << 20))\n    print(len(b) * 8, 'MiB', flush=True)\n"
    path = add(sd, "sdfault", "hog", hog, query="?memory_max=64M&timeout=60")
    job = wait_for_job(sd, sd.patch(path).json()["id"], timeout=90)
    assert job["state"] == "fail" and job["result"] in ("oom-kill", "signal"), (job, log_of(sd, job["id"]))
    assert all(int(line.split()[0]) <= 64 for line in job["tail"] if line.endswith("MiB")), job["tail"]
    wait_until(lambda: unit_gone(systemd_pieter, job["id"]), 30, "the unit to go")
    no_job_lost(sd, [job["id"]])
    moves_on(sd, "sdfault-after")


FORKER = b"""#!/usr/bin/python3
import os, time
forked = failed = 0
for i in range(10000):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    forked += 1
print(f"forked={forked} failed={failed}", flush=True)
"""


def test_systemd_ten_thousand_forks(sd, systemd_pieter):
    """A job forking 10,000 processes under tasks_max=64: TasksMax holds (at most 63 children), the job's
    unit ends with all its processes, and the host answers throughout."""
    path = add(sd, "sdfault", "forker", FORKER, query="?tasks_max=64&timeout=60")
    job_id = sd.patch(path).json()["id"]
    job = wait_for_job(sd, job_id, timeout=120)
    assert (job["state"], job["result"]) == ("success", "success"), job
    forked, failed = (int(part.split("=")[1]) for part in job["tail"][-1].split())
    assert forked < 64 and failed >= 10000 - 64 and forked + failed == 10000, job["tail"]
    wait_until(lambda: unit_gone(systemd_pieter, job_id), 30, "the unit and its processes to go")
    assert systemd_pieter.sh("systemctl is-system-running || true").strip() in ("running", "degraded")
    no_job_lost(sd, [job_id])
    moves_on(sd, "sdfault-after")


def test_systemd_fork_bomb_is_contained(sd, systemd_pieter):
    """A shell fork bomb under tasks_max=64 and timeout=5: it never gets past TasksMax, the host answers while
    it runs, and at the timeout systemd ends the whole tree."""
    bomb = b"#!/bin/bash\necho lighting\nbomb() { bomb | bomb & }\nbomb\nwait\nsleep 300\n"
    path = add(sd, "sdfault", "bomb", bomb, query="?tasks_max=64&timeout=5")
    job_id = sd.patch(path).json()["id"]
    wait_for_job(sd, job_id, ("running", *ENDED), timeout=60)
    assert sd.get("/").status_code == 200, "the API answers during the bomb"
    job = wait_for_job(sd, job_id, timeout=150)
    assert job["state"] == "fail" and job["result"] in ("timeout", "exit-code", "signal"), job
    wait_until(lambda: unit_gone(systemd_pieter, job_id), 60, "the unit and its processes to go")
    assert job["duration"] < 5 + STOP_GRACE, f"the bomb outlived its timeout by {job['duration'] - 5:.0f} s"
    no_job_lost(sd, [job_id])
    moves_on(sd, "sdfault-after")


def test_systemd_job_past_its_timeout(sd, systemd_pieter):
    """A job that ignores SIGTERM and runs past its timeout: systemd stops the unit (SIGKILL after its stop
    timeout if need be): `timeout`, no process left."""
    path = add(sd, "sdfault", "stubborn", b"trap '' TERM\nsleep 4243 &\necho waiting\nwait\nwait\n",
               query="?timeout=2")  # fmt: skip
    job = wait_for_job(sd, sd.patch(path).json()["id"], timeout=150)
    assert (job["state"], job["result"]) == ("fail", "timeout"), job
    wait_until(lambda: not systemd_pieter.sh("pgrep -f 'sleep [4]243' || true").strip(), 30, "no sleep left")
    assert job["duration"] < 2 + STOP_GRACE, f"the job outlived its timeout by {job['duration'] - 2:.0f} s"
    no_job_lost(sd, [job["id"]])
    moves_on(sd, "sdfault-after")


def test_systemd_secret_parameter_printed(sd, systemd_pieter):
    """What the logs keep on the systemd runner: what the job prints, as printed, in Redis and in the journal
    (`journalctl -u pieter-job-N`); the parameter itself is never in the unit's properties."""
    secret = "s3cr3t-Journal_7"
    path = add(sd, "sdfault", "leaky", b'echo "token=$TOKEN"\n')
    job_id = sd.patch(path, json={"env": {"TOKEN": secret}}).json()["id"]
    job = wait_for_job(sd, job_id, timeout=60)
    assert job["result"] == "success" and job["tail"] == [f"token={secret}"]
    journal = systemd_pieter.sh(f"journalctl --no-pager -o cat _SYSTEMD_UNIT=pieter-job-{job_id}.service")
    assert f"token={secret}" in journal, "the journal keeps what the job printed"
    assert secret not in systemd_pieter.sh("journalctl --no-pager -o cat -u pieter-test.service")

    repo_secret = "r3p0-Journal-88"
    assert sd.put("/repos/sdfault", json={"secrets": {"REPO_TOKEN": repo_secret}}).status_code == 200
    masked_id = sd.patch(add(sd, "sdfault", "masked", b'echo "repo=$REPO_TOKEN"\n')).json()["id"]
    wait_for_job(sd, masked_id, timeout=60)
    assert log_of(sd, masked_id) == "repo=***\n", "a repo secret is masked in the log in Redis"
    journal = systemd_pieter.sh(f"journalctl --no-pager -o cat _SYSTEMD_UNIT=pieter-job-{masked_id}.service")
    assert f"repo={repo_secret}" in journal, "the journal keeps the job's output as printed (root and adm only)"

    snoop = add(sd, "sdother", "snoop", f"cat /var/lib/pieter-ci/jobs/{job_id}/params.sh "
                                        f"/var/lib/pieter-ci/jobs/{masked_id}/params.sh\n".encode())  # fmt: skip
    snooped = wait_for_job(sd, sd.patch(snoop).json()["id"], timeout=60)
    assert snooped["result"] == "exit-code" and secret not in log_of(sd, snooped["id"]), log_of(sd, snooped["id"])
    assert repo_secret not in log_of(sd, snooped["id"])
    no_job_lost(sd, [job_id, masked_id, snooped["id"]])
    moves_on(sd, "sdfault-after")


def test_systemd_redis_snapshot_after_faults(systemd_pieter):
    """After the faults above, no job record in the sandbox's Redis is left `running` or half-written."""
    db = systemd_pieter.redis()
    dump = snapshot(db)
    for key, value in dump.items():
        name = key.decode()
        if name.startswith("pieter:job:") and name.count(":") == 2 and name[-1].isdigit():
            assert value.get(b"state") in (b"success", b"fail", b"cancelled"), (name, value.get(b"state"))
            assert value.get(b"repo") and value.get(b"scenario") and value.get(b"timestamp"), (name, value)
