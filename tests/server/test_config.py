"""Server settings: required secret, bounds, YAML file + environment, and the CLI's error lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.config import ServerSettings
from server.errors import ConfigError

from .conftest import TOKEN

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read WAYSTATION_SERVER_*; the developer's own environment must not leak in."""
    import os

    for key in list(os.environ):
        if key.startswith("WAYSTATION_SERVER_"):
            monkeypatch.delenv(key)


def test_missing_token_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(None)
    (key, problem), = info.value.problems
    assert key == "api_token"
    assert "WAYSTATION_SERVER_API_TOKEN" in problem and "16" in problem


def test_short_token_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(None, api_token="tooshort-secret")
    assert info.value.problems[0][0] == "api_token"
    assert "tooshort-secret" not in str(info.value)


def test_yaml_file_then_environment_overrides_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(f"api_token: {TOKEN}\nhttp_port: 9001\nmqtt_port: 1999\nsync_page_size: 5\n")
    monkeypatch.setenv("WAYSTATION_SERVER_MQTT_PORT", "2883")
    settings = ServerSettings.load(path)
    assert settings.http_port == 9001
    assert settings.mqtt_port == 2883  # the environment wins over the file
    assert settings.sync_page_size == 5
    assert settings.api_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)


def test_defaults_bind_loopback_and_use_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = ServerSettings.load(None, api_token=TOKEN, data_dir=tmp_path / "d")
    assert settings.http_host == "127.0.0.1" and settings.mqtt_host == "127.0.0.1"
    url = sa.make_url(settings.resolved_database_url)
    assert url.get_backend_name() == "sqlite"
    assert Path(url.database or "") == (tmp_path / "d" / "server.db").resolve()


def test_every_bad_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(f"api_token: {TOKEN}\nhttp_port: 70000\nsync_page_size: 201\nmqtt_prot: 1883\n")
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(path)
    keys = {key for key, _ in info.value.problems}
    assert keys == {"http_port", "sync_page_size", "mqtt_prot"}


@pytest.mark.parametrize("text", ["- a list\n- not a mapping\n", "key: [unclosed\n"])
def test_config_file_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(path)
    assert info.value.problems[0][0] == "config"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ServerSettings.load(tmp_path / "nope.yaml")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_SERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_config_errors_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text("http_port: 0\n")
    result = _cli("migrate", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("ConfigError: api_token: required") for line in lines), result.stderr
    assert any(line.startswith("ConfigError: http_port: ") for line in lines), result.stderr
    assert not (tmp_path / "data").exists()


def test_cli_migrate_creates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n")
    result = _cli("migrate", "--config", str(path), env={"WAYSTATION_SERVER_API_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'server.db'}")
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert {"stations", "workers", "face_samples", "gallery_changes", "entries"} <= tables
    finally:
        engine.dispose()
