"""The web page's routes: thin handlers like the API's (check the session, call one
service method, render a template), for a person with a browser instead of a client.

Pages (all under ``/web``; every vault page checks membership first, so a non-member gets
the same 404 as for a vault that does not exist):

    GET  /web/                               your vaults
    GET  /web/login, POST /web/login         sign in (a normal session, rate-limited)
    POST /web/logout                         sign out (revokes the session)
    GET  /web/v/V/d/NODE[?after=NAME]        a folder
    GET  /web/v/V/f/NODE                     a file: details and versions
    GET  /web/v/V/f/NODE/download[?rev=R]    its bytes, as an attachment
    POST /web/v/V/f/NODE/restore             make version ``rev`` the content again
    GET  /web/v/V/trash, POST …/trash/E/restore
    GET  /web/v/V/conflicts[?state=all], POST …/conflicts/C/resolve
    GET  /web/v/V/holds[?state=all], POST …/holds/H/confirm | reject

Every POST carries the session's CSRF token; successful ones redirect (303) to a page
that shows what happened (a flash message), so reloading never repeats an action.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sanic import Blueprint, Request, Sanic
from sanic.response import BaseHTTPResponse, HTTPResponse, redirect
from sanic_ext import openapi, render

from gobi.protocol import (
    ROLE_RANK,
    ROOT_ID,
    ErrorCode,
    Node,
    NodeKind,
    RestoreTrashRequest,
    RestoreVersionRequest,
)

from ..conflicts import CONFLICT
from ..errors import ServiceError
from ..gate import Refused, set_policy
from ..holds import HOLD
from ..http import client_address, int_arg, services, str_arg
from ..store.base import StoreUnavailable
from ..writes import MAX_DEPTH
from . import present
from .session import (
    DOWNLOAD_CSP,
    PAGE_HEADERS,
    clear_flash,
    clear_login_nonce,
    clear_session,
    cross_site,
    csrf_ok,
    csrf_token,
    login_nonce,
    login_nonce_ok,
    session_token,
    set_flash,
    set_login_nonce,
    set_session,
    take_flash,
    web_actor,
)

SERVER_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = SERVER_DIR / "templates"
STATIC = SERVER_DIR / "static"
WEB = "/web"
PAGE_SIZE = 300           # entries of a folder per page
MAX_FORM = 64 * 1024

VID = "<vault_id:[A-Za-z0-9_-]{1,64}>"
NID = "<node_id:[A-Za-z0-9_-]{1,64}>"
RID = "<record_id:[A-Za-z0-9_-]{1,64}>"
_NEXT_RE = re.compile(r"^/web(/[A-Za-z0-9_\-./?=&%+~]*)?$")

bp = Blueprint("web")
bp.static(f"{WEB}/static", STATIC, name="web_static")

Handler = Callable[..., Awaitable[BaseHTTPResponse]]


def configure(app: Sanic) -> None:
    """Before ``Extend(app)``: where sanic-ext's Jinja2 finds the templates."""
    app.config.TEMPLATING_PATH_TO_TEMPLATES = str(TEMPLATES)


@bp.listener("before_server_start")
async def _filters(app: Sanic, _loop: Any = None) -> None:
    app.ext.environment.filters.update(present.FILTERS)


@bp.on_response
async def _security_headers(request: Request, response: BaseHTTPResponse) -> None:
    for key, value in PAGE_HEADERS.items():
        if key not in response.headers:
            response.headers[key] = value
    if request.path.startswith(f"{WEB}/static/"):
        # The stylesheet is linked with ?v=VERSION, so an upgrade is never served stale.
        response.headers["Cache-Control"] = "public, max-age=86400"
    elif "cache-control" not in response.headers:
        # Pages show private data: never kept by a browser or a proxy.
        response.headers["Cache-Control"] = "no-store"


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: only a page of this site under /web (no open redirect)."""
    if value and _NEXT_RE.match(value) and "//" not in value and not value.startswith(f"{WEB}/login"):
        return value
    return f"{WEB}/"


def _dir_url(vault_id: str, node_id: str) -> str:
    return f"{WEB}/v/{vault_id}/d/{node_id}"


def _file_url(vault_id: str, node_id: str) -> str:
    return f"{WEB}/v/{vault_id}/f/{node_id}"


def _node_url(vault_id: str, node: Node) -> str:
    return (_dir_url if node.kind is NodeKind.DIR else _file_url)(vault_id, node.id)


# -- rendering ------------------------------------------------------------------------------------

async def _render(request: Request, template: str, status: int = 200,
                  headers: dict[str, str] | None = None, **context: Any) -> HTTPResponse:
    flash = take_flash(request)
    actor = getattr(request.ctx, "actor", None)
    context.update(
        user=actor.user if actor else None, csrf=getattr(request.ctx, "web_csrf", ""),
        flash=flash, version=request.app.ctx.version,
    )
    response = await render(template, status=status, headers=headers, context=context, app=request.app)
    if flash:
        clear_flash(request, response)
    return response


_TITLES = {400: "That did not work", 401: "Please sign in", 403: "Not allowed", 404: "Not found",
           409: "It changed meanwhile", 410: "Gone", 413: "Too large", 429: "Too many attempts",
           503: "Unavailable"}


async def _error(request: Request, status: int, message: str,
                 headers: dict[str, str] | None = None) -> HTTPResponse:
    return await _render(request, "error.html", status=status, headers=headers,
                         title=_TITLES.get(status, "Something went wrong"), message=message, code=status)


def _service_error(request: Request, exc: ServiceError) -> Awaitable[HTTPResponse]:
    status = exc.status
    if exc.code is ErrorCode.NOT_FOUND:
        message = "There is nothing here, or you are not a member of this vault."
    elif exc.code is ErrorCode.CONFLICT:
        message = ("This changed since the page was loaded: nothing was done. Go back, reload "
                   "and try again. (" + exc.message + ")")
    else:
        message = exc.message
    return _error(request, status, message, headers=exc.headers or None)


# -- sessions ---------------------------------------------------------------------------------------

async def _session(request: Request) -> str | None:
    """Authenticate the session cookie; sets the actor. None: not signed in."""
    token = session_token(request)
    if not token:
        return None
    try:
        user, digest = await services(request).accounts.authenticate(f"Bearer {token}")
    except ServiceError:
        return None
    request.ctx.actor = web_actor(user)
    request.ctx.token_hash = digest
    request.ctx.web_csrf = csrf_token(token)
    return token


def _to_login(request: Request, had_cookie: bool) -> HTTPResponse:
    target = f"{WEB}/login"
    if request.method == "GET" and request.path != f"{WEB}/":
        here = request.path + (f"?{request.query_string}" if request.query_string else "")
        if _safe_next(here) == here:
            target += "?next=" + quote(here, safe="/")
    response = redirect(target, status=303)
    if had_cookie:
        clear_session(request, response)
    return response


def page(handler: Handler) -> Handler:
    """A page for a signed-in user: session → (POST: CSRF) → vault membership → handler;
    refusals become HTML error pages. The session is checked by the request gate on the
    headers (``gate.py``), so a form's body is read only for a signed-in user."""

    async def check(request: Request, kwargs: dict[str, Any]) -> None:
        token = await _session(request)
        if token is None:
            raise Refused(_to_login(request, had_cookie=bool(session_token(request))))
        request.ctx.web_token = token

    @functools.wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> BaseHTTPResponse:
        if not getattr(request.ctx, "gated", False):
            try:
                await check(request, kwargs)
            except Refused as refused:
                return refused.response
        token = request.ctx.web_token
        try:
            if request.method == "POST":
                if len(request.body or b"") > MAX_FORM:
                    return await _error(request, 413, "That form is too large.")
                if cross_site(request) or not csrf_ok(request, token):
                    return await _error(request, 403, "This form expired or came from another site: "
                                        "nothing was done. Reload the page and try again.")
            if "vault_id" in kwargs:
                await services(request).vaults.get(request.ctx.actor, kwargs["vault_id"])
            return await handler(request, *args, **kwargs)
        except ServiceError as exc:
            return await _service_error(request, exc)
        except StoreUnavailable:
            return await _error(request, 503, "The server's database is unavailable; try again in a moment.",
                                headers={"Retry-After": "5"})

    set_policy(wrapper, check, MAX_FORM)
    return openapi.exclude()(wrapper)


def _form_int(request: Request, name: str, required: bool = True) -> int | None:
    raw = (request.form.get(name) or "").strip() if request.form else ""
    if not raw:
        if required:
            raise ServiceError(ErrorCode.BAD_REQUEST, f"the form lacks {name!r}")
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"{name!r} must be a number")
    return int(raw)


async def _vault_context(request: Request, vault_id: str, section: str) -> dict[str, Any]:
    """What every vault page shows: the vault, the caller's role, the nav with counts."""
    svc = services(request)
    vault = await svc.vaults.get(request.ctx.actor, vault_id)
    conflicts = await svc.store.find_records(vault_id, CONFLICT, state="open", limit=100)
    holds = await svc.store.find_records(vault_id, HOLD, state="pending", limit=100)
    return {
        "vault": vault, "section": section,
        "counts": {"conflicts": len(conflicts), "holds": len(holds)},
        "can_write": ROLE_RANK[vault.role] >= ROLE_RANK["write"],
        "is_owner": vault.role == "owner",
    }


async def _crumbs(request: Request, vault_id: str, node: Node) -> list[Node]:
    """The node's ancestors from the root (tombstones keep their parent, so also for them)."""
    nodes = services(request).nodes
    chain: list[Node] = []
    cur = node
    for _ in range(MAX_DEPTH):
        if cur.parent is None:
            break
        cur = await nodes.get(request.ctx.actor, vault_id, cur.parent)
        chain.append(cur)
    return list(reversed(chain))


def _path(crumbs: list[Node], node: Node) -> str:
    return "/".join([c.name for c in crumbs if c.parent is not None] + [node.name])


def _done(request: Request, to: str, text: str, kind: str = "ok", href: str | None = None,
          link: str | None = None) -> HTTPResponse:
    response = redirect(to, status=303)
    set_flash(request, response, text, kind, href, link)
    return response


# -- sign in and out ----------------------------------------------------------------------------------

@bp.get("/")
@openapi.exclude()
async def root(request: Request) -> HTTPResponse:
    return redirect(f"{WEB}/", status=303)


async def _login_page(request: Request, status: int = 200, error: str | None = None,
                      username: str = "", headers: dict[str, str] | None = None) -> HTTPResponse:
    nonce, new = login_nonce(request)
    response = await _render(request, "login.html", status=status, headers=headers, login_csrf=nonce,
                             next=_safe_next(request.args.get("next") or (request.form or {}).get("next")),
                             error=error, username=username[:64])
    if new:
        set_login_nonce(request, response, nonce)
    return response


@bp.get(f"{WEB}/login")
@openapi.exclude()
async def login_form(request: Request) -> HTTPResponse:
    if await _session(request) is not None:
        return redirect(_safe_next(request.args.get("next")), status=303)
    return await _login_page(request)


@bp.post(f"{WEB}/login")
@openapi.exclude()
async def login(request: Request) -> HTTPResponse:
    if len(request.body or b"") > MAX_FORM:
        return await _login_page(request, 413, "That form is too large.")
    form = request.form or {}
    username = (form.get("username") or "").strip()
    password = form.get("password") or ""
    if cross_site(request) or not login_nonce_ok(request):
        return await _login_page(request, 403, "The sign-in form expired (or cookies are off). "
                                 "Please try again.", username)
    if not (1 <= len(username) <= 64 and 1 <= len(password) <= 1024):
        return await _login_page(request, 400, "Enter your username and password.", username)
    svc = services(request)
    try:
        token, _user = await svc.accounts.login(username, password, client_address(request))
    except ServiceError as exc:
        request.app.ctx.metrics.login_failures.inc()
        if exc.code is ErrorCode.RATE_LIMITED:
            retry = int(exc.details.get("retry_after", 60))
            return await _login_page(
                request, 429, f"Too many failed sign-ins. Try again in {present.duration(retry)}.",
                username, headers={"Retry-After": str(retry)})
        if exc.code is ErrorCode.UNAVAILABLE:
            return await _login_page(request, 503, "The server is busy; try again in a moment.",
                                     username, headers=exc.headers or None)
        # 200 like any form shown again with a message (401 would need WWW-Authenticate).
        return await _login_page(request, 200, "Wrong username or password.", username)
    response = redirect(_safe_next(form.get("next")), status=303)
    set_session(request, response, token, int(svc.config.session_ttl))
    clear_login_nonce(request, response)
    return response


@bp.post(f"{WEB}/logout")
@page
async def logout(request: Request) -> HTTPResponse:
    await services(request).accounts.logout(request.ctx.token_hash)
    response = _done(request, f"{WEB}/login", "You are signed out.")
    clear_session(request, response)
    return response


# -- vaults and files ----------------------------------------------------------------------------------

@bp.get(f"{WEB}/", strict_slashes=False)
@page
async def vaults(request: Request) -> HTTPResponse:
    svc = services(request)
    found = await svc.vaults.list(request.ctx.actor)
    rows = []
    for vault in sorted(found, key=lambda v: v.name.lower()):
        conflicts = await svc.store.find_records(vault.id, CONFLICT, state="open", limit=100)
        holds = await svc.store.find_records(vault.id, HOLD, state="pending", limit=100)
        rows.append({"vault": vault, "conflicts": len(conflicts), "holds": len(holds)})
    return await _render(request, "vaults.html", rows=rows)


@bp.get(f"{WEB}/v/{VID}", strict_slashes=False)
@page
async def vault_home(request: Request, vault_id: str) -> HTTPResponse:
    return redirect(_dir_url(vault_id, ROOT_ID), status=303)


@bp.get(f"{WEB}/v/{VID}/d/{NID}")
@page
async def directory(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    svc = services(request)
    actor = request.ctx.actor
    node = await svc.nodes.get(actor, vault_id, node_id)
    if node.kind is not NodeKind.DIR:
        return redirect(_file_url(vault_id, node_id), status=303)
    ctx = await _vault_context(request, vault_id, "files")
    crumbs = await _crumbs(request, vault_id, node)
    if node.deleted:
        return await _render(request, "deleted.html", status=404, node=node, crumbs=crumbs,
                             path=_path(crumbs, node), **ctx)
    after = str_arg(request, "after", 1024)
    children, nxt = await svc.nodes.children(actor, vault_id, node_id, after, PAGE_SIZE)
    if after is None and nxt is None:   # one page: folders first, like a file manager
        children.sort(key=lambda n: n.kind is not NodeKind.DIR)
    return await _render(request, "directory.html", node=node, crumbs=crumbs, children=children,
                         after=after, next_after=nxt, path=_path(crumbs, node), **ctx)


@bp.get(f"{WEB}/v/{VID}/f/{NID}")
@page
async def file(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    svc = services(request)
    node = await svc.nodes.get(request.ctx.actor, vault_id, node_id)
    if node.kind is NodeKind.DIR:
        return redirect(_dir_url(vault_id, node_id), status=303)
    ctx = await _vault_context(request, vault_id, "files")
    crumbs = await _crumbs(request, vault_id, node)
    versions = []
    if node.kind is NodeKind.FILE:
        versions = await svc.history.versions(request.ctx.actor, vault_id, node_id)
    return await _render(request, "file.html", node=node, crumbs=crumbs, versions=versions,
                         path=_path(crumbs, node), **ctx)


@bp.get(f"{WEB}/v/{VID}/f/{NID}/download")
@page
async def download(request: Request, vault_id: str, node_id: str) -> None:
    svc = services(request)
    actor = request.ctx.actor
    rev = int_arg(request, "rev", None)
    node = await svc.nodes.get(actor, vault_id, node_id)
    version = await svc.nodes.version(actor, vault_id, node_id, rev)
    suffix = f" (version {version.rev})" if rev is not None and version.rev != node.content_rev else ""
    response = await request.respond(
        content_type="application/octet-stream",
        headers={
            # Never rendered on this origin: an attachment, a sandbox, no sniffing.
            "Content-Disposition": present.content_disposition(node.name, suffix),
            "Content-Length": str(version.size),
            "Content-Security-Policy": DOWNLOAD_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "ETag": f'"{node_id}-{version.rev}"',
        },
    )
    out = request.app.ctx.metrics.chunk_bytes.labels("out")
    async for data in svc.chunks.stream(vault_id, version.chunks):
        out.inc(len(data))
        await response.send(data)
    await response.eof()
    # Streamed: already sent. Returning the response would make Sanic log an error.


@bp.post(f"{WEB}/v/{VID}/f/{NID}/restore")
@page
async def restore_version(request: Request, vault_id: str, node_id: str) -> HTTPResponse:
    svc = services(request)
    rev = _form_int(request, "rev")
    req = RestoreVersionRequest(rev=rev, base_rev=_form_int(request, "base_rev", required=False))
    node = await svc.history.restore(request.ctx.actor, vault_id, node_id, req, svc.nodes.write)
    return _done(request, _file_url(vault_id, node_id),
                 f"Restored version {rev} of “{node.name}”: it is the current content again, "
                 f"saved as version {node.content_rev}.")


# -- trash ---------------------------------------------------------------------------------------------

@bp.get(f"{WEB}/v/{VID}/trash")
@page
async def trash(request: Request, vault_id: str) -> HTTPResponse:
    ctx = await _vault_context(request, vault_id, "trash")
    entries = await services(request).trash.list(request.ctx.actor, vault_id, None, 500)
    return await _render(request, "trash.html", entries=entries, **ctx)


@bp.post(f"{WEB}/v/{VID}/trash/{RID}/restore")
@page
async def restore_trash(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    done = await svc.trash.restore(request.ctx.actor, vault_id, record_id, RestoreTrashRequest(),
                                   svc.nodes.write)
    node = done.node
    text = f"Restored “{node.name}”"
    if done.renamed:
        text = f"Restored as “{node.name}” (the old name was taken meanwhile)"
    if done.restored > 1:
        text += f" with {done.restored - 1} item(s) inside"
    if done.revived_parents:
        text += f"; {done.revived_parents} deleted folder(s) around it came back to hold it"
    return _done(request, f"{WEB}/v/{vault_id}/trash", text + ".", href=_node_url(vault_id, node),
                 link="Show it")


# -- conflicts -----------------------------------------------------------------------------------------

@bp.get(f"{WEB}/v/{VID}/conflicts")
@page
async def conflicts(request: Request, vault_id: str) -> HTTPResponse:
    svc = services(request)
    show_all = str_arg(request, "state", 16) == "all"
    ctx = await _vault_context(request, vault_id, "conflicts")
    found = await svc.conflicts.list(request.ctx.actor, vault_id, None if show_all else "open", 200)
    items = []
    for info in found:
        node = await svc.store.node(vault_id, info.node)
        choices = present.resolve_choices(info, node is not None and node.kind is NodeKind.DIR)
        if info.state == "open":
            story = present.conflict_story(info)
        elif info.resolution:
            story = f"Resolved: {dict(choices).get(info.resolution, info.resolution)}."
        else:
            story = info.message or f"Settled by the {info.strategy} strategy."
        items.append({"info": info, "node": node, "choices": choices, "story": story,
                      "title": present.CASE_TITLES.get(info.case, info.case)})
    return await _render(request, "conflicts.html", items=items, show_all=show_all, **ctx)


@bp.post(f"{WEB}/v/{VID}/conflicts/{RID}/resolve")
@page
async def resolve(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    keep = (request.form.get("keep") or "") if request.form else ""
    if keep not in ("mine", "theirs", "both"):
        raise ServiceError(ErrorCode.BAD_REQUEST, "choose one of the buttons")
    info = await svc.conflicts.resolve(request.ctx.actor, vault_id, record_id, keep,  # type: ignore[arg-type]
                                       svc.nodes.write)
    label = dict(present.resolve_choices(info)).get(keep, keep)
    node = await svc.store.node(vault_id, info.node)
    href = _node_url(vault_id, node) if node is not None and not node.deleted else None
    return _done(request, f"{WEB}/v/{vault_id}/conflicts", f"Resolved “{info.path}”: {label}.",
                 href=href, link="Show it")


# -- held mass deletes ---------------------------------------------------------------------------------

@bp.get(f"{WEB}/v/{VID}/holds")
@page
async def holds(request: Request, vault_id: str) -> HTTPResponse:
    svc = services(request)
    show_all = str_arg(request, "state", 16) == "all"
    ctx = await _vault_context(request, vault_id, "holds")
    found = await svc.holds.list(request.ctx.actor, vault_id, None if show_all else "pending")
    items = []
    for info in found[:100]:
        paths: list[dict] = []
        if info.state == "pending":
            _, paths = await svc.holds.get(request.ctx.actor, vault_id, info.id, 50)
        items.append({"info": info, "paths": paths,
                      "may_reject": ctx["is_owner"] or info.user == request.ctx.actor.user.username})
    return await _render(request, "holds.html", items=items, show_all=show_all, **ctx)


@bp.post(f"{WEB}/v/{VID}/holds/{RID}/confirm")
@page
async def confirm_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    info = await svc.holds.confirm(request.ctx.actor, vault_id, record_id, svc.nodes.write)
    if info.skipped:
        text = (f"Confirmed: {info.applied or 0} of {info.items} delete(s) applied; {info.skipped} "
                f"skipped because what they named changed since (the changes survive).")
    else:
        text = f"Confirmed: the {info.files} file(s) went to the trash."
    return _done(request, f"{WEB}/v/{vault_id}/holds", text, href=f"{WEB}/v/{vault_id}/trash",
                 link="Open the trash")


@bp.post(f"{WEB}/v/{VID}/holds/{RID}/reject")
@page
async def reject_hold(request: Request, vault_id: str, record_id: str) -> HTTPResponse:
    svc = services(request)
    await svc.holds.reject(request.ctx.actor, vault_id, record_id, svc.nodes.write)
    return _done(request, f"{WEB}/v/{vault_id}/holds",
                 "Rejected: nothing was deleted; the files come back on the device that deleted them.")
