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
stations use (:func:`parse_opening_hours`): ``24h``, or comma-separated
``HH:MM-HH:MM`` ranges in the station's local time; a range whose end is
earlier than its start crosses midnight (``22:00-06:00``), ``24:00`` is the
end of the day. A station judges them in the config's ``time_zone`` (IANA
name), whatever zone its own clock is set to.
"""

from __future__ import annotations

import re
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
MAX_HOURS_CHARS = 100  # the server's stations.opening_hours column
MAX_RANGES = 7  # so that the canonical text ("HH:MM-HH:MM, " each) stays within MAX_HOURS_CHARS
DAY_MINUTES = 24 * 60
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """Parsed opening hours: ``ranges`` of (start, end) minutes after local midnight; empty means always open."""

    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def always(self) -> bool:
        return not self.ranges

    def __str__(self) -> str:
        """The canonical text: ``24h`` or ``06:00-12:00, 14:00-02:00``."""
        if self.always:
            return ALWAYS
        return ", ".join(f"{_hhmm(start)}-{_hhmm(end)}" for start, end in self.ranges)

    def is_open_local(self, local: datetime) -> bool:
        """Whether a wall-clock time (of the station's zone; any tzinfo ignored) falls within the hours."""
        if self.always:
            return True
        t = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        for start, end in self.ranges:
            if start < end:
                if start <= t < end:
                    return True
            elif t >= start or t < end:  # crosses midnight ("22:00-06:00"; "22:00-00:00" ends at midnight)
                return True
        return False

    def is_open(self, when: datetime, zone: str | ZoneInfo) -> bool:
        """Whether an instant (timezone-aware) falls within the hours as kept in ``zone``."""
        if when.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware time")
        tz = zone if isinstance(zone, ZoneInfo) else time_zone(zone)
        return self.is_open_local(when.astimezone(tz))


def parse_opening_hours(text: str) -> OpeningHours:
    """Parse ``24h`` or ``HH:MM-HH:MM[, ...]``; ValueError with a sentence saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("opening hours must be text")
    text = text.strip()
    if len(text) > MAX_HOURS_CHARS:
        raise ValueError(f"opening hours are at most {MAX_HOURS_CHARS} characters")
    if text.lower() == ALWAYS:
        return OpeningHours()
    parts = [p.strip() for p in text.split(",")]
    if not text or len(parts) > MAX_RANGES:
        raise ValueError(f"write {ALWAYS}, or 1 to {MAX_RANGES} ranges like 06:00-22:00 separated by commas")
    ranges = []
    for part in parts:
        found = _RANGE.match(part.replace(" ", ""))
        if found is None:
            raise ValueError(f"{part[:20]!r} is not a range like 06:00-22:00")
        sh, sm, eh, em = (int(g) for g in found.groups())
        if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em != 0):
            raise ValueError(f"{part!r}: times run from 00:00 to 23:59 (24:00 only as an end)")
        start, end = sh * 60 + sm, eh * 60 + em
        if end == DAY_MINUTES and start == 0:
            return OpeningHours()  # 00:00-24:00 is always open
        if start == end % DAY_MINUTES:
            raise ValueError(f"{part!r} starts and ends at the same time (write {ALWAYS} for always open)")
        ranges.append((start, end))
    return OpeningHours(tuple(ranges))


def is_valid_opening_hours(text: str) -> bool:
    try:
        parse_opening_hours(text)
    except ValueError:
        return False
    return True


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; ValueError if there is none."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise ValueError("a time zone name has 1 to 64 characters")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name[:64]!r}: use an IANA name like Asia/Shanghai") from err


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class StationConfig(BaseModel):
    """One station's settings from the server; retained on ``ws/v1/station/{sid}/config``.

    ``opening_hours`` travels as text in the canonical form of
    :class:`OpeningHours` (validation normalises it).
    """

    schema_: Literal["station_config/1"] = Field(default="station_config/1", alias="schema")
    station_id: StationId
    version: Version = Field(description="grows with every change of mode, hours or zone; older ones are ignored")
    mode: AccessMode = Field(description="how people get in: face, qr, face_or_qr or qr_then_face")
    opening_hours: str = Field(max_length=MAX_HOURS_CHARS, description="24h, or ranges like 06:00-22:00, 22:00-02:00")
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
        """None while open; else the reason an attempt is refused, e.g. ``closed: opening hours 06:00-22:00 ...``."""
        when = when or datetime.now(timezone.utc)
        if self.is_open(when):
            return None
        local = when.astimezone(time_zone(self.time_zone))
        return f"closed: opening hours {self.opening_hours} (now {local:%H:%M} {self.time_zone})"[:200]


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
