"""Sign-in, roles and CSRF on the real server, in a real Chromium and over plain HTTP."""

from __future__ import annotations

import httpx
import pytest

from server import users
from server.tables import AuditEvent, Station, User
from tests.support.browser import WebApp


def test_sign_in_sets_a_secure_http_only_cookie_and_shows_the_role(web: WebApp, browser) -> None:  # noqa: ANN001
    page = web.login(browser, "auditor")
    assert page.url.endswith("/dashboard")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["ws_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    # JavaScript on the page cannot read the session cookie.
    assert "ws_session" not in page.evaluate("document.cookie")
    nav = page.locator("header nav").inner_text()
    assert "Entry log" in nav and "Users" not in nav and "Enroll" not in nav
    with web.sessions() as s:
        actions = [a.action for a in s.query(AuditEvent).filter_by(actor="auditor")]
    assert "user.login" in actions


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(web: WebApp, browser) -> None:  # noqa: ANN001
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(web.url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password-at-all")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "Wrong user name or password."
    page.fill("input[name=username]", "nobody-of-that-name")
    page.fill("input[name=password]", "not-the-password-at-all")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "Wrong user name or password."
    assert not [c for c in ctx.cookies() if c["name"] == "ws_session"]
    ctx.close()


def test_switching_to_chinese_is_kept_for_the_user(web: WebApp, browser) -> None:  # noqa: ANN001
    page = web.login(browser, "admin")
    page.click("header form button[value=zh_CN]")
    page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert "退出" in page.locator("#logout").inner_text()
    with web.sessions() as s:
        assert s.query(User).filter_by(username="admin").one().language == "zh_CN"


def test_sign_out_ends_the_session_on_the_server(web: WebApp, browser) -> None:  # noqa: ANN001
    page = web.login(browser, "admin")
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "ws_session")
    page.click("#logout")
    page.wait_for_url("**/login")
    # The old cookie is worthless even if someone copied it.
    r = httpx.get(web.url + "/api/stations", cookies={"ws_session": token}, trust_env=False)
    assert r.status_code == 401


def test_a_page_asks_for_sign_in_and_returns_there(web: WebApp, browser) -> None:  # noqa: ANN001
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(web.url + "/dashboard?day=3")
    assert "/login?next=/dashboard%3Fday%3D3" in page.url or "/login?next=/dashboard" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", web.passwords["admin"])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/dashboard" in page.url and "day=3" in page.url
    ctx.close()


def test_sign_in_is_rate_limited(web: WebApp) -> None:
    with httpx.Client(base_url=web.url, trust_env=False) as client:
        def attempt(password: str) -> httpx.Response:
            form = client.get("/login")
            token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
            # httpx keeps Secure cookies for HTTPS only; a browser sends them to 127.0.0.1 too.
            client.cookies.clear()
            client.cookies.set("ws_login_csrf", form.cookies["ws_login_csrf"])
            return client.post("/login", data={"username": "staff", "password": password, "csrf_token": token})

        codes = [attempt("wrong-password-123").status_code for _ in range(5)]
        assert codes == [401] * 5
        # Even the right password is refused now, with a wait time.
        refused = attempt(web.passwords["staff"])
        assert refused.status_code == 429 and "分钟后再试" in refused.text  # Chinese: the default language


def test_login_form_without_its_csrf_cookie_is_refused(web: WebApp) -> None:
    r = httpx.post(web.url + "/login", data={"username": "admin", "password": web.passwords["admin"],
                                             "csrf_token": "forged"}, trust_env=False)
    assert r.status_code == 400 and "ws_session" not in r.cookies


@pytest.fixture
def cookie_client(web: WebApp):  # noqa: ANN201
    def signed_in(role: str) -> tuple[httpx.Client, str]:
        with web.sessions() as s:
            user = s.query(User).filter_by(username=role).one()
            token = users.start_session(s, user=user, hours=1, remote_addr="127.0.0.1")
            found = users.session_user(s, token)
            assert found is not None
            csrf = found[1].csrf_token
        client = httpx.Client(base_url=web.url, cookies={"ws_session": token}, trust_env=False)
        clients.append(client)
        return client, csrf

    clients: list[httpx.Client] = []
    yield signed_in
    for c in clients:
        c.close()


def test_api_routes_check_the_role(web: WebApp, cookie_client) -> None:  # noqa: ANN001
    auditor, auditor_csrf = cookie_client("auditor")
    staff, _ = cookie_client("staff")
    admin, admin_csrf = cookie_client("admin")
    assert auditor.get("/api/entries").status_code == 200
    assert auditor.get("/api/stations").status_code == 200
    assert staff.get("/api/entries").status_code == 403
    assert auditor.get("/api/workers").status_code == 403
    denied = auditor.post("/api/stations", json={"station_id": "x1", "name": "X"}, headers={"X-CSRF-Token": auditor_csrf})
    assert denied.status_code == 403
    # An admin's browser must send the CSRF header to change anything.
    assert admin.post("/api/stations", json={"station_id": "x1", "name": "X"}).status_code == 403
    assert admin.post("/api/stations", json={"station_id": "x1", "name": "X"},
                      headers={"X-CSRF-Token": admin_csrf}).status_code == 201
    assert httpx.get(web.url + "/api/entries", trust_env=False).status_code == 401
    with web.sessions() as s:
        assert s.get(Station, "x1") is not None
