"""Sign in, sign out, and the language switch.

The sign-in form has no session yet, so its CSRF protection is a double-submit
token: a random value in a short-lived HTTP-only cookie that must equal the
form's hidden field (a foreign site can make the browser post the form, but
cannot read or set the cookie).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import RedirectResponse, Response

from core.i18n import LANGUAGES, translator
from server import audit, users
from server.tables import Role, User
from server.web.auth import SESSION_COOKIE, PageUser, require_role
from server.web.templating import language_of, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "ws_login_csrf"
HOME = {"admin": "/dashboard", "auditor": "/dashboard", "staff": "/enroll"}
ANY_ROLE = (Role.ADMIN, Role.STAFF, Role.AUDITOR)


def _safe_next(next_url: str | None) -> str | None:
    """Only a path on this site: an open redirect would make the sign-in page a phishing tool."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return None
    parts = urlsplit(next_url)
    return None if parts.scheme or parts.netloc or "\\" in next_url else next_url


def _login_page(request: Request, *, error: str = "", next_url: str = "", code: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", status_code=code, csrf_token=token, error=error, next_url=next_url)
    secure = request.app.state.ctx.settings.cookie_secure
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, secure=secure, samesite="strict")
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query parameter's name
    return _login_page(request, next_url=_safe_next(next) or "")


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",  # noqa: A002
) -> Response:
    ctx = request.app.state.ctx
    tr = translator(language_of(request))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf_token.encode()):
        return _login_page(request, error=tr.gettext("The sign-in form expired. Please try again."), code=400)
    remote = request.client.host if request.client else ""
    s = ctx.settings
    limits = users.LoginLimits(s.login_window_s, s.login_max_per_user, s.login_max_per_address)
    with ctx.sessions() as session:
        try:
            user = users.authenticate(session, username=username, password=password, remote_addr=remote, limits=limits)
        except users.LoginRefused as refused:
            if refused.retry_after_s:
                message = tr.gettext(
                    "Too many failed sign-ins. Try again in %(minutes)s minutes.",
                    minutes=max(1, round(refused.retry_after_s / 60)),
                )
                return _login_page(request, error=message, next_url=next, code=429)
            return _login_page(request, error=tr.gettext("Wrong user name or password."), next_url=next, code=401)
        token = users.start_session(session, user=user, hours=s.session_hours, remote_addr=remote)
        audit.record(session, actor=user.username, action="user.login", target=user.username, detail={"from": remote})
        session.commit()
        home = HOME.get(user.role, "/dashboard")
    response = RedirectResponse(_safe_next(next) or home, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(s.session_hours * 3600), httponly=True, secure=s.cookie_secure,
        samesite="lax", path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, user: Annotated[PageUser, Depends(require_role(*ANY_ROLE))]) -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        users.end_session(session, request.cookies.get(SESSION_COOKIE))
        audit.record(session, actor=user.actor, action="user.logout", target=user.username)
        session.commit()
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
def set_language(
    request: Request,
    user: Annotated[PageUser, Depends(require_role(*ANY_ROLE))],
    language: Annotated[str, Form(max_length=8)],
    back: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Each user chooses their own language; it is kept with the user, not the browser."""
    if language in LANGUAGES:
        with request.app.state.ctx.sessions() as session:
            row = session.get(User, user.user_id)
            if row is not None:
                row.language = language
                session.commit()
    return RedirectResponse(_safe_next(back) or "/", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/")
def home(request: Request, user: Annotated[PageUser, Depends(require_role(*ANY_ROLE))]) -> Response:
    return RedirectResponse(HOME.get(user.role, "/dashboard"), status_code=status.HTTP_303_SEE_OTHER)


