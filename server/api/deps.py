"""Typed dependencies of the routes: the database session, the token check, the services."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models.messages import GalleryChange
from server.config import ServerSettings
from server.enrollment import PhotoEncoder
from server.ingest import Ingest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppContext:
    """What create_app wires together; stored on ``app.state.ctx``."""

    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    encoder: PhotoEncoder
    ingest: Ingest | None


def broadcast(ingest: Ingest | None, change: GalleryChange | None) -> None:
    """Send a gallery change to the stations now; without an MQTT link (a tool's app) they get it at
    their next sync. The one place routes and pages hand changes to MQTT."""
    if change is None:
        return
    if ingest is None:
        log.info("gallery change %d not broadcast: this app has no MQTT link", change.version)
        return
    ingest.publish_change(change)


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_encoder(ctx: ContextDep) -> PhotoEncoder:
    return ctx.encoder


EncoderDep = Annotated[PhotoEncoder, Depends(get_encoder)]


def get_ingest(ctx: ContextDep) -> Ingest | None:
    return ctx.ingest


IngestDep = Annotated[Ingest | None, Depends(get_ingest)]


def get_settings(ctx: ContextDep) -> ServerSettings:
    return ctx.settings


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
