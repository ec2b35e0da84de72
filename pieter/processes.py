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
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # already reaped by another waiter (a stop waits while the run does)
        return proc.wait()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


class PipeFeed(asyncio.ReadTransport):
    """Feeds a child's pipe into a StreamReader from the loop's readiness callbacks, and closes it once, at its
    end. Not `loop.connect_read_pipe`: uvloop's pipe transport closes the fd number it was given, after the file
    object has closed it too (when collected), by when the number may be another open file's."""

    def __init__(self, pipe: Any, reader: asyncio.StreamReader):
        super().__init__()
        self.loop, self.pipe, self.reader = asyncio.get_running_loop(), pipe, reader
        os.set_blocking(pipe.fileno(), False)
        reader.set_transport(self)  # it pauses us while its buffer is full
        self.resume_reading()

    def _readable(self) -> None:
        try:
            data = os.read(self.pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.reader.feed_data(data)
        else:
            self.close()
            self.reader.feed_eof()

    def pause_reading(self) -> None:
        if not self.pipe.closed:
            self.loop.remove_reader(self.pipe.fileno())

    def resume_reading(self) -> None:
        if not self.pipe.closed:
            self.loop.add_reader(self.pipe.fileno(), self._readable)

    def is_closing(self) -> bool:
        return bool(self.pipe.closed)

    def close(self) -> None:
        self.pause_reading()
        self.pipe.close()


def reader_of(pipe: Any) -> asyncio.StreamReader:
    """An asyncio reader of a child's pipe, closed at its end."""
    reader = asyncio.StreamReader(limit=1 << 20)
    PipeFeed(pipe, reader)
    return reader


async def output(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command to its end: its return code and its output (stdout and stderr), stripped. `env`: variables
    added to the server's environment."""
    proc = spawn(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 env={**os.environ, **env} if env else None)  # fmt: skip
    out = await reader_of(proc.stdout).read()
    return await exited(proc), out.decode(errors="replace").strip()
