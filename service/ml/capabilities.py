"""What this engine can do, from its registries: head types, losses (built-in and plugins) and weighting
strategies with their parameters (JSON Schema). Served by GET /v1/capabilities."""

from __future__ import annotations

import sys

from service.ml import losses as L
from service.ml.heads import HEAD_TYPES
from service.ml.weighting import STRATEGIES


def _params(model) -> dict:
    schema = model.model_json_schema()
    props = {k: v for k, v in schema.get("properties", {}).items() if k != "type"}
    return {"properties": props, **({"$defs": schema["$defs"]} if "$defs" in schema else {})}


def _doc(cls) -> str:
    return (sys.modules[cls.__module__].__doc__ or "").strip().split("\n")[0]


def capabilities() -> dict:
    registry = L.registry()
    heads = {
        name: {"default_loss": h.default_loss, "losses": L.allowed_losses(name), "classes": h.has_classes,
               "can_gate": h.can_gate, "output": "vector" if h.vector_output else "scalar",
               "metrics": list(h.metrics), "gated_metrics": list(h.gated_metrics), "fields": _params(h.Fields),
               "doc": _doc(type(h))}
        for name, h in HEAD_TYPES.items()
    }
    losses = {name: {"heads": list(e.heads), "link": e.link, "params": _params(e.config), "doc": e.doc,
                     "plugin": e.plugin} for name, e in registry.items()}
    weightings = {name: {"params": _params(s.Config), "paper": s.paper,
                         "doc": _doc(s)}
                  for name, s in STRATEGIES.items()}
    weightings["dwa"]["params"]["properties"]["temperature"] = {"type": "number", "default": 2.0,
                                                               "exclusiveMinimum": 0}
    return {"head_types": heads, "losses": losses, "weightings": weightings,
            "loss_plugin_group": L.ENTRY_POINT_GROUP, "plugin_errors": list(L.PLUGIN_ERRORS)}
