"""/etc/fstab support: deploy/mount.fuse.gobi under a real mount(8), against a real server.

Each test gets a ``HostSandbox`` (tests/deploy/hostsandbox.py) with gobi installed by
``deploy/install.sh --client-only``, which puts the helper at /sbin/mount.fuse.gobi as on a
host. The sandbox's own /etc/fstab holds the lines under test, ``mount -a`` (or
``mount -t fuse.gobi``, or systemd's fstab generator) mounts them as real FUSE mounts of
a ``gobi server`` running on the host's 127.0.0.1, and what a user sees is checked: files
written through the mount reach the server, a second ``mount -a`` is a no-op, ``umount``
works, bad lines fail with a message that says why and leave nothing behind. Killing the
sandbox takes every mount daemon with it.
"""

from __future__ import annotations

import json
import shlex
import time

import httpx
import pytest

from tests.servers import ServerProcess, register

from tests.needs import missing

from .hostsandbox import HostSandbox, usable



@pytest.fixture(autouse=True)
def _sandbox_possible():
    if (why := usable()) is not None:
        missing(why)

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("fstab-server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def account(server):
    """A fresh user with a vault named docs: (username, token, vault id)."""
    name, token = register(server)
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}) as c:
        vault = c.post("/vaults", json={"name": "docs"}).json()["id"]
    return name, token, vault


@pytest.fixture
def host(tmp_path):
    sb = HostSandbox(tmp_path / "host").start()
    try:
        sb.install_gobi("--client-only")
        yield sb
    finally:
        sb.stop()


def login(host: HostSandbox, server: ServerProcess, name: str, user: str | None = None) -> None:
    host.run(f"gobi login {server.url} -u {name} --password-stdin", user=user, input=PASSWORD + "\n")


def mounts_at(host: HostSandbox, path: str) -> list[dict]:
    out = host.run(f"findmnt -J -o TARGET,FSTYPE,SOURCE,OPTIONS --mountpoint {shlex.quote(path)}",
                   check=False).stdout
    return json.loads(out)["filesystems"] if out.strip() else []


def on_server(server: ServerProcess, token: str, vault: str, path: str) -> bytes | None:
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        r = c.get(f"/vaults/{vault}/lookup", params={"path": path})
        if r.status_code == 404:
            return None
        return c.get(f"/vaults/{vault}/nodes/{r.json()['id']}/data").content


def daemon_pid(host: HostSandbox, mountpoint: str, user: str | None = None) -> int:
    return json.loads(host.run(f"gobi status --json {mountpoint}", user=user).stdout)["pid"]


def wait_gone(host: HostSandbox, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while host.run(f"test -d /proc/{pid}", check=False).returncode == 0:
        assert time.monotonic() < deadline, f"daemon {pid} still running"
        time.sleep(0.1)


def test_mount_a_mounts_the_fstab_line_and_a_second_run_is_a_noop(host, server, account):
    name, token, vault = account
    login(host, server, name)
    host.run("mkdir -p /srv/docs && cat > /etc/fstab",
             input="# gobi\ndocs  /srv/docs  fuse.gobi  _netdev,nofail,cache_size=64M,settle=0.2,noexec  0 0\n")
    r = host.run("mount -a")
    assert r.stderr == "", r.stderr
    [m] = mounts_at(host, "/srv/docs")
    assert m["fstype"] == "fuse.gobi" and m["source"] == f"gobi:{vault}"
    assert "noexec" in m["options"].split(",")

    host.run("echo 'through fstab' > /srv/docs/a.txt && gobi sync /srv/docs")
    assert on_server(server, token, vault, "a.txt") == b"through fstab\n"

    # At boot and after, mount -a runs again: the mounted line is left alone.
    host.run("mount -a")
    assert len(mounts_at(host, "/srv/docs")) == 1

    pid = daemon_pid(host, "/srv/docs")
    host.run("umount /srv/docs")
    assert mounts_at(host, "/srv/docs") == []
    wait_gone(host, pid)

    # `mount MOUNTPOINT` finds the line in fstab.
    host.run("mount /srv/docs")
    assert host.read("/srv/docs/a.txt") == "through fstab\n"
    host.run("umount /srv/docs")


def test_setuid_line_mounts_with_that_users_login_and_cache(host, server, account):
    """setuid=USER: the daemon runs as USER with USER's login; root needs none."""
    name, token, vault = account
    # A non-root mount needs /dev/fuse open to users (Debian's udev rule: 0666); this
    # machine's is 0600, so the sandbox gets its own node (never chmod the host's).
    host.run("umount /dev/fuse && rm /dev/fuse && mknod -m 0666 /dev/fuse c 10 229")
    host.run("useradd -m alice && mkdir /home/alice/Docs && chown alice: /home/alice/Docs")
    login(host, server, name, user="alice")
    host.run("cat > /etc/fstab",
             input="docs /home/alice/Docs fuse.gobi _netdev,setuid=alice,cache_size=64M,settle=0.2 0 0\n")
    host.run("mount -a")
    [m] = mounts_at(host, "/home/alice/Docs")
    uid = host.run("id -u alice").stdout.strip()
    assert f"user_id={uid}" in m["options"]
    pid = daemon_pid(host, "/home/alice/Docs", user="alice")
    assert host.run(f"stat -c %u /proc/{pid}").stdout.strip() == uid
    assert host.run("ls /home/alice/.cache/gobi").stdout.strip()       # alice's cache
    assert host.run("test -e /root/.config/gobi/credentials.json", check=False).returncode != 0

    host.run("echo mine > /home/alice/Docs/alice.txt && gobi sync /home/alice/Docs", user="alice")
    assert on_server(server, token, vault, "alice.txt") == b"mine\n"
    host.run("mount -a")                                   # idempotent for setuid lines too
    assert len(mounts_at(host, "/home/alice/Docs")) == 1
    host.run("umount /home/alice/Docs")
    wait_gone(host, pid)


def test_mount_t_fuse_gobi_and_the_fuse_hash_form(host, server, account):
    name, token, vault = account
    login(host, server, name)
    host.run("mkdir -p /srv/a /srv/b")
    host.run(f"mount -t fuse.gobi -o server={server.url},cache_size=32M,settle=0.2 docs /srv/a")
    # The form of tools that only know type "fuse" (mount.fuse3 runs the named helper).
    host.run("mount -t fuse -o cache_size=32M,settle=0.2 'mount.fuse.gobi#docs' /srv/b")
    assert [m["fstype"] for m in mounts_at(host, "/srv/a") + mounts_at(host, "/srv/b")] == ["fuse.gobi"] * 2
    host.run("echo one > /srv/a/one.txt && gobi sync /srv/a")
    assert on_server(server, token, vault, "one.txt") == b"one\n"
    host.run("umount /srv/a /srv/b")


def test_bad_lines_fail_with_a_reason_and_leave_nothing_behind(host, server, account):
    name, token, vault = account
    login(host, server, name)
    host.run("mkdir -p /srv/x /srv/good")
    cases = {
        "mount -t fuse.gobi nosuch /srv/x": (32, "no vault 'nosuch'"),
        "mount -t fuse.gobi -o bogus docs /srv/x": (1, "unknown option 'bogus'"),
        "mount -t fuse.gobi -o max_read=65536 docs /srv/x": (1, "max_read is not supported"),
        "mount -t fuse.gobi -o setuid=nobody2 docs /srv/x": (1, "setuid=nobody2: no such user"),
        "mount -t fuse.gobi -o server=http://127.0.0.1:9 docs /srv/x": (32, "not logged in to http://127.0.0.1:9"),
        "mount -t fuse.gobi docs /srv/nonexistent": (32, "/srv/nonexistent"),
    }
    for cmd, (code, message) in cases.items():
        r = host.run(cmd, check=False)
        assert r.returncode == code and message in r.stderr, (cmd, r.returncode, r.stderr)
    # No daemon is left running from the failed attempts, no mount either.
    assert host.run("pgrep -f '[g]obi mount'", check=False).stdout == ""
    assert host.run("findmnt -t fuse.gobi", check=False).stdout == ""
    # sloppy (-s) drops unknown options instead
    r = host.run("mount -s -t fuse.gobi -o bogus,cache_size=32M docs /srv/x", check=False)
    assert r.returncode == 0 and "ignoring unknown option bogus" in r.stderr, r.stderr
    host.run("umount /srv/x")

    # mount -a: a broken line does not stop the good one, and says which line failed.
    host.run("cat > /etc/fstab", input="nosuch /srv/x fuse.gobi _netdev,nofail 0 0\n"
                                       "docs /srv/good fuse.gobi _netdev,nofail,cache_size=32M 0 0\n")
    r = host.run("mount -a", check=False)
    assert r.returncode != 0 and "no vault 'nosuch'" in r.stderr, r.stderr
    assert mounts_at(host, "/srv/x") == [] and len(mounts_at(host, "/srv/good")) == 1
    # Another vault over a mounted one is refused; the same vault again is a no-op.
    host.run("gobi vault create photos")
    r = host.run("mount -t fuse.gobi photos /srv/good", check=False)
    assert r.returncode == 32 and "already a gobi mount of another vault" in r.stderr, r.stderr
    host.run("mount -t fuse.gobi docs /srv/good")
    assert len(mounts_at(host, "/srv/good")) == 1
    host.run("umount /srv/good")


@pytest.fixture
def systemd_host(tmp_path):
    if (why := usable(systemd=True)) is not None:
        missing(why)
    sb = HostSandbox(tmp_path / "boot", systemd=True).start()
    try:
        sb.install_gobi("--client-only")
        yield sb
    finally:
        sb.stop()


def test_fstab_line_mounts_at_boot_through_systemd(systemd_host, server, account):
    """At boot systemd-fstab-generator turns the line into srv-docs.mount, pulled in by
    remote-fs.target after the network (_netdev); systemd runs mount(8) → the helper."""
    host = systemd_host
    name, token, vault = account
    login(host, server, name)
    host.run("mkdir -p /srv/docs && cat > /etc/fstab",
             input="docs /srv/docs fuse.gobi _netdev,nofail,cache_size=64M,settle=0.2 0 0\n")
    host.run("systemctl daemon-reload")                    # reruns the generators, as at boot
    unit = host.run("systemctl show srv-docs.mount -p After -p Type -p What").stdout
    props = dict(line.split("=", 1) for line in unit.splitlines())
    assert props["Type"] == "fuse.gobi" and props["What"] == "docs"
    assert "network-online.target" in props["After"].split()
    assert "remote-fs-pre.target" in props["After"].split()
    wants = host.run("systemctl show remote-fs.target -p Wants --value").stdout.split()
    assert "srv-docs.mount" in wants

    host.run("systemctl start remote-fs.target")           # what boot does
    # nofail: remote-fs.target does not wait for the mount (boot goes on); it follows.
    deadline = time.monotonic() + 60
    while (state := host.run("systemctl is-active srv-docs.mount", check=False).stdout.strip()) != "active":
        assert state == "activating" and time.monotonic() < deadline, \
            (state, host.run("journalctl -u srv-docs.mount --no-pager -o cat").stdout)
        time.sleep(0.1)
    [m] = mounts_at(host, "/srv/docs")
    assert m["fstype"] == "fuse.gobi"
    host.run("echo booted > /srv/docs/boot.txt && gobi sync /srv/docs")
    assert on_server(server, token, vault, "boot.txt") == b"booted\n"

    host.run("systemctl stop srv-docs.mount")
    assert mounts_at(host, "/srv/docs") == []
    assert host.run("systemctl show srv-docs.mount -p Result --value").stdout.strip() == "success"
