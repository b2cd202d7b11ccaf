"""The server's storage end to end: encrypted by default, `gobi keys rotate` next to a
running server, `gobi storage status`, and encryption off only when configured so."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tests.servers import Api, ServerProcess, register


def gobi(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gobi", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def upload(server: ServerProcess, data: bytes) -> tuple[Api, str, str]:
    _, token = register(server)
    api = Api(server.api, token)
    vault = api.post("/vaults", json={"name": "v"}).json()["id"]
    h = hashlib.sha256(data).hexdigest()
    assert api.put(f"/vaults/{vault}/chunks/{h}", content=data).status_code == 201
    return api, vault, h


def stored_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_default_storage_is_encrypted_and_keys_rotate_under_a_live_server(tmp_path):
    data = b"the quick brown fox " * 5000
    server = ServerProcess(tmp_path / "d").start()
    try:
        api, vault, h = upload(server, data)
        files = stored_files(tmp_path / "d" / "blobs")
        assert any(k.startswith("_keys/") for k in files)
        chunk_files = [v for k, v in files.items() if k.startswith(vault)]
        assert len(chunk_files) == 1 and b"quick brown fox" not in chunk_files[0]

        r = gobi("keys", "rotate", "--retire-old", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 0, r.stderr
        assert "re-wrapped 1 data keys of 1 vaults" in r.stdout and "retired master keys: k1" in r.stdout
        assert stored_files(tmp_path / "d" / "blobs")[next(k for k in files if k.startswith(vault))] == chunk_files[0]

        assert api.get(f"/vaults/{vault}/chunks/{h}").content == data   # the running server
        _, vault2, h2 = upload(server, b"a new vault after rotation")   # wraps with the new key
        api.close()
    finally:
        server.stop()
    server = ServerProcess(tmp_path / "d").start()                      # only k2 is left
    try:
        _, token = register(server)
        r = gobi("storage", "status", "--json", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 0, r.stderr
        status = json.loads(r.stdout)
        assert status["storage"].startswith("encrypted(local://")
        assert status["targets"][0]["reachable"] and status["targets"][0]["objects"] == 2
    finally:
        server.stop()
    keys = json.loads((tmp_path / "d" / "master.key").read_text())
    assert sorted(keys["master_keys"]) == ["k2"]
    rings = [p.read_text() for p in (tmp_path / "d" / "blobs" / "_keys").rglob("*") if p.is_file()]
    assert len(rings) == 2 and all('"master": "k2"' in ring for ring in rings)


def test_encryption_off_is_an_explicit_setting(tmp_path):
    server = ServerProcess(tmp_path / "d", env={"GOBI_STORAGE_ENCRYPTION": "false"}).start()
    try:
        api, vault, h = upload(server, b"plain on purpose " * 100)
        api.close()
    finally:
        server.stop()
    files = stored_files(tmp_path / "d" / "blobs")
    assert not any(k.startswith("_keys/") for k in files)
    assert any(b"plain on purpose" in v for v in files.values())


def test_storage_status_reports_a_down_replica(tmp_path):
    (tmp_path / "share").mkdir()
    setting = f"replicated(local://{tmp_path}/a, nfs://{tmp_path}/share, quorum=1)"
    env = {"GOBI_STORAGE": setting}
    server = ServerProcess(tmp_path / "d", env=env).start()
    try:
        api, vault, h = upload(server, b"replicated chunk")
        api.close()
    finally:
        server.stop()
    r = gobi("storage", "status", "--data-dir", str(tmp_path / "d"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replicated(encrypted(local://" in r.stdout
    (tmp_path / "share").rename(tmp_path / "unmounted")
    (tmp_path / "share").mkdir()           # the mount point without the share: nothing there
    r = gobi("storage", "status", "--json", "--data-dir", str(tmp_path / "d"), env=env)
    status = json.loads(r.stdout)
    assert [t["lag"] for t in status["targets"]] == [0, 1]   # the chunk (keyrings are per target)
    r = gobi("storage", "repair", "--data-dir", str(tmp_path / "d"), env=env)
    assert r.returncode == 0 and "copied 1" in r.stdout, r.stdout + r.stderr
    status = json.loads(gobi("storage", "status", "--json", "--data-dir", str(tmp_path / "d"), env=env).stdout)
    assert [t["lag"] for t in status["targets"]] == [0, 0]
