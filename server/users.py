"""Web users: argon2id password hashes, sign-in with rate limiting, and server-side sessions.

argon2-cffi (maintained, the PHC winner; also what amqtt already pulls in) hashes
passwords with its RFC 9106 "low memory" profile, and ``check_needs_rehash``
upgrades old hashes at the next sign-in. Session cookies carry 32 random bytes;
only their SHA-256 is stored, so a copy of the database cannot sign anyone in.

Rate limiting counts failed sign-ins in the database (so it holds across
restarts and several server processes): too many for one user name, or from one
address, within the window refuses further tries with the same message as a
wrong password plus a wait time; it never reveals whether a user exists.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from server.errors import Conflict, NotFound
from server.tables import LoginAttempt, Role, User, WebSession, utcnow

_hasher = PasswordHasher()
MIN_PASSWORD_CHARS = 12
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{2,64}$"
# A hash of a random password: verifying against it when the user does not exist takes
# as long as a real check, so the time taken does not reveal which user names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    """The new password is too short or too plain."""


class LoginRefused(Exception):
    """Wrong user name or password, or too many tries (``retry_after_s`` > 0)."""

    def __init__(self, retry_after_s: int = 0) -> None:
        super().__init__("too many failed sign-ins" if retry_after_s else "wrong user name or password")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LoginLimits:
    window_s: int = 900
    per_user: int = 5
    per_address: int = 20


def check_password_strength(password: str, username: str = "") -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if username and username.lower() in password.lower():
        raise WeakPassword("the password must not contain the user name")
    if len(set(password)) < 6:
        raise WeakPassword("the password is too repetitive")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(
    session: Session, *, username: str, password: str, role: Role, display_name: str = "", language: str = "zh_CN"
) -> User:
    """Add a user (not committed); Conflict if the name is taken, WeakPassword if the password is weak."""
    check_password_strength(password, username)
    if session.scalar(select(User.user_id).where(func.lower(User.username) == username.lower())) is not None:
        raise Conflict(f"user name {username!r} is taken")
    user = User(
        username=username, password_hash=hash_password(password), role=role.value,
        display_name=display_name or username, language=language,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, user_id: int, password: str) -> None:
    """Change a password and sign the user out everywhere (not committed)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    check_password_strength(password, user.username)
    user.password_hash = hash_password(password)
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def authenticate(
    session: Session, *, username: str, password: str, remote_addr: str, limits: LoginLimits = LoginLimits(),
    now: datetime | None = None,
) -> User:
    """The user if the password is right, else LoginRefused (after recording the failure). Commits."""
    now = now or utcnow()
    since = now - timedelta(seconds=limits.window_s)
    name = username.strip()[:64]
    by_user = session.scalar(
        select(func.count()).select_from(LoginAttempt).where(LoginAttempt.username == name.lower(), LoginAttempt.at >= since)
    ) or 0
    by_addr = session.scalar(
        select(func.count()).select_from(LoginAttempt)
        .where(LoginAttempt.remote_addr == remote_addr, LoginAttempt.at >= since)
    ) or 0
    if by_user >= limits.per_user or by_addr >= limits.per_address:
        first = session.scalar(
            select(func.min(LoginAttempt.at)).where(
                (LoginAttempt.username == name.lower()) | (LoginAttempt.remote_addr == remote_addr),
                LoginAttempt.at >= since,
            )
        )
        wait = int(((first or now) + timedelta(seconds=limits.window_s) - now).total_seconds()) + 1
        raise LoginRefused(retry_after_s=max(wait, 1))
    user = session.scalar(select(User).where(func.lower(User.username) == name.lower()))
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or user.disabled:
        session.add(LoginAttempt(username=name.lower(), remote_addr=remote_addr, at=now))
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=1)))
        session.commit()
        raise LoginRefused()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.execute(delete(LoginAttempt).where(LoginAttempt.username == name.lower()))
    user.last_login_at = now
    session.commit()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, *, user: User, hours: float, remote_addr: str) -> str:
    """A new session for ``user``; returns the cookie token (only its hash is stored). Commits."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(
        token_hash=_digest(token), user_id=user.user_id, csrf_token=secrets.token_urlsafe(32),
        created_at=now, last_seen_at=now, expires_at=now + timedelta(hours=hours), remote_addr=remote_addr[:64],
    ))
    session.execute(delete(WebSession).where(WebSession.expires_at < now))
    session.commit()
    return token


def session_user(session: Session, token: str | None) -> tuple[User, WebSession] | None:
    """The signed-in user of a cookie token, or None (unknown, expired, or the user is disabled)."""
    if not token or len(token) > 100:
        return None
    row = session.get(WebSession, _digest(token))
    if row is None or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return user, row


def end_session(session: Session, token: str | None) -> None:
    if token and len(token) <= 100:
        session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))
        session.commit()
