"""Weighting-strategy registry: one module per strategy (fixed, uncertainty, dwa, gradnorm, pcgrad).

Add a strategy: a new module here with a Strategy subclass decorated by @register_strategy, imported below.
"""

from __future__ import annotations

from service.ml.weighting.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name or cls.name in STRATEGIES:
        raise ValueError(f"weighting strategy {cls.name!r}: missing or already registered")
    STRATEGIES[cls.name] = cls
    return cls


def make_weighting(spec) -> Strategy:
    return STRATEGIES[spec.weighting.strategy](spec)


from service.ml.weighting import fixed, uncertainty, dwa, gradnorm, pcgrad  # noqa: E402, F401, I001
