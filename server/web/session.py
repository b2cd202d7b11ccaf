"""Browser sessions for the web page: the session cookie, CSRF tokens, flash messages and
the security headers every page carries.

- A login from the page is an ordinary session of ``Accounts`` (the same store, TTL,
  rate limits and revocation as a bearer token): the cookie holds the session token, so
  logging out revokes it for every client that might have copied it.
- The cookie is ``HttpOnly`` and ``SameSite=Strict``; over https (directly, or behind
  ``proxies_count`` proxies that send ``X-Forwarded-Proto: https``) it is ``Secure`` and
  named ``__Host-gobi_session`` so a sibling subdomain cannot plant one.
- CSRF: every state-changing form carries a token derived from the session token
  (HMAC-SHA256 keyed with it), so no page can forge it without the HttpOnly cookie.
  Requests a browser marks ``Sec-Fetch-Site: cross-site``/``same-site`` are refused as
  well. The login form, which has no session yet, uses a double-submit nonce cookie.
- Nothing secret ever appears in a URL: tokens travel in cookies and form bodies only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from sanic import Request
from sanic.request.parameters import RequestParameters
from sanic.response import BaseHTTPResponse

from ..access import Actor

SESSION = "gobi_session"
LOGIN_NONCE = "gobi_login"
FLASH = "gobi_flash"
WEB_DEVICE = "web"      # how the page appears in events and versions

# No inline scripts or styles, nothing from other origins, no framing. The page needs no
# JavaScript; forms post only to this origin.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# File bytes are downloaded, never rendered: even if a browser ignored the attachment,
# the sandbox keeps the content away from this origin.
DOWNLOAD_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"

PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


def cookie(request: Request, name: str) -> str | None:
    """The cookie of exactly this name (Sanic's ``cookies.get`` would prefer a
    ``__Host-``/``__Secure-`` variant of it)."""
    return RequestParameters.get(request.cookies, name)


def is_https(request: Request) -> bool:
    # request.scheme honours X-Forwarded-Proto only with PROXIES_COUNT (proxies_count) set,
    # so a client cannot claim https on a plain connection.
    return request.scheme == "https"


def session_cookie_name(request: Request) -> str:
    return f"__Host-{SESSION}" if is_https(request) else SESSION


def session_token(request: Request) -> str | None:
    return cookie(request, session_cookie_name(request)) or None


def set_session(request: Request, response: BaseHTTPResponse, token: str, max_age: int) -> None:
    response.add_cookie(
        SESSION, token, path="/", httponly=True, samesite="Strict", secure=is_https(request),
        host_prefix=is_https(request), max_age=max_age)


def clear_session(request: Request, response: BaseHTTPResponse) -> None:
    response.add_cookie(
        SESSION, "", path="/", httponly=True, samesite="Strict", secure=is_https(request),
        host_prefix=is_https(request), max_age=0)


def csrf_token(session: str) -> str:
    """The form token of a session: HMAC(session token, purpose). Unforgeable without the
    HttpOnly cookie, stable for the session (several tabs work), gone with it."""
    return hmac.new(session.encode(), b"gobi-web-csrf-v1", hashlib.sha256).hexdigest()


def csrf_ok(request: Request, session: str) -> bool:
    sent = request.form.get("csrf") if request.form else None
    return bool(sent) and hmac.compare_digest(str(sent), csrf_token(session))


def cross_site(request: Request) -> bool:
    """A browser says the request comes from another site (Fetch Metadata)."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def login_nonce(request: Request) -> tuple[str, bool]:
    """The login form's double-submit nonce and whether it is new (to be set as cookie)."""
    current = cookie(request, LOGIN_NONCE) or ""
    if len(current) == 43 and current.replace("-", "").replace("_", "").isalnum():
        return current, False
    return secrets.token_urlsafe(32), True


def set_login_nonce(request: Request, response: BaseHTTPResponse, nonce: str) -> None:
    response.add_cookie(LOGIN_NONCE, nonce, path="/web/login", httponly=True, samesite="Strict",
                        secure=is_https(request), max_age=3600)


def clear_login_nonce(request: Request, response: BaseHTTPResponse) -> None:
    response.add_cookie(LOGIN_NONCE, "", path="/web/login", httponly=True, samesite="Strict",
                        secure=is_https(request), max_age=0)


def login_nonce_ok(request: Request) -> bool:
    expected = cookie(request, LOGIN_NONCE) or ""
    sent = request.form.get("csrf", "") if request.form else ""
    return bool(expected) and hmac.compare_digest(str(sent), expected)


def web_actor(user: Any) -> Actor:
    return Actor(user, WEB_DEVICE)


# -- flash messages: one line shown on the next page after a redirect ------------------------------

def set_flash(request: Request, response: BaseHTTPResponse, text: str, kind: str = "ok",
              href: str | None = None, link: str | None = None) -> None:
    body = {"kind": kind, "text": text[:600], "href": href, "link": (link or "")[:200]}
    value = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    response.add_cookie(FLASH, value, path="/web", httponly=True, samesite="Strict",
                        secure=is_https(request), max_age=120)


def take_flash(request: Request) -> dict | None:
    raw = cookie(request, FLASH)
    if not raw:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("kind") not in ("ok", "error"):
        return None
    href = body.get("href")
    # Only links this module builds: paths on this site under /web/.
    if not (isinstance(href, str) and href.startswith("/web/") and "//" not in href and "\\" not in href):
        body["href"] = None
    return {k: str(body[k]) if body.get(k) is not None else None for k in ("kind", "text", "href", "link")}


def clear_flash(request: Request, response: BaseHTTPResponse) -> None:
    response.add_cookie(FLASH, "", path="/web", httponly=True, samesite="Strict",
                        secure=is_https(request), max_age=0)
