"""Hard attention to the task (Serrà, Surís, Miron & Karatzoglou, 2018, arXiv:1801.01423).

One network is shared by every task; each task t owns an embedding e_l^t per layer l, and
gates the layer's units with a^t_l = σ(s · e_l^t), eq. (1). During training the scale s is
annealed over each epoch, eq. (2): batch b of B uses

    s = 1/s_max + (s_max − 1/s_max) · (b − 1)/(B − 1),

so the gate starts soft and ends nearly binary; for evaluation s = s_max. After task t the
cumulative attention a^{≤t} = max(a^{<t}, a^t) (at s_max) marks the units earlier tasks use,
and later tasks cannot change them: the gradient of the weight between unit i of layer l and
unit j of layer l − 1 is multiplied by 1 − min(a^{<t}_{l,i}, a^{<t}_{l−1,j}), eq. (3)
(biases by 1 − a^{<t}_{l,i}). A task still reads those units, which is how it transfers.
Because s varies, the embeddings' gradients are compensated, eq. (4),

    q' = s_max [cosh(s e) + 1] / (s [cosh(e) + 1]) · q,

and the loss adds an attention regulariser that keeps units free for later tasks, eq. (5),

    c · Σ_l Σ_i a^t_{l,i} (1 − a^{<t}_{l,i}) / Σ_l Σ_i (1 − a^{<t}_{l,i}).

The network is :class:`~metaleap.models.ConvNet`'s encoder (conv 3×3, BatchNorm, ReLU,
2× max-pool per block) with the gate after the ReLU, units being the channels, and a linear
head per task. The paper's networks have no BatchNorm; here each task has its own (its
affine parameters and statistics are per task, like its head), so that the protection of
eq. (3) is exact: shared statistics would change earlier tasks' units. Embeddings start
N(0, 1) and are clamped to ±``clamp`` after each step, as in the authors' implementation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.metalearners.sequential import SequentialLearner, SequentialTask, check_index
from metaleap.methods import HATOptions
from metaleap.models import init_modules
from metaleap.seeding import generator as make_generator

#: cosh(s e) is evaluated with s e clipped to this magnitude (float32 range).
COSH_LIMIT = 50.0


class HAT(SequentialLearner):
    """Hard attention to the task over the channels of shared conv blocks.

    Weights come from the stream ``(seed, "hat")``. The buffer ``used`` is the cumulative
    attention a^{<t} (blocks × channels), updated when a task ends.
    """


    def __init__(self, num_classes: Sequence[int], options: HATOptions | None = None, *,
                 channels: int, blocks: int, seed: int, image_size: int = 28) -> None:
        super().__init__(num_classes, blocks, image_size)
        self.options = options or HATOptions()
        tasks = len(self.num_classes)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1,
                                             device="meta") for i in range(blocks))
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels, device="meta")
                                                 for _ in range(blocks)) for _ in range(tasks))
        self.embeddings = nn.ParameterList(nn.Parameter(torch.empty(blocks, channels,
                                                                    device="meta"))
                                           for _ in range(tasks))
        features = channels * self.side * self.side
        self.heads = nn.ModuleList(nn.Linear(features, c, device="meta")
                                   for c in self.num_classes)
        self.register_buffer("used", torch.empty(blocks, channels, device="meta"))
        self.to_empty(device="cpu")
        g = make_generator(seed, "hat")
        with torch.no_grad():
            init_modules(self, g)
            for e in self.embeddings:
                e.normal_(generator=g)
            self.used.zero_()

    def gates(self, task: int, s: float) -> Tensor:
        """a^t = σ(s e^t), one row per block, one value per channel (eq. 1)."""
        return torch.sigmoid(s * self.embeddings[task])

    def forward(self, x: Tensor, task: int, s: float) -> Tensor:
        """Logits of ``task`` with its units gated at scale ``s``."""
        gates = self.gates(task, s)
        h = x
        for conv, norm, a in zip(self.convs, self.norms[task], gates, strict=True):
            h = F.max_pool2d(torch.relu(norm(conv(h))) * a[:, None, None], 2)
        return self.heads[task](h.flatten(1))

    @contextmanager
    def task(self, index: int, batches_per_epoch: int) -> Iterator[SequentialTask]:
        """Train task ``index``; on success its attention joins ``used``."""
        check_index(self, index)
        yield _HATTask(self, index, batches_per_epoch)
        with torch.no_grad():
            torch.maximum(self.used, self.gates(index, self.options.s_max), out=self.used)


class _HATTask(SequentialTask):
    def __init__(self, net: HAT, index: int, batches_per_epoch: int) -> None:
        self.net, self.index, self.per_epoch = net, index, max(1, batches_per_epoch)
        self.embedding = net.embeddings[index]
        self.parameters = [*net.convs.parameters(), self.embedding,
                           *net.norms[index].parameters(), *net.heads[index].parameters()]
        # eq. (3): what earlier tasks use stays as it is
        free = 1 - net.used
        self.keep = []
        for i in range(len(net.convs)):
            out = net.used[i][:, None]
            both = out if i == 0 else torch.minimum(out, net.used[i - 1][None, :])
            self.keep.append((1 - both[:, :, None, None], free[i]))
        self.batch, self.training = 0, True
        self.mode(True)

    @property
    def s(self) -> float:
        """The gate scale of the next forward pass (eq. 2; s_max when evaluating)."""
        s_max = self.net.options.s_max
        if not self.training or self.per_epoch == 1:
            return s_max
        b = self.batch % self.per_epoch
        return 1 / s_max + (s_max - 1 / s_max) * b / (self.per_epoch - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.index, self.s)

    def mode(self, train: bool) -> None:
        self.training = train
        self.net.train(train)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        free = 1 - self.net.used
        a = self.net.gates(self.index, self.s)
        penalty = (a * free).sum() / free.sum().clamp_min(1e-12)  # eq. (5)
        return F.cross_entropy(logits, y) + self.net.options.c * penalty

    @torch.no_grad()
    def _rules(self) -> None:
        for conv, (weight, bias) in zip(self.net.convs, self.keep, strict=True):
            if conv.weight.grad is not None:
                conv.weight.grad.mul_(weight)
            if conv.bias is not None and conv.bias.grad is not None:
                conv.bias.grad.mul_(bias)
        e, s = self.embedding, self.s
        if e.grad is not None:  # eq. (4)
            num = torch.cosh((s * e).clamp(-COSH_LIMIT, COSH_LIMIT)) + 1
            e.grad.mul_(self.net.options.s_max / s * num / (torch.cosh(e) + 1))

    def backward(self, loss: Tensor) -> None:
        loss.backward()
        self._rules()

    @torch.no_grad()
    def stepped(self) -> None:
        clamp = self.net.options.clamp
        self.embedding.clamp_(-clamp, clamp)
        self.batch += 1
