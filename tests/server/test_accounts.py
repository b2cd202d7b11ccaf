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


def test_failed_logins_are_rate_limited(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={
        "GOBI_LOGIN_MAX_FAILURES": "3", "GOBI_LOGIN_MAX_FAILURES_PER_ADDRESS": "5",
    }).start()
    try:
        api = Api(srv.api)
        api.post("/users/", json={"username": "hank", "password": "long enough pw"})
        api.post("/users/", json={"username": "ivy", "password": "long enough pw"})
        codes = [api.post("/sessions", json={"username": "hank", "password": "bad password"}).status_code
                 for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        # Even the right password is refused while the user is locked out.
        r = api.post("/sessions", json={"username": "hank", "password": "long enough pw"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) > 0
        # Another user from the same address still gets in until the address budget is spent.
        assert api.post("/sessions", json={"username": "ivy", "password": "long enough pw"}).status_code == 201
        for _ in range(2):
            api.post("/sessions", json={"username": "ivy", "password": "bad password"})
        r = api.post("/sessions", json={"username": "ivy", "password": "long enough pw"})
        assert r.status_code == 429
        api.close()
    finally:
        srv.stop()
