import copy
import json
import pickle

import pytest

from service.ml.spec import HuberLoss, SpecError, parse_spec

BASE = {
    "tasks": [
        {"name": "category", "type": "multiclass", "classes": ["none", "cat", "dog"]},
        {"name": "is_adult", "type": "binary", "loss": "focal", "weight": 0.5},
        {"name": "age", "type": "regression", "loss": {"type": "huber", "delta": 2.0}},
        {"name": "size", "type": "regression", "gate": {"task": "category", "classes": ["cat", "dog"]}},
    ],
    "weighting": {"strategy": "fixed"},
    "model": {"image_size": 64, "channels": 3, "width": 32, "depth": 4, "dropout": 0.1},
    "training": {"epochs": 20, "batch_size": 64, "learning_rate": 0.001, "val_fraction": 0.15, "seed": 0},
}


def spec_with(mutate):
    data = copy.deepcopy(BASE)
    mutate(data)
    return data


def errors_of(mutate) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec_with(mutate))
    return str(info.value)


def test_example_parses_with_normalised_losses_and_defaults():
    spec = parse_spec(BASE)
    assert spec.task_names == ["category", "is_adult", "age", "size"]
    assert spec.task("category").loss.type == "cross_entropy"
    assert spec.task("category").loss.label_smoothing == 0.0
    assert spec.task("is_adult").loss.model_dump() == {"type": "focal", "weight": 1.0, "gamma": 2.0, "alpha": None}
    assert spec.task("age").loss == HuberLoss(delta=2.0)
    assert spec.task("size").loss.type == "mse"
    assert spec.task("size").source == "size"
    assert spec.training.optimizer == "adamw" and spec.training.augmentation.crop == 0
    assert spec.weighting.temperature == 2.0


def test_default_loss_per_type_and_object_form():
    spec = parse_spec({"tasks": [
        {"name": "m", "type": "multiclass"},
        {"name": "b", "type": "binary", "column": "B col"},
        {"name": "r", "type": "regression", "loss": None},
        {"name": "f", "type": "multiclass", "loss": {"type": "focal", "gamma": 1.0, "alpha": 0.5}},
        {"name": "p", "type": "binary", "loss": {"type": "binary_cross_entropy", "pos_weight": 3}},
    ]})
    assert [t.loss.type for t in spec.tasks] == ["cross_entropy", "binary_cross_entropy", "mse", "focal",
                                                  "binary_cross_entropy"]
    assert spec.task("f").loss.gamma == 1.0 and spec.task("f").loss.alpha == 0.5
    assert spec.task("p").loss.pos_weight == 3.0
    assert spec.task("b").source == "B col"
    assert spec.task("m").classes is None


def test_round_trip_json_dict_and_text():
    spec = parse_spec(BASE)
    data = spec.to_json_dict()
    assert data["tasks"][1]["loss"] == {"type": "focal", "weight": 1.0, "gamma": 2.0, "alpha": None}
    assert data["training"]["early_stopping"] == {"metric": "val_loss", "patience": 5}
    assert data["model"]["head_hidden"] == 64
    assert parse_spec(data) == spec
    assert parse_spec(json.dumps(data)) == spec
    assert parse_spec(json.dumps(data).encode()) == spec
    assert parse_spec(data).to_json_dict() == data


def test_gate_order_chain_and_indices():
    spec = parse_spec({"tasks": [
        {"name": "len", "type": "regression", "gate": {"task": "tail"}},
        {"name": "tail", "type": "binary", "gate": {"task": "cat", "classes": ["dog", "cat"]}},
        {"name": "cat", "type": "multiclass", "classes": ["none", "cat", "dog"]},
    ]})
    assert spec.gate_order() == ["cat", "tail", "len"]
    assert spec.gate_class_indices("tail") == [2, 1]
    assert spec.gate_class_indices("len") is None
    assert spec.gate_class_indices("cat") is None


def test_with_classes_revalidates():
    spec = parse_spec({"tasks": [
        {"name": "cat", "type": "multiclass"},
        {"name": "size", "type": "regression", "gate": {"task": "cat", "classes": ["dog"]}},
    ]})
    assert spec.with_classes({"cat": ["dog", "none"]}).task("cat").classes == ["dog", "none"]
    with pytest.raises(SpecError, match=r"tasks\[1\].gate.classes\[0\]: 'dog' is not a class of 'cat'"):
        spec.with_classes({"cat": ["a", "b"]})


def test_task_lookup_error_lists_tasks():
    with pytest.raises(KeyError, match="tasks are: category, is_adult, age, size"):
        parse_spec(BASE).task("nope")


def test_spec_error_pickle_and_str():
    err = SpecError(["a: one", "b: two"])
    again = pickle.loads(pickle.dumps(err))
    assert again.errors == ["a: one", "b: two"] and again.args == (["a: one", "b: two"],)
    assert str(again) == "a: one; b: two"
    assert isinstance(again, ValueError)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["tasks"][3]["gate"].update(task="categry"),
     "tasks[3].gate.task: 'categry' is not a task; tasks are: category, is_adult, age, size"),
    (lambda d: d["tasks"][1].update(loss="huber"),
     "tasks[1].loss: 'huber' does not fit a binary task; allowed: binary_cross_entropy, focal"),
    (lambda d: d["tasks"][0].update(loss={"type": "mse"}),
     "tasks[0].loss: 'mse' does not fit a multiclass task; allowed: cross_entropy, focal"),
    (lambda d: d["tasks"][2].update(loss="cross_entropy"),
     "tasks[2].loss: 'cross_entropy' does not fit a regression task; allowed: mse, mae, huber"),
    (lambda d: d["tasks"][0].update(foo=1),
     "tasks[0].foo: unknown field; allowed: name, column, type, classes, loss, weight, gate, standardize"),
    (lambda d: d.update(extra=1), "extra: unknown field; allowed: spec_version, tasks"),
    (lambda d: d["tasks"][2].update(loss={"type": "huber", "alpha": 1}),
     "tasks[2].loss.alpha: unknown field; allowed: type, weight, delta"),
    (lambda d: d["tasks"][3]["gate"].update(extra=True), "tasks[3].gate.extra: unknown field; allowed: task, classes"),
    (lambda d: d["training"].update(optimizer="adam"), "training.optimizer: 'adam' is not allowed; allowed: adamw, sgd"),
    (lambda d: d["training"].update(schedule="step"), "training.schedule: 'step' is not allowed; allowed: cosine, none"),
    (lambda d: d["weighting"].update(strategy="magic"),
     "weighting.strategy: 'magic' is not allowed; allowed: fixed, uncertainty, dwa, gradnorm, pcgrad"),
    (lambda d: d["model"].update(channels=2), "model.channels: 2 is not allowed; allowed: 1, 3"),
    (lambda d: d["tasks"][1].update(type="boolean"),
     "tasks[1].type: 'boolean' is not allowed; allowed: multiclass, binary, regression"),
    (lambda d: d["tasks"][2].update(loss="hubber"), "tasks[2].loss: 'hubber' is not a loss; allowed: mse, mae, huber"),
    (lambda d: d["tasks"][2].update(loss={"delta": 1}), "tasks[2].loss: a loss object needs a 'type'"),
    (lambda d: d["tasks"][2].update(loss={"type": "huber", "delta": 0}), "tasks[2].loss.delta: must be greater than 0"),
    (lambda d: d["tasks"][0].update(loss={"type": "cross_entropy", "label_smoothing": 1.5}),
     "tasks[0].loss.label_smoothing: must be less than 1"),
    (lambda d: d["tasks"][2].update(name="category"), "tasks[2].name: duplicate task name 'category' (also tasks[0])"),
    (lambda d: d["tasks"][3]["gate"].update(task="age"),
     "tasks[3].gate.task: 'age' is a regression task; a gate must be a multiclass, binary or multilabel task"),
    (lambda d: d["tasks"][3]["gate"].update(classes=["cat", "cow"]),
     "tasks[3].gate.classes[1]: 'cow' is not a class of 'category'; classes are: none, cat, dog"),
    (lambda d: d["tasks"][3]["gate"].update(classes=["cat", "cat"]), "tasks[3].gate.classes[1]: duplicate class 'cat'"),
    (lambda d: d["tasks"][3].update(gate={"task": "is_adult", "classes": ["x"]}),
     "tasks[3].gate.classes: not allowed for binary gate task 'is_adult'"),
    (lambda d: d["tasks"][3].update(gate={"task": "category"}),
     "tasks[3].gate.classes: required (at least one class) for multiclass gate task 'category'; choose from: none"),
    (lambda d: d["tasks"][3].update(gate={"task": "size"}), "tasks[3].gate.task: a task cannot gate itself ('size')"),
    (lambda d: (d["tasks"][0].update(gate={"task": "is_adult"}),
                d["tasks"][1].update(gate={"task": "category", "classes": ["cat"]})),
     "tasks[0].gate: gate cycle category -> is_adult -> category; chains are allowed, cycles are not"),
    (lambda d: [t.update(weight=0) for t in d["tasks"]], "tasks: every task weight is 0"),
    (lambda d: d["tasks"][1].update(weight=-0.5), "tasks[1].weight: must be greater than or equal to 0; got -0.5"),
    (lambda d: d["tasks"][1].update(weight=float("inf")), "tasks[1].weight: must be a finite number"),
    (lambda d: d["tasks"][1].update(classes=["a", "b"]),
     "tasks[1].classes: only allowed for multiclass, multilabel tasks; this task is binary"),
    (lambda d: d["tasks"][2].update(classes=["a", "b"]), "tasks[2].classes: only allowed for multiclass, multilabel tasks"),
    (lambda d: d["tasks"][0].update(classes=["none", "cat", "none"]), "tasks[0].classes[2]: duplicate class 'none'"),
    (lambda d: d["tasks"][0].update(classes=["none"]),
     "tasks[0].classes: a multiclass task needs at least 2 classes; got 1"),
    (lambda d: d["tasks"][0].pop("type"), "tasks[0].type: required field is missing"),
    (lambda d: d.update(tasks=[]), "tasks: needs at least 1 item(s); got 0"),
    (lambda d: d["model"].update(depth=9), "model.depth: must be less than or equal to 8; got 9"),
    (lambda d: d["model"].update(image_size="big"), "model.image_size: must be a valid integer"),
    (lambda d: d.update(spec_version=2), "spec_version: 2 is not allowed; allowed: 1"),
    (lambda d: d["training"].update(early_stopping={"metric": "agee.rmse"}),
     "training.early_stopping.metric: 'agee.rmse' is not allowed; allowed: val_loss or <task>.<metric>"),
    (lambda d: d["training"].update(augmentation={"flip": True}),
     "training.augmentation.flip: unknown field; allowed: hflip, crop"),
    (lambda d: d["training"].update(device="tpu"), "training.device: 'tpu' is not allowed; allowed: auto, cpu, cuda"),
    (lambda d: d["tasks"][1].update(name="a.b"), "tasks[1].name: 'a.b' may not contain '.'"),
])
def test_rejected_with_field_path(mutate, expected):
    assert expected in errors_of(mutate)


def test_several_errors_reported_together():
    def mutate(d):
        d["tasks"][0]["foo"] = 1
        d["training"]["optimizer"] = "adam"
    err = errors_of(mutate)
    assert "tasks[0].foo" in err and "training.optimizer" in err


def test_chain_is_allowed_and_longer_cycle_reported_once():
    chain = {"tasks": [
        {"name": "a", "type": "binary"},
        {"name": "b", "type": "binary", "gate": {"task": "a"}},
        {"name": "c", "type": "binary", "gate": {"task": "b"}},
    ]}
    assert parse_spec(chain).gate_order() == ["a", "b", "c"]
    chain["tasks"][0]["gate"] = {"task": "c"}
    with pytest.raises(SpecError) as info:
        parse_spec(chain)
    assert info.value.errors == ["tasks[0].gate: gate cycle a -> c -> b -> a; chains are allowed, cycles are not"]


def test_bad_input_kinds():
    with pytest.raises(SpecError, match="spec: not valid JSON"):
        parse_spec("{nope")
    with pytest.raises(SpecError, match="spec: must be a JSON object"):
        parse_spec("[1, 2]")
    with pytest.raises(SpecError, match=r"tasks\[0\].loss: must be a loss name or an object"):
        parse_spec({"tasks": [{"name": "a", "type": "binary", "loss": 3}]})


def test_gate_on_multiclass_with_unknown_classes_is_accepted_until_resolved():
    spec = parse_spec({"tasks": [
        {"name": "cat", "type": "multiclass"},
        {"name": "size", "type": "regression", "gate": {"task": "cat", "classes": ["dog"]}},
    ]})
    with pytest.raises(ValueError, match="classes are not known"):
        spec.gate_class_indices("size")
