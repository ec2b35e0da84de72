"""Tables for the small pure parts of the runners: how a unit's end reads, how an argv becomes an Exec line, how a
job's output becomes log lines."""

import asyncio

import pytest

from pieter.models import Result
from pieter.runners.collector import outcome_of
from pieter.runners.local import MAX_LINE, exit_outcome, pump_lines
from pieter.units import exec_line


@pytest.mark.parametrize(
    ("service_result", "exit_code", "exit_status", "oom", "expected"),
    [
        ("success", "exited", "0", False, (Result.SUCCESS, 0)),
        ("exit-code", "exited", "3", False, (Result.EXIT_CODE, 3)),
        ("exit-code", "", "", False, (Result.ERROR, None)),  # the clone (ExecStartPre=) failed: no main process
        ("timeout", "killed", "TERM", False, (Result.TIMEOUT, -15)),
        ("signal", "killed", "KILL", False, (Result.SIGNAL, -9)),
        ("signal", "killed", "KILL", True, (Result.OOM_KILL, -9)),  # cgroup v1: the kernel killed the main process
        ("exit-code", "exited", "137", True, (Result.OOM_KILL, 137)),  # cgroup v1: it killed a child
        ("oom-kill", "killed", "KILL", False, (Result.OOM_KILL, -9)),  # cgroup v2
        ("core-dump", "dumped", "SEGV", False, (Result.SIGNAL, -11)),
        ("success", "killed", "TERM", False, (Result.SUCCESS, -15)),  # a `systemctl stop`: the canceller records it
        ("resources", "", "", False, (Result.ERROR, None)),
        ("start-limit-hit", "", "", False, (Result.ERROR, None)),
    ],
)
def test_how_a_unit_ended(service_result, exit_code, exit_status, oom, expected):
    outcome = outcome_of(service_result, exit_code, exit_status, oom)
    assert (outcome.result, outcome.rc) == expected


@pytest.mark.parametrize(("rc", "expected"), [(0, Result.SUCCESS), (1, Result.EXIT_CODE), (-9, Result.SIGNAL)])
def test_how_a_local_script_ended(rc, expected):
    assert exit_outcome(rc).result is expected


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["/bin/true"], "/bin/true"),
        (["/usr/bin/env", "A=b:c", "x,y@z+1"], "/usr/bin/env A=b:c x,y@z+1"),
        (["sh", "-c", "echo $HOME"], 'sh -c "echo $$HOME"'),  # systemd would expand $HOME itself
        (["printf", "100%"], 'printf "100%%"'),  # and %-specifiers
        (["a b", 'say "hi"', "back\\slash"], '"a b" "say \\"hi\\"" "back\\\\slash"'),
        (["", ";"], '"" ";"'),  # an empty word stays a word; `;` would separate commands
    ],
)
def test_exec_line(argv, line):
    assert exec_line(argv) == line


@pytest.mark.parametrize(
    ("chunks", "batches"),
    [
        ([b"one\ntwo\n"], [[b"one", b"two"]]),
        ([b"par", b"tial\nend"], [[b"partial", b"end"]]),  # a line split across reads, a last line without \n
        ([b"\n\n"], [[b"", b""]]),
        ([b"x" * (MAX_LINE + 3)], [[b"x" * MAX_LINE, b"xxx"]]),  # an endless line is cut, not held
        (
            [b"%d\n" % i for i in range(2500)],
            [[b"%d" % i for i in range(n, min(n + 1000, 2500))] for n in (0, 1000, 2000)],
        ),
        ([], []),
    ],
)
def test_pump_lines(chunks, batches):
    async def pump() -> list[list[bytes]]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        written: list[list[bytes]] = []

        async def sink(lines: list[bytes]) -> None:
            written.append(lines)

        await pump_lines(reader, sink)
        return [batch for batch in written if batch]

    assert asyncio.run(pump()) == batches
