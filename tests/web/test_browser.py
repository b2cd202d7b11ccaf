"""The web page end to end in headless Chromium: sign in, browse, download, restore a
version, restore from the trash, resolve a conflict, confirm a held mass delete, sign out.

Data is made over the REST API (as the mount would); every action is taken by clicking in
the browser, and its effect is checked over the API again. Each page visited is saved as
a screenshot in test-artifacts/web/, and the browser's console must stay free of errors
(a Content-Security-Policy violation, say).
"""

from __future__ import annotations

import time

import pytest
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.server.util import commit, create_file, mkdir, read, upload
from tests.servers import Api

# Names cannot hold "/", so the script tag is a vault's name, a path (a folder named
# "<script>alert(1)<" holding "script>"), and a file named like an HTML injection whose
# bytes are a script (they must download, never render on the server's origin).
XSS = "<script>alert(1)</script>"
XSS_FILE = "<img src=x onerror=alert(1)>.html"
XSS_BYTES = b"<script>alert(2)</script>"


@pytest.fixture(scope="module")
def vault(alice, bob):
    r = alice.api.post("/vaults", json={"name": "Family photos & notes"})
    assert r.status_code == 201, r.text
    vid = r.json()["id"]
    assert alice.api.put(f"/vaults/{vid}/members/{bob.name}", json={"role": "write"}).status_code == 200
    return vid


def wait_page(browser, click) -> None:
    """Click something that loads a new page and wait until it has.

    The old page is marked with a window property; a new document has none.
    (Waiting for the old <html> element to go stale races with Chrome's
    navigation: asking about an element mid-navigation can answer "Node
    with given id does not belong to the document", a WebDriverException
    that is not a StaleElementReferenceException.)"""
    browser.execute_script("window.__gobiOldPage = true")
    click()

    def loaded(b) -> bool:
        try:
            return b.execute_script(
                "return window.__gobiOldPage === undefined && document.readyState === 'complete'")
        except WebDriverException:  # the document is being replaced right now
            return False

    WebDriverWait(browser, 15).until(loaded)


def console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def no_alert(browser) -> None:
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018


def assert_inert(browser) -> None:
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.CSS_SELECTOR, "[onerror], [onload], [onclick]") == []
    assert [i.get_attribute("src") for i in browser.find_elements(By.TAG_NAME, "img")] == \
        [browser.current_url.split("/web/")[0] + "/web/static/favicon.svg"]
    no_alert(browser)


def flash(browser) -> str:
    return browser.find_element(By.ID, "flash").text


def sign_in(browser, server, user) -> None:
    browser.get(server.url + "/web/login")
    browser.find_element(By.ID, "username").send_keys(user.name)
    browser.find_element(By.ID, "password").send_keys(user.password)
    wait_page(browser, browser.find_element(By.ID, "signin").click)
    assert browser.current_url.endswith("/web/"), browser.current_url


@pytest.fixture
def as_alice(browser, server, alice):
    browser.get(server.url + "/web/")
    if "/web/login" in browser.current_url or alice.name not in browser.page_source:
        browser.delete_all_cookies()
        sign_in(browser, server, alice)
    browser.get_log("browser")      # start each test with an empty console
    yield browser
    assert console_errors(browser) == []


def test_sign_in(browser, server, alice, vault, shot):
    browser.delete_all_cookies()
    browser.get(server.url + "/web/v/" + vault + "/trash")
    assert "/web/login" in browser.current_url         # not signed in: the sign-in form
    shot("01-sign-in")
    browser.find_element(By.ID, "username").send_keys(alice.name)
    browser.find_element(By.ID, "password").send_keys("not the password")
    wait_page(browser, browser.find_element(By.ID, "signin").click)
    assert "Wrong username or password" in browser.find_element(By.ID, "login-error").text
    shot("02-sign-in-wrong-password")
    # The username stays filled in; the password is typed again.
    assert browser.find_element(By.ID, "username").get_attribute("value") == alice.name
    browser.find_element(By.ID, "password").send_keys(alice.password)
    wait_page(browser, browser.find_element(By.ID, "signin").click)
    # Back where the person wanted to go.
    assert browser.current_url == f"{server.url}/web/v/{vault}/trash"
    cookie = browser.get_cookie("gobi_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["value"] not in browser.page_source      # the token is nowhere in the page
    # A normal session: the same token works as a bearer token on the API.
    r = alice.api.get("/users/me", headers={"Authorization": f"Bearer {cookie['value']}"})
    assert r.status_code == 200 and r.json()["username"] == alice.name
    browser.get(server.url + "/web/")
    assert "Family photos &amp; notes" in browser.page_source
    assert console_errors(browser) == []
    shot("03-vaults")


def test_browse_and_download(as_alice, server, alice, vault, downloads, shot):
    browser = as_alice
    api = alice.api
    docs = mkdir(api, vault, "docs")
    mkdir(api, vault, "2024 trip", parent=docs["id"])
    notes = b"# Notes\n" + b"line of text\n" * 3000       # several chunks
    create_file(api, vault, "notes.md", notes, parent=docs["id"])
    create_file(api, vault, "résumé 2024.pdf", b"%PDF-1.4 not really\n", parent=docs["id"])
    create_file(api, vault, XSS_FILE, XSS_BYTES, parent=docs["id"])
    half = mkdir(api, vault, "<script>alert(1)<", parent=docs["id"])
    create_file(api, vault, "script>", b"x", parent=half["id"])
    assert api.post("/vaults", json={"name": XSS}).status_code == 201
    r = api.post(f"/vaults/{vault}/nodes", json={"parent": docs["id"], "name": "latest", "kind": "symlink",
                                                 "target": "notes.md"})
    assert r.status_code == 201, r.text

    browser.get(server.url + "/web/")
    # Names are text, not markup: no script element anywhere, no injected handler, no alert.
    assert XSS in [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".vault-link")]
    assert_inert(browser)
    wait_page(browser, browser.find_element(By.LINK_TEXT, "Family photos & notes").click)
    wait_page(browser, browser.find_element(By.LINK_TEXT, "docs").click)
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.files tbody th.name a span")]
    assert names[:2] == ["2024 trip", "<script>alert(1)<"]       # folders first
    assert set(names[2:]) == {"notes.md", "résumé 2024.pdf", XSS_FILE, "latest"}
    assert_inert(browser)
    crumbs = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".crumbs li")]
    assert crumbs == ["Family photos & notes", "docs"]
    shot("04-folder")

    # Download from the listing: the exact bytes arrive as a file.
    row = browser.find_element(By.XPATH, "//tr[th//span[text()='notes.md']]")
    row.find_element(By.CSS_SELECTOR, "a[href$='/download']").click()
    target = downloads / "notes.md"
    deadline = time.monotonic() + 20
    while not (target.exists() and target.stat().st_size == len(notes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.read_bytes() == notes

    # The path that spells a script tag, shown as text.
    wait_page(browser, browser.find_element(By.LINK_TEXT, "<script>alert(1)<").click)
    wait_page(browser, browser.find_element(By.LINK_TEXT, "script>").click)
    assert browser.find_element(By.CSS_SELECTOR, ".facts dd").text == "docs/" + XSS
    assert_inert(browser)
    shot("05-file-path-spelling-a-script")

    # An HTML file named like an injection: its page escapes it, its bytes (a script) are
    # downloaded as an attachment and never run on this origin.
    browser.get(f"{server.url}/web/v/{vault}/d/{docs['id']}")
    wait_page(browser, browser.find_element(By.LINK_TEXT, XSS_FILE).click)
    assert browser.find_element(By.ID, "file-name").text == XSS_FILE
    assert_inert(browser)
    shot("06-file-named-like-markup")
    browser.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 20
    while not any(p.read_bytes() == XSS_BYTES for p in downloads.iterdir()
                  if not p.name.endswith(".crdownload")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(p.read_bytes() == XSS_BYTES for p in downloads.iterdir()), \
        sorted(p.name for p in downloads.iterdir())
    assert browser.find_element(By.ID, "file-name").text == XSS_FILE   # still on our page
    assert_inert(browser)


def test_restore_a_version(as_alice, server, alice, vault, shot):
    browser = as_alice
    api = alice.api
    f = create_file(api, vault, "report.txt", b"first draft")
    r = commit(api, vault, f, b"second draft")
    assert r.status_code == 200, r.text
    r = commit(api, vault, r.json(), b"third draft, ruined")
    assert r.status_code == 200, r.text
    versions = api.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]
    first = min(v["rev"] for v in versions)

    browser.get(f"{server.url}/web/v/{vault}/d/root")
    wait_page(browser, browser.find_element(By.LINK_TEXT, "report.txt").click)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")
    assert len(rows) == 3 and "current" in rows[0].text.lower()
    shot("07-file-versions")
    wait_page(browser, browser.find_element(By.ID, f"restore-{first}").click)
    assert f"Restored version {first} of “report.txt”" in flash(browser)
    shot("08-version-restored")
    assert read(api, vault, f["id"]) == b"first draft"
    after = api.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]
    assert len(after) == 4 and after[0]["head"] and after[0]["origin"] == f"restore:{first}"
    assert after[0]["device"] == "web"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.versions tbody tr")
    assert len(rows) == 4 and f"restored from version {first}" in rows[0].text
    # Reloading the page does not restore again (POST, then redirect, then GET).
    browser.refresh()
    assert len(api.get(f"/vaults/{vault}/nodes/{f['id']}/versions").json()["versions"]) == 4


def test_restore_from_trash(as_alice, server, alice, vault, shot):
    browser = as_alice
    api = alice.api
    project = mkdir(api, vault, "old project")
    create_file(api, vault, "plan.md", b"the plan", parent=project["id"])
    create_file(api, vault, "budget.csv", b"a,b\n1,2\n", parent=project["id"])
    r = api.delete(f"/vaults/{vault}/nodes/{project['id']}", params={"base_rev": project["rev"],
                                                                      "recursive": "true"})
    assert r.status_code == 200, r.text
    assert api.get(f"/vaults/{vault}/lookup", params={"path": "old project"}).status_code == 404

    browser.get(f"{server.url}/web/v/{vault}/d/root")
    wait_page(browser, browser.find_element(By.LINK_TEXT, "Trash").click)
    row = browser.find_element(By.XPATH, "//tr[th//span[text()='old project']]")
    assert "2 file(s)" in row.text
    shot("09-trash")
    wait_page(browser, row.find_element(By.TAG_NAME, "button").click)
    assert "Restored “old project” with 2 item(s) inside" in flash(browser)
    assert browser.find_elements(By.XPATH, "//tr[th//span[text()='old project']]") == []
    shot("10-trash-restored")
    node = api.get(f"/vaults/{vault}/lookup", params={"path": "old project/plan.md"})
    assert node.status_code == 200 and read(api, vault, node.json()["id"]) == b"the plan"
    # The flash links to what came back.
    wait_page(browser, browser.find_element(By.LINK_TEXT, "Show it").click)
    shown = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "th.name a span")}
    assert shown == {"plan.md", "budget.csv"}


def test_resolve_a_conflict(as_alice, server, alice, bob, vault, shot):
    browser = as_alice
    api = alice.api
    r = api.put(f"/vaults/{vault}/settings", json={"conflict_strategy": "manual"})
    assert r.status_code == 200, r.text
    try:
        f = create_file(api, vault, "shopping list.txt", b"milk\n")
        assert commit(api, vault, f, b"milk\neggs\n").status_code == 200     # alice's edit
        # bob edited the old version on his desktop: a manual conflict, alice's stays.
        refs = upload(bob.api, vault, b"milk\nbread\n")
        r = bob.api.put(f"/vaults/{vault}/nodes/{f['id']}/content", json={
            "base_rev": f["rev"], "chunks": refs, "size": 11, "on_conflict": "strategy"})
        assert r.status_code == 200 and r.json()["conflict"]["result"] == "recorded", r.text
        conflict = r.json()["conflict"]
    finally:
        api.put(f"/vaults/{vault}/settings", json={"conflict_strategy": "keep-both"})

    browser.get(f"{server.url}/web/v/{vault}/d/root")
    nav = browser.find_element(By.PARTIAL_LINK_TEXT, "Conflicts")
    assert nav.find_element(By.CLASS_NAME, "badge").text == "1"
    wait_page(browser, nav.click)
    card = browser.find_element(By.ID, f"c-{conflict['id']}")
    assert "shopping list.txt" in card.text and "Edited on two devices" in card.text
    assert "bob-desktop" in card.text
    shot("11-conflicts")
    wait_page(browser, browser.find_element(By.ID, f"resolve-{conflict['id']}-mine").click)
    assert "Resolved “shopping list.txt”: Use bob-desktop's edit" in flash(browser)
    assert "No open conflicts" in browser.page_source
    shot("12-conflict-resolved")
    assert read(api, vault, f["id"]) == b"milk\nbread\n"
    [info] = [c for c in api.get(f"/vaults/{vault}/conflicts", params={"state": "all"}).json()["conflicts"]
              if c["id"] == conflict["id"]]
    assert (info["state"], info["resolution"]) == ("resolved", "mine")


def test_confirm_a_held_mass_delete(as_alice, server, alice, vault, shot):
    browser = as_alice
    api = alice.api
    bulk = mkdir(api, vault, "camera uploads")
    for i in range(8):
        create_file(api, vault, f"IMG_{i:04}.jpg", b"jpeg %d" % i, parent=bulk["id"])
    # A script on another device deletes the lot: held for the owner.
    rogue = Api(server.api, api.token, device="rogue-script")
    try:
        r = rogue.delete(f"/vaults/{vault}/nodes/{bulk['id']}",
                         params={"base_rev": bulk["rev"], "recursive": "true"})
    finally:
        rogue.close()
    assert r.status_code == 409 and r.json()["error"]["code"] == "delete_held", r.text
    hold = r.json()["error"]["details"]["hold"]

    browser.get(f"{server.url}/web/v/{vault}/d/root")
    wait_page(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "Held deletes").click)
    card = browser.find_element(By.ID, f"h-{hold['id']}")
    assert "8 file(s) from rogue-script" in card.text and "camera uploads" in card.text
    shot("13-held-deletes")
    wait_page(browser, browser.find_element(By.ID, f"confirm-{hold['id']}").click)
    assert "Confirmed: the 8 file(s) went to the trash" in flash(browser)
    shot("14-held-delete-confirmed")
    assert api.get(f"/vaults/{vault}/lookup", params={"path": "camera uploads"}).status_code == 404
    trash = api.get(f"/vaults/{vault}/trash", params={"path": "camera uploads"}).json()["entries"]
    assert len(trash) == 1 and trash[0]["files"] == 8


def test_not_found_and_narrow_screens(as_alice, server, alice, vault, shot):
    browser = as_alice
    browser.get(f"{server.url}/web/v/vnosuchvault/d/root")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
    assert "not a member" in browser.find_element(By.ID, "error-message").text
    shot("15-not-found")
    browser.get_log("browser")          # the 404 itself is logged as a failed resource
    # A phone-sized screen: nothing wider than the screen, every action still reachable.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        for path in ("d/root", "trash", "conflicts?state=all"):
            browser.get(f"{server.url}/web/v/{vault}/{path}")
            assert browser.execute_script("return document.documentElement.scrollWidth") <= 390, path
        shot("16-narrow-conflicts")
        browser.get(f"{server.url}/web/v/{vault}/d/root")
        shot("17-narrow-folder")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_sign_out_revokes_the_session(as_alice, server, alice, shot):
    browser = as_alice
    token = browser.get_cookie("gobi_session")["value"]
    wait_page(browser, browser.find_element(By.ID, "logout").click)
    assert "/web/login" in browser.current_url
    assert "You are signed out" in flash(browser)
    shot("18-signed-out")
    assert browser.get_cookie("gobi_session") is None
    r = alice.api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    browser.get(server.url + "/web/")
    assert "/web/login" in browser.current_url
