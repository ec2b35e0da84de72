"""5. Idle footprint and cold start.

Idle: a Pieter server (local runner, after one request, no jobs) and the bare baseline server side by side for
60 s (`--idle-seconds`): CPU = their CPU time over the window ÷ its length, RSS sampled every second.
Cold start (sandbox): the socket-activated server stopped, then one request through its socket: seconds from
the connection to the response (systemd starts the server meanwhile). Baseline: bench/bare.py socket-activated
the same way; the two alternate.
"""

import time
from collections.abc import Callable

import httpx

from bench.common import ROOT, RUN, Context, Figure, cpu_seconds, memory_mb

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


def idle(ctx: Context) -> list[Figure]:
    seconds = ctx.idle_seconds
    with ctx.servers("idle") as (_, pieter, bare):
        assert pieter.process is not None and bare.process is not None
        pids = {"pieter": pieter.process.pid, "bare": bare.process.pid}
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
    return [
        Figure("5 idle", f"CPU over {window:.0f} s idle", "%", [cpu["pieter"]], "bare Sanic", [cpu["bare"]],
               "< 0.5%", cpu["pieter"] < 0.5),
        Figure("5 idle", "RSS while idle", "MB", rss["pieter"], "bare Sanic", rss["bare"], "< 60 MB",
               max(rss["pieter"]) < 60),
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
