"""A job's files on disk: artifacts served only from inside their directory, disk usage through systemd's links."""

import socket
from pathlib import Path

import pytest

from pieter import artifacts, workspaces


@pytest.fixture
def files(tmp_path: Path):
    files = workspaces.job_files(tmp_path, 7)
    private = tmp_path / "private" / "artifacts-7"  # where systemd keeps a dynamic user's state
    (private / "sub").mkdir(parents=True)
    (private / "sub" / "report.txt").write_bytes(b"x" * 10_000)
    (private / "escape").symlink_to("/etc/hostname")
    files.artifacts.parent.mkdir(parents=True)
    files.artifacts.symlink_to(private)
    return files


def test_artifacts_lists_regular_files_only(files):
    assert artifacts.listing(files) == [{"path": "sub/report.txt", "size": 10_000}]


@pytest.mark.parametrize("path", ["escape", "../../etc/hostname", "/etc/hostname", "sub", "", "nope"])
def test_nothing_outside_is_served(files, path):
    with pytest.raises(LookupError):
        artifacts.open_artifact(files, path)


def test_disk_usage_follows_systemds_links(files, tmp_path):
    assert workspaces.disk_usage(tmp_path / "artifacts") >= 10_000
    assert workspaces.disk_usage(tmp_path / "nowhere") == 0


def test_remove_takes_the_linked_directory_too(files, tmp_path):
    workspaces.remove_all(tmp_path, 7)
    assert not files.artifacts.exists() and not (tmp_path / "private" / "artifacts-7").exists()


def test_remove_takes_a_stale_handoff_socket(tmp_path):
    files = workspaces.job_files(tmp_path, 3)
    files.handoff.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(files.handoff))  # what a killed server leaves
    workspaces.remove_all(tmp_path, 3)
    assert not files.handoff.exists()


def test_an_earlier_jobs_files_are_found_and_never_merged_into(files, tmp_path):
    """Ids restart after a Redis reset: what job 7 left is found, `make` refuses it, and once removed a new job 7
    starts empty."""
    assert workspaces.left_behind(files) and artifacts.any_left(files)
    with pytest.raises(FileExistsError):
        workspaces.make(tmp_path, 7, make_workspace=True)
    workspaces.remove_all(tmp_path, 7)
    assert not workspaces.left_behind(files)
    made = workspaces.make(tmp_path, 7, make_workspace=True)
    assert made.job_dir.is_dir() and not artifacts.any_left(made) and not any(made.workspace.iterdir())
