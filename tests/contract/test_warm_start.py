"""Warm start (issue 12): `training.init_from` names a registered version (number or alias); the job starts from its
trunk and the heads whose name, type, classes and shape match; the new version records its parent.

The engine copy is checked tensor by tensor; the API checks (404/422 naming the field, nothing created) through the
real app; the whole path (API -> job row -> worker.jobs.run_job training for real -> registry) in process."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.ml import warm_start
from service.ml.network import MultiTaskCNN
from service.ml.spec import SpecError, parse_spec
from tests.api.conftest import tiny_spec
from tests.contract.test_one_call import counts, one_call


def child_spec() -> dict:
    """tiny_spec with `is_big` turned into a regression head, `hue` dropped and a new multilabel head."""
    spec = tiny_spec()
    spec["tasks"] = [spec["tasks"][0], {"name": "is_big", "type": "regression", "column": "hue"}, spec["tasks"][2],
                     {"name": "tags", "type": "multilabel", "classes": ["none", "circle", "square"], "column": "category"}]
    return spec


def test_apply_copies_the_trunk_and_matching_heads_only() -> None:
    parent_spec = parse_spec(tiny_spec())
    torch.manual_seed(1)
    parent = MultiTaskCNN(parent_spec)
    with torch.no_grad():  # every tensor distinct from a fresh init (BatchNorm stats too)
        for v in parent.state_dict().values():
            v.copy_(torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 3)
    spec = parse_spec(child_spec())
    torch.manual_seed(2)
    model = MultiTaskCNN(spec)
    fresh = copy.deepcopy(model.state_dict())
    report = warm_start.apply(model, spec, parent_spec, parent.state_dict(), {"model": "m", "version": 1})
    assert report["heads_copied"] == ["category", "size"]
    assert report["heads_new"] == {"is_big": "head type regression here, binary in the version", "tags": "new task"}
    state, theirs = model.state_dict(), parent.state_dict()
    trunk = [k for k in state if not k.startswith("heads.")]
    assert report["trunk_tensors"] == len(trunk) > 0
    assert all(torch.equal(state[k], theirs[k]) for k in trunk)
    for i, j in ((0, 0), (2, 2)):  # category, size: the parent's
        for suffix in ("0.weight", "0.bias", "3.weight", "3.bias"):
            assert torch.equal(state[f"heads.{i}.{suffix}"], theirs[f"heads.{j}.{suffix}"])
    for i in (1, 3):  # is_big (other type), tags (new): their fresh initialisation
        assert all(torch.equal(state[k], fresh[k]) for k in state if k.startswith(f"heads.{i}."))

    other_classes = tiny_spec()
    other_classes["tasks"][0]["classes"] = ["none", "square", "circle"]  # same shape, another order: not copied
    spec2 = parse_spec(other_classes)
    report = warm_start.apply(MultiTaskCNN(spec2), spec2, parent_spec, parent.state_dict())
    assert report["heads_new"] == {"category": "other classes than in the version"}
    wider = tiny_spec()
    wider["model"]["head_hidden"] = 16
    spec3 = parse_spec(wider)
    report = warm_start.apply(MultiTaskCNN(spec3), spec3, parent_spec, parent.state_dict())
    assert report["heads_copied"] == [] and set(report["heads_new"]) == set(spec3.task_names)


def test_apply_refuses_another_trunk() -> None:
    parent_spec = parse_spec(tiny_spec())
    other = tiny_spec()
    other["model"]["width"] = 8
    spec = parse_spec(other)
    with pytest.raises(SpecError, match=r"training.init_from: .*model.width is 8 here but 4 in the version"):
        warm_start.apply(MultiTaskCNN(spec), spec, parent_spec, MultiTaskCNN(parent_spec).state_dict())


def test_init_from_spec_rules() -> None:
    spec = tiny_spec()
    spec["training"]["init_from"] = {"model": "shapes"}
    with pytest.raises(SpecError, match="training.init_from.version: name exactly one of 'version' and 'alias'"):
        parse_spec(spec)
    spec["training"]["init_from"] = {"model": "shapes", "version": 1, "alias": "production"}
    with pytest.raises(SpecError, match="exactly one"):
        parse_spec(spec)
    spec["training"]["init_from"] = {"model": "shapes", "version": 1}
    spec["model"].update(backbone="resnet18", pretrained="imagenet")
    with pytest.raises(SpecError, match="training.init_from: cannot be combined with model.pretrained"):
        parse_spec(spec)


def with_init(ref: dict, **model) -> dict:
    spec = tiny_spec()
    spec["training"]["init_from"] = ref
    spec["model"].update(model)
    return spec


def test_job_refuses_a_missing_or_incompatible_start(client: TestClient, auth, app, enqueued, dataset_id,
                                                      register_model, example_zip: Path) -> None:
    register_model()  # shapes v1 (team alpha)
    register_model(name="secret", team="beta")
    cases = [
        ({"model": "nope", "version": 1}, {}, 404, "spec.training.init_from.model: model 'nope' not found"),
        ({"model": "secret", "version": 1}, {}, 404, "spec.training.init_from.model: model 'secret' not found"),
        ({"model": "shapes", "version": 5}, {}, 404, "spec.training.init_from.version: model 'shapes' has no version 5"),
        ({"model": "shapes", "alias": "production"}, {}, 404,
         "spec.training.init_from.alias: model 'shapes' has no alias 'production'"),
        ({"model": "shapes", "version": 1}, {"width": 8}, 422,
         "spec.training.init_from: model 'shapes' version 1 cannot be the start: model.width is 8 here but 4 in the "
         "version"),
    ]
    before = counts(app)
    for ref, model, code, message in cases:
        body = {"dataset_id": dataset_id, "model_name": "shapes", "spec": with_init(ref, **model)}
        r = client.post("/v1/jobs", headers=auth, json=body)
        assert r.status_code == code and r.json()["detail"].startswith(message), (ref, r.text)
        r = one_call(client, auth, example_zip, with_init(ref, **model))  # the one-call form: nothing stored
        assert r.status_code == code and r.json()["detail"].startswith(message), (ref, r.text)
    assert counts(app) == before and enqueued.job_ids == []


def test_warm_start_end_to_end(client: TestClient, auth, writer, app, enqueued, dataset_id, register_model,
                               settings, monkeypatch) -> None:
    """API resolves the alias -> the worker (run_job, in process) trains from v1 -> v2 records its parent."""
    from tests.worker.conftest import clear_caches

    _job, v1 = register_model()
    assert client.put("/v1/models/shapes/aliases/production", headers=writer, json={"version": 1}).status_code == 200
    spec = child_spec()
    spec["training"]["init_from"] = {"model": "shapes", "alias": "production"}
    r = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "shapes", "spec": spec})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    with app.state.sessionmaker() as s:
        params = json.loads(s.execute(text("SELECT params FROM jobs WHERE id = :i"), {"i": job_id}).scalar_one())
    assert params == {"init_from": {"model_version_id": v1, "model": "shapes", "version": 1, "alias": "production"}}
    # the alias moves after queueing: the job still starts from the version it pointed at
    register_model()  # v2 (same weights)
    assert client.put("/v1/models/shapes/aliases/production", headers=writer, json={"version": 2}).status_code == 200

    monkeypatch.setenv("HEADWISE_DATA_DIR", str(settings.DATA_DIR))
    monkeypatch.setenv("HEADWISE_DATABASE_URL", settings.DATABASE_URL)
    clear_caches()
    try:
        from worker.jobs import run_job

        assert run_job(job_id) == "succeeded"
    finally:
        clear_caches()
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["model"] == {"name": "shapes", "version": 3}
    assert job["metrics"]["warm_start"] == {
        "parent": {"model": "shapes", "version": 1}, "trunk_tensors": job["metrics"]["warm_start"]["trunk_tensors"],
        "heads_copied": ["category", "size"],
        "heads_new": {"is_big": "head type regression here, binary in the version", "tags": "new task"}}
    version = client.get("/v1/models/shapes/versions/3", headers=auth).json()
    assert version["parent"] == {"name": "shapes", "version": 1}
    assert client.get("/v1/models/shapes/versions/1", headers=auth).json()["parent"] is None
