"""A job's files on disk, and only that: where they are, making their directories, removing them.

    $PIETER_STATE_DIR/jobs/<id>/        what the server hands the job (runners/inputs.py writes it)
    $PIETER_STATE_DIR/workspaces/<id>/  its working directory, where the source is cloned
    $PIETER_STATE_DIR/artifacts/<id>/   files it keeps past its end, $PIETER_ARTIFACTS (artifacts.py reads them)
    $PIETER_STATE_DIR/handoff/<id>      the socket its clone receives the source and deploy key from (handoff.py)

Under the systemd runner, workspaces/<id> and artifacts/<id> are links that systemd makes to where it keeps a
dynamic user's state (/var/lib/private/...). Everything here blocks: call it off the event loop.
"""

import dataclasses
import os
import shutil
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class JobFiles:
    """Where one job lives on disk (see the module docstring)."""

    job_dir: Path
    workspace: Path
    artifacts: Path
    handoff: Path


def job_files(state_dir: Path, job_id: int) -> JobFiles:
    return JobFiles(*(state_dir / kind / str(job_id) for kind in ("jobs", "workspaces", "artifacts", "handoff")))


def left_behind(files: JobFiles) -> bool:
    """Whether an earlier job of the same id left anything on disk (ids restart after a Redis reset)."""
    return any(os.path.lexists(path) for path in (files.job_dir, files.workspace, files.artifacts, files.handoff))


def make(state_dir: Path, job_id: int, make_workspace: bool) -> JobFiles:
    """A new, empty job directory (mode 0700) and, unless the runner's unit makes them (systemd's
    StateDirectory=), an empty workspace and artifacts directory. What an earlier job of the same id left must be
    gone first (`left_behind`, `remove_all`): it is refused here, not merged."""
    files = job_files(state_dir, job_id)
    files.job_dir.mkdir(parents=True, mode=0o700)
    for path in (files.workspace, files.artifacts):
        path.parent.mkdir(parents=True, exist_ok=True)
        if make_workspace:
            path.mkdir(mode=0o700)
    return files


def remove_all(state_dir: Path, job_id: int) -> None:
    """Everything of a job on disk, its artifacts too: what deleting the job does."""
    files = job_files(state_dir, job_id)
    for path in (files.job_dir, files.workspace, files.artifacts):
        remove_tree(path)
    files.handoff.unlink(missing_ok=True)  # left by a server that was killed while the job waited for it


def remove_inputs(files: JobFiles) -> None:
    """What the server handed the job (parameters, secrets, the script): nothing of it is kept past its end."""
    remove_tree(files.job_dir)
    files.handoff.unlink(missing_ok=True)


def remove_workspace(state_dir: Path, job_id: int) -> None:
    """The job's working directory alone; its record, log and artifacts stay."""
    remove_tree(job_files(state_dir, job_id).workspace)


def remove_tree(path: Path) -> None:
    """Remove a directory, or a link to one (systemd keeps a dynamic user's state under /var/lib/private)."""
    if path.is_symlink():
        shutil.rmtree(path.resolve(), ignore_errors=True)
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes used by the jobs' directories below `path`, each followed if it is systemd's link to a dynamic
    user's state, nothing else followed."""
    total = 0
    for entry in path.iterdir() if path.is_dir() else ():
        for directory, _, names in os.walk(entry.resolve()):
            for name in names:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except OSError:
                    pass
    return total
