"""deploy/mosquitto/mosquitto.conf as it is installed: a conf.d file beside Debian's own mosquitto.conf.

Debian's /etc/mosquitto/mosquitto.conf (this machine's, from the mosquitto package) includes
/etc/mosquitto/conf.d, where the server installer puts our file. Both are used here with only
their paths and ports moved into a temporary folder; the broker must start, take a station's
TLS connection with its password, and refuse an anonymous client.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.broker import free_port
from core.mqtt import MqttLink, MqttSettings
from tests.support.services import make_pki, need, wait_port

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
DEBIAN_MAIN = Path("/etc/mosquitto/mosquitto.conf")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[int, int, str, Path, Path]]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    need(Path(exe).exists() and DEBIAN_MAIN.exists(), "Debian's mosquitto package (apt-get install mosquitto)")
    ws = tmp_path / "waystation"
    pki = make_pki(ws)
    shutil.copy(REPO / "deploy/mosquitto/acl", ws / "acl")
    password = uuid.uuid4().hex
    (ws / "passwd").touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", str(ws / "passwd"), "st-01"], input=f"{password}\n" * 2, text=True,
                   check=True, capture_output=True)
    tls_port, local_port = free_port(), free_port()
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    ours = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    ours = ours.replace("/etc/mosquitto/waystation/", f"{ws}/").replace("/var/lib/mosquitto/", f"{tmp_path}/persist/")
    ours = re.sub(r"^listener 8883$", f"listener {tls_port}", ours, flags=re.M)
    ours = re.sub(r"^listener 1883 127\.0\.0\.1$", f"listener {local_port} 127.0.0.1", ours, flags=re.M)
    (conf_d / "waystation.conf").write_text(ours)
    (tmp_path / "persist").mkdir()
    log = tmp_path / "mosquitto.log"
    main = DEBIAN_MAIN.read_text()
    main = re.sub(r"^pid_file .*$", f"pid_file {tmp_path}/mosquitto.pid", main, flags=re.M)
    main = re.sub(r"^persistence_location .*$", f"persistence_location {tmp_path}/persist/", main, flags=re.M)
    main = re.sub(r"^log_dest file .*$", f"log_dest file {log}", main, flags=re.M)
    main = re.sub(r"^include_dir .*$", f"include_dir {conf_d}", main, flags=re.M)
    # Only for the test: stay root, who can read the temporary folder (the real broker drops to `mosquitto`).
    (tmp_path / "mosquitto.conf").write_text("user root\n" + main)
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        up = wait_port("127.0.0.1", tls_port, timeout=10)
        if not up:
            proc.kill()
            output = proc.communicate(timeout=10)[0]
            pytest.fail("mosquitto did not start with Debian's mosquitto.conf plus deploy/mosquitto/mosquitto.conf:\n"
                        + output + (log.read_text() if log.exists() else ""))
        yield tls_port, local_port, password, pki.ca_cert, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def _connects(port: int, *, user: str | None, password: str | None, ca: Path | None) -> bool:
    link = MqttLink(MqttSettings(port=port, username=user, password=password, tls_ca=str(ca) if ca else None,
                                 client_id=f"t-{uuid.uuid4().hex[:8]}", clean_start=True))
    link.start()
    try:
        return link.wait_connected(5)
    finally:
        link.stop()


def test_installed_layout_starts_and_enforces_tls_and_passwords(broker: tuple[int, int, str, Path, Path]) -> None:
    tls_port, local_port, password, ca, log = broker
    assert _connects(tls_port, user="st-01", password=password, ca=ca)
    assert not _connects(tls_port, user="st-01", password="wrong", ca=ca)
    assert not _connects(local_port, user=None, password=None, ca=None)  # no anonymous clients, even on loopback
    text = log.read_text()
    assert "Error" not in text, text
    assert f"Opening ipv4 listen socket on port {tls_port}" in text or f"port {tls_port}" in text
