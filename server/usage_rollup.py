"""Reading the usage_counts rollup (migration 0006) in the stations' local time.

A usage_counts row holds a station's counts over one UTC day or month, its
visits per UTC hour among them. A range's whole UTC months are read as months,
its other whole UTC days as days (a year at 300 stations: about 3,600 rows plus
the days of two part-months), its other whole hours from usage_hours (a day in
Shanghai is 16 hours of one UTC day and 8 of the next).

With a fixed UTC offset over the range (China has no daylight saving time),
UTC hour ``h`` is local hour ``h + offset`` and lies on the row's day or the
next or previous one. So the totals and hour-of-day profile need one query
summed per station, and the visits per local day one query over the
all-stations day rows (``station_id`` "") and the busiest stations' day rows.
When a zone changes its offset within the range, every station's day rows are
read and placed hour by hour in Python (:func:`read_exact`).

A zone whose offset is not whole hours (India, +05:30) places an hour by its
start: a visit at 10:10 UTC counts for 15:00-16:00 local.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from server.tables import USAGE_COUNT_COLUMNS, USAGE_COUNTS, USAGE_HOUR_COLUMNS, USAGE_HOURS, USAGE_TOTAL_COLUMNS

HOUR_S, DAY_S = 3600, 86400
ALL = ""
"""``station_id`` of the rows that count every station (days only)."""
TOTALS = USAGE_TOTAL_COLUMNS
_C = USAGE_COUNTS.c
_H = USAGE_HOURS.c

Counts = dict[str, int]
ByDay = dict[str, dict[int, int]]
"""Visits per key (a station, or ALL) per local day (days since 1970-01-01 in the day's zone)."""


class Offsets:
    """A zone's UTC offset in seconds at any moment of ``[start_s, end_s)``, from its few changes."""

    def __init__(self, tz: ZoneInfo, start_s: int, end_s: int) -> None:
        self.starts, self.values = [], []
        for at, offset in _segments(tz, start_s, end_s):
            self.starts.append(at)
            self.values.append(offset)

    @property
    def fixed(self) -> bool:
        return len(self.values) == 1

    def at(self, t: int) -> int:
        return self.values[max(0, bisect_right(self.starts, t) - 1)]


def _segments(tz: ZoneInfo, start_s: int, end_s: int) -> list[tuple[int, int]]:
    """``(from_s, offset_s)`` where the offset of the hours in ``[start_s, end_s)`` changes."""

    def offset_at(t: int) -> int:
        delta = datetime.fromtimestamp(t, timezone.utc).astimezone(tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    start_s -= start_s % HOUR_S
    current = offset_at(start_s)
    segments = [(start_s, current)]
    last = max(start_s, end_s - HOUR_S)
    t = start_s
    while t < last:
        probe = min(t + DAY_S, last)
        if offset_at(probe) == current:
            t = probe
            continue
        lo, hi = t, probe  # offset_at(lo) == current != offset_at(hi): find the first hour that changed
        while hi - lo > HOUR_S:
            mid = lo + (hi - lo) // (2 * HOUR_S) * HOUR_S
            lo, hi = (mid, hi) if offset_at(mid) == current else (lo, mid)
        current = offset_at(hi)
        segments.append((hi, current))
        t = hi
    return segments


def whole_months(d0: int, d1: int) -> tuple[int, int]:
    """``[m0, m1)``: the UTC months that lie wholly in the UTC days ``[d0, d1)`` (empty: m0 >= m1)."""
    first = datetime.fromtimestamp(d0, timezone.utc)
    m0 = first.replace(day=1)
    if m0 < first:
        m0 = m0.replace(year=m0.year + 1, month=1) if m0.month == 12 else m0.replace(month=m0.month + 1)
    m1 = datetime.fromtimestamp(d1, timezone.utc).replace(day=1)
    return int(m0.timestamp()), int(m1.timestamp())


def _station_rows(d0: int, d1: int, station_id: str | None, months: bool):  # noqa: ANN202
    days = and_(_C.period == "day", _C.start_s >= d0, _C.start_s < d1)
    m0, m1 = whole_months(d0, d1)
    if months and m0 < m1:
        days = or_(
            and_(_C.period == "month", _C.start_s >= m0, _C.start_s < m1),
            and_(_C.period == "day",
                 or_(and_(_C.start_s >= d0, _C.start_s < m0), and_(_C.start_s >= m1, _C.start_s < d1))),
        )
    return and_(days, _C.station_id == station_id) if station_id else and_(days, _C.station_id != ALL)


def read_totals(
    session: Session, d0: int, d1: int, station_id: str | None, zones: Mapping[str, Offsets], default: Offsets,
    by_hour: list[int],
) -> dict[str, Counts]:
    """Per station, every count over the UTC days ``[d0, d1)``; adds the visits by local hour (fixed offsets)."""
    stmt = select(_C.station_id, *(func.sum(_C[c]) for c in USAGE_COUNT_COLUMNS)).where(
        _station_rows(d0, d1, station_id, months=True)).group_by(_C.station_id)
    totals: dict[str, Counts] = {}
    for sid, *sums in session.execute(stmt):
        values = dict(zip(USAGE_COUNT_COLUMNS, (int(n or 0) for n in sums)))
        shift = zones.get(sid, default).values[0] // HOUR_S
        for h, column in enumerate(USAGE_HOUR_COLUMNS):
            by_hour[(h + shift) % 24] += values[column]
        totals[sid] = {c: values[c] for c in TOTALS}
    return totals


def read_days(
    session: Session, d0: int, d1: int, station_id: str | None, day_zone: Offsets, top: list[str], by_day: ByDay,
) -> None:
    """Adds the visits per local day in ``day_zone`` (fixed offset): of every station (key ALL) and of ``top``."""
    offset = day_zone.values[0]
    parts: dict[int, list[str]] = {}
    for h, column in enumerate(USAGE_HOUR_COLUMNS):
        parts.setdefault((h * HOUR_S + offset) // DAY_S, []).append(column)  # the day before, the same or the next
    shifts = sorted(parts)
    keys = [station_id] if station_id else [ALL, *top]
    day_parts = (sum((_C[c] for c in parts[s][1:]), _C[parts[s][0]]) for s in shifts)  # SQL: col + col + ...
    stmt = select(_C.station_id, _C.start_s, *day_parts).where(
        _C.period == "day", _C.start_s >= d0, _C.start_s < d1, _C.station_id.in_(keys))
    for sid, day, *sums in session.execute(stmt):
        series = by_day.setdefault(sid, {})
        for shift, n in zip(shifts, sums):
            if n:
                local = int(day) // DAY_S + shift
                series[local] = series.get(local, 0) + int(n)


def read_exact(
    session: Session, d0: int, d1: int, station_id: str | None, zones: Mapping[str, Offsets], default: Offsets,
    day_zone: Offsets, by_hour: list[int],
) -> tuple[dict[str, Counts], ByDay]:
    """Totals and visits per local day and station, hour by hour: for zones that change offset in the range."""
    stmt = select(_C.station_id, _C.start_s, *(_C[c] for c in USAGE_COUNT_COLUMNS)).where(
        _station_rows(d0, d1, station_id, months=False))
    totals: dict[str, Counts] = {}
    by_day: ByDay = {}
    for sid, day, *counts in session.execute(stmt):
        values = dict(zip(USAGE_COUNT_COLUMNS, counts))
        row = totals.setdefault(sid, dict.fromkeys(TOTALS, 0))
        for c in TOTALS:
            row[c] += values[c]
        station_zone, series = zones.get(sid, default), by_day.setdefault(sid, {})
        for h, column in enumerate(USAGE_HOUR_COLUMNS):
            if values[column]:
                t = int(day) + h * HOUR_S
                by_hour[(t + station_zone.at(t)) // HOUR_S % 24] += values[column]
                local = (t + day_zone.at(t)) // DAY_S
                series[local] = series.get(local, 0) + values[column]
    return totals, by_day


def read_hours(session: Session, spans: list[tuple[int, int]], station_id: str | None) -> tuple[list, list]:
    """Over the UTC hours in ``spans`` (``[start_s, end_s)`` pairs): ``(station_id, *TOTALS)`` summed per station,
    and the ``(station_id, hour_s, visits)`` of each hour with visits."""
    if not spans:
        return [], []
    where = [or_(*(and_(_H.hour_s >= a, _H.hour_s < b) for a, b in spans))]
    if station_id:
        where.append(_H.station_id == station_id)
    totals = select(_H.station_id, *(func.sum(_H[c]) for c in TOTALS)).where(*where).group_by(_H.station_id)
    visits = select(_H.station_id, _H.hour_s, _H.visits).where(*where, _H.visits > 0)
    return list(session.execute(totals)), list(session.execute(visits))
