"""A Debian 12 system made by debootstrap, to run the installers in as on a freshly flashed machine.

Downloads are cached between runs in one folder (``WAYSTATION_DEPLOY_CACHE``, default
``~/.cache/waystation/deploy-tests``):

- ``debootstrap-bookworm-minbase-amd64-rootfs.tar.gz``: the system ``debootstrap
  --variant=minbase bookworm`` made on the first run, unpacked afresh for every run (see
  :func:`base_system` for why not ``--make-tarball``/``--unpack-tarball``);
- ``apt-archives/``: bind-mounted as the chroot's /var/cache/apt/archives, so the packages the
  installer asks apt for are downloaded once;
- ``wheelhouse-<arch>-<hash>/``: made by deploy/wheelhouse.sh from the requirement files (a
  change to them makes a new one), bind-mounted read-only for the installer's --wheelhouse.

The system lives on a tmpfs; only /proc comes from the host (debootstrap made the chroot's own /dev
nodes). The folder is deleted only after every mount beneath it is gone, never across a mount.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("WAYSTATION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"


def cache_dir() -> Path:
    path = Path(os.environ.get("WAYSTATION_DEPLOY_CACHE", Path.home() / ".cache" / "waystation" / "deploy-tests"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mounted_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    points = []
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def base_system(log: list[str]) -> Path:
    """A tarball of a pristine Debian 12 minbase system, made by debootstrap on first use and cached.

    Measured here: debootstrap takes about 2.5 min (downloads included) and still 2 min from its own
    --make-tarball package cache (dpkg unpacking and configuring dominate), while unpacking this
    tarball takes about 15 s. The tarball is never changed after it is made, so every run starts
    from the same untouched system debootstrap produced.
    """
    tarball = cache_dir() / f"debootstrap-{SUITE}-minbase-amd64-rootfs.tar.gz"
    if tarball.exists():
        return tarball
    work = cache_dir() / "debootstrap-work"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.monotonic()
    subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(work), MIRROR],
                   check=True, capture_output=True, text=True, timeout=1800)
    log.append(f"debootstrap --variant=minbase {SUITE}: {time.monotonic() - t0:.0f} s")
    partial = tarball.with_name(tarball.name + ".partial")
    subprocess.run(["tar", "--numeric-owner", "-C", str(work), "-czf", str(partial), "."], check=True)
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    return tarball


def wheelhouse(arch: str, log: list[str], python: str) -> Path:
    """deploy/wheelhouse.sh's output for ``arch``, cached per content of the requirement files."""
    files = [REPO / "requirements.txt", REPO / "deploy/edge/requirements-pi.txt",
             REPO / "deploy/shims/dlib/pyproject.toml", REPO / "deploy/shims/face-recognition-models/pyproject.toml"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    dest = cache_dir() / f"wheelhouse-{arch}-cp311-{digest}"
    if (dest / ".complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.monotonic()
    result = subprocess.run(
        [str(REPO / "deploy/wheelhouse.sh"), str(dest), "--arch", arch, "--python", "3.11"],
        env={**os.environ, "PYTHON": python}, capture_output=True, text=True, timeout=1200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"deploy/wheelhouse.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    (dest / ".complete").write_text(result.stdout)
    log.append(f"deploy/wheelhouse.sh --arch {arch}: {time.monotonic() - t0:.0f} s (cached in {dest})")
    return dest


class Chroot:
    """A fresh Debian 12 minbase system in ``root``; ``run()`` executes commands inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounts: list[Path] = []
        self.timings: list[str] = []

    def build(self) -> "Chroot":
        tarball = base_system(self.timings)
        t0 = time.monotonic()
        self.root.mkdir(parents=True)
        # In memory (about 1.5 GB once installed): dpkg, pip and the final delete are disk-bound
        # otherwise (deleting the installed tree alone took over a minute on this machine's disk).
        self.mount(["-t", "tmpfs", "-o", "size=6g,mode=0755", "waystation-chroot"], self.root)
        subprocess.run(["tar", "--numeric-owner", "-C", str(self.root), "-xzf", str(tarball)], check=True)
        self.timings.append(f"unpack the cached debootstrap system: {time.monotonic() - t0:.0f} s")
        shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        # Packages must not start daemons inside the chroot (they would run on the host's network).
        policy = self.root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # Test speed only: dpkg skips its fsync calls (a throwaway system needs no crash safety).
        (self.root / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
        self.mount(["-t", "proc", "proc"], self.root / "proc")
        archives = cache_dir() / "apt-archives"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        self.mount(["--bind", str(archives)], self.root / "var/cache/apt/archives")
        return self

    def mount(self, how: Sequence[str], target: Path, *, read_only: bool = False) -> None:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *how, str(target)], check=True, capture_output=True)
        self.mounts.append(target)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)

    def bind(self, source: Path, inside: str, *, read_only: bool = False) -> str:
        self.mount(["--bind", str(source)], self.root / inside.lstrip("/"), read_only=read_only)
        return inside

    def copy_in(self, source: Path, inside: str) -> str:
        dest = self.root / inside.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        return inside

    def copy_repo(self, inside: str) -> str:
        """This repository as an installer would have it (a clone), without the venv and local data."""
        dest = self.path(inside)
        dest.mkdir(parents=True)
        with subprocess.Popen(
            ["tar", "-C", str(REPO), "--exclude=./.git", "--exclude=./.venv", "--exclude=./data", "--exclude=./var",
             "--exclude=__pycache__", "--exclude=./.pytest_cache", "--exclude=./.hypothesis", "-cf", "-", "."],
            stdout=subprocess.PIPE,
        ) as tar:
            subprocess.run(["tar", "-C", str(dest), "-xf", "-"], stdin=tar.stdout, check=True)
        if tar.returncode != 0:
            raise RuntimeError("could not copy the repository into the chroot")
        return inside

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, args: Sequence[str], *, timeout: float = 600, env: dict[str, str] | None = None,
            cwd: str = "/") -> subprocess.CompletedProcess[str]:
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                "HOME": "/root"}
        return subprocess.run(
            ["chroot", str(self.root), "sh", "-c", 'cd "$0" && exec "$@"', cwd, *args],
            env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        )

    def popen(self, args: Sequence[str], *, env: dict[str, str], cwd: str = "/") -> subprocess.Popen[str]:
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        return subprocess.Popen(
            ["chroot", str(self.root), "sh", "-c", 'cd "$0" && exec "$@"', cwd, *args],
            env={**base, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )

    def close(self) -> None:
        t0 = time.monotonic()
        for target in reversed(self.mounts):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", str(target)], capture_output=True)
        self.mounts.clear()
        left = _mounted_under(self.root)
        if left:  # never delete across a mount: that would reach into the mounted folder
            raise RuntimeError(f"still mounted under {self.root}, not deleted: {left}")
        t1 = time.monotonic()
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)
        self.timings.append(f"unmount: {t1 - t0:.0f} s, delete the chroot: {time.monotonic() - t1:.0f} s")
