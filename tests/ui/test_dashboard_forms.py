"""The dashboard's spec builder, toasts, key changes and narrow screens, in a real headless Chromium against a
real `headwise serve` (see tests/ui/conftest.py):
- a spec built with the form (choices from GET /v1/capabilities) is accepted by the server and trains; the form
  and the JSON follow each other; invalid JSON shows an error and leaves the form as it was;
- the "succeeded" toast announces only a transition seen live, never when an old job is opened;
- at 420 px wide nothing overflows the viewport and the tables scroll inside their own box, readable;
- another team's limited key (403) or a rejected key (401) clears every result of the previous key's view."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import AUTH

pytestmark = pytest.mark.slow

# every visible element inside the viewport, except the cells of a table, which scrolls in its own box
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth, bad = [];
  for (const e of document.querySelectorAll('body *')) {
    if (!e.getClientRects().length || e.closest('datalist, option')) continue;
    if (e.closest('table.list') && !e.matches('table.list')) continue;
    const r = e.getBoundingClientRect();
    if (r.right > width + 0.5 || r.left < -0.5) bad.push(`${e.tagName}#${e.id}.${e.className} ${r.left}..${r.right}`);
  }
  return {width, scrollWidth: document.documentElement.scrollWidth, bad};
}"""
# every visible table: header cells on one line, no cell squeezed, and a table wider than its box scrolls
TABLES = """() => [...document.querySelectorAll('table.list')].filter((t) => t.getClientRects().length).map((t) => {
  const style = getComputedStyle(t);
  const line = parseFloat(getComputedStyle(t.querySelector('th')).lineHeight) || 20;
  return {id: t.id, rows: t.querySelectorAll('tbody tr').length, overflowX: style.overflowX,
          wider: t.scrollWidth > t.clientWidth + 1,
          tallHeader: [...t.querySelectorAll('th')].filter((h) => h.textContent && h.clientHeight > 2.2 * line).length,
          narrowCells: [...t.querySelectorAll('td')].filter((c) => c.textContent.trim().length > 3 &&
                                                             c.clientWidth < 40).length};
})"""


def head(page, i: int, field: str) -> str:
    return f"#spec-heads .head-row:nth-child({i + 1}) [data-field={field}]"


def spec_json(page) -> dict:
    return json.loads(page.input_value("#job-spec"))


def check_narrow(page, what: str) -> list[dict]:
    out = page.evaluate(OVERFLOW)
    assert out["width"] == 420 and out["scrollWidth"] <= 420 and not out["bad"], (what, out)
    tables = page.evaluate(TABLES)
    for t in tables:
        assert t["tallHeader"] == 0 and t["narrowCells"] == 0, (what, t)
        if t["wider"]:
            assert t["overflowX"] in ("auto", "scroll"), (what, t)
    return tables


def test_spec_form_toast_narrow_and_key_change(live, page, tmp_path: Path) -> None:
    from service.ml.examples import make_example_dataset

    client = live.client()
    data = make_example_dataset(tmp_path / "forms.zip", n=96, seed=5, image_size=16)
    with zipfile.ZipFile(data) as zf:
        png = sorted(n for n in zf.namelist() if n.endswith(".png"))[0]
        (tmp_path / "one.png").write_bytes(zf.read(png))
    dataset = client.upload_dataset(data, name="forms-tiny")
    caps = client.capabilities()

    page.goto("/ui")
    page.fill("#key-input", live.key)
    page.click("#key-save")
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=jobs]")
    page.wait_for_function("document.querySelectorAll('#job-dataset option').length > 0")
    page.select_option("#job-dataset", value=dataset.id)
    page.wait_for_selector("#spec-builder:not([disabled])")
    # the form follows the JSON drawn from the dataset's columns; its choices are the server's
    page.wait_for_function("document.querySelectorAll('#spec-heads .head-row').length === 4")
    assert [page.input_value(head(page, i, "name")) for i in range(4)] == ["category", "is_big", "size", "hue"]
    types = page.eval_on_selector(head(page, 0, "type"), "s => [...s.options].map(o => o.value)")
    assert types == list(caps["head_types"])
    losses = page.eval_on_selector(head(page, 2, "loss"), "s => [...s.options].map(o => o.value)")
    assert losses == ["", *caps["head_types"]["regression"]["losses"]]
    strategies = page.eval_on_selector("#spec-weighting", "s => [...s.options].map(o => o.value)")
    assert strategies == ["", *caps["weightings"]]
    gates = page.eval_on_selector(head(page, 2, "gate"), "s => [...s.options].map(o => o.value)")
    assert gates == ["", "category", "is_big"]  # heads that can gate; a regression head cannot

    # an empty setting is the server's default, shown greyed: read from the engine's spec model
    from service.ml.spec import ModelConfig, TrainingConfig

    placeholders = page.eval_on_selector_all("#spec-fields input[data-path]",
                                             "xs => Object.fromEntries(xs.map(x => [x.dataset.path, x.placeholder]))")
    assert placeholders["training.epochs"] == "auto" and placeholders["training.max_minutes"] == "none"
    assert placeholders["training.batch_size"] == str(TrainingConfig().batch_size)
    assert placeholders["model.image_size"] == str(ModelConfig().image_size)

    # build the spec with the form
    page.fill(head(page, 0, "classes"), "none, circle, square")
    page.select_option(head(page, 2, "gate"), "category")
    assert not page.is_disabled(head(page, 2, "gate_classes"))
    page.fill(head(page, 2, "gate_classes"), "circle, square")
    page.select_option(head(page, 2, "loss"), "huber")
    page.fill(head(page, 3, "weight"), "0.5")
    page.select_option("#spec-weighting", "gradnorm")
    page.fill("#spec-weighting-params input[data-param=alpha]", "1.2")
    for path, value in {"training.epochs": "1", "training.batch_size": "32", "training.val_fraction": "0.25",
                        "model.image_size": "16", "model.width": "8", "model.depth": "1"}.items():
        page.fill(f"#spec-fields input[data-path='{path}']", value)
    page.fill("#spec-fields input[data-path='training.epochs']", "auto")  # the server's "auto", as a string
    page.fill("#spec-fields input[data-path='training.max_minutes']", "0.5")
    page.uncheck("#spec-early-stopping")
    assert {k: spec_json(page)["training"][k] for k in ("epochs", "max_minutes", "early_stopping")} == {
        "epochs": "auto", "max_minutes": 0.5, "early_stopping": False}
    page.check("#spec-early-stopping")
    page.fill("#spec-fields input[data-path='training.max_minutes']", "")
    page.fill("#spec-fields input[data-path='training.epochs']", "1")
    built = spec_json(page)
    assert "early_stopping" not in built["training"] and "max_minutes" not in built["training"]
    tasks = {t["name"]: t for t in built["tasks"]}
    assert tasks["category"]["classes"] == ["none", "circle", "square"]
    assert tasks["size"]["gate"] == {"task": "category", "classes": ["circle", "square"]}
    assert tasks["size"]["loss"] == "huber" and tasks["hue"]["weight"] == 0.5
    assert built["weighting"] == {"strategy": "gradnorm", "alpha": 1.2}
    assert built["training"]["epochs"] == 1 and built["model"] == {"image_size": 16, "width": 8, "depth": 1}

    # add and remove a head; a binary gate takes no positive classes
    page.click("#spec-add-head")
    assert page.locator("#spec-heads .head-row").count() == 5 and len(spec_json(page)["tasks"]) == 5
    page.fill(head(page, 4, "name"), "extra")
    page.select_option(head(page, 4, "gate"), "is_big")
    assert page.is_disabled(head(page, 4, "gate_classes"))
    assert spec_json(page)["tasks"][4]["gate"] == {"task": "is_big"}
    page.click("#spec-heads .head-row:nth-child(5) .remove-head")
    assert spec_json(page) == built
    page.fill(head(page, 0, "name"), "")  # a renamed gate head stays the gate, even typed over a cleared field
    page.fill(head(page, 0, "name"), "shape")
    assert spec_json(page)["tasks"][2]["gate"]["task"] == "shape"
    page.fill(head(page, 0, "name"), "category")
    assert spec_json(page) == built

    # JSON -> form, keeping what the form does not show (loss parameters)
    edited = json.loads(json.dumps(built))
    edited["tasks"][3]["weight"] = 0.25
    edited["tasks"][2]["loss"] = {"type": "huber", "delta": 0.5}
    edited["weighting"] = {"strategy": "uncertainty"}
    edited["training"]["early_stopping"] = False
    page.fill("#job-spec", json.dumps(edited, indent=2))
    assert not page.is_checked("#spec-early-stopping")
    assert page.input_value(head(page, 3, "weight")) == "0.25"
    assert page.input_value(head(page, 2, "loss")) == "huber"
    assert page.input_value("#spec-weighting") == "uncertainty"
    assert page.locator("#spec-weighting-params input").count() == 0
    page.fill(head(page, 0, "weight"), "2")  # a form edit keeps the loss parameters it does not show
    edited["tasks"][0]["weight"] = 2
    assert spec_json(page) == edited

    # invalid JSON: an error, the form untouched and disabled until the JSON parses again
    page.fill("#job-spec", '{"tasks": [')
    page.wait_for_selector("#spec-error:not([hidden])")
    assert "JSON" in page.inner_text("#spec-error")
    assert page.is_disabled(head(page, 0, "name")) and page.locator("#spec-heads .head-row").count() == 4
    assert page.input_value(head(page, 2, "gate")) == "category" and page.input_value(head(page, 3, "weight")) == "0.25"
    page.fill("#job-spec", json.dumps(edited, indent=2))
    page.wait_for_selector("#spec-error", state="hidden")
    assert not page.is_disabled(head(page, 0, "name"))

    # the server accepts it: the job is created and trains; its success, seen live, is announced
    page.fill("#job-model", "forms-model")
    page.click("#job-start")
    page.wait_for_selector("#job-detail:not([hidden])")
    job_id = page.inner_text("#job-title").split(" · ")[1]
    job = client.get_job(job_id)
    assert job.spec["weighting"]["strategy"] == "uncertainty"
    assert {t["name"]: t.get("gate") for t in job.spec["tasks"]}["size"]["classes"] == ["circle", "square"]
    page.wait_for_selector("#job-status.succeeded", timeout=240_000)
    page.wait_for_selector("#toast:not([hidden])")
    assert page.inner_text("#toast") == f"job {job_id} succeeded"

    # opening the finished job again (a fresh page): its old success is not announced
    page.reload()
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=jobs]")
    page.click(f"#jobs-table tbody tr[data-id='{job_id}']")
    page.wait_for_selector("#job-status.succeeded")
    page.wait_for_selector("#job-curves:not([hidden])")  # drawn after the stream's final status event
    assert page.is_hidden("#toast"), page.inner_text("#toast")

    # 420 px wide: every tab with its details open fits, the tables scroll in their own box
    page.set_viewport_size({"width": 420, "height": 900})
    seen = check_narrow(page, "jobs")
    page.click("nav .tab[data-tab=datasets]")
    page.click(f"#datasets-table tbody tr[data-id='{dataset.id}']")
    page.wait_for_selector("#dataset-detail:not([hidden])")
    seen += check_narrow(page, "datasets")
    page.click("nav .tab[data-tab=models]")
    page.click("#models-table tbody tr[data-name=forms-model]")
    page.click("#versions-table tbody tr[data-version='1']")
    page.wait_for_function("[...document.querySelectorAll('#version-plots img')].some(i => i.naturalWidth > 0)")
    seen += check_narrow(page, "models")
    page.click("#versions-table tbody tr[data-version='1'] button")
    page.wait_for_function("document.querySelector('#try-version').value === '1'")
    page.set_input_files("#try-file", str(tmp_path / "one.png"))
    page.click("#try-btn")
    page.wait_for_selector("#prediction-table")
    seen += check_narrow(page, "try it")
    assert any(t["wider"] for t in seen), "no table was wider than 420 px: the scroll case went untested"
    assert {"jobs-table", "datasets-table", "versions-table", "prediction-table"} <= {t["id"] for t in seen}
    page.set_viewport_size({"width": 1280, "height": 900})
    assert not page.errors, page.errors

    # another team's key without models:read (403): nothing of the previous key's view stays
    other = client.create_key("forms-other", ["predict"], team="forms-other-team")
    page.fill("#key-input", other.key)
    page.click("#key-save")
    page.wait_for_selector("#key-status:has-text('limited scopes')")
    assert_cleared(page)
    # back to the first key, then a rejected one (401)
    page.fill("#key-input", live.key)
    page.click("#key-save")
    page.click("nav .tab[data-tab=jobs]")
    page.wait_for_selector(f"#jobs-table tbody tr[data-id='{job_id}']")
    page.click(f"#jobs-table tbody tr[data-id='{job_id}']")
    page.wait_for_selector("#job-detail:not([hidden])")
    page.fill("#key-input", "hw_wrong")
    page.click("#key-save")
    page.wait_for_selector("#key-status.error")
    assert_cleared(page)


def assert_cleared(page) -> None:
    left = page.evaluate("""() => ({
      rows: document.querySelectorAll('main table.list tbody tr').length,
      details: ['#dataset-detail', '#job-detail', '#model-detail', '#version-detail']
        .filter((s) => !document.querySelector(s).hidden),
      predictions: document.querySelector('#try-results').childElementCount,
      options: document.querySelectorAll('#job-dataset option, #try-model option').length,
      heads: document.querySelectorAll('#spec-heads .head-row').length,
    })""")
    assert left == {"rows": 0, "details": [], "predictions": 0, "options": 0, "heads": 0}, left


def test_comparison_job_built_and_reported(live, page, tmp_path: Path) -> None:
    """A comparison job built in the browser (two heads, single-task + the plain sum, one seed) runs for real; its
    report, as GET /v1/jobs/{id}/comparison gives it, is shown while it grows and complete with the plot."""
    from service.ml.examples import make_example_dataset

    client = live.client()
    dataset = client.upload_dataset(make_example_dataset(tmp_path / "cmp.zip", n=96, seed=7, image_size=16),
                                    name="compare-tiny")
    page.goto("/ui")
    page.fill("#key-input", live.key)
    page.click("#key-save")
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=jobs]")
    page.wait_for_function("document.querySelectorAll('#job-dataset option').length > 0")
    page.select_option("#job-dataset", value=dataset.id)
    page.wait_for_function("document.querySelectorAll('#spec-heads .head-row').length === 4")
    for _ in range(2):  # keep category and is_big
        page.click("#spec-heads .head-row:nth-child(3) .remove-head")
    page.select_option("#spec-weighting", "uncertainty")
    for path, value in {"training.epochs": "1", "training.batch_size": "32", "training.val_fraction": "0.25",
                        "model.image_size": "16", "model.width": "8", "model.depth": "1"}.items():
        page.fill(f"#spec-fields input[data-path='{path}']", value)
    page.check("#compare-on")
    page.check("#compare-single")
    page.check("#compare-weighting input[value=fixed]")
    page.fill("#compare-seeds", "1")
    page.fill("#job-model", "compare-model")
    page.click("#job-start")
    page.wait_for_selector("#job-comparison:not([hidden])")
    job_id = page.inner_text("#job-title").split(" · ")[1]
    assert client.get_job(job_id).compare["weighting"] == ["fixed"]
    page.wait_for_selector("#job-status.succeeded", timeout=300_000)
    page.wait_for_selector("#job-comparison[data-complete=true]")
    page.wait_for_function("document.querySelector('#comparison-plot').naturalWidth > 0")

    report = httpx.get(f"{live.url}/v1/jobs/{job_id}/comparison", headers=AUTH, timeout=30).json()
    variants = [v["name"] for v in report["variants"]]
    assert variants == ["main", "weighting:fixed", "single_task"], variants
    assert page.inner_text("#comparison-progress").startswith(f"{report['runs_total']}/{report['runs_total']}")
    # the live chart keeps the sub-runs apart: one group of curves per sub-run, a boundary before each new one
    assert page.get_attribute("#live-chart", "data-runs") == str(report["runs_total"])
    assert page.locator("#live-chart line.run-start").count() == report["runs_total"] - 1
    for h in report["heads"]:
        rows = page.locator(f"#comparison-heads tbody tr[data-head='{h['head']}']")
        assert rows.count() == len(variants)
        assert [rows.nth(i).get_attribute("data-variant") for i in range(rows.count())] == variants
        verdict = rows.nth(0).locator("td.verdict").get_attribute("data-verdict")
        assert verdict == h["verdict"]["single_task"] and verdict in (
            "multi-task better", "multi-task worse", "within noise")
        shown = page.evaluate("(v) => fmt(v)", h["results"][0]["mean"])
        assert rows.nth(0).locator("td.mean").inner_text().startswith(shown)
        assert rows.nth(0).locator("td.baseline").get_attribute("data-beats") == json.dumps(h["beats_baseline"])
    compute = page.locator("#comparison-compute tbody tr")
    assert compute.count() == len(variants)
    assert all(v["compute"]["seconds"] > 0 for v in report["variants"])
    page.set_viewport_size({"width": 420, "height": 900})
    assert {"comparison-heads", "comparison-compute"} <= {t["id"] for t in check_narrow(page, "comparison")}

    # opened later from the job list (a fresh page): the finished report at once, with its plot, and no toast
    page.set_viewport_size({"width": 1280, "height": 900})
    page.reload()
    page.wait_for_selector("#key-status.ok")
    page.click("nav .tab[data-tab=jobs]")
    row = page.locator(f"#jobs-table tbody tr[data-id='{job_id}']")
    assert "comparison" in row.inner_text()
    row.click()
    page.wait_for_selector("#job-comparison[data-complete=true]")
    page.wait_for_function("document.querySelector('#comparison-plot').naturalWidth > 0")
    assert page.locator("#comparison-heads tbody tr").count() == len(variants) * len(report["heads"])
    page.wait_for_selector("#job-curves:not([hidden])")  # drawn after the stream's final status event
    assert page.is_hidden("#toast"), page.inner_text("#toast")
    assert not page.errors, page.errors
