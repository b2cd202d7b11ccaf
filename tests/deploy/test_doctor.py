"""``gobi doctor`` catches broken hosts, and passes a working one.

Each test breaks a ``HostSandbox`` (tests/deploy/hostsandbox.py: private namespaces over
overlays of this host, gobi installed by deploy/install.sh) the way hosts really break:
/dev/fuse missing, not openable by the user, on a ``nodev`` filesystem or the wrong
device; no ``user_allow_other``; no login, a world-readable credentials file, a revoked
token; the server down, not gobi, draining; a clock off by an hour (a tiny HTTP server on
127.0.0.1 that sends a false ``Date``); the cache dir on a full tmpfs; a dead mount; a
server host with a bad key file, a bad config, a port taken; a TLS certificate the client
does not trust. Doctor must name the problem and the fix, and exit 1. Where it says a
mount will fail or work, a real ``gobi mount`` against a real ``gobi server`` confirms it.

The TLS test also runs deploy/proxy/Caddyfile for real: Caddy in front of the server
with a local CA, and a mount, a login and a WebSocket through it.
"""

from __future__ import annotations

import email.utils
import json
import re
import shlex
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.servers import ServerProcess, register

from tests.needs import missing, require_tool

from .hostsandbox import REPO, HostSandbox, usable



@pytest.fixture(autouse=True)
def _sandbox_possible():
    if (why := usable()) is not None:
        missing(why)

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("doctor-server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def host(tmp_path):
    sb = HostSandbox(tmp_path / "host").start()
    try:
        sb.install_gobi("--client-only")
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def account(server):
    name, token = register(server)
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}) as c:
        c.post("/vaults", json={"name": "docs"}).raise_for_status()
    return name


def login(host: HostSandbox, server: ServerProcess, name: str, user: str | None = None) -> None:
    host.run(f"gobi login {server.url} -u {name} --password-stdin", user=user, input=PASSWORD + "\n")


def doctor(host: HostSandbox, *args: str, user: str | None = None) -> tuple[int, dict[str, dict]]:
    """Run `gobi doctor ARGS --json`: (exit status, {check name: check})."""
    r = host.run("gobi doctor " + " ".join(map(shlex.quote, args)) + " --json", user=user, check=False)
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] == (r.returncode == 0)
    return r.returncode, {c["name"]: c for c in out["checks"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """An HTTP server on 127.0.0.1 that answers /health the way it is told to, with a
    Date header ``skew`` seconds off."""

    def __init__(self, status: int = 200, body: bytes = b'{"status": "ok", "version": "fake"}',
                 skew: float = 0.0, content_type: str = "application/json"):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(fake.status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            def date_time_string(self, timestamp=None):
                return email.utils.formatdate(time.time() + fake.skew, usegmt=True)

            def log_message(self, *args):
                pass

        self.status, self.body, self.skew, self.content_type = status, body, skew, content_type
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def try_mount(host: HostSandbox, mountpoint: str, user: str | None = None) -> bool:
    """A real `gobi mount` of docs; True (and unmounted again) when it worked."""
    host.run(f"mkdir -p {mountpoint}" + (f" && chown {user}: {mountpoint}" if user else ""))
    r = host.run(f"gobi mount docs {mountpoint} --cache-size 64M", user=user, check=False)
    if r.returncode != 0:
        return False
    host.run(f"fusermount3 -u {mountpoint}", user=user)
    return True


# --------------------------------------------------------------------------- a good host


def test_a_working_host_passes_and_mounts(host, server, account):
    login(host, server, account)
    host.run("mkdir -p /srv/docs")
    code, checks = doctor(host, "client", "/srv/docs", "--vault", "docs")
    assert code == 0, checks
    for name in ("FUSE in the kernel", "/dev/fuse access", "fusermount3", "libfuse3 / pyfuse3",
                 "credentials", "server reachable", "login accepted", "vault", "cache dir writable",
                 "cache disk space", "mountpoint"):
        assert checks[name]["status"] == "ok", checks[name]
    # gobi server sends no Date header (yet): the clock check says it could not tell.
    assert checks["clock skew"]["status"] in ("ok", "skip")
    text = host.run("gobi doctor /srv/docs --vault docs").stdout        # "client" is the default
    assert "all checks passed" in text or "no problems" in text
    assert try_mount(host, "/srv/docs")


# --------------------------------------------------------------------------- /dev/fuse


def test_unprivileged_user_without_access_to_dev_fuse(host, server, account):
    host.run("umount /dev/fuse && rm /dev/fuse && mknod -m 0600 /dev/fuse c 10 229 && useradd -m bob")
    login(host, server, account, user="bob")
    code, checks = doctor(host, user="bob")
    assert code == 1
    c = checks["/dev/fuse access"]
    assert c["status"] == "FAIL"
    assert "bob cannot open /dev/fuse: permission denied (mode 0600 root:root)" in c["detail"]
    assert "chmod 0666 /dev/fuse" in c["fix"] and "udev" in c["fix"]
    assert not try_mount(host, "/srv/bob", user="bob")
    # The fix works: doctor and the mount agree again.
    host.run("chmod 0666 /dev/fuse")
    code, checks = doctor(host, user="bob")
    assert checks["/dev/fuse access"]["status"] == "ok"
    assert try_mount(host, "/srv/bob", user="bob")


def test_dev_fuse_on_a_nodev_filesystem_blocks_even_root(host, server, account):
    # A device node on a nodev mount cannot be opened, whatever its mode and whoever asks
    # (what a container bind-mounting the node gets).
    host.run("mkdir -p /run/nodev && mount -t tmpfs -o nodev,size=1m nodev /run/nodev && "
             "mknod -m 0666 /run/nodev/fuse c 10 229 && mount --bind /run/nodev/fuse /dev/fuse")
    login(host, server, account)
    code, checks = doctor(host)
    assert code == 1
    c = checks["/dev/fuse access"]
    assert c["status"] == "FAIL" and "nodev" in c["detail"] and "--device /dev/fuse" in c["fix"]
    assert not try_mount(host, "/srv/docs")


@pytest.mark.parametrize("breakage, detail", [
    ("umount /dev/fuse && rm /dev/fuse", "/dev/fuse does not exist"),
    ("mount --bind /dev/null /dev/fuse", "is not the FUSE device"),
])
def test_missing_or_wrong_dev_fuse(host, breakage, detail):
    host.run(breakage)
    code, checks = doctor(host)
    assert code == 1
    c = checks["/dev/fuse access"]
    assert c["status"] == "FAIL" and detail in c["detail"] and c["fix"]


def test_allow_other_for_a_user_needs_user_allow_other(host):
    host.run("umount /dev/fuse && rm /dev/fuse && mknod -m 0666 /dev/fuse c 10 229 && useradd -m bob")
    host.run("sed -i '/user_allow_other/d' /etc/fuse.conf")
    _, checks = doctor(host, "-o", "allow_other", user="bob")
    c = checks["allow_other"]
    assert c["status"] == "FAIL" and "user_allow_other" in c["fix"]
    host.run("echo user_allow_other >> /etc/fuse.conf")
    _, checks = doctor(host, "-o", "allow_other", user="bob")
    assert checks["allow_other"]["status"] == "ok"
    _, checks = doctor(host, "-o", "allow_other")                   # root needs no entry
    assert checks["allow_other"]["status"] == "ok"


# --------------------------------------------------------------------------- login and server


def test_login_problems(host, server, account):
    code, checks = doctor(host, "--server", server.url)
    assert code == 1
    assert checks["credentials"]["status"] == "FAIL" and "not logged in" in checks["credentials"]["detail"]
    assert f"gobi login {server.url}" in checks["credentials"]["fix"]

    login(host, server, account)
    creds = "/root/.config/gobi/credentials.json"
    host.run(f"chmod 644 {creds}")
    _, checks = doctor(host)
    assert checks["credentials"]["status"] == "FAIL" and f"chmod 600 {creds}" in checks["credentials"]["fix"]
    host.run(f"chmod 600 {creds}")

    _, checks = doctor(host, "--vault", "nosuch")
    assert checks["vault"]["status"] == "FAIL"

    token = json.loads(host.read(creds))["servers"][server.url]["token"]
    httpx.delete(server.api + "/sessions/current", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
    code, checks = doctor(host)
    assert code == 1
    c = checks["login accepted"]
    assert c["status"] == "FAIL" and "rejects the saved token" in c["detail"] and "gobi login" in c["fix"]


def test_server_unreachable(host):
    port = free_port()                                          # bound and closed: refused
    code, checks = doctor(host, "--server", f"http://127.0.0.1:{port}")
    assert code == 1
    c = checks["server reachable"]
    assert c["status"] == "FAIL" and "connection refused" in c["detail"]
    assert "systemctl start gobi-server" in c["fix"]


@pytest.mark.parametrize("status, body, content_type, detail", [
    (404, b"<html>not found</html>", "text/html", "not as a gobi server"),
    (503, b'{"status": "draining"}', "application/json", "shutting down"),
    (503, b'{"status": "store unavailable"}', "application/json", "store unavailable"),
])
def test_server_answers_but_not_well(host, status, body, content_type, detail):
    with FakeServer(status=status, body=body, content_type=content_type) as fake:
        code, checks = doctor(host, "--server", fake.url)
    assert code == 1
    c = checks["server reachable"]
    assert c["status"] == "FAIL" and detail in c["detail"] and c["fix"]


@pytest.mark.parametrize("skew, status, side", [
    (-3600.0, "FAIL", "ahead of"),      # the server's clock an hour behind ours
    (20.0, "warn", "behind"),
    (0.0, "ok", None),
])
def test_clock_skew_against_the_servers_date(host, skew, status, side):
    with FakeServer(skew=skew) as fake:
        _, checks = doctor(host, "--server", fake.url)
    c = checks["clock skew"]
    assert c["status"] == status, c
    if side:
        assert side in c["detail"] and "timedatectl" in c["fix"]
        measured = float(re.search(r"is ([\d.]+) s", c["detail"]).group(1))
        assert abs(measured - abs(skew)) < 2          # Date has one-second resolution


# --------------------------------------------------------------------------- cache, mountpoint


def test_cache_dir_on_a_small_or_full_filesystem(host):
    host.run("mkdir -p /srv/small && mount -t tmpfs -o size=8m small /srv/small")
    _, checks = doctor(host, "--cache-dir", "/srv/small/cache", "--cache-size", "64M")
    c = checks["cache disk space"]
    assert c["status"] == "FAIL" and "--cache-size" in c["fix"] and "/srv/small" in c["detail"]
    _, checks = doctor(host, "--cache-dir", "/srv/small/cache", "--cache-size", "4M")
    assert checks["cache disk space"]["status"] == "ok"
    host.run("dd if=/dev/zero of=/srv/small/fill bs=1M count=16 2>/dev/null || true")
    assert host.run("df --output=avail /srv/small | tail -1").stdout.strip() == "0"
    code, checks = doctor(host, "--cache-dir", "/srv/small/cache", "--cache-size", "4M")
    assert code == 1 and checks["cache disk space"]["status"] == "FAIL"


def test_cache_dir_not_writable(host):
    host.run("useradd -m bob && mkdir -p /srv/rootonly && chmod 755 /srv/rootonly")
    _, checks = doctor(host, "--cache-dir", "/srv/rootonly/cache", user="bob")
    c = checks["cache dir writable"]
    assert c["status"] == "FAIL" and "bob cannot write /srv/rootonly/cache" in c["detail"]


def test_dead_mount_is_named_with_its_fix(host, server, account):
    login(host, server, account)
    host.run("mkdir -p /srv/docs && gobi mount docs /srv/docs --cache-size 64M")
    code, checks = doctor(host, "mount", "/srv/docs")
    assert code == 0 and checks["mount"]["status"] == "ok" and checks["online"]["status"] == "ok"
    pid = json.loads(host.run("gobi status --json /srv/docs").stdout)["pid"]
    host.run(f"kill -9 {pid}")
    host.run(f"while test -d /proc/{pid}; do sleep 0.05; done")
    code, checks = doctor(host, "mount", "/srv/docs")
    assert code == 1
    c = checks["mount"]
    assert c["status"] == "FAIL" and "dead FUSE mount" in c["detail"] and "fusermount3 -uz /srv/docs" in c["fix"]
    _, checks = doctor(host, "client", "/srv/docs")
    assert checks["mountpoint"]["status"] == "FAIL" and "dead FUSE mount" in checks["mountpoint"]["detail"]
    host.run("fusermount3 -uz /srv/docs")                       # the fix, applied
    _, checks = doctor(host, "client", "/srv/docs")
    assert checks["mountpoint"]["status"] == "ok"
    code, checks = doctor(host, "mount", "/srv/nothing")
    assert code == 1 and "not a running gobi mount" in checks["mount"]["detail"]


# --------------------------------------------------------------------------- the server host


def write_config(host: HostSandbox, path: str, data_dir: str, port: int, extra: str = "") -> None:
    host.run(f"cat > {path}", input=f'data_dir = "{data_dir}"\nhost = "127.0.0.1"\nport = {port}\n{extra}')


def test_server_host_checks(host, server):
    write_config(host, "/etc/gobi/ok.toml", str(server.data_dir), server.port)
    code, checks = doctor(host, "server", "--config", "/etc/gobi/ok.toml")
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}

    # A key file others can read (the server would refuse to start).
    host.run(f"cp -a {server.data_dir} /srv/data && chmod 644 /srv/data/master.key")
    write_config(host, "/etc/gobi/copy.toml", "/srv/data", free_port())
    code, checks = doctor(host, "server", "--config", "/etc/gobi/copy.toml")
    assert code == 1
    assert checks["key file"]["status"] == "FAIL" and "chmod 600 /srv/data/master.key" in checks["key file"]["fix"]
    assert checks["serving"]["status"] == "FAIL" and "connection refused" in checks["serving"]["detail"]

    # Run as a user who does not own the data.
    host.run("useradd -m bob && chmod 755 /etc/gobi && chmod 644 /etc/gobi/copy.toml")
    _, checks = doctor(host, "server", "--config", "/etc/gobi/copy.toml", user="bob")
    assert checks["data dir"]["status"] == "FAIL" and "bob cannot write /srv/data" in checks["data dir"]["detail"]

    # Another program on the configured port.
    with FakeServer(status=404, body=b"nope", content_type="text/plain") as fake:
        write_config(host, "/etc/gobi/taken.toml", "/srv/data", int(fake.url.rsplit(":", 1)[1]))
        _, checks = doctor(host, "server", "--config", "/etc/gobi/taken.toml")
    assert checks["serving"]["status"] == "FAIL" and "another program" in checks["serving"]["detail"]

    # A typo in the file.
    write_config(host, "/etc/gobi/typo.toml", "/srv/data", 8080, extra="open_registraton = false\n")
    code, checks = doctor(host, "server", "--config", "/etc/gobi/typo.toml")
    assert code == 1 and "open_registraton" in checks["configuration"]["detail"]


def test_wait_ready_gives_up_when_nothing_serves(host):
    write_config(host, "/etc/gobi/none.toml", "/srv/data", free_port())
    r = host.run("gobi doctor server --config /etc/gobi/none.toml --wait-ready 1", check=False)
    assert r.returncode == 1 and "not ready after 1 s" in r.stderr and "connection refused" in r.stderr


# --------------------------------------------------------------------------- behind TLS


@pytest.fixture
def caddy(server, tmp_path):
    """deploy/proxy/Caddyfile in front of ``server``: its site block with the host name
    replaced by 127.0.0.1:PORT and a local CA (``tls internal``), loopback only."""
    require_tool("caddy", "caddy")
    port = free_port()
    site = (REPO / "deploy/proxy/Caddyfile").read_text()
    assert "sync.example.org {" in site and "127.0.0.1:8080" in site
    site = site.replace("sync.example.org {", f"https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\ttls internal")
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
    data = tmp_path / "caddy"
    config = tmp_path / "Caddyfile"
    config.write_text("{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n"
                      f"\tstorage file_system {data}\n\tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n" + site)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    log = open(tmp_path / "caddy.log", "wb")
    proc = subprocess.Popen(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
                            env=env, stdout=log, stderr=log)
    url = f"https://127.0.0.1:{port}"
    ca = data / "pki/authorities/local/root.crt"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                ctx = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None
                if ctx and httpx.get(url + "/health", verify=ctx, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
            time.sleep(0.1)
        yield url, ca
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_behind_a_tls_reverse_proxy(host, server, account, caddy):
    url, ca = caddy
    # A certificate from a CA this host does not trust: named, with the fix.
    code, checks = doctor(host, "--server", url)
    assert code == 1
    c = checks["server reachable"]
    assert c["status"] == "FAIL" and "TLS certificate not trusted" in c["detail"]
    assert "SSL_CERT_FILE" in c["fix"] and "update-ca-certificates" in c["fix"]

    # Trusted (SSL_CERT_FILE, as the fix says): login, doctor, a mount, all over TLS.
    trust = {"SSL_CERT_FILE": str(ca)}
    host.run(f"gobi login {url} -u {account} --password-stdin", input=PASSWORD + "\n", env=trust)
    r = host.run("gobi doctor --vault docs --json", env=trust, check=False)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert r.returncode == 0, checks
    assert checks["server reachable"]["status"] == "ok"
    assert checks["clock skew"]["status"] == "ok"          # the proxy sends Date
    assert checks["login accepted"]["status"] == "ok"
    host.run("mkdir -p /srv/docs && gobi mount docs /srv/docs --cache-size 64M --settle 0.2", env=trust)
    host.run("echo 'over tls' > /srv/docs/tls.txt && gobi sync /srv/docs", env=trust)
    token = json.loads(host.read("/root/.config/gobi/credentials.json"))["servers"][url]["token"]
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}) as c:
        vault = [v for v in c.get("/vaults").json()["vaults"] if v["name"] == "docs"][0]["id"]
        node = c.get(f"/vaults/{vault}/lookup", params={"path": "tls.txt"}).json()["id"]
        assert c.get(f"/vaults/{vault}/nodes/{node}/data").content == b"over tls\n"
    host.run("gobi umount /srv/docs", env=trust)

    # The live stream (a WebSocket upgrade) passes the proxy too.
    from websockets.sync.client import connect

    ctx = ssl.create_default_context(cafile=str(ca))
    ws_url = url.replace("https://", "wss://") + f"/api/v1/vaults/{vault}/ws?after=0"
    with connect(ws_url, ssl=ctx, additional_headers={"Authorization": f"Bearer {token}"},
                 open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
    assert first["type"] == "hello"
