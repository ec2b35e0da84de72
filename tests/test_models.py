"""Checks on names, sources, parameters and settings: plain functions, no server."""

import pytest

from pieter.errors import BadRequest
from pieter.models import check_env, check_name, check_settings, check_source, redact_source


@pytest.mark.parametrize("name", ["pieter", "build.sh", "a", "A_b-c.d", "x" * 64, "9lives"])
def test_good_names(name):
    assert check_name("repo", name) == name


@pytest.mark.parametrize("name", ["", "..", "a..b", ".x", "_x", "-x", "x" * 65, "a/b", "a b", "é", "a\x00"])
def test_bad_names(name):
    with pytest.raises(BadRequest, match="invalid repo name"):
        check_name("repo", name)


@pytest.mark.parametrize(
    "source",
    ["https://example.com/x.git", "git@github.com:agrrh/pieter-ci.git", "/srv/git/x", "file:///srv/x",
     "ssh://git@example.com:2222/x.git", "git://example.com/x", "host:/srv/x", "", "http://gitea.lan:3000/team/x.git"],
)  # fmt: skip
def test_good_sources(source):
    assert check_source(source) == source


@pytest.mark.parametrize(
    "source",
    ["-u", "-x@host:path", "--upload-pack=x", "ext::sh -c x", "EXT::x", "fd::17", "host::x", "a\nb", " x", 5,
     "ftp://example.com/x", "relative/path", "./x", "/srv/x::y"],
)  # fmt: skip
def test_bad_sources(source):
    with pytest.raises(BadRequest):
        check_source(source)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "ld_library_path", "BASH_ENV", "ENV", "PYTHONPATH", "PIETER_JOB_ID"])
def test_hook_variables_are_refused(name):
    with pytest.raises(BadRequest, match="not allowed"):
        check_env({name: "x"})


def test_plain_parameters_pass():
    assert check_env({"BRANCH": "main", "_x1": ""}) == {"BRANCH": "main", "_x1": ""}


def test_settings_are_checked_and_cleared():
    assert check_settings({"timeout": ["60"], "cpu_quota": ["150%"], "memory_max": [""]}) == {
        "timeout": "60",
        "cpu_quota": "150%",
        "memory_max": "",
    }
    with pytest.raises(BadRequest, match="timeout"):
        check_settings({"timeout": ["0"]})


def test_redact_source():
    assert redact_source("https://bob:hunter2@example.com/x.git") == "https://bob:***@example.com/x.git"
    assert redact_source("git@github.com:a/b.git") == "git@github.com:a/b.git"
    assert redact_source("https://ghp_t0ken@github.com/a/b.git") == "https://***@github.com/a/b.git"
    assert redact_source("ssh://git@example.com/a/b.git") == "ssh://git@example.com/a/b.git"
    assert redact_source("https://example.com/a@b.git") == "https://example.com/a@b.git"
