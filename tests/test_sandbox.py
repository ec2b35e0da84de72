"""The systemd sandbox really is a systemd, enforces limits, keeps a journal, and leaves nothing behind."""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sandbox import SandboxError, SystemdSandbox

pytestmark = pytest.mark.usefixtures("sandbox_required")
HOST_HAS_POLICY_RC_D = Path("/usr/sbin/policy-rc.d").exists()
T = TypeVar("T")
PYTHON = "/usr/bin/python3"  # Debian's, which has python3-systemd; not the pyenv shim on PATH

# 1 GiB at most, every byte written: fails under MemoryMax=64M, and stays harmless if the limit were ignored.
MEMORY_HOG = "b = []\nfor _ in range(128):\n    b.append(b'x' * (8 << 20))"
BUSY_3S = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3:\n    pass\nprint(time.process_time())"
ECHO_SERVER = """
import os, socket
os.makedirs("/run/sbtest", exist_ok=True)
s = socket.socket(socket.AF_UNIX)
s.bind("/run/sbtest/echo.sock")
s.listen()
c, _ = s.accept()
c.sendall(c.recv(100).upper())
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdSandbox]:
    probe = tmp_path_factory.mktemp("probe")
    (probe / "hello.txt").write_text("hello from the host\n")
    with SystemdSandbox("pieter-sbtest", [(str(probe), "/probe")]) as sb:
        yield sb


def wait_for(what: str, predicate: Callable[[], T], timeout: float = 10) -> T:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def assert_nothing_left(name: str, pids: list[int]) -> None:
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} of sandbox {name} still exists"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cgroups = (proc / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        in_sandbox = [line for line in cgroups.splitlines() if name in line.split(":", 2)[2].split("/")]
        assert not in_sandbox, f"process {proc.name} is still in a cgroup of sandbox {name}: {in_sandbox}"
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/{name}")), f"cgroup dirs of sandbox {name} are left"
    assert not Path(tempfile.gettempdir(), f"{name}.sandbox").exists()
    assert not Path("/run/systemd/nspawn/propagate", name).exists()


def ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def assert_running(sb: SystemdSandbox) -> None:
    state = sb.run("systemctl", "is-system-running", check=False).stdout
    assert state == "running\n", f"{state}failed units: {sb.run('systemctl', '--failed', '--no-legend').stdout}"


def test_systemd_is_pid_1_and_running(sandbox: SystemdSandbox) -> None:
    assert sandbox.run("cat", "/proc/1/comm").stdout == "systemd\n"
    assert_running(sandbox)
    assert sandbox.run("cat", "/probe/hello.txt").stdout == "hello from the host\n"


def test_policy_rc_d_is_removed_inside_only(sandbox: SystemdSandbox) -> None:
    assert not sandbox.path("/usr/sbin/policy-rc.d").exists()
    assert Path("/usr/sbin/policy-rc.d").exists() == HOST_HAS_POLICY_RC_D


def test_memory_max_is_enforced(sandbox: SystemdSandbox) -> None:
    limit = ["--unit=sbtest-memhog", "-p", "MemoryMax=64M"]
    r = sandbox.run("systemd-run", "--wait", "-q", *limit, "--", PYTHON, "-c", MEMORY_HOG, check=False)
    result = sandbox.run("systemctl", "show", "sbtest-memhog", "-P", "Result").stdout.strip()
    sandbox.run("systemctl", "reset-failed", "sbtest-memhog", check=False)
    assert r.returncode != 0
    assert result in ("signal", "oom-kill")  # cgroup v1 says signal (SIGKILL), cgroup v2 oom-kill


def test_cpu_quota_is_enforced(sandbox: SystemdSandbox) -> None:
    r = sandbox.run("systemd-run", "--wait", "--pipe", "-q", "-p", "CPUQuota=20%", "--", PYTHON, "-c", BUSY_3S)
    cpu_seconds = float(r.stdout)
    assert 0.05 < cpu_seconds <= 0.25 * 3


def test_unit_stdout_reaches_the_journal(sandbox: SystemdSandbox) -> None:
    sandbox.run("systemd-run", "--wait", "-q", "--unit=sbtest-echo", "--", "sh", "-c", "echo marker-$((6*7))")
    journal = ["journalctl", "-u", "sbtest-echo", "-o", "cat", "--no-pager"]
    wait_for("the journal", lambda: "marker-42\n" in sandbox.run(*journal).stdout)


def test_unix_socket_inside_is_reachable_from_the_host(sandbox: SystemdSandbox) -> None:
    sandbox.run("systemd-run", "-q", "--unit=sbtest-socket", "--", PYTHON, "-c", ECHO_SERVER)
    path = sandbox.path("/run/sbtest/echo.sock")
    wait_for(str(path), path.is_socket)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(b"ping")
        assert client.recv(100) == b"PING"


def test_second_sandbox_runs_alongside_and_teardown_leaves_nothing(sandbox: SystemdSandbox) -> None:
    with SystemdSandbox("pieter-sbtest-2") as other:
        assert_running(other)
        other.run("touch", "/run/only-in-2")
        assert other.path("/run/only-in-2").exists()
        assert not sandbox.path("/run/only-in-2").exists()
        pids = [other.leader, ppid(other.leader)] if other.leader else []
    assert len(pids) == 2
    assert_nothing_left("pieter-sbtest-2", pids)
    other.teardown()  # a second call is harmless
    assert_running(sandbox)


def test_failed_boot_raises_with_console_and_leaves_nothing() -> None:
    sb = SystemdSandbox("pieter-sbtest-bad", [("/nonexistent/sbtest", "/x")])
    with pytest.raises(SandboxError, match=r"(?s)failed to boot.*--- console ---.*nonexistent"):
        sb.boot(timeout=20)
    assert_nothing_left("pieter-sbtest-bad", [])
    sb.teardown()
