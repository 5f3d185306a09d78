"""Edge settings: YAML plus environment, strict, bounded, documented; errors as key path, value, problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge.config import EdgeSettings
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("WAYSTATION_EDGE_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = EdgeSettings.build(station_id="depot-3")
    assert s.mqtt.host == "127.0.0.1" and s.mqtt.port == 1883 and s.mqtt.password is None
    assert s.mqtt.client_id == "station-depot-3"
    assert s.camera.source == "0" and s.camera.realtime is True
    assert (s.detection.scale, s.detection.upsample, s.detection.min_face_px) == (1.0, 0, 60)
    assert s.liveness.mode == "either"  # on: a grant opens the door only for a live face
    assert (s.policy.threshold, s.policy.margin, s.policy.frames_required) == (0.56, 0.105, 3)  # docs/accuracy.md
    assert (s.door.relay_pin, s.door.relay_active_high, s.door.unlock_s) == (17, True, 3.0)
    assert (s.door.buzzer_pin, s.door.green_led_pin, s.door.red_led_pin, s.door.beep_s) == (27, 22, 23, 0.1)


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, info))
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(_fields(ann, f"{prefix}{name}."))
    return out


def test_every_field_is_described_and_every_number_bounded() -> None:
    for path, info in _fields(EdgeSettings):
        assert info.description, f"{path} has no description"
        if info.annotation in (int, float):
            bounds = {type(m).__name__ for m in info.metadata}
            assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, f"{path} is not bounded: {info.metadata}"


def test_yaml_file_with_the_environment_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, """
station_id: depot-3
data_dir: /var/lib/waystation
mqtt: {host: broker.local, port: 8883, username: depot-3}
camera: {source: rtsp://cam/1, realtime: true}
policy: {threshold: 0.45, frames_required: 4}
door: {relay_active_high: false, unlock_s: 5}
""")
    monkeypatch.setenv("WAYSTATION_EDGE_MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("WAYSTATION_EDGE_POLICY__THRESHOLD", "0.42")
    s = EdgeSettings.load(path)
    assert s.mqtt.host == "broker.local" and s.mqtt.port == 8883 and s.mqtt.username == "depot-3"
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in s.model_dump_json()
    assert s.policy.threshold == 0.42 and s.policy.frames_required == 4  # env wins, the rest of the file stays
    assert s.door.relay_active_high is False and s.door.unlock_s == 5
    assert s.data_dir == Path("/var/lib/waystation")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("station_id: Depot/3\n", "station_id: 'Depot/3': station id 'Depot/3' is invalid"),
        ("station_id: s\npolicy: {threshold: 0.95}\n", "policy.threshold: 0.95: Input should be less than or equal to 0.8"),
        ("station_id: s\ndetection: {scale: 0}\n", "detection.scale: 0: Input should be greater than or equal to 0.1"),
        ("station_id: s\ndoor: {unlock_s: 30}\n", "door.unlock_s: 30: Input should be less than or equal to 10"),
        ("station_id: s\ncamera: {sorce: '0'}\n", "camera.sorce: '0': Extra inputs are not permitted"),
        ("station_id: s\nmqtt: {port: 0}\n", "mqtt.port: 0: Input should be greater than or equal to 1"),
        ("mqtt: {host: x}\n", "station_id: (missing): Field required"),
        ("station_id: s\ndoor: {green_led_pin: 17}\n", "green_led_pin and relay_pin are both BCM 17"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_problem(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        EdgeSettings.load(write(tmp_path, yaml_text))
    assert any(expected in line for line in err.value.problems), err.value.problems
    assert all(line.startswith("ConfigError: ") for line in err.value.lines())


def test_a_bad_password_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        EdgeSettings.load(write(tmp_path, "station_id: s\nmqtt: {password: [hunter2]}\n"))
    assert "hunter2" not in str(err.value) and "mqtt.password: (hidden)" in str(err.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "cannot be read"), ("station_id: [unclosed", "not valid YAML"), ("- a\n- b\n", "must hold a mapping")],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "edge.yaml" if content is None else write(tmp_path, content)
    with pytest.raises(ConfigError, match=expected):
        EdgeSettings.load(path)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WAYSTATION_EDGE_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=REPO, env=full, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, "station_id: depot-3\ncamera: {source: '0'}\n")
    done = run_cli("check-config", str(good))
    assert done.returncode == 0, done.stderr
    assert "ok: station depot-3" in done.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("station_id: depot-3\npolicy: {threshold: 0.95, frames_required: 0}\n")
    done = run_cli("check-config", str(bad))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "ConfigError: policy.threshold: 0.95: Input should be less than or equal to 0.8" in lines
    assert "ConfigError: policy.frames_required: 0: Input should be greater than or equal to 1" in lines

    done = run_cli("check-config", str(good), env={"WAYSTATION_EDGE_MQTT__PORT": "99999"})
    assert done.returncode == 2 and "ConfigError: mqtt.port: '99999':" in done.stderr


def test_a_missing_ca_file_is_a_named_config_error(tmp_path: Path) -> None:
    """A station whose bundle lacks ca.crt must exit 2 naming the key, not crash in the TLS set-up."""
    from edge.config import EdgeSettings
    from edge.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        EdgeSettings.build(station_id="s1", data_dir=tmp_path, mqtt={"tls_ca": str(tmp_path / "missing.crt")})
    assert "mqtt.tls_ca" in str(err.value) and "does not exist" in str(err.value)
