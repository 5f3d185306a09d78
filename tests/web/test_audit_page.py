"""The audit trail in a real Chromium: what was done shows up, newest first, filtered, paged, exported (and audited)."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

from server import audit
from server.tables import AuditEvent
from tests.support.browser import WebApp
from tests.web.workers_support import enroll, vectors  # noqa: F401 - vectors: fixture

pytestmark = pytest.mark.broker


def actions_shown(page: Any) -> list[str]:
    return page.locator("#audit tbody td.action").all_inner_texts() if page.locator("#audit").count() else []


def filter_by(page: Any, **fields: str) -> None:
    form = page.locator("#audit-filters")
    for name in ("actor", "action", "since", "until"):
        form.locator(f"input[name={name}]").fill(fields.get(name, ""))
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


@pytest.mark.faces
@pytest.mark.models
def test_the_audit_trail_lists_what_was_done_newest_first_and_filters_it(
    web: WebApp, browser, vectors: dict[str, np.ndarray]  # noqa: ANN001, F811
) -> None:
    wid = enroll(web, "Tang Yu", [vectors["Calista_Flockhart"]])
    auditor = web.login(browser, "auditor")
    page = web.login(browser, "admin")
    # Two actions through the pages themselves.
    page.goto(f"{web.url}/workers/{wid}")
    page.click("#suspend")
    expect(page.locator("#worker-status")).to_have_text("Suspended")
    page.goto(web.url + "/users")
    form = page.locator("#new-user form")
    form.locator("input[name=username]").fill("zhou.qing")
    form.locator("input[name=password]").fill("Harbour-lights-2025")
    form.locator("input[name=password2]").fill("Harbour-lights-2025")
    page.click("#create-user")
    expect(page.locator("[role=status]")).to_contain_text("zhou.qing")

    page.click("header nav >> text=Audit trail")
    assert actions_shown(page)[:4] == ["user.create", "worker.suspend", "user.login", "user.login"]
    newest = page.locator("#audit tbody tr").first.inner_text()
    assert "admin" in newest and "zhou.qing" in newest and '"role": "staff"' in newest
    assert wid in page.locator("#audit tbody tr").nth(1).inner_text()

    filter_by(page, action="worker.")
    assert actions_shown(page) == ["worker.suspend"]
    filter_by(page, actor="auditor")
    assert actions_shown(page) == ["user.login"]
    filter_by(page, since="2000-01-01", until="2000-01-31")
    expect(page.locator("#no-events")).to_have_text("No audit event matches these filters.")

    # Times and day ranges are on the Asia/Shanghai clock: 16:30 UTC on 1 January is 00:30 on 2 January there.
    with web.sessions() as s:
        s.add(AuditEvent(at=datetime(2025, 1, 1, 16, 30, tzinfo=timezone.utc), actor="cli", action="worker.enroll",
                         target="w-from-cli"))
        s.commit()
    filter_by(page, actor="cli", since="2025-01-02", until="2025-01-02")
    assert actions_shown(page) == ["worker.enroll"]
    assert page.locator("#audit tbody td").first.inner_text().replace("\u202f", " ") == "Jan 2, 2025, 12:30:00 AM"
    filter_by(page, actor="cli", since="2024-12-01", until="2025-01-01")
    assert actions_shown(page) == []

    # Keyset pages: 150 rows of one actor come as 100 and then 50, each once, newest first.
    with web.sessions() as s:
        for i in range(150):
            audit.record(s, actor="system", action="retention.purge", target=f"batch-{i:03d}")
        s.commit()
    filter_by(page, actor="system")
    first = page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.id))")
    page.click("#older")
    page.wait_for_load_state()
    second = page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.id))")
    assert len(first) == 100 and len(second) == 50
    ids = first + second
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 150
    assert page.locator("#older").count() == 0
    assert "batch-000" in page.locator("#audit tbody tr").last.inner_text()
    assert page.locator("input[name=actor]").input_value() == "system"  # the filter is kept while paging
    page.context.close()
    auditor.context.close()


def test_an_auditor_exports_the_filtered_trail_as_csv_and_the_export_is_audited(
    web: WebApp, browser, tmp_path: Path  # noqa: ANN001
) -> None:
    with web.sessions() as s:
        audit.record(s, actor="admin", action="worker.suspend", target="w-1")
        audit.record(s, actor="admin", action="worker.delete", target="=HYPERLINK(\"http://evil\")",
                     detail={"face_samples": 2})
        audit.record(s, actor="admin", action="station.register", target="north-gate")
        s.commit()
    page = web.login(browser, "auditor")
    page.goto(web.url + "/audit")
    filter_by(page, action="worker.")
    with page.expect_download() as download:
        page.click("#export")
    path = tmp_path / "audit.csv"
    download.value.save_as(path)
    assert download.value.suggested_filename.startswith("audit-") and path.read_bytes().startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Time (Asia/Shanghai)", "Actor", "Action", "Target", "Details"]
    assert [r[2] for r in rows[1:]] == ["worker.delete", "worker.suspend"]
    deleted = rows[1]
    # A spreadsheet must not run a target as a formula.
    assert deleted[3] == "'=HYPERLINK(\"http://evil\")" and deleted[4] == '{"face_samples": 2}'
    assert datetime.strptime(rows[2][0], "%Y-%m-%d %H:%M:%S")

    page.goto(web.url + "/audit")
    first = page.locator("#audit tbody tr").first.inner_text()
    assert "audit.export" in first and "auditor" in first and '"action": "worker."' in first
    staff = web.login(browser, "staff")
    assert staff.goto(web.url + "/audit.csv").status == 403
    page.context.close()
    staff.context.close()
