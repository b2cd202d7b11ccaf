"""Running a mount as a service (what deploy/ relies on): the source mount(8) shows, systemd's
readiness protocol, libfuse's own words when the kernel mount fails, and credentials from a
file of the operator's choice."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from .mounts import Mount, force_unmount, gobi, is_mounted

GUARD = 60.0


def findmnt(path) -> dict:
    out = subprocess.run(["findmnt", "-J", "-o", "SOURCE,FSTYPE,TARGET", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["filesystems"][0]


def test_source_is_gobi_vault_id_or_the_fsname_given(user, vault, tmp_path):
    name = user.api.get(f"/vaults/{vault}").json()["name"]
    m = Mount(user, name, tmp_path / "byname", tmp_path / "c1").start()
    try:
        assert findmnt(m.path) == {"source": f"gobi:{vault}", "fstype": "fuse.gobi",
                                   "target": str(m.path)}
    finally:
        m.stop()
    m = Mount(user, vault, tmp_path / "fstab", tmp_path / "c2", extra=("-o", "fsname=docs")).start()
    try:
        assert findmnt(m.path)["source"] == "docs"      # an fstab line's own source
    finally:
        m.stop()
    r = gobi("mount", vault, str(tmp_path), "-o", "subtype=x", env=user.env, check=False)
    assert r.returncode == 2 and "subtype" in r.stderr


def test_a_failing_kernel_mount_says_why(user, vault, tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    for extra in ([], ["--foreground"]):
        r = gobi("mount", vault, str(mp), "--cache-dir", str(tmp_path / "c"), *extra,
                 "-o", "no_such_fuse_option", env=user.env, check=False, timeout=GUARD)
        assert r.returncode == 1
        assert f"cannot mount at {mp}" in r.stderr and "no_such_fuse_option" in r.stderr, r.stderr
        assert "unknown option" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not is_mounted(mp)


def test_credentials_file_and_bare_token(user, vault, tmp_path):
    creds = tmp_path / "creds" / "docs.json"
    r = gobi("login", user.server.url, "-u", user.name, "--password-stdin", "--credentials",
             str(creds), env=user.env, input="correct horse battery\n")
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    # A user with no login of its own mounts with that file only.
    env = {**user.env, "XDG_CONFIG_HOME": str(tmp_path / "empty-config")}
    plain = User_(user, env)
    m = Mount(plain, vault, tmp_path / "m", tmp_path / "c", extra=("--credentials", str(creds))).start()
    try:
        (m.path / "via-file.txt").write_text("ok")
        m.sync()
    finally:
        m.stop()
    token_file = tmp_path / "token"
    token_file.write_text(user.token + "\n")
    token_file.chmod(0o600)
    m = Mount(plain, vault, tmp_path / "m2", tmp_path / "c2",
              extra=("--credentials", str(token_file), "--server", user.server.url)).start()
    try:
        assert (m.path / "via-file.txt").read_text() == "ok"
    finally:
        m.stop()
    r = gobi("mount", vault, str(tmp_path / "m2"), "--credentials", str(token_file), env=env, check=False)
    assert r.returncode == 1 and "holds only a token: say which server with --server URL" in r.stderr
    r = gobi("mount", vault, str(tmp_path / "m2"), "--credentials", str(tmp_path / "missing"),
             env=env, check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = gobi("vault", "list", "--credentials", str(creds), env=env)
    assert vault in r.stdout


class User_:
    """The same account seen from another environment (no credentials of its own)."""

    def __init__(self, user, env):
        self.env = env
        self.server = user.server


def test_foreground_mount_tells_systemd_it_is_ready(user, vault, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(GUARD)
    mp = tmp_path / "mp"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "gobi", "mount", "--foreground", vault, str(mp),
                             "--cache-dir", str(tmp_path / "c")],
                            env={**user.env, "NOTIFY_SOCKET": str(sock_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        messages = []
        while not any("READY=1" in msg for msg in messages):
            messages.append(sock.recv(4096).decode())
        assert is_mounted(mp)                      # ready means mounted
        assert any(line.startswith("STATUS=mounted") for msg in messages for line in msg.splitlines())
        r = gobi("umount", str(mp), env=user.env)
        assert r.returncode == 0
        while not any("STOPPING=1" in msg for msg in messages):
            messages.append(sock.recv(4096).decode())
        assert proc.wait(GUARD) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(GUARD)
        force_unmount(mp)
        sock.close()
    # The daemonising form never talks to systemd (its child is not the main process).
    sock2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock2.bind(str(tmp_path / "notify2.sock"))
    sock2.setblocking(False)
    m = Mount(User_(user, {**user.env, "NOTIFY_SOCKET": str(tmp_path / "notify2.sock")}), vault,
              tmp_path / "mp2", tmp_path / "c2").start()
    try:
        try:                # READY would have come before start() returned
            got = sock2.recv(4096)
        except BlockingIOError:
            got = b""
        assert got == b""
    finally:
        m.stop()
        sock2.close()
