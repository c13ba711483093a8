"""The networks of the protocols: the Omniglot convnet (docs/experiments.md), its
multi-headed variant, and the actor-critic of the reinforcement-learning protocol (docs/rl.md).

Every weight is drawn from an explicit ``torch.Generator``; layers are built on the ``meta``
device first, so constructing a model never touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from metaleap.choices import BLOCK_ORDERS
from metaleap.seeding import generator as make_generator

__all__ = ["BLOCK_ORDERS", "ActorCritic", "ConvNet", "MultiHeadNet", "init_linear",
           "init_modules", "make_convnet", "outside_encoder"]



@torch.no_grad()
def init_linear(layer: nn.Linear | nn.Conv2d, generator: torch.Generator) -> None:
    """PyTorch's default init for a linear or conv layer, drawn from ``generator``.

    Weights: Kaiming-uniform with a = √5, i.e. U(−1/√fan_in, 1/√fan_in); bias the same range.
    The draws fill the weight in its logical (NCHW) order, whatever its memory format.
    """
    weight = torch.empty_like(layer.weight, memory_format=torch.contiguous_format)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    layer.weight.copy_(weight)
    if layer.bias is not None:
        fan_in = layer.weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


@torch.no_grad()
def init_modules(module: nn.Module, generator: torch.Generator,
                 other: Callable[[nn.Module], None] | None = None) -> None:
    """Draw every conv and linear layer of ``module`` from ``generator`` (:func:`init_linear`)
    and reset every BatchNorm (deterministic), in module order; ``other`` sees every other
    submodule, in the same order (to draw weights of a layer type of its own)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init_linear(m, generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # ones, zeros and fresh running statistics
        elif other is not None:
            other(m)


class ConvNet(nn.Module):
    """``blocks`` × (conv 3×3 pad 1 → BatchNorm → ReLU → max-pool 2), flatten, linear head.

    With the defaults this is the paper's Omniglot network: four 64-channel blocks turn a
    28×28 image into 64 features and ``head`` maps them to 20 classes. The two submodules are
    ``encoder`` (ends with the flatten) and ``head``, so parameter names start with
    ``"encoder."`` or ``"head."`` and a per-task head can be excluded by that prefix.

    Speed, with the same values: the default block runs its max-pool before its ReLU (in
    place). The two commute exactly (max is monotone, and both orders route the gradient to
    the window's first maximum, or give zero where it is not positive), and ReLU then touches
    a quarter of the activations; the layers are ``[conv, BN, pool, ReLU]`` and parameter
    names do not change (pool and ReLU have none). With ``channels_last`` the conv weights are
    stored channels-last, so that oneDNN runs every layer in NHWC on the CPU (1.2–1.6× faster
    per step here, see ``docs/benchmarks.md``); sums may then differ from NCHW's in the last
    float bits. Values, shapes, names and the flat order of parameters are unchanged.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        channels: channels of every conv layer.
        blocks: number of conv blocks.
        image_size: input height and width (an int for square images); sets the head's
            input size, ``channels · ⌊h/2^blocks⌋ · ⌊w/2^blocks⌋``.
        generator: the stream the weights are drawn from; ``None`` means
            ``metaleap.seeding.generator(0, "model")``.
        block_order: one of :data:`BLOCK_ORDERS`; both draw the same weights.
        channels_last: store the conv weights channels-last (faster on the CPU).
    """

    def __init__(self, num_classes: int = 20, in_channels: int = 1, channels: int = 64,
                 blocks: int = 4, image_size: int | tuple[int, int] = 28,
                 generator: torch.Generator | None = None, block_order: str = "bn-relu-pool",
                 channels_last: bool = True) -> None:
        super().__init__()
        if block_order not in BLOCK_ORDERS:
            raise ValueError(f"unknown block order {block_order!r}: "
                             f"{' or '.join(BLOCK_ORDERS)}")
        self.block_order = block_order
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        layers: list[nn.Module] = []
        for i in range(blocks):
            conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1,
                             device="meta")
            bn, relu, pool = nn.BatchNorm2d(channels, device="meta"), nn.ReLU(True), nn.MaxPool2d(2)
            layers += [conv, bn, pool, relu] if block_order == "bn-relu-pool" else [
                conv, pool, bn, relu]
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"image_size {image_size} is too small for {blocks} pooling blocks")
        layers.append(nn.Flatten())
        self.encoder = nn.Sequential(*layers)
        self.features = channels * h * w
        self.head = nn.Linear(self.features, num_classes, device="meta")
        self.to_empty(device="cpu")
        self.reset_parameters(make_generator(0, "model") if generator is None else generator)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Redraw every weight from ``generator``; BatchNorm to (γ=1, β=0), fresh statistics."""
        init_modules(self, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def outside_encoder(name: str) -> bool:
    """Whether parameter ``name`` lies outside the model's ``encoder`` (a head of
    :class:`ConvNet` or :class:`ActorCritic`): the task's own, never part of θ⁰."""
    return not name.startswith("encoder.")


def make_convnet(num_classes: int = 20, seed: int = 0, *, in_channels: int = 1,
                 channels: int = 64, blocks: int = 4, image_size: int | tuple[int, int] = 28,
                 block_order: str = "bn-relu-pool", channels_last: bool = True) -> ConvNet:
    """A :class:`ConvNet` whose weights come from the stream ``(seed, "model")``."""
    return ConvNet(num_classes, in_channels, channels, blocks, image_size,
                   generator=make_generator(seed, "model"), block_order=block_order,
                   channels_last=channels_last)


class MultiHeadNet(nn.Module):
    """A shared encoder with one linear head per task (multi-headed finetuning,
    docs/experiments.md).

    ``model`` supplies the encoder (the same module object, not a copy) and, through its
    ``head`` (an ``nn.Linear``), the head shape. The ``num_heads`` heads are drawn from
    ``generator``; ``widths`` gives each head its own number of outputs (tasks with different
    numbers of classes, docs/multicv.md), else every head is as wide as ``model.head``.
    ``forward(x, head)`` runs the encoder and head number ``head``.
    """

    def __init__(self, model: nn.Module, num_heads: int,
                 generator: torch.Generator | None = None,
                 widths: Sequence[int] | None = None) -> None:
        super().__init__()
        template = model.head
        if not isinstance(template, nn.Linear):
            raise TypeError("MultiHeadNet needs model.head to be an nn.Linear")
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        widths = [template.out_features] * num_heads if widths is None else list(widths)
        if len(widths) != num_heads:
            raise ValueError(f"{len(widths)} head widths for {num_heads} heads")
        self.encoder = model.encoder
        self.heads = nn.ModuleList(
            nn.Linear(template.in_features, width, bias=template.bias is not None,
                      device="meta") for width in widths)
        self.heads.to_empty(device="cpu")  # drawn on the CPU (the generator's device), then moved
        g = make_generator(0, "heads") if generator is None else generator
        for head in self.heads:
            init_linear(head, g)
        self.heads.to(device=template.weight.device, dtype=template.weight.dtype)

    def forward(self, x: Tensor, head: int) -> Tensor:
        return self.heads[head](self.encoder(x))


class ActorCritic(nn.Module):
    """A convolutional encoder with linear policy and value heads (docs/rl.md).

    ``kind`` picks the encoder: ``"minatar"`` is the MinAtar network (a 16-channel 3×3
    convolution over the 10×10×10 grid, then 128 units); ``"atari"`` the 2013 DQN network
    (16 8×8 filters stride 4, 32 4×4 stride 2, then 256 units) over 4 stacked 84×84 frames.
    Parameter names start with ``"encoder."``, ``"policy."`` or ``"value."``: the encoder is
    shared across games (what Leap meta-learns) and the heads are per game, since games have
    their own action sets. The encoder is drawn from ``generator``, the heads from
    ``head_generator``. The Atari encoder runs channels-last (weights and observations: about
    1.5× faster per forward and backward pass on the CPU); MinAtar's 10×10 grids gain nothing
    from it and stay NCHW.
    """

    def __init__(self, kind: str, num_actions: int, generator: torch.Generator,
                 head_generator: torch.Generator) -> None:
        super().__init__()
        if kind == "minatar":
            layers = [nn.Conv2d(10, 16, 3, device="meta"), nn.ReLU(), nn.Flatten(),
                      nn.Linear(16 * 8 * 8, 128, device="meta"), nn.ReLU()]
        elif kind == "atari":
            layers = [nn.Conv2d(4, 16, 8, stride=4, device="meta"), nn.ReLU(),
                      nn.Conv2d(16, 32, 4, stride=2, device="meta"), nn.ReLU(), nn.Flatten(),
                      nn.Linear(32 * 9 * 9, 256, device="meta"), nn.ReLU()]
        else:
            raise ValueError(f"unknown actor-critic kind {kind!r}: 'minatar' or 'atari'")
        self.encoder = nn.Sequential(*layers)
        features = layers[-2].out_features  # type: ignore[union-attr]
        self.policy = nn.Linear(features, num_actions, device="meta")
        self.value = nn.Linear(features, 1, device="meta")
        self.to_empty(device="cpu")
        with torch.no_grad():
            init_modules(self.encoder, generator)
            init_linear(self.policy, head_generator)
            init_linear(self.value, head_generator)
        self.channels_last = kind == "atari"
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Policy logits (N, actions) and state values (N,)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder(x)
        return self.policy(h), self.value(h).squeeze(-1)
