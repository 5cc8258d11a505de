"""One job-status list (service.domain.JobStatus): the database, the API schema, /metrics, the client and the
dashboard all take it from there; the dashboard gets it from the server page, not from a copy in the JS."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.domain import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus

from .conftest import AUTH

ROOT = Path(__file__).resolve().parents[2]
STATUS_WORDS = {s.value for s in JobStatus}


def test_enum_partitions_into_active_and_terminal() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert ACTIVE_STATUSES | TERMINAL_STATUSES == set(JobStatus) and not ACTIVE_STATUSES & TERMINAL_STATUSES
    assert JobStatus.CANCELLED.terminal and not JobStatus.RUNNING.terminal


def test_dashboard_gets_statuses_from_the_server(client) -> None:
    page = client.get("/ui").text
    body = re.search(r"<body ([^>]*)>", page).group(1)
    attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', body))
    unescape = lambda v: v.replace("&#34;", '"').replace("&quot;", '"')  # noqa: E731
    assert json.loads(unescape(attrs["data-job-statuses"])) == [s.value for s in JobStatus]
    assert set(json.loads(unescape(attrs["data-terminal-statuses"]))) == {s.value for s in TERMINAL_STATUSES}
    js = (ROOT / "service/static/ui.js").read_text()
    lists = re.findall(r"\[[^\]]*\]", js)
    copies = [lst for lst in lists if len(STATUS_WORDS & set(re.findall(r'"(\w+)"', lst))) >= 2]
    assert not copies, f"ui.js holds a copy of the status list: {copies}"


def test_api_schema_and_metrics_use_the_enum(client) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["JobStatus"]["enum"] == [s.value for s in JobStatus]
    metrics = client.get("/metrics").text
    for status in JobStatus:
        assert f'headwise_jobs{{status="{status.value}"}} 0.0' in metrics
    bad = client.get("/v1/jobs?status=done", headers=AUTH)
    assert bad.status_code == 422 and "queued" in bad.json()["detail"]


def test_no_other_module_spells_the_list() -> None:
    """No module outside service/domain.py writes three or more status words in one tuple/list/set literal."""
    offenders = []
    for path in list((ROOT / "service").rglob("*.py")) + list((ROOT / "worker").rglob("*.py")):
        if path.name == "domain.py" or "ml" in path.relative_to(ROOT).parts:
            continue
        for literal in re.findall(r"[\(\[\{][^\(\)\[\]\{\}]*[\)\]\}]", path.read_text()):
            if len(STATUS_WORDS & set(re.findall(r'"(\w+)"', literal))) >= 2:
                offenders.append(f"{path.relative_to(ROOT)}: {literal[:80]}")
    assert not offenders, "\n".join(offenders)
