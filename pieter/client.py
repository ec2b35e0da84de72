"""The `pieter` client commands: talk to a Pieter server over HTTP (stdlib only, as the Debian package
has it). Settings: PIETER_URL and PIETER_TOKEN, from the environment or the config file."""

import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from pieter.config import Config
from pieter.models import ENDED

# Exit codes of `pieter run --follow` besides the job's own exit status (documented in the README).
EXIT_FOR_RESULT = {"timeout": 124, "error": 125, "cancelled": 130, "lost": 131, "oom-kill": 137}
# How a connection fails, before or during an answer: URLError is an OSError; a dropped answer may be either.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
# `pieter jobs`'s columns, named on a terminal.
JOBS_HEADER = ("ID", "REPO/SCENARIO", "STATE", "RESULT", "RC", "SECONDS")


class ClientError(Exception):
    """The server said no, or could not be reached; the message says which and why."""


def url_path(*segments: object) -> str:
    """A path from segments, each quoted whole: a name never adds a segment or starts a query."""
    return "".join("/" + urllib.parse.quote(str(segment), safe="") for segment in segments)


class Client:
    def __init__(self, config: Config):
        self.base = config.url.rstrip("/")
        self.token = config.token
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"PIETER_URL {config.url!r} is not an http:// or https:// URL")
        if not (self.token.isascii() and self.token.isprintable()):  # said here: urllib's error would show it
            raise ClientError("PIETER_TOKEN must be printable ASCII on one line (a stray newline?)")

    def request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return req

    def open(self, method: str, path: str, body: Any = None, timeout: float = 30) -> http.client.HTTPResponse:
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(  # what an http(s) URL opens to
                self.request(method, path, body), timeout=timeout
            )
            return response
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]
            except (ValueError, KeyError, TypeError, *CONNECTION_ERRORS):
                message = e.reason
            raise ClientError(f"{method} {path}: {e.code} {message}") from None
        except CONNECTION_ERRORS as e:
            raise ClientError(f"cannot reach {self.base}: {getattr(e, 'reason', e)}") from None

    def read(self, method: str, path: str, body: Any = None) -> bytes:
        with self.open(method, path, body) as response:
            try:
                return response.read()
            except CONNECTION_ERRORS as e:
                raise ClientError(f"{method} {path}: the answer broke off: {e!r}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return json.loads(self.read(method, path, body))
        except ValueError:
            raise ClientError(f"{method} {path}: the answer is not Pieter's JSON (is {self.base} Pieter?)") from None

    def lines(self, path: str) -> Iterator[bytes]:
        """A streamed answer's lines; a dropped connection ends them early, so the caller must check why."""
        with self.open("GET", path, timeout=3600) as response:
            try:
                yield from response
            except CONNECTION_ERRORS:
                return


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


def follow(client: Client, job_id: int) -> dict[str, Any]:
    """Print the job's log as it grows; the job once it has ended. The stream also ends when the server
    goes away, so the job's state, not the stream's end, says whether the job ended."""
    for line in client.lines(url_path("jobs", job_id, "log") + "?follow=1"):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    try:
        job: dict[str, Any] = client.json("GET", url_path("jobs", job_id))
    except ClientError as e:
        raise ClientError(f"the log stream ended, and whether job {job_id} did is unknown: {e}") from None
    if job["state"] not in ENDED:
        raise ClientError(f"the log stream ended before job {job_id} did (server stopped?)")
    return job


def run(client: Client, repo: str, scenario: str, env: dict[str, str], following: bool) -> int:
    job = client.json("PATCH", url_path("repos", repo, scenario), {"env": env} if env else None)
    if not following:
        print(job["id"])
        return 0
    print(f"job {job['id']} queued", file=sys.stderr)
    while job["state"] == "queued":
        progress(job)
        time.sleep(0.2)
        job = client.json("GET", url_path("jobs", job["id"]))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    job = follow(client, job["id"])
    rc = "" if job["rc"] is None else f", rc {job['rc']}"
    print(f"job {job['id']}: {job['state']} ({job['result']}{rc})", file=sys.stderr)
    return exit_code(job)


def log(client: Client, job_id: int, following: bool) -> int:
    if following:
        follow(client, job_id)
    else:
        sys.stdout.buffer.write(client.read("GET", url_path("jobs", job_id, "log")))
    return 0


def jobs(client: Client, repo: str | None, state: str | None, limit: int) -> int:
    query = urllib.parse.urlencode({k: v for k, v in (("repo", repo), ("state", state), ("limit", limit)) if v})
    listed = client.json("GET", f"/jobs?{query}")["jobs"]
    rows = [(job["id"], f"{job['repo']}/{job['scenario']}", job["state"], job["result"] or "",
             "" if job["rc"] is None else job["rc"], job["duration"] or "") for job in listed]  # fmt: skip
    if sys.stdout.isatty():  # for a reader; a script reading the rows has no line to skip
        rows.insert(0, JOBS_HEADER)
    width = max((len(row[1]) for row in rows), default=0)
    for number, name, job_state, result, rc, duration in rows:
        print(f"{number:>6}  {name:<{width}}  {job_state:<9} {result:<9} {rc:>4}  {duration:>8}")
    return 0


def cancel(client: Client, job_id: int) -> int:
    job = client.json("POST", url_path("jobs", job_id, "cancel"))
    print(f"job {job['id']}: {job['state']}")
    return 0


def repos(client: Client) -> int:
    print("\n".join(client.json("GET", "/repos")))
    return 0
