"""QR credentials at the station: codes made with the qrcode package, pasted into real camera frames, read back by
OpenCV, and judged against a real edge store; the station modes on the real agent with the real dlib models."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import qrcode
from gpiozero.pins.mock import MockFactory

from core.broker import free_port
from core.imaging import detect_qr, resize
from edge.agent import EdgeAgent
from edge.camera import Frame
from edge.config import AccessConfig, EdgeSettings
from edge.qr import CredentialVerifier, OneToOneGallery, QrAccess
from edge.store import EdgeStore
from models import credential as cred
from models.messages import Decision, EntryEvent, EventKind, decode
from server.credentials import Signer, signer_for
from tests.edge.server_side import delete, upsert

EX = "face_recognition_examples"
WORKER = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # the server's worker ids are 32 hex digits
NOW = int(datetime(2025, 6, 1, tzinfo=timezone.utc).timestamp())


# -- making codes and frames ---------------------------------------------------------------------------------
def qr_image(text: str) -> np.ndarray:
    """The code as the server renders it (level M, 4-module quiet zone), as an RGB array."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=10, border=4)
    code.add_data(text)
    code.make(fit=True)
    return np.asarray(code.make_image().get_image().convert("RGB"))


def in_frame(photo: np.ndarray, text: str | None, *, qr_px: int = 240, size: tuple[int, int] = (720, 1280),
             angle: float = 0.0) -> np.ndarray:
    """A camera frame: the person's photo filling the frame's height on the left, the code held up on the right."""
    height, width = size
    frame = np.full((height, width, 3), 96, np.uint8)
    person = resize(photo, height / photo.shape[0])
    pw = min(person.shape[1], width // 2)
    crop = (person.shape[1] - pw) // 2  # the middle of the photo, where the face is
    frame[:, :pw] = person[:, crop : crop + pw]
    if text is not None:
        from PIL import Image  # only to turn the code as a hand would; the frame itself stays numpy

        img = Image.fromarray(resize(qr_image(text), qr_px / qr_image(text).shape[0]))
        code = np.asarray(img.rotate(angle, expand=True, fillcolor=(255, 255, 255), resample=Image.BILINEAR))
        top, left = (height - code.shape[0]) // 2, width - code.shape[1] - 40
        frame[top : top + code.shape[0], left : left + code.shape[1]] = code
    return frame


@pytest.fixture(scope="module")
def portraits(photos: dict[str, np.ndarray], face_engine) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Head and shoulders cut from each photo around its face, as a door camera sees a person up close."""
    out = {}
    for name, photo in photos.items():
        box = max(face_engine.detect(photo, upsample=1), key=lambda b: b.size)
        side = box.size * 3
        cx, cy = (box.left + box.right) // 2, (box.top + box.bottom) // 2
        top, left = max(0, cy - side // 2), max(0, cx - side // 2)
        out[name] = photo[top : top + side, left : left + side]
    return out


def token(signer: Signer, *, worker: str = WORKER, issued: int = NOW, days: int = 30, bound: int = 3,
          cid: str = "a1b2c3d4e5f6") -> str:
    return signer.token(cred.CredentialClaims(worker, cid, issued, days, bound))


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    s = EdgeStore.open(tmp_path / "edge")
    s.apply_changes([upsert(3, WORKER), upsert(4, "other-worker")], snapshot=False, latest_version=4)
    yield s
    s.close()


def verifier(signer: Signer, store: EdgeStore, **kw: object) -> CredentialVerifier:
    return CredentialVerifier([signer.public_key], worker=store.worker, wall_clock=lambda: NOW + 3600.0, **kw)  # type: ignore[arg-type]


# -- the format --------------------------------------------------------------------------------------------
def test_token_is_compact_and_round_trips(signer: Signer) -> None:
    text = token(signer)
    assert text.startswith("WS1.") and len(text) <= 140
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.make(fit=True)
    assert code.version <= 8  # 49 x 49 modules
    payload, signature = cred.split(text)
    claims = cred.parse(payload)
    assert (claims.worker_id, claims.credential_id, claims.issued, claims.bound_version) == (WORKER, "a1b2c3d4e5f6", NOW, 3)
    assert claims.expires == NOW + 30 * 86400 and len(signature) == 64


@pytest.mark.parametrize("bad", ["WS1.", "WS1.!!!!", "WS1." + "A" * 500, "WS1.AAAA"])
def test_damaged_texts_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(cred.MalformedCredential):
        cred.split(bad)


# -- read back from real frames --------------------------------------------------------------------------
@pytest.mark.faces
@pytest.mark.parametrize(("qr_px", "angle"), [(240, 0), (200, 12), (170, -25), (320, 40)])
def test_codes_held_up_in_a_camera_frame_are_read_back(signer: Signer, photos, qr_px: int, angle: float) -> None:  # noqa: ANN001
    text = token(signer)
    assert detect_qr(in_frame(photos["obama2"], text, qr_px=qr_px, angle=angle)) == [text]


@pytest.mark.faces
def test_a_frame_without_a_code_reads_nothing(photos) -> None:  # noqa: ANN001
    assert detect_qr(in_frame(photos["obama2"], None)) == []


@pytest.mark.faces
def test_valid_credential_in_a_frame_is_accepted(signer: Signer, store: EdgeStore, photos) -> None:  # noqa: ANN001
    text = detect_qr(in_frame(photos["obama2"], token(signer)))[0]
    check = verifier(signer, store).check(text)
    assert check.ok and check.claims is not None and check.claims.worker_id == WORKER


@pytest.mark.faces
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "expired on 2025-05-31 00:00 UTC"),
        ("revoked", "revoked"),
        ("forged", "forged"),
        ("tampered", "forged"),
        ("suspended", "worker suspended"),
        ("deleted", "worker deleted"),
        ("unknown", "worker unknown"),
        ("future", "set the clock"),
        ("not_admitted", "not admitted"),
    ],
)
def test_refused_credentials_read_from_frames(
    case: str, expected: str, signer: Signer, store: EdgeStore, photos, tmp_path: Path  # noqa: ANN001
) -> None:
    text = token(signer)
    grantable = lambda _w: True  # noqa: E731
    if case == "expired":
        text = token(signer, issued=NOW - 86400 * 2, days=1)  # ended a day before the station's "now"
    elif case == "revoked":
        store.apply_changes([upsert(9, WORKER)], snapshot=False, latest_version=9)  # the server's revocation change
    elif case == "forged":
        text = token(signer_for(tmp_path / "someone-else"))  # same claims, another key
    elif case == "tampered":
        payload, signature = cred.split(text)
        forged = cred.CredentialClaims(WORKER, "a1b2c3d4e5f6", NOW, 3650, 3)  # ten years instead of thirty days
        text = cred.to_text(forged.payload(), signature)
    elif case == "suspended":
        store.apply_changes([upsert(3, WORKER)], snapshot=True, latest_version=3)
        store.apply_changes([upsert(5, WORKER, active=False)], snapshot=False, latest_version=5)
        text = token(signer, bound=5)  # bound to the suspension itself: refused for being suspended, not revoked
    elif case == "deleted":
        store.apply_changes([delete(5, WORKER)], snapshot=False, latest_version=5)
        text = token(signer, bound=5)
    elif case == "unknown":
        text = token(signer, worker="nobody-here")
    elif case == "future":
        text = token(signer, issued=NOW + 86400)
    elif case == "not_admitted":
        grantable = lambda _w: False  # noqa: E731
    read = detect_qr(in_frame(photos["biden"], text))
    assert read == [text]
    check = verifier(signer, store, grantable=grantable).check(read[0])
    assert not check.ok and expected in check.reason, check.reason
    # A forged or damaged code is never attributed to the worker it names.
    assert (check.claims is None) == (case in ("forged", "tampered"))


# -- the modes, frame by frame --------------------------------------------------------------------------
@pytest.mark.faces
def test_qr_mode_decides_a_presentation_once_and_again_after_it_left(
    signer: Signer, store: EdgeStore, photos  # noqa: ANN001
) -> None:
    access = QrAccess(AccessConfig(mode="qr", qr_public_keys=[signer.public_key], qr_repeat_s=2.0), verifier(signer, store))
    gallery = store.load_gallery()
    shown, empty = in_frame(photos["obama2"], token(signer)), in_frame(photos["obama2"], None)
    first = access.step(shown, 0.0, gallery)
    assert first.qr is not None and first.qr.decision == Decision.GRANTED and first.qr.worker_id == WORKER
    assert first.face_gallery is None  # qr mode: the face path never runs
    assert access.step(shown, 1.0, gallery).qr is None  # still held up: the same presentation
    assert access.step(shown, 2.5, gallery).qr is None  # seen 1.5 s ago: still the same
    assert access.step(empty, 3.0, gallery).qr is None
    assert access.step(shown, 5.0, gallery).qr is not None  # gone for 2.5 s: shown again


@pytest.mark.faces
def test_face_or_qr_sends_frames_without_a_code_to_the_face_path(signer: Signer, store: EdgeStore, photos) -> None:  # noqa: ANN001
    access = QrAccess(AccessConfig(mode="face_or_qr", qr_public_keys=[signer.public_key]), verifier(signer, store))
    gallery = store.load_gallery()
    plain = access.step(in_frame(photos["obama2"], None), 0.0, gallery)
    assert plain.qr is None and plain.face_gallery is gallery
    other = access.step(in_frame(photos["obama2"], "https://example.org/menu"), 0.1, gallery)
    assert other.qr is None and other.face_gallery is gallery and access.ignored == 1  # not ours: ignored
    coded = access.step(in_frame(photos["obama2"], token(signer, issued=NOW - 86400 * 40)), 0.2, gallery)
    assert coded.qr is not None and coded.qr.decision == Decision.DENIED and "expired" in coded.qr.reason
    assert coded.face_gallery is None


@pytest.mark.faces
def test_forged_codes_are_all_refused_but_logged_at_most_every_interval(
    signer: Signer, store: EdgeStore, photos, tmp_path: Path  # noqa: ANN001
) -> None:
    settings = AccessConfig(mode="qr", qr_public_keys=[signer.public_key], unsigned_log_interval_s=10.0)
    access = QrAccess(settings, verifier(signer, store))
    attacker = signer_for(tmp_path / "attacker")
    gallery = store.load_gallery()
    decisions = [
        access.step(in_frame(photos["biden"], token(attacker, cid=f"{i:012x}")), t, gallery).qr
        for i, t in enumerate((0.0, 1.0, 2.0, 11.0))
    ]
    assert all(d is not None and d.decision == Decision.DENIED and d.worker_id is None for d in decisions)
    assert [d.record for d in decisions if d is not None] == [True, False, False, True]
    valid = access.step(in_frame(photos["biden"], token(signer)), 11.5, gallery).qr
    assert valid is not None and valid.decision == Decision.GRANTED and valid.record  # never limited


def test_one_to_one_gallery_only_ever_names_the_claimed_worker(store: EdgeStore) -> None:
    gallery = store.load_gallery()
    one = OneToOneGallery(gallery, WORKER)
    other_vec = np.frombuffer(np.random.default_rng(0).normal(size=128).astype(np.float32).tobytes(), np.float32)
    match = one.match(other_vec)
    assert match.identity == WORKER and match.second_identity is None and match.margin == float("inf")
    assert match.distance == pytest.approx(float(gallery.identity_distances(other_vec)[gallery.identities.index(WORKER)]))
    assert len(OneToOneGallery(gallery, "absent")) == 0


# -- the whole agent ------------------------------------------------------------------------------------
def agent_settings(tmp_path: Path, signer: Signer, mode: str) -> EdgeSettings:
    return EdgeSettings.build(
        station_id="st-qr",
        data_dir=tmp_path / "edge",
        mqtt={"host": "127.0.0.1", "port": free_port()},  # no broker: entries stay in the outbox to be read
        door={"unlock_s": 1.0},
        liveness={"mode": "off"},  # still photos here; liveness has its own tests
        access={"mode": mode, "qr_public_keys": [signer.public_key]},
    )


def outbox(agent: EdgeAgent) -> list[EntryEvent]:
    assert agent.store is not None
    return [decode(payload, EntryEvent) for _id, _topic, payload in agent.store.pending(1000)]


def real_token(signer: Signer, worker: str, bound: int) -> str:
    issued = int(time.time()) - 60
    return signer.token(cred.CredentialClaims(worker, "0123456789ab", issued, 30, bound))


@pytest.fixture
def enrolled(tmp_path: Path, face_engine, photos) -> None:  # noqa: ANN001
    """obama and biden enrolled at the station from their photos (obama2 / biden frames are probes)."""
    store = EdgeStore.open(tmp_path / "edge")
    store.apply_changes(
        [upsert(1, "obama", face_engine.encode_single(photos["obama"])[0]),
         upsert(2, "biden", face_engine.encode_single(photos["biden"])[0])],
        snapshot=False, latest_version=2,
    )
    store.close()


@pytest.mark.faces
@pytest.mark.models
def test_qr_mode_opens_for_a_valid_code_and_records_refusals(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    forged = signer_for(tmp_path / "attacker")
    frames = (
        [in_frame(portraits["biden"], real_token(forged, "obama", 1), size=(480, 640), qr_px=200)]
        + [in_frame(portraits["biden"], None, size=(480, 640))] * 2
        + [in_frame(portraits["biden"], real_token(signer, "obama", 1), size=(480, 640), qr_px=200)] * 3
    )
    factory = MockFactory()
    with EdgeAgent(agent_settings(tmp_path, signer, "qr"), frames=frames, pin_factory=factory, engine=face_engine) as agent:
        relay = factory.pin(17)
        relay.clear_states()
        agent.run()
        events = outbox(agent)
        assert agent.pipeline is not None and agent.pipeline.counts["encodings"] == 0  # qr mode never looks at faces
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [
        (EventKind.QR, Decision.DENIED, None),  # the forged code names obama, but is not attributed to him
        (EventKind.QR, Decision.GRANTED, "obama"),  # one grant for three frames of the same code
    ]
    assert "forged" in events[0].reason and "0123456789ab" in events[1].reason
    assert [s.state for s in relay.states[:2]] == [False, True]  # the lock opened once
    assert factory.pin(27).states[1].state is True  # beeped


@pytest.mark.faces
@pytest.mark.models
def test_qr_then_face_lets_in_the_right_face_and_refuses_another_persons(
    tmp_path: Path, signer: Signer, face_engine, portraits, enrolled  # noqa: ANN001
) -> None:
    obamas_code = real_token(signer, "obama", 1)
    blank = np.full((480, 640, 3), 96, np.uint8)
    frames = (
        [in_frame(portraits["biden"], None, size=(480, 640))] * 4  # no code: 1:N would know biden, but nothing happens
        + [in_frame(portraits["obama2"], obamas_code, size=(480, 640), qr_px=200)]
        + [in_frame(portraits["obama2"], None, size=(480, 640))] * 3  # obama's code and obama's face: granted
        + [blank] * 2
    )
    factory = MockFactory()
    settings = agent_settings(tmp_path, signer, "qr_then_face")
    with EdgeAgent(settings, frames=frames, pin_factory=factory, engine=face_engine) as agent:
        relay = factory.pin(17)
        relay.clear_states()
        agent.run()
        granted = outbox(agent)
    assert [(e.kind, e.decision, e.worker_id) for e in granted] == [(EventKind.QR, Decision.GRANTED, "obama")]
    assert "face verified 1:1" in granted[0].reason and granted[0].scores.distance < settings.policy.threshold
    assert granted[0].scores.second_distance is None  # 1:1: nobody else was compared
    assert [s.state for s in relay.states].count(True) == 1  # opened once: for obama, never for biden's face alone

    # Biden holds up obama's (valid) code: his face is compared with obama's only, and refused.
    (tmp_path / "edge2").mkdir()
    frames = [in_frame(portraits["biden"], obamas_code, size=(480, 640), qr_px=200)] + [
        in_frame(portraits["biden"], None, size=(480, 640))
    ] * 8
    factory = MockFactory()
    with EdgeAgent(settings, frames=frames, pin_factory=factory, engine=face_engine) as agent:
        relay = factory.pin(17)
        relay.clear_states()
        agent.run()
        refused = outbox(agent)[1:]  # after the first run's grant, still in the same outbox
    assert [(e.kind, e.decision, e.worker_id) for e in refused] == [(EventKind.QR, Decision.DENIED, "obama")]
    assert "face does not match" in refused[0].reason and refused[0].scores.distance > settings.policy.threshold
    assert len(relay.states) == 1 and relay.state is False  # never opened
    assert factory.pin(27).states[1].state is True  # the denial beeped


@pytest.mark.faces
@pytest.mark.models
def test_qr_then_face_times_out_when_no_face_follows(
    tmp_path: Path, signer: Signer, face_engine, enrolled  # noqa: ANN001
) -> None:
    settings = agent_settings(tmp_path, signer, "qr_then_face")
    settings = settings.model_copy(update={"access": settings.access.model_copy(update={"qr_face_s": 2.0})})
    code = qr_image(real_token(signer, "obama", 1))
    empty = np.full((480, 640, 3), 96, np.uint8)
    code_only = empty.copy()
    code_only[140:340, 220:420] = resize(code, 200 / code.shape[0])
    base = time.monotonic()
    # The code, then an empty doorway for 3 s (frames half a second apart, by their own timestamps).
    frames = [Frame(0, base, code_only)] + [Frame(i, base + 0.5 * i, empty) for i in range(1, 7)]
    with EdgeAgent(settings, frames=frames, pin_factory=MockFactory(), engine=face_engine) as agent:
        agent.run()
        events = outbox(agent)
    assert [(e.kind, e.decision, e.worker_id) for e in events] == [(EventKind.QR, Decision.DENIED, "obama")]
    assert "no matching face within 2 s" in events[0].reason
