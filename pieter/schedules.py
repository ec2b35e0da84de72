"""Schedules: a scenario queued by a persistent systemd timer, `pieter-schedule-<repo/scenario escaped>.timer`.

A schedule is two unit files in /etc/systemd/system, written by the server (which runs as root):

    NAME.timer    OnCalendar=EXPR, Persistent=true (a run missed while the host was off happens at boot),
                  enabled in timers.target; its [X-Pieter] section names the repo and scenario
    NAME.service  Type=oneshot: `python3 -m pieter run REPO SCENARIO`, the client, against PIETER_URL

NAME is `pieter-schedule-` and `systemd-escape "REPO/SCENARIO"`: `-` is escaped (`\\x2d`) and `/` becomes `-`,
so no two scenarios share a unit (`a-b`/`c` is `a\\x2db-c`, `a`/`b-c` is `a-b\\x2dc`). The files are the only
record of a schedule (nothing in Redis): they outlive Redis and the server, `systemctl list-timers` and
`systemctl cat` show them, and `apt purge` removes them (postrm). Nothing secret goes into them (they are
world-readable): the client reads PIETER_TOKEN from the configuration file, as root.
"""

import asyncio
import datetime
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import pieter
from pieter.config import Config
from pieter.errors import BadRequest, Conflict, NotFound, PieterError
from pieter.processes import output
from pieter.units import exec_line, pieter_command, pieter_environment, systemd_booted

log = logging.getLogger(__name__)

UNIT_DIR = Path("/etc/systemd/system")
PREFIX = "pieter-schedule-"
UNIT_NAME_MAX = 255  # systemd's limit on a unit name, suffix included
# What OnCalendar= expressions are made of (weekdays, dates, times, ranges, steps, time zones such as
# Europe/Berlin or Etc/GMT+5). Anything else (a newline, `%` specifiers, `\\`) could change the unit file.
CALENDAR_RE = re.compile(r"[A-Za-z0-9 *,./:~_+-]{1,200}")
LOCK = asyncio.Lock()  # one change of the unit files at a time (one server per host)


def unavailable_reason() -> str | None:
    """None where schedules can work, else why not: they are systemd units the server writes as root."""
    if not systemd_booted():
        return ("schedules are systemd timers, and this host is not booted with systemd (PID 1 is not "
                "systemd): run the server on a systemd host, or queue jobs from cron with `pieter run REPO SCENARIO`")  # fmt: skip
    if os.geteuid() != 0:
        return f"schedules need the server to run as root: it writes their timer units into {UNIT_DIR}"
    return None


def require() -> None:
    """409 where schedules cannot work (see `unavailable_reason`)."""
    reason = unavailable_reason()
    if reason:
        raise Conflict(reason)


def check_calendar(expression: object) -> str:
    """The text of an OnCalendar= expression: plain characters on one line (validity is systemd's to say)."""
    if not isinstance(expression, str) or not expression.strip(" "):
        raise BadRequest('on_calendar is required: an OnCalendar= expression, e.g. {"on_calendar": "daily"} '
                         'or "Mon..Fri *-*-* 06:00" (see man systemd.time)')  # fmt: skip
    if not CALENDAR_RE.fullmatch(expression):
        raise BadRequest(f"invalid on_calendar {expression[:80]!r}: use at most 200 of A-Z a-z 0-9, space and "
                         "* , . / : ~ _ + - (an OnCalendar= expression, see man systemd.time)")  # fmt: skip
    return expression.strip(" ")


async def validate(expression: str) -> None:
    """400 unless `systemd-analyze calendar` accepts the expression and it elapses again."""
    rc, out = await output("systemd-analyze", "calendar", "--", expression)
    if rc != 0:
        reason = out.splitlines()[-1] if out else f"systemd-analyze exited {rc}"
        raise BadRequest(f"invalid on_calendar {expression!r}: {reason} (see man systemd.time)")
    if re.search(r"^\s*Next elapse: never\s*$", out, re.MULTILINE):
        raise BadRequest(f"on_calendar {expression!r} never elapses again")


def escape(text: str) -> str:
    """systemd-escape TEXT (systemd's unit_name_escape): `/` becomes `-`; `-`, `\\` and every character but
    A-Z a-z 0-9 : _ . (and a leading `.`) become `\\xNN`."""
    out = []
    for i, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif re.fullmatch(r"[A-Za-z0-9:_.]", char) and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def unit_base(repo: str, scenario: str) -> str:
    """The units' name without suffix. Past systemd's length limit (names full of escaped `-`), a hash of the
    pair, after a `_` that no escaped name starts with (repo names start with a letter or digit)."""
    base = PREFIX + escape(f"{repo}/{scenario}")
    if len(base) + len(".service") <= UNIT_NAME_MAX:
        return base
    return PREFIX + "_" + hashlib.sha256(f"{repo}/{scenario}".encode()).hexdigest()[:40]


def _quote(value: str) -> str:
    """A word of a unit file line: double-quoted, `%` specifiers escaped (`$` is literal in Environment=)."""
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise Conflict(f"cannot put {value[:80]!r} into a unit file: it holds control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def service_text(config: Config, repo: str, scenario: str) -> str:
    """The oneshot service the timer starts: the `pieter run` client, as root (to read the token, if any,
    from the configuration file), otherwise with little to touch."""
    environment = {"PIETER_URL": config.url, **pieter_environment(config)}
    lines = [
        f"# Pieter CI: queues a job of {repo}/{scenario} when {unit_base(repo, scenario)}.timer elapses.",
        f"# Made by PUT /repos/{repo}/{scenario}/schedule: change or remove it there, not here.",
        "[Unit]",
        f"Description=Pieter CI schedule: queue a job of {repo}/{scenario}",
        # After `apt remove` (purge removes schedules) the timer stays: its runs are skipped, not failed
        "ConditionPathExists=" + str(Path(pieter.__file__).resolve()).replace("%", "%%"),  # a path: not quoted
        "",
        "[Service]",
        "Type=oneshot",
        *(f"Environment={_quote(f'{key}={value}')}" for key, value in environment.items()),
        "ExecStart=" + exec_line(pieter_command("run", repo, scenario)),
        "TimeoutStartSec=2min",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateDevices=yes",
    ]
    return "\n".join(lines) + "\n"


def timer_text(repo: str, scenario: str, expression: str) -> str:
    return f"""# Pieter CI: the schedule of {repo}/{scenario}.
# Made by PUT /repos/{repo}/{scenario}/schedule: change or remove it there, not here.
[Unit]
Description=Pieter CI schedule of {repo}/{scenario}

[Timer]
OnCalendar={expression}
Persistent=true
AccuracySec=1s
Unit={unit_base(repo, scenario)}.service

[Install]
WantedBy=timers.target

[X-Pieter]
Repo={repo}
Scenario={scenario}
"""


def read_timer(path: Path) -> dict[str, str] | None:
    """The repo, scenario and expression of a schedule's timer file (None if it is not one of ours)."""
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    section, found = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[f"{section}.{key}"] = value
    if not {"X-Pieter.Repo", "X-Pieter.Scenario", "Timer.OnCalendar"} <= found.keys():
        return None
    return {"repo": found["X-Pieter.Repo"], "scenario": found["X-Pieter.Scenario"],
            "on_calendar": found["Timer.OnCalendar"]}  # fmt: skip


def installed() -> list[dict[str, str]]:
    """Every schedule on this host, with its unit base name (reads files: call it in a thread)."""
    schedules = []
    for path in sorted(UNIT_DIR.glob(PREFIX + "*.timer")):
        found = read_timer(path)
        if found is not None:
            schedules.append({**found, "base": path.name.removesuffix(".timer")})
    return schedules


def _write(path: Path, text: str) -> None:
    """Replace a unit file at once: systemd never reads half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        os.fchmod(f.fileno(), 0o644)
    os.replace(tmp, path)


async def systemctl(*args: str) -> None:
    rc, out = await output("systemctl", *args)
    if rc != 0:
        raise Conflict(f"systemd refused the schedule: systemctl {' '.join(args)} failed: {out[:500]}")


async def install(config: Config, repo: str, scenario: str, expression: str) -> bool:
    """Write and enable (or replace and restart) the schedule's units; True when it is new. A schedule that
    systemd refuses leaves things as they were: a new one is removed, a replaced one restored."""
    base = unit_base(repo, scenario)
    timer, service = UNIT_DIR / f"{base}.timer", UNIT_DIR / f"{base}.service"
    async with LOCK:
        before = await asyncio.to_thread(read_units, timer, service)
        try:
            await asyncio.to_thread(_write, service, service_text(config, repo, scenario))
            await asyncio.to_thread(_write, timer, timer_text(repo, scenario, expression))
            await _start(base, replaced=before is not None)
        except (OSError, PieterError) as e:
            if before is None:
                await _remove_units(base)
            else:
                await asyncio.to_thread(_write, timer, before[0])
                await asyncio.to_thread(_write, service, before[1])
                await _start(base, replaced=False)
            if isinstance(e, OSError):
                raise Conflict(f"cannot write the schedule's units into {UNIT_DIR}: {e.strerror} (the server needs "
                               f"to write there: ReadWritePaths={UNIT_DIR} if its unit has ProtectSystem=)") from None  # fmt: skip
            raise
    return before is None


def read_units(timer: Path, service: Path) -> tuple[str, str] | None:
    """The texts of a schedule's units, None if it has none."""
    try:
        return timer.read_text(), service.read_text()
    except FileNotFoundError:
        return None


async def _start(base: str, replaced: bool) -> None:
    """Load, enable and (re)start the timer. A replaced schedule starts afresh: its Persistent= stamp (the last
    run of the old expression) would fire the new one at once when the new one's last elapse came since."""
    await systemctl("daemon-reload")
    if replaced:
        await systemctl("stop", f"{base}.timer")
        rc, out = await output("systemctl", "clean", "--what=state", f"{base}.timer")
        if rc != 0:
            log.info("systemctl clean %s.timer: %s", base, out)
    await systemctl("enable", f"{base}.timer")
    await systemctl("restart", f"{base}.timer")


def _unlink(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)


async def _remove_units(base: str) -> None:
    """Stop, disable and forget the units (their Persistent= stamp too), then remove their files."""
    timer, service = f"{base}.timer", f"{base}.service"
    for args in (("disable", "--now", timer), ("stop", service), ("clean", "--what=state", timer)):
        rc, out = await output("systemctl", *args)
        if rc != 0:
            log.info("systemctl %s: %s", " ".join(args), out)
    await asyncio.to_thread(_unlink, UNIT_DIR / timer, UNIT_DIR / service)
    await systemctl("daemon-reload")
    await output("systemctl", "reset-failed", timer, service)  # a unit that failed stays listed otherwise


async def remove(repo: str, scenario: str) -> dict[str, str]:
    """Remove a scenario's schedule (404 if it has none); returns what it was."""
    base = unit_base(repo, scenario)
    async with LOCK:
        found = await asyncio.to_thread(read_timer, UNIT_DIR / f"{base}.timer")
        if found is None:
            raise NotFound(f"no schedule for {repo}/{scenario}")
        await _remove_units(base)
    return {**found, "unit": f"{base}.timer"}


async def forget(repo: str, scenario: str | None = None) -> None:
    """Remove the schedules of a scenario, or of every scenario of a repo, if there are any: what deleting
    them does. Quietly nothing where schedules cannot be (no systemd, not root)."""
    if unavailable_reason():
        return
    if scenario is not None:
        if not await asyncio.to_thread((UNIT_DIR / f"{unit_base(repo, scenario)}.timer").exists):
            return
        doomed = [scenario]
    else:
        doomed = [s["scenario"] for s in await asyncio.to_thread(installed) if s["repo"] == repo]
    for name in doomed:
        try:
            await remove(repo, name)
        except NotFound:
            pass  # removed meanwhile
        except PieterError as e:  # the scenario is gone all the same; its timer's runs will get 404s
            log.warning("could not remove the schedule of %s/%s: %s", repo, name, e.message)


def _timestamp(value: str) -> float | None:
    """Unix seconds of a timestamp as `systemctl show` prints it with TZ=UTC (`Sun 2026-11-29 11:11:55 UTC`;
    systemd 252 ignores --timestamp= there); '' or `n/a` is none."""
    try:
        when = datetime.datetime.strptime(value.strip(), "%a %Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


async def status(repo: str, scenario: str) -> dict[str, Any]:
    """The schedule as GET shows it (404 if there is none): its expression, timer, next and last run."""
    base = unit_base(repo, scenario)
    found = await asyncio.to_thread(read_timer, UNIT_DIR / f"{base}.timer")
    if found is None:
        raise NotFound(f"no schedule for {repo}/{scenario}")
    rc, out = await output("systemctl", "show", "--property=ActiveState,NextElapseUSecRealtime,LastTriggerUSec",
                            f"{base}.timer", env={"TZ": "UTC", "LC_ALL": "C"})  # fmt: skip
    values = dict(line.partition("=")[::2] for line in out.splitlines()) if rc == 0 else {}
    return {
        "repo": repo,
        "scenario": scenario,
        "on_calendar": found["on_calendar"],
        "unit": f"{base}.timer",
        "service": f"{base}.service",
        "state": values.get("ActiveState", "unknown"),
        "next_elapse": _timestamp(values.get("NextElapseUSecRealtime", "")),
        "last_trigger": _timestamp(values.get("LastTriggerUSec", "")),
    }
