"""The station config contract (models/station_config.py): the one opening-hours parser, "open at t in zone z",
and the message's validation. Pure: no broker, no database."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.i18n import load_catalog, translator
from models import topics
from models.errors import MalformedPayload
from models.messages import decode, encode
from models.station_config import (
    DAYS,
    MAX_HOURS_CHARS,
    MESSAGES,
    MODES,
    OpeningHours,
    OpeningHoursError,
    StationConfig,
    StationConfigAck,
    is_valid_opening_hours,
    parse_opening_hours,
)
from server.web.pages.station_views import MODES as PAGE_MODES
from server.web.pages.station_views import say, valid_opening_hours

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
    ("14:00-02:00, 06:00-12:00", "14:00-02:00, 06:00-12:00"),  # as written: stored texts never change
    # Weekdays: groups separated by ";", days Monday first in one spelling, a group per distinct hours.
    ("Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00", "Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00"),
    ("sat-sun 09:00 - 17:00;MON-FRI 07:00-21:00", "Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00"),
    ("Mon-Sat 24H", "Mon-Sat 24h"),
    ("Mon, Wed, Fri 08:00-12:00", "Mon,Wed,Fri 08:00-12:00"),
    ("Fri-Mon 10:00-12:00, 20:00-02:00", "Fri-Mon 10:00-12:00, 20:00-02:00"),  # wraps past Sunday
    ("Sun,Sat,Mon,Wed 08:00-09:00", "Wed,Sat-Mon 08:00-09:00"),
    ("Fri-Mon 08:00-09:00; Tue-Thu 24h", "Tue-Thu 24h; Fri-Mon 08:00-09:00"),  # groups by the day they start
    ("Mon 08:00-12:00; Wed 08:00-12:00; Tue 24h", "Mon,Wed 08:00-12:00; Tue 24h"),  # same hours: one group
    ("Mon 00:00-24:00; Tue 22:00-02:00", "Mon 24h; Tue 22:00-02:00"),
    ("Fri 22:00-02:00", "Fri 22:00-02:00"),
    ("Mon-Sun 06:00-22:00", "06:00-22:00"),  # every day alike: the old form, which older stations read too
    ("Mon-Fri 24h; Sat-Sun 00:00-24:00", "24h"),
    ("Wed-Tue 06:00-22:00", "06:00-22:00"),
    ("Mon-Fri ０７：００－２１：００；Sat 24h", "Mon-Fri 07:00-21:00; Sat 24h"),  # typed with a Chinese input method
    ("06:00-12:00，14:00-02:00", "06:00-12:00, 14:00-02:00"),
])
def test_opening_hours_are_parsed_to_one_canonical_text(text: str, canonical: str) -> None:
    assert str(parse_opening_hours(text)) == canonical
    assert parse_opening_hours(canonical) == parse_opening_hours(text)
    assert valid_opening_hours(text)  # the admin page accepts exactly what the stations understand


@pytest.mark.parametrize(("text", "says"), [
    ("from dawn to dusk", "'from dawn to dusk' is neither days like Mon-Fri nor times"),
    ("", "write 24h"),
    ("06:00-06:00", "same time"),
    ("25:00-06:00", "00:00 to 23:59"),
    ("06:00-24:30", "00:00 to 23:59"),  # the page's old pattern let this through
    ("06:60-07:00", "00:00 to 23:59"),
    ("6:00-22:00", "not a range"),
    ("06:00-22:00,", "not a range"),
    (",".join(["01:00-02:00"] * 8), "ranges"),
    ("06:00-22:00," + " " * 90 + "23:00-23:30", "at most"),
    ("00:00-24:00, nonsense", "'nonsense' is not a range"),
    ("Mon-Fri 07:00-21:00; Fri 09:00-12:00", "Fri is in two groups"),
    ("Fri-Mon 08:00-12:00; Sun 24h", "Sun is in two groups"),
    ("06:00-22:00; Sat 09:00-12:00", "'06:00-22:00' needs days in front"),
    ("Mon-Fri", "'Mon-Fri' names days but no times"),
    ("Mon-Fri 07:00-21:00;", "each semicolon must stand between two groups"),
    ("Mon 24h;; Tue 24h", "each semicolon"),
    (";", "each semicolon"),
    ("Mo-Fr 07:00-21:00", "'Mo-Fr' is not a day"),
    ("Mon-Fri, Funday 07:00-21:00", "'Funday' is not a day"),
    ("Mon-Fri 07:00-21:00, Abc 09:00-12:00", "'Abc 09:00-12:00' is not a range"),
    ("foo", "'foo' is neither days"),
    ("Mon-Fri 07:00-21:00, Sat 09:00-12:00", "semicolon, not a comma, before 'Sat 09:00-12:00'"),
    ("Mon 7:00-21:00", "'7:00-21:00' is not a range"),
    ("Mon 07:00-21:00, 24h", "'24h' is not a range"),
    ("Sat 22:00-22:00", "same time"),
    ("Sun 23:00-24:30", "00:00 to 23:59"),
    ("Mon " + ",".join(["01:00-02:00"] * 8), "ranges"),
    # 95 characters as typed, 105 in the canonical spelling (", ", "; ", a space after the days): refused, not cut.
    ("Mon01:00-02:00,03:00-04:00;Tue01:00-02:00,03:00-05:00;Wed01:00-02:00,03:00-06:00;Thu01:00-02:00",
     "take 105 characters, more than 100"),
])
def test_bad_opening_hours_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(OpeningHoursError, match=re.escape(says)) as refused:
        parse_opening_hours(text)
    assert not is_valid_opening_hours(text) and not valid_opening_hours(text)
    # One sentence, a message id the admin page has in Chinese: that is how the page shows it.
    err = refused.value
    assert err.message in MESSAGES and str(err) == (err.message % err.values if err.values else err.message)
    assert str(err).endswith(".") and str(err).count(". ") == 0
    chinese = say(translator("zh_CN"), (err.message, err.values))
    assert chinese != str(err) and re.search("[\u4e00-\u9fff]", chinese)
    assert all(value in chinese for value in err.values.values())  # the day, the part: still named


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
    for day in range(7):  # the same on every day of the week
        local = datetime(2026, 5, 4 + day, minute // 60, minute % 60)
        assert hours.always or hours.is_open_local(local) == (minute in expected)
    assert parse_opening_hours(str(hours)) == hours  # the canonical text reads back the same
    assert hours.always or str(hours) == text  # and is what it always was: stored values do not change


def test_every_reason_the_parser_gives_has_a_chinese_translation_with_its_placeholders() -> None:
    catalog = load_catalog("zh_CN")
    for message in MESSAGES:
        found = catalog.get(message)
        assert found is not None and found.string, f"no zh_CN translation in locale/zh_CN/LC_MESSAGES: {message!r}"
        assert sorted(re.findall(r"%\((\w+)\)s", found.string)) == sorted(re.findall(r"%\((\w+)\)s", message))


# -- weekdays --------------------------------------------------------------------------------------------------------
MONDAY = datetime(2026, 5, 4)  # a Monday; the week of 4-10 May 2026 (naive: a wall-clock time of the station)


def week_open(hours: OpeningHours, minutes: range = range(0, 7 * 24 * 60, 30)) -> list[str]:
    """The half hours of a Monday-to-Sunday week the hours are open, as "Sat 10:00"."""
    return [f"{DAYS[m // 1440]} {m % 1440 // 60:02d}:{m % 60:02d}" for m in minutes
            if hours.is_open_local(MONDAY + timedelta(minutes=m))]


def test_weekday_and_weekend_hours_in_shanghai() -> None:
    hours = parse_opening_hours("Mon-Fri 07:00-21:00; Sat-Sun 09:00-17:00")
    is_open = week_open(hours)
    assert len(is_open) == 5 * 28 + 2 * 16  # 14 hours on working days, 8 at the weekend
    assert {"Mon 07:00", "Fri 20:30", "Sat 09:00", "Sun 16:30"} <= set(is_open)
    assert not {"Mon 06:30", "Fri 21:00", "Sat 08:30", "Sat 17:00", "Sun 20:00"} & set(is_open)
    sat_10 = at("2026-05-09T02:00:00")  # Saturday 10:00 in Shanghai
    assert hours.is_open(sat_10, "Asia/Shanghai")
    assert not hours.is_open(sat_10 - timedelta(hours=2), "Asia/Shanghai")  # Saturday 08:00
    # The weekday is the station's: Sunday 23:30 in UTC is Monday 07:30 in Shanghai (open), Sunday 16:30 in London.
    sunday_late_utc = at("2026-05-10T23:30:00")
    assert hours.is_open(sunday_late_utc, "Asia/Shanghai") and not hours.is_open(sunday_late_utc, "Europe/London")


def test_a_day_in_no_group_is_closed_all_day() -> None:
    hours = parse_opening_hours("Mon-Sat 24h")
    is_open = week_open(hours, range(0, 7 * 24 * 60, 1))  # every minute of the week
    assert len(is_open) == 6 * 1440 and not any(m.startswith("Sun") for m in is_open)
    assert hours.is_open_local(datetime(2026, 5, 9, 23, 59, 59, 999999))  # Saturday's last microsecond
    assert not hours.is_open_local(datetime(2026, 5, 10, 0, 0))  # Sunday
    assert hours.is_open_local(datetime(2026, 5, 11, 0, 0))  # Monday again
    assert week_open(parse_opening_hours("Mon,Wed,Fri 08:00-12:00"))[::8] == ["Mon 08:00", "Wed 08:00", "Fri 08:00"]


def test_a_range_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = parse_opening_hours("Fri 22:00-02:00")
    assert week_open(friday_night) == ["Fri 22:00", "Fri 22:30", "Fri 23:00", "Fri 23:30",
                                       "Sat 00:00", "Sat 00:30", "Sat 01:00", "Sat 01:30"]
    # Sunday night runs into Monday morning: the week wraps round.
    sunday_night = parse_opening_hours("Sun 22:00-02:00; Mon 08:00-09:00")
    assert week_open(sunday_night) == ["Mon 00:00", "Mon 00:30", "Mon 01:00", "Mon 01:30", "Mon 08:00", "Mon 08:30",
                                       "Sun 22:00", "Sun 22:30", "Sun 23:00", "Sun 23:30"]
    assert not sunday_night.is_open_local(datetime(2026, 5, 10, 1, 0))  # Sunday 01:00: Saturday has no hours
    assert sunday_night.is_open_local(datetime(2026, 5, 11, 1, 59, 59))  # Monday 01:59:59
    assert not sunday_night.is_open_local(datetime(2026, 5, 11, 2, 0))
    # A day open all day ends at midnight; ending at 00:00 or 24:00 does not reach the next day.
    assert not parse_opening_hours("Sun 24h").is_open_local(datetime(2026, 5, 11, 0, 0))
    assert week_open(parse_opening_hours("Sat 23:00-00:00; Sun 23:00-24:00")) == [
        "Sat 23:00", "Sat 23:30", "Sun 23:00", "Sun 23:30"]


def test_weekdays_through_daylight_saving_in_berlin() -> None:
    # Spring: Sunday 29 March 2026, 02:00 CET becomes 03:00 CEST. Saturday night's hours end at 03:00 local.
    hours = parse_opening_hours("Sat 23:00-03:00")
    assert not hours.is_open(at("2026-03-28T21:59:59"), "Europe/Berlin")  # Saturday 22:59:59 CET
    assert hours.is_open(at("2026-03-28T22:00:00"), "Europe/Berlin")  # Saturday 23:00 CET
    assert hours.is_open(at("2026-03-29T00:59:59"), "Europe/Berlin")  # Sunday 01:59:59 CET
    assert hours.is_open(at("2026-03-29T01:00:00") - timedelta(microseconds=1), "Europe/Berlin")
    assert not hours.is_open(at("2026-03-29T01:00:00"), "Europe/Berlin")  # 03:00 CEST: the night was an hour short
    # Autumn: Sunday 25 October 2026, 03:00 CEST becomes 02:00 CET; 02:00-02:30 happens twice, and is open twice.
    sunday = parse_opening_hours("Sun 02:00-02:30")
    first, second = at("2026-10-25T00:15:00"), at("2026-10-25T01:15:00")  # 02:15 CEST, then 02:15 CET
    assert sunday.is_open(first, "Europe/Berlin") and sunday.is_open(second, "Europe/Berlin")
    assert not sunday.is_open(at("2026-10-25T00:45:00"), "Europe/Berlin")  # 02:45 CEST
    assert not sunday.is_open(first, "Asia/Shanghai")  # 08:15 there
    # The weekday follows the local date across the change: Monday 00:30 CET is Sunday 23:30 UTC.
    assert parse_opening_hours("Mon 00:00-01:00").is_open(at("2026-10-25T23:30:00"), "Europe/Berlin")


def test_a_config_with_weekdays_says_which_day_it_is_when_closed() -> None:
    c = config(opening_hours="mon-fri 07:00-21:00")
    assert c.opening_hours == "Mon-Fri 07:00-21:00" and decode(encode(c), StationConfig) == c
    assert c.closed_reason(at("2026-05-09T02:00:00")) == (
        "closed: opening hours Mon-Fri 07:00-21:00 (now Sat 10:00 Asia/Shanghai)")
    assert c.closed_reason(at("2026-05-08T02:00:00")) is None and c.is_open(at("2026-05-08T02:00:00"))  # Fri 10:00
    assert c.closed_reason(at("2026-05-08T13:00:00")) == (  # Friday 21:00
        "closed: opening hours Mon-Fri 07:00-21:00 (now Fri 21:00 Asia/Shanghai)")
    longest = config(opening_hours="Mon 01:00-02:00, 03:00-04:00; Tue 01:00-02:00; Wed 01:00-03:00; "
                                   "Thu 01:00-04:00; Fri-Sat 22:00-23:00", time_zone="America/Argentina/Buenos_Aires")
    reason = longest.closed_reason(at("2026-05-09T12:00:00"))
    assert reason is not None and len(reason) <= 200
    assert reason.endswith("(now Sat 09:00 America/Argentina/Buenos_Aires)")
    with pytest.raises(MalformedPayload, match="Fri is in two groups"):
        decode(encode(c).replace(b"Mon-Fri 07:00-21:00", b"Mon-Fri 07:00-21:00; Fri 22:00-23:00"), StationConfig)


def test_hours_that_are_always_or_never_open() -> None:
    assert OpeningHours.daily() == OpeningHours() == parse_opening_hours("Mon-Sun 24h")
    assert OpeningHours.daily(((360, 1320),)) == parse_opening_hours("06:00-22:00")
    assert not parse_opening_hours("Mon-Sat 24h").always and parse_opening_hours("Mon-Sat 24h").same_every_day is False
    with pytest.raises(ValueError, match="at least one of them open"):
        OpeningHours((None,) * 7)


a_range = st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(lambda r: r[0] != r[1] % 1440 and r != (0, 1440))
one_day = st.one_of(st.none(), st.just(()), st.lists(a_range, min_size=1, max_size=2).map(tuple))  # closed, 24h, ranges


def written(week: list, order: list[int], spaces: str) -> str:
    """The week written as a person might: one group per distinct hours, days listed one by one, groups shuffled."""
    groups: dict = {}
    for day, hours in enumerate(week):
        if hours is not None:
            groups.setdefault(hours, []).append(DAYS[day].lower() if day % 2 else DAYS[day].upper())
    texts = [",".join(days) + " " + (", ".join(f"{s // 60:02d}:{s % 60:02d}{spaces}-{spaces}{e // 60:02d}:{e % 60:02d}"
                                               for s, e in hours) or "24h") for hours, days in groups.items()]
    return ";".join(texts[i] for i in order if i < len(texts))


@given(st.lists(st.sampled_from([0, 1, 2]), min_size=7, max_size=7), st.lists(one_day, min_size=3, max_size=3),
       st.permutations(range(3)), st.sampled_from(["", " "]))
def test_a_written_week_is_open_exactly_when_its_days_say_and_reads_back(
    pick: list[int], pool: list, order: list[int], spaces: str
) -> None:
    week = [pool[i] for i in pick]
    assume(any(day is not None for day in week))
    text = written(week, order, spaces)
    try:
        hours = parse_opening_hours(text)
    except OpeningHoursError as err:  # only ever because it is too long, typed or written out
        assert err.message in {"Opening hours are at most %(max)s characters.", MESSAGES[2]}, str(err)
        assert len(text) > MAX_HOURS_CHARS or int(err.values["length"]) > MAX_HOURS_CHARS
        return
    canonical = str(hours)
    assert len(canonical) <= MAX_HOURS_CHARS and parse_opening_hours(canonical) == hours
    assert str(parse_opening_hours(canonical)) == canonical
    for minute in range(0, 7 * 1440, 7):  # a minute in every few of the week, against the rule said in words
        day, t = divmod(minute, 1440)
        today, yesterday = week[day], week[day - 1]
        expected = today == () or any(s <= t < e or (e <= s and t >= s) for s, e in today or ()) or any(
            e <= s and t < e for s, e in yesterday or ())
        assert hours.is_open_local(MONDAY + timedelta(minutes=minute)) == expected, (text, DAYS[day], t)


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
