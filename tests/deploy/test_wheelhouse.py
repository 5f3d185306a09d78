"""deploy/wheelhouse.sh: a station's every Python package exists as a prebuilt aarch64 wheel.

This is the promise the Pi install rests on (nothing compiled on a station, dlib above all):
pip is asked, for real, for wheels of CPython 3.11 on manylinux aarch64 (Raspberry Pi OS
Bookworm 64-bit), and every pinned requirement must come back as a wheel of that version.
Needs PyPI on the first run; the result is cached (tests/deploy/chroot.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.chroot import REPO, wheelhouse

pytestmark = pytest.mark.timeout(1500)


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;#]+)", line.strip())
        if match:
            name = re.sub(r"\[.*\]", "", match.group(1))
            pins[re.sub(r"[-_.]+", "_", name).lower()] = match.group(2)
    return pins


def test_every_pinned_requirement_has_an_aarch64_wheel() -> None:
    timings: list[str] = []
    folder = wheelhouse("aarch64", timings, sys.executable)
    files = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    assert not [f for f in files if not f.endswith(".whl")], "source distributions would be compiled on the Pi"
    wheels: dict[str, tuple[str, str]] = {}
    for name in files:
        dist, version, *_, platform = name[:-4].split("-")
        wheels[dist.lower()] = (version, platform)
    pins = _pins(REPO / "requirements.txt") | _pins(REPO / "deploy/edge/requirements-pi.txt")
    assert {"dlib_bin", "opencv_python_headless", "numpy", "simplejpeg", "psycopg"} <= set(pins)
    for dist, version in pins.items():
        assert dist in wheels, f"no wheel for {dist}=={version}"
        got_version, platform = wheels[dist]
        assert got_version == version, f"{dist}: wheel {got_version}, pinned {version}"
        assert platform == "any" or "aarch64" in platform, f"{dist}: {platform} is not for a Pi"
    assert wheels["dlib_bin"][1].endswith("aarch64")
    flit = wheels["flit_core"][0]
    assert int(flit.split(".")[0]) < 4  # what the two shims' build-system asks for


def test_refuses_a_32_bit_target(tmp_path: Path) -> None:
    result = subprocess.run([str(REPO / "deploy/wheelhouse.sh"), str(tmp_path), "--arch", "armv7l"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "32-bit ARM has no dlib-bin wheels" in result.stderr
