"""Configuration: file < environment < flags, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture_mail.config import load_settings
from nurture_mail.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nurture.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path):
    s = load_settings(env={}, cwd=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'nurture.db'}"
    assert s.smtp.url is None
    assert s.smtp.starttls == "required"
    assert s.default_timezone == "UTC"
    assert s.now is None


def test_file_then_environment_then_flag(tmp_path):
    path = write(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n[smtp]\nmax_connections = 3\n')
    from_file = load_settings(path, env={})
    assert from_file.database_url == f"sqlite:///{tmp_path.resolve() / 'from-file.db'}"
    assert from_file.smtp.max_connections == 3

    env = {"NURTURE_DATABASE_URL": "sqlite:////tmp/from-env.db", "NURTURE_SMTP_MAX_CONNECTIONS": "5"}
    from_env = load_settings(path, env=env)
    assert from_env.database_url == "sqlite:////tmp/from-env.db"
    assert from_env.smtp.max_connections == 5

    from_flag = load_settings(path, env=env, database_url="sqlite:////tmp/from-flag.db")
    assert from_flag.database_url == "sqlite:////tmp/from-flag.db"
    assert from_flag.smtp.max_connections == 5


def test_now_from_flag_beats_environment(tmp_path):
    s = load_settings(env={"NURTURE_NOW": "2027-01-01T00:00:00Z"}, cwd=tmp_path, now="2027-03-01T12:00:00+01:00")
    assert s.now.isoformat() == "2027-03-01T11:00:00+00:00"
    s = load_settings(env={"NURTURE_NOW": "2027-01-01"}, cwd=tmp_path)
    assert s.now.isoformat() == "2027-01-01T00:00:00+00:00"


def test_bad_now_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--now: bad time 'yesterday'"):
        load_settings(env={}, cwd=tmp_path, now="yesterday")


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, '[smtp]\nurll = "smtp://x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert str(err.value) == f"{path}: unknown key 'urll' in [smtp] (did you mean 'url'?)"


def test_unknown_section(tmp_path):
    path = write(tmp_path, "[smpt]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[smpt\] \(did you mean \[smtp\]\?\)"):
        load_settings(path, env={})


def test_wrong_type_names_the_source(tmp_path):
    with pytest.raises(ConfigError, match=r"\$NURTURE_SMTP_RATE_PER_MINUTE: \[smtp\] rate_per_minute must be a whole number"):
        load_settings(env={"NURTURE_SMTP_RATE_PER_MINUTE": "fast"}, cwd=tmp_path)


def test_broken_toml_is_reported_with_the_file(tmp_path):
    path = write(tmp_path, "[smtp\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(path, env={})


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_secrets_are_never_shown(tmp_path):
    env = {
        "NURTURE_SMTP_URL": "smtp://dana:hunter2@smtp.example.com:587",
        "NURTURE_UNSUBSCRIBE_SECRET": "s3cr3t-value",
    }
    s = load_settings(env=env, cwd=tmp_path)
    shown = repr(s) + str(s.describe())
    assert "hunter2" not in shown
    assert "s3cr3t-value" not in shown
    assert s.smtp.url.reveal() == "smtp://dana:hunter2@smtp.example.com:587"
    assert s.describe()["smtp_url"] == "smtp://dana:***@smtp.example.com:587"


def test_bad_timezone_and_sender(tmp_path):
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        load_settings(env={"NURTURE_DEFAULTS_TIMEZONE": "Mars/Olympus"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"\[sender\] from must be an address"):
        load_settings(env={"NURTURE_SENDER_FROM": "Dana"}, cwd=tmp_path)
