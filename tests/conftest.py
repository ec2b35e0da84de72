"""Fixtures: real `redis-server` processes and real `pieter serve` processes, each in its own temp dir."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


class RedisServer:
    """A private redis-server on a unix socket; `stop()` and `start()` let a test take it away and back."""

    def __init__(self, directory: Path, appendonly: bool = False):
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.directory), "--save", "", "--appendonly", "yes" if self.appendonly else "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket))


def snapshot(client: redis.Redis) -> dict[bytes, object]:
    """Every key and its value, to show that a refused request wrote nothing (SCAN is fine in a test)."""
    dump: dict[bytes, object] = {}
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            dump[key] = client.get(key)
        elif kind == b"hash":
            dump[key] = client.hgetall(key)
        elif kind == b"zset" and key.endswith(b"hosts:seen"):
            dump[key] = client.zrange(key, 0, -1)  # a host's score is its last beat (every 15 s), not a request's write
        elif kind == b"zset":
            dump[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            dump[key] = client.lrange(key, 0, -1)
        elif kind == b"stream":
            dump[key] = client.xrange(key)
        else:
            dump[key] = kind
    return dump


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PieterServer:
    """`pieter serve` as a user starts it, in a subprocess, on a free port."""

    def __init__(self, directory: Path, redis_url: str, **settings: str):
        self.directory = directory
        # Jobs run as `nobody` when the tests run as root: their state must be reachable by any user,
        # which pytest's own temp dirs (mode 0700) are not.
        self.state_dir = Path(tempfile.mkdtemp(prefix="pieter-state-"))
        self.state_dir.chmod(0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PIETER_")},
            "PIETER_CONFIG": str(directory / "pieter.conf"),
            "PIETER_REDIS_URL": redis_url,
            "PIETER_API_PORT": str(self.port),
            "PIETER_STATE_DIR": str(self.state_dir),
            "PIETER_RUNNER": "local",
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.output = directory / "server.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pieter", "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pieter serve exited {self.process.returncode}:\n{self.output.read_text()}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, sig: int = 15) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(20)
            self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def db(redis_server: RedisServer) -> redis.Redis:
    """The shared Redis, emptied for this test."""
    client = redis_server.client()
    client.flushall()
    return client


@pytest.fixture
def start_server(tmp_path: Path, redis_server: RedisServer, db: redis.Redis) -> Iterator:
    """Start a `pieter serve` with extra PIETER_* settings; all are stopped when the test ends."""
    servers: list[PieterServer] = []

    def start(redis_url: str | None = None, **settings: str) -> PieterServer:
        server = PieterServer(tmp_path / f"server{len(servers)}", redis_url or redis_server.url, **settings)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(9)
        shutil.rmtree(server.state_dir, ignore_errors=True)


@pytest.fixture
def server(start_server) -> PieterServer:
    return start_server()


@pytest.fixture
def api(server: PieterServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may write to, for jobs (which run as `nobody` under a root server) to leave
    evidence in."""
    path = Path(tempfile.mkdtemp(prefix="pieter-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def git_repo(tmp_path: Path) -> Iterator[Path]:
    """A small git repository made for the test, outside /root so any user can clone it."""
    repo = Path(os.environ.get("PIETER_TEST_TMP", "/tmp")) / f"pieter-test-repo-{os.getpid()}-{time.monotonic_ns()}"
    repo.mkdir(mode=0o755)
    (repo / "hello.txt").write_text("hello from the repo\n")
    git = ["git", "-C", str(repo), "-c", "user.email=test@example.com", "-c", "user.name=test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def wait_for_log(api: httpx.Client, job_id: int, text: str, timeout: float = 20) -> None:
    """Until the job's log shows `text`: its process runs (a record saying `running` may come first)."""
    deadline = time.monotonic() + timeout
    while text not in api.get(f"/jobs/{job_id}/log").text:
        assert time.monotonic() < deadline, f"job {job_id}'s log never showed {text!r}"
        time.sleep(0.05)


def wait_for_job(api: httpx.Client, job_id: int, states: tuple[str, ...] = ("success", "fail", "cancelled"),
                 timeout: float = 30) -> dict:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s: {job}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def sandbox_required() -> None:
    """The systemd tests need a booted systemd sandbox: skipped only where none can be booted, never in CI."""
    from tests.sandbox import unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the systemd tests cannot run in CI: {reason}")
        pytest.skip(f"no systemd to test against: {reason}")


@pytest.fixture(scope="session")
def systemd_pieter(sandbox_required: None) -> Iterator:
    """A real systemd (booted in a throwaway container here) running Redis and a socket-activated server."""
    from tests.systemd_pieter import SystemdPieter

    pieter = SystemdPieter()
    pieter.start()
    yield pieter
    pieter.stop()
