"""Who is signed in, and may they do this? Dependencies for pages and for /api routes.

Pages: ``user: PageUser = Depends(require_role(Role.ADMIN, Role.AUDITOR))``.
Someone not signed in is redirected to /login?next=…; a signed-in user
without the role gets a 403 page. For every request that changes something
(any method but GET/HEAD/OPTIONS) the CSRF token must come along: the hidden
form field ``csrf_token`` or the header ``X-CSRF-Token``; it is the session's
own random token (synchronizer pattern), compared in constant time.

/api routes: ``api_roles(read=(…), write=(…))`` accepts either the server's
bearer token (scripts, the enroll CLI; acts as an admin, audited as
"api-token") or a signed-in browser with the role (plus the CSRF header for
writes). Otherwise 401, or 403 for the wrong role.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from server.audit import API_TOKEN
from server.tables import Role

SESSION_COOKIE = "ws_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class PageUser:
    """The signed-in user as pages see it (a plain value: no database session attached)."""

    user_id: int
    username: str
    display_name: str
    role: str
    language: str
    csrf_token: str

    @property
    def actor(self) -> str:
        """The name written into the audit trail."""
        return self.username


class LoginRequired(Exception):
    """Not signed in: pages redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__("sign-in required")
        self.next_url = next_url


class Forbidden(Exception):
    """Signed in, but the role may not do this."""


def lookup_user(request: Request) -> PageUser | None:
    """The signed-in user of the request's session cookie, or None."""
    from server import users  # local: keeps argon2 out of modules that only need the types

    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        found = users.session_user(session, request.cookies.get(SESSION_COOKIE))
        if found is None:
            return None
        user, web = found
        return PageUser(user.user_id, user.username, user.display_name, user.role, user.language, web.csrf_token)


async def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # Starlette caches it: the route's Form(...) parameters still work
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())


def require_role(*roles: Role) -> Callable[[Request], Coroutine[Any, Any, PageUser]]:
    """A page dependency: the signed-in user if their role is one of ``roles``."""
    allowed = {r.value for r in roles}

    async def dependency(request: Request) -> PageUser:
        user = await run_in_threadpool(lookup_user, request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target if request.method in SAFE_METHODS else "/")
        request.state.user = user
        if user.role not in allowed:
            raise Forbidden()
        if request.method not in SAFE_METHODS and not await _csrf_ok(request, user.csrf_token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the form is out of date or was not sent by this app (CSRF)")
        return user

    return dependency


@dataclass(frozen=True)
class ApiPrincipal:
    """Who is calling an /api route: a user, or the bearer token (acts as admin)."""

    actor: str
    role: str
    language: str | None = None


def api_roles(
    read: tuple[Role, ...] = (Role.ADMIN,), write: tuple[Role, ...] = (Role.ADMIN,)
) -> Callable[[Request], Coroutine[Any, Any, ApiPrincipal]]:
    """An /api dependency: GET/HEAD need a role in ``read``; anything else a role in ``write``."""

    async def dependency(request: Request) -> ApiPrincipal:
        allowed = {r.value for r in (read if request.method in SAFE_METHODS else write)}
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme:
            expected = request.app.state.ctx.settings.api_token.get_secret_value().encode()
            # compare_digest: the time taken does not reveal how much of the token matched.
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected):
                principal = ApiPrincipal(actor=API_TOKEN, role=Role.ADMIN.value)
            else:
                raise _unauthorized()
        else:
            user = await run_in_threadpool(lookup_user, request)
            if user is None:
                raise _unauthorized()
            if request.method not in SAFE_METHODS:
                sent = request.headers.get("x-csrf-token", "")
                if not hmac.compare_digest(sent.encode(), user.csrf_token.encode()):
                    raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
            principal = ApiPrincipal(actor=user.username, role=user.role, language=user.language)
        if principal.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {principal.role!r} may not do this")
        request.state.principal = principal
        return principal

    return dependency


def _unauthorized() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong API token: send the header 'Authorization: Bearer <api_token>', or sign in",
        headers={"WWW-Authenticate": "Bearer"},
    )


def login_redirect(next_url: str) -> str:
    return "/login?next=" + quote(next_url, safe="/")
