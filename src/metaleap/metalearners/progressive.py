"""Progressive neural networks (Rusu et al., 2016, arXiv:1606.04671), a Multi-CV baseline.

Each task gets a new column, a network of its own drawn at random; the columns of earlier
tasks are frozen, and the new column reads their activations through lateral connections.
Block i of column k computes, eq. (2) of the paper with its non-linear adapters,

    h_i^(k) = σ(W_i^(k) h_{i−1}^(k) + U_i^(k:<k) σ(V_i^(k:<k) (α_i^(k) h_{i−1}^(<k))))

where h_{i−1}^(<k) concatenates the earlier columns' outputs of block i − 1, α is a learned
scalar initialised to a small random value, V a 1×1 convolution down to one column's width
(a linear map before the head) and U a map of the layer's own shape. Transfer comes only
through these adapters; earlier columns never change, so nothing is forgotten, and the
network grows by a column per task.

Here a column is :class:`~metaleap.models.ConvNet`'s encoder (conv 3×3, BatchNorm, ReLU,
2× max-pool per block) with its own linear head; the lateral sum enters before the
BatchNorm. Frozen columns run in evaluation mode (their BatchNorm statistics fixed) and
without gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from metaleap.metalearners.sequential import SequentialLearner, SequentialTask, check_index
from metaleap.methods import ProgressiveOptions
from metaleap.models import init_modules
from metaleap.seeding import generator as make_generator


class _Adapter(nn.Module):
    """The lateral adapter U σ(V (α h)) from the earlier columns (eq. 2 of the paper)."""

    def __init__(self, inputs: int, width: int, outputs: int, conv: bool) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty((), device="meta"))
        if conv:
            self.reduce: nn.Module = nn.Conv2d(inputs, width, 1, device="meta")
            self.lift: nn.Module = nn.Conv2d(width, outputs, 3, padding=1, device="meta")
        else:
            self.reduce = nn.Linear(inputs, width, device="meta")
            self.lift = nn.Linear(width, outputs, device="meta")

    def forward(self, h: Tensor) -> Tensor:
        return self.lift(torch.relu(self.reduce(self.alpha * h)))


class _Column(nn.Module):
    """Column ``index``: conv blocks and a head, with adapters from ``index`` earlier columns."""

    def __init__(self, index: int, num_classes: int, channels: int, blocks: int,
                 features: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1,
                                             device="meta") for i in range(blocks))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, device="meta")
                                   for _ in range(blocks))
        self.head = nn.Linear(features, num_classes, device="meta")
        # block 0 reads the image only; blocks 1… and the head read the earlier columns
        self.laterals = nn.ModuleList(_Adapter(index * channels, channels, channels, True)
                                      for _ in range(blocks - 1) if index)
        self.head_lateral = _Adapter(index * features, features, num_classes, False) \
            if index else None

    def activations(self, x: Tensor, earlier: list[list[Tensor]]) -> list[Tensor]:
        """The output of every block; ``earlier[j][i]``: column j's block i output."""
        out: list[Tensor] = []
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            z = conv(h)
            if i and earlier:
                z = z + self.laterals[i - 1](torch.cat([a[i - 1] for a in earlier], 1))
            h = nn.functional.max_pool2d(torch.relu(norm(z)), 2)
            out.append(h)
        return out

    def logits(self, acts: list[Tensor], earlier: list[list[Tensor]]) -> Tensor:
        out = self.head(acts[-1].flatten(1))
        if self.head_lateral is not None:
            out = out + self.head_lateral(torch.cat([a[-1].flatten(1) for a in earlier], 1))
        return out


class ProgressiveNets(SequentialLearner):
    """Progressive neural networks: a column per task, lateral adapters from frozen columns.

    Column k is trained for task k (``task(k, …)``); its parameters are the only ones
    stepped. Weights come from the stream ``(seed, "progressive")``, column after column.
    """


    def __init__(self, num_classes: Sequence[int], options: ProgressiveOptions | None = None,
                 *, channels: int, blocks: int, seed: int, image_size: int = 28) -> None:
        super().__init__(num_classes, blocks, image_size)
        options = options or ProgressiveOptions()
        features = channels * self.side * self.side
        self.columns = nn.ModuleList(_Column(k, c, channels, blocks, features)
                                     for k, c in enumerate(self.num_classes))
        self.to_empty(device="cpu")
        g = make_generator(seed, "progressive")

        def draw_alpha(m: nn.Module) -> None:
            if isinstance(m, _Adapter):
                m.alpha.uniform_(0, options.alpha, generator=g)

        init_modules(self, g, draw_alpha)

    def forward(self, x: Tensor, column: int) -> Tensor:
        """Logits of task ``column``; the earlier columns run without gradients."""
        earlier: list[list[Tensor]] = []
        with torch.no_grad():
            for j in range(column):
                earlier.append(self.columns[j].activations(x, earlier))
        own = self.columns[column]
        return own.logits(own.activations(x, earlier), earlier)

    @contextmanager
    def task(self, index: int, batches_per_epoch: int) -> Iterator[SequentialTask]:
        check_index(self, index)
        yield _ColumnTask(self, index)


class _ColumnTask(SequentialTask):
    def __init__(self, net: ProgressiveNets, index: int) -> None:
        self.net, self.index = net, index
        self.parameters = list(net.columns[index].parameters())
        self.mode(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.index)

    def mode(self, train: bool) -> None:
        self.net.eval()  # earlier columns: frozen BatchNorm statistics
        self.net.columns[self.index].train(train)

    def stepped(self) -> None:
        """Nothing after the step: the column trains by plain SGD."""
