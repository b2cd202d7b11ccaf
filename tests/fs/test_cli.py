"""The client commands as a user meets them: login, vault, status, umount."""

from __future__ import annotations

import json
import os
import stat

import pytest

from gobi.fs.cli import parse_size

from .mounts import gobi


def test_parse_size():
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("1.5k") == 1536
    assert parse_size("1000") == 1000
    with pytest.raises(Exception):
        parse_size("ten gigs")


def test_login_stores_a_private_token(user, server):
    path = user.home / "config" / "gobi" / "credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert creds["default"] == server.url
    assert creds["servers"][server.url]["username"] == user.name
    r = gobi("login", server.url, "-u", user.name, "--password-stdin", env=user.env,
             input="wrong password\n", check=False)
    assert r.returncode == 1 and "login failed" in r.stderr


def test_vaults_and_status(user, vault, mnt):
    out = gobi("vault", "list", env=user.env).stdout
    assert vault in out
    out = gobi("status", str(mnt.path), env=user.env).stdout
    assert "online" in out and "pending uploads: 0" in out
    st = json.loads(gobi("status", "--json", str(mnt.path), env=user.env).stdout)
    assert st["vault"] == vault and st["online"] is True
    (mnt.path / "f").write_text("x")
    assert gobi("umount", str(mnt.path), env=user.env).returncode == 0
    mnt._wait_exit()
    r = gobi("status", str(mnt.path), env=user.env, check=False)
    assert r.returncode == 1 and "not a running gobi mount" in r.stderr


def test_mount_errors_are_clear(user, vault, tmp_path):
    r = gobi("mount", "no-such-vault", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
             env=user.env, check=False)
    assert r.returncode != 0 and "no vault 'no-such-vault'" in r.stderr
    r = gobi("mount", vault, str(tmp_path / "missing"), env=user.env, check=False)
    assert r.returncode != 0 and "not a directory" in r.stderr
