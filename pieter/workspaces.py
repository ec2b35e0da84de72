"""A job's files on disk: `$PIETER_STATE_DIR/jobs/<id>/` (what the server hands the job) and
`$PIETER_STATE_DIR/workspaces/<id>/` (its working directory, where the source is cloned)."""

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from pieter.models import redact_source
from pieter.runners.base import JobFiles

JOB_WRAPPER = Path(__file__).parent / "runners" / "job.sh"


def job_files(state_dir: Path, job_id: int) -> JobFiles:
    return JobFiles(state_dir / "jobs" / str(job_id), state_dir / "workspaces" / str(job_id))


def prepare(state_dir: Path, job: dict[str, Any], owner: tuple[int, int] | None = None) -> JobFiles:
    """Write the job's directory for `job.sh` and make an empty workspace (mode 0700, owned by `owner`)."""
    files = job_files(state_dir, job["id"])
    remove(state_dir, job["id"])  # a job id reused after a Redis reset must not see an earlier run's files
    files.job_dir.mkdir(parents=True, mode=0o700)
    files.workspace.mkdir(parents=True, mode=0o700)
    if job["source"]:
        (files.job_dir / "source").write_text(job["source"])
        (files.job_dir / "source.shown").write_text(redact_source(job["source"]))
    (files.job_dir / "params.sh").write_text(
        "".join(f"export {name}={shlex.quote(value)}\n" for name, value in job["env"].items())
    )
    script = files.job_dir / "script"
    script.write_bytes(job["script"])
    script.chmod(0o755)
    if owner is not None:
        for path in (files.job_dir, files.workspace, *files.job_dir.iterdir()):
            os.chown(path, *owner)
    return files


def remove(state_dir: Path, job_id: int) -> None:
    files = job_files(state_dir, job_id)
    for path in (files.job_dir, files.workspace):
        shutil.rmtree(path, ignore_errors=True)


def job_environment(job: dict[str, Any], files: JobFiles) -> dict[str, str]:
    """The environment a job starts with: nothing of the server's, only what every job gets."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(files.workspace),
        "PIETER_JOB_ID": str(job["id"]),
        "PIETER_REPO": job["repo"],
        "PIETER_SCENARIO": job["scenario"],
        "PIETER_WORKSPACE": str(files.workspace),
    }
