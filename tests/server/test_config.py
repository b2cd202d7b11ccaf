"""Configuration precedence (flags > GOBI_* env > TOML > defaults) and the key file."""

from __future__ import annotations

import os
import stat

import pytest
from pydantic import ValidationError

from gobi.drivers.keys import KeyFile, KeyFileError
from gobi.server.config import ServerConfig, parse_duration


def test_precedence(tmp_path, monkeypatch):
    toml = tmp_path / "gobi.toml"
    toml.write_text('port = 9000\nhost = "127.0.0.2"\nevent_retention = "30d"\nopen_registration = false\n')
    monkeypatch.setenv("GOBI_PORT", "9100")
    cfg = ServerConfig.load(toml, data_dir=tmp_path / "data")
    assert cfg.port == 9100                      # env beats the file
    assert cfg.host == "127.0.0.2"               # the file beats the default
    assert cfg.event_retention == 30 * 86400
    assert cfg.open_registration is False
    cfg = ServerConfig.load(toml, port=9200)
    assert cfg.port == 9200                      # flags beat env
    monkeypatch.delenv("GOBI_PORT")
    assert ServerConfig.load().port == 8080
    assert ServerConfig.load().event_retention == 365 * 86400


def test_bad_config_is_a_clear_error(tmp_path):
    toml = tmp_path / "gobi.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ValidationError, match="prot"):
        ServerConfig.load(toml)
    toml.write_text('event_retention = "forever"\n')
    with pytest.raises(ValidationError, match="duration"):
        ServerConfig.load(toml)
    with pytest.raises(FileNotFoundError):
        ServerConfig.load(tmp_path / "missing.toml")


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("30s", 30), ("15m", 900), ("12h", 43200),
                                           ("365d", 365 * 86400), ("2w", 14 * 86400), (7, 7), ("7", 7)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_key_file_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "k" / "master.key"
    first = KeyFile.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyFile.load_or_create(path)
    assert again.naming_secret == first.naming_secret and again.current_key == first.current_key
    assert "naming" not in repr(first) and first.current_key.hex() not in repr(first)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyFile.load(path)
    os.chmod(path, 0o600)
    path.write_text("{not json")
    with pytest.raises(KeyFileError):
        KeyFile.load(path)


def test_server_refuses_a_bad_config_with_exit_78_and_no_traceback(tmp_path):
    import subprocess
    import sys

    toml = tmp_path / "gobi.toml"
    toml.write_text("prot = 1\n")
    out = subprocess.run([sys.executable, "-m", "gobi", "server", "--config", str(toml),
                          "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert "prot" in out.stderr and "Traceback" not in out.stderr


def test_responses_carry_a_date_header(server):
    import email.utils

    import httpx

    r = httpx.get(server.url + "/health")
    assert email.utils.parsedate_to_datetime(r.headers["date"]) is not None
