"""Fixtures for the web page tests: one real gobi server for the package, users made over
the API, a cookie-keeping HTTP client that signs in through the page's form, and headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

Screenshots go to ``test-artifacts/web/`` (git-ignored; CI keeps the directory).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.needs import missing
from tests.servers import Api, ServerProcess, register

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct horse battery"

# Chromium as root in a container: no sandbox, and nothing that talks to the outside.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--no-proxy-server", "--disable-extensions",
    "--disable-default-apps", "--mute-audio", "--window-size=1280,900", "--lang=en-US",
]


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("web-server"), env={
        # Held mass deletes: more than 5 files from one device within the window.
        "GOBI_MASS_DELETE_FILES": "5",
        # Three failed sign-ins per username, then 429 (the page shows it).
        "GOBI_LOGIN_MAX_FAILURES": "3",
        # One proxy in front: X-Forwarded-Proto says whether the browser used https.
        "GOBI_PROXIES_COUNT": "1",
    }).start()
    yield srv
    srv.stop()


class User:
    """A user with an API client (bearer token, its own device id)."""

    def __init__(self, server: ServerProcess, device: str):
        self.name, token = register(server, PASSWORD)
        self.password = PASSWORD
        self.api = Api(server.api, token, device=device)

    def close(self) -> None:
        self.api.close()


@pytest.fixture(scope="package")
def alice(server):
    user = User(server, "alice-laptop")
    yield user
    user.close()


@pytest.fixture(scope="package")
def bob(server):
    user = User(server, "bob-desktop")
    yield user
    user.close()


@pytest.fixture(scope="package")
def mallory(server):
    user = User(server, "mallory-box")
    yield user
    user.close()


class WebClient:
    """What a browser does, over plain HTTP: cookies kept, forms posted with their token."""

    def __init__(self, server: ServerProcess, headers: dict[str, str] | None = None):
        self.http = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False,
                                 headers=headers or {})
        self.csrf = ""

    def get(self, url: str, **kw) -> httpx.Response:
        r = self.http.get(url, **kw)
        m = re.search(r'name="csrf" value="([^"]+)"', r.text)
        if m:
            self.csrf = m.group(1)
        return r

    def post(self, url: str, data: dict | None = None, csrf: bool = True, **kw) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        return self.http.post(url, data=data, **kw)

    def login(self, username: str, password: str = PASSWORD, next_url: str | None = None) -> httpx.Response:
        self.get("/web/login")
        data = {"username": username, "password": password}
        if next_url is not None:
            data["next"] = next_url
        r = self.post("/web/login", data)
        if r.status_code == 303:
            self.get("/web/")      # picks up the session's form token
        return r

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def web(server):
    clients: list[WebClient] = []

    def make(headers: dict[str, str] | None = None) -> WebClient:
        clients.append(WebClient(server, headers))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


# -- the browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="package")
def downloads():
    path = Path(tempfile.mkdtemp(prefix="gobi-web-dl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="package")
def browser(downloads):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        missing(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian packages chromium and "
                f"chromium-driver; bash scripts/bootstrap.sh --test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="gobi-web-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="package")
def shot(browser):
    """``shot(name)``: a full-page screenshot of the browser's page into test-artifacts/web."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1},
        })
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    return take
