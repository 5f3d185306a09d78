"""The edge agent's settings: one typed, validated object, from a YAML file plus the environment.

Precedence, highest first: environment variables (``WAYSTATION_EDGE_`` prefix,
``__`` between nested keys, e.g. ``WAYSTATION_EDGE_MQTT__PASSWORD``), then the
YAML file (or constructor arguments), then the defaults. The environment wins
so that secrets never have to be written into the config file.

Every error is reported as ``key path: value: problem`` (see ConfigError).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge.errors import ConfigError
from edge.liveness import LivenessConfig
from edge.policy import PolicyConfig
from edge.snapshots import SnapshotConfig
from edge.sync_config import OutboxConfig, StatusConfig
from models.topics import check_station_id

_STRICT = ConfigDict(extra="forbid")


class MqttConfig(BaseModel):
    model_config = _STRICT

    host: str = Field(default="127.0.0.1", min_length=1, max_length=253, description="MQTT broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port (8883 is usual with TLS).")
    username: str | None = Field(default=None, max_length=128, description="Station's broker user name, if the broker wants one.")
    password: SecretStr | None = Field(
        default=None, description="Broker password; set it through WAYSTATION_EDGE_MQTT__PASSWORD, not the file."
    )
    tls_ca: Path | None = Field(default=None, description="CA certificate file; set to connect with TLS.")
    client_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Fixed MQTT client id (a persistent session needs one); default station-<station_id>.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keep-alive interval in seconds.")
    max_in_flight: int = Field(
        default=50, ge=1, le=1000, description="Entry events published and not yet acknowledged, at most."
    )

    @field_validator("tls_ca")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        # Named here, exit 2: a missing CA file must not become a traceback that systemd retries forever.
        if value is not None and not value.is_file():
            raise ValueError(f"CA certificate {value} does not exist (copy ca.crt from the station's bundle)")
        return value


class CameraConfig(BaseModel):
    model_config = _STRICT

    source: str = Field(
        default="0", min_length=1, max_length=1000,
        description='"0" = USB camera index, a video file path, an image folder path, or an rtsp:// / http(s):// URL.',
    )
    fps: float = Field(
        default=5.0, gt=0.0, le=120.0,
        description="Pace of an image folder (and of a video file without its own fps) when realtime is on.",
    )
    realtime: bool = Field(
        default=True,
        description="true: always process the newest frame, dropping stale ones (a live camera); "
        "false: process every frame in order (files, replay).",
    )
    reopen_max_s: float = Field(
        default=30.0, ge=0.1, le=600.0, description="Longest wait between attempts to reopen a camera that dropped."
    )


class DetectionConfig(BaseModel):
    """Where and how faces are searched for; see edge/pipeline.py and docs/performance.md."""

    model_config = _STRICT

    scale: float = Field(
        default=1.0, ge=0.1, le=1.0,
        description="Whole-frame searches run on the frame shrunk by this factor. HOG finds faces of ~80 px and more "
        "after shrinking, so 1.0 suits a 640x480 door camera (faces of 80-160 px at 0.5-1 m); a larger frame is "
        "shrunk further by target_width (1280x720: 0.5).",
    )
    target_width: int = Field(
        default=640, ge=0, le=8192,
        description="Whole-frame searches of a frame wider than this shrink it to this width (or further, by scale): "
        "a person at the door has a face of about 1/8 of the frame width at any resolution, so a 1920x1080 camera is "
        "searched like a 640x360 one (faces of 240 px and more), 9x cheaper. 0: off (only scale applies).",
    )
    upsample: int = Field(default=0, ge=0, le=2, description="HOG upsampling steps: finds smaller faces, 4x cost each.")
    min_face_px: int = Field(
        default=60, ge=20, le=2000,
        description="Faces smaller than this (full-frame pixels) are not encoded at all (saves time).",
    )
    roi_margin: float = Field(
        default=0.75, ge=0.2, le=3.0,
        description="While a face is followed, the next frame is searched only this many face sizes around it.",
    )
    roi_face_px: int = Field(
        default=100, ge=80, le=400,
        description="The search around a followed face shrinks it to about this size (HOG needs 80 px; smaller is faster).",
    )
    rescan_s: float = Field(
        default=0.5, ge=0.0, le=10.0,
        description="While a face is followed, the whole frame is looked at again this often, so that a clearly "
        "closer person is noticed (at the smallest scale that still finds one); 0: on every frame.",
    )
    idle_change: float = Field(
        default=0.002, ge=0.0, le=1.0,
        description="With nobody in view, a frame is searched only when at least this fraction of a small grey "
        "thumbnail changed since the last search; 0 searches every frame.",
    )
    idle_rescan_s: float = Field(
        default=1.0, ge=0.0, le=60.0,
        description="With nobody in view, the whole frame is searched at least this often, changed or not.",
    )
    encoder_processes: Annotated[int, Field(ge=0, le=8)] | Literal["auto"] = Field(
        default="auto",
        description="Worker processes that compute face encodings (edge/encoders.py), each with its own copy of "
        "the models (about 100 MB): the votes of a grant are then encoded side by side on the other cores. auto: "
        "one fewer than the cores, at most 3 (a Raspberry Pi 4 or 5: 3), none with fewer than 3 cores. 0: encode in "
        "the frame loop's process (a board with 1 GB of memory).",
    )
    idle_interval_s: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="With nobody in view, searches are at least this far apart: while the picture keeps changing, "
        "every other frame of a 25-30 fps camera is searched (a newcomer is found up to this much later; a slower "
        "camera or CPU is not affected). 0: every frame that changed.",
    )


ContactType = Literal["nc", "no"]


class DoorConfig(BaseModel):
    """The door's pins (BCM numbering), polarities and timings; see docs/hardware.md for the wiring.

    Inputs are wired between the pin and ground, with the Pi's internal
    pull-up: a closed switch reads low. ``*_pin: null`` means not fitted.
    """

    model_config = _STRICT

    relay_pin: int = Field(default=17, ge=0, le=27, description="BCM pin driving the lock relay.")
    relay_active_high: bool = Field(
        default=True, description="false for the common active-low relay boards (relay on when the pin is low)."
    )
    fail_safe: bool = Field(
        default=False,
        description="false (fail-secure, the default): the relay energised RELEASES the lock, so a stopped or crashed "
        "agent, or a Pi without power, leaves the door locked. true (fail-safe, only where the fire code asks for it): "
        "the relay energised HOLDS the lock, so any failure releases the door. Wiring differs; see docs/hardware.md.",
    )
    unlock_s: float = Field(default=3.0, ge=1.0, le=10.0, description="Seconds the lock stays released after a grant.")
    buzzer_pin: int = Field(default=27, ge=0, le=27, description="BCM pin of the buzzer.")
    green_led_pin: int = Field(default=22, ge=0, le=27, description="BCM pin of the green (granted) LED.")
    red_led_pin: int = Field(default=23, ge=0, le=27, description="BCM pin of the red (denied, alarm) LED.")
    beep_s: float = Field(default=0.1, ge=0.02, le=2.0, description="Length of one beep in seconds.")
    prompt_beep_s: float = Field(
        default=0.03, ge=0.0, le=0.5,
        description="The 'please move' prompt's one chirp (liveness.prompt_after_s), in seconds: shorter than a "
        "beep, a tick. 0: silent, the green LED's blinking alone (e.g. where people sleep near the door).",
    )
    deny_led_s: float = Field(default=1.0, ge=0.1, le=10.0, description="Seconds the red LED stays lit after a denial.")
    alarm_on_s: float = Field(default=0.8, ge=0.1, le=5.0, description="Alarm pattern: seconds the buzzer sounds.")
    alarm_off_s: float = Field(default=0.4, ge=0.1, le=5.0, description="Alarm pattern: seconds of silence between.")
    alarm_max_s: float = Field(
        default=120.0, ge=1.0, le=86400.0,
        description="The alarm sounds until its cause clears (door shut, tamper switch closed), but at most this long: "
        "people sleep at a rest station. The event is recorded either way.",
    )
    exit_pin: int | None = Field(
        default=5, ge=0, le=27, description="BCM pin of the request-to-exit button (null: none fitted)."
    )
    exit_contact: ContactType = Field(
        default="no", description="no: pressing closes the circuit (the usual push button); nc: pressing opens it."
    )
    contact_pin: int | None = Field(
        default=None, ge=0, le=27,
        description="BCM pin of the door contact (reed switch); null: none fitted (no held-open or forced-open alarms).",
    )
    contact_type: ContactType = Field(
        default="nc",
        description="nc: the contact is closed while the door is shut (usual; a cut wire then reads as door open); "
        "no: the contact closes when the door opens.",
    )
    held_open_s: float = Field(
        default=30.0, ge=2.0, le=3600.0, description="The door standing open this long raises the held-open alarm."
    )
    open_grace_s: float = Field(
        default=1.0, ge=0.0, le=10.0,
        description="The door may still open this long after the lock closed again (a slow push) without counting "
        "as forced open.",
    )
    tamper_pin: int | None = Field(
        default=None, ge=0, le=27, description="BCM pin of the enclosure's tamper switch (null: none fitted)."
    )
    tamper_contact: ContactType = Field(
        default="nc", description="nc: closed while the enclosure is shut (a cut wire reads as tamper); no: the reverse."
    )
    bounce_s: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Inputs ignore changes closer together than this (switch bounce)."
    )

    @model_validator(mode="after")
    def _distinct_pins(self) -> "DoorConfig":
        pins = {
            "relay_pin": self.relay_pin,
            "buzzer_pin": self.buzzer_pin,
            "green_led_pin": self.green_led_pin,
            "red_led_pin": self.red_led_pin,
            "exit_pin": self.exit_pin,
            "contact_pin": self.contact_pin,
            "tamper_pin": self.tamper_pin,
        }
        seen: dict[int, str] = {}
        for name, pin in pins.items():
            if pin is None:
                continue
            if pin in seen:
                raise ValueError(f"{name} and {seen[pin]} are both BCM {pin}; each device needs its own pin")
            seen[pin] = name
        return self


AccessMode = Literal["face", "qr", "face_or_qr", "qr_then_face"]


class AccessConfig(BaseModel):
    """How people get in: by face, by a signed QR credential, either, or a QR confirmed by the face (1:1)."""

    model_config = _STRICT

    mode: AccessMode = Field(
        default="face",
        description="face: 1:N face recognition; qr: a valid QR credential opens; face_or_qr: either one; "
        "qr_then_face: a valid QR names the worker, then the face must match that worker's encodings (1:1). "
        "Used until the server's station config arrives (set on the station's page; it then overrides this and "
        "is kept across restarts, docs/admin.md).",
    )
    qr_public_keys: list[str] = Field(
        default_factory=list, max_length=4,
        description="Ed25519 public keys (base64, from GET /api/credentials/public-key) whose QR credentials this "
        "station accepts; more than one only while the server's key is being replaced. Required unless mode is face.",
    )
    qr_repeat_s: float = Field(
        default=5.0, ge=1.0, le=60.0,
        description="A QR code seen again within this time of its last sighting is the same presentation (decided once).",
    )
    qr_face_s: float = Field(
        default=10.0, ge=2.0, le=60.0,
        description="qr_then_face: after a valid QR code, the worker's face must be verified within this time.",
    )
    clock_skew_s: float = Field(
        default=300.0, ge=0.0, le=86400.0,
        description="A credential issued up to this far ahead of the station's clock is accepted; further means the "
        "station clock is wrong (no NTP yet), and it is refused.",
    )
    qr_max_side: int = Field(
        default=1280, ge=320, le=4096, description="Frames are shrunk to this longest side before looking for QR codes."
    )
    unsigned_log_interval_s: float = Field(
        default=10.0, ge=0.0, le=3600.0,
        description="At most one recorded refusal per this many seconds for codes whose signature does not verify "
        "(forged or damaged: nobody to name); the door refuses every one regardless.",
    )

    @field_validator("qr_public_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            try:
                raw = base64.b64decode(key.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"{key[:60]!r} is not a base64 Ed25519 public key (32 bytes)")
        return [k.strip() for k in value]

    @model_validator(mode="after")
    def _keys_for_qr(self) -> "AccessConfig":
        if self.mode != "face" and not self.qr_public_keys:
            raise ValueError(
                f"mode {self.mode} needs qr_public_keys: copy the key from the server (GET /api/credentials/public-key)"
            )
        return self


class HealthConfig(BaseModel):
    """A small HTTP listener for monitoring (edge/health.py; docs/deploy.md, Health and monitoring)."""

    model_config = _STRICT

    enabled: bool = Field(default=True, description="Serve /healthz and /metrics over HTTP.")
    host: str = Field(
        default="127.0.0.1", min_length=1, max_length=253,
        description="Address the listener binds to. It has no authentication: another address than loopback "
        "exposes the metrics to that network (use a management or VPN address only your Prometheus reaches).",
    )
    port: int = Field(default=9108, ge=0, le=65535, description="TCP port of the listener (0: any free port).")
    stale_after_s: float = Field(
        default=10.0, ge=1.0, le=600.0,
        description="/healthz answers 503 when the frame loop took no frame for this many seconds "
        "(camera stalled, or the loop hung).",
    )


class EdgeSettings(BaseSettings):
    """Everything one station's agent needs."""

    model_config = SettingsConfigDict(
        env_prefix="WAYSTATION_EDGE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    station_id: str = Field(description="This station's id (a-z, 0-9, '-', '_'); it appears in every topic.")
    data_dir: Path = Field(default=Path("data/edge"), description="Folder of the station's SQLite file (edge.db).")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Connection to the MQTT broker.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Where frames come from.")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Face detection speed/size knobs.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="When the door opens.")
    liveness: LivenessConfig = Field(
        default_factory=LivenessConfig,
        description="The face must show it is live (a blink or a head movement) before a grant opens the door.",
    )
    door: DoorConfig = Field(default_factory=DoorConfig, description="GPIO pins and timings of the door.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Disk budget of the entry outbox and its alarm.")
    status: StatusConfig = Field(default_factory=StatusConfig, description="The station's heartbeat.")
    access: AccessConfig = Field(default_factory=AccessConfig, description="Station mode: face, QR, or both.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="/healthz and Prometheus /metrics.")
    snapshots: SnapshotConfig = Field(
        default_factory=SnapshotConfig,
        description="Small face pictures of refused attempts for the entry log (off by default: biometric data).",
    )

    @field_validator("station_id")
    @classmethod
    def _station_id(cls, value: str) -> str:
        return check_station_id(value)

    @model_validator(mode="after")
    def _default_client_id(self) -> "EdgeSettings":
        if self.mqtt.client_id is None:
            self.mqtt = self.mqtt.model_copy(update={"client_id": f"station-{self.station_id}"})
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment before init values (which carry the YAML file): see module docstring.
        return env_settings, init_settings, file_secret_settings

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "EdgeSettings":
        """Read a YAML file (plus the environment); raises ConfigError with every problem."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError([f"(file): {file}: cannot be read ({err.strerror or err})"]) from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError([f"(file): {file}: is not valid YAML ({err})"]) from err
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"(file): {file}: must hold a mapping of settings, not {type(data).__name__}"])
        return cls.build(**data)

    @classmethod
    def build(cls, **values: Any) -> "EdgeSettings":
        """Construct from values (plus the environment), turning validation errors into ConfigError."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise config_error(err) from err


def config_error(err: ValidationError) -> ConfigError:
    problems = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e.get("loc", ())) or "(settings)"
        value = e.get("input")
        if e.get("type") == "missing":
            shown = "(missing)"
        elif "password" in where:
            shown = "(hidden)"
        elif isinstance(value, (dict, list)):
            shown = "(see file)"
        else:
            shown = repr(value)
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {shown}: {msg}")
    return ConfigError(problems)
