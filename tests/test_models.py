"""The protocol networks: shapes, size, seeded init that never reads the global RNG."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metaleap.models import ConvNet, MultiHeadNet, make_convnet
from metaleap.seeding import generator

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU


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


def literal_encoder(net: ConvNet) -> nn.Sequential:
    """``net``'s own layers in the documented conv → BN → ReLU → max-pool order."""
    layers = list(net.encoder)
    out: list[nn.Module] = []
    for i in range(0, len(layers) - 1, 4):
        conv, bn, pool, _ = layers[i:i + 4]
        out += [conv, bn, nn.ReLU(), pool]
    return nn.Sequential(*out, nn.Flatten())


def forward_backward(net: nn.Module, x: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    out = net(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize(("order", "kinds"), [
    ("bn-relu-pool", [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU]),
    ("pool-bn-relu", [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU])])
def test_block_order_builds_its_layer_sequence_with_the_same_names_and_weights(order, kinds):
    net = make_convnet(20, seed=3, block_order=order)
    assert [type(m) for m in net.encoder] == kinds * 4 + [nn.Flatten]
    default = make_convnet(20, seed=3)  # the same draws, in the same order
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), default.parameters(),
                                                 strict=True))
    with pytest.raises(ValueError, match="block order"):
        make_convnet(20, block_order="relu-first")


def test_pool_before_relu_equals_the_documented_order_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 28, 28, generator=g), torch.randint(0, 20, (6,), generator=g)
    net = make_convnet(20, seed=1, channels=8, channels_last=False)
    fast = forward_backward(net, x, y)
    reference = nn.Sequential()
    reference.encoder, reference.head = literal_encoder(net), net.head
    reference.forward = lambda t: reference.head(reference.encoder(t))  # type: ignore[method-assign]
    slow = forward_backward(reference, x, y)
    assert torch.equal(fast[0], slow[0])
    assert all(torch.equal(fast[1][n], slow[1][n]) for n in fast[1])


#: Two memory layouts compute the same function; only the order of float sums differs. In
#: float64 (unit roundoff 1.1e-16) the longest sum here (3×3×64 = 576 terms), amplified by
#: BatchNorm's division by a batch standard deviation, stays below 1e-12, while a layout bug
#: moves values by O(1). In float32 the same order change is not small: BatchNorm cancels most
#: of a gradient and a max-pool reroutes it at a near-tie (measured: 1e-4 relative on an AMD
#: EPYC), so these comparisons run in float64.
LAYOUT_TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.mark.parametrize("order", ["bn-relu-pool", "pool-bn-relu"])
def test_channels_last_gives_the_nchw_outputs_and_gradients(order) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (5,), generator=g)
    fast = make_convnet(7, seed=2, image_size=16, block_order=order).double()
    plain = make_convnet(7, seed=2, image_size=16, block_order=order,
                         channels_last=False).double()
    assert fast.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.encoder[0].weight.is_contiguous()
    assert states_equal(fast, plain)  # the same values, only the memory layout differs
    out_fast, grads_fast = forward_backward(fast, x, y)
    out_plain, grads_plain = forward_backward(plain, x, y)
    torch.testing.assert_close(out_fast, out_plain, **LAYOUT_TOL)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_fast[name], grad, **LAYOUT_TOL)


def test_reset_parameters_draws_the_same_weights_in_either_memory_format() -> None:
    fast, plain = make_convnet(5, seed=4), make_convnet(5, seed=4, channels_last=False)
    fast.reset_parameters(generator(9, "model"))
    plain.reset_parameters(generator(9, "model"))
    assert states_equal(fast, plain)


def test_atari_actor_critic_runs_channels_last_with_the_nchw_values() -> None:
    from metaleap.models import ActorCritic

    fast = ActorCritic("atari", 6, generator(0, "enc"), generator(0, "heads"))
    plain = ActorCritic("atari", 6, generator(0, "enc"), generator(0, "heads"))
    plain.to(memory_format=torch.contiguous_format)
    plain.channels_last = False
    assert fast.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert states_equal(fast, plain)
    x = torch.rand(3, 4, 84, 84, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    for a, b in zip(fast.double()(x), plain.double()(x), strict=True):
        torch.testing.assert_close(a, b, **LAYOUT_TOL)
    minatar = ActorCritic("minatar", 4, generator(0, "enc"), generator(0, "heads"))
    assert not minatar.channels_last and minatar.encoder[0].weight.is_contiguous()


def test_leap_meta_gradient_on_the_channels_last_convnet_equals_nchw() -> None:
    from metaleap import Leap

    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(4, 1, 16, 16, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (4,), generator=g)) for _ in range(4)]
    grads = []
    for channels_last in (True, False):  # float64: three SGD steps amplify float32 rounding
        net = make_convnet(5, seed=1, channels=4, image_size=16,
                           channels_last=channels_last).double()
        leap = Leap(net)
        leap.begin_task(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for x, y in data[:-1]:
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            leap.observe(net, loss)
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            leap.end_task(net, nn.functional.cross_entropy(net(data[-1][0]), data[-1][1]))
        leap.meta_grad()
        grads.append({n: p.grad for n, p in leap.named_meta_parameters()})
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, **LAYOUT_TOL)
