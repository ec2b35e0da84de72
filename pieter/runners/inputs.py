"""What a job is handed, as `job.sh` reads it: the files of its directory (`$PIETER_STATE_DIR/jobs/<id>/`), its
environment, and what its log must not show. Both runners hand the same files (job.sh's header lists them); the
systemd runner as credentials, since a job's unit cannot see where a checkout of Pieter may live.
"""

import json
import os
import shlex
from pathlib import Path
from typing import Any

from pieter.models import JobSpec, redact_source, url_secret
from pieter.workspaces import JobFiles

JOB_WRAPPER = Path(__file__).with_name("job.sh")
CLONE_CONFIG = JOB_WRAPPER.with_name("clone.gitconfig")  # job.sh finds these beside itself
RECEIVER = JOB_WRAPPER.with_name("receive.py")
MASKS = "masks"  # in a job's directory: the secret values its log must not show (the server's, not the job's)


def write(files: JobFiles, job: JobSpec, private: dict[str, Any]) -> None:
    """Write the job's directory for `job.sh` (blocking: call it off the event loop). `private` is the repo's
    (see Store.repo_private): its secrets become variables, its known hosts a file; a deploy key, like a
    password in the source URL, goes through the handoff socket instead (`clone_secrets`)."""
    source = job["raw_source"]
    if source:
        if clone_secrets(job, private) is None:
            (files.job_dir / "source").write_text(source)
        else:  # the source and the deploy key reach the clone through its handoff socket, not as files
            (files.job_dir / "handoff").write_text(str(files.handoff))
        (files.job_dir / "source.shown").write_text(redact_source(source))
        if job.get("commit"):
            (files.job_dir / "commit").write_text(job["commit"] or "")
        if private.get("known_hosts"):
            (files.job_dir / "known_hosts").write_text(private["known_hosts"])
    # What the log must not show: each line of each secret value (the log is kept in lines) and the source's
    # password or token, the longest first, from 3 characters (shorter ones would mask ordinary text). Not
    # handed to the job (see handed), and the server's user's only: a local job's user owns the directory.
    values = [*private.get("secrets", {}).values(), url_secret(source)]  # git may print its URL
    masks = {line.strip() for value in values for line in value.splitlines()}
    with open(os.open(files.job_dir / MASKS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(json.dumps(sorted((m for m in masks if len(m) >= 3), key=len, reverse=True)))
    (files.job_dir / "environment").write_text(exports(environment(job, files)))
    # the repo's secrets win over a job's parameters
    (files.job_dir / "params.sh").write_text(exports({**job["env"], **private.get("secrets", {})}))
    (files.job_dir / "script").write_bytes(job["script"])


def exports(variables: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


def clone_secrets(job: JobSpec, private: dict[str, Any]) -> dict[str, str] | None:
    """What the job's clone step alone receives, over its handoff socket (pieter/handoff.py), when its source
    holds a password or token, or the repo has a deploy key; None when the clone needs no secret."""
    source, key = job["raw_source"], private.get("deploy_key", "")
    if source and (key or url_secret(source)):
        return {"source": source, "deploy_key": key}
    return None


def handed(files: JobFiles) -> list[Path]:
    """The files job.sh reads (the job's directory less what only the server uses)."""
    return sorted(p for p in files.job_dir.iterdir() if p.name != MASKS)


def masks(files: JobFiles) -> list[bytes]:
    """The secret values the job's log must not show (none when its directory is gone)."""
    try:
        return [v.encode() for v in json.loads((files.job_dir / MASKS).read_text())]
    except (OSError, ValueError):
        return []


def environment(job: JobSpec, files: JobFiles) -> dict[str, str]:
    """The environment a job starts with: nothing of the server's, only what every job gets."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(files.workspace),
        "PIETER_JOB_ID": str(job["id"]),
        "PIETER_REPO": job["repo"],
        "PIETER_SCENARIO": job["scenario"],
        "PIETER_WORKSPACE": str(files.workspace),
        "PIETER_ARTIFACTS": str(files.artifacts),
    }
