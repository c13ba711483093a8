"""The protocol networks: shapes, size, seeded init that never reads the global RNG."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metaleap.models import ConvNet, MultiHeadNet, make_convnet
from metaleap.seeding import generator


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_omniglot_convnet_shapes_and_names() -> None:
    net = make_convnet(20, seed=0)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 20)
    assert net.features == 64 and net.head.in_features == 64
    assert {n.split(".")[0] for n, _ in net.named_parameters()} == {"encoder", "head"}
    convs = [m for m in net.encoder if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 64 and c.kernel_size == (3, 3)
                                   and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.encoder) == 4


def test_other_image_sizes() -> None:
    net = ConvNet(num_classes=5, in_channels=3, image_size=84)
    assert net.features == 64 * 5 * 5
    assert net(torch.rand(2, 3, 84, 84)).shape == (2, 5)
    rect = ConvNet(num_classes=7, image_size=(32, 48), blocks=3, channels=8)
    assert rect(torch.rand(2, 1, 32, 48)).shape == (2, 7)
    with pytest.raises(ValueError, match="too small"):
        ConvNet(image_size=8, blocks=4)


def test_parameter_count() -> None:
    conv = [1 * 64 * 9 + 64] + [64 * 64 * 9 + 64] * 3
    bn = 4 * 2 * 64
    head = 64 * 20 + 20
    assert sum(p.numel() for p in make_convnet().parameters()) == sum(conv) + bn + head == 113236


def test_seeded_init_ignores_and_keeps_the_global_rng() -> None:
    torch.manual_seed(0)
    a = make_convnet(20, seed=3)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    b = make_convnet(20, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # construction draws nothing global
    assert states_equal(a, b)
    assert not torch.equal(a.head.weight, make_convnet(20, seed=4).head.weight)
    assert states_equal(ConvNet(generator=generator(0, "model")), ConvNet())


def test_init_follows_pytorch_default_ranges() -> None:
    net = make_convnet(20, seed=1)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1 / math.sqrt(m.weight[0].numel())
            assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound
            assert m.weight.std() > bound / 3  # drawn, not left empty
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones(64)) and torch.equal(m.bias, torch.zeros(64))
            assert torch.equal(m.running_var, torch.ones(64)) and m.num_batches_tracked == 0


def test_reset_parameters_redraws_from_the_generator() -> None:
    net = make_convnet(20, seed=5)
    net.reset_parameters(generator(5, "model"))
    assert states_equal(net, make_convnet(20, seed=5))


def test_multi_head_net() -> None:
    base = make_convnet(10, seed=0)
    state = torch.random.get_rng_state()
    net = MultiHeadNet(base, num_heads=3, generator=generator(0, "heads"))
    assert torch.equal(state, torch.random.get_rng_state())
    assert net.encoder is base.encoder and len(net.heads) == 3
    assert states_equal(net, MultiHeadNet(make_convnet(10, seed=0), 3, generator(0, "heads")))
    x = torch.rand(2, 1, 28, 28)
    outs = [net(x, h) for h in range(3)]
    assert all(o.shape == (2, 10) for o in outs)
    assert not torch.equal(outs[0], outs[1])
    assert {k.split(".")[0] for k in net.state_dict()} == {"encoder", "heads"}
