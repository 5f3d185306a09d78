"""Provisioning a station: register it, give it broker credentials, write its edge config.

``python -m server provision STATION_ID --out DIR`` does, in order:

1. registers the station in the server's database (migrating it first);
2. creates a random broker password and adds ``STATION_ID:<hash>`` to the
   broker's password file (``mqtt_password_file``) with Debian's
   ``mosquitto_passwd``, the password given on its standard input so it never
   appears in a process list; the broker ACL (deploy/mosquitto/acl) then
   allows that user exactly the station's own topics;
3. writes into DIR: ``station.yaml`` (the edge config: station id, broker
   address, user name, client id, CA file, and the server's public key for
   QR credentials, without which the station refuses every mode that reads
   QR codes, the server's default ``face_or_qr`` included), ``station.env`` (the password as
   ``WAYSTATION_EDGE_MQTT__PASSWORD``; secrets never go into the YAML file)
   and ``ca.crt`` (the broker's CA certificate, from ``mqtt_tls_ca``).

The broker reads its password file again on SIGHUP (``systemctl reload
mosquitto``). Provisioning a registered station again refuses, unless
``rotate`` is set: then its password is replaced (the old one stops working
after the broker's reload). :func:`remove_broker_login` deletes a removed
station's user from the file the same way (``mosquitto_passwd -D``); after the
reload the broker refuses its login and disconnects it if it is connected.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from sqlalchemy.exc import SQLAlchemyError

from models.topics import check_station_id
from server.config import ServerSettings
from server.credentials import CredentialKeyError, signer_for
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.errors import Conflict, ServerError
from server.stations import is_registered, register_station

log = logging.getLogger(__name__)

PASSWORD_BYTES = 24
DEFAULT_TLS_PORT = 8883


class ProvisionError(ServerError, RuntimeError):
    """The station could not be provisioned; the message says what to do."""


@dataclass(frozen=True)
class Provisioned:
    station_id: str
    username: str
    config_file: Path
    env_file: Path
    ca_file: Path | None
    password_file: Path
    registered: bool
    """False when the station existed and only its password was rotated."""


def provision_station(
    *,
    settings: ServerSettings,
    station_id: str,
    out_dir: Path,
    name: str | None = None,
    broker_host: str | None = None,
    broker_port: int | None = None,
    data_dir: str = "data/edge",
    rotate: bool = False,
) -> Provisioned:
    """Register ``station_id``, create its broker credentials and write its config files into ``out_dir``."""
    try:
        check_station_id(station_id)
    except ValueError as err:
        raise ProvisionError(str(err)) from None
    password_file = settings.mqtt_password_file
    if password_file is None:
        raise ProvisionError(
            "set mqtt_password_file (WAYSTATION_SERVER_MQTT_PASSWORD_FILE) to the broker's password file, "
            "e.g. /etc/mosquitto/waystation/passwd"
        )
    passwd_exe = shutil.which("mosquitto_passwd")
    if passwd_exe is None:
        raise ProvisionError("mosquitto_passwd was not found: install Debian's mosquitto (apt-get install mosquitto)")
    ca = settings.mqtt_tls_ca
    if ca is None:
        log.warning("mqtt_tls_ca is not set: the station's config will connect without TLS")

    try:  # before anything is changed: a key that cannot be read stops here
        qr_key = signer_for(settings.data_dir).public_key
    except CredentialKeyError as err:
        raise ProvisionError(f"the QR credential key cannot be used: {err}") from None
    registered = _register(settings, station_id, name or station_id, rotate=rotate)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    _add_password(passwd_exe, password_file, station_id, password)

    out_dir.mkdir(parents=True, exist_ok=True)
    ca_file = None
    if ca is not None:
        ca_file = out_dir / "ca.crt"
        shutil.copyfile(ca, ca_file)
    host = broker_host or settings.station_mqtt_host or settings.mqtt_host
    port = broker_port or settings.station_mqtt_port or (DEFAULT_TLS_PORT if ca is not None else settings.mqtt_port)
    config = edge_config(station_id, host=host, port=port, ca_file=ca_file, data_dir=data_dir, qr_key=qr_key)
    config_file = out_dir / "station.yaml"
    header = (
        f"# Edge config of station {station_id}, written by `python -m server provision` "
        f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n"
        "# The broker password is in station.env (WAYSTATION_EDGE_MQTT__PASSWORD): load it into the agent's\n"
        "# environment (systemd: EnvironmentFile=) and keep that file readable by the agent only.\n"
    )
    config_file.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env_file = out_dir / "station.env"
    _write_private(env_file, f"WAYSTATION_EDGE_MQTT__PASSWORD={password}\n")
    return Provisioned(station_id, station_id, config_file, env_file, ca_file, password_file, registered)


def edge_config(station_id: str, *, host: str, port: int, ca_file: Path | None, data_dir: str,
                qr_key: str | None = None) -> dict:
    """The edge settings of a provisioned station, validated by the edge's own settings model.

    ``qr_key``: the server's public key for QR credentials (``access.qr_public_keys``); the station keeps
    ``access.mode: face`` from its file until the server's station config sets the mode.
    """
    mqtt: dict[str, object] = {
        "host": host,
        "port": port,
        "username": station_id,
        "client_id": f"station-{station_id}",
    }
    if ca_file is not None:
        mqtt["tls_ca"] = str(ca_file.resolve())
    config: dict[str, object] = {"station_id": station_id, "data_dir": data_dir, "mqtt": mqtt}
    if qr_key is not None:
        config["access"] = {"qr_public_keys": [qr_key]}
    from edge.config import EdgeSettings  # the edge's own validation: a config it would refuse is never written

    EdgeSettings.build(**config)
    return config


def _register(settings: ServerSettings, station_id: str, name: str, *, rotate: bool) -> bool:
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade_database(engine)
        with make_sessionmaker(engine)() as session:
            if is_registered(session=session, station_id=station_id):
                if not rotate:
                    raise ProvisionError(
                        f"station {station_id!r} is already registered; use --rotate to give it a new password"
                    )
                return False
            try:
                register_station(session=session, station_id=station_id, name=name[:100])
            except Conflict as err:
                raise ProvisionError(str(err)) from None
            return True
    except SQLAlchemyError as err:
        raise ProvisionError(f"cannot register the station in the database: {err.__class__.__name__}: {err}") from err
    finally:
        engine.dispose()


def _add_password(exe: str, password_file: Path, username: str, password: str) -> None:
    """Add or replace ``username`` in the mosquitto password file (created 0600 if missing)."""
    if not password_file.exists():
        password_file.parent.mkdir(parents=True, exist_ok=True)
        _write_private(password_file, "")
    # Without -b, mosquitto_passwd reads the password (twice) from standard input.
    result = subprocess.run(
        [exe, str(password_file), username],
        input=f"{password}\n{password}\n",
        text=True,
        capture_output=True,
        timeout=30,
    )
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        raise ProvisionError(f"mosquitto_passwd could not update {password_file}: {why[-1] if why else 'failed'}")


def remove_broker_login(*, settings: ServerSettings, station_id: str) -> bool | None:
    """Delete the station's user from ``mqtt_password_file``.

    True: deleted (the broker refuses it after its next reload); False: the file has no such user
    (never provisioned, or deleted already); None: no password file is configured, so the broker
    login, if any, must be removed by hand. ProvisionError if the file cannot be changed.
    """
    check_station_id(station_id)  # also keeps option-like names away from the command line
    password_file = settings.mqtt_password_file
    if password_file is None:
        return None
    try:
        users = {line.split(":", 1)[0] for line in password_file.read_text(encoding="utf-8").splitlines()}
    except FileNotFoundError:
        return False
    except OSError as err:
        raise ProvisionError(f"cannot read the broker's password file {password_file}: {err.strerror}") from err
    if station_id not in users:
        return False
    passwd_exe = shutil.which("mosquitto_passwd")
    if passwd_exe is None:
        raise ProvisionError("mosquitto_passwd was not found: install Debian's mosquitto (apt-get install mosquitto)")
    result = subprocess.run([passwd_exe, "-D", str(password_file), station_id], text=True, capture_output=True,
                            timeout=30)
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        raise ProvisionError(f"mosquitto_passwd could not update {password_file}: {why[-1] if why else 'failed'}")
    log.info("broker login of station %s deleted from %s", station_id, password_file)
    return True


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created so, never readable by others even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
