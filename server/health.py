"""The server's health check and Prometheus metrics (the only server module importing prometheus_client).

``GET /healthz`` (:func:`check_health`) says whether this server can do its
job: the database answers and the ingest's MQTT link is connected.

``GET /metrics`` (:class:`ServerMetrics`) is built so that scraping costs the
ingest nothing:

- the ingest counters (entries stored, duplicates, refused payloads by
  reason) are the ones :class:`server.ingest.Ingest` keeps anyway, read at
  scrape time;
- the event lag histogram is observed by a listener the ingest calls after
  each committed batch (one bucket increment per new event);
- the gauges (stations online, confirmations pending, gallery version) are
  read from the database at scrape time by a custom collector, the way the
  admin pages read them (server/web/pages/station_views.py).

Each app gets its own ``CollectorRegistry`` (never prometheus_client's global
one), so tests and the demo can run several apps in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from models.messages import EntryEvent
from server.db import make_sessionmaker
from server.gallery import latest_version
from server.ingest import Ingest
from server.tables import GalleryChangeRow, Station, utcnow
from server.web.pages.station_views import HEARTBEAT_LATE  # "late" means what the stations page shows

log = logging.getLogger(__name__)

# Seconds from the station's decision to the server's commit: sub-second when online; minutes to
# days for entries that waited in a station's outbox while the broker or the network was down.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))

# Ingest counter name -> (metric, label value). Entries: stored or duplicate; payloads refused by reason.
_ENTRY_OUTCOMES = {"stored": "stored", "duplicates": "duplicate"}
_REJECTED = {
    "rejected_malformed": "malformed",
    "rejected_too_large": "too_large",
    "rejected_topic_mismatch": "topic_mismatch",
    "rejected_unknown_station": "unknown_station",
    "rejected_unstorable": "unstorable",
}
_MESSAGES = {"statuses": "status", "acks": "sync_ack", "sync_requests": "sync_request"}


@dataclass(frozen=True)
class HealthReport:
    database: str  # "ok" | "unavailable"
    broker: str  # "connected" | "disconnected" | "not started"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.ok else "degraded",
            "database": self.database,
            "broker": self.broker,
            "problems": self.problems,
        }


def check_health(engine: Engine, ingest: Ingest | None) -> HealthReport:
    """Whether the database answers and the ingest is on the broker; never names a host, URL or secret."""
    problems = []
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as err:
        # Only the class name: the message of a connection error can quote the URL with its password.
        log.warning("health check: database unavailable: %s", err.__class__.__name__)
        database = "unavailable"
        problems.append(f"the database does not answer ({err.__class__.__name__})")
    if ingest is None:
        broker = "not started"
        problems.append("the MQTT ingest is not running: entries and station statuses are not received")
    elif ingest.connected:
        broker = "connected"
    else:
        broker = "disconnected"
        problems.append("not connected to the MQTT broker: entries wait at the stations, gallery changes are not sent")
    return HealthReport(database=database, broker=broker, problems=problems)


class ServerMetrics:
    """One app's metrics registry; ``render(accept)`` gives the scrape body and its content type."""

    def __init__(self, engine: Engine, ingest: Ingest | None) -> None:
        self.registry = CollectorRegistry()
        self.ingest = ingest
        self.event_lag = Histogram(
            "waystation_event_lag_seconds",
            "Seconds from an entry's decision at the station (occurred_at) to its storage on the server, "
            "per newly stored event (station clock: a station running fast shows as 0)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # process_* : memory, CPU, open files of this process
        self.registry.register(_DatabaseCollector(engine))
        if ingest is not None:
            self.registry.register(_IngestCollector(ingest))
            ingest.add_stored_listener(self.observe_stored)

    def observe_stored(self, events: Sequence[EntryEvent]) -> None:
        """Called by the ingest thread after a commit, with the events that were new."""
        now = utcnow()
        for event in events:
            self.event_lag.observe(max(0.0, (now - event.occurred_at).total_seconds()))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for (Prometheus text, or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def close(self) -> None:
        if self.ingest is not None:
            self.ingest.add_stored_listener(self.observe_stored, remove=True)


class _IngestCollector:
    """The ingest's own counters, read at scrape time (the ingest thread pays nothing for them)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        counts = self.ingest.counters
        entries = CounterMetricFamily(
            "waystation_ingest_entries", "Entry events received over MQTT, by outcome (stored: new; duplicate: "
            "a redelivery of an event already stored)", labels=["outcome"],
        )
        for name, outcome in _ENTRY_OUTCOMES.items():
            entries.add_metric([outcome], counts.get(name, 0))
        yield entries
        rejected = CounterMetricFamily(
            "waystation_ingest_rejected", "Payloads refused (logged and acknowledged, never stored), by reason",
            labels=["reason"],
        )
        for name, reason in _REJECTED.items():
            rejected.add_metric([reason], counts.get(name, 0))
        yield rejected
        messages = CounterMetricFamily(
            "waystation_ingest_messages", "Other station messages handled, by type", labels=["type"]
        )
        for name, kind in _MESSAGES.items():
            messages.add_metric([kind], counts.get(name, 0))
        yield messages
        yield CounterMetricFamily(
            "waystation_ingest_sync_pages", "Sync reply pages published to stations", value=counts.get("sync_pages", 0)
        )
        yield CounterMetricFamily(
            "waystation_ingest_db_errors", "Database failures met by the ingest (retried; nothing acknowledged meanwhile)",
            value=counts.get("db_errors", 0),
        )
        yield CounterMetricFamily(
            "waystation_ingest_errors", "Unexpected errors in the ingest (bugs; see the log)", value=counts.get("errors", 0)
        )
        yield GaugeMetricFamily(
            "waystation_mqtt_connected", "1 when the ingest is connected to the MQTT broker",
            value=1 if self.ingest.connected else 0,
        )


class _DatabaseCollector:
    """Gauges read from the stations and gallery_changes tables at scrape time (a few small queries)."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = make_sessionmaker(engine)

    def collect(self) -> Iterator[Metric]:
        try:
            rows, version, pending = self._read()
        except SQLAlchemyError as err:
            log.warning("metrics: database unavailable: %s", err.__class__.__name__)
            yield GaugeMetricFamily("waystation_database_up", "1 when the database answered this scrape", value=0)
            return
        yield GaugeMetricFamily("waystation_database_up", "1 when the database answered this scrape", value=1)
        yield GaugeMetricFamily("waystation_gallery_version", "Newest gallery version issued", value=version)
        now = utcnow()
        online = [r for r in rows if r.online]
        late = [r for r in online if _heartbeat_late(r.heartbeat_at or r.last_seen_at, now)]
        yield GaugeMetricFamily("waystation_stations_registered", "Stations registered", value=len(rows))
        yield GaugeMetricFamily(
            "waystation_stations_online", "Stations whose retained status says online (their last will says "
            "offline when the connection drops)", value=len(online),
        )
        yield GaugeMetricFamily(
            "waystation_stations_heartbeat_late",
            f"Stations online whose last heartbeat is older than {HEARTBEAT_LATE.total_seconds():.0f} s",
            value=len(late),
        )
        yield GaugeMetricFamily(
            "waystation_sync_confirmations_pending",
            "Gallery changes not yet confirmed, summed over the registered stations (a change missing on 3 "
            "stations counts 3)", value=sum(pending.values()),
        )
        yield GaugeMetricFamily(
            "waystation_stations_behind", "Stations that have not confirmed every gallery change",
            value=sum(1 for n in pending.values() if n > 0),
        )
        up = GaugeMetricFamily("waystation_station_online", "1 when the station is online", labels=["station"])
        behind = GaugeMetricFamily(
            "waystation_station_changes_pending", "Gallery changes this station has not confirmed", labels=["station"]
        )
        for row in rows:
            up.add_metric([row.station_id], 1 if row.online else 0)
            behind.add_metric([row.station_id], pending.get(row.station_id, 0))
        yield up
        yield behind

    def _read(self) -> tuple[list[Any], int, dict[str, int]]:
        with self.sessions() as session:
            rows = list(
                session.execute(
                    select(
                        Station.station_id, Station.online, Station.heartbeat_at, Station.last_seen_at
                    ).order_by(Station.station_id)
                )
            )
            version = latest_version(session=session)
            # A change is confirmed by a station once its acknowledged version reaches it (server/stations.py).
            pending = {
                station_id: int(n)
                for station_id, n in session.execute(
                    select(Station.station_id, func.count(GalleryChangeRow.version))
                    .join(GalleryChangeRow, GalleryChangeRow.version > Station.gallery_version_acked)
                    .group_by(Station.station_id)
                )
            }
        return rows, version, pending


def _heartbeat_late(at: datetime | None, now: datetime) -> bool:
    return at is None or now - at > HEARTBEAT_LATE
