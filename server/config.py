"""Settings of the central server.

Values come, highest priority first, from: keyword arguments, environment
variables ``WAYSTATION_SERVER_<FIELD>`` (e.g. ``WAYSTATION_SERVER_API_TOKEN``),
then the YAML file given to :meth:`ServerSettings.load` (keys are the field
names). Relative paths are relative to the working directory.

Binding: the HTTP API listens on 127.0.0.1 by default. Setting ``http_host`` to
another address (``0.0.0.0`` to serve the LAN) exposes the API to the network;
every ``/api`` route except ``/api/health`` then still requires the bearer
token, which is why ``api_token`` has no default and must be long. Put a
TLS-terminating reverse proxy in front when the network is not trusted.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from sqlalchemy.engine import URL

from models.messages import MAX_CHANGES_PER_REPLY
from server.errors import ConfigError

ENV_PREFIX = "WAYSTATION_SERVER_"
MIN_TOKEN_CHARS = 16
TOKEN_HINT = (
    f"set the environment variable {ENV_PREFIX}API_TOKEN or `api_token:` in the config file "
    f"to a random string of at least {MIN_TOKEN_CHARS} characters, e.g. the output of "
    "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`"
)

# The YAML file for the ServerSettings being built (set only inside load()).
_yaml_file: ContextVar[Path | None] = ContextVar("_yaml_file", default=None)


class RetentionSettings(BaseModel):
    """The retention settings (server/retention.py); ServerSettings inherits them."""

    model_config = ConfigDict(extra="forbid")

    retention_entries_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Entries older than this many days are purged or anonymised (retention_mode); unset: kept",
    )
    retention_mode: Literal["purge", "anonymise"] = Field(
        default="anonymise",
        description=(
            'What happens to old entries: "purge" deletes them; "anonymise" removes the worker and the reason\'s '
            "names and ids but keeps the row for usage statistics"
        ),
    )
    retention_snapshots_days: int | None = Field(
        default=30,
        ge=1,
        le=3650,
        description="Denied-attempt snapshots older than this many days are deleted; unset: kept",
    )
    retention_interval_s: float = Field(
        default=3600.0,
        ge=1.0,
        le=7 * 86400.0,
        description="Seconds between two retention runs (the first runs at start)",
    )
    retention_batch_size: int = Field(
        default=5000, ge=10, le=100_000, description="Rows changed per transaction by retention (short locks)"
    )


class ServerSettings(BaseSettings, RetentionSettings):
    """Everything the server process needs; see the module docstring for sources."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    data_dir: Path = Field(default=Path("data"), description="Folder for the default SQLite database")
    database_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2000,
        repr=False,  # may hold a password
        description=(
            "SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db; default: the SQLite file data_dir/server.db"
        ),
    )
    database_wait_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="At start, keep retrying a database that is not up yet for this long before giving up",
    )
    http_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=255,
        description="Address the HTTP API binds to; loopback by default (see the module docstring before changing it)",
    )
    http_port: int = Field(default=8080, ge=1, le=65535, description="TCP port of the HTTP API")
    api_token: SecretStr = Field(
        description=f"Bearer token every /api request must carry (except /api/health); no default: {TOKEN_HINT}",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "Optional bearer token for GET /metrics only, so that Prometheus need not hold api_token; unset: "
            f"/metrics takes api_token alone. At least {MIN_TOKEN_CHARS} characters (docs/deploy.md, Health)"
        ),
    )
    mqtt_host: str = Field(default="127.0.0.1", min_length=1, max_length=255, description="MQTT broker host")
    mqtt_port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port")
    mqtt_username: str | None = Field(default=None, min_length=1, max_length=256, description="MQTT user name")
    mqtt_password: SecretStr | None = Field(default=None, description="MQTT password (from the environment or a file)")
    mqtt_tls_ca: Path | None = Field(default=None, description="CA certificate file; set it to connect with TLS")
    mqtt_client_id: str = Field(
        default="waystation-server",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Fixed MQTT client id: the broker keeps this persistent session's queue while the server is down",
    )
    # -- sync issue: ingest scale-out, broker credentials for provisioning ------------------
    mqtt_protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description='MQTT protocol version; "5" is needed for mqtt_shared_group'
    )
    mqtt_shared_group: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            "Run several ingest processes as one MQTT 5 shared subscription group ($share/<group>/...): each "
            "message goes to one of them. Every process needs its own mqtt_client_id"
        ),
    )
    ingest_batch_max: int = Field(
        default=200, ge=1, le=5000, description="Most entry events stored in one database transaction"
    )
    mqtt_password_file: Path | None = Field(
        default=None,
        description="The broker's password file (mosquitto_passwd format); `provision` adds station credentials to it",
    )
    station_mqtt_host: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Broker host as stations reach it, written into provisioned edge configs; default: mqtt_host",
    )
    station_mqtt_port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port for stations (8883 with TLS); default: mqtt_port"
    )
    sync_page_size: int = Field(
        default=100,
        ge=1,
        le=MAX_CHANGES_PER_REPLY,
        description="Most gallery changes in one sync reply page (pages are also kept under the payload limit)",
    )
    max_photo_bytes: int = Field(
        default=15 * 1024 * 1024,
        ge=1024,
        le=30 * 1024 * 1024,
        description="Largest enrollment photo accepted, in bytes",
    )
    enroll_max_side: int = Field(
        default=1600,
        ge=320,
        le=8000,
        description="Enrollment photos are shrunk to this longest side before face detection (speed; faces stay large)",
    )
    # -- admin web app (issue 7) ---------------------------------------------------------------
    cookie_secure: bool = Field(
        default=True,
        description=(
            "Send the sign-in cookie only over HTTPS. Browsers treat http://127.0.0.1 and localhost as secure, "
            "so this stays on behind a TLS proxy and on loopback; turn it off only for a test on a plain-HTTP LAN"
        ),
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="A web sign-in expires after this many hours"
    )
    login_window_s: int = Field(
        default=900, ge=10, le=86400, description="Failed sign-ins are counted over this many seconds"
    )
    login_max_per_user: int = Field(
        default=5, ge=1, le=1000, description="Failed sign-ins for one user name within the window before refusing"
    )
    login_max_per_address: int = Field(
        default=20, ge=1, le=100000, description="Failed sign-ins from one address within the window before refusing"
    )
    @field_validator("api_token", "metrics_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            name = info.field_name or "api_token"
            hint = TOKEN_HINT.replace("API_TOKEN", name.upper()).replace("api_token", name)
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters: {hint}")
        return value

    @field_validator("mqtt_tls_ca")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA certificate {value} does not exist")
        return value

    @model_validator(mode="after")
    def _shared_needs_v5(self) -> "ServerSettings":
        if self.mqtt_shared_group and self.mqtt_protocol != "5":
            raise ValueError('mqtt_shared_group needs mqtt_protocol "5" (shared subscriptions are an MQTT 5 feature)')
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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_file.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> "ServerSettings":
        """Build the settings from ``path`` (YAML, optional) and the environment.

        Raises :class:`ConfigError` listing every bad key with its problem.
        """
        if path is not None:
            _check_yaml(path)
        token = _yaml_file.set(path)
        try:
            return cls(**overrides)
        except ValidationError as err:
            raise config_error(err) from None
        finally:
            _yaml_file.reset(token)

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file ``data_dir/server.db``."""
        if self.database_url:
            return self.database_url
        return URL.create("sqlite", database=str((self.data_dir / "server.db").resolve())).render_as_string()


def _check_yaml(path: Path) -> None:
    """Refuse a missing, unreadable or non-mapping YAML file with a clear message."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError([("config", f"cannot read {path}: {err.strerror or err}")]) from None
    except yaml.YAMLError as err:
        raise ConfigError([("config", f"{path} is not valid YAML: {err}".replace("\n", " "))]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError([("config", f"{path} must hold a mapping of setting: value")])


def config_error(err: ValidationError) -> ConfigError:
    """Turn pydantic's errors into ``(key, problem)`` pairs a person can act on."""
    problems: list[tuple[str, str]] = []
    for item in err.errors(include_url=False):
        key = ".".join(str(p) for p in item.get("loc", ())) or "(settings)"
        if item["type"] == "missing":
            hint = TOKEN_HINT if key == "api_token" else f"set {ENV_PREFIX}{key.upper()} or `{key}:` in the config file"
            problem = f"required: {hint}"
        elif item["type"] == "extra_forbidden":
            problem = "unknown setting (check the spelling)"
        else:
            problem = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            if "input" in item and key not in {"api_token", "metrics_token", "mqtt_password"}:
                problem += f" (got {str(item['input'])[:80]!r})"
        problems.append((key, problem))
    return ConfigError(problems)
