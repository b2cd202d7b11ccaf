"""The API description: an OpenAPI 3.1 document built from the routes and the same
pydantic models the handlers validate with, and the ``/docs`` page that shows it.

Each API handler carries an ``Operation`` (the ``doc`` decorator): its summary, request
body model (or ``BINARY``), query model, success answers and the error statuses it adds
to the ones every route of its kind has. ``build(app)`` walks the router:

- path parameters come from the route's own regex (``<vault_id:[A-Za-z0-9_-]{1,64}>``) or
  the operation's ``path`` patterns;
- query parameters are the fields of the query model (its JSON schema, per field), the
  model ``parse_query`` validates the query string with;
- bodies and answers are ``$ref``s into ``components/schemas``, which pydantic's
  ``models_json_schema`` fills (JSON Schema 2020-12, what OpenAPI 3.1 uses), in
  validation mode for requests and serialization mode for answers;
- every operation lists its error statuses with the JSON error schema (``ErrorBody``):
  400 when it takes input, 401 when it needs a token, 403/404 under a vault, 413 with a
  body, 503 always (draining, store down), plus the operation's own.

sanic-ext's generator is not used: it emits an OpenAPI 3.0 document that validators
reject (``anyOf`` with ``null``, dangling ``$defs`` refs, ``int32`` nanoseconds), and its
Swagger page fetches from a CDN on the server side. ``tests/server/test_openapi.py``
validates this document and runs schemathesis against a live server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, html, json, text

from gobi.protocol import ErrorBody

BINARY = "binary"
Content = Any   # a model, a union of models, BINARY, "text" or None
DOC_ATTR = "gobi_doc"
_PARAM_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::([^>]*))?>")

ERROR_TEXT = {
    400: "Invalid input (`bad_request`, `invalid_name`, `hash_mismatch`, `missing_chunks`, `invalid_move`)",
    401: "Missing, malformed, expired or revoked token (`unauthenticated`, `invalid_credentials`)",
    403: "The caller's role does not allow it (`forbidden`, `registration_closed`)",
    404: "Not found, or the caller is not a member of the vault (`not_found`)",
    409: "The state changed (`conflict`, `name_exists`, `delete_held`, …): details carry the head",
    410: "History past retention (`cursor_expired`)",
    413: "Body too large (`payload_too_large`)",
    416: "Range not satisfiable (`range_not_satisfiable`)",
    429: "Too many attempts (`rate_limited`); see Retry-After",
    503: "Draining, busy or a dependency is down (`unavailable`); retry after Retry-After",
}


@dataclass
class Operation:
    summary: str
    body: Content = None
    query: type[BaseModel] | None = None
    ok: dict[int, Content] = field(default_factory=lambda: {200: None})
    errors: tuple[int, ...] = ()
    path: dict[str, str] = field(default_factory=dict)      # path parameter -> regex
    headers: dict[str, str] = field(default_factory=dict)   # request header -> description
    description: str | None = None


def doc(summary: str, *, body: Content = None, query: type[BaseModel] | None = None,
        ok: dict[int, Content] | None = None, errors: tuple[int, ...] = (),
        path: dict[str, str] | None = None, headers: dict[str, str] | None = None,
        description: str | None = None) -> Any:
    """Describe an API operation (apply above ``authed``, below the route decorator)."""

    def decorate(handler: Any) -> Any:
        setattr(handler, DOC_ATTR, Operation(summary, body, query, ok or {200: None}, errors,
                                             path or {}, headers or {}, description))
        return handler

    return decorate


def _openapi_path(path: str) -> tuple[str, dict[str, str]]:
    """``api/v1/vaults/<vault_id:[A-Za-z0-9_-]{1,64}>`` → ``/api/v1/vaults/{vault_id}`` and
    its parameters' patterns (None for an untyped ``str`` parameter)."""
    patterns: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        name, kind = m.group(1), m.group(2) or "str"
        patterns[name] = "" if kind in ("str", "strorempty") else kind
        return "{" + name + "}"

    return "/" + _PARAM_RE.sub(sub, path.lstrip("/")), patterns


def _models(kind: Any) -> list[type[BaseModel]]:
    """The models in a content kind: a model, or a union of models (``Node | WriteOutcome``)."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return [kind]
    return [k for k in get_args(kind) if isinstance(k, type) and issubclass(k, BaseModel)]


def _content(kind: Any, refs: dict[Any, dict], mode: str) -> dict[str, Any] | None:
    if kind is None:
        return None
    models = _models(kind)
    if len(models) > 1:
        return {"application/json": {"schema": {"anyOf": [refs[(m, mode)] for m in models]}}}
    if kind == BINARY:
        return {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    if kind == "text":
        return {"text/plain": {"schema": {"type": "string"}}}
    return {"application/json": {"schema": refs[(kind, mode)]}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        if name not in required:
            # Absent is how a query says "none"; an empty value counts as absent
            # (``parse_query``), which is what HTTP clients send for a None.
            alts = [a for a in prop.pop("anyOf", [prop]) if a.get("type") != "null"]
            keep = {k: prop.pop(k) for k in ("default", "description") if prop.get(k) is not None}
            prop.pop("default", None)
            base = alts[0] if len(alts) == 1 else {"anyOf": alts}
            if base is prop:
                base = dict(prop)
            prop = {"anyOf": [base, {"type": "string", "maxLength": 0}], **keep}
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _error_statuses(op: Operation, secured: bool, path_params: dict[str, str], method: str) -> list[int]:
    statuses = {503}
    if op.body is not None or op.query is not None or path_params or op.path:
        statuses.add(400)
    if secured:
        statuses.add(401)
        if "vault_id" in path_params:
            statuses.update((403, 404))
    if op.body is not None:
        statuses.add(413)
    if path_params:
        statuses.add(404)
    statuses.update(op.errors)
    return sorted(statuses)


def _routes(app: Sanic) -> list[tuple[str, str, Any]]:
    seen = set()
    out = []
    for route in app.router.routes:
        handler = route.handler
        op = getattr(handler, DOC_ATTR, None)
        if op is None:
            continue
        for method in sorted(route.methods):
            key = (route.path.rstrip("/"), method)
            if key in seen:
                continue
            seen.add(key)
            out.append((route.path, method, handler))
    return out


def build(app: Sanic) -> dict[str, Any]:
    routes = _routes(app)
    wanted: list[tuple[type[BaseModel], str]] = [(ErrorBody, "serialization")]
    for _, _, handler in routes:
        op: Operation = getattr(handler, DOC_ATTR)
        wanted.extend((m, "validation") for m in _models(op.body))
        for kind in op.ok.values():
            wanted.extend((m, "serialization") for m in _models(kind))
    unique = list(dict.fromkeys(wanted))
    keymap, defs = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    refs = dict(keymap)
    error_content = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}

    paths: dict[str, dict[str, Any]] = {}
    for raw_path, method, handler in routes:
        op = getattr(handler, DOC_ATTR)
        path, patterns = _openapi_path(raw_path)
        secured = getattr(handler, "gobi_policy", None) is not None and \
            getattr(getattr(handler, "gobi_policy"), "check", None) is not None
        parameters = []
        for name, pattern in patterns.items():
            pattern = op.path.get(name) or pattern
            schema: dict[str, Any] = {"type": "string"}
            if pattern:
                schema["pattern"] = f"^{pattern}$"
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if op.query is not None:
            parameters.extend(_query_parameters(op.query))
        for name, text_ in op.headers.items():
            parameters.append({"name": name, "in": "header", "required": False,
                               "schema": {"type": "string"}, "description": text_})
        operation: dict[str, Any] = {
            "operationId": f"{method.lower()}_{handler.__module__.rsplit('.', 1)[-1]}_{handler.__name__}",
            "summary": op.summary,
            "responses": {},
        }
        if op.description:
            operation["description"] = op.description
        if handler.__module__:
            operation["tags"] = [handler.__module__.rsplit(".", 1)[-1]]
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": _content(op.body, refs, "validation")}
        if secured:
            operation["security"] = [{"token": []}]
        for status, kind in op.ok.items():
            answer: dict[str, Any] = {"description": {304: "Not modified", 503: "Unavailable"}.get(status, "OK")}
            content = _content(kind, refs, "serialization")
            if content and method != "HEAD":
                answer["content"] = content
            operation["responses"][str(status)] = answer
        for status in _error_statuses(op, secured, patterns, method):
            if str(status) in operation["responses"]:
                continue
            answer = {"description": ERROR_TEXT.get(status, "Error")}
            if method != "HEAD":
                answer["content"] = error_content
            operation["responses"][str(status)] = answer
        paths.setdefault(path, {})[method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gobi",
            "version": app.ctx.version,
            "description": "Self-hosted file sync: vaults, chunks, revisions, events. "
                           "The model behind it: docs/api.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }


# -- /docs ---------------------------------------------------------------------------------------

SWAGGER = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.17.14"
DOCS_CSP = (f"default-src 'none'; script-src 'self' {SWAGGER}; style-src {SWAGGER} 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")
_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>gobi API</title><link rel="stylesheet" href="{SWAGGER}/swagger-ui.css"></head>
<body><div id="openapi"></div>
<script src="{SWAGGER}/swagger-ui-bundle.js" crossorigin="anonymous"></script>
<script src="/docs/init.js"></script></body>
</html>
"""
# Not inline: the page's CSP allows scripts from this origin and the pinned UI only.
_INIT = ('window.onload = function () { SwaggerUIBundle({url: "/docs/openapi.json", '
         'dom_id: "#openapi", deepLinking: true}); };\n')

bp = Blueprint("docs", url_prefix="/docs")


@bp.get("/", strict_slashes=False)
async def page(request: Request) -> HTTPResponse:
    return html(_PAGE, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"})


@bp.get("/init.js")
async def init_js(request: Request) -> HTTPResponse:
    return text(_INIT, content_type="text/javascript; charset=utf-8",
                headers={"Cache-Control": "no-cache"})


@bp.get("/openapi.json")
async def spec(request: Request) -> HTTPResponse:
    document = getattr(request.app.ctx, "openapi", None)
    if document is None:
        document = request.app.ctx.openapi = build(request.app)
    return json(document)
