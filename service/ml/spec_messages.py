"""Spec error messages: pydantic's errors turned into "field.path: message" strings that say what is allowed."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from service.ml.strict import SpecError


def convert_errors(exc: ValidationError, data: Any, root: type[BaseModel]) -> list[str]:
    """pydantic errors of the spec model `root` -> 'field.path: message' strings naming what is allowed."""
    out: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path, ann = _walk(loc, root)
        if err["type"] == "missing" and loc and loc[-1] == "loss":
            continue  # only happens when the task type itself is invalid (reported separately)
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            out += [f"{path}.{e}" if path else e for e in inner.errors]
            continue
        out.append(f"{path or 'spec'}: {_message(err, loc, ann, root)}")
    return out


def show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(err: dict, loc: tuple, ann: Any, root: type[BaseModel]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        parent = _unwrap(_walk(loc[:-1], root)[1])
        allowed = ", ".join(parent.model_fields) if _is_model(parent) else "?"
        return f"unknown field; allowed: {allowed}"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        allowed = ", ".join(str(a) for a in typing.get_args(_unwrap(ann))) or err["ctx"].get("expected", "")
        return f"{show(value)} is not allowed; allowed: {allowed}"
    if kind == "too_short":
        return f"needs at least {err['ctx']['min_length']} item(s); got {err['ctx']['actual_length']}"
    msg = err["msg"].replace("Input should be", "must be")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{msg}; got {show(value)}"


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _unwrap(ann: Any) -> Any:
    """Strip Annotated and `| None`; a real union of several members is returned as is."""
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(members) != 1:
                return ann
            ann = members[0]
        else:
            return ann


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[str, Any]:
    """Map a pydantic error location to a display path ("tasks[1].loss.delta") and the annotation there."""
    path, ann = "", root
    for part in loc:
        ann = _unwrap(ann)
        if typing.get_origin(ann) in (Union, types.UnionType) and isinstance(part, str):
            tagged = [m for m in typing.get_args(ann) if _is_model(m) and m.model_fields.get("type")
                      and m.model_fields["type"].default == part]
            if tagged:  # discriminated-union tag in the location: not shown
                ann = tagged[0]
                continue
        if isinstance(part, int):
            path += f"[{part}]"
            ann = typing.get_args(ann)[0] if typing.get_origin(ann) is list else None
        else:
            path += f".{part}" if path else str(part)
            ann = ann.model_fields[part].annotation if _is_model(ann) and part in ann.model_fields else None
    return path, ann
