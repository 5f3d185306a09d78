"""Real services for tests: a mosquitto process (plain, or with TLS, passwords and an ACL),
the embedded broker, PostgreSQL, the face data.

A test that needs something missing is skipped on a developer's machine with a
sentence saying what to install, and *fails* when WAYSTATION_REQUIRE_ALL=1
(set by .ci/run), so CI can never pass by skipping.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, make_url

from core.broker import free_port

REPO = Path(__file__).resolve().parents[2]
REQUIRE_ALL = os.environ.get("WAYSTATION_REQUIRE_ALL") == "1"


def need(condition: bool, what: str) -> None:
    """Skip (or fail under WAYSTATION_REQUIRE_ALL=1) unless condition holds."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required for this test but missing: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def faces_dir() -> Path:
    default = REPO.parent / "shared" / "data" / "faces"
    path = Path(os.environ.get("WAYSTATION_FACES_DIR", default))
    need((path / "MANIFEST.md").is_file(), f"the shared face data at {path} (set WAYSTATION_FACES_DIR)")
    return path


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll ``condition`` every 50 ms until it returns something truthy; its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return condition()


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """Debian's mosquitto as a real process on 127.0.0.1, restartable on the same port.

    ``access`` replaces the default ``allow_anonymous true`` (see :meth:`secure`).
    """

    def __init__(self, workdir: Path, *, extra_config: str = "", access: str = "allow_anonymous true\n") -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        need(exe is not None, "Debian's mosquitto (apt-get install mosquitto)")
        self.exe = str(exe)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        persist = workdir / "persist"
        persist.mkdir(exist_ok=True)
        user = "user root\n" if os.geteuid() == 0 else ""
        base = (
            f"{user}listener {self.port} {self.host}\n"
            f"{access}"
            "persistence true\n"
            f"persistence_location {persist}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"log_dest file {self.log}\n"
        )
        self.conf.write_text(base + extra_config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_port(self.host, self.port):
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"mosquitto did not start on port {self.port}: {err} {log}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no last save of the persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stop()

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files (after provisioning a station)."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    @classmethod
    def secure(cls, workdir: Path, pki: "Pki", *, password_file: Path, acl_file: Path) -> "Mosquitto":
        """TLS only, no anonymous clients, a password file and an ACL (the deploy/ files' settings)."""
        access = (
            f"cafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "tls_version tlsv1.2\n"
            "allow_anonymous false\n"
            f"password_file {password_file}\n"
            f"acl_file {acl_file}\n"
        )
        return cls(workdir, access=access)


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_pki(folder: Path, *, name: str = "Waystation test CA") -> Pki:
    """Generate a CA (EC P-256) and a server certificate it signs; valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)

    def pem_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path = folder / "server.crt"
    server_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return Pki(ca_path, pem_key(ca_key, folder / "ca.key"), server_path, pem_key(server_key, folder / "server.key"))


# -- PostgreSQL --------------------------------------------------------------------------------


class Postgres:
    """A PostgreSQL server to create throwaway databases in.

    In order: the admin URL in WAYSTATION_TEST_POSTGRES_URL; the server that
    ``pg_virtualenv`` describes with PG* variables (what .ci/run uses); else a
    cluster this test session starts itself from Debian's postgresql
    (initdb as the postgres user, fsync off, unix socket in a temporary
    folder, TCP on 127.0.0.1) and stops at the end. With none of them the test
    is skipped (fails under WAYSTATION_REQUIRE_ALL=1).
    """

    def __init__(self) -> None:
        self._own: Path | None = None
        self._ctl: list[str] = []
        explicit = os.environ.get("WAYSTATION_TEST_POSTGRES_URL")
        if explicit:
            self.admin_url = explicit
        elif os.environ.get("PGHOST") or os.environ.get("PGPORT"):
            self.admin_url = URL.create(
                "postgresql+psycopg",
                username=os.environ.get("PGUSER", "postgres"),
                password=os.environ.get("PGPASSWORD"),
                host=os.environ.get("PGHOST", "localhost"),
                port=int(os.environ.get("PGPORT", "5432")),
                database=os.environ.get("PGDATABASE", "postgres"),
            ).render_as_string(hide_password=False)
        else:
            self.admin_url = self._start_own()

    def _start_own(self) -> str:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
        need(bool(bins), "PostgreSQL (apt-get install postgresql, or run the tests under pg_virtualenv)")
        bindir = bins[0].parent
        folder = Path(tempfile.mkdtemp(prefix="waystation-pg-"))
        data = folder / "data"
        prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            need(shutil.which("runuser") is not None, "runuser (util-linux), to run PostgreSQL as its own user")
            shutil.chown(folder, "postgres", "postgres")
            prefix = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
        subprocess.run([*self._ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"], check=True,
                       capture_output=True)
        self._own = folder
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"ws_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self._own is not None:
            subprocess.run([*self._ctl, "-m", "fast", "-w", "stop"], capture_output=True)
            shutil.rmtree(self._own, ignore_errors=True)
            self._own = None


_postgres: Postgres | None = None


def postgres_server() -> Postgres:
    """The session's PostgreSQL (started on first use; see Postgres)."""
    global _postgres
    if _postgres is None:
        _postgres = Postgres()
        atexit.register(_postgres.stop)
    return _postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    server = postgres_server()
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)
