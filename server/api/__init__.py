"""The HTTP API: ``create_app(settings)`` builds the FastAPI application.

Every route under ``/api`` except ``GET /api/health`` requires either
``Authorization: Bearer <api_token>`` (scripts; acts as an admin) or a signed-in
browser session whose role may use the route (server/web/auth.py). The admin
web pages are mounted on the same app (server/web). ``GET /healthz`` (no token) and ``GET /metrics``
(Prometheus; ``metrics_token`` or ``api_token``) sit outside /api (server/api/routes/health.py, server/health.py).
create_app does not migrate the database: the runtime (server.runtime) does that before it serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from core.faces import FaceEngine, FaceModelError
from server.api.deps import AppContext
from server.api.routes import entries, health, stations, workers
from server.api.routes import sync as sync_routes
from server.api.routes import credentials as credential_routes
from server.api.routes import enrollment as enrollment_routes
from server.config import ServerSettings
from server.db import make_engine, make_sessionmaker
from server.enrollment import PhotoEncoder
from server.entries import InvalidCursor
from server.errors import Conflict, NotFound
from server.health import ServerMetrics
from server.ingest import Ingest
from server.tables import Role
from server.web import mount_web
from server.web.auth import api_roles

ADMIN, AUDITOR, STAFF = Role.ADMIN, Role.AUDITOR, Role.STAFF

__all__ = ["create_app"]


def create_app(
    settings: ServerSettings,
    *,
    ingest: Ingest | None = None,
    engine: Engine | None = None,
    face_engine: FaceEngine | None = None,
) -> FastAPI:
    """The API app. Without ``ingest`` gallery changes are stored but not broadcast;
    without ``engine`` the app builds (and disposes) its own from the settings;
    ``face_engine`` shares already loaded dlib models (else loaded on the first photo)."""
    owns_engine = engine is None
    db = engine if engine is not None else make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.metrics.close()
        if owns_engine:
            db.dispose()

    # Interactive docs would load their assets from a CDN; stations' offices may be offline.
    app = FastAPI(
        title="Waystation server",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.ctx = AppContext(
        settings=settings,
        engine=db,
        sessions=make_sessionmaker(db),
        encoder=PhotoEncoder(face_engine=face_engine, max_side=settings.enroll_max_side),
        ingest=ingest,
    )
    app.state.metrics = ServerMetrics(db, ingest)  # its own registry: several apps may share a process
    app.include_router(health.root)  # /healthz and /metrics (server/api/routes/health.py)
    api = APIRouter(prefix="/api")
    api.include_router(health.router)
    # Who may call what (server/web/auth.py): the bearer token acts as an admin; a signed-in
    # browser needs the role, and the X-CSRF-Token header to change anything.
    admin_only = [Depends(api_roles())]
    api.include_router(stations.router, dependencies=[Depends(api_roles(read=(ADMIN, AUDITOR)))])
    api.include_router(workers.router, dependencies=admin_only)
    api.include_router(entries.router, dependencies=[Depends(api_roles(read=(ADMIN, AUDITOR)))])
    api.include_router(sync_routes.router, dependencies=admin_only)
    api.include_router(credential_routes.router, dependencies=admin_only)
    staff = (ADMIN, STAFF)
    api.include_router(enrollment_routes.router, dependencies=[Depends(api_roles(read=staff, write=staff))])
    app.include_router(api)
    _add_error_handlers(app)
    mount_web(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def reply(code: int):  # noqa: ANN202
        async def handler(_request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse(status_code=code, content={"detail": str(exc)})

        return handler

    app.add_exception_handler(NotFound, reply(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(Conflict, reply(status.HTTP_409_CONFLICT))
    app.add_exception_handler(InvalidCursor, reply(status.HTTP_422_UNPROCESSABLE_CONTENT))
    app.add_exception_handler(FaceModelError, reply(status.HTTP_503_SERVICE_UNAVAILABLE))
