"""The dashboard's model page in real Chromium: aliases listed, Promote moves an alias, Roll back moves it back."""

from __future__ import annotations

import pytest

from tests.contract.conftest import WRITER_SCOPES
from tests.ui.conftest import browser  # noqa: F401 - the real-Chromium fixture (skips/fails like it)

pytestmark = pytest.mark.slow


def test_promote_and_rollback_buttons(browser, live_url: str, make_key, register_model,  # noqa: F811
                                      settings) -> None:
    from service.db.base import session_scope
    from service.db.tables import ModelVersion

    for _ in range(3):
        _job, version_id = register_model("shapes")
    with session_scope(settings.DATABASE_URL) as s:  # v3 warm-started from v1 (training.init_from)
        s.get(ModelVersion, version_id).parent = {"model": "shapes", "version": 1}
    key = make_key(WRITER_SCOPES, name="dashboard")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_url, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto("/ui")
        page.fill("#key-input", key)
        page.click("#key-save")
        page.wait_for_selector("#key-status.ok")
        page.click("nav .tab[data-tab=models]")
        page.click("#models-table tbody tr[data-name=shapes]")
        page.wait_for_selector("#model-detail:not([hidden])")
        assert page.inner_text("#model-aliases") == "no aliases"
        assert page.inner_text("#versions-table tbody tr[data-version='3'] td.version-parent") == "shapes v1"
        assert page.inner_text("#versions-table tbody tr[data-version='2'] td.version-parent") == ""

        page.click("#versions-table tbody tr[data-version='2'] button.promote")
        page.wait_for_selector("#model-aliases p.alias[data-alias=production]")
        assert "production → v2" in page.inner_text("#model-aliases")
        page.fill("#promote-alias", "production")
        page.click("#versions-table tbody tr[data-version='3'] button.promote")
        page.wait_for_function("document.querySelector('#model-aliases').innerText.includes('v3')")
        assert page.inner_text("#versions-table tbody tr[data-version='3'] td.version-aliases") == "production"
        assert page.inner_text("#versions-table tbody tr[data-version='2'] td.version-aliases") == ""

        page.click("#model-aliases p.alias[data-alias=production] button.rollback")
        page.wait_for_function("document.querySelector('#model-aliases').innerText.includes('production → v2')")
        assert "rolled back" in page.inner_text("#toast")
        assert page.inner_text("#versions-table tbody tr[data-version='2'] td.version-aliases") == "production"
        assert errors == []
    finally:
        context.close()
    with __import__("service.client", fromlist=["Client"]).Client(live_url, key) as c:
        history = c.alias_history("shapes", "production")
    assert [(e.action, e.from_version, e.to_version, e.key_name) for e in history] == [
        ("set", None, 2, "dashboard"), ("set", 2, 3, "dashboard"), ("rollback", 3, 2, "dashboard")]
