"""The users page in a real Chromium: create users, roles that fence pages off, disable, reset, no self-demotion."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

from server.tables import AuditEvent, User, Worker
from tests.support.browser import WebApp
from tests.web.workers_support import cookie_client, doc_shot, enroll, vectors  # noqa: F401 - vectors: fixture

pytestmark = pytest.mark.broker
NEW_PASSWORD = "Lantern-river-42-quiet"


def sign_in(web: WebApp, browser: Any, username: str, password: str) -> Any:
    """A new browser context on the sign-in page after submitting ``username`` and ``password``."""
    ctx = browser.new_context(locale="en-US")
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.goto(web.url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def user_row(page: Any, username: str) -> Any:
    return page.locator(f"#users tr[data-user='{username}']")


def create_user(page: Any, username: str, password: str, *, role: str = "staff", again: str | None = None) -> None:
    form = page.locator("#new-user form")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=display_name]").fill(username.replace(".", " ").title())
    form.locator("select[name=role]").select_option(role)
    form.locator("select[name=language]").select_option("en")
    form.locator("input[name=password]").fill(password)
    form.locator("input[name=password2]").fill(password if again is None else again)
    page.click("#create-user")
    page.wait_for_load_state()


def test_admin_creates_a_staff_user_who_then_sees_only_the_staff_pages(
    web: WebApp, browser, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    caplog.set_level(logging.DEBUG)
    page = web.login(browser, "admin")
    page.goto(web.url + "/users")
    assert page.locator("#users tbody tr").count() == 3

    create_user(page, "wang.fang", "short")
    expect(page.locator("[role=alert]")).to_have_text(
        "The password is too weak: use at least 12 characters, not the user name, and not mostly the same characters."
    )
    expect(page.locator("#new-user input[name=username]")).to_have_value("wang.fang")  # the form is kept
    create_user(page, "wang.fang", NEW_PASSWORD, again=NEW_PASSWORD + "x")
    expect(page.locator("[role=alert]")).to_have_text("The two passwords differ.")
    create_user(page, "Admin", NEW_PASSWORD)
    expect(page.locator("[role=alert]")).to_have_text("The user name Admin is taken.")
    create_user(page, "wang fang", NEW_PASSWORD)
    expect(page.locator("[role=alert]")).to_contain_text("A user name has 2 to 64 characters")
    assert page.locator("#users tbody tr").count() == 3

    create_user(page, "wang.fang", NEW_PASSWORD)
    expect(page.locator("[role=status]")).to_have_text(
        "The user wang.fang is created. Give them the password in person."
    )
    expect(user_row(page, "wang.fang").locator("select[name=role]")).to_have_value("staff")
    doc_shot(page, "admin-users.png")

    staff = sign_in(web, browser, "wang.fang", NEW_PASSWORD)
    assert staff.url.endswith("/enroll")
    assert staff.locator("header nav a").all_inner_texts() == ["Enroll", "Enrollment sessions"]
    for path in ("/workers", "/users", "/audit"):
        response = staff.goto(web.url + path)
        assert response is not None and response.status == 403, path
        expect(staff.locator("h1")).to_have_text("Not allowed")

    with web.sessions() as s:
        rows = s.query(AuditEvent).filter(AuditEvent.action.startswith("user.")).all()
        assert s.query(User).filter_by(username="wang.fang").one().role == "staff"
    created = [r for r in rows if r.action == "user.create"]
    expected = [("admin", "wang.fang", {"role": "staff", "language": "en"})]
    assert [(r.actor, r.target, r.detail) for r in created] == expected
    assert NEW_PASSWORD not in str([(r.target, r.detail) for r in rows])
    assert NEW_PASSWORD not in caplog.text  # nor in any log line
    page.context.close()
    staff.context.close()


@pytest.mark.faces
@pytest.mark.models
def test_auditor_and_staff_are_refused_the_admin_pages_and_their_forms(
    web: WebApp, browser, vectors: dict[str, np.ndarray]  # noqa: ANN001, F811
) -> None:
    wid = enroll(web, "Guo Qiang", [vectors["Brad_Garrett"]])
    with web.sessions() as s:
        admin_id = s.query(User).filter_by(username="admin").one().user_id
    auditor = web.login(browser, "auditor")
    for path in ("/workers", f"/workers/{wid}", "/users"):
        response = auditor.goto(web.url + path)
        assert response is not None and response.status == 403, path
        expect(auditor.locator("h1")).to_have_text("Not allowed")
        assert "Guo Qiang" not in auditor.content()
    assert auditor.goto(web.url + "/audit").status == 200

    client, csrf = cookie_client(web, auditor)
    with client:
        posts = {
            "/users": {"username": "sneaky", "role": "admin", "language": "en", "password": NEW_PASSWORD,
                       "password2": NEW_PASSWORD},
            f"/users/{admin_id}/disable": {},
            f"/users/{admin_id}/role": {"role": "auditor"},
            f"/workers/{wid}/suspend": {},
            f"/workers/{wid}/delete": {"confirm_name": "Guo Qiang"},
            f"/workers/{wid}/credentials": {"valid_days": "30"},
        }
        for path, form in posts.items():
            assert client.post(path, data={**form, "csrf_token": csrf}).status_code == 403, path
    staff = web.login(browser, "staff")
    assert staff.goto(web.url + "/users").status == 403
    with web.sessions() as s:
        assert s.query(User).filter_by(username="sneaky").count() == 0
        admin = s.get(User, admin_id)
        assert admin.role == "admin" and not admin.disabled
        assert s.get(Worker, wid).status == "active"
    auditor.context.close()
    staff.context.close()


def test_an_admin_cannot_disable_or_demote_themselves_but_can_demote_another_admin(
    web: WebApp, browser  # noqa: ANN001
) -> None:
    page = web.login(browser, "admin")
    page.goto(web.url + "/users")
    me = user_row(page, "admin")
    expect(me).to_contain_text("(you)")
    assert me.locator("select[name=role]").count() == 0
    assert me.locator("button", has_text="Disable").count() == 0

    client, csrf = cookie_client(web, page)
    with web.sessions() as s:
        my_id = s.query(User).filter_by(username="admin").one().user_id
    with client:
        for path, form in ((f"/users/{my_id}/role", {"role": "auditor"}), (f"/users/{my_id}/disable", {})):
            r = client.post(path, data={**form, "csrf_token": csrf}, follow_redirects=True)
            assert r.status_code == 200 and "You cannot disable yourself or change your own role" in r.text
    with web.sessions() as s:
        me_now = s.get(User, my_id)
        assert me_now.role == "admin" and not me_now.disabled
        assert s.query(AuditEvent).filter(AuditEvent.action.in_(["user.role", "user.disable"])).count() == 0

    create_user(page, "li.admin", NEW_PASSWORD, role="admin")
    row = user_row(page, "li.admin")
    row.locator("select[name=role]").select_option("auditor")
    row.locator("button", has_text="Change role").click()
    expect(page.locator("[role=status]")).to_have_text("The role of li.admin is changed.")
    expect(user_row(page, "li.admin").locator("select[name=role]")).to_have_value("auditor")
    with web.sessions() as s:
        (change,) = s.query(AuditEvent).filter_by(action="user.role").all()
    assert (change.actor, change.target, change.detail) == ("admin", "li.admin", {"from": "admin", "to": "auditor"})
    li = sign_in(web, browser, "li.admin", NEW_PASSWORD)
    assert li.goto(web.url + "/users").status == 403
    page.context.close()
    li.context.close()


def test_disable_enable_and_reset_a_password(web: WebApp, browser) -> None:  # noqa: ANN001
    staff = web.login(browser, "staff")
    page = web.login(browser, "admin")
    page.goto(web.url + "/users")
    user_row(page, "staff").locator("button", has_text="Disable").click()
    expect(page.locator("[role=status]")).to_have_text("The user staff is disabled and signed out.")
    expect(user_row(page, "staff").locator("td.state")).to_have_text("Disabled")
    # Signed out at once, and cannot sign in again.
    staff.goto(web.url + "/")
    assert "/login" in staff.url
    refused = sign_in(web, browser, "staff", web.passwords["staff"])
    expect(refused.locator("[role=alert]")).to_have_text("Wrong user name or password.")

    user_row(page, "staff").locator("button", has_text="Enable").click()
    expect(user_row(page, "staff").locator("td.state")).to_have_text("Active")
    back = sign_in(web, browser, "staff", web.passwords["staff"])
    assert back.url.endswith("/enroll")

    def reset(password: str, again: str) -> None:
        row = user_row(page, "staff")
        row.locator("summary").click()
        row.locator("input[name=password]").fill(password)
        row.locator("input[name=password2]").fill(again)
        row.locator("button", has_text="Set password").click()
        page.wait_for_load_state()

    reset("aaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaa")
    expect(page.locator("[role=alert]")).to_contain_text("The password is too weak")
    reset(NEW_PASSWORD, NEW_PASSWORD)
    expect(page.locator("[role=status]")).to_have_text(
        "The password of staff is changed; they are signed out everywhere."
    )
    back.goto(web.url + "/")
    assert "/login" in back.url  # the reset signed them out
    old = sign_in(web, browser, "staff", web.passwords["staff"])
    expect(old.locator("[role=alert]")).to_have_text("Wrong user name or password.")
    assert sign_in(web, browser, "staff", NEW_PASSWORD).url.endswith("/enroll")
    with web.sessions() as s:
        rows = s.query(AuditEvent).filter_by(actor="admin", target="staff").order_by(AuditEvent.id)
        actions = [a.action for a in rows]
    assert actions == ["user.disable", "user.enable", "user.password"]
    for p in (staff, page, refused, back, old):
        p.context.close()
