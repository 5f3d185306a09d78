"""The audit trail (admins and auditors): who did what, newest first, filtered, and as a CSV file.

Filters: the actor (exact user name, or "system", "cli", "api-token"), an action
prefix ("worker." or "worker.delete") and a range of days on the Asia/Shanghai
clock. Pages continue with the "older" link after the last id shown (keyset,
as server/audit.recent), so a long trail never costs an OFFSET. The export
streams the same rows with bounded memory and is itself audited ("audit.export").
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from core.i18n import DEFAULT_TIME_ZONE, Translator, translator, zone
from server import audit
from server.tables import AuditEvent, Role
from server.web.auth import PageUser, require_role
from server.web.templating import SECURITY_HEADERS, language_of, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[PageUser, Depends(require_role(Role.ADMIN, Role.AUDITOR))]
PAGE_SIZE = 100
TIME_ZONE = DEFAULT_TIME_ZONE  # the union's offices are on Beijing time
CSV_BATCH = 1000
SUGGESTION_ROWS = 5000
_ID = re.compile(r"[0-9]{1,18}")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    since: date | None = None
    until: date | None = None
    """The last day shown (inclusive)."""

    @classmethod
    def parse(cls, actor: str, action: str, since: str, until: str) -> tuple[AuditFilter, bool]:
        """The filter from the form's text, and whether every date was readable (unreadable ones are ignored)."""
        ok = True

        def day(text: str) -> date | None:
            nonlocal ok
            try:
                return date.fromisoformat(text.strip()) if text.strip() else None
            except ValueError:
                ok = False
                return None

        return cls(actor.strip()[:64], action.strip()[:64], day(since), day(until)), ok

    def where(self, stmt: Select) -> Select:  # type: ignore[type-arg]
        if self.actor:
            stmt = stmt.where(AuditEvent.actor == self.actor)
        if self.action:
            stmt = stmt.where(AuditEvent.action.startswith(self.action, autoescape=True))
        if self.since is not None:
            stmt = stmt.where(AuditEvent.at >= _midnight(self.since))
        if self.until is not None:
            stmt = stmt.where(AuditEvent.at < _midnight(self.until + timedelta(days=1)))
        return stmt

    def query(self) -> dict[str, str]:
        pairs = (("actor", self.actor), ("action", self.action), ("since", self.since), ("until", self.until))
        return {k: str(v) for k, v in pairs if v}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone(TIME_ZONE)).astimezone(timezone.utc)


def _detail(detail: dict[str, Any] | None) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(", ", ": ")) if detail else ""


def _suggestions(session: Session) -> tuple[list[str], list[str]]:
    """Who acted and which actions occur among the latest rows: hints for the filter fields, at a bounded cost."""
    latest = (
        select(AuditEvent.actor, AuditEvent.action).order_by(AuditEvent.id.desc()).limit(SUGGESTION_ROWS).subquery()
    )
    actors = session.scalars(select(latest.c.actor).distinct().order_by(latest.c.actor).limit(100))
    actions = session.scalars(select(latest.c.action).distinct().order_by(latest.c.action).limit(100))
    return list(actors), list(actions)


@router.get("/audit")
def audit_page(
    request: Request, user: Reader, actor: str = "", action: str = "", since: str = "", until: str = "",
    before: str = "",
) -> Response:
    filters, dates_ok = AuditFilter.parse(actor, action, since, until)
    before_id = int(before) if _ID.fullmatch(before) else None  # a mangled link shows the newest page
    with request.app.state.ctx.sessions() as session:
        stmt = filters.where(select(AuditEvent)).order_by(AuditEvent.id.desc()).limit(PAGE_SIZE + 1)
        if before_id is not None:
            stmt = stmt.where(AuditEvent.id < before_id)
        rows = list(session.scalars(stmt))
        actors, actions = _suggestions(session)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    query = filters.query()
    older_url = "/audit?" + urlencode({**query, "before": rows[-1].id}) if more else ""
    newest_url = "/audit?" + urlencode(query) if before_id is not None else ""
    return render(
        request, "audit.html", filters=filters, dates_ok=dates_ok, time_zone=TIME_ZONE,
        rows=[(r, _detail(r.detail)) for r in rows], actors=actors, actions=actions,
        older_url=older_url, newest_url=newest_url, export_url="/audit.csv" + ("?" + urlencode(query) if query else ""),
    )


@router.get("/audit.csv")
def audit_csv(
    request: Request, user: Reader, actor: str = "", action: str = "", since: str = "", until: str = ""
) -> Response:
    filters, _ok = AuditFilter.parse(actor, action, since, until)
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        audit.record(session, actor=user.actor, action="audit.export", target="audit_log", detail=filters.query())
        session.commit()
    tr = translator(language_of(request))
    now = datetime.now(zone(TIME_ZONE))
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="audit-{now:%Y%m%d-%H%M}.csv"',
    }
    return StreamingResponse(_csv(ctx.engine, filters, tr), media_type="text/csv; charset=utf-8", headers=headers)


def _csv(engine: Engine, filters: AuditFilter, tr: Translator) -> Iterator[str]:
    """BOM, header, then the rows newest first, read and written a batch at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")  # so spreadsheet programs read the Chinese text as UTF-8
    writer.writerow([
        tr.gettext("Time (%(zone)s)", zone=TIME_ZONE), tr.gettext("Actor"), tr.gettext("Action"),
        tr.gettext("Target"), tr.gettext("Details"),
    ])
    tz = zone(TIME_ZONE)
    columns = (AuditEvent.at, AuditEvent.actor, AuditEvent.action, AuditEvent.target, AuditEvent.detail)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=CSV_BATCH).execute(
            filters.where(select(*columns)).order_by(AuditEvent.id.desc())
        )
        try:
            for batch in result.partitions():
                for at, who, what, target, detail in batch:
                    when = at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
                    writer.writerow([when, *map(_cell, (who, what, target, _detail(detail)))])
                yield _take(buffer)
        finally:
            result.close()
    yield _take(buffer)


def _cell(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (targets and details come from users)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
