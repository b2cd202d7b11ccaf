"""The web page: a signed-in person browses a vault, downloads files, restores versions
and trash entries, resolves conflicts and decides held mass deletes (docs/web.md).

Server-rendered HTML (Jinja2 through sanic-ext's templating, templates in
``server/templates``, one stylesheet in ``server/static``), no JavaScript. The handlers
(``views``) are as thin as the API's and call the same services; ``session`` holds the
browser-facing security (session cookie, CSRF, headers); ``present`` the wording.

Wiring (``app.py``): ``configure(app)`` before ``Extend(app)``, then ``app.blueprint(bp)``.
"""

from .views import STATIC, TEMPLATES, bp, configure

__all__ = ["STATIC", "TEMPLATES", "bp", "configure"]
