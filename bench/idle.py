"""5. Idle footprint and cold start.

Idle: a Pieter server (local runner, after one request, no jobs) and the bare baseline server side by side for
60 s (`--idle-seconds`): CPU = their CPU time over the window ÷ its length, RSS sampled every second. Each has a
Redis of its own, measured the same way: Pieter's runs the package's configuration
(packaging/redis/redis-pieter-ci.conf, as pieter-ci-redis.service does: append-only, unix socket only), the
baseline's is a plain redis-server (the test suite's). The first two figures are the servers alone; the next
two, server + its Redis, are what the package costs idle (with no other Redis: it does not install
redis-server's default instance). Once the socket-activated server has exited idle (PIETER_IDLE_EXIT), its
Redis alone is left: that is in the notes.
Cold start (sandbox): the socket-activated server stopped, then one request through its socket: seconds from
the connection to the response (systemd starts the server meanwhile). Baseline: bench/bare.py socket-activated
the same way; the two alternate.
"""

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import redis

from bench.common import ROOT, RUN, BareServer, Context, Figure, cpu_seconds, memory_mb
from tests.conftest import PieterServer, RedisServer

PACKAGE_REDIS_CONF = ROOT / "packaging" / "redis" / "redis-pieter-ci.conf"

BARE_SOCKET = f"""[Socket]
ListenStream={RUN}/bare.sock
SocketMode=0600
"""
BARE_SERVICE = f"""[Unit]
StartLimitIntervalSec=0
Requires=bench-bare.socket
After=bench-bare.socket
[Service]
ExecStart={ROOT}/.venv/bin/python {ROOT}/bench/bare.py
Environment=BENCH_REDIS_URL=unix://{RUN}/redis.sock
"""


class PackageRedis(RedisServer):
    """redis-server with the package's own configuration file, only its paths moved here (a copy: Redis reads
    `dir` as it parses the file, so the packaged path would fail before a command-line `--dir` could win)."""

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = {"unixsocket": self.socket, "dir": self.directory, "pidfile": self.directory / "redis.pid"}
        lines = [f"{line.split()[0]} {paths[line.split()[0]]}" if line.split()[:1] and line.split()[0] in paths
                 else line for line in PACKAGE_REDIS_CONF.read_text().splitlines()]  # fmt: skip
        assert all(f"{key} {value}" in lines for key, value in paths.items()), "the packaged file changed its paths"
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(["redis-server", str(conf), "--daemonize", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


@contextlib.contextmanager
def idle_servers(directory: Path) -> Iterator[dict[str, int]]:
    """Pieter on a Redis configured as packaged, the bare server on a plain one: their pids."""
    pieter_db, bare_db = PackageRedis(directory / "pieter-redis"), RedisServer(directory / "bare-redis")
    pieter = PieterServer(directory / "pieter", pieter_db.url, PIETER_HOST="bench")
    bare = BareServer(directory / "bare", bare_db.url)
    try:
        pieter_db.start()
        bare_db.start()
        pieter.start()
        bare.start()
        processes = {"pieter": pieter.process, "bare": bare.process, "pieter_redis": pieter_db.process,
                     "bare_redis": bare_db.process}  # fmt: skip
        yield {name: process.pid for name, process in processes.items() if process is not None}
    finally:
        bare.stop()
        pieter.stop()
        bare_db.stop()
        pieter_db.stop()
        shutil.rmtree(pieter.state_dir, ignore_errors=True)


def idle(ctx: Context) -> list[Figure]:
    seconds = ctx.idle_seconds
    with idle_servers(ctx.workdir / "idle") as pids:
        assert len(pids) == 4, pids
        time.sleep(2)
        rss: dict[str, list[float]] = {name: [] for name in pids}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            time.sleep(1)
            for name, pid in pids.items():
                rss[name].append(memory_mb(pid))
        window = time.monotonic() - began
        cpu = {name: 100 * (cpu_seconds(pid) - cpu0[name]) / window for name, pid in pids.items()}
    total = {name: [a + b for a, b in zip(rss[name], rss[f"{name}_redis"], strict=True)] for name in ("pieter", "bare")}
    redis_alone = (f"Pieter's Redis alone (what stays once the server has exited idle): {cpu['pieter_redis']:.3f}% CPU, "
                   f"{max(rss['pieter_redis']):.1f} MB RSS at most; the baseline's: {cpu['bare_redis']:.3f}%, "
                   f"{max(rss['bare_redis']):.1f} MB")  # fmt: skip
    return [
        Figure("5 idle", f"CPU over {window:.0f} s idle", "%", [cpu["pieter"]], "bare Sanic", [cpu["bare"]],
               "< 0.5%", cpu["pieter"] < 0.5),
        Figure("5 idle", "RSS while idle", "MB", rss["pieter"], "bare Sanic", rss["bare"], "< 60 MB",
               max(rss["pieter"]) < 60),
        Figure("5 idle", f"server + its Redis: CPU over {window:.0f} s idle", "%",
               [cpu["pieter"] + cpu["pieter_redis"]], "bare Sanic + Redis", [cpu["bare"] + cpu["bare_redis"]]),
        Figure("5 idle", "server + its Redis: RSS while idle", "MB", total["pieter"], "bare Sanic + Redis",
               total["bare"], note=redis_alone),
    ]  # fmt: skip


def cold_start(ctx: Context) -> list[Figure]:
    sandbox = ctx.sandbox()
    assert sandbox is not None
    sandbox.sandbox.path("/etc/systemd/system/bench-bare.socket").write_text(BARE_SOCKET)
    sandbox.sandbox.path("/etc/systemd/system/bench-bare.service").write_text(BARE_SERVICE)
    sandbox.sh("systemctl daemon-reload && systemctl start bench-bare.socket")
    with sandbox.client() as api:
        api.put("/repos/bench", json={})
    clients: dict[str, Callable[[], httpx.Client]] = {
        "pieter": sandbox.client,
        "bare": lambda: _client(ctx, "bare.sock"),
    }
    services = {"pieter": "pieter-test.service", "bare": "bench-bare.service"}
    times: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(ctx.n(10, 3)):
        for name, make in clients.items():
            sandbox.sh(f"systemctl stop {services[name]}")
            with make() as api:
                t0 = time.monotonic()
                assert api.get("/repos/bench").status_code == 200
                times[name].append(time.monotonic() - t0)
    return [
        Figure("5 idle", "cold start (socket activation)", "s", times["pieter"], "bare Sanic", times["bare"],
               "< 1 s", max(times["pieter"]) < 1),
    ]  # fmt: skip


def _client(ctx: Context, name: str) -> httpx.Client:
    sandbox = ctx.sandbox()
    assert sandbox is not None
    transport = httpx.HTTPTransport(uds=str(sandbox.sandbox.path(f"{RUN}/{name}")))
    return httpx.Client(transport=transport, base_url="http://bare", timeout=30)


def run(ctx: Context) -> list[Figure]:
    return idle(ctx) + (cold_start(ctx) if ctx.sandbox() else [])
