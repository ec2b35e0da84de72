"""Settings, read once: the environment wins over the config file, the file over the defaults.

The file holds `PIETER_*=value` lines, so systemd can use it as an `EnvironmentFile=` too. This is the only
module that reads `os.environ` for settings; everything else receives a `Config`.
"""

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_FILE = "/etc/pieter-ci/pieter.conf"
RUNNERS = ("auto", "local", "systemd")
NOT_SETTINGS = {"config_file"}  # fields of Config that no PIETER_* variable sets


class ConfigError(Exception):
    """A setting that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class Config:
    redis_url: str = ""
    db_host: str = "127.0.0.1"
    db_port: int = 6379
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    state_dir: Path = Path("/var/lib/pieter-ci")
    runner: str = "auto"
    max_jobs: int = os.cpu_count() or 1
    job_timeout: int = 3600
    keep_jobs: int = 50  # finished jobs kept per scenario, with logs and artifacts
    keep_workspaces: int = 5  # finished jobs per scenario whose workspace is kept (0: none)
    keep_days: int = 0  # finished jobs older than this are removed whatever their number (0: no age limit)
    artifacts_max_bytes: int = 100 * 1024 * 1024  # a job's artifacts past this are removed, with a log line
    log_max_bytes: int = 16 * 1024 * 1024
    max_script_bytes: int = 1024 * 1024
    require_token: int = 0  # 1: every request needs a token, even on loopback (elsewhere they always do)
    idle_exit: int = 300  # seconds; socket-activated servers exit when idle this long (0: never)
    host: str = socket.gethostname()
    url: str = ""  # the client commands' server (unset: this host's own, at PIETER_API_HOST/PORT; see load)
    token: str = ""  # the client commands' API token
    job_user: str = "nobody"  # local runner: the user jobs run as when the server runs as root
    # systemd runner: each job unit's limits (a scenario's settings win) and the collector's Python
    job_cpu_quota: str = "100%"
    job_memory_max: str = "25%"
    job_tasks_max: int = 4096
    config_file: Path = Path(DEFAULT_CONFIG_FILE)  # the file these settings were read from (PIETER_CONFIG)

    @property
    def redis(self) -> str:
        """Where Redis is: PIETER_REDIS_URL when set, else the original's PIETER_DB_HOST/PORT pair."""
        return self.redis_url or f"redis://{self.db_host}:{self.db_port}/0"


def _convert(field: dataclasses.Field[object], key: str, raw: str) -> object:
    kind = field.type
    if kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a whole number") from None
        if value < 0 or (value == 0 and field.name in ("max_jobs", "max_script_bytes", "log_max_bytes", "keep_jobs")):
            raise ConfigError(f"{key}={raw!r} is out of range")
        return value
    if kind is Path:
        return Path(raw)
    if field.name == "runner" and raw not in RUNNERS:
        raise ConfigError(f"{key}={raw!r}: choose one of {', '.join(RUNNERS)}")
    return raw


def env_key(name: str) -> str:
    return "PIETER_" + name.upper()


def read_config_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines; `#` comments; optional matching quotes around the value (as systemd reads them)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load(environ: Mapping[str, str] = os.environ) -> Config:
    """The settings in force: defaults < config file (`PIETER_CONFIG`, if it exists) < environment."""
    path = Path(environ.get("PIETER_CONFIG", DEFAULT_CONFIG_FILE))
    try:
        merged = read_config_file(path) if path.is_file() else {}
    except PermissionError:  # root's file (it may hold a token): a user's client commands go by the environment
        merged = {}
    merged.update({k: v for k, v in environ.items() if k.startswith("PIETER_")})
    values: dict[str, Any] = {}  # each field's own type, as _convert made it
    for field in dataclasses.fields(Config):
        key = env_key(field.name)
        if field.name in NOT_SETTINGS:
            continue
        if merged.get(key, "") != "":
            values[field.name] = _convert(field, key, merged[key])
    config = Config(**values, config_file=path)
    return config if config.url else dataclasses.replace(config, url=own_url(config))


def own_url(config: Config) -> str:
    """This host's server, where the client commands (and schedules) go unless PIETER_URL says otherwise."""
    host = "127.0.0.1" if config.api_host in ("", "0.0.0.0", "::") else config.api_host
    return f"http://{f'[{host}]' if ':' in host else host}:{config.api_port}"
