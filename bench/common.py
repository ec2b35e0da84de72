"""What the benchmarks share: figures and their statistics, the servers they measure (the test suite's own
`RedisServer`, `PieterServer` and `SystemdPieter`, imported, not copied), the baseline server, process readings.

Every figure is a `Figure`: Pieter's median and p95 beside a baseline's, measured in the same run, and the ratio
Pieter ÷ baseline of the medians (these machines are noisy: ratios hold, absolute times don't).
"""

import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import PieterServer, RedisServer, free_port  # noqa: E402
from tests.sandbox import unavailable_reason as unavailable_reason  # noqa: E402 (also for bench/run.py)
from tests.systemd_pieter import RUN as RUN, SystemdPieter  # noqa: E402 (RUN: for the benchmarks)

from pieter.store import PREFIX as PREFIX  # noqa: E402 (also for the benchmarks)

# The benchmarks' Redis client; quoted, as Debian's redis 4.3 is not generic at run time (its stubs are).
Db: TypeAlias = "redis.Redis[bytes]"

# A job's first instruction: bash prints the wall clock without forking (`date` would add a fork/exec).
STAMP_SCRIPT = b'#!/bin/bash\necho "T $EPOCHREALTIME"\n'


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclasses.dataclass
class Figure:
    """One row of the results table. `values`/`baseline` are samples (median and p95 shown) or one number."""

    bench: str
    name: str
    unit: str
    values: Sequence[float]
    baseline_name: str
    baseline: Sequence[float]
    target: str = ""
    met: bool | None = None  # None: no target, or judged elsewhere
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        return self.median / self.baseline_median if self.baseline_median else float("nan")

    def cells(self) -> list[str]:
        def pair(xs: Sequence[float]) -> str:
            return num(xs[0]) if len(xs) == 1 else f"{num(statistics.median(xs))} / {num(p95(xs))}"

        met = {True: "yes", False: "**no**", None: ""}[self.met]
        return [self.bench, f"{self.name} ({self.unit})", pair(self.values), f"{self.baseline_name}: {pair(self.baseline)}",
                f"{self.ratio:.2f}" if self.ratio == self.ratio else "—", self.target, met]  # fmt: skip


def num(x: float) -> str:
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3f}"


def ms(seconds: Sequence[float]) -> list[float]:
    return [s * 1000 for s in seconds]


# Processes
def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat; /proc/PID/stat counts in ticks)."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def memory_mb(pid: int, field: str = "VmRSS", status: str | None = None) -> float:
    """VmRSS (now) or VmHWM (peak) in MB, from /proc/PID/status (or its text, read elsewhere)."""
    for line in (status or Path(f"/proc/{pid}/status").read_text()).splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def wait_until(check: Callable[[], object], timeout: float, what: str, poll: float = 0.005) -> object:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(poll)
    return result


def job_ended(db: Db, job_id: int) -> bool:
    return db.hget(f"{PREFIX}job:{job_id}", "state") not in (b"queued", b"running", None)


def stamp(lines: Sequence[bytes]) -> float:
    """The time the job's first instruction printed (`T <seconds>`), from its log lines."""
    return next(float(line[2:]) for line in lines if line.startswith(b"T "))


class BareServer:
    """The baseline: bench/bare.py, a bare Sanic handler doing one Redis GET, configured like Pieter's app."""

    def __init__(self, directory: Path, redis_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory, self.redis_url = directory, redis_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BENCH_PORT": str(self.port), "BENCH_REDIS_URL": self.redis_url}
        with open(self.directory / "bare.log", "ab") as out:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare.py")], env=env, stdout=out,
                                            stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(self._answers, 20, "the bare server", poll=0.05)

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/repos/bench", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None


@dataclasses.dataclass
class Context:
    """What run.py hands each benchmark: a scratch directory, the run's options, and the systemd sandbox."""

    workdir: Path
    quick: bool = False
    idle_seconds: float = 60.0
    _sandbox: SystemdPieter | None = None
    _stack: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @contextlib.contextmanager
    def servers(
        self, name: str, before: Callable[[str], None] | None = None, **settings: str
    ) -> Iterator[tuple[Db, PieterServer, BareServer]]:
        """A fresh Redis with a Pieter server (local runner) and the bare baseline server on it; `before(url)`
        runs once Redis is up, before the servers start."""
        directory = self.workdir / name
        db_server = RedisServer(directory / "redis")
        db_server.start()
        pieter = PieterServer(directory / "pieter", db_server.url, PIETER_HOST="bench", **settings)
        bare = BareServer(directory / "bare", db_server.url)
        try:
            if before is not None:
                before(db_server.url)
            pieter.start()
            bare.start()
            yield db_server.client(), pieter, bare
        finally:
            bare.stop()
            pieter.stop()
            db_server.stop()
            shutil.rmtree(pieter.state_dir, ignore_errors=True)

    def sandbox(self) -> SystemdPieter | None:
        """The systemd sandbox (booted on first use, shared by the benchmarks), or None where it cannot boot."""
        if self._sandbox is None and unavailable_reason() is None:
            sandbox = SystemdPieter(f"pieter-bench-{os.getpid()}")
            self._stack.callback(sandbox.stop)
            sandbox.start()
            sandbox.sandbox.path("/run/systemd/system/pieter-test.service.d").mkdir(parents=True, exist_ok=True)
            # Logs of 1M lines; no idle exit; no start rate limit (the cold-start benchmark restarts it often).
            sandbox.sandbox.path("/run/systemd/system/pieter-test.service.d/bench.conf").write_text(
                "[Unit]\nStartLimitIntervalSec=0\n"
                "[Service]\nEnvironment=PIETER_LOG_MAX_BYTES=200000000 PIETER_IDLE_EXIT=0 PIETER_MAX_JOBS=8\n")  # fmt: skip
            sandbox.sh("systemctl daemon-reload")
            self._sandbox = sandbox
        return self._sandbox

    def in_sandbox(self, *args: str, timeout: float = 600) -> str:
        """Run bench/in_sandbox.py inside the sandbox with the server's Python; returns what it prints."""
        sandbox = self.sandbox()
        assert sandbox is not None
        python = str(ROOT / ".venv" / "bin" / "python")
        return sandbox.sandbox.run(python, str(ROOT / "bench" / "in_sandbox.py"), *args, timeout=timeout).stdout

    def close(self) -> None:
        self._stack.close()
