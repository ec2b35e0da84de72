"""The `pieter` client commands: talk to a Pieter server over HTTP (stdlib only, as the Debian package
has it). Settings: PIETER_URL and PIETER_TOKEN, from the environment or the config file."""

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from pieter.config import Config

# Exit codes of `pieter run --follow` besides the job's own exit status (documented in the README).
EXIT_FOR_RESULT = {"timeout": 124, "error": 125, "cancelled": 130, "lost": 131, "oom-kill": 137}


class ClientError(Exception):
    """The server said no, or could not be reached; the message says which and why."""


class Client:
    def __init__(self, config: Config):
        self.base = config.url.rstrip("/")
        self.token = config.token

    def request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def open(self, method: str, path: str, body: Any = None, timeout: float = 30):  # type: ignore[no-untyped-def]
        try:
            return urllib.request.urlopen(self.request(method, path, body), timeout=timeout)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]
            except (ValueError, KeyError, TypeError):
                message = e.reason
            raise ClientError(f"{method} {path}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ClientError(f"cannot reach {self.base}: {getattr(e, 'reason', e)}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        with self.open(method, path, body) as response:
            return json.loads(response.read())

    def lines(self, path: str) -> Iterator[bytes]:
        with self.open("GET", path, timeout=3600) as response:
            yield from response


def exit_code(job: dict[str, Any]) -> int:
    """The exit code `pieter run --follow` ends with: the job's own, or one that names how it ended."""
    if job["result"] in ("success", "exit-code") and job["rc"] is not None:
        return int(job["rc"])
    if job["result"] == "signal" and job["rc"] is not None:
        return 128 + abs(int(job["rc"]))
    return EXIT_FOR_RESULT.get(job["result"], 1)


def progress(job: dict[str, Any]) -> None:
    """A status line on a terminal (stderr), rewritten in place; nothing when piped."""
    if sys.stderr.isatty():
        since = job.get("started") or job.get("timestamp") or time.time()
        print(f"\rjob {job['id']}: {job['state']} {time.time() - since:6.1f} s ", end="", file=sys.stderr, flush=True)


def run(client: Client, repo: str, scenario: str, env: dict[str, str], follow: bool) -> int:
    job = client.json("PATCH", f"/repos/{repo}/{scenario}", {"env": env} if env else None)
    if not follow:
        print(job["id"])
        return 0
    print(f"job {job['id']} queued", file=sys.stderr)
    while job["state"] == "queued":
        progress(job)
        time.sleep(0.2)
        job = client.json("GET", f"/jobs/{job['id']}")
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for line in client.lines(f"/jobs/{job['id']}/log?follow=1"):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    job = client.json("GET", f"/jobs/{job['id']}")
    print(f"job {job['id']}: {job['state']} ({job['result']}, rc {job['rc']})", file=sys.stderr)
    return exit_code(job)


def log(client: Client, job_id: int, follow: bool) -> int:
    for line in client.lines(f"/jobs/{job_id}/log" + ("?follow=1" if follow else "")):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    return 0


def jobs(client: Client, repo: str | None, state: str | None, limit: int) -> int:
    query = "&".join(f"{k}={v}" for k, v in (("repo", repo), ("state", state), ("limit", limit)) if v)
    for job in client.json("GET", f"/jobs?{query}")["jobs"]:
        print(f"{job['id']:>6}  {job['repo']}/{job['scenario']:<20} {job['state']:<9} {job['result'] or '':<9} "
              f"{'' if job['rc'] is None else job['rc']:>4}  {job['duration'] or '':>8}")  # fmt: skip
    return 0


def cancel(client: Client, job_id: int) -> int:
    job = client.json("POST", f"/jobs/{job_id}/cancel")
    print(f"job {job['id']}: {job['state']}")
    return 0


def repos(client: Client) -> int:
    print("\n".join(client.json("GET", "/repos")))
    return 0
