"""deploy/edge/install.sh end to end, in a Debian 12 system made by debootstrap.

The installer runs as root in the chroot exactly as an installer would run it on a station:
apt packages (the chroot's own apt, packages from Debian), the service user, the code, a venv
with the real requirements (offline, from a wheelhouse made by deploy/wheelhouse.sh), and a
provisioning bundle made by the real ``python -m server provision``. This machine is no
Raspberry Pi, so the Pi-only steps must be skipped *and said so*. Then the installed agent is
checked with its own ``check-config`` and finally started, as the service user with the
installed config, against Debian's mosquitto (TLS, passwords, the deploy/ ACL) and the real
server: the station must show online in the server's API, and offline once stopped.

Needs root, debootstrap and network access to Debian's mirror and PyPI on the first run
(everything downloaded is cached, see tests/deploy/chroot.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from core.broker import free_port
from edge.__main__ import EXIT_CONFIG
from tests.deploy.chroot import REPO, Chroot, wheelhouse
from tests.support.services import Mosquitto, make_pki, need

pytestmark = [pytest.mark.broker, pytest.mark.timeout(1800)]

STATION = "st-deploy-01"
SERVER_USER = "waystation.server"
TOKEN = "deploy-test-token-0123456789abcdef"
SRC = "/root/waystation"  # where the repository is copied inside the chroot
# The service user with its groups, as systemd starts the unit. setpriv execs the command (runuser
# would stay in between as the parent), so signals reach the agent and its exit status is its own.
AS_AGENT = ["setpriv", "--reuid=waystation", "--regid=waystation", "--init-groups", "--"]


@dataclass
class Installed:
    chroot: Chroot
    first: subprocess.CompletedProcess[str]
    bundle: Path
    mosquitto: Mosquitto
    server_password: str
    server_data: Path
    ca_cert: Path
    seconds: float


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    need(os.geteuid() == 0, "root (debootstrap, chroot and mount)")
    need(shutil.which("debootstrap") is not None, "debootstrap (apt-get install debootstrap)")
    need(shutil.which("mosquitto_passwd") is not None, "Debian's mosquitto (mosquitto_passwd, for provision)")
    work = Path(tempfile.mkdtemp(prefix="waystation-deploy-", dir="/var/tmp"))
    chroot = Chroot(work / "root")
    try:
        t0 = time.monotonic()
        wheels = wheelhouse("x86_64", chroot.timings, sys.executable)
        chroot.build()
        chroot.copy_repo(SRC)
        chroot.bind(wheels, "/root/wheelhouse", read_only=True)

        # The server side: broker credentials and a provisioned station, with the real command.
        pki = make_pki(work / "pki")
        password_file = work / "passwd"
        password_file.touch(mode=0o600)
        server_password = uuid.uuid4().hex
        subprocess.run(["mosquitto_passwd", str(password_file), SERVER_USER], input=f"{server_password}\n" * 2,
                       text=True, check=True, capture_output=True)
        mosquitto = Mosquitto.secure(work / "broker", pki, password_file=password_file,
                                     acl_file=REPO / "deploy/mosquitto/acl")
        server_data = work / "server"
        env = {**os.environ, "PYTHONPATH": str(REPO), "WAYSTATION_SERVER_API_TOKEN": TOKEN,
               "WAYSTATION_SERVER_DATA_DIR": str(server_data),
               "WAYSTATION_SERVER_MQTT_PASSWORD_FILE": str(password_file),
               "WAYSTATION_SERVER_MQTT_TLS_CA": str(pki.ca_cert),
               "WAYSTATION_SERVER_STATION_MQTT_HOST": "127.0.0.1",
               "WAYSTATION_SERVER_STATION_MQTT_PORT": str(mosquitto.port)}
        bundle = work / "bundle"
        made = subprocess.run([sys.executable, "-m", "server", "provision", STATION, "--out", str(bundle)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        chroot.copy_in(bundle, "/root/bundle")

        t1 = time.monotonic()
        first = chroot.run([f"{SRC}/deploy/edge/install.sh", "--bundle", "/root/bundle",
                            "--wheelhouse", "/root/wheelhouse"], timeout=1500)
        chroot.timings.append(f"install.sh, first run: {time.monotonic() - t1:.0f} s")
        chroot.timings += [f"  step {t}" for t in re.findall(r"^install: \((.+ took \d+ s)\)$", first.stdout, re.M)]
        assert first.returncode == 0, f"install.sh failed ({first.returncode}):\n{first.stdout}\n{first.stderr}"
        yield Installed(chroot, first, bundle, mosquitto, server_password, server_data, pki.ca_cert,
                        time.monotonic() - t0)
        mosquitto.stop()
    finally:
        chroot.close()
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(["deploy chroot timings:", *chroot.timings]))


def _stat(chroot: Chroot, path: str) -> str:
    out = chroot.run(["stat", "-c", "%U:%G %a", path])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _bundle_env(bundle: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (bundle / "station.env").read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def _as_agent(chroot: Chroot, args: list[str], bundle: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A command as the service user, with the unit's environment (PYTHONPATH, station.env)."""
    return chroot.run(
        [*AS_AGENT, "/opt/waystation/venv/bin/python", *args],
        env={"PYTHONPATH": "/opt/waystation/app", **_bundle_env(bundle), **env}, cwd="/var/lib/waystation",
    )


def test_installs_and_reports_the_skipped_pi_steps(installed: Installed) -> None:
    out = installed.first.stdout
    skipped = re.findall(r"^install: skipped \(not a Raspberry Pi\): (.+)$", out, re.M)
    assert any("python3-picamera2" in s for s in skipped), out
    assert any("hardware watchdog" in s for s in skipped), out
    assert any("simplejpeg" in s for s in skipped), out
    # ...and repeated in the summary, where an installer looks last.
    summary = out.split("== Summary", 1)[1]
    assert summary.count("skipped (not a Raspberry Pi):") == len(skipped)
    assert "done:    the face stack and the agent's modules import" in summary
    assert "systemd is not running here" in out  # a chroot: enabled, not started, and it says so


def test_user_folders_and_modes(installed: Installed) -> None:
    c = installed.chroot
    ident = c.run(["id", "waystation"]).stdout
    assert "(gpio)" in ident and "(video)" in ident, ident
    assert c.run(["getent", "passwd", "waystation"]).stdout.strip().endswith(":/var/lib/waystation:/usr/sbin/nologin")
    assert _stat(c, "/etc/waystation") == "root:waystation 750"
    assert _stat(c, "/etc/waystation/station.yaml") == "root:waystation 640"
    assert _stat(c, "/etc/waystation/ca.crt") == "root:waystation 640"
    assert _stat(c, "/etc/waystation/station.env") == "root:root 600"  # systemd reads it as root
    assert _stat(c, "/var/lib/waystation") == "waystation:waystation 750"
    assert _stat(c, "/opt/waystation/app") == "root:root 755"
    assert "include-system-site-packages = true" in c.path("/opt/waystation/venv/pyvenv.cfg").read_text()
    assert not c.path("/opt/waystation/app/tests").exists()
    wants = c.path("/etc/systemd/system/multi-user.target.wants/waystation-edge.service")
    assert wants.is_symlink() and c.path(str(wants.readlink())).is_file(), "the unit is not enabled"
    assert c.path("/etc/systemd/journald.conf.d/waystation.conf").is_file()


def test_bundle_paths_are_made_local(installed: Installed) -> None:
    c = installed.chroot
    config = yaml.safe_load(c.path("/etc/waystation/station.yaml").read_text())
    assert config["station_id"] == STATION
    assert config["mqtt"]["tls_ca"] == "/etc/waystation/ca.crt"  # the server wrote its own temporary path
    assert config["data_dir"] == "/var/lib/waystation"  # the one folder the unit lets the agent write
    assert c.path("/etc/waystation/ca.crt").read_bytes() == (installed.bundle / "ca.crt").read_bytes()
    assert c.path("/etc/waystation/station.env").read_text() == (installed.bundle / "station.env").read_text()


def test_check_config_accepts_the_bundle_and_names_a_bad_key(installed: Installed) -> None:
    c = installed.chroot
    good = _as_agent(c, ["-m", "edge", "check-config", "/etc/waystation/station.yaml"], installed.bundle)
    assert good.returncode == 0, good.stderr
    assert f"ok: station {STATION}" in good.stdout
    assert "broker 127.0.0.1:" in good.stdout

    bad = yaml.safe_load(c.path("/etc/waystation/station.yaml").read_text())
    bad["door"] = {"relay_pin": 40}
    bad["camra"] = {"source": "0"}
    c.path("/var/lib/waystation/bad.yaml").write_text(yaml.safe_dump(bad))
    refused = _as_agent(c, ["-m", "edge", "check-config", "/var/lib/waystation/bad.yaml"], installed.bundle)
    assert refused.returncode == EXIT_CONFIG == 2
    assert "ConfigError: camra: " in refused.stderr, refused.stderr
    assert "ConfigError: door.relay_pin: 40: " in refused.stderr, refused.stderr


def test_installed_unit_passes_systemd_analyze_verify(installed: Installed) -> None:
    """Inside the installed system, where the venv, the user and the config really exist."""
    result = installed.chroot.run(["systemd-analyze", "verify", "/etc/systemd/system/waystation-edge.service"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_rerun_upgrades_and_a_bad_bundle_replaces_nothing(installed: Installed, tmp_path: Path) -> None:
    c = installed.chroot
    before = hashlib.sha256(c.path("/etc/waystation/station.yaml").read_bytes()).hexdigest()
    bad = c.path("/root/bad-bundle")
    shutil.copytree(installed.bundle, bad)
    config = yaml.safe_load((bad / "station.yaml").read_text())
    config["policy"] = {"threshold": 3.0}
    (bad / "station.yaml").write_text(yaml.safe_dump(config))
    t0 = time.monotonic()
    rerun = c.run([f"{SRC}/deploy/edge/install.sh", "--bundle", "/root/bad-bundle", "--wheelhouse", "/root/wheelhouse"])
    c.timings.append(f"install.sh, second run (upgrade, bad bundle): {time.monotonic() - t0:.0f} s")
    assert rerun.returncode == 3, rerun.stdout + rerun.stderr
    assert "exists (Python 3.11): upgrading it" in rerun.stdout
    assert "ConfigError: policy.threshold: 3.0: " in rerun.stderr
    assert "nothing in /etc/waystation was changed" in rerun.stderr
    assert hashlib.sha256(c.path("/etc/waystation/station.yaml").read_bytes()).hexdigest() == before
    assert not list(c.path("/etc/waystation").glob(".bundle.*")), "the staging folder was left behind"


def _station(api: str) -> dict:
    reply = httpx.get(f"{api}/api/stations", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5, trust_env=False)
    reply.raise_for_status()
    return next(s for s in reply.json()["items"] if s["station_id"] == STATION)


def _wait(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_installed_agent_comes_online_on_the_server(installed: Installed) -> None:
    """The installed agent, its installed config and the bundle's password: online over TLS, then offline."""
    import cv2
    import numpy as np

    from server.config import ServerSettings
    from server.runtime import ServerRuntime

    c = installed.chroot
    frames = c.path("/var/lib/waystation/frames")
    frames.mkdir()
    rng = np.random.default_rng(8)
    for i in range(600):  # two minutes at 5 fps: far longer than the test waits
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    installed.mosquitto.start()
    settings = ServerSettings(
        api_token=TOKEN, data_dir=installed.server_data, http_port=free_port(), mqtt_port=installed.mosquitto.port,
        mqtt_username=SERVER_USER, mqtt_password=installed.server_password, mqtt_tls_ca=installed.ca_cert,
    )
    with ServerRuntime(settings) as server:
        assert _station(server.url)["online"] is False
        agent = c.popen(
            [*AS_AGENT, "/opt/waystation/venv/bin/python", "-m", "edge", "run",
             "--config", "/etc/waystation/station.yaml"],
            env={"PYTHONPATH": "/opt/waystation/app", "GPIOZERO_PIN_FACTORY": "mock",
                 "WAYSTATION_EDGE_CAMERA__SOURCE": "/var/lib/waystation/frames", "WAYSTATION_EDGE_CAMERA__FPS": "5",
                 **_bundle_env(installed.bundle)},
            cwd="/var/lib/waystation",
        )
        try:
            _wait(lambda: _station(server.url)["online"] or agent.poll() is not None, 120, "the station to go online")
            assert agent.poll() is None, f"the agent exited ({agent.returncode}):\n{agent.stdout.read()}"
            assert _station(server.url)["online"] is True
            # Its database went where the installer pointed data_dir, owned by the service user.
            assert _stat(c, "/var/lib/waystation/edge.db").startswith("waystation:waystation ")
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGTERM)
            output = agent.communicate(timeout=60)[0]
        assert agent.returncode == 0, output
        assert "MQTT connected to 127.0.0.1" in output
        _wait(lambda: _station(server.url)["online"] is False, 30, "the station to show offline after SIGTERM")
