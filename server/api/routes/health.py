"""Health and metrics: ``GET /api/health`` and ``GET /healthz`` (no token), ``GET /metrics`` (a token).

``/api/health`` is the start-up probe of server/runtime.py (200 once the
database answers). ``/healthz`` is for monitoring: 200 only when the database
answers *and* the ingest is connected to the MQTT broker, else 503 with what is
wrong (server/health.py). Neither names a host, a URL or a secret.

``/metrics`` (Prometheus text format) needs ``Authorization: Bearer <token>``
with either ``metrics_token`` or ``api_token``: station ids, stations online and
entry rates say when a rest station is empty, which is not for anyone who can
reach the port. ``metrics_token`` exists so that the Prometheus server need not
hold the API token, which can change every worker.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.api.deps import ContextDep
from server.api.schemas import Health
from server.health import ServerMetrics, check_health

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
"""Mounted under /api."""
root = APIRouter(tags=["health"])
"""Mounted at the top: /healthz and /metrics, where monitoring tools look for them."""


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


@root.get("/healthz")
def healthz(ctx: ContextDep) -> JSONResponse:
    report = check_health(ctx.engine, ctx.ingest)
    code = status.HTTP_200_OK if report.ok else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(report.as_dict(), status_code=code, headers={"Cache-Control": "no-store"})


@root.get("/metrics")
def metrics(ctx: ContextDep, request: Request) -> Response:
    # A plain response rather than HTTPException: the web app renders HTTP errors outside /api as pages.
    if not _token_ok(ctx, request.headers.get("authorization", "")):
        return Response(
            "missing or wrong token: send 'Authorization: Bearer <metrics_token or api_token>'\n",
            status_code=status.HTTP_401_UNAUTHORIZED,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    registry: ServerMetrics = request.app.state.metrics
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


def _token_ok(ctx: ContextDep, header: str) -> bool:
    scheme, _, sent = header.partition(" ")
    if scheme.lower() != "bearer" or not sent.strip():
        return False
    given = sent.strip().encode()
    s = ctx.settings
    accepted = [s.api_token] + ([s.metrics_token] if s.metrics_token is not None else [])
    # compare_digest against each: the time taken does not reveal how much of a token matched.
    return any(hmac.compare_digest(given, t.get_secret_value().strip().encode()) for t in accepted)
