"""The audit trail: who enrolled, suspended, deleted, exported what, and when.

``record`` only adds the row to the caller's session, so the action and its
audit row are committed together (or not at all).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.tables import AuditEvent, utcnow

SYSTEM = "system"
CLI = "cli"
API_TOKEN = "api-token"


def record(
    session: Session, *, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
) -> AuditEvent:
    """Add one audit row to ``session`` (not committed here)."""
    row = AuditEvent(at=utcnow(), actor=actor[:64], action=action[:64], target=target[:200], detail=detail)
    session.add(row)
    return row


def recent(
    session: Session, *, limit: int = 100, before_id: int | None = None, actor: str | None = None,
    action_prefix: str | None = None,
) -> list[AuditEvent]:
    """Newest audit rows first, keyset-paged by id."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action_prefix:
        stmt = stmt.where(AuditEvent.action.startswith(action_prefix))
    return list(session.scalars(stmt))
