"""Reading a job's output back from the journal: the only module that imports `systemd.journal`.

The reader is blocking: callers run it off the event loop (`asyncio.to_thread`).
"""

from systemd import journal


class JobJournal:
    """The lines one run of a job's unit wrote (matched by unit and invocation id, so a reused job id can
    never mix two runs), less systemd's own messages about the unit (those come from PID 1, not the unit)."""

    def __init__(self, unit: str, invocation: str):
        self.unit, self.invocation = unit, invocation
        self.reader = self._open()

    def _open(self) -> journal.Reader:
        reader = journal.Reader()
        reader.add_match(_SYSTEMD_UNIT=self.unit, _SYSTEMD_INVOCATION_ID=self.invocation)
        return reader

    def seek(self, cursor: str) -> None:
        """Continue after the entry at `cursor` ('' for the first entry of the run). A reader opened before
        journald rotated its files may not find a cursor written since: it is opened again then."""
        for _ in range(2):
            if not cursor:
                self.reader.seek_head()
                return
            self.reader.seek_cursor(cursor)
            if self.reader._next() and self.reader.test_cursor(cursor):
                return
            self.reader.close()
            self.reader = self._open()
        raise LookupError(f"journal cursor {cursor!r} is gone (journal vacuumed?)")

    def read(self, limit: int = 1000, wait: float = 0.0) -> tuple[list[bytes], str]:
        """Up to `limit` lines after the last one read, and the cursor of the last; waits up to `wait`
        seconds for a first line when there is none yet. Reads MESSAGE alone (not every field: 10x faster)."""
        lines: list[bytes] = []
        while len(lines) < limit:
            if not self.reader._next():
                if lines or wait <= 0:
                    break
                self.reader.wait(wait)
                wait = 0
                continue
            try:
                lines.append(self.reader._get("MESSAGE"))
            except KeyError:
                lines.append(b"")
        return lines, self.reader._get_cursor() if lines else ""

    def close(self) -> None:
        self.reader.close()


UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"  # systemd's "Deactivated successfully" (SD_MESSAGE_UNIT_SUCCESS)


def unit_end(unit: str, invocation: str) -> tuple[str, str, str] | None:
    """How one run of a unit ended, from what systemd (PID 1) logged about it: ($SERVICE_RESULT, $EXIT_CODE,
    $EXIT_STATUS) as its ExecStopPost= would have seen them (the main process's: '' when only a control process
    such as the clone's ExecStartPre= ran), or None while nothing says it has ended. For when no collector
    recorded the end (a `systemctl daemon-reload` drops a transient unit's `+` commands on systemd 252)."""
    reader = journal.Reader()
    try:
        reader.add_match(_PID="1", UNIT=unit, INVOCATION_ID=invocation)
        result, exit_code, exit_status = "", "", ""
        for entry in reader:
            if entry.get("MESSAGE_ID") and entry["MESSAGE_ID"].hex == UNIT_SUCCESS:
                result = "success"
            result = entry.get("UNIT_RESULT", result)
            if "EXIT_CODE" in entry and entry.get("COMMAND", "ExecStart") == "ExecStart":
                exit_code = entry["EXIT_CODE"]
                status = entry.get("EXIT_STATUS", "")  # a number, or a signal name
                exit_status = status.decode() if isinstance(status, bytes) else str(status)
        return (result, exit_code, exit_status) if result else None
    finally:
        reader.close()


def first_invocation(unit: str, since: float) -> str:
    """The invocation id of the first run of `unit` started after `since` (Unix time), '' if none."""
    import datetime

    reader = journal.Reader()
    try:
        reader.add_match(_PID="1", UNIT=unit)
        reader.seek_realtime(datetime.datetime.fromtimestamp(since))
        for entry in reader:
            if entry.get("INVOCATION_ID"):
                return str(entry["INVOCATION_ID"])
        return ""
    finally:
        reader.close()
