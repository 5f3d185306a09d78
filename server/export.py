"""CSV export of the filtered entry log, streamed with bounded memory.

>>> response = StreamingResponse(export_csv(engine, EntryFilter(station_id="s1")), media_type=CSV_MEDIA_TYPE)

:func:`export_csv` is a generator of text chunks: a UTF-8 byte order mark (so
Excel opens Chinese names correctly), a header line, then the rows, newest
first, a batch at a time. Memory stays flat however many rows there are: on
PostgreSQL the rows come from a server-side cursor (``stream_results``), on
SQLite from its lazily stepping cursor, ``batch_size`` rows at a time, and
each batch is written out before the next is read.

The export holds one connection (and, on PostgreSQL, one snapshot: the file is
consistent even while entries arrive) from the first chunk until the last or
until the client goes away; closing the generator releases it.

Times are written in the station's time zone as ``YYYY-MM-DD HH:MM:SS`` (a
form spreadsheets read as a date), with the zone in its own column. Text cells
that a spreadsheet would run as a formula (starting with ``= + - @``) get a
leading apostrophe: reasons come from stations and names from people.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Engine

from core.i18n import zone
from server.entrylog import FIELDS, EntryFilter, entry_log_select

__all__ = ["BOM", "CSV_MEDIA_TYPE", "EXPORT_COLUMNS", "csv_chunks", "export_csv", "export_filename", "stream_batches"]

BOM = "\ufeff"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

# (EntryLogRow field, English header). The web page translates the headers (locale/*/entries.po).
EXPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("occurred_at", "Station time"),
    ("received_at", "Received by server"),
    ("station_time_zone", "Time zone"),
    ("station_id", "Station ID"),
    ("station_name", "Station"),
    ("worker_id", "Worker ID"),
    ("worker_name", "Worker"),
    ("worker_category", "Category"),
    ("kind", "Kind"),
    ("decision", "Decision"),
    ("reason", "Reason"),
    ("distance", "Distance"),
    ("second_distance", "Second distance"),
    ("frames", "Frames"),
    ("face_px", "Face size (px)"),
    ("decision_ms", "Decision time (ms)"),
    ("liveness", "Liveness"),
    ("blinks", "Blinks"),
    ("event_id", "Event ID"),
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Cached: an unknown zone name is warned about once, not once per row.
_zone = functools.lru_cache(maxsize=1024)(zone)


def stream_batches(
    engine: Engine, filters: EntryFilter, *, batch_size: int = 2000
) -> Iterator[Sequence[Sequence[object]]]:
    """Every row matching ``filters``, newest first, ``batch_size`` rows at a time, on a connection of its own.

    Rows are result rows of entry_log_select: values in EntryLogRow's field order (``row_of`` makes one).
    """
    if not 1 <= batch_size <= 100_000:
        raise ValueError("batch_size must be 1..100000")
    with engine.connect() as conn:
        options = conn.execution_options(stream_results=True, yield_per=batch_size)
        result = options.execute(entry_log_select(filters))
        try:
            yield from result.partitions()
        finally:
            result.close()


def csv_chunks(
    batches: Iterable[Sequence[Sequence[object]]], *, headers: Sequence[str] | None = None
) -> Iterator[str]:
    """The CSV text of ``batches`` of rows (in EntryLogRow field order), one chunk per batch.

    The first chunk is the BOM and the header line, so even an empty export is a valid file.
    """
    names = headers if headers is not None else [english for _, english in EXPORT_COLUMNS]
    if len(names) != len(EXPORT_COLUMNS):
        raise ValueError(f"expected {len(EXPORT_COLUMNS)} headers, got {len(names)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends, as Excel writes them
    buffer.write(BOM)
    writer.writerow([_text(name) for name in names])
    yield _take(buffer)
    for batch in batches:
        writer.writerows(map(_line, batch))
        yield _take(buffer)


def export_csv(
    engine: Engine, filters: EntryFilter, *, headers: Sequence[str] | None = None, batch_size: int = 2000
) -> Iterator[str]:
    """The filtered entry log as CSV text chunks (see the module docstring)."""
    batches = stream_batches(engine, filters, batch_size=batch_size)
    try:
        yield from csv_chunks(batches, headers=headers)
    finally:
        batches.close()  # the client went away: release the connection now, not at garbage collection


def export_filename(filters: EntryFilter, now: datetime) -> str:
    """A download name saying what is inside, e.g. ``entries-s1-denied-20250501-1200.csv``."""
    parts = ["entries"]
    parts += [
        value
        for value in (filters.station_id, filters.worker_id, filters.category, filters.decision, filters.kind)
        if value is not None
    ]
    parts.append(now.strftime("%Y%m%d-%H%M"))
    safe = "-".join(getattr(p, "value", p) for p in parts)
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in safe) + ".csv"


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


_TZ = FIELDS.index("station_time_zone")
# How each exported column is written, and where its value sits in a row.
_TIME, _ZONE, _TEXT, _PLAIN = range(4)
_PLAN = tuple(
    (
        FIELDS.index(name),
        _TIME if name.endswith("_at") else _ZONE if name == "station_time_zone" else
        _TEXT if name in ("station_id", "station_name", "worker_id", "worker_name", "reason") else _PLAIN,
    )
    for name, _ in EXPORT_COLUMNS
)


def _line(row: Sequence[object]) -> list[object]:
    # The hot loop of a million-row export: positions and kinds are worked out once, above.
    tz = _zone(row[_TZ])
    out: list[object] = []
    for index, how in _PLAN:
        value = row[index]
        if value is None:
            out.append("")
        elif how == _TIME:
            out.append(value.astimezone(tz).isoformat(" ", "seconds")[:19])  # type: ignore[attr-defined]
        elif how == _ZONE:
            out.append(tz.key)
        elif how == _TEXT:
            out.append(_text(value))  # type: ignore[arg-type]
        else:
            out.append(value)
    return out


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value
