"""fixed: total = sum of spec weight * loss over the heads with labels in the batch."""

from __future__ import annotations

from service.ml.weighting import register_strategy
from service.ml.weighting.base import Strategy


@register_strategy
class Fixed(Strategy):
    name = "fixed"
