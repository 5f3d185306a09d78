"""The edge agent's settings: one typed, validated object, from a YAML file plus the environment.

Precedence, highest first: environment variables (``WAYSTATION_EDGE_`` prefix,
``__`` between nested keys, e.g. ``WAYSTATION_EDGE_MQTT__PASSWORD``), then the
YAML file (or constructor arguments), then the defaults. The environment wins
so that secrets never have to be written into the config file.

Every error is reported as ``key path: value: problem`` (see ConfigError).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge.errors import ConfigError
from edge.policy import PolicyConfig
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
    model_config = _STRICT

    scale: float = Field(
        default=0.5, ge=0.1, le=1.0,
        description="Detect faces on a frame shrunk by this factor (faster; HOG finds faces down to ~80 px after shrinking).",
    )
    upsample: int = Field(default=0, ge=0, le=2, description="HOG upsampling steps: finds smaller faces, 4x cost each.")
    min_face_px: int = Field(
        default=60, ge=20, le=2000,
        description="Faces smaller than this (full-frame pixels) are not encoded at all (saves time).",
    )


class DoorConfig(BaseModel):
    model_config = _STRICT

    relay_pin: int = Field(default=17, ge=0, le=27, description="BCM pin driving the lock relay.")
    relay_active_high: bool = Field(
        default=True, description="false for the common active-low relay boards (relay on when the pin is low)."
    )
    unlock_s: float = Field(default=3.0, ge=1.0, le=10.0, description="Seconds the lock stays released after a grant.")
    buzzer_pin: int = Field(default=27, ge=0, le=27, description="BCM pin of the buzzer.")
    green_led_pin: int = Field(default=22, ge=0, le=27, description="BCM pin of the green (granted) LED.")
    red_led_pin: int = Field(default=23, ge=0, le=27, description="BCM pin of the red (denied) LED.")
    beep_s: float = Field(default=0.1, ge=0.02, le=2.0, description="Length of one beep in seconds.")
    deny_led_s: float = Field(default=1.0, ge=0.1, le=10.0, description="Seconds the red LED stays lit after a denial.")

    @model_validator(mode="after")
    def _distinct_pins(self) -> "DoorConfig":
        pins = {
            "relay_pin": self.relay_pin,
            "buzzer_pin": self.buzzer_pin,
            "green_led_pin": self.green_led_pin,
            "red_led_pin": self.red_led_pin,
        }
        seen: dict[int, str] = {}
        for name, pin in pins.items():
            if pin in seen:
                raise ValueError(f"{name} and {seen[pin]} are both BCM {pin}; each device needs its own pin")
            seen[pin] = name
        return self


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
    door: DoorConfig = Field(default_factory=DoorConfig, description="GPIO pins and timings of the door.")

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
