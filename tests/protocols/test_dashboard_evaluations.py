"""The dashboard's version page lists the version's evaluations (one row per head, gated heads with their end-to-end
metrics) and shows the newest one's plots: `headwise serve` (API + its worker) and a real headless Chromium."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.ui.conftest import browser, live, page, tiny_spec  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def _wait(client: httpx.Client, url: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while (body := client.get(url).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
    return body


def test_version_page_shows_evaluations(live, page, tmp_path):  # noqa: F811
    from service.ml.examples import make_example_dataset

    data = make_example_dataset(tmp_path / "eval.zip", n=96, seed=5, image_size=16)
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=60) as c:
        with open(data, "rb") as fh:
            dataset = c.post("/v1/datasets", files={"file": ("eval.zip", fh)}).json()["id"]
        job = c.post("/v1/jobs", json={"dataset_id": dataset, "model_name": "evalmodel", "spec": tiny_spec(1)}).json()
        assert _wait(c, f"/v1/jobs/{job['id']}")["status"] == "succeeded"
        base = "/v1/models/evalmodel/versions/1/evaluations"
        ev = _wait(c, f"{base}/{c.post(base, json={'dataset_id': dataset}).json()['id']}")
        assert ev["status"] == "succeeded", ev

    page.goto("/ui")
    page.fill("#key-input", live.key)
    page.click("#key-save")
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=models]")
    page.click("#models-table tbody tr[data-name=evalmodel]")
    page.click("#versions-table tbody tr[data-version='1']")
    page.wait_for_function("document.querySelectorAll('#version-evaluations tbody tr').length === 4")
    rows = [page.locator("#version-evaluations tbody tr").nth(i).locator("td").all_inner_texts() for i in range(4)]
    assert [r[3] for r in rows] == ["category", "is_big", "size", "hue"]
    assert all(r[2] == "succeeded" and r[1] == dataset for r in rows)
    assert [int(r[4]) for r in rows] == [ev["heads"][t]["labelled"] for t in ("category", "is_big", "size", "hue")]
    assert "accuracy" in rows[0][5] and "e2e_rmse" in rows[2][5] and "gate_miss_rate" in rows[2][5]
    page.wait_for_function("[...document.querySelectorAll('#evaluation-plots img')].length === 4 && "
                           "[...document.querySelectorAll('#evaluation-plots img')].every(i => i.naturalWidth > 0)",
                           timeout=60_000)
    assert not page.errors, page.errors
