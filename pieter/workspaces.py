"""A job's files on disk: `$PIETER_STATE_DIR/jobs/<id>/` (what the server hands the job),
`$PIETER_STATE_DIR/workspaces/<id>/` (its working directory, where the source is cloned),
`$PIETER_STATE_DIR/artifacts/<id>/` (files it keeps, $PIETER_ARTIFACTS) and `$PIETER_STATE_DIR/handoff/<id>`
(the socket its clone receives the source and deploy key from, pieter/handoff.py)."""

import json
import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO

from pieter.models import redact_source, url_secret
from pieter.runners.base import JobFiles

JOB_WRAPPER = Path(__file__).parent / "runners" / "job.sh"
CLONE_CONFIG = JOB_WRAPPER.with_name("clone.gitconfig")  # job.sh finds these beside itself
RECEIVER = JOB_WRAPPER.with_name("receive.py")
MASKS = "masks"  # in a job's directory: the secret values its log must not show


def job_files(state_dir: Path, job_id: int) -> JobFiles:
    return JobFiles(*(state_dir / kind / str(job_id) for kind in ("jobs", "workspaces", "artifacts", "handoff")))


def prepare(state_dir: Path, job: dict[str, Any], make_workspace: bool = True,
            private: dict[str, Any] | None = None) -> JobFiles:  # fmt: skip
    """Write the job's directory for `job.sh` (mode 0700) and, unless the runner does, an empty workspace and
    artifacts directory."""
    files = job_files(state_dir, job["id"])
    remove(state_dir, job["id"])  # a job id reused after a Redis reset must not see an earlier run's files
    files.job_dir.mkdir(parents=True, mode=0o700)
    for path in (files.workspace, files.artifacts):
        path.parent.mkdir(parents=True, exist_ok=True)
        if make_workspace:
            path.mkdir(mode=0o700)
    private = private or {}
    if job["source"]:
        if clone_secrets(job, private) is None:
            (files.job_dir / "source").write_text(job["source"])
        else:  # the source and the deploy key reach the clone through its handoff socket, not as files
            (files.job_dir / "handoff").write_text(str(files.handoff))
        (files.job_dir / "source.shown").write_text(redact_source(job["source"]))
        if job.get("commit"):
            (files.job_dir / "commit").write_text(job["commit"])
        if private.get("known_hosts"):
            (files.job_dir / "known_hosts").write_text(private["known_hosts"])
    variables = {**job["env"], **private.get("secrets", {})}  # the repo's secrets win over a job's parameters
    # What the log must not show: each line of each secret value (the log is kept in lines) and the source's
    # password or token, the longest first, from 3 characters (shorter ones would mask ordinary text). Not
    # handed to the job (see job_inputs), and the server's user's only: a local job's user owns the directory.
    values = [*private.get("secrets", {}).values(), url_secret(job["source"] or "")]  # git may print its URL
    masks = {line.strip() for value in values for line in value.splitlines()}
    with open(os.open(files.job_dir / MASKS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(json.dumps(sorted((m for m in masks if len(m) >= 3), key=len, reverse=True)))
    (files.job_dir / "params.sh").write_text(
        "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())
    )
    (files.job_dir / "script").write_bytes(job["script"])
    return files


def clone_secrets(job: dict[str, Any], private: dict[str, Any]) -> dict[str, str] | None:
    """What the job's clone step alone receives, over its handoff socket (pieter/handoff.py), when its source
    holds a password or token, or the repo has a deploy key; None when the clone needs no secret."""
    source, key = job["source"], private.get("deploy_key", "")
    if source and (key or url_secret(source)):
        return {"source": source, "deploy_key": key}
    return None


def job_inputs(files: JobFiles) -> list[Path]:
    """The files job.sh reads (the job's directory less what only the server uses)."""
    return sorted(p for p in files.job_dir.iterdir() if p.name != MASKS)


def secrets_to_mask(files: JobFiles) -> list[bytes]:
    try:
        return [v.encode() for v in json.loads((files.job_dir / MASKS).read_text())]
    except (OSError, ValueError):
        return []


def remove(state_dir: Path, job_id: int) -> None:
    """Remove a job's files; a workspace may be a link to where systemd keeps a dynamic user's state."""
    files = job_files(state_dir, job_id)
    for path in (files.job_dir, files.workspace, files.artifacts):
        remove_tree(path)
    files.handoff.unlink(missing_ok=True)  # left by a server that was killed while the job waited for it


def remove_workspace(state_dir: Path, job_id: int) -> None:
    remove_tree(job_files(state_dir, job_id).workspace)


def remove_tree(path: Path) -> None:
    """Remove a directory, or a link to one (systemd keeps a dynamic user's state under /var/lib/private)."""
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
        "PIETER_ARTIFACTS": str(files.artifacts),
    }


def artifacts(files: JobFiles) -> list[dict[str, Any]]:
    """The job's artifacts: regular files only (a link could point anywhere), by path relative to the dir."""
    found = []
    root = files.artifacts
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                found.append({"path": str(path.relative_to(root)), "size": path.stat().st_size})
    return sorted(found, key=lambda a: a["path"])


def artifact(files: JobFiles, relative: str) -> BinaryIO:
    """One artifact, open for reading; LookupError for anything but a regular file inside the job's artifacts.
    Opened one name at a time from the artifacts dir, following no link: the running job owns that dir and could
    swap a checked name for a link to / before a second open. Only the dir itself is resolved (systemd's link)."""
    *parents, name = relative.split("/")
    if any(part in ("", ".", "..") or "\0" in part for part in (*parents, name)):
        raise LookupError(relative)
    try:
        fd = os.open(files.artifacts.resolve(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for part in parents:
            fd = open_below(fd, part, os.O_DIRECTORY)
        fd = open_below(fd, name, os.O_NONBLOCK)  # a FIFO opens at once, to be refused below, not wait for a writer
    except OSError:
        raise LookupError(relative) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LookupError(relative)
    return os.fdopen(fd, "rb", buffering=0)


def open_below(directory: int, name: str, flags: int) -> int:
    """Open `name` in the open `directory` for reading unless it is a link, and close `directory`."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, dir_fd=directory)
    finally:
        os.close(directory)


def disk_usage(path: Path) -> int:
    """Bytes used by the jobs' directories below `path`, each followed if it is systemd's link to a dynamic
    user's state, nothing else followed (blocking: run it off the event loop)."""
    total = 0
    for entry in path.iterdir() if path.is_dir() else ():
        for directory, _, names in os.walk(entry.resolve()):
            for name in names:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except OSError:
                    pass
    return total
