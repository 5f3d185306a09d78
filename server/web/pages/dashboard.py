"""The usage dashboard (/dashboard): visits, unique workers, the night share, and the charts; admins and
auditors.

``GET /dashboard?from=YYYY-MM-DD&to=YYYY-MM-DD&station=ID``; by default the
last 30 days up to today. Dates are whole days in the chosen station's time
zone (Asia/Shanghai for all stations), "to" included; the hour-of-day chart
puts each visit in its own station's local time. Every chart has a table with
its numbers under it. The figures come from server/usage.py.
"""

from __future__ import annotations

import time as clock
from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from core.i18n import DEFAULT_TIME_ZONE, Translator, translator, zone
from server.tables import Role, Station
from server.usage import NIGHT_HOURS, OTHERS, UNCATEGORISED, UsageSummary, usage_summary
from server.web import charts
from server.web.auth import PageUser, require_role
from server.web.templating import N_, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[PageUser, Depends(require_role(Role.ADMIN, Role.AUDITOR))]
DEFAULT_DAYS = 30
MAX_DAYS = 366
BUSIEST_SHOWN = 10
CATEGORY_LABELS = {
    "courier": N_("Courier"),
    "food_delivery": N_("Food delivery"),
    "sanitation": N_("Sanitation"),
    "designated_driver": N_("Designated driver"),
    "other": N_("Other"),
    UNCATEGORISED: N_("No category"),
}


def date_range(text_from: str, text_to: str, today: date) -> tuple[date, date, list[str]]:
    """The first and last day asked for (defaults: the 30 days up to today) and the problems, in English."""
    problems: list[str] = []

    def parse(text: str, what: str) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            problems.append(what)
            return None

    last = parse(text_to, N_("The end date is not a date (use YYYY-MM-DD).")) or today
    first = parse(text_from, N_("The start date is not a date (use YYYY-MM-DD).")) or last - timedelta(
        days=DEFAULT_DAYS - 1)
    if first > last:
        problems.append(N_("The start date is after the end date."))
        first, last = last - timedelta(days=DEFAULT_DAYS - 1), last
    elif (last - first).days + 1 > MAX_DAYS:
        problems.append(N_("Choose at most 366 days."))
        first = last - timedelta(days=MAX_DAYS - 1)
    return first, last, problems


@router.get("/dashboard")
def dashboard(
    request: Request,
    user: Reader,
    date_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    station: Annotated[str, Query(max_length=63)] = "",
) -> Response:
    tr = translator(user.language)
    with request.app.state.ctx.sessions() as session:
        stations = session.execute(
            select(Station.station_id, Station.name, Station.time_zone).order_by(Station.name)).all()
        chosen = next((s for s in stations if s.station_id == station.strip()), None)
        problems: list[str] = [] if chosen or not station.strip() else [N_("There is no station with this ID.")]
        tz = chosen.time_zone if chosen else DEFAULT_TIME_ZONE
        first, last, bad_dates = date_range(date_from.strip(), date_to.strip(), datetime.now(zone(tz)).date())
        problems += bad_dates
        since = datetime.combine(first, time(0), zone(tz))
        until = datetime.combine(last + timedelta(days=1), time(0), zone(tz))
        started = clock.perf_counter()
        summary = usage_summary(session, since, until, station_id=chosen.station_id if chosen else None, tz=tz)
        elapsed_ms = (clock.perf_counter() - started) * 1000
    return render(
        request, "dashboard.html",
        s=summary, stations=stations, chosen=chosen, zone_name=zone(tz).key,
        form={"from": first.isoformat(), "to": last.isoformat(), "station": chosen.station_id if chosen else ""},
        problems=[tr.gettext(p) for p in problems], elapsed_ms=elapsed_ms,
        **views(summary, tr),
    )


def views(s: UsageSummary, tr: Translator) -> dict[str, object]:
    """The charts (SVG) and the rows of the tables under them."""
    names = {u.station_id: u.name for u in s.stations}
    keys = list(s.visits_by_day)
    labels = [names.get(k, k) if k != OTHERS else tr.gettext("Other stations") for k in keys]
    palette = charts.colours(len(keys))
    series = [charts.Series(label, s.visits_by_day[k], charts.GREY if k == OTHERS else colour)
              for k, label, colour in zip(keys, labels, palette)]
    short_days = [d.strftime("%m-%d") for d in s.days]
    per_day = charts.stacked_bars(
        "chart-days", tr.gettext("Visits per day"),
        tr.gettext(
            "Visits on each day from %(first)s to %(last)s, stacked by station; the table below has the numbers.",
            first=s.days[0].isoformat(), last=s.days[-1].isoformat(),
        ),
        short_days, series,
    )
    night = tr.gettext("Night (22:00–06:00)")
    per_hour = charts.hour_bars(
        "chart-hours", tr.gettext("Visits by hour of day"),
        tr.gettext("Visits in each hour of the day at the station's local time; night hours are shaded."),
        s.visits_by_hour, NIGHT_HOURS, night, tr.gettext("Daytime (06:00–22:00)"),
    )
    categories = sorted(((tr.gettext(CATEGORY_LABELS[c]), n, c) for c, n in s.by_category.items()),
                        key=lambda item: (-item[1], item[0]))
    per_category = charts.horizontal_bars(
        "chart-categories", tr.gettext("Visits by worker category"),
        tr.gettext("Visits by the category of the worker who came in."), [(label, n) for label, n, _c in categories],
        charts.PALETTE[2],
    )
    busiest = [u for u in s.stations if u.visits][:BUSIEST_SHOWN]
    per_station = charts.horizontal_bars(
        "chart-stations", tr.gettext("Busiest stations"),
        tr.gettext("The stations with the most visits, most first."),
        [(f"{u.name} ({u.station_id})", u.visits) for u in busiest],
    )
    day_rows = [(d.isoformat(), [s.visits_by_day[k][i] for k in keys], total)
                for i, (d, total) in enumerate(zip(s.days, s.day_totals))]
    hour_rows = [(f"{h:02d}:00–{(h + 1) % 24:02d}:00", n, h in NIGHT_HOURS) for h, n in enumerate(s.visits_by_hour)]
    return {
        "chart_days": per_day, "chart_hours": per_hour, "chart_categories": per_category,
        "chart_stations": per_station, "series_labels": labels, "day_rows": day_rows, "hour_rows": hour_rows,
        "category_rows": [(label, n, n / s.visits if s.visits else 0.0, code) for label, n, code in categories],
    }
