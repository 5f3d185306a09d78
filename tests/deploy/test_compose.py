"""deploy/compose: the compose file's structure, its secrets, its image's contents, and init.sh for real.

Docker cannot run here, so compose.yaml is checked as data (the rules that matter: no password
in the file, every port but the broker's TLS port bound to 127.0.0.1, the migration before the
server), the Dockerfile's COPY list is checked by running the server from a folder holding only
what it copies, and init.sh runs for real: its certificate and password file must let a TLS
client log in to Debian's mosquitto started with the compose broker config.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from core.broker import free_port
from core.mqtt import MqttLink, MqttSettings
from tests.support.services import need, wait_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
SECRET_KEY = re.compile(r"(PASSWORD|TOKEN|SECRET)$", re.I)  # a value, not a *_PASSWORD_FILE path
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_services_and_order(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "mosquitto", "migrate", "server"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["server"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["python", "-m", "server", "migrate"]
    assert services["server"]["command"] == ["python", "-m", "server", "run"]
    for name in ("postgres", "mosquitto", "server"):
        assert services[name]["restart"] == "unless-stopped"
    build = services["migrate"]["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == (COMPOSE / "Dockerfile").resolve()


def test_only_the_broker_tls_port_is_open_beyond_loopback(compose: dict) -> None:
    open_ports = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            parts = str(port).split(":")
            if len(parts) == 3:
                assert parts[0] == "127.0.0.1", f"{name}: {port}"
            else:
                open_ports.append((name, port))
    assert open_ports == [("mosquitto", "8883:8883")]


def test_no_secret_is_written_in_the_file(compose: dict) -> None:
    """Every secret is a required variable from .env: compose refuses to start without it."""
    checked = 0
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_KEY.search(key) or "DATABASE_URL" in key:
                secret_part = re.sub(r"^postgresql\+psycopg://waystation:", "", str(value)).split("@")[0]
                assert REQUIRED_VAR.fullmatch(secret_part), f"{name}.{key} holds a literal: {value}"
                checked += 1
    assert checked >= 6


def _run_init(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(COMPOSE / "init.sh"), "--dir", str(folder), *args], capture_output=True, text=True,
                          timeout=120)


def test_init_writes_every_variable_compose_requires(compose: dict, tmp_path: Path) -> None:
    need(shutil.which("openssl") is not None, "openssl")
    need(shutil.which("mosquitto_passwd") is not None, "Debian's mosquitto (mosquitto_passwd)")
    done = _run_init(tmp_path, "--broker-name", "broker.example.org")
    assert done.returncode == 0, done.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#"))
    required = set(REQUIRED_VAR.findall((COMPOSE / "compose.yaml").read_text()))
    assert required <= set(values), required - set(values)
    secrets = [values[k] for k in values if SECRET_KEY.search(k)]
    assert len(set(secrets)) == len(secrets) and all(len(s) >= 40 for s in secrets)  # random, distinct, long
    assert values["WAYSTATION_BROKER_NAME"] == "broker.example.org"
    # What compose mounts from the host exists after init.
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (tmp_path / source).exists(), volume
    # A second run keeps the secrets.
    again = _run_init(tmp_path, "--broker-name", "other.example.org")
    assert again.returncode == 0 and env_file.read_text().count("broker.example.org") == 1


def test_init_broker_files_work_with_the_compose_broker_config(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    need(Path(exe).exists() and shutil.which("mosquitto_passwd") is not None, "Debian's mosquitto")
    assert _run_init(tmp_path, "--broker-name", "broker.example.org").returncode == 0
    broker = tmp_path / "mosquitto"
    port = free_port()
    conf = (broker / "mosquitto.conf").read_text().replace("/etc/mosquitto/waystation/", f"{broker}/")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/data/").replace("listener 8883", f"listener {port} 127.0.0.1")
    (tmp_path / "data").mkdir()
    (tmp_path / "test.conf").write_text("user root\n" + conf)
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "test.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert wait_port("127.0.0.1", port, 10), proc.stdout.read() if proc.poll() is not None else "no port"
        password = next(line.split("=", 1)[1] for line in (tmp_path / ".env").read_text().splitlines()
                        if line.startswith("WAYSTATION_MQTT_PASSWORD="))

        def connects(pw: str) -> bool:
            link = MqttLink(MqttSettings(port=port, username="waystation.server", password=pw,
                                         tls_ca=str(broker / "ca.crt"), client_id=f"t-{uuid.uuid4().hex[:6]}",
                                         clean_start=True))
            link.start()
            try:
                return link.wait_connected(5)
            finally:
                link.stop()

        assert connects(password)  # the certificate names 127.0.0.1 and verifies against the CA init made
        assert not connects(password + "x")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_dockerfile_copies_everything_the_server_imports(tmp_path: Path) -> None:
    """Run the server's code from a folder holding only what the Dockerfile copies."""
    copies = re.findall(r"^COPY (\S+) (\S+)$", (COMPOSE / "Dockerfile").read_text(), re.M)
    assert copies
    app = tmp_path / "app"
    for source, dest in copies:
        src = REPO / source
        assert src.exists(), f"COPY {source}: not in the repository"
        target = app / (dest if dest != "./" else src.name)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(app), "WAYSTATION_SERVER_API_TOKEN": "t" * 32,
           "WAYSTATION_SERVER_DATA_DIR": str(tmp_path / "data")}
    code = ("import server.runtime, server.provision, server.web, server.api\n"
            "from server.api import create_app\n"
            "import core.i18n; core.i18n.translator('zh_CN')\n")
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    migrated = subprocess.run([sys.executable, "-m", "server", "migrate"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "database schema is up to date" in migrated.stdout
