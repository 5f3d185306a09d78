"""GET /api/health: the one route that needs no token (for monitoring and start-up checks)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.api.deps import ContextDep
from server.api.schemas import Health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(ctx: ContextDep, response: Response) -> Health:
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as err:
        log.warning("health check: database unavailable: %s", err.__class__.__name__)
        database = "unavailable"
    if database != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if database == "ok" else "degraded",
        database=database,
        mqtt_connected=ctx.ingest is not None and ctx.ingest.connected,
    )
