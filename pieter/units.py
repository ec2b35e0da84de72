"""What Pieter needs of systemd wherever it writes a unit (a job's, a schedule's): whether this host runs systemd,
an argv as one `Exec*=` line, and the command line that starts this same Pieter from a unit.

A unit's command starts afresh, with systemd's environment, not the server's: `pieter_command` names the Python
and the directory `pieter` is imported from (a checkout runs like the package), and the configuration file the
server read.
"""

import os
import re
import sys
from pathlib import Path

import pieter
from pieter.config import Config


def systemd_booted() -> bool:
    """sd_booted(): PID 1 is systemd (what `systemd.daemon.booted()` checks, without importing it)."""
    return os.path.isdir("/run/systemd/system")


def exec_line(argv: list[str]) -> str:
    """An argv as one `Exec*=` line: quoted, with `$` and `%` escaped so systemd passes them as they are."""
    words = []
    for arg in argv:
        arg = arg.replace("%", "%%").replace("$", "$$")
        if not re.fullmatch(r"[A-Za-z0-9_./:=@+,-]+", arg):
            arg = '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(arg)
    return " ".join(words)


def pieter_environment(config: Config) -> dict[str, str]:
    """The variables a unit's `python -m pieter` needs to be this Pieter, reading this configuration file."""
    return {"PYTHONPATH": str(Path(pieter.__file__).resolve().parent.parent), "PIETER_CONFIG": str(config.config_file)}


def pieter_command(*args: str) -> list[str]:
    """`python -m pieter ARGS` with the server's own Python (its environment comes from `pieter_environment`)."""
    return [sys.executable, "-m", "pieter", *args]
