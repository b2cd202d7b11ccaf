"""Accounts: registration, sessions, revocation, closed registration, login limits."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import httpx
import pytest

from tests.servers import Api, ServerProcess


def test_register_exact_call_and_login(server, anon):
    r = anon.post("/users/", json={"username": "carol", "password": "long enough pw"})
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "carol"
    assert "password" not in r.text
    # The trailing-slash-less form works too.
    r = anon.post("/users", json={"username": "carol2", "password": "long enough pw"})
    assert r.status_code == 201, r.text
    r = anon.post("/sessions", json={"username": "carol", "password": "long enough pw"})
    assert r.status_code == 201
    token = r.json()["token"]
    me = httpx.get(server.api + "/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "carol"


@pytest.mark.parametrize("body, code", [
    ({"username": "dave"}, "bad_request"),
    ({"username": "Dave!", "password": "long enough pw"}, "bad_request"),
    ({"username": "", "password": "long enough pw"}, "bad_request"),
    ({"username": "dave", "password": "short"}, "bad_request"),
    ({"username": "dave", "password": "long enough pw", "admin": True}, "bad_request"),
    (["dave"], "bad_request"),
])
def test_register_rejects_bad_input(anon, body, code):
    r = anon.post("/users/", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code


def test_a_short_password_is_refused_with_the_rule(anon):
    r = anon.post("/users/", json={"username": "root", "password": "toor"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "invalid request body: password: a password needs 8 to 1024 characters (this one has 4)")


def test_malformed_json(anon):
    r = anon.post("/users/", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"


def test_duplicate_username(anon):
    body = {"username": "erin", "password": "long enough pw"}
    assert anon.post("/users/", json=body).status_code == 201
    r = anon.post("/users/", json=body)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "username_taken"


def test_wrong_password_and_unknown_user_look_alike(anon):
    anon.post("/users/", json={"username": "frank", "password": "long enough pw"})
    a = anon.post("/sessions", json={"username": "frank", "password": "wrong password"})
    b = anon.post("/sessions", json={"username": "nobody-here", "password": "wrong password"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


def test_logout_revokes_token(server, alice):
    assert alice.get("/users/me").status_code == 200
    assert alice.delete("/sessions/current").status_code == 204
    r = alice.get("/users/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


def test_only_token_hashes_are_stored(server, alice):
    db = sqlite3.connect(server.data_dir / "metadata.db")
    rows = db.execute("SELECT token_hash FROM sessions").fetchall()
    dump = "\n".join(db.iterdump())
    db.close()
    assert rows
    assert alice.token not in dump
    assert "correct horse battery" not in dump  # passwords are Argon2id hashes
    assert "$argon2id$" in dump


def test_closed_registration_and_admin_add(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={"GOBI_OPEN_REGISTRATION": "false"}).start()
    try:
        r = httpx.post(srv.api + "/users/", json={"username": "gina", "password": "long enough pw"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "registration_closed"
        out = subprocess.run(
            [sys.executable, "-m", "gobi", "user", "add", "gina", "--password-stdin",
             "--data-dir", str(srv.data_dir)],
            input="long enough pw\n", text=True, capture_output=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        r = httpx.post(srv.api + "/sessions", json={"username": "gina", "password": "long enough pw"})
        assert r.status_code == 201, r.text
    finally:
        srv.stop()


def test_failed_logins_slow_the_address_never_the_owner(tmp_path):
    """A stranger's failures are counted per (username, address) and per address: they
    throttle the stranger, while the owner's correct password from elsewhere works."""
    srv = ServerProcess(tmp_path / "srv", env={
        "GOBI_LOGIN_MAX_FAILURES": "3", "GOBI_LOGIN_MAX_FAILURES_PER_ADDRESS": "5",
        "GOBI_PROXIES_COUNT": "1",   # X-Forwarded-For says who the client is
    }).start()

    def login(user: str, password: str, address: str) -> httpx.Response:
        return httpx.post(srv.api + "/sessions", json={"username": user, "password": password},
                          headers={"X-Forwarded-For": address})

    try:
        for name in ("hank", "ivy"):
            httpx.post(srv.api + "/users/", json={"username": name, "password": "long enough pw"})
        stranger, owner = "203.0.113.7", "198.51.100.20"
        codes = [login("hank", "bad password", stranger).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        r = login("hank", "long enough pw", stranger)      # the stranger's address waits…
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) > 0
        assert login("hank", "long enough pw", owner).status_code == 201   # …the owner does not
        assert login("hank", "typo typo", owner).status_code == 401      # nor after a typo
        assert login("hank", "long enough pw", owner).status_code == 201
        # The stranger's address has a budget over all usernames: 3 + 2 failures spend it.
        for _ in range(2):
            assert login("ivy", "bad password", stranger).status_code == 401
        assert login("ivy", "long enough pw", stranger).status_code == 429
        assert login("ivy", "long enough pw", owner).status_code == 201
        # IPv6 clients are counted by their /64: a fresh address inside it does not help.
        for i in range(3):
            login("ivy", "bad password", f"2001:db8:1:2::{i + 1}")
        assert login("ivy", "long enough pw", "2001:db8:1:2::99").status_code == 429
        assert login("ivy", "long enough pw", "2001:db8:1:3::1").status_code == 201
    finally:
        srv.stop()


def test_sign_ups_are_limited_per_address(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={
        "GOBI_REGISTER_MAX_PER_ADDRESS": "2", "GOBI_PROXIES_COUNT": "1"}).start()
    try:
        def sign_up(name: str, address: str) -> httpx.Response:
            return httpx.post(srv.api + "/users/", json={"username": name, "password": "long enough pw"},
                              headers={"X-Forwarded-For": address})

        assert [sign_up(f"s{i}", "203.0.113.9").status_code for i in range(3)] == [201, 201, 429]
        r = sign_up("s3", "203.0.113.9")
        assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
        assert sign_up("s3", "198.51.100.3").status_code == 201      # another address
        # Nothing was created for the refused sign-ups.
        assert httpx.post(srv.api + "/sessions", json={"username": "s2", "password": "long enough pw"}
                          ).status_code == 401
    finally:
        srv.stop()


def test_sign_up_by_invite(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={"GOBI_REQUIRE_INVITE": "true"}).start()
    try:
        def invite(name: str, *extra: str) -> str:
            out = subprocess.run([sys.executable, "-m", "gobi", "user", "invite", name, *extra,
                                  "--data-dir", str(srv.data_dir)],
                                 text=True, capture_output=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        body = {"username": "jo", "password": "long enough pw"}
        r = httpx.post(srv.api + "/users/", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "registration_closed"
        assert "gobi user invite" in r.json()["error"]["message"]
        code = invite("jo")
        assert httpx.post(srv.api + "/users/", json={**body, "username": "kim", "invite": code}
                          ).status_code == 403                       # for jo only
        assert httpx.post(srv.api + "/users/", json={**body, "invite": code[:-2] + "AA"}
                          ).status_code == 403                       # tampered
        assert httpx.post(srv.api + "/users/", json={**body, "invite": invite("jo", "--valid", "0s")}
                          ).status_code == 403                       # expired
        assert httpx.post(srv.api + "/users/", json={**body, "invite": code}).status_code == 201
        r = httpx.post(srv.api + "/users/", json={**body, "invite": code})   # used up
        assert r.status_code == 409 and r.json()["error"]["code"] == "username_taken"
    finally:
        srv.stop()
