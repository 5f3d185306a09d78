"""The systemd units in deploy/systemd pass `systemd-analyze verify` and keep their hardening.

verify needs the units' world: ``--root`` points it at a folder holding Debian's own unit files
(copied from this machine, so After=/Wants= targets resolve), the units under test, and real
executables at the paths the units run (this interpreter copied to /opt/waystation/venv/bin/python;
Debian's mosquitto, mkdir, chown and kill for mosquitto.service and its drop-in). A missing
executable, an unknown directive or a bad value makes verify complain, which fails the test.
The edge unit is also verified inside the installed chroot (test_edge_install.py), where every
path it names was made by the installer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import need

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
ANALYZE = "/usr/bin/systemd-analyze"
WAYSTATION_UNITS = ["waystation-edge.service", "waystation-server.service", "waystation-migrate.service"]
INGEST_TEMPLATE = "waystation-ingest@.service"  # verified as an instance: waystation-ingest@1.service


def _copy_exe(source: str, root: Path, inside: str) -> None:
    dest = root / inside.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(source).resolve(), dest)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(Path(ANALYZE).exists(), "systemd-analyze (Debian's systemd package)")
    need(Path("/usr/lib/systemd/system/multi-user.target").exists(), "Debian's systemd unit files")
    root = tmp_path_factory.mktemp("systemd-root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):  # Debian 12 is usr-merged
        (root / link).symlink_to(target)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in (*WAYSTATION_UNITS, INGEST_TEMPLATE):
        shutil.copy(UNITS / unit, etc / unit)
    shutil.copytree(UNITS / "mosquitto.service.d", etc / "mosquitto.service.d")
    _copy_exe(sys.executable, root, "/opt/waystation/venv/bin/python")
    for exe in ("mkdir", "chown", "kill"):
        _copy_exe(shutil.which(exe) or f"/usr/bin/{exe}", root, f"/usr/bin/{exe}")
    mosquitto_unit = Path("/usr/lib/systemd/system/mosquitto.service")
    need(mosquitto_unit.exists() and Path("/usr/sbin/mosquitto").exists(),
         "Debian's mosquitto (apt-get install mosquitto)")
    _copy_exe("/usr/sbin/mosquitto", root, "/usr/sbin/mosquitto")
    return root


def _verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, "verify", f"--root={root}", unit], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", [*WAYSTATION_UNITS, "waystation-ingest@1.service", "mosquitto.service"])
def test_unit_verifies_cleanly(root: Path, unit: str) -> None:
    result = _verify(root, unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings: none allowed either


def test_verify_reads_the_mosquitto_dropin(root: Path) -> None:
    """verify loads drop-ins too: a misspelt key beside ours would be reported, so ours is parsed cleanly."""
    bad = root / "etc/systemd/system/mosquitto.service.d/zz-typo.conf"
    bad.write_text("[Service]\nLimitNOFILES=65536\n")
    try:
        result = _verify(root, "mosquitto.service")
    finally:
        bad.unlink()
    assert "Unknown key 'LimitNOFILES'" in result.stderr
    assert "LimitNOFILE=65536" in (UNITS / "mosquitto.service.d" / "waystation.conf").read_text()


def test_verify_catches_a_broken_unit(root: Path) -> None:
    """The check can fail: a misspelt directive and a missing program are both reported."""
    broken = (UNITS / "waystation-edge.service").read_text().replace("Restart=on-failure", "Restrat=on-failure")
    broken = broken.replace("/opt/waystation/venv/bin/python", "/opt/waystation/venv/bin/pyhton")
    (root / "etc/systemd/system/broken-edge.service").write_text(broken)
    try:
        result = _verify(root, "broken-edge.service")
    finally:
        (root / "etc/systemd/system/broken-edge.service").unlink()
    assert "Unknown key" in result.stderr and "Restrat" in result.stderr
    assert result.returncode != 0 and "pyhton" in result.stderr


def _directive(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", (UNITS / unit).read_text(), re.M)


def test_config_errors_are_not_retried() -> None:
    """RestartPreventExitStatus is the exit code the programs really use for a bad config."""
    from edge.__main__ import EXIT_CONFIG as EDGE_CONFIG
    from server.__main__ import EXIT_CONFIG as SERVER_CONFIG

    assert _directive("waystation-edge.service", "RestartPreventExitStatus") == [str(EDGE_CONFIG)]
    assert _directive("waystation-server.service", "RestartPreventExitStatus") == [str(SERVER_CONFIG)]
    assert _directive(INGEST_TEMPLATE, "RestartPreventExitStatus") == [str(SERVER_CONFIG)]
    for unit in ("waystation-edge.service", "waystation-server.service", INGEST_TEMPLATE):
        assert _directive(unit, "Restart") == ["on-failure"]
        assert _directive(unit, "StartLimitIntervalSec") == ["0"]  # a station never gives up restarting


def test_server_starts_after_its_migration() -> None:
    assert "waystation-migrate.service" in _directive("waystation-server.service", "Requires")
    assert any("waystation-migrate.service" in v for v in _directive("waystation-server.service", "After"))
    assert _directive("waystation-migrate.service", "Type") == ["oneshot"]
    command = _directive("waystation-migrate.service", "ExecStart")[0]
    assert command.endswith(" -m server migrate --config /etc/waystation/server.yaml")


def test_each_ingest_worker_has_its_own_mqtt_client_id() -> None:
    """Two instances with one client id would keep disconnecting each other at the broker."""
    assert "WAYSTATION_SERVER_MQTT_CLIENT_ID=waystation-ingest-%i" in _directive(INGEST_TEMPLATE, "Environment")
    assert _directive(INGEST_TEMPLATE, "ExecStart")[0].endswith(" -m server ingest --config /etc/waystation/server.yaml")
    assert "waystation-migrate.service" in _directive(INGEST_TEMPLATE, "Requires")


@pytest.mark.parametrize(("unit", "threshold"), [
    ("waystation-edge.service", 40), ("waystation-server.service", 25), ("waystation-ingest@1.service", 25)])
def test_hardening_exposure_stays_low(root: Path, unit: str, threshold: int) -> None:
    """systemd's own exposure score (0 best, 10 worst; x10 for --threshold) of the sandboxing."""
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", f"--threshold={threshold}", f"--root={root}", unit],
        capture_output=True, text=True, timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert result.returncode == 0, f"{unit}: exposure {score.group(1)} above {threshold / 10}"
    source = UNITS / re.sub(r"@[^.]+\.", "@.", unit)  # an instance's file is its template
    for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/waystation", "PrivateTmp=yes"):
        assert key in source.read_text()
