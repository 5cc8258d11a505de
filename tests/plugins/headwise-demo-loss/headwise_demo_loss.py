"""A Headwise loss plugin: importing this module (the `headwise.losses` entry point) registers `demo_cubic`."""

from pydantic import Field

from service.ml.losses import LossConfig, register_loss


class CubicConfig(LossConfig):
    scale: float = Field(1.0, gt=0.0)


@register_loss("demo_cubic", heads=("regression",), config=CubicConfig, plugin="headwise-demo-loss")
def demo_cubic(out, target, p):
    """scale * |output - target|^3 (a test plugin)."""
    return p.scale * (out - target.float()).abs() ** 3
