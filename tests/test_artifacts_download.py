"""Downloading artifacts: any name a job can write, and never through a link the job swaps in meanwhile (the
file is opened one name at a time following no link, then served from that open file)."""

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from pieter import artifacts, workspaces
from tests.conftest import wait_for_job
from tests.test_local_runner import add

NAMES = {"my report.txt": b"spaced\n", "café.txt": b"caf\xc3\xa9\n", "sub/dir/x.txt": b"x\x00y\n"}


def test_names_with_spaces_non_ascii_letters_and_dirs_are_served(api):
    script = (b'cd "$PIETER_ARTIFACTS"\nmkdir -p sub/dir\nprintf \'spaced\\n\' > "my report.txt"\n'
              b"printf 'caf\\303\\251\\n' > caf\xc3\xa9.txt\nprintf 'x\\000y\\n' > sub/dir/x.txt\n")  # fmt: skip
    job_id = api.patch(add(api, "demo", "names", script)).json()["id"]
    assert wait_for_job(api, job_id)["result"] == "success", api.get(f"/jobs/{job_id}/log").text
    listed = api.get(f"/jobs/{job_id}/artifacts").json()["artifacts"]
    assert {a["path"]: a["size"] for a in listed} == {name: len(data) for name, data in NAMES.items()}
    for name, data in NAMES.items():
        response = api.get(f"/jobs/{job_id}/artifacts/{quote(name)}")
        assert response.status_code == 200, (name, response.text)
        assert response.content == data
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(len(data))
    disposition = api.get(f"/jobs/{job_id}/artifacts/caf%C3%A9.txt").headers["content-disposition"]
    assert disposition == "attachment; filename=\"caf_.txt\"; filename*=UTF-8''caf%C3%A9.txt"


@pytest.mark.parametrize("path", ["%2e%2e%2fcaf%C3%A9.txt", "%2e%2e/%2e%2e/etc/passwd", "sub%2f..%2f..%2fetc%2fpasswd",
                                  "%2Fetc%2Fpasswd", "caf%C3%A9.txt%00", "%00", "%ff", "sub/dir"])  # fmt: skip
def test_encoded_escapes_and_nuls_are_404_json(api, path):
    job_id = api.patch(add(api, "demo", "one", b'echo 1 > "$PIETER_ARTIFACTS/caf\xc3\xa9.txt"\n')).json()["id"]
    wait_for_job(api, job_id)
    response = api.get(f"/jobs/{job_id}/artifacts/{path}")
    assert response.status_code == 404, response.text
    assert response.json()["error"].startswith(f"job {job_id} has no artifact ")


@pytest.fixture
def files(tmp_path: Path):
    """A job's artifacts behind systemd's link, with links and a FIFO a job could make, beside plain files."""
    files = workspaces.job_files(tmp_path, 7)
    private = tmp_path / "private" / "artifacts-7"
    (private / "sub").mkdir(parents=True)
    (private / "sub" / "plain.txt").write_bytes(b"plain\n")
    (private / "top.txt").write_bytes(b"top\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret\n")
    (private / "dirlink").symlink_to(outside)  # a directory swapped for a link after a name check
    (private / "sub" / "filelink").symlink_to(outside / "secret")
    (private / "sub" / "relative").symlink_to("../top.txt")
    os.mkfifo(private / "fifo")  # opening it blocking would wait forever for a writer
    files.artifacts.parent.mkdir(parents=True)
    files.artifacts.symlink_to(private)
    return files


def test_plain_files_are_opened_through_systemds_link(files):
    for path, data in [("top.txt", b"top\n"), ("sub/plain.txt", b"plain\n")]:
        with artifacts.open_artifact(files, path) as found:
            assert found.read() == data


def test_a_link_swapped_in_after_the_open_is_not_followed(files, tmp_path):
    """The race: the job replaces a checked directory by a link to elsewhere; what was opened is what is read."""
    private = files.artifacts.resolve()
    (tmp_path / "outside" / "plain.txt").write_bytes(b"secret\n")
    with artifacts.open_artifact(files, "sub/plain.txt") as found:
        (private / "sub").rename(private / "was-sub")
        (private / "sub").symlink_to(tmp_path / "outside")
        assert found.read() == b"plain\n"


@pytest.mark.parametrize("path", ["dirlink/secret", "sub/filelink", "sub/relative", "fifo", "sub", "..", ".",
                                  "../outside/secret", "sub/../top.txt", "./top.txt", "sub//plain.txt",
                                  "sub/plain.txt/", "/etc/hostname", "/top.txt", "", "top.txt\0",
                                  "\0", "missing", "sub/missing/x"])  # fmt: skip
def test_links_fifos_and_escapes_are_refused(files, path):
    with pytest.raises(LookupError):
        artifacts.open_artifact(files, path)


def test_refusals_leave_no_file_open(files):
    before = len(os.listdir("/proc/self/fd"))
    for path in ["dirlink/secret", "sub/filelink", "fifo", "sub", "missing"]:
        with pytest.raises(LookupError):
            artifacts.open_artifact(files, path)
    assert len(os.listdir("/proc/self/fd")) == before
