"""A job unit's first `ExecStopPost=+` (root, in the unit's cgroup, before the collector): SIGKILL every process of
the job's dynamic user, which only the job's processes run as. However the unit ends, nothing of the job may live
on: processes that ignore SIGTERM outlast systemd's own kill on a cgroup-v1 host, starve the collector of the unit's
CPU quota, and would hit a later job given the same uid once the unit releases it.

kill(-1) as that user signals every process the user may signal (its own) but the caller, at once; it is repeated
while /proc shows a live process of the user (a fork bomb forks between two rounds). Its return value says nothing:
the kernel answers success when any process exists, signalled or not. It forks nothing itself: a fork bomb has used
up the unit's TasksMax=, which this process counts in too. Standard library only, run with `python3 -I -S` (fast to
start: it may share the unit's CPU quota with busy loops until they are dead).

Usage: python3 -I -S leftovers.py WORKSPACE (its owner is the unit's dynamic user)
"""

import os
import signal
import sys
import time

DYNAMIC_USERS = range(61184, 65520)  # systemd's: never root's nor another user's processes
GIVE_UP_AFTER = 3.0  # seconds; TimeoutStopSec= ends the unit anyway


def alive(uid: int) -> int:
    """How many processes of `uid` are running (not zombies, which only wait for PID 1 to reap them)."""
    count = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid and pid != str(os.getpid()):
                with open(f"/proc/{pid}/stat", "rb") as f:
                    count += f.read().rpartition(b") ")[2][:1] != b"Z"
        except OSError:
            pass  # gone meanwhile
    return count


def leave_cpu_quota() -> None:
    """On cgroup v1, move to the root of the cpu hierarchy: the unit's CPUQuota= is shared with whatever the job left
    running (500 processes of a fork bomb would leave this one a 500th of it). systemd follows the unit by another
    hierarchy (name=systemd), where this process stays. On cgroup v2 there is no such path (and systemd's own kill
    before ExecStopPost= is whole there)."""
    for path in ("/sys/fs/cgroup/cpu,cpuacct/cgroup.procs", "/sys/fs/cgroup/cpu/cgroup.procs"):
        try:
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            return
        except OSError:
            continue


def main() -> int:
    leave_cpu_quota()
    try:
        uid = os.stat(sys.argv[1]).st_uid
    except OSError:
        return 0
    if uid not in DYNAMIC_USERS:
        return 0
    found = alive(uid)
    if not found:
        return 0
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    deadline = time.monotonic() + GIVE_UP_AFTER
    while alive(uid) and time.monotonic() < deadline:
        os.kill(-1, signal.SIGKILL)
    left = alive(uid)
    print(f"pieter: killed {found} processes the job left running" + (f"; {left} still there" if left else ""),
          flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
