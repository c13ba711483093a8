"""Training a task from an initialization and scoring how it learned (docs/experiments.md).

Every method is judged by the same procedure: load its initialization into a fresh model,
train the task for K SGD steps, and record the training error and loss at every step, the
area under those curves, the length of the learning path and the final error on the held-out
images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metaleap.tasks.base import Augment, Task, batches


@dataclass(frozen=True)
class Curve:
    """How one task trained: K + 1 points, θ⁰ … θ^K, the K step sizes ‖θ^{i+1} − θ^i‖ and
    the held-out error at θ^K."""

    train_error: list[float]
    train_loss: list[float]
    test_error: float
    step_norms: list[float]

    @property
    def error_auc(self) -> float:
        return auc(self.train_error)

    @property
    def loss_auc(self) -> float:
        return auc(self.train_loss)

    @property
    def path_length(self) -> float:
        """Length of the learning path γ = (θ, f(θ)) that Leap shortens (docs/leap.md, p = 1):
        Σ_i ‖(θ^{i+1} − θ^i, f^{i+1} − f^i)‖₂, with f^i the loss of the batch at θ^i."""
        return self.cumulative_path[-1]

    @property
    def cumulative_path(self) -> list[float]:
        """The length of γ from θ⁰ to each point θ^i (0 at θ⁰, :attr:`path_length` at θ^K)."""
        if len(self.step_norms) != len(self.train_loss) - 1:
            raise ValueError(f"{len(self.step_norms)} steps for {len(self.train_loss)} points")
        losses = self.train_loss
        return list(itertools.accumulate(
            (math.hypot(d, b - a) for d, a, b in zip(self.step_norms, losses[:-1], losses[1:],
                                                     strict=True)), initial=0.0))


def auc(curve: list[float]) -> float:
    """Trapezoid area under a per-step curve divided by its number of steps (docs/experiments.md).

    For an error curve this lies in [0, 1]; lower means the task was learned faster.
    """
    if len(curve) < 2:
        raise ValueError("an AUC needs at least two points")
    points = torch.tensor(curve, dtype=torch.float64)
    return float(torch.trapezoid(points)) / (len(curve) - 1)


@torch.no_grad()
def error_rate(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, chunk: int = 500
               ) -> float:
    """Classification error of ``model`` (a network in its current train/eval mode, or any
    function giving logits) on ``(x, y)``."""
    wrong = sum(int((model(x[i:i + chunk]).argmax(1) != y[i:i + chunk]).sum())
                for i in range(0, len(y), chunk))
    return wrong / len(y)


def train_task(make_model: Callable[[], nn.Module], init: dict[str, Tensor], task: Task,
               steps: int, lr: float, batch_size: int, generator: torch.Generator,
               augment: Augment | None) -> Curve:
    """Train ``task`` for ``steps`` SGD steps from ``init``; record the curve (docs/experiments.md).

    Point i < K is the error and loss of the batch that step i trains on, at θ^i (before the
    step); point K is one more batch from the same stream, at θ^K. Step i moves θ by
    lr · ‖∇f‖ (plain SGD). The test error uses the model in eval mode (BatchNorm running
    statistics of this task).
    """
    model = make_model()
    model.load_state_dict(init, strict=False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    errors, losses, norms = [], [], []
    for i, (x, y) in enumerate(batches(task, batch_size, steps + 1, generator, augment)):
        if i == steps:
            with torch.no_grad():
                logits = model(x)
        else:
            logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        errors.append((logits.argmax(1) != y).float().mean())
        losses.append(loss.detach())
        if i < steps:
            loss.backward()
            norms.append(lr * torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
            opt.step()
            opt.zero_grad()
    model.eval()
    return Curve(train_error=torch.stack(errors).tolist(), train_loss=torch.stack(losses).tolist(),
                 test_error=error_rate(model, task.test_x, task.test_y),
                 step_norms=torch.stack(norms).tolist() if norms else [])
