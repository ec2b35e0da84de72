"""Issue 4's acceptance test: the Debian package, installed by name from its apt repository, gives a working CI.

`make deb apt-repo` builds dist/ (make rebuilds only when a packaged file changed). Then two checks run side by side:

- in a booted systemd (`SystemdSandbox`, whose root is an overlay of the host's `/`): `apt install pieter-ci` from
  `dist/apt`; the socket is listening and the service starts on the first request; the original README's httpie
  walkthrough (a git source under /srv: jobs cannot see /tmp or /root); the job's output in the journal; Redis
  out of the jobs' reach, and no Redis but Pieter's own (the package needs redis-tools, not redis-server, whose
  default instance would listen on 127.0.0.1:6379); an upgrade while a job runs keeps the job (and Redis); the
  service exits when idle and the next request is still answered; `apt purge` leaves nothing behind;
- in a bare `debootstrap --variant=minbase bookworm` root (cached in /var/cache/pieter-ci-test, packages from the
  host's Debian mirror), because the sandbox has every host package and so proves nothing about Depends:
  `apt install pieter-ci` resolves and installs without redis-server, the Redis server its unit runs is there
  (redis-tools' redis-check-rdb, started as redis-server), and `pieter --version` and `import pieter.app` work.

Skipped only where no sandbox can be booted, and never in CI.
"""

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pieter
from tests.sandbox import SandboxCommandError, SystemdSandbox

ROOT = Path(__file__).resolve().parent.parent
DEB = ROOT / "dist" / f"pieter-ci_{pieter.__version__}_all.deb"
APT_DIR = ROOT / "dist" / "apt"
CACHE = Path("/var/cache/pieter-ci-test")
API = "http://127.0.0.1:8000"
IDLE_EXIT = 3  # seconds, set by a drop-in: the service's idle exit is seen within the test
SCRIPT = '#!/bin/sh\necho "building $PIETER_REPO"\ncat hello.txt\n'  # the README's test_script.sh
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.usefixtures("sandbox_required")


def debian_mirror() -> str:
    """The host's Debian mirror (from its apt sources), for debootstrap and the bare root's apt."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
             if p.is_file() and p.suffix in (".list", ".sources")]  # fmt: skip
    for text in texts:
        for m in re.finditer(r"^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            if not m.group(1).rstrip("/").endswith("-security") and "debian" in m.group(1):
                return m.group(1)
    pytest.fail("no Debian mirror in the host's apt sources")


# The bare root, in a private mount namespace: debootstrap it once (cached, under a lock), then an overlay of it
# with a tmpfs on top, so each run starts from the bare root and leaves nothing. Downloaded .debs are kept in the
# cache too. policy-rc.d keeps maintainer scripts from starting daemons (redis-server) on the host.
BARE_ROOT_SCRIPT = r"""
mirror=$1 apt_dir=$2 cache=$3
mkdir -p "$cache/archives/partial"
exec 9>"$cache/lock"; flock 9
if [ ! -e "$cache/bookworm-minbase/.complete" ]; then
  rm -rf "$cache/bookworm-minbase" "$cache/bookworm-minbase.tmp"
  debootstrap --variant=minbase bookworm "$cache/bookworm-minbase.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log"; exit 1; }
  touch "$cache/bookworm-minbase.tmp/.complete"
  mv "$cache/bookworm-minbase.tmp" "$cache/bookworm-minbase"
fi
w=$(mktemp -d /tmp/pieter-bare.XXXXXX)
mount -t tmpfs tmpfs "$w"
mkdir "$w/upper" "$w/work" "$w/root"
mount -t overlay overlay -o "lowerdir=$cache/bookworm-minbase,upperdir=$w/upper,workdir=$w/work" "$w/root"
r=$w/root
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount --bind "$cache/archives" "$r/var/cache/apt/archives"
mkdir -p "$r/srv/pieter-apt" && mount --bind "$apt_dir" "$r/srv/pieter-apt"
cp /etc/resolv.conf "$r/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d" && chmod 755 "$r/usr/sbin/policy-rc.d"
echo "deb $mirror bookworm main" >"$r/etc/apt/sources.list"
echo "deb [trusted=yes] file:/srv/pieter-apt ./" >"$r/etc/apt/sources.list.d/pieter-ci.list"
in_root() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -q >/dev/null
in_root apt -o APT::Keep-Downloaded-Packages=true -o Dpkg::Use-Pty=0 install -y -q pieter-ci >"$w/apt.log" 2>&1 \
  || { tail -30 "$w/apt.log"; exit 1; }
echo "installed: $(in_root dpkg-query -W -f '${Package} ${Version} ${Status}' pieter-ci)"
in_root pieter --version
in_root python3 -c 'import pieter.app, sanic; print("sanic", sanic.__version__, "from", sanic.__file__)'
in_root test -f /etc/pieter-ci/pieter.conf
in_root systemctl is-enabled pieter-ci.socket
in_root systemctl is-enabled pieter-ci-redis.service
echo "redis-server: $(in_root dpkg-query -W -f '${Status}' redis-server 2>/dev/null || echo not installed)"
in_root bash -c 'exec -a redis-server /usr/bin/redis-check-rdb --version'
in_root id -un redis
"""


def make_package() -> None:
    """`make deb apt-repo`: builds dist/ if anything packaged changed since (make decides), lintian included."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "-C", str(ROOT), "deb", "apt-repo"], env=env, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, f"make deb apt-repo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert DEB.is_file() and (APT_DIR / "Packages").is_file() and (APT_DIR / "Release").is_file()


@pytest.fixture(scope="module")
def package() -> Path:
    make_package()
    return DEB


@pytest.fixture(scope="module")
def bare_install(package: Path) -> Iterator[subprocess.Popen[str]]:
    """The bare-root install, started in the background as soon as the package is built (its result is checked
    by test_depends_on_bare_bookworm)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "bash", "-euo", "pipefail", "-c", BARE_ROOT_SCRIPT,
         "bare", debian_mirror(), str(APT_DIR), str(CACHE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, start_new_session=True,
    )  # fmt: skip
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.fixture(scope="module")
def sb(package: Path, bare_install: subprocess.Popen[str]) -> Iterator[SystemdSandbox]:
    """A booted systemd with pieter-ci installed by name from dist/apt (and a short idle exit)."""
    sandbox = SystemdSandbox(f"pieter-pkg-{os.getpid()}", [(str(APT_DIR), "/srv/pieter-apt")])
    sandbox.boot()
    try:
        sandbox.path("/etc/apt/sources.list.d/pieter-ci.list").write_text("deb [trusted=yes] file:/srv/pieter-apt ./\n")
        # Only this source: the sandbox has no network, and the host's lists are there already.
        sandbox.run("apt-get", "update", "-q", "-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/pieter-ci.list",
                    "-o", "Dir::Etc::SourceParts=-", "-o", "APT::Get::List-Cleanup=0")  # fmt: skip
        # The host image has redis-server (the test suite's own Redis servers run its binary), and with it Debian's
        # default instance, enabled: gone here, as on a host that never had it. (redis-tools stays, as it would.)
        sandbox.run("dpkg", "--purge", "redis-server", env={"DEBIAN_FRONTEND": "noninteractive"})
        dropin = sandbox.path("/etc/systemd/system/pieter-ci.service.d/test.conf")
        dropin.parent.mkdir(parents=True)
        dropin.write_text(f"[Service]\nEnvironment=PIETER_IDLE_EXIT={IDLE_EXIT}\n")
        sandbox.run("apt", "install", "-y", "-q", "pieter-ci", env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
        yield sandbox
    finally:
        sandbox.teardown()


def http(sb: SystemdSandbox, *args: str, stdin: str | None = None) -> tuple[int, object]:
    """httpie inside the sandbox, as the README runs it; returns the status and the parsed JSON body (or text)."""
    argv = ["http", "--print=hb", "--timeout=30", *args]
    if stdin is None:
        argv.insert(1, "--ignore-stdin")
    out = sb.run(*argv, input=stdin, check=False).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/"), f"http {' '.join(args)}: no answer: {out!r}"
    try:
        parsed: object = json.loads(body) if body.strip() else None
    except json.JSONDecodeError:
        parsed = body
    return int(head.split()[1]), parsed


def unit_state(sb: SystemdSandbox, unit: str) -> str:
    return sb.run("systemctl", "is-active", unit, check=False).stdout.strip()


def journal_of(sb: SystemdSandbox, unit: str) -> str:
    return sb.run("journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit, check=False).stdout


def wait_for(predicate, what: str, timeout: float = 30, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(step)


def job_done(sb: SystemdSandbox, job_id: int) -> dict | None:
    status, job = http(sb, "GET", f"{API}/jobs/{job_id}")
    assert status == 200, job
    assert isinstance(job, dict)
    return job if job["state"] in ("success", "fail", "cancelled") else None


def test_units_verify_and_socket_activation(sb: SystemdSandbox) -> None:
    units = ["pieter-ci.socket", "pieter-ci.service", "pieter-jobs.slice", "pieter-ci-redis.service"]
    verify = sb.run("systemd-analyze", "verify", *(f"/lib/systemd/system/{u}" for u in units), check=False)
    assert verify.returncode == 0 and not verify.stderr.strip() and not verify.stdout.strip(), verify
    assert sb.run("systemctl", "is-enabled", "pieter-ci.socket").stdout.strip() == "enabled"
    # enabled into the server (WantedBy=pieter-ci.service), not at boot
    assert sb.run("systemctl", "is-enabled", "pieter-ci-redis.service").stdout.strip() == "enabled"
    assert unit_state(sb, "pieter-ci.socket") == "active"
    assert unit_state(sb, "pieter-ci.service") == "inactive"  # nothing asked yet
    assert unit_state(sb, "pieter-ci-redis.service") == "inactive"  # it starts with the server
    status, info = http(sb, "GET", f"{API}/")
    assert status == 200 and isinstance(info, dict), info
    assert info["runner"] == "systemd", info
    assert unit_state(sb, "pieter-ci.service") == "active"
    assert unit_state(sb, "pieter-ci-redis.service") == "active"


def test_no_redis_but_pieters_own(sb: SystemdSandbox) -> None:
    """apt did not bring redis-server (nor its default instance, open on 127.0.0.1:6379) back: the only Redis
    is Pieter's, on its unix socket."""
    status = sb.run("dpkg-query", "-W", "-f", "${Status}", "redis-server", check=False).stdout
    assert "ok installed" not in status, f"apt install pieter-ci installed redis-server: {status}"
    assert unit_state(sb, "redis-server.service") != "active"
    # (Pieter's Redis has a network namespace of its own, PrivateNetwork=: its unix socket, reached through the file
    # system from anywhere, is not among this namespace's listeners; no TCP one anywhere, it has no network)
    listening = sb.run("ss", "-Hltuxp").stdout
    assert ":6379" not in listening and "redis" not in listening, listening
    procs = sb.run("pgrep", "-a", "redis").stdout.splitlines()
    assert len(procs) == 1 and "/run/redis-pieter-ci/redis-server.sock" in procs[0], procs
    assert sb.run("redis-cli", "-s", "/run/redis-pieter-ci/redis-server.sock", "ping").stdout.strip() == "PONG"


def test_original_walkthrough(sb: SystemdSandbox) -> None:
    sb.run("sh", "-ec", "mkdir -p /srv/demo && cd /srv/demo && git init -q && echo hello > hello.txt"
                        " && git add . && git -c user.name=me -c user.email=me@example.com commit -qm first")  # fmt: skip
    assert http(sb, "GET", f"{API}/repos") == (200, [])
    status, repo = http(sb, "PUT", f"{API}/repos/pieter", "source=/srv/demo")
    assert status == 201 and isinstance(repo, dict) and repo["source"] == "/srv/demo", repo
    status, repo = http(sb, "GET", f"{API}/repos/pieter")
    assert status == 200 and isinstance(repo, dict) and repo["name"] == "pieter", repo
    status, scenario = http(sb, "PUT", f"{API}/repos/pieter/build.sh", stdin=SCRIPT)
    assert status == 201 and isinstance(scenario, dict) and scenario["data"] == SCRIPT, scenario
    status, scenario = http(sb, "GET", f"{API}/repos/pieter/build.sh")
    assert status == 200 and isinstance(scenario, dict) and scenario["data"] == SCRIPT, scenario
    status, job = http(sb, "PATCH", f"{API}/repos/pieter/build.sh")
    assert status == 201 and isinstance(job, dict), job
    job_id = job["id"]
    job = wait_for(lambda: job_done(sb, job_id), f"job {job_id} to end", timeout=60)
    status, log = http(sb, "GET", f"{API}/jobs/{job_id}/log")
    assert job["state"] == "success" and job["rc"] == 0, (job, log, journal_of(sb, f"pieter-job-{job_id}"))
    assert status == 200 and "building pieter" in str(log) and "hello" in str(log), log
    journal = sb.run("journalctl", "--no-pager", "-o", "cat", "-u", f"pieter-job-{job_id}").stdout
    assert "building pieter" in journal and "hello" in journal, journal
    assert http(sb, "DELETE", f"{API}/repos/pieter/build.sh")[0] == 200
    assert http(sb, "DELETE", f"{API}/repos/pieter")[0] == 200
    assert http(sb, "DELETE", f"{API}/jobs/{job_id}")[0] == 200
    assert http(sb, "GET", f"{API}/repos") == (200, [])
    assert not sb.path(f"/var/lib/pieter-ci/workspaces/{job_id}").exists()


def test_web_page_and_metrics(sb: SystemdSandbox) -> None:
    """The pages, their files (package_data) and /metrics (python3-prometheus-client, a Depends) from the package."""
    status, page = http(sb, "GET", f"{API}/ui/", "Accept:text/html")
    assert status == 200 and "<h1>Overview</h1>" in str(page), page
    for name in ("app.css", "app.js", "log.js"):
        status, text = http(sb, "GET", f"{API}/ui/static/{name}")
        assert status == 200 and len(str(text)) > 1000, (name, text)
    status, metrics = http(sb, "GET", f"{API}/metrics")
    assert status == 200 and "pieter_redis_up 1.0" in str(metrics), metrics


def test_redis_is_private_and_persistent(sb: SystemdSandbox) -> None:
    sock = "/run/redis-pieter-ci/redis-server.sock"
    assert "PIETER_REDIS_URL=unix://" + sock in sb.path("/etc/pieter-ci/pieter.conf").read_text()
    assert sb.run("redis-cli", "-s", sock, "config", "get", "appendonly").stdout.split() == ["appendonly", "yes"]
    assert sb.run("redis-cli", "-s", sock, "config", "get", "port").stdout.split() == ["port", "0"]
    assert sb.path("/var/lib/redis/pieter-ci/appendonlydir").is_dir()
    # root's only: the socket (and its directory) are redis's, mode 0700; root gets past with CAP_DAC_OVERRIDE
    assert sb.run("stat", "-c", "%a %U %F", sock).stdout.strip() == "700 redis socket"
    assert sb.run("stat", "-c", "%a %U", "/run/redis-pieter-ci").stdout.strip() == "700 redis"
    other = sb.run("runuser", "-u", "nobody", "--", "redis-cli", "-s", sock, "ping", check=False)
    assert "PONG" not in other.stdout and "denied" in (other.stdout + other.stderr).lower(), other
    # root's `pieter token` finds this Redis through /etc/pieter-ci/pieter.conf
    sb.run("pieter", "token", "add", "package-test")
    assert "package-test" in sb.run("pieter", "token", "list").stdout
    sb.run("pieter", "token", "revoke", "package-test")
    # A job's user cannot open the socket (the same sandbox as a job: a dynamic user).
    probe = sb.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "DynamicUser=yes", "--",
                   "redis-cli", "-s", sock, "ping", check=False)  # fmt: skip
    assert "PONG" not in probe.stdout and "denied" in (probe.stdout + probe.stderr).lower(), probe


def test_upgrade_keeps_running_jobs(sb: SystemdSandbox) -> None:
    assert http(sb, "PUT", f"{API}/repos/slow")[0] == 201
    assert http(sb, "PUT", f"{API}/repos/slow/wait.sh", stdin="sleep 8\necho survived\n")[0] == 201
    status, job = http(sb, "PATCH", f"{API}/repos/slow/wait.sh")
    assert status == 201 and isinstance(job, dict), job
    job_id, unit = job["id"], f"pieter-job-{job['id']}.service"
    wait_for(lambda: unit_state(sb, unit) == "active", "the job's unit to run")
    server_pid = sb.run("systemctl", "show", "-p", "MainPID", "--value", "pieter-ci.service").stdout.strip()
    redis_pid = sb.run("systemctl", "show", "-p", "MainPID", "--value", "pieter-ci-redis.service").stdout.strip()
    sb.run("dpkg", "-i", f"/srv/pieter-apt/{DEB.name}", env={"DEBIAN_FRONTEND": "noninteractive"})  # an upgrade
    assert unit_state(sb, unit) == "active", "the upgrade stopped the job"
    after = sb.run("systemctl", "show", "-p", "MainPID", "--value", "pieter-ci-redis.service").stdout.strip()
    assert after == redis_pid != "0", "the upgrade restarted Redis"
    new_pid = sb.run("systemctl", "show", "-p", "MainPID", "--value", "pieter-ci.service").stdout.strip()
    if server_pid != "0":  # (it may have exited already: idle, PIETER_IDLE_EXIT is short here)
        assert new_pid != server_pid, "the server was not restarted after the upgrade"
    job = wait_for(lambda: job_done(sb, job_id), f"job {job_id} to end", timeout=60)
    log = http(sb, "GET", f"{API}/jobs/{job_id}/log")[1]
    assert "survived" in str(log), (job, log)
    # (the postinst's daemon-reload drops the unit's `ExecStopPost=+` collector on systemd 252: the server then
    # takes the job's end from what systemd logged)
    assert job["state"] == "success", (job, log, journal_of(sb, unit))


def test_idle_exit_and_reactivation(sb: SystemdSandbox) -> None:
    wait_for(lambda: unit_state(sb, "pieter-ci.service") == "inactive", "the idle server to exit",
             timeout=IDLE_EXIT + 30)  # fmt: skip
    assert unit_state(sb, "pieter-ci.socket") == "active"
    status, info = http(sb, "GET", f"{API}/")
    assert status == 200, info
    assert unit_state(sb, "pieter-ci.service") == "active"


def test_remove_leaves_schedules_skipped_not_failing(sb: SystemdSandbox) -> None:
    """`apt remove` keeps configuration, schedules included (purge removes them): their runs are skipped."""
    assert http(sb, "PUT", f"{API}/repos/nightly")[0] == 201
    assert http(sb, "PUT", f"{API}/repos/nightly/build.sh", stdin="echo nightly\n")[0] == 201
    status, schedule = http(sb, "PUT", f"{API}/repos/nightly/build.sh/schedule", "on_calendar=*-*-* 03:00:00")
    assert status == 201, schedule
    service = sb.run("sh", "-c", "ls /etc/systemd/system/pieter-schedule-*.service").stdout.split()[0]
    sb.run("apt", "remove", "-y", "-q", "pieter-ci", env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=120)
    unit = Path(service).name
    assert unit_state(sb, unit.replace(".service", ".timer")) == "active", "remove keeps the schedule"
    sb.run("systemctl", "start", unit)  # what the timer does when it elapses: succeeds, skipping the run
    shown = sb.run("systemctl", "show", "-p", "ConditionResult,Result", unit).stdout.split()
    assert sorted(shown) == ["ConditionResult=no", "Result=success"], shown


def test_purge_leaves_nothing(sb: SystemdSandbox) -> None:
    sb.run("apt", "purge", "-y", "-q", "pieter-ci", env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=120)
    units = sb.run("systemctl", "list-units", "--all", "--plain", "--no-legend",
                   "pieter*", "redis-server@pieter-ci*").stdout  # fmt: skip
    assert units.strip() == "", units
    files = sb.run("systemctl", "list-unit-files", "--no-legend", "pieter*", check=False).stdout
    assert files.strip() == "", files
    for path in ("/var/lib/pieter-ci", "/var/lib/private/pieter-ci", "/var/lib/redis/pieter-ci", "/etc/pieter-ci",
                 "/etc/redis/redis-pieter-ci.conf", "/usr/lib/pieter-ci", "/usr/bin/pieter", "/run/redis-pieter-ci",
                 "/etc/systemd/system/pieter-ci.service.wants"):  # fmt: skip
        assert not sb.path(path).exists(), f"{path} is left after the purge"
    procs = sb.run("ps", "-eo", "pid,args", "--no-headers").stdout
    leftovers = [line for line in procs.splitlines() if "pieter" in line or "redis-pieter-ci" in line]
    assert not [p for p in leftovers if "ps -eo" not in p], leftovers
    with pytest.raises(SandboxCommandError):
        sb.run("http", "--ignore-stdin", "--timeout=5", "GET", f"{API}/")  # nothing listens any more


def test_depends_on_bare_bookworm(bare_install: subprocess.Popen[str]) -> None:
    try:
        out, _ = bare_install.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(bare_install.pid, 9)
        out, _ = bare_install.communicate()
        pytest.fail(f"the bare-root install did not finish in time:\n{out}")
    assert bare_install.returncode == 0, f"installing pieter-ci in a bare bookworm root failed:\n{out}"
    assert f"pieter-ci {pieter.__version__} install ok installed" in out, out
    assert f"pieter {pieter.__version__}" in out and "sanic 25.12.1 from /usr/lib/pieter-ci/" in out, out
    assert "redis-server: not installed" in out or "redis-server: unknown" in out, out
    assert "Redis server v=7." in out, out  # redis-tools' binary, run as the server
