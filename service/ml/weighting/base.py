"""Strategy: how per-head losses become gradients. One object per training run, an nn.Module so that its
parameters and buffers are in its state_dict; anything else (an own optimiser, an RNG) is `extra state`.

The trainer calls, per step: `backward(task_losses, counts, shared_params)` (must leave `.grad` on every parameter
that should move), the optimiser step, then `after_step()`; per epoch `end_epoch(mean_train_losses)`.
Masks are exact: a head with count 0 in the batch is not `active`: its loss is not used, no strategy state of it
changes, and the trainer clears the gradients of its head (and of `parameters_for(task)`), so AdamW skips them.
"""

from __future__ import annotations

from torch import Tensor, nn

from service.ml.strict import StrictModel


class NoParams(StrictModel):
    pass


class Strategy(nn.Module):
    name = ""
    Config: type[StrictModel] = NoParams  # the strategy's spec parameters (besides `strategy`)
    paper = ""
    multi_backward = False  # runs several backward passes over one graph (retain_graph)

    def __init__(self, spec):
        super().__init__()
        self.task_names = list(spec.task_names)
        self.spec_weights = {t.name: t.weight for t in spec.tasks}
        self.heads = {t.name: t.head for t in spec.tasks}
        self.config = spec.weighting

    def bind(self, model: nn.Module) -> None:
        """Called once with the network before training (strategies that look at specific layers keep them)."""

    @staticmethod
    def active(task_losses: dict[str, Tensor], counts: dict[str, int]) -> list[str]:
        return [n for n in task_losses if counts.get(n, 0) > 0]

    def factors(self, active: list[str]) -> dict[str, Tensor | float]:
        """Factor on each active task's loss for a plain weighted-sum backward."""
        return {n: self.spec_weights[n] for n in active}

    def combine(self, task_losses: dict[str, Tensor], counts: dict[str, int]) -> Tensor:
        """sum over active tasks of factor * loss (plus any regulariser); a graph-connected 0 when none is."""
        active = self.active(task_losses, counts)
        if not active:
            return sum(loss * 0.0 for loss in task_losses.values())
        f = self.factors(active)
        return sum(f[n] * task_losses[n] for n in active) + self.regulariser(active)

    def regulariser(self, active: list[str]) -> Tensor | float:
        return 0.0

    def backward(self, task_losses: dict[str, Tensor], counts: dict[str, int], shared_params: list) -> Tensor:
        """Put gradients on the parameters; returns the (detached) total that was minimised."""
        total = self.combine(task_losses, counts)
        total.backward()
        return total.detach()

    def after_step(self) -> None:
        """After the optimiser step (e.g. update own weights, clamp)."""

    def end_epoch(self, mean_train_losses: dict[str, float]) -> None:
        """Once per epoch with the mean train loss of each task that had labels that epoch."""

    def weights(self) -> dict[str, float]:
        """Current effective factor on each task's loss (for history and artifacts)."""
        return dict(self.spec_weights)

    def parameters_for(self, task: str) -> list[nn.Parameter]:
        """Strategy parameters that belong to `task` and are trained by the main optimiser."""
        return []

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimiser trains (no weight decay); strategies with their own optimiser: none."""
        return list(self.parameters())
