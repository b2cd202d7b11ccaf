"""The history commands of the CLI (``gobi versions|cat|restore|trash|confirm-delete|
conflicts|resolve|gc``) against a real server, logged in with ``gobi login`` into a
private config dir; the vault is named with ``--vault`` (paths inside a mount are covered
by the client's tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.servers import Api, ServerProcess

from .util import commit, create_file, mkdir, upload

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("cli"), env={
        "GOBI_POLL_INTERVAL": "1h", "GOBI_GC_GRACE": "0s", "GOBI_GC_INTERVAL": "0",
        "GOBI_HISTORY_INTERVAL": "0", "GOBI_MASS_DELETE_FILES": "5", "GOBI_MASS_DELETE_FRACTION": "0",
        # every deleted file counts, also those the deleting device wrote itself just now
        "GOBI_MASS_DELETE_FRESH": "0"}).start()
    yield srv
    srv.stop()


class Cli:
    def __init__(self, srv, home):
        self.home = home
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(home), "HOME": str(home)}
        self.srv = srv

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "gobi", *args], env=self.env, input=input,
                           capture_output=True, timeout=120)
        if ok:
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r

    def out(self, *args: str) -> str:
        return self(*args).stdout.decode()


@pytest.fixture(scope="module")
def setup(cli_server, tmp_path_factory):
    """A logged-in CLI (the vault owner), the vault, and a second device of a member."""
    cli = Cli(cli_server, tmp_path_factory.mktemp("home"))
    cli("login", cli_server.url, "--user", "cliowner", "--password-stdin", "--register", input=PASSWORD.encode())
    creds = json.loads((cli.home / "gobi" / "credentials.json").read_text())
    token = creds["servers"][cli_server.url]["token"]
    owner = Api(cli_server.api, token, device="owner-laptop")
    vault = owner.post("/vaults", json={"name": "cli vault"}).json()["id"]
    yield cli, owner, vault
    owner.close()


def test_versions_cat_and_restore(setup):
    cli, owner, vault = setup
    d = mkdir(owner, vault, "docs")
    f = create_file(owner, vault, "a.txt", b"one\n", parent=d["id"])
    f2 = commit(owner, vault, f, b"two\n").json()
    out = cli.out("versions", "docs/a.txt", "--vault", "cli vault")
    assert "docs/a.txt: 2 version(s)" in out and f"* rev {f2['rev']}" in out and "owner-laptop" in out
    assert cli("cat", "/docs/a.txt", "--rev", str(f["rev"]), "--vault", vault).stdout == b"one\n"
    assert cli("cat", "docs/a.txt", "--vault", vault).stdout == b"two\n"
    out = cli.out("restore", "docs/a.txt", "--rev", str(f["rev"]), "--vault", vault)
    assert f"version {f['rev']} is the content again" in out
    assert cli("cat", "docs/a.txt", "--vault", vault).stdout == b"one\n"
    versions = json.loads(cli.out("versions", "docs/a.txt", "--vault", vault, "--json"))
    assert versions[0]["origin"] == f"restore:{f['rev']}" and versions[0]["device"].startswith("cli.")
    r = cli("cat", "docs/nope.txt", "--vault", vault, ok=False)
    assert r.returncode == 1 and b"path not found" in r.stderr


def test_trash_and_restore_from_it(setup):
    cli, owner, vault = setup
    d = mkdir(owner, vault, "old")
    create_file(owner, vault, "x.txt", b"x" * 2048, parent=d["id"])
    owner.delete(f"/vaults/{vault}/nodes/{d['id']}", params={"base_rev": d["rev"], "recursive": "true"})
    out = cli.out("trash", "--vault", vault)
    assert "old  (dir, 1 file(s), 2.0 KiB)  by owner-laptop" in out
    # versions of a deleted file still list (from the trash)
    g = create_file(owner, vault, "gone.txt", b"gone")
    owner.delete(f"/vaults/{vault}/nodes/{g['id']}", params={"base_rev": g["rev"]})
    assert "gone.txt (deleted: in the trash): 1 version(s)" in cli.out("versions", "gone.txt", "--vault", vault)
    assert cli("cat", "gone.txt", "--vault", vault).stdout == b"gone"
    cli("restore", "gone.txt", "--vault", vault)
    out = cli.out("restore", "old", "--vault", vault)
    assert "restored old: 2 item(s)" in out
    assert cli("cat", "old/x.txt", "--vault", vault).stdout == b"x" * 2048
    assert "the trash is empty" in cli.out("trash", "--vault", vault)
    r = cli("restore", "old", "--vault", vault, ok=False)
    assert r.returncode == 1 and b"not in the trash" in r.stderr


def test_confirm_delete(setup, cli_server):
    cli, owner, _ = setup
    vault = owner.post("/vaults", json={"name": "bulk vault"}).json()["id"]   # a fresh window
    d = mkdir(owner, vault, "bulk")
    files = [create_file(owner, vault, f"{i}.log", b"log", parent=d["id"]) for i in range(8)]
    codes = [owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]}).status_code
             for f in files]
    assert codes == [200] * 5 + [409] * 3
    # the hold is of the whole burst: the 5 applied before it opened are pulled back into it
    assert len(owner.get(f"/vaults/{vault}/nodes/{d['id']}/children").json()["nodes"]) == 8
    out = cli.out("confirm-delete", "--vault", vault)        # not a terminal: list and explain
    assert "8 file(s) in 8 delete(s) from owner-laptop" in out and "bulk/0.log" in out
    assert "… and 3 more" in out and "gobi confirm-delete ID" in out
    hold = json.loads(owner.get(f"/vaults/{vault}/holds").text)["holds"][0]["id"]
    out = cli.out("confirm-delete", hold, "--vault", vault)
    assert f"{hold}: confirmed: 8 delete(s) applied" in out
    assert owner.get(f"/vaults/{vault}/nodes/{d['id']}/children").json()["nodes"] == []
    assert "no deletes are held" in cli.out("confirm-delete", "--vault", vault)


def test_conflicts_and_resolve(setup):
    cli, owner, vault = setup
    owner.put(f"/vaults/{vault}/settings", json={"conflict_strategy": "manual"})
    f = create_file(owner, vault, "plan.md", b"base")
    commit(owner, vault, f, b"server side")
    refs = upload(owner, vault, b"offline edit")
    other = Api(owner.http.base_url.__str__(), owner.token, device="phone")
    r = other.put(f"/vaults/{vault}/nodes/{f['id']}/content", json={
        "base_rev": f["rev"], "chunks": refs, "size": 12, "on_conflict": "strategy"})
    other.close()
    assert r.json()["conflict"]["result"] == "recorded"
    out = cli.out("conflicts", "--vault", vault)
    assert "plan.md  modify/modify  [manual: open]  mine: phone" in out
    out = cli.out("resolve", "plan.md", "--keep", "mine", "--vault", vault)
    assert "plan.md: modify/modify resolved, kept mine" in out
    assert cli("cat", "plan.md", "--vault", vault).stdout == b"offline edit"
    assert "no open conflicts" in cli.out("conflicts", "--vault", vault)
    assert "kept mine" in cli.out("conflicts", "--all", "--vault", vault)
    r = cli("resolve", "plan.md", "--keep", "mine", "--vault", vault, ok=False)
    assert r.returncode == 1 and b"no open conflict" in r.stderr
    owner.put(f"/vaults/{vault}/settings", json={"conflict_strategy": "keep-both"})


def test_gc(setup):
    cli, owner, vault = setup
    f = create_file(owner, vault, "big.bin", os.urandom(5000))
    owner.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    for e in owner.get(f"/vaults/{vault}/trash").json()["entries"]:
        owner.delete(f"/vaults/{vault}/trash/{e['id']}")
    report = json.loads(cli.out("gc", "--dry-run", "--json", "--vault", vault))
    assert report["collectable"]["chunks"] >= 1 and report["freed"]["chunks"] == 0
    out = cli.out("gc", "--vault", vault)
    assert f"freed:       {report['collectable']['chunks']} chunk(s)" in out
    assert "would free:  0 chunk(s)" in cli.out("gc", "--dry-run", "--vault", vault)


def test_where_errors(setup, tmp_path):
    cli, owner, vault = setup
    r = cli("trash", ok=False)                       # the test's cwd is no mount
    assert r.returncode == 1 and b"not inside a gobi mount" in r.stderr
    r = cli("versions", "a.txt", ok=False)
    assert b"--vault" in r.stderr
    r = cli("trash", "--vault", "no such vault", ok=False)
    assert b"no vault 'no such vault'" in r.stderr
    fresh = Cli(cli.srv, tmp_path)
    r = fresh("trash", "--vault", vault, ok=False)
    assert r.returncode == 1 and b"not logged in" in r.stderr


def test_every_server_command_takes_server_and_credentials(setup, cli_server, tmp_path):
    """One habit for every command that talks to a server: ``--server URL --credentials
    FILE`` works the same on each, here with a file holding only a token and no login."""
    from gobi.cli import build_parser

    cli, owner, vault = setup
    token_file = tmp_path / "token"
    token_file.write_text(owner.token + "\n")
    token_file.chmod(0o600)
    # A CLI with no login at all: only the token file says who it is.
    stranger = Cli(cli_server, tmp_path / "empty-home")
    where = ["--server", cli_server.url, "--credentials", str(token_file)]
    create_file(owner, vault, "token-file.txt", b"via a token file\n")
    assert stranger("cat", "token-file.txt", "--vault", vault, *where).stdout == b"via a token file\n"
    assert "token-file.txt" in stranger.out("versions", "token-file.txt", "--vault", vault, *where)
    assert stranger.out("vault", "list", *where).count(vault) == 1
    r = stranger("cat", "token-file.txt", "--vault", vault, ok=False)
    assert r.returncode == 1 and b"not logged in" in r.stderr
    r = stranger("cat", "token-file.txt", "--vault", vault, "--credentials", str(token_file), ok=False)
    assert r.returncode == 1 and b"--server" in r.stderr

    parser = build_parser()
    commands = [["vault", "list"], ["vault", "create", "v"], ["mount", "v", "/mnt"],
                ["versions", "p"], ["cat", "p"], ["restore", "p"], ["trash"], ["confirm-delete"],
                ["conflicts"], ["resolve", "p", "--keep", "mine"], ["gc"], ["doctor"]]
    for argv in commands:
        args = parser.parse_args([*argv, "--server", "http://s:1", "--credentials", "/f"])
        assert (args.server, args.credentials) == ("http://s:1", "/f"), argv
