"""A throwaway systemd (252, as PID 1 of a systemd-nspawn container) for tests on a host whose PID 1 is not systemd.

    sb = SystemdSandbox("pieter-test", [(str(repo), "/src")])
    sb.boot()
    try:
        sb.run("systemd-run", "--wait", "--", "true")
        sock = sb.path("/run/pieter/api.sock")      # host path of a file inside
    finally:
        sb.teardown()

Each trick below answers a trap that was met on this kind of host (Debian 12, cgroup-v1 hybrid layout, root):

- Root filesystem: an overlay of the host's own ``/`` (lower) with a tmpfs upper layer, so the container has every
  package the host has and its writes vanish with it. ``systemd-nspawn --volatile=overlay`` refuses ``/`` itself,
  hence the hand-made overlay. It is mounted inside a private mount namespace (``unshare --mount --propagation
  private``): the host never sees these mounts (nor the binds), so there is nothing to unmount and no ``rm`` can
  reach through them into the host's files; they go away with the namespace's last process.
- Cgroups: the sandbox gets its own child cgroup in every hierarchy before nspawn starts. Teardown finds and kills
  every process that is left there, two sandboxes never share one, and the memory cgroup is capped (``MEM_CAP``)
  as a safety net, so that a runaway job cannot make the VM's OOM killer strike.
- Limits: nspawn mounts the cgroup-v1 controllers read-only in the container; systemd then drops the memory and cpu
  controllers *without any error*, and ``MemoryMax=``/``CPUQuota=`` do nothing (a 64M memory hog grew to 23 GB).
  So the container's init is a tiny ``sh`` that remounts the controllers read-write, then execs systemd.
- ``--register=no --keep-unit``: there is no host systemd, machined or D-Bus to register with.
  ``systemd.firstboot=off`` and the masks in ``MASKED_UNITS`` keep the boot from waiting for input or starting
  what the host has enabled but tests don't want (gettys, apt timers, PostgreSQL).
- ``--private-network``: the container has only ``lo``. A service inside is reached from the host through a unix
  socket at ``path("/run/...")``, or with ``nsenter -t LEADER -n CLIENT...``.
- ``--kill-signal=SIGRTMIN+3``: a SIGTERM to nspawn becomes an orderly poweroff of the container.
- ``run`` uses ``env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin``: the caller's environment (pyenv shims, whose python
  cannot see Debian's python3-systemd, virtualenvs...) must not leak in. nsenter forks to enter the PID namespace,
  so on a timeout the whole process group is killed, not nsenter alone, or the command would go on inside.
- The host image has a Docker-style ``/usr/sbin/policy-rc.d`` (exit 101) that stops maintainer scripts from
  starting services; it is removed inside after boot (an overlay whiteout: the host keeps its file).
- nspawn leaves ``/run/systemd/nspawn/propagate/NAME`` behind where ``/run`` is on disk, as here ("Attempted to
  remove disk file system ..., and we can't allow that"): teardown removes it.

Names must be unique among the sandboxes running on a host at a time: a name is nspawn's machine name and names
the state directory (``/tmp/NAME.sandbox``) and the cgroups. A name still in use by live processes is refused;
what a dead one left is removed by the next boot. Needs root, systemd-nspawn (Debian package systemd-container,
installed with ``--no-install-recommends`` or it adds ``mymachines`` to nsswitch.conf) and systemd on the host.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP_ROOT = Path("/sys/fs/cgroup")
MEM_CAP = "4G"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
MASKED_UNITS = """postgresql.service getty@tty1.service console-getty.service apt-daily.timer apt-daily-upgrade.timer
    man-db.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer""".split()
NSPAWN_FLAGS = "-q --register=no --keep-unit --private-network --console=passive --kill-signal=SIGRTMIN+3".split()
NSPAWN_RUN_DIR = Path("/run/systemd/nspawn")

# Runs in the private mount namespace: $1 = state dir, then the cgroup dirs to join, "--", nspawn's arguments.
_LAUNCH = r"""
S=$1; shift
while [ "$1" != -- ]; do echo $$ >"$1/cgroup.procs"; shift; done; shift
mount -t tmpfs -o mode=755 tmpfs "$S/rw"; mkdir "$S/rw/upper" "$S/rw/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$S/rw/upper,workdir=$S/rw/work" "$S/root"
exec systemd-nspawn -D "$S/root" "$@"
"""
# The container's init: make the cgroup-v1 controllers writable (see the module docstring), then become systemd.
_INIT = rf"""
for d in /sys/fs/cgroup/*/; do
  case $d in */systemd/|*/unified/) ;; *) mount -o remount,bind,rw "$d";; esac
done
exec {SYSTEMD} "$@"
"""


class SandboxError(RuntimeError):
    """The sandbox could not be booted (the message ends with the container's console output)."""


class SandboxCommandError(subprocess.CalledProcessError):
    """A command run inside failed; unlike its base class, its message shows what the command printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"


def unavailable_reason() -> str | None:
    """None if a sandbox can be booted on this host, else a sentence saying why not."""
    if os.geteuid() != 0:
        return "The systemd sandbox needs root."
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (Debian package systemd-container)."
    if not SYSTEMD.is_file():
        return f"{SYSTEMD} is not installed (Debian package systemd)."
    if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists():
        return "The systemd sandbox needs the cgroup-v1 (hybrid) layout; this host has no v1 memory hierarchy."
    return None


class SystemdSandbox:
    """systemd as PID 1 of a throwaway nspawn container; see the module docstring."""

    def __init__(self, name: str, binds: Sequence[tuple[str, str]] = ()) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise ValueError(f"sandbox name {name!r}: use 1-63 of a-z, 0-9 and '-'")
        self.name = name
        self.binds = list(binds)
        self.state = Path(tempfile.gettempdir()) / f"{name}.sandbox"
        self.cgroups = _child_cgroups(name)
        self.leader: int | None = None  # host PID of the container's systemd
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._owned = False  # True from the moment boot() claims the name until teardown() has cleaned up

    def __enter__(self) -> Self:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def boot(self, timeout: float = 60) -> None:
        """Start the container, wait until systemd is running or degraded; on failure tear down and raise."""
        if self._owned:
            raise SandboxError(f"sandbox {self.name} is booted already")
        if busy := _pids_in(self.cgroups):
            raise SandboxError(
                f"sandbox {self.name} is in use: processes {busy} run in {self.cgroups[0]}; if a run"
                " that crashed left them, kill them and boot again (that removes what they left)"
            )
        self._owned = True
        deadline = time.monotonic() + timeout
        try:
            self._remove_leftovers()  # of a run that crashed, if any
            self._start()
            self.leader = self._wait_for_leader(deadline)
            try:
                state = self.run(
                    "systemctl", "is-system-running", "--wait", check=False, timeout=max(deadline - time.monotonic(), 1)
                ).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "still starting"
            if state not in ("running", "degraded"):
                raise self._boot_error(f"systemd is {state!r} after {timeout} s")
            self.run("rm", "-f", "/usr/sbin/policy-rc.d")
        except BaseException:
            self.teardown()
            raise

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside (as root, clean environment plus env), capturing its output as text."""
        if self.leader is None:
            raise SandboxError(f"sandbox {self.name} is not booted")
        env_args = [f"{k}={v}" for k, v in (env or {}).items()]
        cmd = ["nsenter", "-t", str(self.leader), "-a", "env", "-i", PATH, *env_args, *argv]
        stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
        pipe = subprocess.PIPE
        with subprocess.Popen(cmd, stdin=stdin, stdout=pipe, stderr=pipe, text=True, start_new_session=True) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        if check and proc.returncode:
            raise SandboxCommandError(proc.returncode, list(argv), out, err)
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    def path(self, p: str) -> Path:
        """The host's path to the container's path p."""
        if self.leader is None:
            raise SandboxError(f"sandbox {self.name} is not booted")
        return Path(f"/proc/{self.leader}/root") / p.lstrip("/")

    def teardown(self) -> None:
        """Power the container off and remove every process, cgroup and file it left. Safe to call again."""
        if not self._owned:
            return
        if self._nspawn is not None and self._nspawn.poll() is None:
            self._nspawn.terminate()  # nspawn turns this into SIGRTMIN+3: an orderly poweroff
            try:
                self._nspawn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait()
        for _ in range(100):
            if not (pids := _pids_in(self.cgroups)):
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.05)
        self._remove_leftovers()
        self._nspawn, self.leader, self._owned = None, None, False

    def _start(self) -> None:
        for d in ("root", "rw"):
            (self.state / d).mkdir(parents=True)
        for cg in self.cgroups:
            cg.mkdir()
            if (cg / "cpuset.cpus").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset refuses tasks
                    (cg / f).write_text((cg.parent / f).read_text())
            if (cg / "memory.limit_in_bytes").exists():
                (cg / "memory.limit_in_bytes").write_text(MEM_CAP)
        binds = [f"--bind={host}:{inside}" for host, inside in self.binds]
        masks = [f"systemd.mask={unit}" for unit in MASKED_UNITS]
        init = ["/bin/sh", "-c", _INIT, "sh", "systemd.firstboot=off", *masks]
        launch = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", _LAUNCH, "sh", str(self.state)]
        with open(self.state / "console.log", "wb") as console:
            self._nspawn = subprocess.Popen(
                [*launch, *map(str, self.cgroups), "--", *NSPAWN_FLAGS, f"--machine={self.name}", *binds, *init],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for_leader(self, deadline: float) -> int:
        """The container's PID 1 (a child of nspawn, itself the process started: unshare and sh exec) once systemd
        listens on its private socket."""
        assert self._nspawn is not None
        while time.monotonic() < deadline:
            if (rc := self._nspawn.poll()) is not None:
                raise self._boot_error(f"systemd-nspawn exited with status {rc}")
            for pid in _children(self._nspawn.pid):
                if _comm(pid) == "systemd" and Path(f"/proc/{pid}/root/run/systemd/private").is_socket():
                    return pid
            time.sleep(0.02)
        raise self._boot_error("systemd did not start")

    def _boot_error(self, why: str) -> SandboxError:
        try:
            console = (self.state / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            console = "(none)\n"
        return SandboxError(f"sandbox {self.name} failed to boot: {why}\n--- console ---\n{console}")

    def _remove_leftovers(self) -> None:
        """Remove the (empty) cgroup trees, the state dir and nspawn's propagation dir. rmdir() never deletes
        content, and the state dir holds just the console log and two mount points whose mounts the host never saw."""
        for cg in self.cgroups:
            for d in _subtree_deepest_first(cg):
                for _ in range(40):  # a process killed a moment ago may still be leaving its cgroup
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)
                else:
                    d.rmdir()  # raises: something is still in there
        (self.state / "console.log").unlink(missing_ok=True)
        (self.state / ".#root.lck").unlink(missing_ok=True)  # nspawn's image lock, sometimes left behind
        for d in (self.state / "root", self.state / "rw", self.state):
            if d.exists():
                d.rmdir()
        shutil.rmtree(NSPAWN_RUN_DIR / "propagate" / self.name, ignore_errors=True)
        for d in (NSPAWN_RUN_DIR / "propagate", NSPAWN_RUN_DIR / "locks", NSPAWN_RUN_DIR):
            try:
                d.rmdir()  # only if no other sandbox uses it
            except OSError:
                pass


def _child_cgroups(name: str) -> list[Path]:
    """A child called name of this process's cgroup in every mounted hierarchy."""
    mine = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mine[controllers] = path
    dirs = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        key = {"systemd": "name=systemd", "unified": ""}.get(hierarchy.name, hierarchy.name)
        if not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists() and key in mine:
            dirs.append(hierarchy / mine[key].lstrip("/") / name)
    return dirs


def _subtree_deepest_first(cg: Path) -> Iterator[Path]:
    for parent, subdirs, _ in os.walk(cg, topdown=False):
        yield from (Path(parent, d) for d in subdirs)
    yield cg


def _pids_in(cgroups: Sequence[Path]) -> list[int]:
    pids: set[int] = set()
    for cg in cgroups:
        for d in _subtree_deepest_first(cg):
            try:
                pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                pass
    return sorted(pids)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
