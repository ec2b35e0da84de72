"""A job's files on disk: `$PIETER_STATE_DIR/jobs/<id>/` (what the server hands the job) and
`$PIETER_STATE_DIR/workspaces/<id>/` (its working directory, where the source is cloned)."""

import shlex
import shutil
from pathlib import Path
from typing import Any

from pieter.models import redact_source
from pieter.runners.base import JobFiles

JOB_WRAPPER = Path(__file__).parent / "runners" / "job.sh"
CLONE_CONFIG = JOB_WRAPPER.with_name("clone.gitconfig")  # job.sh finds it beside itself


def job_files(state_dir: Path, job_id: int) -> JobFiles:
    return JobFiles(state_dir / "jobs" / str(job_id), state_dir / "workspaces" / str(job_id))


def prepare(state_dir: Path, job: dict[str, Any], make_workspace: bool = True) -> JobFiles:
    """Write the job's directory for `job.sh` (mode 0700) and, unless the runner does, an empty workspace."""
    files = job_files(state_dir, job["id"])
    remove(state_dir, job["id"])  # a job id reused after a Redis reset must not see an earlier run's files
    files.job_dir.mkdir(parents=True, mode=0o700)
    files.workspace.parent.mkdir(parents=True, exist_ok=True)
    if make_workspace:
        files.workspace.mkdir(mode=0o700)
    if job["source"]:
        (files.job_dir / "source").write_text(job["source"])
        (files.job_dir / "source.shown").write_text(redact_source(job["source"]))
    (files.job_dir / "params.sh").write_text(
        "".join(f"export {name}={shlex.quote(value)}\n" for name, value in job["env"].items())
    )
    (files.job_dir / "script").write_bytes(job["script"])
    return files


def remove(state_dir: Path, job_id: int) -> None:
    """Remove a job's files; a workspace may be a link to where systemd keeps a dynamic user's state."""
    files = job_files(state_dir, job_id)
    for path in (files.job_dir, files.workspace):
        if path.is_symlink():
            shutil.rmtree(path.resolve(), ignore_errors=True)
            path.unlink(missing_ok=True)
        else:
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
