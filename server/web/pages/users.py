"""Users of the admin app (admins only): list, create, disable and enable, reset a password, change a role.

Passwords are typed by the admin and checked by server/users.check_password_strength;
the app never makes one up, and no password is ever logged or audited. An admin
cannot disable or demote themselves, so the app always keeps an administrator.
Every change is audited in the same commit as the change.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.i18n import LANGUAGES, translator
from server import audit, users
from server.errors import Conflict
from server.tables import Role, User, WebSession
from server.web.auth import PageUser, require_role
from server.web.templating import N_, ROLE_NAMES, language_of, render

router = APIRouter(include_in_schema=False)
Admin = Annotated[PageUser, Depends(require_role(Role.ADMIN))]
_USERNAME = re.compile(users.USERNAME_PATTERN)

DONE_MESSAGES = {
    "created": N_("The user %(name)s is created. Give them the password in person."),
    "disabled": N_("The user %(name)s is disabled and signed out."),
    "enabled": N_("The user %(name)s may sign in again."),
    "role": N_("The role of %(name)s is changed."),
    "password": N_("The password of %(name)s is changed; they are signed out everywhere."),
}
ERROR_MESSAGES = {
    "username": N_("A user name has 2 to 64 characters: letters, digits and . _ @ -"),
    "taken": N_("The user name %(name)s is taken."),
    "weak": N_(
        "The password is too weak: use at least %(min)s characters, not the user name, "
        "and not mostly the same characters."
    ),
    "mismatch": N_("The two passwords differ."),
    "self": N_("You cannot disable yourself or change your own role: the app must always have an administrator."),
    "choice": N_("Choose a role and a language from the lists."),
}


def _back(done: str = "", error: str = "", user_id: int | None = None) -> RedirectResponse:
    query = f"?done={done}" if done else f"?error={error}" if error else ""
    if user_id is not None:
        query += f"&uid={user_id}"
    return RedirectResponse("/users" + query, status_code=status.HTTP_303_SEE_OTHER)


def _page(
    request: Request, session: Session, *, message: str = "", error: str = "", form: dict[str, str] | None = None,
    code: int = 200,
) -> Response:
    rows = list(session.scalars(select(User).order_by(User.username)))
    return render(
        request, "users.html", status_code=code, users=rows, message=message, error=error,
        form=form or {"username": "", "display_name": "", "role": "staff", "language": "zh_CN"},
        roles=[(r.value, ROLE_NAMES[r.value]) for r in Role], role_labels=ROLE_NAMES,
        min_chars=users.MIN_PASSWORD_CHARS,
    )


@router.get("/users")
def users_page(request: Request, user: Admin, done: str = "", error: str = "", uid: str = "") -> Response:
    tr = translator(language_of(request))
    with request.app.state.ctx.sessions() as session:
        target = session.get(User, int(uid)) if re.fullmatch(r"[0-9]{1,18}", uid) else None
        values = {"name": target.username if target else "", "min": users.MIN_PASSWORD_CHARS}
        message = tr.gettext(DONE_MESSAGES[done], **values) if done in DONE_MESSAGES else ""
        problem = tr.gettext(ERROR_MESSAGES[error], **values) if error in ERROR_MESSAGES else ""
        return _page(request, session, message=message, error=problem)


@router.post("/users")
def create(
    request: Request,
    user: Admin,
    username: Annotated[str, Form(max_length=200)] = "",
    display_name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=16)] = "",
    language: Annotated[str, Form(max_length=8)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    password2: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    tr = translator(language_of(request))
    username, display_name = username.strip(), display_name.strip()[:100]
    form = {"username": username, "display_name": display_name, "role": role, "language": language}
    values = {"name": username, "min": users.MIN_PASSWORD_CHARS}
    problem = ""
    if not _USERNAME.match(username):
        problem = "username"
    elif role not in {r.value for r in Role} or language not in LANGUAGES:
        problem = "choice"
    elif password != password2:
        problem = "mismatch"
    with request.app.state.ctx.sessions() as session:
        if not problem:
            try:
                new = users.create_user(
                    session, username=username, password=password, role=Role(role), display_name=display_name,
                    language=language,
                )
            except users.WeakPassword:
                problem = "weak"
            except Conflict:
                problem = "taken"
        if problem:
            code = status.HTTP_409_CONFLICT if problem == "taken" else status.HTTP_422_UNPROCESSABLE_CONTENT
            return _page(request, session, error=tr.gettext(ERROR_MESSAGES[problem], **values), form=form, code=code)
        audit.record(
            session, actor=user.actor, action="user.create", target=username,
            detail={"role": role, "language": language},
        )
        session.commit()
        return _back(done="created", user_id=new.user_id)


def _target(session: Session, user_id: int) -> User:
    row = session.get(User, user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND)
    return row


def _set_disabled(request: Request, user: PageUser, user_id: int, disabled: bool) -> Response:
    if disabled and user_id == user.user_id:
        return _back(error="self")
    with request.app.state.ctx.sessions() as session:
        row = _target(session, user_id)
        row.disabled = disabled
        if disabled:  # signed out at once, not only at their next sign-in
            session.execute(delete(WebSession).where(WebSession.user_id == user_id))
        action = "user.disable" if disabled else "user.enable"
        audit.record(session, actor=user.actor, action=action, target=row.username)
        session.commit()
    return _back(done="disabled" if disabled else "enabled", user_id=user_id)


@router.post("/users/{user_id}/disable")
def disable(request: Request, user: Admin, user_id: int) -> Response:
    return _set_disabled(request, user, user_id, True)


@router.post("/users/{user_id}/enable")
def enable(request: Request, user: Admin, user_id: int) -> Response:
    return _set_disabled(request, user, user_id, False)


@router.post("/users/{user_id}/role")
def change_role(
    request: Request, user: Admin, user_id: int, role: Annotated[str, Form(max_length=16)] = ""
) -> Response:
    if user_id == user.user_id:
        return _back(error="self")
    if role not in {r.value for r in Role}:
        return _back(error="choice")
    with request.app.state.ctx.sessions() as session:
        row = _target(session, user_id)
        before, row.role = row.role, role
        detail = {"from": before, "to": role}
        audit.record(session, actor=user.actor, action="user.role", target=row.username, detail=detail)
        session.commit()
    return _back(done="role", user_id=user_id)


@router.post("/users/{user_id}/password")
def reset_password(
    request: Request,
    user: Admin,
    user_id: int,
    password: Annotated[str, Form(max_length=1000)] = "",
    password2: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    if password != password2:
        return _back(error="mismatch", user_id=user_id)
    with request.app.state.ctx.sessions() as session:
        row = _target(session, user_id)
        try:
            users.set_password(session, user_id=user_id, password=password)
        except users.WeakPassword:
            session.rollback()
            return _back(error="weak", user_id=user_id)
        audit.record(session, actor=user.actor, action="user.password", target=row.username)
        session.commit()
    return _back(done="password", user_id=user_id)
