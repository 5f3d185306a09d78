"""deploy/server/install.sh end to end, in a Debian 12 system made by debootstrap.

The installer runs in the chroot as on a fresh server, with SQLite (PostgreSQL needs its
cluster running, which needs systemd; the PostgreSQL side of the server is covered by the
backup/restore tests and the CI suite). Then, inside the installed system, everything an
installer does next: Debian's mosquitto with the installed configuration (it drops to its
`mosquitto` user, so the file modes are really tested), `waystation-server provision` as the
service user (mosquitto_passwd writing in the broker's folder), `create-admin`, and the server
itself connecting to the broker over TLS with the certificate the installer made. Only the
ports are moved (free ones, on 127.0.0.1): the test must not take 8883 or 8080 on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.broker import free_port
from core.mqtt import MqttLink, MqttSettings
from tests.deploy.chroot import Chroot, wheelhouse
from tests.support.services import need, wait_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(1800)]

SRC = "/root/waystation"
BROKER = "broker.test"


@dataclass
class Installed:
    chroot: Chroot
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    need(os.geteuid() == 0, "root (debootstrap, chroot and mount)")
    need(shutil.which("debootstrap") is not None, "debootstrap (apt-get install debootstrap)")
    work = Path(tempfile.mkdtemp(prefix="waystation-deploy-", dir="/var/tmp"))
    chroot = Chroot(work / "root")
    try:
        wheels = wheelhouse("x86_64", chroot.timings, sys.executable)
        chroot.build()
        chroot.copy_repo(SRC)
        chroot.bind(wheels, "/root/wheelhouse", read_only=True)
        t0 = time.monotonic()
        first = chroot.run([f"{SRC}/deploy/server/install.sh", "--broker-name", BROKER, "--database", "sqlite",
                            "--wheelhouse", "/root/wheelhouse"], timeout=1500)
        chroot.timings.append(f"server install.sh: {time.monotonic() - t0:.0f} s")
        chroot.timings += [f"  step {t}" for t in re.findall(r"^install: \((.+ took \d+ s)\)$", first.stdout, re.M)]
        assert first.returncode == 0, f"install.sh failed ({first.returncode}):\n{first.stdout}\n{first.stderr}"
        yield Installed(chroot, first)
    finally:
        chroot.close()
        shutil.rmtree(work, ignore_errors=True)
        print("\n".join(["server chroot timings:", *chroot.timings]))


def _stat(chroot: Chroot, path: str) -> str:
    out = chroot.run(["stat", "-c", "%U:%G %a", path])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_installs_migrates_and_says_what_next(installed: Installed) -> None:
    out = installed.first.stdout
    assert "systemd is not running here" in out
    assert "done:    database schema migrated" in out
    assert "sudo waystation-server create-admin admin" in out
    assert "skipped" not in out  # nothing Pi-specific on a server
    assert _stat(installed.chroot, "/var/lib/waystation/server.db").startswith("waystation:waystation")


def test_secrets_and_modes(installed: Installed) -> None:
    c = installed.chroot
    assert _stat(c, "/etc/waystation/server.yaml") == "root:waystation 640"
    assert _stat(c, "/etc/waystation/server.env") == "root:waystation 640"
    env = dict(line.split("=", 1) for line in c.path("/etc/waystation/server.env").read_text().splitlines())
    assert set(env) == {"WAYSTATION_SERVER_API_TOKEN", "WAYSTATION_SERVER_MQTT_PASSWORD"}
    assert all(len(v) >= 40 for v in env.values()) and len(set(env.values())) == 2
    assert _stat(c, "/etc/mosquitto/waystation") == "root:waystation 1771"
    assert _stat(c, "/etc/mosquitto/waystation/passwd") == "waystation:mosquitto 640"
    assert _stat(c, "/etc/mosquitto/waystation/server.key") == "root:mosquitto 640"
    assert _stat(c, "/etc/mosquitto/waystation/ca.key") == "root:root 600"
    assert c.path("/etc/mosquitto/waystation/passwd").read_text().startswith("waystation.server:")
    cert = c.run(["openssl", "x509", "-in", "/etc/mosquitto/waystation/server.crt", "-noout", "-ext", "subjectAltName"])
    assert f"DNS:{BROKER}" in cert.stdout and "IP Address:127.0.0.1" in cert.stdout, cert.stdout
    for unit in ("waystation-server.service", "mosquitto.service"):
        link = c.path(f"/etc/systemd/system/multi-user.target.wants/{unit}")  # its target is a path inside the chroot
        assert link.is_symlink() and c.path(str(link.readlink())).is_file(), f"{unit} is not enabled"


def test_installed_units_verify(installed: Installed) -> None:
    for unit in ("waystation-server.service", "waystation-migrate.service", "mosquitto.service"):
        # --man=no: minbase has no manual pages for the Documentation=man: links of Debian's mosquitto unit.
        result = installed.chroot.run(["systemd-analyze", "verify", "--man=no", unit])
        assert result.returncode == 0 and result.stderr.strip() == "", f"{unit}: {result.stderr}"


def test_rerun_keeps_the_secrets(installed: Installed) -> None:
    c = installed.chroot
    before = c.path("/etc/waystation/server.env").read_text(), c.path("/etc/mosquitto/waystation/ca.crt").read_text()
    again = c.run([f"{SRC}/deploy/server/install.sh", "--database", "sqlite", "--wheelhouse", "/root/wheelhouse"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept the secrets" in again.stdout and "kept the broker certificate" in again.stdout
    after = c.path("/etc/waystation/server.env").read_text(), c.path("/etc/mosquitto/waystation/ca.crt").read_text()
    assert after == before


def _start_broker(c: Chroot) -> tuple[subprocess.Popen[str], int]:
    """Debian's mosquitto with the installed files; only the listeners' ports are moved for the test."""
    tls_port, local_port = free_port(), free_port()
    ours = c.path("/etc/mosquitto/conf.d/waystation.conf").read_text()
    ours = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", ours, flags=re.M)
    ours = re.sub(r"^listener 1883 ", f"listener {local_port} ", ours, flags=re.M)
    c.path("/tmp/conf.d").mkdir(exist_ok=True)
    c.path("/tmp/conf.d/waystation.conf").write_text(ours)
    main = c.path("/etc/mosquitto/mosquitto.conf").read_text().replace("/etc/mosquitto/conf.d", "/tmp/conf.d")
    c.path("/tmp/mosquitto.conf").write_text(main)
    for folder in ("/run/mosquitto", "/var/log/mosquitto"):  # what the unit's ExecStartPre lines make
        assert c.run(["install", "-d", "-o", "mosquitto", "-m", "0740", folder]).returncode == 0
    broker = c.popen(["/usr/sbin/mosquitto", "-c", "/tmp/mosquitto.conf"], env={})
    if not wait_port("127.0.0.1", tls_port, 15):
        broker.kill()
        log = c.path("/var/log/mosquitto/mosquitto.log")
        pytest.fail(f"mosquitto did not start: {broker.communicate()[0]} {log.read_text() if log.exists() else ''}")
    return broker, tls_port


def test_provision_admin_and_server_against_the_installed_broker(installed: Installed) -> None:
    c = installed.chroot
    broker, tls_port = _start_broker(c)
    try:
        made = c.run(["waystation-server", "provision", "st-01", "--name", "Stop 1", "--out",
                      "/var/lib/waystation/bundles/st-01"])
        assert made.returncode == 0, made.stdout + made.stderr
        assert "station st-01 registered" in made.stdout
        bundle = c.path("/var/lib/waystation/bundles/st-01")
        assert {p.name for p in bundle.iterdir()} == {"station.yaml", "station.env", "ca.crt"}
        assert f"host: {BROKER}" in (bundle / "station.yaml").read_text()
        # mosquitto_passwd rewrote it in place: still the broker's to read.
        assert _stat(c, "/etc/mosquitto/waystation/passwd") == "waystation:mosquitto 640"
        os.kill(broker.pid, signal.SIGHUP)  # `systemctl reload mosquitto`, which the wrapper does under systemd
        time.sleep(0.5)

        # The wrapper runs the server's code as the service user: the file must be readable by it.
        c.path("/var/lib/waystation/admin-password").write_text("a long enough password 4 test\n")
        admin = c.run(["waystation-server", "create-admin", "admin", "--password-file",
                       "/var/lib/waystation/admin-password"])
        assert admin.returncode == 0 and "admin admin created" in admin.stdout, admin.stdout + admin.stderr

        # The station's credentials from the bundle open the installed broker over TLS.
        password = (bundle / "station.env").read_text().strip().split("=", 1)[1]
        link = MqttLink(MqttSettings(port=tls_port, username="st-01", password=password, client_id="station-st-01",
                                     tls_ca=str(bundle / "ca.crt"), clean_start=True))
        link.start()
        try:
            assert link.wait_connected(10), link.refused_reason
        finally:
            link.stop()

        http_port = free_port()
        server = c.popen(["/usr/local/sbin/waystation-server", "run"],
                         env={"WAYSTATION_SERVER_MQTT_PORT": str(tls_port),
                              "WAYSTATION_SERVER_HTTP_PORT": str(http_port)})
        try:
            deadline = time.monotonic() + 120
            healthy = False
            while time.monotonic() < deadline and server.poll() is None and not healthy:
                try:
                    health = httpx.get(f"http://127.0.0.1:{http_port}/api/health", timeout=2, trust_env=False)
                    healthy = health.is_success
                except httpx.TransportError:
                    time.sleep(0.5)
            assert healthy, f"the server did not come up: {server.poll()}"
            token = c.path("/etc/waystation/server.env").read_text().split("API_TOKEN=", 1)[1].split("\n", 1)[0]
            stations = httpx.get(f"http://127.0.0.1:{http_port}/api/stations", trust_env=False, timeout=5,
                                 headers={"Authorization": f"Bearer {token}"}).json()["items"]
            assert [s["station_id"] for s in stations] == ["st-01"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            output = server.communicate(timeout=60)[0]
        assert server.returncode == 0, output
        assert f"MQTT connected to 127.0.0.1:{tls_port} as waystation-server" in output  # TLS to the installed broker
    finally:
        broker.terminate()
        broker.communicate(timeout=30)
