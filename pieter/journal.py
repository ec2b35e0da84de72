"""Reading a job's output back from the journal: the only module that imports `systemd.journal`.

The reader is blocking: callers run it off the event loop (`asyncio.to_thread`).
"""

from systemd import journal


class JobJournal:
    """The lines one run of a job's unit wrote (matched by unit and invocation id, so a reused job id can
    never mix two runs), less systemd's own messages about the unit (those come from PID 1, not the unit)."""

    def __init__(self, unit: str, invocation: str):
        self.reader = journal.Reader()
        self.reader.add_match(_SYSTEMD_UNIT=unit, _SYSTEMD_INVOCATION_ID=invocation)

    def seek(self, cursor: str) -> None:
        """Continue after the entry at `cursor` ('' for the first entry of the run)."""
        if not cursor:
            self.reader.seek_head()
            return
        self.reader.seek_cursor(cursor)
        entry = self.reader.get_next()
        if not entry or not self.reader.test_cursor(cursor):
            raise LookupError(f"journal cursor {cursor!r} is gone (journal rotated or vacuumed?)")

    def read(self, limit: int = 1000, wait: float = 0.0) -> tuple[list[bytes], str]:
        """Up to `limit` lines after the last one read, and the cursor of the last; waits up to `wait`
        seconds for a first line when there is none yet."""
        lines: list[bytes] = []
        cursor = ""
        while len(lines) < limit:
            entry = self.reader.get_next()
            if not entry:
                if lines or wait <= 0:
                    break
                self.reader.wait(wait)
                wait = 0
                continue
            message = entry.get("MESSAGE", b"")
            lines.append(message.encode() if isinstance(message, str) else bytes(message))
            cursor = entry["__CURSOR"]
        return lines, cursor

    def close(self) -> None:
        self.reader.close()
