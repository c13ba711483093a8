"""T copies of a convnet trained as one network: grouped convolutions over stacked tasks.

Each task keeps its own parameters and BatchNorm buffers, stored stacked along a leading task
dimension: tensor (T, …) per name of the model, row t being task t's. The forward pass runs
the model's layers once for all tasks: the T images of a step lie side by side along the
channels, (B, T·C, H, W), so that

- a convolution is one grouped convolution (``groups = T``): group t sees task t's channels
  and weights only;
- BatchNorm is one BatchNorm over T·C channels: its statistics are per channel, so per task;
- ReLU and max-pooling act per channel;
- after the flatten each task's features are a row block (T, B, F) and a linear layer is one
  batched matrix product.

No value crosses from one task to another, so the gradient of the sum of the T task losses
is each task's own gradient, row by row. On this project's CPU this measured faster than
``torch.func.vmap`` over ``functional_call`` (docs/benchmarks.md, "Batched tasks").
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap.models import ConvNet

__all__ = ["StackedNet", "stackable"]

_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear)


def _chain(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The layers ``module``'s forward runs, in order, with their name prefixes."""
    if isinstance(module, ConvNet):
        yield from _chain(module.encoder, prefix + "encoder.")
        yield prefix + "head.", module.head
    elif isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _chain(child, f"{prefix}{name}.")
    else:
        yield prefix, module


def stackable(model: nn.Module) -> bool:
    """Whether :class:`StackedNet` can run ``model``: a :class:`~metaleap.models.ConvNet` or
    a chain of ``nn.Sequential`` over conv, BatchNorm, ReLU, max-pool, flatten and linear
    layers."""
    if not isinstance(model, (ConvNet, nn.Sequential)):
        return False
    for _, layer in _chain(model):
        if not isinstance(layer, _LAYERS):
            return False
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            return False
        if isinstance(layer, nn.BatchNorm2d) and not (layer.affine and
                                                      layer.track_running_stats):
            return False
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return False
    return True


class StackedNet:
    """``count`` tasks of ``model``'s architecture as one computation (see the module doc).

    ``state`` gives every parameter and buffer of ``model`` by name (unstacked): every task
    starts from it. :attr:`params` are the stacked parameters, leaves that require grad (an
    optimizer steps them); :attr:`buffers` the stacked buffers, updated in place by a forward
    pass in training mode, as ``nn.BatchNorm2d`` updates its own. ``model`` itself is only
    read for its layers' settings.
    """

    def __init__(self, model: nn.Module, count: int, state: dict[str, Tensor]) -> None:
        if not stackable(model):
            raise ValueError(f"{type(model).__name__} has a layer StackedNet cannot stack")
        self.count, self.layers = count, list(_chain(model))

        def stack(t: Tensor) -> Tensor:
            return t.detach().unsqueeze(0).repeat(count, *([1] * t.dim())).contiguous()

        self.params = {n: stack(state[n]).requires_grad_(p.requires_grad)
                       for n, p in model.named_parameters()}
        self.buffers = {n: stack(state[n]) for n, _ in model.named_buffers()}

    def task_state(self, t: int) -> dict[str, Tensor]:
        """Task ``t``'s parameters and buffers under the model's names (detached views)."""
        return {n: v[t].detach() for n, v in {**self.params, **self.buffers}.items()}

    def __call__(self, x: Tensor, train: bool = True) -> Tensor:
        """The T tasks' outputs (T, B, out) for their inputs ``x`` (T, B, …); BatchNorm in
        training mode (batch statistics, running statistics updated) unless ``train`` is
        False."""
        p, b, T = self.params, self.buffers, self.count
        batch = x.shape[1]
        flat = x.dim() == 3
        h = x if flat else x.transpose(0, 1).reshape(batch, T * x.shape[2], *x.shape[3:])
        for name, layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                w = p[name + "weight"]
                bias = p[name + "bias"].reshape(-1) if layer.bias is not None else None
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias, layer.stride, layer.padding,
                             layer.dilation, T * layer.groups)
            elif isinstance(layer, nn.BatchNorm2d):
                factor = 0.0
                if train:
                    tracked = b[name + "num_batches_tracked"]
                    tracked.add_(1)
                    factor = (layer.momentum if layer.momentum is not None
                              else 1.0 / float(tracked[0]))  # a host sync: cumulative mean
                h = F.batch_norm(h, b[name + "running_mean"].view(-1),
                                 b[name + "running_var"].view(-1),
                                 p[name + "weight"].reshape(-1), p[name + "bias"].reshape(-1),
                                 train, factor, layer.eps)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding,
                                 layer.dilation, layer.ceil_mode)
            elif isinstance(layer, nn.Flatten):
                h = h.reshape(batch, T, -1).transpose(0, 1)          # (T, B, features)
                flat = True
            elif isinstance(layer, nn.Linear):
                if not flat:
                    raise ValueError(f"{name}: a linear layer needs flat features")
                w = p[name + "weight"].transpose(1, 2)
                h = (torch.baddbmm(p[name + "bias"].unsqueeze(1), h, w)
                     if layer.bias is not None else torch.bmm(h, w))
        if not flat:
            h = h.reshape(batch, T, -1, *h.shape[2:]).transpose(0, 1)
        return h
