"""What the API accepts and returns: names, parameters, scenario settings, job states and results.

Plain functions and types, no I/O: every check that guards a path, a Redis key or a unit name lives here.
"""

import base64
import dataclasses
import enum
import json
import re
from typing import Any, TypedDict

from pieter.config import Config
from pieter.errors import BadRequest, TooLarge

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables that make a loader, shell or interpreter run code of the caller's choosing before the script.
FORBIDDEN_ENV = re.compile(
    r"LD_.*|BASH_ENV|ENV|BASH_FUNC_.*|SHELLOPTS|BASHOPTS|PS4|IFS|PYTHON.*|PERL5?LIB|PERL5OPT|RUBYOPT|RUBYLIB"
    r"|NODE_OPTIONS|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS"
)
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_ENTRIES = 256


class State(str, enum.Enum):
    """Where a job is in its life: queued → running → success | fail | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAIL = "fail"
    CANCELLED = "cancelled"


ENDED = (State.SUCCESS, State.FAIL, State.CANCELLED)


class Result(str, enum.Enum):
    """Why a job ended (systemd's words where it has them)."""

    SUCCESS = "success"  # exit status 0
    EXIT_CODE = "exit-code"  # non-zero exit status
    SIGNAL = "signal"  # killed by a signal
    TIMEOUT = "timeout"  # ran past its timeout and was killed
    OOM_KILL = "oom-kill"  # hit its memory limit: the kernel killed one of its processes
    CANCELLED = "cancelled"  # cancelled by a user
    LOST = "lost"  # the runner that ran it went away without a result
    ERROR = "error"  # Pieter could not run it (the clone failed, the workspace could not be made)

    @property
    def state(self) -> State:
        if self is Result.SUCCESS:
            return State.SUCCESS
        return State.CANCELLED if self is Result.CANCELLED else State.FAIL


class Job(TypedDict):
    """A job as the API shows it (`GET /jobs/{id}`): its source with any password redacted, no script."""

    id: int
    name: int  # the original Pieter's name for the id
    repo: str
    scenario: str
    host: str | None
    state: str  # a State
    result: str | None  # a Result, once it has ended
    rc: int | None
    env: dict[str, str]
    source: str | None
    settings: dict[str, str]  # the scenario's settings when the job was queued
    timestamp: float
    started: float | None
    finished: float | None
    duration: float | None
    unit: str | None
    invocation: str | None
    cpu_seconds: float | None
    memory_peak: int | None
    commit: str | None
    tail: list[str]  # its last lines of output


class JobSpec(Job):
    """What a runner needs to run a job: the record, with the raw source (a URL password too) and the script."""

    raw_source: str
    script: bytes


@dataclasses.dataclass(frozen=True)
class Settings:
    """A job's limits in force: its scenario's setting where it has one, else the server's."""

    timeout: int  # seconds; 0: none
    keep_jobs: int
    cpu_quota: str
    memory_max: str
    tasks_max: int
    sandbox: str  # strict or relaxed


def effective_settings(job: Job, config: Config) -> Settings:
    own: dict[str, Any] = job["settings"]
    return Settings(
        timeout=int(own.get("timeout") or config.job_timeout),
        keep_jobs=int(own.get("keep_jobs") or config.keep_jobs),
        cpu_quota=own.get("cpu_quota") or config.job_cpu_quota,
        memory_max=own.get("memory_max") or config.job_memory_max,
        tasks_max=int(own.get("tasks_max") or config.job_tasks_max),
        sandbox=own.get("sandbox") or "strict",
    )


def json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object parsed from a body, or a BadRequest that says what is wrong with it."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON in {what}: {str(e)[:200]}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def check_name(kind: str, name: str) -> str:
    """Repo and scenario names become paths, Redis keys and unit names: keep them plain."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise BadRequest(
            f"invalid {kind} name {name[:80]!r}: use 1 to 64 of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit, without '..'"
        )
    return name


GIT_SCHEMES = ("https", "http", "ssh", "git", "file")  # http: a Gitea or mirror on the LAN
URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")  # scheme, then user[:password] before @
SCP_LIKE = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*:[^:].*")  # user@host:path, as ssh


def check_source(source: object) -> str:
    """A git source: an https, http, ssh, git or file URL, `user@host:path`, or an absolute local path ('' for
    none). Nothing git would read as an option or hand to a remote helper (`ext::` runs a command)."""
    if not isinstance(source, str):
        raise BadRequest("source must be a string (a git URL or a local path)")
    if source != source.strip() or any(ord(c) < 32 or c == "\x7f" for c in source):
        raise BadRequest("source must not contain spaces at its ends or control characters")
    if len(source) > 2048:
        raise BadRequest("source is longer than 2048 characters")
    if source.startswith("-") or re.search(r"(?:://|@)-", source):
        raise BadRequest("source must not start with '-', nor its host or user (git or ssh would read an option)")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", source)
    if source == "" or source.startswith("/") and "::" not in source:
        return source
    if scheme and scheme.group(1).lower() in GIT_SCHEMES:
        authority = re.match(r"[^/?#]*", source[scheme.end() :])[0]  # type: ignore[index]
        userinfo, at, _ = authority.rpartition("@")
        if "@" in userinfo:
            raise BadRequest("source has more than one '@' before its host: write an '@' of a user name or "
                             "password as %40")  # fmt: skip
        if ":" in userinfo and not scheme.group(1).lower().startswith("http"):
            raise BadRequest(f"source: git uses a password in http(s) URLs only, not in {scheme.group(1)}:// ones "
                             "(ssh signs in with the repo's deploy_key): remove it")  # fmt: skip
        return source
    if not scheme and SCP_LIKE.fullmatch(source) and "::" not in source:
        return source
    raise BadRequest(
        f"source {redact_source(source)[:200]!r} is not allowed: use an https://, http://, ssh://, git:// or file:// URL, "
        "user@host:path, or an absolute path"
    )


def check_commit(commit: object) -> str:
    """A commit id to check out ('' for the head of the default branch)."""
    if not isinstance(commit, str) or commit and not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        raise BadRequest("commit must be a commit id: 7 to 64 hex digits, lowercase")
    return commit


def check_hook_secret(secret: object) -> str:
    """A forge webhook's shared secret ('' removes it: the repo then accepts no hooks)."""
    if not isinstance(secret, str) or secret and not 16 <= len(secret) <= 256 or "\x00" in secret:
        raise BadRequest("secret must be a string of 16 to 256 characters (or '' to remove it)")
    return secret


def check_deploy_key(key: object) -> str:
    """An SSH private key for cloning the repo ('' removes it)."""
    if not isinstance(key, str) or len(key) > 16384 or key and "PRIVATE KEY-----" not in key:
        raise BadRequest("deploy_key must be an SSH private key in PEM/OpenSSH form, at most 16 KiB (or '')")
    return key if not key or key.endswith("\n") else key + "\n"


def check_known_hosts(text: object) -> str:
    """ssh's known_hosts lines: `[@marker] HOSTS KEYTYPE BASE64KEY [comment]`, `#` comments."""
    if not isinstance(text, str) or len(text) > 65536 or "\x00" in text:
        raise BadRequest("known_hosts must be text in ssh's known_hosts format, at most 64 KiB")
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        fields = fields[1:] if fields[0].startswith("@") else fields
        try:
            valid = len(fields) >= 3 and bool(base64.b64decode(fields[2], validate=True))
        except ValueError:
            valid = False
        if not valid:
            raise BadRequest(f"known_hosts line {number} is not 'HOSTS KEYTYPE KEY' (ssh's known_hosts format, "
                             f"as ssh-keyscan prints it): {line[:80]!r}")  # fmt: skip
    return text


def check_env(env: object, field: str = "env") -> dict[str, str]:
    """Job parameters (or a repo's secret variables, `field` "secrets"): plain names, string values, no loader or
    interpreter hooks."""
    if not isinstance(env, dict):
        raise BadRequest(f'{field} must be an object of names to strings, e.g. {{"{field}": {{"KEY": "value"}}}}')
    if len(env) > MAX_ENV_ENTRIES:
        raise BadRequest(f"{field} has more than {MAX_ENV_ENTRIES} entries")
    for name, value in env.items():
        if not ENV_NAME_RE.fullmatch(name) or len(name) > 128:
            raise BadRequest(f"invalid {field} name {name[:80]!r}: use [A-Za-z_][A-Za-z0-9_]*, at most 128 characters")
        if name.upper().startswith("PIETER_"):
            raise BadRequest(f"{field} name {name!r} is not allowed: PIETER_* variables are set by Pieter")
        if FORBIDDEN_ENV.fullmatch(name.upper()):
            raise BadRequest(f"{field} name {name!r} is not allowed: it would change how the job's programs start")
        if not isinstance(value, str):
            raise BadRequest(f"{field} value of {name!r} must be a string")
        if "\x00" in value or len(value) > MAX_ENV_VALUE:
            raise BadRequest(f"{field} value of {name!r} must be at most {MAX_ENV_VALUE} characters, without NUL")
    return env


# Scenario settings: query parameters of PUT /repos/{repo}/{scenario}. Each maps a name to its checker.
def _seconds(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,7}", value) or not 1 <= int(value) <= 7 * 24 * 3600:
        raise ValueError("a whole number of seconds from 1 to 604800")
    return str(int(value))


def _count(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,7}", value) or not 1 <= int(value) <= 1_000_000:
        raise ValueError("a whole number from 1 to 1000000")
    return str(int(value))


def _percent(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,4}%", value):
        raise ValueError("a percentage of one CPU such as 50% or 200%")
    return value


def _bytes(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,15}[KMGT]?|[1-9][0-9]?%", value):
        raise ValueError("a size such as 512M or 2G, or a share of memory such as 25%")
    return value


def _branches(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_./*?-]+(,[A-Za-z0-9_./*?-]+)*", value) or len(value) > 1000:
        raise ValueError("branch names or globs, comma separated, such as main,release/*")
    return value


def _badge(value: str) -> str:
    if value not in ("public", "private"):
        raise ValueError("public or private")
    return value


def _sandbox(value: str) -> str:
    if value not in ("strict", "relaxed"):
        raise ValueError("strict or relaxed")
    return value


SETTINGS = {
    "timeout": _seconds,  # PIETER_JOB_TIMEOUT for this scenario
    "keep_jobs": _count,  # PIETER_KEEP_JOBS for this scenario
    "cpu_quota": _percent,  # PIETER_JOB_CPU_QUOTA (systemd runner)
    "memory_max": _bytes,  # PIETER_JOB_MEMORY_MAX (systemd runner)
    "tasks_max": _count,  # PIETER_JOB_TASKS_MAX (systemd runner)
    "branches": _branches,  # webhooks: only pushes to these branches (globs) queue a job
    "badge": _badge,  # `public`: its badge is served without a token where the API needs one (pieter/web/badges.py)
    "sandbox": _sandbox,  # systemd runner: `relaxed` lifts the syscall, namespace, socket and loopback limits
}


def check_settings(args: dict[str, list[str]]) -> dict[str, str]:
    """Query parameters to settings; an empty value ('timeout==') clears a setting."""
    settings = {}
    for name, values in args.items():
        if name not in SETTINGS:
            raise BadRequest(f"unknown scenario setting {name[:80]!r}; known: {', '.join(SETTINGS)}")
        if len(values) != 1:
            raise BadRequest(f"scenario setting {name!r} is given more than once")
        value = values[0]
        if value == "":
            settings[name] = ""
            continue
        try:
            settings[name] = SETTINGS[name](value)
        except ValueError as e:
            raise BadRequest(f"scenario setting {name}={value[:80]!r}: expected {e}") from None
    return settings


def url_secret(source: str) -> str:
    """What is secret in a source URL: the password of its `user:password@`, or in an http(s) URL a user name
    alone (a token: `https://<token>@github.com/…`); '' when nothing is."""
    found = URL_USERINFO.match(source)
    if not found:
        return ""
    user, colon, password = found[2].partition(":")
    return password if colon else user if found[1].lower().startswith("http") else ""


def redact_source(source: str) -> str:
    """A source URL without its secret (url_secret), for output."""
    found = URL_USERINFO.match(source)
    if not found or not url_secret(source):
        return source
    user, colon, _ = found[2].partition(":")
    return found[1] + (f"{user}:***" if colon else "***") + "@" + source[found.end() :]


def check_script(script: bytes, limit: int) -> bytes:
    if not script.strip():  # most likely a body that never left the client (httpie's --ignore-stdin drops it)
        raise BadRequest("the script is empty: send it as the request body (httpie: `< script.sh`)")
    if len(script) > limit:
        raise TooLarge(f"script is {len(script)} bytes, more than PIETER_MAX_SCRIPT_BYTES={limit}")
    return script


def mask_secrets(lines: list[bytes], secrets: list[bytes]) -> list[bytes]:
    """The lines with every secret value replaced by `***` (what the log in Redis keeps)."""
    if not secrets:
        return lines
    masked = []
    for line in lines:
        for secret in secrets:
            line = line.replace(secret, b"***")
        masked.append(line)
    return masked
