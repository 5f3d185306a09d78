"""A station installed from its provisioning bundle can read QR credentials, so it takes the server's default mode.

New stations are registered with mode ``face_or_qr`` (the face must not be the only way in). A station whose
station.yaml lacks the server's QR public key refuses every mode that reads QR codes, and keeps face only. Real
components: mosquitto with TLS, passwords and the deploy ACL, the real server, the real edge agent started from
the bundle's own station.yaml and station.env (gpiozero mock pins; no camera frames are needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from edge.agent import EdgeAgent
from edge.config import EdgeSettings
from server.credentials import signer_for
from server.provision import provision_station
from server.tables import Station
from tests.support.browser import API_TOKEN, secure_web_app
from tests.support.services import wait_for

pytestmark = [pytest.mark.models]

SID = "yuhang-07"


def test_a_station_from_its_bundle_applies_the_servers_default_mode_and_reads_qr(
    tmp_path: Path, face_engine, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    with secure_web_app(tmp_path) as site:
        settings = site.web.runtime.settings
        with httpx.Client(base_url=site.web.url, headers={"Authorization": f"Bearer {API_TOKEN}"},
                          trust_env=False) as api:
            api.post("/api/stations", json={"station_id": SID, "name": "余杭 7 号驿站"}).raise_for_status()
            published_key = api.get("/api/credentials/public-key").json()["public_key"]
            done = provision_station(settings=settings, station_id=SID, out_dir=tmp_path / "bundle", rotate=True)
            site.broker.reload()  # what `systemctl reload mosquitto` does after provisioning

            in_file = yaml.safe_load(done.config_file.read_text())
            assert in_file["access"] == {"qr_public_keys": [published_key]}
            assert published_key == signer_for(settings.data_dir).public_key

            password = re.search(r"^WAYSTATION_EDGE_MQTT__PASSWORD=(\S+)$", done.env_file.read_text(), re.M)
            assert password is not None
            monkeypatch.setenv("WAYSTATION_EDGE_MQTT__PASSWORD", password.group(1))  # systemd's EnvironmentFile=
            monkeypatch.setenv("WAYSTATION_EDGE_DATA_DIR", str(tmp_path / "edge"))
            station = EdgeSettings.load(done.config_file)
            assert station.access.mode == "face"  # its file's mode, until the server's config arrives

            with EdgeAgent(station, frames=[], pin_factory=MockFactory(), engine=face_engine) as agent:
                assert agent.configs is not None
                assert wait_for(lambda: agent.configs.mode == "face_or_qr", 20), agent.configs.last_ack
                ack = agent.configs.last_ack
                assert ack is not None and ack.applied and ack.mode == "face_or_qr"

                def answer() -> tuple[object, ...]:  # what the station page reads: "applied vN"
                    with site.web.sessions() as session:
                        row = session.get(Station, SID)
                        return (row.config_ack_status, row.config_applied_version)

                assert wait_for(lambda: answer() == ("applied", ack.version), 20), answer()
