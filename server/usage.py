"""Usage figures for the dashboard: visits per day and station, the hour-of-day profile, unique workers,
categories, busiest stations, refusals.

What counts (models.messages EventKind / Decision):

- **visit**: a GRANTED entry of kind FACE or QR. A station records one entry
  per visit (edge/agent.py: a worker let in again within the cooldown, or by
  QR and face in the same visit, is not recorded twice), so visits are entries.
  EXIT_REQUEST (the exit button) is counted apart, as ``exits``.
- **denied**: a DENIED face/QR attempt by a recognised worker (suspended,
  outside the validity window, not allowed at this station, refused QR).
- **unknown**: a DENIED face/QR attempt where nobody was recognised.
- **spoof**: liveness failed (Decision SPOOF).
- **alarms**: FORCED_OPEN, HELD_OPEN and TAMPER events.
- **category**: the worker's category when the visit was stored.

Time: days are local days in ``tz`` (the page passes the station's zone when
it shows one station); the hour-of-day profile puts each visit in its own
station's local time, so 23:30 in Shanghai is night although it is 15:30 UTC.
Night is 22:00-06:00.

Speed: whole UTC months, days and hours come from rollup tables kept by
triggers (server/usage_rollup.py), so a year costs the same at 10,000 or 10
million entries; only minutes before the first and after the last whole UTC
hour (never, for whole days in a zone with a whole-hour offset) are counted from
the entries, with the worker's current category. Unique workers:
server/usage_workers.py. The counts outlive retention; unique workers count a
worker whose visits were purged only while their first or last visit says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, or_, select, text
from sqlalchemy.orm import Session

from core.i18n import DEFAULT_TIME_ZONE, zone
from server.tables import USAGE_CATEGORY_COLUMNS, WORKER_CATEGORIES, Entry, Station, Worker
from server.usage_rollup import (
    ALL, DAY_S, HOUR_S, TOTALS, ByDay, Offsets, read_days, read_exact, read_hours, read_totals,
)
from server.usage_workers import unique_workers

__all__ = ["NIGHT_HOURS", "OTHERS", "RULES", "UNCATEGORISED", "StationUsage", "UsageSummary", "usage_summary"]

NIGHT_HOURS = frozenset((22, 23, 0, 1, 2, 3, 4, 5))
UNCATEGORISED = "uncategorised"
OTHERS = "*others*"
"""The key of the visits of every station not among the busiest, in ``UsageSummary.visits_by_day``."""
_VISIT = "e.decision = 'granted' AND e.kind IN ('face', 'qr')"
RULES = {
    "visits": _VISIT,
    "visits_qr": "e.decision = 'granted' AND e.kind = 'qr'",
    **{column: f"{_VISIT} AND e.category = '{c}'" for c, column in USAGE_CATEGORY_COLUMNS.items()},
    "denied": "e.decision = 'denied' AND e.kind IN ('face', 'qr') AND e.worker_id IS NOT NULL",
    "unknown": "e.decision = 'denied' AND e.kind IN ('face', 'qr') AND e.worker_id IS NULL",
    "spoof": "e.decision = 'spoof'",
    "exits": "e.kind = 'exit_request'",
    "alarms": "e.kind IN ('forced_open', 'held_open', 'tamper')",
}
"""What each count counts, as SQL over an entry ``e`` and its worker's category: the rules of the triggers that
keep usage_counts (migration 0006); tests/server/test_usage.py checks both against a count of its own."""
assert tuple(RULES) == TOTALS, "RULES must follow the order of the rollup's counts"
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class StationUsage:
    station_id: str
    name: str
    time_zone: str
    visits: int = 0
    visits_qr: int = 0
    denied: int = 0
    unknown: int = 0
    spoof: int = 0
    exits: int = 0
    alarms: int = 0


@dataclass(frozen=True)
class UsageSummary:
    """The figures of ``[since, until)``.

    ``stations``: every station in scope, busiest first. ``visits_by_day``: visits per local day (aligned
    with ``days``) of the busiest ``top_stations`` stations, the rest summed under :data:`OTHERS`.
    ``visits_by_hour``: 24 counts by the hour of day at each visit's station. ``totals``: every count.
    """

    since: datetime
    until: datetime
    time_zone: str
    station_id: str | None
    days: tuple[date, ...]
    visits_by_day: dict[str, tuple[int, ...]]
    visits_by_hour: tuple[int, ...]
    by_category: dict[str, int]
    stations: tuple[StationUsage, ...]
    unique_workers: int
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def visits(self) -> int:
        return self.totals.get("visits", 0)

    @property
    def night_visits(self) -> int:
        return sum(self.visits_by_hour[h] for h in NIGHT_HOURS)

    @property
    def night_share(self) -> float:
        """Share of visits between 22:00 and 06:00 station time (0.0 without visits)."""
        return self.night_visits / self.visits if self.visits else 0.0

    @property
    def day_totals(self) -> tuple[int, ...]:
        return tuple(map(sum, zip(*self.visits_by_day.values()))) if self.visits_by_day else (0,) * len(self.days)


def usage_summary(
    session: Session, since: datetime, until: datetime, station_id: str | None = None, tz: str = DEFAULT_TIME_ZONE,
    *, top_stations: int = 5,
) -> UsageSummary:
    """Usage in ``[since, until)`` (timezone-aware), at one station or all; days are local days in ``tz``."""
    if since.utcoffset() is None or until.utcoffset() is None:
        raise ValueError("since and until must be timezone-aware")
    if until <= since:
        raise ValueError("until must be after since")
    day_tz = zone(tz)
    since_s, until_s = since.timestamp(), until.timestamp()
    d0, d1 = math.ceil(since_s / DAY_S) * DAY_S, math.floor(until_s / DAY_S) * DAY_S  # whole UTC days: usage_days
    registered = select(Station.station_id, Station.name, Station.time_zone)
    if station_id:
        registered = registered.where(Station.station_id == station_id)
    known = {sid: (name, tzname) for sid, name, tzname in session.execute(registered)}
    lo, hi = math.floor(since_s), math.ceil(until_s)
    day_zone, default = Offsets(day_tz, lo, hi), Offsets(zone(DEFAULT_TIME_ZONE), lo, hi)
    by_name: dict[str, Offsets] = {}
    for _name, tzname in known.values():
        if tzname not in by_name:
            by_name[tzname] = Offsets(zone(tzname), lo, hi)
    zones = {sid: by_name[tzname] for sid, (_name, tzname) in known.items()}

    by_hour = [0] * 24
    by_day: ByDay = {}
    totals: dict[str, dict[str, int]] = {}
    exact = not (day_zone.fixed and default.fixed and all(z.fixed for z in zones.values()))
    if d0 < d1:
        if exact:
            totals, by_day = read_exact(session, d0, d1, station_id, zones, default, day_zone, by_hour)
        else:
            totals = read_totals(session, d0, d1, station_id, zones, default, by_hour)
    edge_days: list[tuple[str, int, int]] = []
    sums_by_station, visits_by_hour = _partial_days(session, since, until, d0, d1, station_id)
    for sid, *sums in sums_by_station:
        row = totals.setdefault(sid, dict.fromkeys(TOTALS, 0))
        for name, n in zip(TOTALS, sums):
            row[name] += int(n or 0)
    for sid, hour, visits in visits_by_hour:
        t, n = int(hour), int(visits)
        by_hour[(t + zones.get(sid, default).at(t)) // HOUR_S % 24] += n
        edge_days.append((sid, (t + day_zone.at(t)) // DAY_S, n))

    names = {sid: known.get(sid, (sid, DEFAULT_TIME_ZONE)) for sid in set(known) | set(totals)}
    stations = sorted(
        (StationUsage(sid, name, tzname, **{k: v for k, v in totals.get(sid, {}).items() if k in _STATION_FIELDS})
         for sid, (name, tzname) in names.items()),
        key=lambda s: (-s.visits, s.station_id),
    )
    top = [s.station_id for s in stations[: max(top_stations, 1)]]
    if d0 < d1 and not exact:
        read_days(session, d0, d1, station_id, day_zone, top, by_day)
    elif not station_id:  # exact: the sum of every station
        for series in list(by_day.values()):
            _add(by_day.setdefault(ALL, {}), series)
    for sid, local, visits in edge_days:
        for key in {sid, ALL} if not station_id else {sid}:
            _add(by_day.setdefault(key, {}), {local: visits})
    if not station_id:  # what the busiest leave: every station less them
        others = dict(by_day.get(ALL, {}))
        for sid in top:
            _add(others, {k: -v for k, v in by_day.get(sid, {}).items()})
        if any(others.values()):
            by_day[OTHERS] = others

    first = since.astimezone(day_tz).date()
    last = (until - timedelta(microseconds=1)).astimezone(day_tz).date()
    days = tuple(first + timedelta(days=i) for i in range((last - first).days + 1))
    base = (first - _EPOCH).days
    series_keys = [*top, *([OTHERS] if OTHERS in by_day and len(stations) > len(top) else [])]
    visits_by_day = {k: tuple(by_day.get(k, {}).get(base + i, 0) for i in range(len(days))) for k in series_keys}
    grand = {k: sum(t.get(k, 0) for t in totals.values()) for k in TOTALS}
    categories = {c: grand[USAGE_CATEGORY_COLUMNS[c]] for c in WORKER_CATEGORIES}
    categories[UNCATEGORISED] = grand["visits"] - sum(categories.values())
    return UsageSummary(
        since=since, until=until, time_zone=day_tz.key, station_id=station_id, days=days,
        visits_by_day=visits_by_day, visits_by_hour=tuple(by_hour), by_category=categories,
        stations=tuple(stations), unique_workers=unique_workers(session, since, until, station_id), totals=grand,
    )


_STATION_FIELDS = frozenset(("visits", "visits_qr", "denied", "unknown", "spoof", "exits", "alarms"))


def _add(into: dict[int, int], more: dict[int, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _partial_days(session: Session, since: datetime, until: datetime, d0: int, d1: int,
                  station_id: str | None) -> tuple[list, list]:
    """Outside the whole UTC days: the counts per station, and the visits per station and UTC hour. Whole hours
    come from usage_hours, the minutes before the first and after the last whole hour from the entries."""
    h0, h1 = math.ceil(since.timestamp() / HOUR_S) * HOUR_S, math.floor(until.timestamp() / HOUR_S) * HOUR_S
    hours = [(h0, d0), (d1, h1)] if d0 < d1 else [(h0, h1)]
    sums, visits = read_hours(session, [(a, b) for a, b in hours if a < b], station_id)
    if h0 > h1:  # within one hour
        spans = [(since, until)]
    else:
        spans = [(since, datetime.fromtimestamp(h0, timezone.utc)), (datetime.fromtimestamp(h1, timezone.utc), until)]
    spans = [(x, y) for x, y in spans if x < y]
    for sid, hour, *counts in _entries(session, spans, station_id) if spans else []:
        sums.append((sid, *counts))
        if counts[0]:
            visits.append((sid, hour, counts[0]))
    return sums, visits


def _entries(session: Session, spans: list[tuple[datetime, datetime]], station_id: str | None) -> list:
    """The counts per station and UTC hour of the entries in ``spans`` (each less than an hour)."""
    if session.get_bind().dialect.name == "sqlite":  # UTC as text
        hour = cast(func.strftime("%s", Entry.occurred_at), Integer) // HOUR_S * HOUR_S
    else:
        hour = cast(func.floor(func.extract("epoch", Entry.occurred_at) / HOUR_S) * HOUR_S, BigInteger)
    span = or_(*(and_(Entry.occurred_at >= x, Entry.occurred_at < y) for x, y in spans))
    e = (select(Entry.station_id, Entry.worker_id, Entry.kind, Entry.decision, hour.label("hour_s"), Worker.category)
         .outerjoin(Worker, Worker.worker_id == Entry.worker_id).where(span))
    if station_id:
        e = e.where(Entry.station_id == station_id)
    sub = e.subquery("e")
    sums = (func.sum(case((text(rule), 1), else_=0)) for rule in RULES.values())
    stmt = select(sub.c.station_id, sub.c.hour_s, *sums)
    return list(session.execute(stmt.group_by(sub.c.station_id, sub.c.hour_s)))
