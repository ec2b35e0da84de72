"""Pieter inside a real systemd: the sandbox booted, Redis and a socket-activated server running in it.

Where the host itself runs systemd (PID 1), tests could use it directly; these machines' PID 1 is not
systemd, so the fixture boots `SystemdSandbox` and talks to the server through a unix socket that systemd
listens on inside (socket activation), and to Redis through its unix socket.
"""

import os
import time
from pathlib import Path

import httpx
import redis

from tests.sandbox import SystemdSandbox

ROOT = Path(__file__).resolve().parent.parent
RUN = "/run/pieter-test"
SOCKET_UNIT = f"""[Socket]
ListenStream={RUN}/api.sock
SocketMode=0600
"""
SERVICE_UNIT = f"""[Unit]
Requires=pieter-test.socket
After=pieter-test.socket
[Service]
Type=notify
ExecStart={ROOT}/.venv/bin/python -m pieter serve
Environment=PIETER_CONFIG=/nonexistent PIETER_REDIS_URL=unix://{RUN}/redis.sock PIETER_STATE_DIR=/var/lib/pieter-ci
Environment=PIETER_RUNNER=auto PIETER_MAX_JOBS=4 PIETER_JOB_MEMORY_MAX=1G
"""


class SystemdPieter:
    def __init__(self, name: str = f"pieter-test-{os.getpid()}"):
        self.sandbox = SystemdSandbox(name, [(str(ROOT), str(ROOT))])

    def start(self) -> None:
        sb = self.sandbox
        sb.boot()
        sb.run("mkdir", "-p", "-m", "700", RUN)  # Redis's data holds every repo's secrets: root's only, as packaged
        sb.run("systemd-run", "--unit=pieter-test-redis", "--", "redis-server", "--port", "0",
               "--unixsocket", f"{RUN}/redis.sock", "--unixsocketperm", "700", "--dir", RUN, "--save", "", "--appendonly", "yes")  # fmt: skip
        sb.path("/etc/systemd/system/pieter-test.socket").write_text(SOCKET_UNIT)
        sb.path("/etc/systemd/system/pieter-test.service").write_text(SERVICE_UNIT)
        sb.run("systemctl", "daemon-reload")
        sb.run("systemctl", "start", "pieter-test.socket")
        deadline = time.monotonic() + 20
        while True:
            try:
                self.redis().ping()
                break
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                assert time.monotonic() < deadline, "Redis did not start in the sandbox"
                time.sleep(0.05)

    def stop(self) -> None:
        self.sandbox.teardown()

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.sandbox.path(f"{RUN}/api.sock")))
        return httpx.Client(transport=transport, base_url="http://pieter", timeout=30)

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.sandbox.path(f"{RUN}/redis.sock")))

    def sh(self, command: str, check: bool = True) -> str:
        return self.sandbox.run("sh", "-c", command, check=check).stdout
