"""The clone's secrets handoff (pieter/handoff.py) with real sockets and processes, and job.sh's receiver:
a process the runner does not own gets nothing, the job's process gets the secrets once, then the socket is gone."""

import asyncio
import subprocess
import sys

import pytest

from pieter.handoff import Handoff
from pieter.runners.receive import without_credentials
from pieter.runners.inputs import RECEIVER

SECRETS = {"source": "https://user:hunter2@example.com/x.git", "deploy_key": ""}


async def receive(socket_path, hold: bool = False) -> asyncio.subprocess.Process:
    """job.sh's receiver in a process of its own; `hold`: it waits for a line on stdin before it connects."""
    command = f'{"read go; " if hold else ""}exec {sys.executable} {RECEIVER} {socket_path}'
    return await asyncio.create_subprocess_exec(
        "sh", "-c", command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_only_the_jobs_process_is_answered_and_only_once(tmp_path):
    async def scenario():
        job_pids: set[int] = set()
        asked: list[tuple[int, int]] = []

        def owns(pid: int, uid: int) -> bool:
            asked.append((pid, uid))
            return pid in job_pids

        handoff = Handoff(tmp_path / "handoff" / "7", SECRETS, owns)
        await handoff.open()
        assert oct(handoff.path.stat().st_mode & 0o777) == "0o666" and handoff.path.is_socket()

        stranger = await receive(handoff.path)
        out, err = await stranger.communicate()
        assert stranger.returncode == 1 and out == b"" and b"refused" in err
        assert handoff.path.exists(), "a refused peer does not use the handoff up"

        job = await receive(handoff.path, hold=True)
        job_pids.add(job.pid)
        out, err = await job.communicate(b"go\n")
        assert job.returncode == 0, err
        assert out.decode().splitlines() == [  # for job.sh's eval: the URL without, the helper's user and password
            "source=https://example.com/x.git",
            "PIETER_CLONE_USERNAME=user",
            "PIETER_CLONE_PASSWORD=hunter2",
            "PIETER_CLONE_SCOPE=https://example.com",
        ]
        assert [pid for pid, _ in asked] == [stranger.pid, job.pid], "peers are told apart by their own pid"
        assert not handoff.path.exists(), "answered once: the socket is gone"

        late = await receive(handoff.path)
        out, err = await late.communicate()
        assert late.returncode == 1 and out == b"" and b"could not receive" in err
        handoff.close()

    asyncio.run(scenario())


def test_closing_an_unused_handoff_removes_its_socket(tmp_path):
    async def scenario():
        handoff = Handoff(tmp_path / "handoff" / "8", SECRETS, lambda pid, uid: True)
        await handoff.open()
        handoff.close()
        handoff.close()
        assert not handoff.path.exists()

    asyncio.run(scenario())


def test_a_job_without_a_source_gets_no_socket(tmp_path):
    async def scenario():
        handoff = Handoff(tmp_path / "handoff" / "9", None, lambda pid, uid: True)
        await handoff.open()
        assert not (tmp_path / "handoff").exists()
        handoff.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("https://bob:p%40ss@example.com/x.git", ("https://example.com/x.git", "bob", "p@ss", "https://example.com")),
        (
            "HTTP://ghp_t0ken@example.com:8080/x.git",
            ("HTTP://example.com:8080/x.git", "ghp_t0ken", "", "HTTP://example.com:8080"),
        ),
        ("https://example.com/a@b.git", ("https://example.com/a@b.git", "", "", "")),
        ("ssh://git@example.com/x.git", ("ssh://git@example.com/x.git", "", "", "")),
        ("git@example.com:x.git", ("git@example.com:x.git", "", "", "")),
    ],
)
def test_credentials_leave_the_url_for_the_credential_helper(source, parts):
    assert without_credentials(source) == parts
