"""Batched tasks: the T tasks of a meta-batch, or the held-out tasks, as one computation.

``task_batching`` (``--task-batching auto|on|off``) trains the tasks that the sequential path
trains one after another together: their parameters and BatchNorm buffers stacked
(:class:`metaleap.stacked.StackedNet`, grouped convolutions), one forward and one backward
pass per inner step for all of them, and the plain SGD step on the stacked parameters. Each
task still draws its own batches and augmentation from its own generator, in the same order,
so every task sees exactly the data the sequential path feeds it, and the result equals the
sequential path's up to float rounding (``tests/test_batched.py``; how float32 rounding grows
over many steps: docs/experiments.md, "Batched tasks").

- :class:`BatchedMetaStep` is :class:`~metaleap.metalearners.SupervisedMetaStep` for a
  learner with a batched form (:meth:`MetaLearner.batched`: Leap, Reptile, FOMAML); the
  learner folds the tasks into its meta-batch in task order.
- :func:`train_tasks` is :func:`~metaleap.protocols.evaluation.train_task` for several tasks
  from one initialization: the same curves, AUC, path length and test error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.choices import TASK_BATCHING
from metaleap.metalearners import MetaLearner, TaskStream
from metaleap.metalearners.supervised import Batch, with_last
from metaleap.protocols.evaluation import Curve, error_rate
from metaleap.shared import ONE_PROCESS, Processes
from metaleap.stacked import StackedNet, stackable
from metaleap.tasks.base import Augment, Task, batches


def use_task_batching(mode: str, device: torch.device | str) -> bool:
    """Whether ``mode`` batches tasks on ``device``: ``"on"``, ``"off"``, or ``"auto"``: on
    CUDA only (on this project's CPU the batched step measured slower than the sequential
    one: docs/benchmarks.md, "Batched tasks")."""
    if mode not in TASK_BATCHING:
        raise ValueError(f"task_batching must be one of {', '.join(TASK_BATCHING)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and torch.device(device).type == "cuda")


def has_batched_form(learner: MetaLearner, model: nn.Module) -> bool:
    """Whether ``learner``'s meta-training has a batched form (it declares one,
    :attr:`MetaLearner.batched_form`) on ``model`` (stackable)."""
    return learner.batched_form and stackable(model)


def task_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Each task's mean cross-entropy (T,) from its logits (T, B, classes) and labels (T, B)."""
    per_example = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return per_example.view(y.shape).mean(1)


def _stack(batch: Sequence[Batch]) -> Batch:
    return torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])


@torch.no_grad()
def _sgd(params: list[Tensor], lr: float) -> None:
    """Plain SGD on the stacked parameters, θ ← θ − lr·∇f, as ``torch.optim.SGD`` steps each
    task; the gradients are cleared (``set_to_none``)."""
    live = [p for p in params if p.grad is not None]
    torch._foreach_add_(live, [p.grad for p in live], alpha=-lr)
    for p in params:
        p.grad = None


class BatchedMetaStep:
    """:class:`~metaleap.metalearners.SupervisedMetaStep` with the meta-batch's tasks batched.

    Every task starts from θ⁰ (the model's other parameters, such as a per-task head, from
    their values at construction), trains K plain-SGD steps of cross-entropy at ``inner_lr``
    on its own batches and closes with f(θ^K) on one more batch (with its gradient when the
    learner needs a query gradient). The tasks of one call must have equal numbers of
    batches of equal shapes.
    """

    def __init__(self, learner: MetaLearner, model: nn.Module, *, inner_lr: float) -> None:
        if not has_batched_form(learner, model):
            raise ValueError(f"{type(learner).__name__} has no batched form on this model")
        self.learner, self.model, self.inner_lr = learner, model, inner_lr
        learned = learner.initialization()
        self.start = {n: t.detach().clone() for n, t in model.state_dict().items()
                      if n not in learned}

    def __call__(self, tasks: Sequence[TaskStream], processes: Processes = ONE_PROCESS
                 ) -> dict[str, float]:
        """Adapt from θ⁰ on this process's share of the tasks, all at once, and take one
        meta-step on the sums of every process."""
        mine = self.learner.share(tasks, processes)
        if mine:
            self.run(mine)
        return self.learner.meta_update(processes.reduce)

    def run(self, tasks: Sequence[TaskStream]) -> None:
        """Train the tasks together and fold them into the learner's meta-batch."""
        learner, count = self.learner, len(tasks)
        handle = learner.batched(count)
        assert handle is not None
        net = StackedNet(self.model, count, {**self.start, **learner.initialization()})
        params = list(net.params.values())
        streams = [with_last(task.batches) for task in tasks]
        while True:
            step = [next(s) for s in streams]
            last = {is_last for _, is_last in step}
            if len(last) > 1:
                raise ValueError("batched tasks need equal numbers of inner steps")
            x, y = _stack([batch for batch, _ in step])
            if last == {True}:
                break
            losses = task_losses(net(x), y)
            losses.sum().backward()
            handle.observe(net.params, {n: torch.zeros_like(p) if p.grad is None else p.grad
                                        for n, p in net.params.items()}, losses)  # None: 0
            _sgd(params, self.inner_lr)
        with torch.set_grad_enabled(handle.query_grad):
            final = task_losses(net(x), y)
        grads = None
        if handle.query_grad:  # ∇f(θ^K) of each task's query loss
            wanted = [net.params[n] for n in handle.names]
            found = torch.autograd.grad(final.sum(), wanted, allow_unused=True)
            grads = {n: torch.zeros_like(p) if g is None else g
                     for n, p, g in zip(handle.names, wanted, found, strict=True)}
        handle.finish({n: p.detach() for n, p in net.params.items()}, final, grads,
                      net.buffers)


def train_tasks(make_model: Callable[[], nn.Module], init: dict[str, Tensor],
                tasks: Sequence[Task], steps: int, lr: float, batch_size: int,
                generators: Sequence[torch.Generator], augment: Augment | None
                ) -> list[Curve]:
    """:func:`~metaleap.protocols.evaluation.train_task` for every task of ``tasks`` (task t
    with ``generators[t]``), trained together from ``init``: the same curves.

    Point i < K is each task's error and loss on the batch step i trains on, at θ^i; point K
    one more batch at θ^K (BatchNorm in training mode, as in the sequential path). Step i
    moves task t by lr · ‖∇f_t‖. The test error is measured task by task with the model in
    eval mode (its own BatchNorm running statistics).
    """
    if not tasks:
        return []
    model = make_model()
    model.load_state_dict(init, strict=False)
    net = StackedNet(model, len(tasks), model.state_dict())
    params = [p for p in net.params.values() if p.requires_grad]
    streams: list[Iterator[Batch]] = [batches(task, batch_size, steps + 1, g, augment)
                                      for task, g in zip(tasks, generators, strict=True)]
    errors, losses, norms = [], [], []
    for i in range(steps + 1):
        x, y = _stack([next(s) for s in streams])
        with torch.set_grad_enabled(i < steps):
            logits = net(x)
            loss = task_losses(logits, y)
        errors.append((logits.argmax(-1) != y).float().mean(1))
        losses.append(loss.detach())
        if i < steps:
            loss.sum().backward()
            per_param = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
                                     for p in params])
            norms.append(lr * torch.linalg.vector_norm(per_param, dim=0))
            _sgd(params, lr)
    errors_, losses_ = torch.stack(errors, 1).tolist(), torch.stack(losses, 1).tolist()
    norms_ = torch.stack(norms, 1).tolist() if norms else [[] for _ in tasks]
    curves = []
    for t, task in enumerate(tasks):
        trained = make_model()
        trained.load_state_dict(net.task_state(t))
        trained.eval()
        curves.append(Curve(train_error=errors_[t], train_loss=losses_[t],
                            test_error=error_rate(trained, task.test_x, task.test_y),
                            step_norms=norms_[t]))
    return curves
