"""The one way into a job's log in Redis: lines masked (the repo's secrets become `***`), retried through a Redis
outage, capped by the store at PIETER_LOG_MAX_BYTES.

Two programs write a job's log, each through a `JobLog`: the server, which makes one per job and hands it to
the runner (runners/base.py), and, on the systemd runner, the unit's `ExecStopPost=` collector
(runners/collector.py), which completes the log while the server may be stopped. Both copy from the journal;
the journal cursor stored beside the lines (`write_after`) keeps them from writing a line twice.
"""

from collections.abc import Sequence

from pieter.models import mask_secrets
from pieter.store import Store, retrying


class JobLog:
    def __init__(self, store: Store, job_id: int, masks: list[bytes]):
        self.store, self.job_id, self.masks = store, job_id, masks

    async def write(self, lines: Sequence[bytes]) -> None:
        """Append lines as they came (a local job's pipe, a line of Pieter's own)."""
        masked = mask_secrets(list(lines), self.masks)
        await retrying(lambda: self.store.append_log(self.job_id, masked), "writing a job's log")

    async def cursor(self) -> str:
        """The journal cursor of the last line written ('' before the first)."""
        return await self.store.log_cursor(self.job_id)

    async def write_after(self, after: str, cursor: str, lines: Sequence[bytes]) -> bool:
        """Append lines read from the journal after cursor `after` up to `cursor`; False (and nothing written)
        when another writer got past `after` first: read the cursor again and go on from there. Not retried:
        the caller re-reads the cursor after an outage."""
        return await self.store.append_log_after(self.job_id, after, cursor, mask_secrets(list(lines), self.masks))
