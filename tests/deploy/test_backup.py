"""deploy/server/backup.sh and restore.sh on a real SQLite file and a real PostgreSQL database.

The scripts run as an installer would run them, against an "installed" layout in a temporary
folder: WAYSTATION_PREFIX holds app/ (this repository) and venv/ (this interpreter's venv),
WAYSTATION_CONF holds server.yaml and server.env. The server's schema comes from the real
migrations, its rows from the server's own modules, the QR signing key from server.credentials.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from server.credentials import KEY_FILE, signer_for
from server.db import make_engine, make_sessionmaker, upgrade_database
from server.stations import list_stations, register_station
from tests.support.services import need, postgres_url  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]
TOKEN = "backup-test-token-0123456789abcdef"
pytestmark = pytest.mark.timeout(600)


class Server:
    """An installed-looking server: config, secrets, data folder; the scripts' environment."""

    def __init__(self, root: Path, database_url: str | None) -> None:
        need(Path(sys.prefix, "bin", "python").exists(), "a virtual environment to run the server from")
        self.root = root
        self.prefix = root / "opt"
        self.prefix.mkdir()
        (self.prefix / "app").symlink_to(REPO)
        (self.prefix / "venv").symlink_to(Path(sys.prefix))
        self.conf = root / "etc"
        self.conf.mkdir()
        self.data = root / "data"
        (self.conf / "server.yaml").write_text(yaml.safe_dump({"data_dir": str(self.data)}))
        env = f"WAYSTATION_SERVER_API_TOKEN={TOKEN}\n"
        if database_url:  # a secret (it may hold a password): in server.env like the installer does
            env += f"WAYSTATION_SERVER_DATABASE_URL={database_url}\n"
        (self.conf / "server.env").write_text(env)
        self.url = database_url or f"sqlite:///{self.data / 'server.db'}"
        self.env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "WAYSTATION_PREFIX": str(self.prefix),
                    "WAYSTATION_CONF": str(self.conf), "WAYSTATION_USER": "root"}

    def script(self, name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / "deploy" / "server" / name), *args], env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=300)

    def stations(self) -> list[str]:
        engine = make_engine(self.url)
        try:
            with make_sessionmaker(engine)() as session:
                return sorted(s.station_id for s in list_stations(session=session))
        finally:
            engine.dispose()

    def register(self, *ids: str) -> None:
        engine = make_engine(self.url)
        try:
            upgrade_database(engine)
            with make_sessionmaker(engine)() as session:
                for sid in ids:
                    register_station(session=session, station_id=sid, name=f"Station {sid}")
        finally:
            engine.dispose()

    def delete_station(self, sid: str) -> None:
        import sqlalchemy as sa

        engine = make_engine(self.url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM stations WHERE station_id = :s"), {"s": sid})
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "postgres":
        need(shutil.which("pg_dump") is not None, "pg_dump and pg_restore (apt-get install postgresql-client)")
        yield Server(tmp_path, request.getfixturevalue("postgres_url"))
    else:
        need(shutil.which("sqlite3") is not None, "sqlite3 (apt-get install sqlite3)")
        yield Server(tmp_path, None)


def test_backup_then_restore_brings_back_database_and_signing_key(server: Server, tmp_path: Path) -> None:
    server.register("hz-01", "hz-02")
    signer_for(server.data)  # the server creates its QR signing key on first use
    key_bytes = (server.data / KEY_FILE).read_bytes()
    out = tmp_path / "backups"

    made = server.script("backup.sh", "--out", str(out))
    assert made.returncode == 0, made.stderr
    [archive] = list(out.glob("waystation-backup-*.tar"))
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds the signing key
    assert f"wrote {archive}" in made.stdout
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = tar.extractfile("./MANIFEST").read().decode()  # type: ignore[union-attr]
        with tarfile.open(fileobj=tar.extractfile("./data.tar.gz")) as data:  # type: ignore[arg-type]
            data_names = set(data.getnames())
    db_member = "./database.dump" if server.url.startswith("postgresql") else "./server.db"
    assert {"./MANIFEST", "./data.tar.gz", db_member} <= names
    assert f"./{KEY_FILE}" in data_names and "./server.db" not in data_names
    assert "schema_revision: none" not in manifest and "schema_revision: " in manifest

    # Things go wrong after the backup: a station deleted, another added, the key lost.
    server.delete_station("hz-01")
    server.register("after-backup")
    (server.data / KEY_FILE).unlink()
    assert server.stations() == ["after-backup", "hz-02"]

    refused = server.script("restore.sh", str(archive))  # no terminal to confirm on, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert server.stations() == ["after-backup", "hz-02"]  # nothing was touched

    restored = server.script("restore.sh", str(archive), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert server.stations() == ["hz-01", "hz-02"]
    assert (server.data / KEY_FILE).read_bytes() == key_bytes
    assert stat.S_IMODE((server.data / KEY_FILE).stat().st_mode) == 0o600
    assert "restore done" in restored.stdout


def test_keep_prunes_old_backups_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    need(shutil.which("sqlite3") is not None, "sqlite3 (apt-get install sqlite3)")
    server = Server(tmp_path, None)  # the pruning and the checks do not depend on the database kind
    server.register("hz-01")
    out = tmp_path / "backups"
    for _ in range(3):
        assert server.script("backup.sh", "--out", str(out), "--keep", "2").returncode == 0
        time.sleep(1.1)  # backup names carry the second
    assert len(list(out.glob("waystation-backup-*.tar"))) == 2
    foreign = tmp_path / "not-a-backup.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(REPO / "README.md", arcname="README.md")
    result = server.script("restore.sh", str(foreign), "--yes")
    assert result.returncode == 2 and "not a Waystation backup" in result.stderr
    assert server.stations() == ["hz-01"]
