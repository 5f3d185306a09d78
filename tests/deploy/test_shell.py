"""Every shell script in deploy/ passes shellcheck (Debian's package), with sourced files followed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.services import need

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    p.relative_to(REPO) for p in (REPO / "deploy").rglob("*")
    if p.is_file() and (p.suffix == ".sh" or p.read_bytes().startswith(b"#!/usr/bin/env bash"))
)
# Sourced by the others, never run: no shebang, no exec bit.
LIBRARIES = [p for p in SCRIPTS if not (REPO / p).read_bytes().startswith(b"#!")]


def test_the_scripts_are_found() -> None:
    names = {str(p) for p in SCRIPTS}
    assert {"deploy/edge/install.sh", "deploy/server/install.sh", "deploy/server/backup.sh",
            "deploy/server/restore.sh", "deploy/wheelhouse.sh", "deploy/common.sh", "deploy/server/waystation-server",
            "deploy/compose/init.sh"} <= names
    assert {str(p) for p in LIBRARIES} == {"deploy/common.sh", "deploy/server/dblib.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_shellcheck(script: Path) -> None:
    need(shutil.which("shellcheck") is not None, "shellcheck (apt-get install shellcheck)")
    # From the repository root, so `# shellcheck source=deploy/common.sh` resolves.
    result = subprocess.run(["shellcheck", "--external-sources", "--severity=style", str(script)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p not in LIBRARIES], ids=str)
def test_scripts_are_strict_and_executable(script: Path) -> None:
    text = (REPO / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -Eeuo pipefail\n" in text or "\nset -euo pipefail\n" in text
    assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable"
