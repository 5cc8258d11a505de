"""The /ui dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright): load the page, enter
the key, upload a tiny dataset, start a training job, watch the live curve grow from the SSE stream, look at the
model version's plots, run a prediction and check a full-page screenshot is not blank.

Skipped when Playwright or /usr/bin/chromium is missing, except in CI (CI=true), where that fails the test.
Set HEADWISE_UI_SCREENSHOT=path.png to keep the final screenshot (docs/dashboard.png is made this way)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ui.conftest import tiny_spec

pytestmark = pytest.mark.slow
EPOCHS = 4


def blank_check(png: bytes) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000, pixels.shape
    assert pixels.std() > 10, "screenshot is (nearly) blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "screenshot has too few colours"


def test_dashboard_end_to_end(live, page, tmp_path: Path) -> None:
    from service.ml.examples import make_example_dataset

    data = make_example_dataset(tmp_path / "tiny.zip", n=120, seed=3, image_size=16)
    with zipfile.ZipFile(data) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))[:4]
        images = []
        for n in names:
            (tmp_path / Path(n).name).write_bytes(zf.read(n))
            images.append(str(tmp_path / Path(n).name))

    page.goto("/ui")
    assert page.title() == "Headwise dashboard"
    assert page.inner_text("#key-status") == "no key"
    page.fill("#key-input", live.key)
    page.click("#key-save")
    page.wait_for_selector("#key-status.ok")
    assert page.evaluate("sessionStorage.getItem('headwise.key')") == live.key

    # upload and audit
    page.set_input_files("#upload-file", str(data))
    page.fill("#upload-name", "browser-tiny")
    page.click("#upload-btn")
    page.wait_for_selector("#dataset-detail:not([hidden])")
    assert "browser-tiny" in page.inner_text("#datasets-table")
    assert page.locator("#dataset-columns tbody tr").count() == 4
    page.fill("#audit-spec", json.dumps(tiny_spec(EPOCHS)))
    page.click("#audit-btn")
    page.wait_for_selector("#audit-table")
    assert page.locator("#audit-table tbody tr").count() == 4

    # the key survives a reload (sessionStorage), then train from the Jobs tab
    page.reload()
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=jobs]")
    page.wait_for_function("document.querySelectorAll('#job-dataset option').length > 0")
    page.select_option("#job-dataset", label="browser-tiny (120 samples)")
    page.fill("#job-model", "browser-model")
    page.fill("#job-spec", json.dumps(tiny_spec(EPOCHS), indent=2))
    # record every redraw of the live chart (its data-epochs attribute) to see the curve grow epoch by epoch
    page.evaluate("""() => {
        window.__epochs = [];
        const chart = document.querySelector('#live-chart');
        new MutationObserver((records) => {  // records are batched: their old values give every step
            for (const r of records) window.__epochs.push(Number(r.oldValue));
            window.__epochs.push(Number(chart.dataset.epochs));
        }).observe(chart, {attributes: true, attributeOldValue: true, attributeFilter: ['data-epochs']});
    }""")
    page.click("#job-start")
    page.wait_for_selector("#job-detail:not([hidden])")
    page.wait_for_selector("#job-status.succeeded", timeout=240_000)
    page.wait_for_function(f"Number(document.querySelector('#live-chart').dataset.epochs) === {EPOCHS}")
    grown = list(dict.fromkeys(n for n in page.evaluate("window.__epochs") if n > 0))
    assert grown == list(range(1, EPOCHS + 1)), f"the curve did not grow epoch by epoch: {grown}"
    assert page.locator("#live-chart polyline.series").count() == 8  # val + train per head
    assert page.locator("#live-heads tbody tr").count() == 4
    assert page.inner_text("#live-epoch") == f"epoch {EPOCHS}/{EPOCHS}"
    page.wait_for_selector("#job-curves:not([hidden])")
    # every head's primary metric beside its trivial baseline (flagged in red when it does not beat it)
    page.wait_for_selector("#job-baselines:not([hidden])")
    assert page.locator("#job-baselines p").count() == 4
    assert all(" vs " in t for t in page.locator("#job-baselines p").all_inner_texts())

    # the model version, its metrics and one plot per head
    page.click("nav .tab[data-tab=models]")
    page.click("#models-table tbody tr[data-name=browser-model]")
    page.click("#versions-table tbody tr[data-version='1']")
    page.wait_for_function("[...document.querySelectorAll('#version-plots img')].length === 4 && "
                           "[...document.querySelectorAll('#version-plots img')].every(i => i.naturalWidth > 0)",
                           timeout=120_000)
    assert "accuracy" in page.inner_text("#version-metrics")
    assert "mean predictor" in page.inner_text("#version-metrics")  # the regression heads' baseline column

    # try it: every head's output; gated heads as suppressed with the reason
    page.click("#versions-table tbody tr[data-version='1'] button")
    page.wait_for_selector("#tab-try:not([hidden])")
    page.wait_for_function("document.querySelector('#try-version').value === '1'")
    assert page.input_value("#try-model") == "browser-model" and page.input_value("#try-version") == "1"
    page.set_input_files("#try-file", images)
    page.click("#try-btn")
    page.wait_for_selector("#prediction-table")
    header = page.locator("#prediction-table thead th").all_inner_texts()
    assert header == ["image", "category", "is_big", "size", "hue"]
    rows = page.locator("#prediction-table tbody tr")
    assert rows.count() == len(images)
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        if cells[1].startswith("none"):
            assert "suppressed" in cells[3] and "category predicted 'none'" in cells[3], cells
        else:
            assert "suppressed" not in cells[3]
    rendered = page.evaluate("""() => outputCell({value: null, label: null, gated: true,
                                reason: "category predicted 'none'"}).textContent""")
    assert rendered == "suppressed category predicted 'none'"

    page.click("nav .tab[data-tab=jobs]")  # the job's detail is still there
    page.wait_for_selector("#jobs-table tbody tr.selected")
    page.wait_for_function(f"Number(document.querySelector('#live-chart').dataset.epochs) === {EPOCHS}")
    page.wait_for_selector("#job-curves:not([hidden])")
    page.wait_for_function("document.querySelector('#job-curves').complete && "
                           "document.querySelector('#job-curves').naturalWidth > 0")
    page.evaluate("() => { document.querySelector('#new-job').open = false; "
                  "document.querySelector('#toast').hidden = true; }")
    shot = page.screenshot(full_page=True)
    blank_check(shot)
    if os.environ.get("HEADWISE_UI_SCREENSHOT"):
        Path(os.environ["HEADWISE_UI_SCREENSHOT"]).write_bytes(shot)
    assert not page.errors, page.errors


def test_wrong_key_is_reported(live, page) -> None:
    page.goto("/ui")
    page.fill("#key-input", "hw_wrong")
    page.click("#key-save")
    page.wait_for_selector("#key-status.error")
    assert "rejected" in page.inner_text("#key-status")
    page.click("#key-forget")
    assert page.evaluate("sessionStorage.getItem('headwise.key')") is None
