"""Real-browser fixtures: Debian's Chromium driven by Playwright against a real server.

    def test_x(web: WebApp, browser) -> None:
        page = web.login(browser, "auditor")        # a fresh browser context, signed in
        page.goto(web.url + "/entries")

``web`` is a ServerRuntime on a temporary SQLite file and a real mosquitto,
with one user per role whose random passwords are in ``web.passwords``.
Chromium is required: missing, the test is skipped locally and fails in CI.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.broker import free_port
from server.config import ServerSettings
from server.runtime import ServerRuntime
from tests.support.services import Mosquitto, Pki, make_pki, need

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
API_TOKEN = "web-test-token-" + "0123456789abcdef"
ROLES = ("admin", "staff", "auditor")


@dataclass
class WebApp:
    runtime: ServerRuntime
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.runtime.url

    @property
    def sessions(self):  # noqa: ANN201 - a sessionmaker for checking the database in tests
        from server.db import make_sessionmaker

        assert self.runtime.engine is not None
        return make_sessionmaker(self.runtime.engine)

    def login(self, browser: Any, role: str, *, language: str = "en", **context: Any) -> Any:
        """A new browser context signed in as the ``role`` user; returns its page on the start page."""
        ctx = browser.new_context(locale="en-US", accept_downloads=True, **context)
        ctx.set_default_timeout(15_000)
        page = ctx.new_page()
        page.goto(self.url + "/login")
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", self.passwords[role])
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "/login" not in page.url, f"sign-in as {role} failed: {page.content()[:500]}"
        if language != page.locator("html").get_attribute("lang").replace("-CN", "_CN"):
            page.click(f"header form button[value={language}]")
            page.wait_for_load_state()
        return page


def create_users(runtime: ServerRuntime) -> dict[str, str]:
    """One user per role (user name = role) with random passwords; also a fresh setup check."""
    from server import users
    from server.db import make_sessionmaker
    from server.tables import Role

    passwords = {role: secrets.token_urlsafe(18) for role in ROLES}
    assert runtime.engine is not None
    with make_sessionmaker(runtime.engine)() as session:
        for role in ROLES:
            users.create_user(session, username=role, password=passwords[role], role=Role(role), language="en")
        session.commit()
    return passwords


def web_settings(tmp_path: Path, broker: Mosquitto, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "api_token": API_TOKEN,
        "http_port": free_port(),
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_client_id": f"waystation-web-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return ServerSettings(**values)


SERVER_USER = "waystation.server"  # the deploy ACL's server user (deploy/mosquitto/acl)
DEPLOY_ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"


@dataclass
class SecureSite:
    """The server on a TLS broker with a password file and the deploy ACL, as installed."""

    web: WebApp
    broker: Mosquitto
    pki: Pki
    passwd: Path
    server_password: str


@contextmanager
def secure_web_app(tmp_path: Path) -> Iterator[SecureSite]:
    """Start mosquitto (TLS, passwords, deploy ACL) and the server able to provision stations on it."""
    need(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd (apt-get install mosquitto)")
    pki = make_pki(tmp_path / "pki")
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    server_password = uuid.uuid4().hex
    subprocess.run(["mosquitto_passwd", str(passwd), SERVER_USER], input=f"{server_password}\n" * 2, text=True,
                   check=True, capture_output=True)
    broker = Mosquitto.secure(tmp_path / "broker", pki, password_file=passwd, acl_file=DEPLOY_ACL).start()
    settings = web_settings(
        tmp_path, broker, mqtt_username=SERVER_USER, mqtt_password=server_password, mqtt_tls_ca=pki.ca_cert,
        mqtt_password_file=passwd, station_mqtt_host="127.0.0.1", station_mqtt_port=broker.port,
    )
    runtime = ServerRuntime(settings).start()
    try:
        assert runtime.ingest is not None and runtime.ingest.wait_connected(15), "the server could not log in"
        yield SecureSite(WebApp(runtime=runtime, passwords=create_users(runtime)), broker, pki, passwd, server_password)
    finally:
        runtime.stop()
        broker.stop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """The one Playwright driver of the session: its sync API cannot be started twice in one thread,
    so every browser (the shared one, the fake-camera one) is launched from this."""
    need(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Any) -> Iterator[Any]:
    """One headless Chromium for the whole session (each test gets its own contexts)."""
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def web(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[WebApp]:
    """The real server (SQLite, mosquitto, uvicorn on loopback) with one user per role."""
    runtime = ServerRuntime(web_settings(tmp_path, mosquitto)).start()
    try:
        yield WebApp(runtime=runtime, passwords=create_users(runtime))
    finally:
        runtime.stop()
