"""What the server sets for one station (access mode, opening hours, time zone), and the station's answer.

The server publishes a :class:`StationConfig` **retained** on
``ws/v1/station/{sid}/config`` whenever an admin changes the station's mode,
opening hours or time zone, and at every (re)connect for every station, so a
station that was offline finds the current copy waiting when it subscribes.
``version`` only grows: the station ignores a config older than the one it
applied. It answers with a :class:`StationConfigAck`, retained on
``ws/v1/station/{sid}/config/ack``: which version it applied, or why it
refused one (then it keeps what it had).

Opening hours are parsed here, by the one parser both the admin pages and the
stations use (:func:`parse_opening_hours`), in the station's local time:

- every day the same: ``24h``, or comma-separated ``HH:MM-HH:MM`` ranges; a
  range whose end is earlier than its start crosses midnight
  (``22:00-06:00``), ``24:00`` is the end of the day;
- per weekday: groups separated by ``;``, each a day set (``Mon-Fri``,
  ``Sat,Sun``, ``Fri-Mon`` wraps) followed by ``24h`` or ranges:
  ``Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00``. A day in no group is closed; a
  day in two groups is an error. A range crossing midnight belongs to the day
  it starts: ``Fri 22:00-02:00`` is open on Saturday at 01:00.

The canonical text (``str(OpeningHours)``) is what travels and is stored: old
every-day texts print as they always did (so a station running older code
still reads them), day groups are merged and ordered Monday first. A station
judges the hours in the config's ``time_zone`` (IANA name), whatever zone its
own clock is set to.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from models.messages import ShortText, StationId, Version, utcnow

AccessMode = Literal["face", "qr", "face_or_qr", "qr_then_face"]
MODES: tuple[str, ...] = ("face", "qr", "face_or_qr", "qr_then_face")
"""face: 1:N face recognition; qr: a signed QR credential; face_or_qr: either; qr_then_face: QR, then the face 1:1."""
QR_MODES = frozenset({"qr", "face_or_qr", "qr_then_face"})
"""The modes a station can use only with the server's QR public key in its own config."""

ALWAYS = "24h"
MAX_HOURS_CHARS = 100  # the server's stations.opening_hours column, and the message field
MAX_RANGES = 7  # per day set: so that an every-day text ("HH:MM-HH:MM, " each) stays within MAX_HOURS_CHARS
DAY_MINUTES = 24 * 60
DAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""The day names of the syntax, Monday first (``datetime.weekday()`` order); any case on input."""
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_DAY_SPAN = re.compile(r"^([a-z]{3})(?:\s*-\s*([a-z]{3}))?$", re.IGNORECASE)

Ranges = tuple[tuple[int, int], ...]
"""One day's (start, end) minutes after local midnight, in the order written; () is open all day."""

# The reasons a text is refused: English message ids (the admin pages translate them, locale/*/stations.po),
# one sentence each; %(name)s placeholders are filled from OpeningHoursError.values.
NOT_TEXT = "Opening hours must be text."
TOO_LONG = "Opening hours are at most %(max)s characters."
WRITTEN_OUT_TOO_LONG = ("Opening hours: written out in full they take %(length)s characters, more than %(max)s; "
                        "use fewer groups or ranges.")
FORMAT = "Opening hours: write 24h, or 1 to %(max)s ranges like 06:00-22:00 separated by commas."
NOT_A_RANGE = "Opening hours: %(part)s is not a range like 06:00-22:00."
BAD_TIME = "Opening hours: in %(part)s, times run from 00:00 to 23:59 (24:00 only as an end)."
SAME_TIME = "Opening hours: %(part)s starts and ends at the same time (write 24h for always open)."
NOT_A_DAY = "Opening hours: %(part)s is not a day like Mon or a range of days like Mon-Fri."
NEITHER = "Opening hours: %(part)s is neither days like Mon-Fri nor times like 06:00-22:00."
COMMA_BEFORE_DAYS = "Opening hours: write a semicolon, not a comma, before %(part)s (it starts a group of days)."
NO_TIMES = "Opening hours: %(part)s names days but no times (add 24h or a range like 06:00-22:00)."
EMPTY_GROUP = "Opening hours: each semicolon must stand between two groups like Mon-Fri 07:00-21:00."
NO_DAYS = "Opening hours: %(part)s needs days in front, like Mon-Fri 07:00-21:00, when there are several groups."
DAY_TWICE = "Opening hours: %(day)s is in two groups; put each day in one group only."
MESSAGES: tuple[str, ...] = (NOT_TEXT, TOO_LONG, WRITTEN_OUT_TOO_LONG, FORMAT, NOT_A_RANGE, BAD_TIME, SAME_TIME,
                             NOT_A_DAY, NEITHER, COMMA_BEFORE_DAYS, NO_TIMES, EMPTY_GROUP, NO_DAYS, DAY_TWICE)


class OpeningHoursError(ValueError):
    """Why a text is not opening hours: ``str()`` is the English sentence.

    ``message`` (one of :data:`MESSAGES`, a message id with ``%(name)s``
    placeholders) and ``values`` let a page show it in the reader's language.
    """

    def __init__(self, message: str, **values: object) -> None:
        self.message = message
        self.values = {name: str(value) for name, value in values.items()}
        super().__init__(message % self.values if self.values else message)


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """Parsed opening hours: ``week`` holds each weekday's hours, Monday first.

    A day is None (closed), () (open all day) or its :data:`Ranges`; a range
    whose end is not after its start runs past midnight into the next day and
    belongs to the day it starts. The default is always open.
    """

    week: tuple[Ranges | None, ...] = ((),) * 7

    def __post_init__(self) -> None:
        if len(self.week) != 7 or all(day is None for day in self.week):
            raise ValueError("opening hours need seven days, at least one of them open")

    @classmethod
    def daily(cls, ranges: Ranges = ()) -> OpeningHours:
        """The same hours every day (``()``: always open)."""
        return cls((tuple(ranges),) * 7)

    @property
    def always(self) -> bool:
        return all(day == () for day in self.week)

    @property
    def same_every_day(self) -> bool:
        """Whether every day has the same hours (written without days, as before weekdays existed)."""
        return len(set(self.week)) == 1

    def __str__(self) -> str:
        """The canonical text: ``24h``, ``06:00-12:00, 14:00-02:00``, or ``Mon-Fri 07:00-21:00; Sat 24h``."""
        if self.same_every_day:
            return _ranges_text(self.week[0] or ())
        days_of: dict[Ranges, list[int]] = {}
        for day, hours in enumerate(self.week):
            if hours is not None:
                days_of.setdefault(hours, []).append(day)
        groups = sorted((_day_runs(days), hours) for hours, days in days_of.items())
        return "; ".join(f"{_days_text(runs)} {_ranges_text(hours)}" for runs, hours in groups)

    def is_open_local(self, local: datetime) -> bool:
        """Whether a wall-clock time (of the station's zone; any tzinfo ignored) falls within the hours."""
        today = self.week[local.weekday()]
        if today == ():
            return True
        t = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        for start, end in today or ():
            if start <= t < end or (end <= start and t >= start):  # the latter crosses midnight: until it
                return True
        # Yesterday's ranges that cross midnight ("22:00-06:00"; "22:00-00:00" ends at midnight).
        return any(end <= start and t < end for start, end in self.week[local.weekday() - 1] or ())

    def is_open(self, when: datetime, zone: str | ZoneInfo) -> bool:
        """Whether an instant (timezone-aware) falls within the hours as kept in ``zone`` (daylight saving too)."""
        if when.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware time")
        tz = zone if isinstance(zone, ZoneInfo) else time_zone(zone)
        return self.is_open_local(when.astimezone(tz))


def parse_opening_hours(text: str) -> OpeningHours:
    """Parse opening hours (see the module docstring); :class:`OpeningHoursError` says in one sentence what is wrong."""
    if not isinstance(text, str):
        raise OpeningHoursError(NOT_TEXT)
    text = unicodedata.normalize("NFKC", text).strip()  # "０７：００－２１：００；" from a Chinese input method
    if len(text) > MAX_HOURS_CHARS:
        raise OpeningHoursError(TOO_LONG, max=MAX_HOURS_CHARS)
    parts = [part.strip() for part in text.split(";")]
    if len(parts) > 1 and not all(parts):
        raise OpeningHoursError(EMPTY_GROUP)
    groups = [_group(part) for part in parts]
    if len(groups) == 1 and groups[0][0] is None:
        return OpeningHours.daily(groups[0][1])  # as before weekdays existed: every day
    week: list[Ranges | None] = [None] * 7
    for days, hours, written in groups:
        if days is None:
            raise OpeningHoursError(NO_DAYS, part=_quote(written))
        for day in days:
            if week[day] is not None:
                raise OpeningHoursError(DAY_TWICE, day=DAYS[day])
            week[day] = hours
    parsed = OpeningHours(tuple(week))
    length = len(str(parsed))
    if length > MAX_HOURS_CHARS:
        raise OpeningHoursError(WRITTEN_OUT_TOO_LONG, length=length, max=MAX_HOURS_CHARS)
    return parsed


def is_valid_opening_hours(text: str) -> bool:
    try:
        parse_opening_hours(text)
    except ValueError:
        return False
    return True


def _group(text: str) -> tuple[frozenset[int] | None, Ranges, str]:
    """One group ``[days] 24h|ranges``: its days (None: it names none), its hours, and the text."""
    first_digit = next((i for i, c in enumerate(text) if c.isdigit()), len(text))
    written_days, written_hours = text[:first_digit].strip(), text[first_digit:].strip()
    if not written_days:
        return None, _ranges(written_hours), text
    if not written_hours and not any(_is_days(item) for item in written_days.split(",")):
        raise OpeningHoursError(NEITHER, part=_quote(text))  # "from dawn to dusk": no day, no time
    days = _days(written_days)
    if not written_hours:
        raise OpeningHoursError(NO_TIMES, part=_quote(written_days))
    return days, _ranges(written_hours), text


def _days(text: str) -> frozenset[int]:
    """``Mon-Fri``, ``Sat,Sun``, ``Fri-Mon`` (wraps past Sunday) ... as day numbers, Monday 0."""
    days: set[int] = set()
    for item in text.split(","):
        found = _DAY_SPAN.match(item.strip())
        names = [n.capitalize() for n in found.groups() if n] if found else []
        if not names or any(n not in DAYS for n in names):
            raise OpeningHoursError(NOT_A_DAY, part=_quote(item.strip()))
        first, last = DAYS.index(names[0]), DAYS.index(names[-1])
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def _ranges(text: str) -> Ranges:
    if text.lower() == ALWAYS:
        return ()
    parts = [p.strip() for p in text.split(",")]
    if not text or len(parts) > MAX_RANGES:
        raise OpeningHoursError(FORMAT, max=MAX_RANGES)
    ranges, all_day = [], False
    for part in parts:
        found = _RANGE.match(part.replace(" ", ""))
        if found is None and _starts_with_days(part):  # "Mon-Fri 07:00-21:00, Sat 09:00-12:00"
            raise OpeningHoursError(COMMA_BEFORE_DAYS, part=_quote(part))
        if found is None:
            raise OpeningHoursError(NOT_A_RANGE, part=_quote(part))
        sh, sm, eh, em = (int(g) for g in found.groups())
        if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
            raise OpeningHoursError(BAD_TIME, part=_quote(part))
        start, end = sh * 60 + sm, eh * 60 + em
        if end == DAY_MINUTES and start == 0:
            all_day = True  # 00:00-24:00 is all day, whatever else is written
        elif start == end % DAY_MINUTES:
            raise OpeningHoursError(SAME_TIME, part=_quote(part))
        ranges.append((start, end))
    return () if all_day else tuple(ranges)


def _starts_with_days(text: str) -> bool:
    first_digit = next((i for i, c in enumerate(text) if c.isdigit()), 0)
    return _is_days(text[:first_digit])


def _is_days(text: str) -> bool:
    try:
        _days(text)
    except OpeningHoursError:
        return False
    return True


def _quote(text: str) -> str:
    return repr(text[:20])


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _ranges_text(ranges: Ranges) -> str:
    return ", ".join(f"{_hhmm(start)}-{_hhmm(end)}" for start, end in ranges) if ranges else ALWAYS


def _day_runs(days: list[int]) -> tuple[tuple[int, int], ...]:
    """Days as runs of consecutive days (first, last), a run may wrap past Sunday; ordered by first day."""
    if len(days) == 7:
        return ((0, 6),)
    runs = []
    for first in sorted(days):
        if (first - 1) % 7 in days:
            continue  # inside a run that started earlier (or wraps round from Sunday)
        last = first
        while (last + 1) % 7 in days:
            last = (last + 1) % 7
        runs.append((first, last))
    return tuple(runs)


def _days_text(runs: tuple[tuple[int, int], ...]) -> str:
    return ",".join(DAYS[first] if first == last else f"{DAYS[first]}-{DAYS[last]}" for first, last in runs)


def time_zone(name: str) -> ZoneInfo:

    """The IANA zone called ``name``; ValueError if there is none."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise ValueError("a time zone name has 1 to 64 characters")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name[:64]!r}: use an IANA name like Asia/Shanghai") from err


class StationConfig(BaseModel):
    """One station's settings from the server; retained on ``ws/v1/station/{sid}/config``.

    ``opening_hours`` travels as text in the canonical form of
    :class:`OpeningHours` (validation normalises it).
    """

    schema_: Literal["station_config/1"] = Field(default="station_config/1", alias="schema")
    station_id: StationId
    version: Version = Field(description="grows with every change of mode, hours or zone; older ones are ignored")
    mode: AccessMode = Field(description="how people get in: face, qr, face_or_qr or qr_then_face")
    opening_hours: str = Field(
        max_length=MAX_HOURS_CHARS,
        description="24h, or ranges like 06:00-22:00, 22:00-02:00 every day; per weekday: Mon-Fri 07:00-21:00; Sat 24h",
    )
    time_zone: str = Field(max_length=64, description="IANA zone the opening hours are kept in, e.g. Asia/Shanghai")
    updated_at: AwareDatetime = Field(default_factory=utcnow, description="when the server's admins changed it")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        return str(parse_opening_hours(value))

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        time_zone(value)
        return value

    @property
    def hours(self) -> OpeningHours:
        return parse_opening_hours(self.opening_hours)

    def is_open(self, when: datetime | None = None) -> bool:
        return self.hours.is_open(when or datetime.now(timezone.utc), self.time_zone)

    def closed_reason(self, when: datetime | None = None) -> str | None:
        """None while open; else why an attempt is refused.

        E.g. ``closed: opening hours Mon-Fri 07:00-21:00 (now Sat 10:00 Asia/Shanghai)``; hours that are the same
        every day leave the weekday out, as they always did.
        """
        when = when or datetime.now(timezone.utc)
        if self.is_open(when):
            return None
        local = when.astimezone(time_zone(self.time_zone))
        # With weekdays, the weekday is part of "now" (hours the same every day read as they always did).
        now = f"{local:%H:%M}" if self.hours.same_every_day else f"{DAYS[local.weekday()]} {local:%H:%M}"
        return f"closed: opening hours {self.opening_hours} (now {now} {self.time_zone})"[:200]


class StationConfigAck(BaseModel):
    """A station's answer to a config; retained on ``ws/v1/station/{sid}/config/ack``.

    ``applied`` false: the station refused config ``version`` (``reason``
    says why) and keeps using ``active_version`` (None: its own file's settings).
    """

    schema_: Literal["station_config_ack/1"] = Field(default="station_config_ack/1", alias="schema")
    station_id: StationId
    version: Version = Field(description="the config this answers")
    applied: bool
    active_version: Version | None = Field(description="the config the station uses now; null: its own file's")
    mode: AccessMode = Field(description="the access mode the station uses now")
    reason: ShortText = ""
    at: AwareDatetime = Field(default_factory=utcnow)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
