"""A job's artifacts, the files it leaves in $PIETER_ARTIFACTS: listed, opened for download, and capped at
PIETER_ARTIFACTS_MAX_BYTES when it ends.

The running job owns its artifacts directory and may swap any name in it for a link at any moment, so nothing
here follows a link, and a file is served from the descriptor that was checked, never opened again by name.
Everything here but `any_left` blocks: call it off the event loop.
"""

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from pieter.workspaces import JobFiles, remove_tree


def listing(files: JobFiles) -> list[dict[str, Any]]:
    """The job's artifacts: regular files only (a link could point anywhere), by path relative to the dir."""
    found = []
    root = files.artifacts
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                found.append({"path": str(path.relative_to(root)), "size": path.stat().st_size})
    return sorted(found, key=lambda a: a["path"])


def any_left(files: JobFiles) -> bool:
    """Whether the job left any artifact (one read of the dir, cheap enough for the event loop)."""
    try:
        with os.scandir(files.artifacts) as entries:
            return any(True for _ in entries)
    except OSError:  # none made (systemd's unit makes the dir)
        return False


def remove_if_over(files: JobFiles, limit: int) -> int:
    """Remove the job's artifacts when they add up to more than `limit` bytes; their size if they were removed,
    else 0."""
    size: int = sum(a["size"] for a in listing(files))
    if size <= limit:
        return 0
    remove_tree(files.artifacts)
    return size


def open_artifact(files: JobFiles, relative: str) -> BinaryIO:
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
