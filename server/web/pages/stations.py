"""The stations pages: the list (/stations) and one station (/stations/{id}); auditors read, admins change.

Admins register a station (POST /stations) and get its provisioning bundle
(broker credentials and edge config, see station_views.py) as a one-time
download; they can also give a station new credentials (POST
/stations/{id}/provision: the old password stops working once the broker has
reloaded its password file) and edit its name, place, time zone, opening
hours and access mode (POST /stations/{id}). Every change is audited. A new
mode, opening hours or time zone is sent to the station at once (retained, so
an offline station gets it when it reconnects; server/station_config.py), and
the station page shows whether the station applied it. Times are shown in the
station's own time zone.

Admins also remove a station (GET/POST /stations/{id}/remove, typing its ID to
confirm, like deleting a worker): its row goes (its entries keep the ID),
workers limited to it lose it from their station lists, its retained config is
cleared, and its broker login is deleted from the password file when the
server manages one (the page says so, or that it must be removed by hand).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from core.i18n import DEFAULT_TIME_ZONE, is_time_zone, translator
from models.station_config import OpeningHoursError, parse_opening_hours
from models.topics import check_station_id
from server import audit
from server.api.routes.stations import LOGIN_OUTCOMES, finish_removal
from server.errors import Conflict, NotFound
from server.gallery import latest_version
from server.provision import ProvisionError
from server.station_config import FIELDS as CONFIG_FIELDS
from server.station_config import ConfigState, mark_changed
from server.stations import list_stations, register_station, remove_station
from server.tables import Entry, Role, Station, Worker
from server.web.auth import PageUser, require_role
from server.web.pages.station_views import (
    ALARMS,
    BUNDLES,
    CAMERA_STATES,
    DECISIONS,
    DOOR_STATES,
    KINDS,
    MODES,
    Problem,
    make_bundle,
    removal_facts,
    say,
    station_views,
)
from server.web.templating import N_, render

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
Reader = Annotated[PageUser, Depends(require_role(Role.ADMIN, Role.AUDITOR))]
Admin = Annotated[PageUser, Depends(require_role(Role.ADMIN))]
RECENT_EVENTS = 50
EDITABLE = ("name", "place", "time_zone", "opening_hours", "mode")
Text = Annotated[str, Form(max_length=200)]
NO_STATION = N_("There is no station with this ID.")


def _check(values: dict[str, str]) -> list[Problem]:
    """The problems with a station's settings, in English (message ids); valid opening hours are normalised."""
    problems: list[Problem] = []
    if not values["name"] or len(values["name"]) > 100:
        problems.append(N_("Give the station a name (at most 100 characters)."))
    if not is_time_zone(values["time_zone"]):
        problems.append(N_("Unknown time zone: use a name like Asia/Shanghai or Asia/Urumqi."))
    try:  # stored as the stations read it back, so a mere respelling is no change
        values["opening_hours"] = str(parse_opening_hours(values["opening_hours"]))
    except OpeningHoursError as err:  # one sentence saying what is wrong (which day, which range)
        problems.append((err.message, err.values))
    if values["mode"] not in MODES:
        problems.append(N_("Unknown access mode."))
    return problems


def _list_page(request: Request, user: PageUser, *, code: int = 200, problems: list[Problem] | None = None,
               new: dict[str, str] | None = None, removed: str = "", login: str = "") -> Response:
    tr = translator(user.language)
    with request.app.state.ctx.sessions() as session:
        views = station_views(session, list(list_stations(session=session)), latest_version(session=session))
    return render(request, "stations.html", status_code=code, views=views, modes=MODES, alarm_labels=ALARMS,
                  cameras=CAMERA_STATES, removed=removed, login=login if login in LOGIN_OUTCOMES else "",
                  password_file=str(request.app.state.ctx.settings.mqtt_password_file or ""),
                  problems=[say(tr, p) for p in problems or []], default_zone=DEFAULT_TIME_ZONE,
                  new=new or {"station_id": "", "name": "", "place": "", "time_zone": DEFAULT_TIME_ZONE,
                              "opening_hours": "24h", "mode": "face_or_qr"})


@router.get("/stations")
def stations_page(request: Request, user: Reader, removed: str = "", login: str = "") -> Response:
    return _list_page(request, user, removed=removed[:63], login=login)


@router.post("/stations")
def register(
    request: Request, user: Admin, station_id: Annotated[str, Form(max_length=63)], name: Text, place: Text = "",
    time_zone: Text = DEFAULT_TIME_ZONE, opening_hours: Text = "24h", mode: Text = "face_or_qr",
) -> Response:
    values = {"station_id": station_id.strip(), "name": name.strip(), "place": place.strip(),
              "time_zone": time_zone.strip(), "opening_hours": opening_hours.strip(), "mode": mode.strip()}
    problems = _check(values)
    try:
        check_station_id(values["station_id"])
    except ValueError:
        problems.insert(0, N_(
            "Station ID: 1 to 63 lower-case letters, digits, hyphens and underscores, starting with a letter or digit."
        ))
    ctx = request.app.state.ctx
    if not problems:
        with ctx.sessions() as session:
            # Added first: register_station commits it with the station, or drops it with a conflict.
            audit.record(session, actor=user.actor, action="station.register", target=values["station_id"],
                         detail={k: values[k] for k in EDITABLE})
            try:
                register_station(session=session, station_id=values["station_id"], name=values["name"],
                                 **{f: values[f] for f in EDITABLE if f != "name"})
            except Conflict:
                problems.append(N_("A station with this ID is registered already."))
            else:
                _publish_config(request, values["station_id"])
    if problems:
        return _list_page(request, user, code=status.HTTP_400_BAD_REQUEST, problems=problems, new=values)
    return _provision(request, user, values["station_id"], first=True)


@router.post("/stations/{station_id}/provision")
def provision(request: Request, user: Admin, station_id: str) -> Response:
    """New broker credentials for the station (the bundle comes as a one-time download)."""
    return _provision(request, user, station_id, first=False)


def _provision(request: Request, user: PageUser, station_id: str, *, first: bool) -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, translator(user.language).gettext(NO_STATION))
        try:
            bundle = make_bundle(ctx.settings, station_id, station.name)
        except ProvisionError as err:
            log.warning("provisioning station %s failed: %s", station_id, err)
            return _station_page(request, user, station_id, provision_error=str(err), code=status.HTTP_409_CONFLICT)
        audit.record(session, actor=user.actor, action="station.provision", target=station_id,
                     detail={"new_station": first, "password_file": str(ctx.settings.mqtt_password_file)})
        session.commit()
    token = BUNDLES.put(station_id, bundle)
    return RedirectResponse(f"/stations/{station_id}?bundle={token}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/stations/{station_id}/bundle/{token}")
def download_bundle(request: Request, user: Admin, station_id: str, token: str) -> Response:
    data = BUNDLES.take(station_id, token)
    if data is None:
        tr = translator(user.language)
        raise HTTPException(status.HTTP_410_GONE, tr.gettext(
            "This download was used already or has expired. Give the station new credentials to get a new one."))
    with request.app.state.ctx.sessions() as session:
        audit.record(session, actor=user.actor, action="station.bundle_download", target=station_id)
        session.commit()
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{station_id}-provisioning.zip"', "Cache-Control": "no-store"})


@router.get("/stations/{station_id}")
def station_page(request: Request, user: Reader, station_id: str, bundle: str = "", saved: int = 0) -> Response:
    return _station_page(request, user, station_id, bundle=bundle, saved=bool(saved))


@router.post("/stations/{station_id}")
def edit(
    request: Request, user: Admin, station_id: str, name: Text, place: Text = "", time_zone: Text = DEFAULT_TIME_ZONE,
    opening_hours: Text = "24h", mode: Text = "face_or_qr",
) -> Response:
    values = {"name": name.strip(), "place": place.strip(), "time_zone": time_zone.strip(),
              "opening_hours": opening_hours.strip(), "mode": mode.strip()}
    problems = _check(values)
    if problems:
        return _station_page(request, user, station_id, problems=problems, form=values,
                             code=status.HTTP_400_BAD_REQUEST)
    with request.app.state.ctx.sessions() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, translator(user.language).gettext(NO_STATION))
        changes = {f: [getattr(station, f), values[f]] for f in EDITABLE if getattr(station, f) != values[f]}
        if changes:
            for field, (_old, new) in changes.items():
                setattr(station, field, new)
            if any(f in changes for f in CONFIG_FIELDS):
                mark_changed(station)  # same transaction: a saved change always has its own version
            audit.record(session, actor=user.actor, action="station.edit", target=station_id, detail=changes)
            session.commit()
    if any(f in changes for f in CONFIG_FIELDS):
        _publish_config(request, station_id)
    return RedirectResponse(f"/stations/{station_id}?saved=1", status_code=status.HTTP_303_SEE_OTHER)


def _publish_config(request: Request, station_id: str) -> None:
    """Send the station its new mode and opening hours (retained: it gets them when it is next online)."""
    ingest = request.app.state.ctx.ingest
    if ingest is None:  # no MQTT in this process: the config goes out when the server next connects
        return
    try:
        ingest.configs.publish(station_id)
    except Exception:  # saved already; every (re)connect of the server publishes all configs again
        log.exception("station %s: publishing its config failed", station_id)


def _station_page(request: Request, user: PageUser, station_id: str, *, bundle: str = "", saved: bool = False,
                  problems: list[Problem] | None = None, form: dict[str, str] | None = None, provision_error: str = "",
                  code: int = 200) -> Response:
    tr = translator(user.language)
    with request.app.state.ctx.sessions() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, tr.gettext(NO_STATION))
        view = station_views(session, [station], latest_version(session=session))[0]
        config = ConfigState.of(station)  # the database: any ingest process may have stored the answer
        events = session.execute(
            select(Entry, Worker.name).outerjoin(Worker, Worker.worker_id == Entry.worker_id)
            .where(Entry.station_id == station_id).order_by(Entry.occurred_at.desc(), Entry.id.desc())
            .limit(RECENT_EVENTS)
        ).all()
    waiting = bool(bundle) and BUNDLES.waiting(station_id, bundle)
    return render(
        request, "station.html", status_code=code, v=view, st=station, events=events, modes=MODES, kinds=KINDS,
        decisions=DECISIONS, config=config,
        alarm_labels=ALARMS, cameras=CAMERA_STATES, doors=DOOR_STATES, bundle=bundle if waiting else "",
        bundle_gone=bool(bundle) and not waiting, saved=saved,
        problems=[say(tr, p) for p in problems or []], provision_error=provision_error,
        form=form or {f: getattr(station, f) for f in EDITABLE},
    )


# -- removal -------------------------------------------------------------------------------


def _remove_page(request: Request, user: PageUser, station_id: str, *, error: bool = False,
                 code: int = 200) -> Response:
    ctx = request.app.state.ctx
    with ctx.sessions() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, translator(user.language).gettext(NO_STATION))
        facts = removal_facts(session, station)
        return render(request, "station_remove.html", status_code=code, st=station, facts=facts, error=error,
                      password_file=str(ctx.settings.mqtt_password_file or ""))


@router.get("/stations/{station_id}/remove")
def remove_form(request: Request, user: Admin, station_id: str) -> Response:
    return _remove_page(request, user, station_id)


@router.post("/stations/{station_id}/remove")
def remove(
    request: Request, user: Admin, station_id: str, confirm_id: Annotated[str, Form(max_length=100)] = ""
) -> Response:
    """Remove only when the admin typed the station's ID: its broker login and config go with it."""
    ctx = request.app.state.ctx
    if confirm_id.strip() != station_id:
        return _remove_page(request, user, station_id, error=True, code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    with ctx.sessions() as session:
        try:
            removed = remove_station(session=session, station_id=station_id, actor=user.actor)
        except NotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, translator(user.language).gettext(NO_STATION)) from None
    login = finish_removal(ctx, removed)
    return RedirectResponse(f"/stations?removed={station_id}&login={login}", status_code=status.HTTP_303_SEE_OTHER)
