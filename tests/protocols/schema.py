"""Validate bodies against the Open Inference Protocol's published OpenAPI document (open_inference_rest.yaml,
vendored unchanged from kserve/open-inference-protocol; its header names the commit)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import yaml

SPEC = Path(__file__).with_name("open_inference_rest.yaml")


@cache
def _components() -> dict:
    return yaml.safe_load(SPEC.read_text())["components"]


def check(name: str, body: dict, components: dict | None = None) -> None:
    """Raise jsonschema.ValidationError unless `body` is a valid #/components/schemas/<name>."""
    comps = components or _components()
    assert name in comps["schemas"], f"{name} is not a schema of the protocol"
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{name}", "components": comps})


def check_binary_response(head: dict, binary_bytes: int) -> None:
    """The JSON header of a binary-extension response. The extension (Triton's extension_binary_data.md) leaves out
    `data` of an output sent as binary and gives `parameters.binary_data_size` instead: so binary outputs are checked
    against `response_output` minus `data` from its required list, JSON ones against the schema as published; the
    sizes must add up to the bytes after the header."""
    comps = copy.deepcopy(_components())
    out = comps["schemas"]["response_output"]
    out["required"] = [r for r in out["required"] if r != "data"]
    check("inference_response", head, comps)
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"] if "data" not in o]
    assert all(isinstance(s, int) for s in sizes) and sum(sizes) == binary_bytes
    for o in head["outputs"]:
        check("response_output", o, None if "data" in o else comps)
