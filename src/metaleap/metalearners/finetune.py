"""Multi-headed finetuning (SPEC §2.1 baseline): pretrain one network on the pooled tasks.

The pretraining tasks share one encoder and each has its own linear head (task ``index`` →
head ``index``). A meta-step is ordinary SGD on the meta-batch's inner-step batches,
interleaved across tasks (one batch of each task in turn), each through its task's head; the
extra batch of each stream only gives the ``loss_final`` metric. The initialization for a new
task is the encoder alone: a held-out task keeps the fresh head of its own model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.metalearners.base import Batch, LossFn, LossLog, MetaLearner, TaskStream, with_last
from metaleap.models import MultiHeadNet
from metaleap.seeding import generator


class Finetune(MetaLearner):
    """Pretrain a multi-headed network; hand its encoder on as the initialization.

    Args:
        model: a network with an ``encoder`` and an ``nn.Linear`` ``head`` (e.g.
            :class:`~metaleap.models.ConvNet`); its encoder is trained in place.
        num_tasks: number of pretraining tasks, hence of heads.
        inner_lr: lr of the pretraining SGD.
        seed: the heads are drawn from the stream ``(seed, "finetune-heads")``.
        momentum: momentum of the pretraining SGD (0: plain SGD).
        loss_fn: the task loss, ``loss_fn(logits, y)``.
    """

    name = "finetune"

    def __init__(self, model: nn.Module, *, num_tasks: int, inner_lr: float = 0.1,
                 seed: int = 0, momentum: float = 0.0,
                 loss_fn: LossFn = F.cross_entropy) -> None:
        super().__init__()
        self.net = MultiHeadNet(model, num_tasks, generator(seed, "finetune-heads"))
        self.loss_fn = loss_fn
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=inner_lr, momentum=momentum)

    def meta_step(self, tasks: Sequence[TaskStream]) -> dict[str, float]:
        net, log = self.net, LossLog()
        net.train()
        for task in tasks:
            if not 0 <= task.index < len(net.heads):
                raise IndexError(f"task index {task.index} has no head ({len(net.heads)} heads)")
        streams = [with_last(task.batches) for task in tasks]
        first: list[Tensor | None] = [None] * len(tasks)
        step_loss: list[Tensor | None] = [None] * len(tasks)
        query: list[Batch | None] = [None] * len(tasks)
        active = list(range(len(tasks)))
        while active:  # round-robin: one inner batch of each unfinished task in turn
            for t in list(active):
                (x, y), last = next(streams[t])
                if last:
                    query[t] = (x, y)
                    active.remove(t)
                    continue
                loss = self.loss_fn(net(x, tasks[t].index), y)
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                first[t] = loss if first[t] is None else first[t]
                step_loss[t] = loss
        with torch.no_grad():
            for t, task in enumerate(tasks):
                x, y = query[t]  # type: ignore[misc]
                log.add(first[t], step_loss[t], self.loss_fn(net(x, task.index), y))  # type: ignore[arg-type]
        return log.metrics()

    def initialization(self) -> dict[str, Tensor]:
        """The encoder's parameters and buffers under the model's names (``"encoder.…"``)."""
        return {n: t.detach() for n, t in self.net.state_dict(keep_vars=True).items()
                if not n.startswith("heads.")}

    def extra_state(self) -> dict[str, object]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, object]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
