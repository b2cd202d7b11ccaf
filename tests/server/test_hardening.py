"""Loose edges, closed: empty bodies, control characters in names, file modes, security
headers on every answer, 405 with Allow, bounded Range parsing."""

from __future__ import annotations

import hashlib
import os
import stat

import httpx
import pytest

from .util import create_file, mkdir

CONTROL = ["\x1b[31m", "bell\x07", "cr\r", "lf\n", "tab\t", "del\x7f", "c1\x85", "csi\x9b"]


def test_a_missing_body_is_refused_where_one_is_required(alice, vault):
    r = alice.put(f"/vaults/{vault}/settings", json={"conflict_strategy": "manual"})
    assert r.status_code == 200
    for kwargs in ({}, {"content": b""}, {"content": b"  \n"}):
        r = alice.put(f"/vaults/{vault}/settings", **kwargs)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", kwargs
        assert "JSON body" in r.json()["error"]["message"]
    assert alice.get(f"/vaults/{vault}/settings").json()["conflict_strategy"] == "manual"
    for path in ("/nodes", "/chunks/missing", "/ops", "/gc"):
        assert alice.post(f"/vaults/{vault}{path}").status_code == 400, path


@pytest.mark.parametrize("bad", CONTROL)
def test_control_characters_are_refused_in_every_name(alice, vault, bad):
    r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": bad, "kind": "file"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name"
    assert "control characters (U+0000-U+001F, U+007F-U+009F)" in r.json()["error"]["message"]
    d = mkdir(alice, vault, f"ok-{hashlib.sha1(bad.encode()).hexdigest()[:8]}")
    r = alice.patch(f"/vaults/{vault}/nodes/{d['id']}", json={"base_rev": d["rev"], "name": f"x{bad}y"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name"
    r = alice.post("/vaults", json={"name": f"vault {bad}"})
    assert r.status_code == 400 and "control characters" in r.json()["error"]["message"]
    names = [n["name"] for n in alice.get(f"/vaults/{vault}/nodes/root/children").json()["nodes"]]
    assert not any(bad in n for n in names)


def test_unicode_names_without_control_characters_still_work(alice, vault):
    for name in ("résumé.txt", "日本語", "emoji 🙂", "spaces and ; quotes \"'"):
        r = alice.post(f"/vaults/{vault}/nodes", json={"parent": "root", "name": name, "kind": "dir"})
        assert r.status_code == 201, (name, r.text)


def test_data_files_are_for_the_server_user_only(server, alice, vault):
    create_file(alice, vault, "secret.txt", b"private bytes")
    checked = 0
    for root, dirs, files in os.walk(server.data_dir):
        for name in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(root, name), oct(mode))
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(root, name), oct(mode))
            checked += 1
    assert checked >= 3           # metadata.db (+ WAL), key file, at least one blob
    assert stat.S_IMODE(os.stat(server.data_dir).st_mode) & 0o077 == 0


def test_every_answer_carries_security_headers(server, alice, vault):
    answers = {
        "api ok": alice.get(f"/vaults/{vault}"),
        "api 404": alice.get("/vaults/nope"),
        "api 401": httpx.get(server.api + "/users/me"),
        "route 404": httpx.get(server.url + "/nowhere"),
        "405": httpx.patch(server.api + "/vaults"),
        "health": httpx.get(server.url + "/health"),
        "docs": httpx.get(server.url + "/docs"),
        "openapi": httpx.get(server.url + "/docs/openapi.json"),
        "web": httpx.get(server.url + "/web/login"),
    }
    for what, r in answers.items():
        h = r.headers
        assert h["x-content-type-options"] == "nosniff", what
        assert h["referrer-policy"] == "no-referrer", what
        assert "frame-ancestors 'none'" in h["content-security-policy"], what
    docs_csp = answers["docs"].headers["content-security-policy"]
    assert "script-src 'self' https://cdn.jsdelivr.net/" in docs_csp and "unsafe-eval" not in docs_csp
    assert "<script>" not in answers["docs"].text           # no inline script to allow
    assert "default-src 'none'" in answers["api ok"].headers["content-security-policy"]
    assert "style-src 'self'" in answers["web"].headers["content-security-policy"]


def test_405_says_which_methods_are_allowed(server, alice, vault):
    r = alice.request("PATCH", "/vaults")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    r = alice.request("POST", f"/vaults/{vault}/nodes/root")
    assert r.status_code == 405
    assert {"GET", "PATCH", "DELETE"} <= set(r.headers["allow"].replace(" ", "").split(","))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_range_parsing_is_bounded(alice, vault, method):
    data = b"ranged bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert alice.put(f"/vaults/{vault}/chunks/{digest}", content=data).status_code in (200, 201)
    url = f"/vaults/{vault}/chunks/{digest}"
    for header, expected in ((f"bytes={'9' * 4301}-", 400), (f"bytes={'9' * 100}-", 416),
                             (f"bytes=0-{'9' * 100}", 206), (f"bytes=-{'9' * 100}", 206),
                             ("bytes=2-5", 206)):
        r = alice.request(method, url, headers={"Range": header})
        got = r.status_code
        if method == "HEAD" and expected == 206:
            expected = 200          # HEAD answers the whole size
        assert got == expected, (header[:20], got)
