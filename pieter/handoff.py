"""What only a job's clone step may know — a source URL holding a password or token, the repo's deploy key —
reaches the job through a unix socket the server serves for it, never as a file: the script that runs after
the clone could read any file the clone could (a credential, the job's directory).

The socket (`$PIETER_STATE_DIR/handoff/<id>`) answers once, and only a process of that job (as its runner
tells from the peer's pid and uid): `job.sh` asks before the script starts, so by the time the script runs,
the socket is gone. Its reply is one JSON object, `{"source": ..., "deploy_key": ...}`
(`pieter/runners/receive.py` reads it). A clone that needs no secret reads its source from a plain file.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Handoff:
    """Serves one job's clone secrets once, to the first process of that job that asks (`owns(pid, uid)`).
    A clone that needs no secret (`secrets` None, see runners/inputs.clone_secrets) gets no socket."""

    def __init__(self, path: Path, secrets: dict[str, str] | None, owns: Callable[[int, int], bool]):
        self.path, self.secrets, self.owns = path, secrets, owns
        self.server: asyncio.AbstractServer | None = None
        self.refused = 0  # peers that asked and were not answered

    async def open(self) -> None:
        if self.secrets is None:
            return
        self.path.parent.mkdir(exist_ok=True)
        self.path.parent.chmod(0o711)  # jobs may reach a socket they know, not list others (whatever the umask)
        self.path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._answer, self.path)
        os.chmod(self.path, 0o666)  # any user may connect: the peer check decides who is answered

    def close(self) -> None:
        """Stop answering (idempotent); the dispatcher closes it when the job ends, if the clone never asked."""
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.secrets is not None:
            self.path.unlink(missing_ok=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid, uid, _ = PEERCRED.unpack(writer.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))  # fmt: skip
        try:
            if self.server is None or not self.owns(pid, uid):
                if not self.refused:  # once per job: a job looping over sockets must not flood the server's log
                    log.warning("%s: refused the clone's secrets to pid %s (uid %s): not a process of the job",
                                self.path, pid, uid)  # fmt: skip
                self.refused += 1
                return
            self.close()  # once: nothing the job starts later is answered
            writer.write(json.dumps(self.secrets).encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
