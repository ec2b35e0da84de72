"""Starting processes from the event loop.

`subprocess.Popen` (vfork, and it closes every inherited descriptor) rather than the loop's own spawn: uvloop's
copies the whole server and blocks the loop for about 4.5 ms per process, and ignores `close_fds`, so a job
would inherit the API's listening socket. The exit is awaited on a pidfd, the output read through the loop.
"""

import asyncio
import os
import subprocess
from typing import Any


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, close_fds=True, **kwargs)


async def exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the process to end (without blocking the loop) and reap it; its return code."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(proc.pid)
    ended = loop.create_future()
    loop.add_reader(pidfd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


async def reader_of(pipe: Any) -> asyncio.StreamReader:
    """An asyncio reader of a child's pipe (the transport closes the pipe at its end)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def output(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command to its end: its return code and its output (stdout and stderr), stripped. `env`: variables
    added to the server's environment."""
    proc = spawn(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 env={**os.environ, **env} if env else None)  # fmt: skip
    out = await (await reader_of(proc.stdout)).read()
    return await exited(proc), out.decode(errors="replace").strip()
