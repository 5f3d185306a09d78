"""MQTT topic names.

All topics start with ``ws/v1``; a breaking change to the contract moves to
``ws/v2`` so old and new stations can share one broker during an upgrade.

Direction and QoS (see docs/protocol.md):

====================================  ===============  ====  =======
topic                                 direction        QoS   retain
====================================  ===============  ====  =======
ws/v1/station/{sid}/entry             edge -> server   1     no
ws/v1/station/{sid}/snapshot          edge -> server   1     no
ws/v1/station/{sid}/status            edge -> server   1     yes (last will: offline)
ws/v1/station/{sid}/sync/request      edge -> server   1     no
ws/v1/station/{sid}/sync/ack          edge -> server   1     no
ws/v1/station/{sid}/sync/reply        server -> edge   1     no
ws/v1/station/{sid}/config            server -> edge   1     yes
ws/v1/station/{sid}/config/ack        edge -> server   1     yes
ws/v1/gallery/change                  server -> edges  1     no
====================================  ===============  ====  =======
"""

from __future__ import annotations

import re

PREFIX = "ws/v1"
STATION_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_STATION_RE = re.compile(STATION_ID_PATTERN)

GALLERY_CHANGE = f"{PREFIX}/gallery/change"

# Subscriptions for the server (single-level wildcard on the station id).
ALL_ENTRIES = f"{PREFIX}/station/+/entry"
ALL_SNAPSHOTS = f"{PREFIX}/station/+/snapshot"
ALL_STATUS = f"{PREFIX}/station/+/status"
ALL_SYNC_REQUESTS = f"{PREFIX}/station/+/sync/request"
ALL_SYNC_ACKS = f"{PREFIX}/station/+/sync/ack"
ALL_CONFIG_ACKS = f"{PREFIX}/station/+/config/ack"


def check_station_id(station_id: str) -> str:
    """Return the id if it is a valid station id, else raise ValueError.

    Station ids appear inside topics, so they must not contain ``/``, ``+``
    or ``#``; they are lower-case ASCII, digits, ``-`` and ``_``.
    """
    if not isinstance(station_id, str) or not _STATION_RE.match(station_id):
        raise ValueError(
            f"station id {station_id!r} is invalid: use 1-63 characters a-z, 0-9, '-' or '_'"
        )
    return station_id


def entry(station_id: str) -> str:
    return f"{PREFIX}/station/{check_station_id(station_id)}/entry"


def snapshot(station_id: str) -> str:
    """Where a station sends the snapshot of a denied attempt (models/snapshot.py), after its entry."""
    return f"{PREFIX}/station/{check_station_id(station_id)}/snapshot"


def status(station_id: str) -> str:
    return f"{PREFIX}/station/{check_station_id(station_id)}/status"


def sync_request(station_id: str) -> str:
    return f"{PREFIX}/station/{check_station_id(station_id)}/sync/request"


def sync_ack(station_id: str) -> str:
    return f"{PREFIX}/station/{check_station_id(station_id)}/sync/ack"


def sync_reply(station_id: str) -> str:
    return f"{PREFIX}/station/{check_station_id(station_id)}/sync/reply"


def station_config(station_id: str) -> str:
    """The server's settings for one station (models/station_config.py), retained."""
    return f"{PREFIX}/station/{check_station_id(station_id)}/config"


def station_config_ack(station_id: str) -> str:
    """The station's answer to its config (applied or refused), retained."""
    return f"{PREFIX}/station/{check_station_id(station_id)}/config/ack"


def station_of(topic: str) -> str:
    """The station id named in a ``ws/v1/station/{sid}/...`` topic.

    Raises ValueError for any other topic, so a handler can trust the id.
    """
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] + "/" + parts[1] != PREFIX or parts[2] != "station":
        raise ValueError(f"topic {topic!r} is not a station topic")
    return check_station_id(parts[3])
