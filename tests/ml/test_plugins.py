"""Loss plugins through the `headwise.losses` entry point: tests/plugins/headwise-demo-loss, installed into the test
environment by `scripts/setup test`. Its loss is then usable in specs, computed, listed and trained with."""

from __future__ import annotations

import importlib.metadata

import torch

from service.ml import losses as L
from service.ml.capabilities import capabilities
from service.ml.spec import parse_spec


def test_demo_plugin_is_installed_as_an_entry_point():
    names = [ep.name for ep in importlib.metadata.entry_points(group=L.ENTRY_POINT_GROUP)]
    assert "demo_cubic" in names, "the test plugin is not installed: run `scripts/setup test`"


def test_plugin_loss_in_a_spec_computes_and_is_listed():
    spec = parse_spec({"tasks": [{"name": "r", "type": "regression",
                                  "loss": [{"type": "mse"}, {"type": "demo_cubic", "scale": 2.0, "weight": 0.5}]}]})
    out, tgt, m = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), torch.tensor([True, True])
    loss, _ = L.task_losses(spec, {"r": out}, {"r": tgt}, {"r": m})["r"]
    # per sample: (1 + 0.5 * 2 * 1) and (4 + 0.5 * 2 * 8) -> mean (2 + 12) / 2
    assert float(loss) == 7.0
    caps = capabilities()
    entry = caps["losses"]["demo_cubic"]
    assert entry["plugin"] == "headwise-demo-loss" and entry["heads"] == ["regression"]
    assert "scale" in entry["params"]["properties"] and caps["plugin_errors"] == []
    assert set(caps["head_types"]) == {"multiclass", "binary", "regression", "multilabel"}
    assert set(caps["weightings"]) == {"fixed", "uncertainty", "dwa", "gradnorm", "pcgrad"}
    assert caps["head_types"]["regression"]["losses"][-1] == "demo_cubic"


def test_unknown_loss_message_lists_plugins_too():
    try:
        parse_spec({"tasks": [{"name": "r", "type": "regression", "loss": "nope"}]})
    except ValueError as exc:
        assert "demo_cubic" in str(exc) and "quantile" in str(exc)
    else:
        raise AssertionError("accepted an unknown loss")


def test_the_api_loads_plugins_at_start(tmp_path):
    """In a fresh interpreter, creating the app (nothing parsed yet) already registers the plugin's loss."""
    import subprocess
    import sys

    code = ("from service.config import Settings; from service.api.app import create_app; "
            "from service.ml import losses as L; assert 'demo_cubic' not in L.LOSSES; "
            f"create_app(Settings(DATA_DIR={str(tmp_path)!r}, DATABASE_URL='sqlite:///{tmp_path}/db.sqlite')); "
            "assert 'demo_cubic' in L.LOSSES, sorted(L.LOSSES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
