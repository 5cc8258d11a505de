"""Head-type registry: one module per head type (multiclass, binary, regression, multilabel).

Add a head type: a new module here with a HeadType subclass decorated by @register_head, imported below.
"""

from __future__ import annotations

from service.ml.heads.base import HeadType

HEAD_TYPES: dict[str, HeadType] = {}


def register_head(cls: type[HeadType]) -> type[HeadType]:
    """Class decorator: register one instance of a HeadType subclass under cls.name."""
    if not cls.name or cls.name in HEAD_TYPES:
        raise ValueError(f"head type {cls.name!r}: missing or already registered")
    HEAD_TYPES[cls.name] = cls()
    return cls


def head_type(name: str) -> HeadType:
    try:
        return HEAD_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown head type '{name}'; head types are: {', '.join(HEAD_TYPES)}") from None


def head_of(task) -> HeadType:
    return head_type(task.type)


# built-in head types (import order = the order listed in messages and capabilities)
from service.ml.heads import multiclass, binary, regression, multilabel  # noqa: E402, F401, I001
