"""QR credentials over real HTTP on a real server (SQLite file, uvicorn, mosquitto), down to a station's sync."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.imaging import detect_qr, load_image
from edge.config import EdgeSettings
from edge.gallery import GalleryHolder
from edge.qr import CredentialVerifier
from edge.store import EdgeStore
from edge.sync import StationSync, build_link
from models import credential as cred
from server.config import ServerSettings
from server.credentials import KEY_FILE
from server.runtime import ServerRuntime
from tests.server.conftest import TOKEN, make_settings, random_encodings, start_server, wait_until
from tests.support.services import Mosquitto

pytestmark = pytest.mark.broker


def enroll(api: httpx.Client, name: str, seed: int) -> str:
    body = {"name": name, "encodings": random_encodings(np.random.default_rng(seed), 2)}
    reply = api.post("/api/workers/encodings", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()["worker_id"]


def issue(api: httpx.Client, worker_id: str, **body: object) -> dict:
    reply = api.post(f"/api/workers/{worker_id}/credentials", json=body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_the_public_key_comes_from_a_private_key_file_made_on_first_use(
    api: httpx.Client, settings: ServerSettings
) -> None:
    key_file = settings.data_dir / KEY_FILE
    assert not key_file.exists()
    first = api.get("/api/credentials/public-key").json()
    assert first["algorithm"] == "Ed25519" and len(base64.b64decode(first["public_key"])) == 32
    assert first["edge_config"] == f"qr_public_keys: [{first['public_key']}]"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes() and first["public_key"].encode() not in key_file.read_bytes()
    assert api.get("/api/credentials/public-key").json() == first  # the same key every time
    # The edge config accepts it as it is.
    edge = EdgeSettings.build(station_id="s", access={"mode": "qr", "qr_public_keys": [first["public_key"]]})
    assert edge.access.qr_public_keys == [first["public_key"]]


def test_issue_returns_a_signed_token_and_a_png_that_reads_back_to_it(api: httpx.Client) -> None:
    worker = enroll(api, "Ana Lima", 1)
    key = api.get("/api/credentials/public-key").json()["public_key"]
    issued = issue(api, worker, valid_days=30, label="printed card")
    assert issued["status"] == "valid" and issued["label"] == "printed card" and issued["worker_id"] == worker
    token = issued["token"]
    assert token.startswith("WS1.") and len(token) <= 140
    png = base64.b64decode(issued["qr_png_base64"])
    assert png.startswith(b"\x89PNG")
    assert detect_qr(load_image(png)) == [token]  # the QR code carries exactly the token
    claims = cred.parse(cred.split(token)[0])
    assert claims.worker_id == worker and claims.credential_id == issued["credential_id"]
    assert claims.expires - claims.issued == 30 * 86400 and claims.bound_version == issued["bound_version"]
    row = {"active": True, "deleted": False, "version": issued["bound_version"]}
    assert CredentialVerifier([key], worker=lambda _w: row).check(token).ok  # the station's verdict
    # The QR again, for reprinting: the very same token (Ed25519 signatures are deterministic).
    again = api.get(f"/api/workers/{worker}/credentials/{issued['credential_id']}/qr.png")
    assert again.status_code == 200 and again.headers["content-type"] == "image/png"
    assert detect_qr(load_image(again.content)) == [token]


def test_refusals_are_clear(api: httpx.Client, server: ServerRuntime) -> None:
    worker = enroll(api, "Bo Chen", 2)
    assert api.post("/api/workers/nobody/credentials", json={}).status_code == 404
    bad = api.post(f"/api/workers/{worker}/credentials", json={"valid_days": 0})
    assert bad.status_code == 422
    assert api.post(f"/api/workers/{worker}/credentials", json={"valid_days": 10, "colour": "red"}).status_code == 422
    api.post(f"/api/workers/{worker}/suspend").raise_for_status()
    suspended = api.post(f"/api/workers/{worker}/credentials", json={})
    assert suspended.status_code == 409 and "reinstate" in suspended.json()["detail"]
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        assert anonymous.get("/api/credentials/public-key").status_code == 401
        assert anonymous.post(f"/api/workers/{worker}/credentials", json={}).status_code == 401
    assert api.delete(f"/api/workers/{worker}/credentials/000000000000").status_code == 404
    assert api.delete(f"/api/workers/{worker}/credentials/not-an-id").status_code == 422


def test_revoking_voids_the_workers_other_credentials_and_says_so(api: httpx.Client) -> None:
    worker = enroll(api, "Cai Dong", 3)
    other = enroll(api, "Dee Evans", 4)
    card, phone = issue(api, worker, label="card"), issue(api, worker, label="phone")
    neighbour = issue(api, other)
    revoked = api.delete(f"/api/workers/{worker}/credentials/{card['credential_id']}")
    assert revoked.status_code == 200, revoked.text
    body = revoked.json()
    assert body["status"] == "revoked" and body["revoked_at"] is not None
    assert body["version"] > card["bound_version"] and body["also_void"] == [phone["credential_id"]]
    listed = {c["credential_id"]: c["status"] for c in api.get(f"/api/workers/{worker}/credentials").json()["items"]}
    assert listed == {card["credential_id"]: "revoked", phone["credential_id"]: "void"}
    others = api.get(f"/api/workers/{other}/credentials").json()["items"]
    assert [c["status"] for c in others] == ["valid"] and others[0]["credential_id"] == neighbour["credential_id"]
    gone = api.get(f"/api/workers/{worker}/credentials/{phone['credential_id']}/qr.png")
    assert gone.status_code == 410 and "void" in gone.json()["detail"]
    # Revoking again, or revoking a void one, needs no new gallery change.
    assert api.delete(f"/api/workers/{worker}/credentials/{card['credential_id']}").json()["version"] is None
    assert api.delete(f"/api/workers/{worker}/credentials/{phone['credential_id']}").json()["version"] is None
    # Deleting the worker deletes their credentials.
    api.delete(f"/api/workers/{worker}").raise_for_status()
    assert api.get(f"/api/workers/{worker}/credentials").status_code == 404


def test_a_revocation_reaches_a_station_through_the_gallery_sync(
    api: httpx.Client, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    api.post("/api/stations", json={"station_id": "st-qr", "name": "Rest stop QR"}).raise_for_status()
    worker = enroll(api, "Eli Fox", 5)
    key = api.get("/api/credentials/public-key").json()["public_key"]
    token = issue(api, worker)["token"]
    edge = EdgeSettings.build(
        station_id="st-qr", data_dir=tmp_path / "edge", mqtt={"host": mosquitto.host, "port": mosquitto.port},
        access={"mode": "qr", "qr_public_keys": [key]},
    )
    store = EdgeStore.open(edge.data_dir)
    holder = GalleryHolder()
    sync = StationSync(edge, store, build_link(edge), gallery=holder)
    verifier = CredentialVerifier(
        edge.access.qr_public_keys, worker=store.worker, grantable=lambda w: w in holder.gallery.identities
    )
    sync.start()
    try:
        assert holder.wait_for(lambda g: worker in g.identities, 20), "the enrollment did not reach the station"
        assert verifier.check(token).ok
        card = cred.parse(cred.split(token)[0]).credential_id
        version = api.delete(f"/api/workers/{worker}/credentials/{card}").json()["version"]
        wait_until(lambda: store.gallery_version() >= version, 20, "the revocation's gallery change")
        check = verifier.check(token)
        assert not check.ok and "revoked" in check.reason
        # The server knows the station has it: its ack covers the revocation's version.
        wait_until(
            lambda: api.get("/api/stations").json()["items"][0]["gallery_version_acked"] >= version, 20, "the ack"
        )
    finally:
        sync.stop()
        store.close()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = make_settings(tmp_path, mosquitto)
    settings.data_dir.mkdir(parents=True)
    key_file = settings.data_dir / KEY_FILE
    runtime = start_server(settings, mosquitto)
    try:
        with httpx.Client(base_url=runtime.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
            assert api.get("/api/credentials/public-key").status_code == 200  # creates it, 0600
            os.chmod(key_file, 0o644)
            from server import credentials

            credentials._signers.clear()  # as after a restart
            refused = api.get("/api/credentials/public-key")
            assert refused.status_code == 503 and f"chmod 600 {key_file.resolve()}" in refused.json()["detail"]
    finally:
        runtime.stop()
