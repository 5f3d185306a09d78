"""The station config contract (models/station_config.py): the one opening-hours parser, "open at t in zone z",
and the message's validation. Pure: no broker, no database."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import topics
from models.errors import MalformedPayload
from models.messages import decode, encode
from models.station_config import (
    MODES,
    OpeningHours,
    StationConfig,
    StationConfigAck,
    is_valid_opening_hours,
    parse_opening_hours,
)
from server.web.pages.station_views import MODES as PAGE_MODES
from server.web.pages.station_views import valid_opening_hours

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("text", "canonical"), [
    ("24h", "24h"),
    (" 24H ", "24h"),
    ("00:00-24:00", "24h"),
    ("06:00-22:00", "06:00-22:00"),
    ("06:00 - 12:00,14:00-02:00", "06:00-12:00, 14:00-02:00"),
    ("22:00-00:00", "22:00-00:00"),
    ("08:00-24:00", "08:00-24:00"),
])
def test_opening_hours_are_parsed_to_one_canonical_text(text: str, canonical: str) -> None:
    assert str(parse_opening_hours(text)) == canonical
    assert valid_opening_hours(text)  # the admin page accepts exactly what the stations understand


@pytest.mark.parametrize(("text", "says"), [
    ("from dawn to dusk", "not a range"),
    ("", "write 24h"),
    ("06:00-06:00", "same time"),
    ("25:00-06:00", "00:00 to 23:59"),
    ("06:00-24:30", "00:00 to 23:59"),  # the page's old pattern let this through
    ("06:60-07:00", "00:00 to 23:59"),
    ("6:00-22:00", "not a range"),
    ("06:00-22:00,", "not a range"),
    (",".join(["01:00-02:00"] * 8), "ranges"),
    ("06:00-22:00," + " " * 90 + "23:00-23:30", "at most"),
])
def test_bad_opening_hours_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_opening_hours(text)
    assert not is_valid_opening_hours(text) and not valid_opening_hours(text)


def test_a_day_range_in_shanghai() -> None:
    hours = parse_opening_hours("06:00-22:00")  # Asia/Shanghai is UTC+8 all year
    assert not hours.is_open(at("2026-06-01T21:59:59"), "Asia/Shanghai")  # 05:59:59 local
    assert hours.is_open(at("2026-06-01T22:00:00"), "Asia/Shanghai")  # 06:00 local
    assert hours.is_open(at("2026-06-01T13:59:59"), "Asia/Shanghai")  # 21:59:59 local
    assert not hours.is_open(at("2026-06-01T14:00:00"), "Asia/Shanghai")  # 22:00 local: closed from here
    # The same instant, judged in another zone, is another local time.
    assert hours.is_open(at("2026-06-01T14:00:00"), "Asia/Urumqi")  # UTC+6: 20:00 there


def test_an_overnight_range_is_open_across_midnight() -> None:
    hours = parse_opening_hours("22:00-06:00")
    local = {h: hours.is_open(at(f"2026-01-10T{(h - 8) % 24:02d}:30:00"), "Asia/Shanghai") for h in range(24)}
    assert [h for h, is_open in local.items() if is_open] == [0, 1, 2, 3, 4, 5, 22, 23]
    assert hours.is_open(at("2026-01-10T22:00:00") - timedelta(microseconds=1), "Asia/Shanghai")  # 05:59:59.999999
    assert not hours.is_open(at("2026-01-10T22:00:00"), "Asia/Shanghai")  # 06:00


def test_shanghai_has_no_daylight_saving_while_a_european_zone_shifts() -> None:
    hours = parse_opening_hours("06:00-22:00")
    before, after = at("2026-03-28T20:30:00"), at("2026-03-29T20:30:00")  # Europe's clocks go forward between
    # Berlin: 21:30 CET (open), then 22:30 CEST (closed) at the same UTC time of day.
    assert hours.is_open(before, "Europe/Berlin") and not hours.is_open(after, "Europe/Berlin")
    # Shanghai: 04:30 both days (closed both times): the UTC offset never moves.
    assert not hours.is_open(before, "Asia/Shanghai") and not hours.is_open(after, "Asia/Shanghai")
    for day in range(0, 365, 7):  # and the same UTC time is the same local time all year round
        t = at("2026-01-01T00:30:00") + timedelta(days=day)
        assert hours.is_open(t, "Asia/Shanghai")  # 08:30 local


def test_always_open_and_naive_times() -> None:
    assert parse_opening_hours("24h").is_open(at("2026-01-01T03:00:00"), "Asia/Shanghai")
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_opening_hours("24h").is_open(datetime(2026, 1, 1), "Asia/Shanghai")


ranges = st.lists(
    st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(lambda r: r[0] != r[1] % 1440),
    min_size=1, max_size=7,
)


@given(ranges, st.integers(0, 1439))
def test_open_means_inside_one_range_counted_minute_by_minute(spans: list[tuple[int, int]], minute: int) -> None:
    text = ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in spans)
    hours = parse_opening_hours(text)
    expected = set()
    for start, end in spans:
        m = start
        while m != end % 1440:  # walk the range a minute at a time, over midnight if it crosses it
            expected.add(m)
            m = (m + 1) % 1440
    local = datetime(2026, 5, 4, minute // 60, minute % 60)
    assert hours.always or hours.is_open_local(local) == (minute in expected)
    assert parse_opening_hours(str(hours)) == hours  # the canonical text reads back the same


def config(**kw: object) -> StationConfig:
    values: dict[str, object] = {"station_id": "st-1", "version": 7, "mode": "qr", "opening_hours": "06:00-22:00",
                                 "time_zone": "Asia/Shanghai"}
    values.update(kw)
    return StationConfig(**values)  # type: ignore[arg-type]


def test_a_config_round_trips_and_says_why_it_is_closed() -> None:
    c = config(opening_hours="06:00 - 22:00")
    back = decode(encode(c), StationConfig)
    assert back == c and back.opening_hours == "06:00-22:00"
    assert encode(c).startswith(b'{"schema":"station_config/1"')
    assert c.closed_reason(at("2026-06-01T03:00:00")) is None  # 11:00 local
    reason = c.closed_reason(at("2026-06-01T15:10:00"))  # 23:10 local
    assert reason == "closed: opening hours 06:00-22:00 (now 23:10 Asia/Shanghai)"
    assert topics.station_config("st-1") == "ws/v1/station/st-1/config"
    assert topics.station_of(topics.station_config_ack("st-1")) == "st-1"
    ack = StationConfigAck(station_id="st-1", version=7, applied=False, active_version=None, mode="face",
                           reason="needs keys")
    assert decode(encode(ack), StationConfigAck) == ack


@pytest.mark.parametrize(("change", "where"), [
    ({"mode": "open_sesame"}, "mode"),
    ({"mode": "QR"}, "mode"),
    ({"opening_hours": "whenever"}, "opening_hours"),
    ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
    ({"time_zone": "../../etc/passwd"}, "time_zone"),
    ({"time_zone": "/etc/localtime"}, "time_zone"),
    ({"version": -1}, "version"),
    ({"station_id": "Other/Station"}, "station_id"),
    ({"extra": "field"}, "extra"),
    ({"schema": "station_config/2"}, "schema"),
    ({"updated_at": "2026-01-01T00:00:00"}, "updated_at"),  # no offset: refused
])
def test_a_bad_config_payload_is_refused_with_where(change: dict[str, object], where: str) -> None:
    data = {**config().model_dump(mode="json", by_alias=True), **change}
    with pytest.raises(MalformedPayload, match=where):
        decode(json.dumps(data).encode(), StationConfig)


def test_the_pages_modes_are_the_contracts() -> None:
    assert tuple(PAGE_MODES) == MODES
    assert OpeningHours().always and str(OpeningHours()) == "24h"
