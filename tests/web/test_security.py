"""The web page's security, over plain HTTP against a real server: session cookie
attributes (also behind an https proxy), CSRF on every form, sign-out revoking the
session, rate-limited sign-in, no open redirect, headers (CSP without inline scripts, no
framing), downloads as attachments, escaping, and 404 for non-members.

Every refused request is checked to have changed nothing.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from tests.server.util import commit, create_file, mkdir, read

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def vault(alice):
    r = alice.api.post("/vaults", json={"name": XSS})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def doc(alice, vault):
    """A file with two versions: v1 then v2 (the head)."""
    f = create_file(alice.api, vault, "résumé \"final\"; <b>.txt", b"v1")
    r = commit(alice.api, vault, f, b"v2")
    assert r.status_code == 200, r.text
    return {"node": r.json()}


def versions(api, vault, node_id):
    return api.get(f"/vaults/{vault}/nodes/{node_id}/versions").json()["versions"]


def set_cookies(response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}


def test_signed_out_pages_redirect_to_the_sign_in_form(web, vault):
    c = web()
    for path in ("/web/", f"/web/v/{vault}/d/root", f"/web/v/{vault}/trash"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/web/login"), path
    r = c.get(f"/web/v/{vault}/trash?x=1")
    assert unquote(r.headers["location"]) == f"/web/login?next=/web/v/{vault}/trash?x=1"
    assert c.get("/").headers["location"] == "/web/"
    # Posting without a session changes nothing and leads to the form.
    r = c.post(f"/web/v/{vault}/trash/t1/restore", {"csrf": "x"})
    assert r.status_code == 303 and r.headers["location"] == "/web/login"
    # A made-up or revoked cookie is cleared.
    c.http.cookies.set("gobi_session", "gobi_madeup")
    r = c.get("/web/")
    assert r.status_code == 303 and "Max-Age=0" in set_cookies(r)["gobi_session"]


def test_session_cookie_and_headers(web, alice):
    c = web()
    r = c.get("/web/login")
    nonce = set_cookies(r)["gobi_login"]
    assert "HttpOnly" in nonce and "SameSite=Strict" in nonce and "Secure" not in nonce
    r = c.login(alice.name)
    assert r.status_code == 303 and r.headers["location"] == "/web/"
    cookie = set_cookies(r)["gobi_session"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie                      # plain http on loopback
    token = c.http.cookies["gobi_session"]
    page = c.get("/web/")
    assert page.status_code == 200
    h = page.headers
    assert h["content-type"].startswith("text/html")
    csp = h["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert "unsafe-inline" not in csp
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store" and h["referrer-policy"] == "no-referrer"
    # No token in any URL or anywhere in the page; the form token only in hidden fields.
    urls = re.findall(r'(?:href|action|src)="([^"]*)"', page.text)
    assert token not in page.text and not any("token" in u for u in urls)
    assert c.csrf and not any(c.csrf in u for u in urls)
    assert "<script" not in page.text and " style=" not in page.text
    css = c.get("/web/static/gobi.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "max-age" in css.headers["cache-control"]


def test_behind_an_https_proxy_the_cookie_is_secure(web, alice, server):
    # One trusted proxy (GOBI_PROXIES_COUNT=1) that terminated TLS.
    # httpx keeps Secure cookies off plain http (the proxy would pass them on): by hand.
    c = web({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    nonce_cookie = set_cookies(c.get("/web/login"))["gobi_login"]
    assert "Secure" in nonce_cookie
    nonce = nonce_cookie.split("=", 1)[1].split(";", 1)[0]
    c.http.cookies.set("gobi_login", nonce)
    r = c.http.post("/web/login", data={"username": alice.name, "password": alice.password, "csrf": nonce})
    assert r.status_code == 303
    cookie = set_cookies(r)["__Host-gobi_session"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie
    token = cookie.split("=", 1)[1].split(";", 1)[0]
    c.http.cookies.set("__Host-gobi_session", token)
    r = c.http.get("/web/")
    assert r.status_code == 200 and alice.name in r.text
    # Over plain http the __Host- cookie is not the session cookie (and vice versa).
    plain = web()
    plain.http.cookies.set("__Host-gobi_session", token)
    assert plain.get("/web/").status_code == 303
    proxied = web({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    proxied.http.cookies.set("gobi_session", token)
    assert proxied.get("/web/").status_code == 303


def test_csrf_is_required_on_every_form(web, alice, vault, doc):
    c = web()
    c.login(alice.name)
    node = doc["node"]
    before = versions(alice.api, vault, node["id"])
    old = min(v["rev"] for v in before)
    url = f"/web/v/{vault}/f/{node['id']}/restore"
    data = {"rev": str(old), "base_rev": str(node["content_rev"])}
    assert c.post(url, data, csrf=False).status_code == 403                      # no token
    assert c.post(url, {**data, "csrf": "0" * 64}).status_code == 403            # a wrong one
    r = c.post(url, data, headers={"Sec-Fetch-Site": "cross-site"})              # from another site
    assert r.status_code == 403 and "nothing was done" in r.text
    assert c.post(url, data, headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    # Another session's token is no good either.
    other = web()
    other.login(alice.name)
    assert other.csrf != c.csrf
    assert c.post(url, {**data, "csrf": other.csrf}).status_code == 403
    assert versions(alice.api, vault, node["id"]) == before                      # nothing happened
    for path in (f"/web/v/{vault}/trash/t1/restore", f"/web/v/{vault}/conflicts/c1/resolve",
                 f"/web/v/{vault}/holds/h1/confirm", f"/web/v/{vault}/holds/h1/reject", "/web/logout"):
        assert c.post(path, {"keep": "mine"}, csrf=False).status_code == 403, path
    # With the token it works (and a stale base is refused as changed meanwhile).
    r = c.post(url, data)
    assert r.status_code == 303 and r.headers["location"] == f"/web/v/{vault}/f/{node['id']}"
    assert read(alice.api, vault, node["id"]) == b"v1"
    r = c.post(url, data)
    assert r.status_code == 409 and "changed since the page was loaded" in r.text
    # The sign-in form has its own token (a double-submit cookie).
    fresh = web()
    r = fresh.post("/web/login", {"username": alice.name, "password": alice.password}, csrf=False)
    assert r.status_code == 403 and "gobi_session" not in set_cookies(r)


def test_sign_out_revokes_the_session(web, alice):
    c = web()
    c.login(alice.name)
    token = c.http.cookies["gobi_session"]
    assert alice.api.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    r = c.post("/web/logout")
    assert r.status_code == 303 and r.headers["location"] == "/web/login"
    assert "Max-Age=0" in set_cookies(r)["gobi_session"]
    assert alice.api.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # Replaying the old cookie gets nowhere.
    c.http.cookies.set("gobi_session", token)
    assert c.get("/web/").status_code == 303


def test_sign_in_is_rate_limited(web, server, alice):
    from tests.servers import register
    name, _ = register(server)
    c = web()
    for _ in range(3):                                   # GOBI_LOGIN_MAX_FAILURES=3
        r = c.login(name, "wrong password")
        assert r.status_code == 200 and "Wrong username or password" in r.text
    r = c.login(name)                                    # even the right password, for now
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert int(r.headers["retry-after"]) > 0 and "gobi_session" not in set_cookies(r)


def test_no_open_redirect_after_sign_in(web, alice, vault):
    for target, expected in (("//evil.example/x", "/web/"), ("https://evil.example/", "/web/"),
                             ("/web//evil.example", "/web/"), ("/webx", "/web/"),
                             ("/web/\\evil", "/web/"), (f"/web/v/{vault}/trash", f"/web/v/{vault}/trash")):
        c = web()
        r = c.login(alice.name, next_url=target)
        assert r.status_code == 303 and r.headers["location"] == expected, target


def test_downloads_are_attachments(web, alice, vault, doc):
    c = web()
    c.login(alice.name)
    node = doc["node"]
    r = c.get(f"/web/v/{vault}/f/{node['id']}/download")
    assert r.status_code == 200 and r.content == read(alice.api, vault, node["id"])
    cd = r.headers["content-disposition"]
    assert cd.startswith("attachment; ")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%3B%20%3Cb%3E.txt" in cd
    assert 'filename="r_sum_ _final__ <b>.txt"' in cd          # the ASCII fallback, quoted safely
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    # An older version, named as such.
    old = min(v["rev"] for v in versions(alice.api, vault, node["id"]))
    r = c.get(f"/web/v/{vault}/f/{node['id']}/download?rev={old}")
    assert r.status_code == 200 and r.content == b"v1"
    assert f"%28version%20{old}%29.txt" in r.headers["content-disposition"]
    assert c.get(f"/web/v/{vault}/f/{node['id']}/download?rev=999999").status_code == 404
    assert c.get(f"/web/v/{vault}/f/{node['id']}/download?rev=x").status_code == 400


def test_names_are_escaped(web, alice, vault):
    api = alice.api
    half = mkdir(api, vault, "<script>alert(1)<")
    create_file(api, vault, "script>", b"x", parent=half["id"])
    create_file(api, vault, "<img src=x onerror=alert(1)>", b"x")
    c = web()
    c.login(alice.name)
    for path in ("/web/", f"/web/v/{vault}/d/root", f"/web/v/{vault}/d/{half['id']}"):
        page = c.get(path).text
        assert "<script" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(1)&lt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in c.get(f"/web/v/{vault}/d/root").text


def test_non_members_get_404(web, alice, mallory, vault, doc):
    node = doc["node"]
    before = versions(alice.api, vault, node["id"])
    c = web()
    c.login(mallory.name)
    pages = [f"/web/v/{vault}/d/root", f"/web/v/{vault}/f/{node['id']}", f"/web/v/{vault}/trash",
             f"/web/v/{vault}/conflicts", f"/web/v/{vault}/holds", f"/web/v/{vault}/f/{node['id']}/download"]
    for path in pages:
        r = c.get(path)
        assert r.status_code == 404, path
        assert XSS not in r.text and "résumé" not in r.text
    # The same answer as for a vault that does not exist.
    nowhere = c.get("/web/v/vnope/d/root")
    assert nowhere.status_code == 404
    assert c.get(pages[0]).text == nowhere.text
    r = c.post(f"/web/v/{vault}/f/{node['id']}/restore", {"rev": str(min(v["rev"] for v in before))})
    assert r.status_code == 404
    assert versions(alice.api, vault, node["id"]) == before
    assert XSS not in c.get("/web/").text                    # not in mallory's vault list


def test_read_only_members_see_no_write_buttons(web, alice, bob, vault, doc):
    assert alice.api.put(f"/vaults/{vault}/members/{bob.name}", json={"role": "read"}).status_code == 200
    node = doc["node"]
    c = web()
    c.login(bob.name)
    page = c.get(f"/web/v/{vault}/f/{node['id']}")
    assert page.status_code == 200 and "/restore" not in page.text and "/download" in page.text
    before = versions(alice.api, vault, node["id"])
    r = c.post(f"/web/v/{vault}/f/{node['id']}/restore", {"rev": str(before[-1]["rev"])})
    assert r.status_code == 403
    assert versions(alice.api, vault, node["id"]) == before


def test_web_routes_stay_out_of_the_api_description(server):
    import httpx
    spec = httpx.get(server.url + "/docs/openapi.json", timeout=30).json()
    assert [p for p in spec["paths"] if p.startswith("/web") or p == "/"] == []
    # The API keeps answering JSON errors.
    r = httpx.get(server.url + "/api/v1/vaults/nope", timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
