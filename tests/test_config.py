"""Settings: defaults < config file < environment, and clear errors for values that cannot be used."""

from pathlib import Path

import pytest

from pieter.config import NOT_SETTINGS, Config, ConfigError, load


def test_defaults_without_a_file():
    config = load({"PIETER_CONFIG": "/nonexistent"})
    assert config.redis == "redis://127.0.0.1:6379/0"
    assert (config.api_host, config.api_port, config.runner, config.keep_jobs) == ("127.0.0.1", 8000, "auto", 50)


def test_environment_wins_over_file(tmp_path: Path):
    conf = tmp_path / "pieter.conf"
    conf.write_text('# comment\nPIETER_DB_HOST=10.0.0.5\nPIETER_DB_PORT="6380"\nPIETER_MAX_JOBS=4\n')
    config = load({"PIETER_CONFIG": str(conf), "PIETER_MAX_JOBS": "2"})
    assert config.redis == "redis://10.0.0.5:6380/0"
    assert config.max_jobs == 2


def test_redis_url_wins_over_host_and_port():
    config = load({"PIETER_CONFIG": "/nonexistent", "PIETER_REDIS_URL": "unix:///run/r.sock", "PIETER_DB_PORT": "1"})
    assert config.redis == "unix:///run/r.sock"


@pytest.mark.parametrize(
    ("key", "value"),
    [("PIETER_MAX_JOBS", "many"), ("PIETER_MAX_JOBS", "0"), ("PIETER_RUNNER", "docker"), ("PIETER_KEEP_JOBS", "0")],
)
def test_bad_values_are_named(key, value):
    with pytest.raises(ConfigError, match=key):
        load({"PIETER_CONFIG": "/nonexistent", key: value})


def test_shipped_config_lists_every_setting():
    shipped = (Path(__file__).parent.parent / "packaging" / "pieter.conf").read_text()
    for field in Config.__dataclass_fields__.keys() - NOT_SETTINGS:
        assert f"PIETER_{field.upper()}=" in shipped, field


def test_an_unreadable_file_is_skipped_for_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    conf = tmp_path / "pieter.conf"
    conf.write_text("PIETER_MAX_JOBS=4\n")

    def refuse(self: Path) -> str:  # what a user meets reading root's mode-600 file (root reads anything)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    config = load({"PIETER_CONFIG": str(conf), "PIETER_URL": "http://ci:8000"})
    assert config.url == "http://ci:8000" and config.max_jobs == Config.max_jobs


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"PIETER_API_PORT": "8102"}, "http://127.0.0.1:8102"),
        ({"PIETER_API_HOST": "0.0.0.0", "PIETER_API_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"PIETER_API_HOST": "::1"}, "http://[::1]:8000"),
        ({"PIETER_API_PORT": "8102", "PIETER_URL": "https://ci.example.com"}, "https://ci.example.com"),
    ],
)
def test_the_clients_server_is_this_hosts_own_unless_set(settings, url):
    """What `pieter run` (and a schedule's timer) talks to follows the server's own address."""
    assert load({"PIETER_CONFIG": "/nonexistent", **settings}).url == url
