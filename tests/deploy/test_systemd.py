"""The systemd units in deploy/, installed by deploy/install.sh and run by a real systemd.

This machine's PID 1 is not systemd, so each module boots one in a ``HostSandbox``
(tests/deploy/hostsandbox.py): the host's own ``/lib/systemd/systemd`` as PID 1 of
private namespaces whose /etc, /usr, /var … are copy-on-write overlays. Everything below
is done there as an operator would on a fresh host (docs/deployment.md): install.sh
(sysusers, tmpfiles, units, helper), edit /etc/gobi/server.toml, ``systemctl start``,
``gobi user add`` as the gobi user, ``gobi login`` and a mounts/NAME.conf for
gobi-mount@NAME. What is checked is what systemd really did: readiness (the unit is
active only once the server answers), the user, capabilities, seccomp, read-only
filesystem and device cgroup of the running processes, the journal, stop and restart.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import time

import httpx
import pytest

from tests.needs import missing

from .hostsandbox import REPO, VENV, HostSandbox, usable



@pytest.fixture(autouse=True)
def _sandbox_possible():
    if (why := usable(systemd=True)) is not None:
        missing(why)

PASSWORD = "correct horse battery"
CAP_SYS_ADMIN = 1 << 21


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A booted systemd host with gobi installed (deploy/install.sh) and a port chosen."""
    sb = HostSandbox(tmp_path_factory.mktemp("systemd-host"), systemd=True).start()
    try:
        sb.install_gobi()
        sb.port = free_port()
        sb.run(f"sed -i 's/^port = .*/port = {sb.port}/' /etc/gobi/server.toml")
        # /opt/gobi links to this checkout's virtualenv; a checkout under /tmp (CI clones),
        # /home or /root would be hidden by PrivateTmp=/ProtectHome=, while a real install
        # lives in /opt/gobi itself. Expose it read-only with a drop-in.
        hidden = [str(p) for p in {REPO, VENV}
                  if str(p).startswith(("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/"))]
        if hidden:
            dropin = "[Service]\n" + "".join(f"BindReadOnlyPaths={p}\n" for p in hidden)
            if any(p.startswith(("/home/", "/root/", "/run/user/")) for p in hidden):
                dropin += "ProtectHome=tmpfs\n"
            sb.run("mkdir -p /etc/systemd/system/gobi-server.service.d && "
                   "cat > /etc/systemd/system/gobi-server.service.d/checkout.conf && "
                   "systemctl daemon-reload", input=dropin)
        yield sb
    finally:
        sb.stop()


def show(host: HostSandbox, unit: str, *props: str) -> dict[str, str]:
    out = host.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def proc_status(host: HostSandbox, pid: str) -> dict[str, str]:
    out = host.run(f"cat /proc/{pid}/status").stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def journal(host: HostSandbox, unit: str) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -o cat").stdout


@pytest.fixture
def server_unit(host):
    """gobi-server.service started (and stopped after the test)."""
    host.run("systemctl start gobi-server")
    yield f"http://127.0.0.1:{host.port}"
    host.run("systemctl stop gobi-server; systemctl reset-failed gobi-server", check=False)


def add_user(host: HostSandbox, name: str) -> None:
    """The documented admin command: `gobi user add` as the server's user."""
    host.run(f"gobi user add {name} --config /etc/gobi/server.toml --password-stdin",
             user="gobi", input=PASSWORD + "\n")


# --------------------------------------------------------------------------- static checks


def test_units_pass_systemd_analyze_verify(host):
    r = host.run("systemd-analyze verify /etc/systemd/system/gobi-server.service "
                 "/etc/systemd/system/gobi-mount@.service", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr      # no unknown keys, no bad values, no missing binaries


def test_verify_catches_a_broken_unit(host):
    """The check above can fail: a misspelt hardening option and a missing binary."""
    broken = (REPO / "deploy/systemd/gobi-server.service").read_text()
    broken = broken.replace("ProtectSystem=strict", "ProtectSytem=strict")
    broken = broken.replace("ExecStart=/usr/local/bin/gobi", "ExecStart=/usr/local/bin/gobbi")
    host.run("mkdir -p /tmp/verify && cat > /tmp/verify/gobi-broken.service", input=broken)
    r = host.run("systemd-analyze verify /tmp/verify/gobi-broken.service", check=False)
    assert "ProtectSytem" in r.stderr
    assert "gobbi" in r.stderr


def test_server_unit_exposure_is_low(host):
    out = host.run("systemd-analyze security gobi-server --no-pager").stdout
    m = re.search(r"Overall exposure level for gobi-server.service: ([\d.]+) (\w+)", out)
    assert m, out
    # systemd's scale: 0–10; below 2 is "OK" (the better half of its ratings).
    assert float(m.group(1)) < 2.0, out


def test_install_made_user_dirs_and_modes(host):
    passwd = host.run("getent passwd gobi").stdout.strip().split(":")
    assert passwd[5] == "/var/lib/gobi" and passwd[6] == "/usr/sbin/nologin"
    modes = host.run("stat -c '%n %a %U:%G' /etc/gobi /etc/gobi/server.toml /var/lib/gobi "
                     "/sbin/mount.fuse.gobi").stdout.split("\n")
    assert "/etc/gobi 750 root:gobi" in modes
    assert "/etc/gobi/server.toml 640 root:gobi" in modes
    assert "/var/lib/gobi 700 gobi:gobi" in modes
    assert "/sbin/mount.fuse.gobi 755 root:root" in modes
    # Idempotent: a second run changes nothing and keeps an edited config.
    host.run("echo '# edited' >> /etc/gobi/server.toml")
    host.install_gobi()
    assert host.read("/etc/gobi/server.toml").rstrip().endswith("# edited")


# --------------------------------------------------------------------------- the server unit


def test_server_unit_is_active_only_once_serving_and_runs_hardened(host, server_unit):
    # `systemctl start` returned: ExecStartPost saw /health answer, so it answers now.
    r = httpx.get(server_unit + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    props = show(host, "gobi-server", "ActiveState", "SubState", "MainPID", "User")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    pid = props["MainPID"]

    uid = host.run("id -u gobi").stdout.strip()
    st = proc_status(host, pid)
    assert st["Uid"].split() == [uid] * 4
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"                              # a syscall filter is on
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0

    # Inside its mount namespace: the system is read-only, the state dir writable,
    # homes hidden, /tmp private.
    ns = f"nsenter -t {pid} -m setpriv --reuid=gobi --regid=gobi --clear-groups"
    assert host.run(f"{ns} touch /usr/gobi-x", check=False).returncode != 0
    assert host.run(f"{ns} touch /etc/gobi/x", check=False).returncode != 0
    host.run(f"{ns} touch /var/lib/gobi/probe && {ns} rm /var/lib/gobi/probe")
    host.run("touch /root/host-only-file /tmp/host-only-file")
    assert host.run(f"nsenter -t {pid} -m test -e /root/host-only-file", check=False).returncode != 0
    assert host.run(f"nsenter -t {pid} -m test -e /tmp/host-only-file", check=False).returncode != 0
    assert host.run(f"nsenter -t {pid} -m test -e /var/lib/gobi/master.key").returncode == 0

    key = host.run("stat -c '%a %U' /var/lib/gobi/master.key").stdout.strip()
    assert key == "600 gobi"


def test_server_unit_serves_real_work(host, server_unit):
    """Accounts (argon2), encrypted chunk storage and commits all work under the
    sandboxing (MemoryDenyWriteExecute=, the syscall filter, ProtectSystem=strict)."""
    add_user(host, "carol")
    api = server_unit + "/api/v1"
    with httpx.Client(base_url=api, timeout=30) as c:
        token = c.post("/sessions", json={"username": "carol", "password": PASSWORD}).json()["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        vault = c.post("/vaults", json={"name": "work"}).json()["id"]
        import hashlib
        data = b"systemd says hello\n" * 1000
        h = hashlib.sha256(data).hexdigest()
        assert c.put(f"/vaults/{vault}/chunks/{h}", content=data).status_code in (200, 201)
        r = c.post(f"/vaults/{vault}/nodes", json={
            "parent": "root", "name": "hello.txt", "kind": "file",
            "content": {"chunks": [{"hash": h, "size": len(data)}], "size": len(data)}})
        assert r.status_code == 201, r.text
        node = r.json()["id"]
        assert c.get(f"/vaults/{vault}/nodes/{node}/data").content == data
    # Blobs are on disk, encrypted: the plaintext is nowhere under the state dir.
    assert host.run("grep -rl 'systemd says hello' /var/lib/gobi", check=False).stdout == ""


def test_server_unit_stops_gracefully_restarts_and_logs_to_the_journal(host, server_unit):
    add_user(host, "dave")
    host.run("systemctl stop gobi-server")
    props = show(host, "gobi-server", "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    with pytest.raises(httpx.HTTPError):
        httpx.get(server_unit + "/health", timeout=5)
    log = journal(host, "gobi-server")
    assert f"gobi server listening on http://127.0.0.1:{host.port}" in log
    assert "GET /health 200" in log                          # the access log, one line per request
    assert "gobi server ready at" in log                     # ExecStartPost's readiness line

    host.run("systemctl start gobi-server")
    r = httpx.post(server_unit + "/api/v1/sessions", json={"username": "dave", "password": PASSWORD})
    assert r.status_code == 201                              # the data survived the restart
    assert PASSWORD not in journal(host, "gobi-server")


def test_server_unit_restarts_after_a_crash(host, server_unit):
    pid = show(host, "gobi-server", "MainPID")["MainPID"]
    host.run(f"kill -9 {pid}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        props = show(host, "gobi-server", "ActiveState", "MainPID", "NRestarts")
        if props["ActiveState"] == "active" and props["MainPID"] not in ("0", pid):
            break
        time.sleep(0.2)
    assert props["NRestarts"] == "1" and props["ActiveState"] == "active", props
    assert httpx.get(server_unit + "/health", timeout=10).status_code == 200


def test_server_unit_fails_clearly_on_a_bad_config(host):
    host.run("cp /etc/gobi/server.toml /tmp/server.toml.good && echo 'prot = 1' >> /etc/gobi/server.toml")
    try:
        r = host.run("systemctl start gobi-server", check=False)
        assert r.returncode != 0
        # Restart=on-failure retries it (until StartLimitBurst=), never "active".
        assert show(host, "gobi-server", "ActiveState")["ActiveState"] in ("failed", "activating")
        assert "prot" in journal(host, "gobi-server").split("Starting gobi-server")[-1]
        doc = host.run("gobi doctor server --config /etc/gobi/server.toml", check=False)
        assert doc.returncode == 1
        assert re.search(r"FAIL\s+configuration\s+cannot load the configuration.*prot", doc.stdout), doc.stdout
    finally:
        host.run("systemctl stop gobi-server; cp /tmp/server.toml.good /etc/gobi/server.toml; "
                 "systemctl reset-failed gobi-server 2>/dev/null; true")


# --------------------------------------------------------------------------- gobi-mount@


@pytest.fixture
def mount_conf(host, server_unit):
    """A logged-in root, a vault and /etc/gobi/mounts/docs.conf for it."""
    user = f"m{int(time.time() * 1000) % 10**8}"
    add_user(host, user)
    host.run(f"gobi login {server_unit} -u {user} --password-stdin", input=PASSWORD + "\n")
    host.run("gobi vault create docs")
    host.run("mkdir -p /srv/docs && sed -e 's/--cache-size 10G/--cache-size 256M --settle 0.2/' "
             "/etc/gobi/mounts/docs.conf.example > /etc/gobi/mounts/docs.conf")
    yield user
    host.run("systemctl stop gobi-mount@docs; systemctl reset-failed gobi-mount@docs; "
             "rm -rf /etc/systemd/system/gobi-mount@docs.service.d; systemctl daemon-reload; "
             "umount -l /srv/docs; rm -rf /root/.cache/gobi", check=False)


def fuse_mount_of(host: HostSandbox, path: str) -> dict | None:
    out = host.run(f"findmnt -J -o TARGET,FSTYPE,SOURCE,OPTIONS {shlex.quote(path)}", check=False).stdout
    return json.loads(out)["filesystems"][0] if out.strip() else None


def server_has(url: str, user: str, path: str) -> bytes | None:
    with httpx.Client(base_url=url + "/api/v1", timeout=30) as c:
        token = c.post("/sessions", json={"username": user, "password": PASSWORD}).json()["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        vault = [v for v in c.get("/vaults").json()["vaults"] if v["name"] == "docs"][0]["id"]
        r = c.get(f"/vaults/{vault}/lookup", params={"path": path})
        if r.status_code == 404:
            return None
        return c.get(f"/vaults/{vault}/nodes/{r.json()['id']}/data").content


def test_mount_unit_is_active_once_mounted_and_unmounts_on_stop(host, server_unit, mount_conf):
    host.run("systemctl start gobi-mount@docs")
    # Active means mounted and answering (ExecStartPost waited for it).
    m = fuse_mount_of(host, "/srv/docs")
    assert m and m["fstype"] == "fuse.gobi", m
    host.run("echo 'from a unit' > /srv/docs/unit.txt && gobi sync /srv/docs")
    assert server_has(server_unit, mount_conf, "unit.txt") == b"from a unit\n"

    pid = show(host, "gobi-mount@docs", "MainPID")["MainPID"]
    st = proc_status(host, pid)
    assert int(st["CapBnd"], 16) == CAP_SYS_ADMIN           # nothing but mount/umount
    assert st["NoNewPrivs"] == "0"                           # fusermount3 must stay usable
    cgroup = host.run(f"grep :devices: /proc/{pid}/cgroup").stdout.strip().split(":", 2)[2]
    devices = host.run(f"cat {shlex.quote(f'/sys/fs/cgroup/devices{cgroup}/devices.list')}").stdout.split("\n")
    assert "c 10:229 rw" in devices and "a *:* rwm" not in devices    # DevicePolicy=closed

    host.run("systemctl stop gobi-mount@docs")
    assert fuse_mount_of(host, "/srv/docs") is None
    props = show(host, "gobi-mount@docs", "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}
    log = journal(host, "gobi-mount@docs")
    assert "mounted vault" in log and "unmounted /srv/docs" in log


def test_mount_unit_recovers_from_a_killed_daemon(host, server_unit, mount_conf):
    host.run("systemctl start gobi-mount@docs && echo before > /srv/docs/before.txt && gobi sync /srv/docs")
    pid = show(host, "gobi-mount@docs", "MainPID")["MainPID"]
    host.run(f"kill -9 {pid}")
    # The mount is dead until systemd restarts the unit (RestartSec=5s), whose
    # ExecStartPre clears the dead mount so the new daemon can mount again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        props = show(host, "gobi-mount@docs", "ActiveState", "MainPID", "NRestarts")
        if props["ActiveState"] == "active" and props["MainPID"] not in ("0", pid):
            break
        time.sleep(0.2)
    assert props["ActiveState"] == "active" and props["NRestarts"] == "1", \
        (props, journal(host, "gobi-mount@docs")[-3000:])
    assert host.read("/srv/docs/before.txt") == "before\n"


def test_mount_unit_as_a_person_with_a_user_dropin(host, server_unit, mount_conf):
    """A drop-in with User=: the daemon runs as that user and mounts via fusermount3."""
    # Debian's udev makes /dev/fuse 0666; this machine's is 0600: give the sandbox its
    # own node (never chmod the host's).
    mode = host.run("stat -c %a /dev/fuse").stdout.strip()
    host.run("umount /dev/fuse && rm /dev/fuse && mknod -m 0666 /dev/fuse c 10 229")
    try:
        host.run("id erin >/dev/null 2>&1 || useradd -m erin")
        host.run(f"gobi login {server_unit} -u {mount_conf} --password-stdin", user="erin",
                 input=PASSWORD + "\n")
        host.run("mkdir -p /srv/erin && chown erin: /srv/erin && "
                 "sed -i 's#^GOBI_MOUNTPOINT=.*#GOBI_MOUNTPOINT=/srv/erin#' /etc/gobi/mounts/docs.conf && "
                 "mkdir -p /etc/systemd/system/gobi-mount@docs.service.d && "
                 "printf '[Service]\\nUser=erin\\n' > /etc/systemd/system/gobi-mount@docs.service.d/user.conf && "
                 "systemctl daemon-reload")
        r = host.run("systemctl start gobi-mount@docs", check=False)
        assert r.returncode == 0, journal(host, "gobi-mount@docs")[-3000:]
        pid = show(host, "gobi-mount@docs", "MainPID")["MainPID"]
        assert proc_status(host, pid)["Uid"].split()[0] == host.run("id -u erin").stdout.strip()
        m = fuse_mount_of(host, "/srv/erin")
        assert m and m["fstype"] == "fuse.gobi"
        assert f"user_id={host.run('id -u erin').stdout.strip()}" in m["options"]
        host.run("echo mine > /srv/erin/erin.txt && gobi sync /srv/erin", user="erin")
        assert server_has(server_unit, mount_conf, "erin.txt") == b"mine\n"
        host.run("systemctl stop gobi-mount@docs")
        assert fuse_mount_of(host, "/srv/erin") is None
        assert show(host, "gobi-mount@docs", "Result")["Result"] == "success"
    finally:
        host.run("umount -l /srv/erin", check=False)
        host.run(f"rm -f /dev/fuse && mknod -m {mode} /dev/fuse c 10 229", check=False)


def test_mount_unit_with_a_missing_config_fails_with_its_name(host):
    r = host.run("systemctl start gobi-mount@nosuch", check=False)
    assert r.returncode != 0
    assert "/etc/gobi/mounts/nosuch.conf does not exist" in journal(host, "gobi-mount@nosuch")
    host.run("echo GOBI_VAULT=docs > /etc/gobi/mounts/half.conf")
    assert host.run("systemctl start gobi-mount@half", check=False).returncode != 0
    assert "/etc/gobi/mounts/half.conf must set GOBI_VAULT and GOBI_MOUNTPOINT" in journal(host, "gobi-mount@half")
    host.run("systemctl reset-failed gobi-mount@half", check=False)
    host.run("systemctl reset-failed gobi-mount@nosuch", check=False)
