"""The admin web app: server-rendered pages (Jinja2) on the same FastAPI app as /api.

``mount_web(app)`` adds /static, the pages of server/web/pages and the error
handling of pages (sign-in redirect, 403 page). Pages share the API's
AppContext (``request.app.state.ctx``): one database, one process.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.i18n import translator
from server.web.auth import Forbidden, LoginRequired, login_redirect, lookup_user
from server.web.templating import language_of, render

STATIC = Path(__file__).resolve().parent / "static"
# Each module exports ``router``; the order is the order of the routes.
PAGES = ("login", "dashboard", "entries", "workers", "stations", "enroll", "users", "audit")


def mount_web(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for name in PAGES:
        app.include_router(import_module(f"server.web.pages.{name}").router)

    @app.exception_handler(LoginRequired)
    async def _login(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_redirect(exc.next_url), status_code=status.HTTP_303_SEE_OTHER)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _exc: Forbidden) -> Response:
        tr = translator(language_of(request))
        return render(
            request, "error.html", status_code=403, title=tr.gettext("Not allowed"),
            message=tr.gettext("Your role may not open this page. Ask an administrator if you need it."),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api") or request.url.path.startswith("/static"):
            return await http_exception_handler(request, exc)
        if getattr(request.state, "user", None) is None:
            request.state.user = await run_in_threadpool(lookup_user, request)  # the nav, in their language
        tr = translator(language_of(request))
        title = tr.gettext("Page not found") if exc.status_code == 404 else tr.gettext("The request was refused")
        message = str(exc.detail) if exc.status_code != 404 else tr.gettext("There is no page at this address.")
        return render(request, "error.html", status_code=exc.status_code, title=title, message=message)
