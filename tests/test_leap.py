"""Leap core: hand-computed increments, the Reptile identity, automatic mode, state, misuse."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import metaleap
from metaleap import Leap

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

# ---------------------------------------------------------------- a 2-parameter quadratic


class Quadratic(nn.Module):
    """f(θ) = ½(θ₁² + 2θ₂²), θ⁰ = (1, −1): g = (θ₁, 2θ₂)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * (self.theta[0] ** 2 + 2 * self.theta[1] ** 2)


def one_step_grad(lr: float, **options) -> torch.Tensor:
    """Leap's meta-gradient for a single SGD step of size ``lr`` from θ⁰ = (1, −1)."""
    model = Quadratic()
    leap = Leap(model, **options)
    leap.begin_task(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = model()
    loss.backward()
    leap.observe(model, loss)
    opt.step()
    opt.zero_grad()
    leap.end_task(model, model())
    leap.meta_grad()
    return leap.init["theta"].grad


# By hand. lr = 0.5: θ¹ = (0.5, 0), f: 1.5 → 0.125, Δθ = (−0.5, 1), Δf = −1.375.
#   −(Δθ + Δf·g) = (1.875, −3.75); ‖(Δθ, Δf)‖ = √3.140625; ‖Δθ‖ = √1.25.
# lr = 1.5: θ¹ = (−0.5, 2), f: 1.5 → 4.125 (the loss rose), Δθ = (−1.5, 3), Δf = 2.625.
#   −(Δθ + Δf·g) = (−1.125, 2.25); stabilized (Δf → −2.625): (4.125, −8.25);
#   ‖(Δθ, Δf)‖ = √18.140625; ‖Δθ‖ = √11.25.
HAND = [
    (0.5, "energy", False, False, (0.5, -1.0)),
    (0.5, "energy", True, False, (1.875, -3.75)),
    (0.5, "energy", True, True, (1.875, -3.75)),
    (0.5, "length", False, False, (0.5 / math.sqrt(1.25), -1.0 / math.sqrt(1.25))),
    (0.5, "length", True, False, (1.875 / math.sqrt(3.140625), -3.75 / math.sqrt(3.140625))),
    (0.5, "length", True, True, (1.875 / math.sqrt(3.140625), -3.75 / math.sqrt(3.140625))),
    (1.5, "energy", False, False, (1.5, -3.0)),
    (1.5, "energy", True, False, (-1.125, 2.25)),
    (1.5, "energy", True, True, (4.125, -8.25)),
    (1.5, "length", False, False, (1.5 / math.sqrt(11.25), -3.0 / math.sqrt(11.25))),
    (1.5, "length", True, False, (-1.125 / math.sqrt(18.140625), 2.25 / math.sqrt(18.140625))),
    (1.5, "length", True, True, (4.125 / math.sqrt(18.140625), -8.25 / math.sqrt(18.140625))),
]


@pytest.mark.parametrize("lr,metric,loss_term,stabilizer,expected", HAND)
def test_hand_computed_increment(lr, metric, loss_term, stabilizer, expected, step_scalars):
    grad = one_step_grad(lr, metric=metric, loss_term=loss_term, stabilizer=stabilizer)
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_two_tasks_are_averaged_and_paths_reported():
    model = Quadratic()
    leap = Leap(model, metric="length")
    paths = []
    for lr in (0.5, 1.5):
        leap.begin_task(model)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss = model()
        loss.backward()
        leap.observe(model, loss)
        opt.step()
        opt.zero_grad()
        paths.append(leap.end_task(model, model()).path)
    stats = leap.meta_grad()
    assert paths == pytest.approx([math.sqrt(3.140625), math.sqrt(18.140625)], rel=1e-12)
    assert stats.tasks == 2 and stats.dropped == 0
    assert stats.mean_path == pytest.approx(sum(paths) / 2, rel=1e-12)
    f64 = torch.float64
    expected = (torch.tensor([1.875, -3.75], dtype=f64) / math.sqrt(3.140625)
                + torch.tensor([4.125, -8.25], dtype=f64) / math.sqrt(18.140625)) / 2
    torch.testing.assert_close(leap.init["theta"].grad, expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- shared small-network helpers


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # test-only model construction; the library never reads it
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def task_data(seed: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 4, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (6,), generator=g)) for _ in range(steps + 1)]


def run_manual(leap: Leap, model: nn.Module, data, make_opt, clip: float | None = None,
               amp: bool = False):
    leap.begin_task(model)
    opt = make_opt(model.parameters())
    for x, y in data[:-1]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        leap.observe(model, loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
    x, y = data[-1]
    with torch.no_grad():
        return leap.end_task(model, nn.functional.cross_entropy(model(x), y))


def run_auto(leap: Leap, model: nn.Module, data, make_opt, clip: float | None = None):
    opt = make_opt(model.parameters())
    with leap.task(model, opt) as task:
        for x, y in data[:-1]:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            task.report(loss)
            opt.step()
            opt.zero_grad()
        x, y = data[-1]
        with torch.no_grad():
            task.finish(nn.functional.cross_entropy(model(x), y))
    return task.stats


def meta_grad_of(run, tasks=(1, 2, 3), steps=5, make_opt=None, **options) -> torch.Tensor:
    model = mlp()
    leap = Leap(model, **options)
    make_opt = make_opt or (lambda p: torch.optim.Adam(p, lr=0.05))
    for t in tasks:
        run(leap, model, task_data(t, steps), make_opt)
    leap.meta_grad()
    return torch.cat([p.grad.flatten() for _, p in leap.named_meta_parameters()])


def test_energy_without_loss_term_is_reptile():
    """Σ_i −Δθ_i telescopes to θ⁰ − θ^K: every one of the K segments is counted."""
    model = mlp()
    leap = Leap(model, metric="energy", loss_term=False, stabilizer=False)
    theta0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    finals = []
    for t in (1, 2, 3):
        run_manual(leap, model, task_data(t, 10), lambda p: torch.optim.Adam(p, lr=0.05))
        finals.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    leap.meta_grad()
    grad = torch.cat([p.grad.flatten() for _, p in leap.named_meta_parameters()])
    reptile = theta0 - torch.stack(finals).mean(0)
    torch.testing.assert_close(grad, reptile, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- automatic mode


@pytest.mark.parametrize("clip", [None, 0.1])
def test_automatic_mode_equals_manual(clip):
    def with_clip(run):
        return lambda leap, model, data, make_opt: run(leap, model, data, make_opt, clip=clip)
    manual = meta_grad_of(with_clip(run_manual))
    auto = meta_grad_of(with_clip(run_auto))
    torch.testing.assert_close(auto, manual, rtol=0, atol=0)


def test_automatic_mode_reads_unscaled_gradients_under_grad_scaler():
    def run_scaled(leap, model, data, make_opt):
        opt = make_opt(model.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        with leap.task(model, opt) as task:
            for x, y in data[:-1]:
                loss = nn.functional.cross_entropy(model(x), y)
                scaler.scale(loss).backward()
                task.report(loss)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
            x, y = data[-1]
            with torch.no_grad():
                task.finish(nn.functional.cross_entropy(model(x), y))
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    torch.testing.assert_close(meta_grad_of(run_scaled, make_opt=sgd),
                               meta_grad_of(run_manual, make_opt=sgd), rtol=1e-12, atol=1e-14)


def test_task_without_finish_is_discarded_with_an_error():
    model = mlp()
    leap = Leap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="finish"), leap.task(model, opt) as task:
        x, y = task_data(0, 1)[0]
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        task.report(loss)
        opt.step()
    with pytest.raises(RuntimeError, match="no task was finished"):
        leap.meta_grad()
    assert not opt._optimizer_step_pre_hooks, "the hook must be removed"


def test_step_before_report_raises():
    model = mlp()
    leap = Leap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="report"), leap.task(model, opt):
        opt.step()


# ---------------------------------------------------------------- gradients, AMP, buffers


def test_parameter_without_gradient_counts_as_zero_gradient():
    """An unused parameter has ``grad is None`` under set_to_none: same as a zero gradient."""

    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()
            self.unused = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return self.net(x)

    def grads(zero_fill: bool) -> torch.Tensor:
        model = WithUnused()
        leap = Leap(model)
        leap.begin_task(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in task_data(4, 4)[:-1]:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if zero_fill:
                model.unused.grad = torch.zeros_like(model.unused)
            leap.observe(model, loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
        leap.end_task(model, 0.5)
        leap.meta_grad()
        return torch.cat([p.grad.flatten() for _, p in leap.named_meta_parameters()])

    torch.testing.assert_close(grads(False), grads(True), rtol=0, atol=0)


def test_bf16_autocast_gives_a_finite_close_meta_gradient():
    def float_mlp_grad(amp: bool) -> torch.Tensor:
        model = mlp().float()
        leap = Leap(model)
        for t in (1, 2):
            data = [(x.float(), y) for x, y in task_data(t, 5)]
            run_manual(leap, model, data, lambda p: torch.optim.SGD(p, lr=0.1), amp=amp)
        leap.meta_grad()
        return torch.cat([p.grad.flatten() for _, p in leap.named_meta_parameters()])

    amp, ref = float_mlp_grad(True), float_mlp_grad(False)
    assert torch.isfinite(amp).all()
    cosine = nn.functional.cosine_similarity(amp, ref, dim=0)
    assert cosine > 0.9, f"bf16 meta-gradient direction drifted: cosine {cosine:.3f}"


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()


def test_buffers_reset_policy_restores_statistics_each_task():
    model = bn_net()
    leap = Leap(model, buffers="reset")
    for t in (1, 2):
        run_manual(leap, model, task_data(t, 3), lambda p: torch.optim.SGD(p, lr=0.1))
        assert model[1].running_mean.abs().sum() > 0  # the task moved the statistics
    leap.meta_grad()
    leap.begin_task(model)
    torch.testing.assert_close(model[1].running_mean, torch.zeros(5, dtype=torch.float64))
    assert model[1].num_batches_tracked.item() == 0


def test_buffers_average_policy_takes_the_mean_of_final_statistics():
    model = bn_net()
    leap = Leap(model, buffers="average")
    finals = []
    for t in (1, 2):
        run_manual(leap, model, task_data(t, 3), lambda p: torch.optim.SGD(p, lr=0.1))
        finals.append(model[1].running_var.clone())
    leap.meta_grad()
    torch.testing.assert_close(leap.initialization()["1.running_var"],
                               (finals[0] + finals[1]) / 2, rtol=1e-15, atol=0)


def test_excluded_head_is_not_meta_learned_nor_touched():
    model = mlp()
    leap = Leap(model, exclude=lambda name: name.startswith("2."))
    assert [n for n, _ in leap.named_meta_parameters()] == ["0.weight", "0.bias"]
    with torch.no_grad():
        model[2].weight.fill_(0.25)
    leap.begin_task(model)
    assert (model[2].weight == 0.25).all()
    with pytest.raises(ValueError, match="lacks"):
        Leap(mlp(), exclude=["head.weight"])


# ---------------------------------------------------------------- state and failures


def test_state_dict_round_trip_through_weights_only_load(tmp_path: Path):
    model = mlp()
    leap = Leap(model)
    run_manual(leap, model, task_data(1, 3), lambda p: torch.optim.SGD(p, lr=0.1))
    leap.meta_grad()
    torch.optim.SGD(leap.parameters(), lr=0.1).step()
    torch.save(leap.state_dict(), tmp_path / "leap.pt")
    fresh = Leap(mlp(seed=1))
    fresh.load_state_dict(torch.load(tmp_path / "leap.pt", weights_only=True))
    for (n, a), (m, b) in zip(leap.named_meta_parameters(), fresh.named_meta_parameters(),
                              strict=True):
        assert n == m and torch.equal(a, b)
    target = mlp(seed=2)
    target.load_state_dict(fresh.initialization())
    assert torch.equal(target[0].weight, leap.init["0__weight"])


@pytest.mark.parametrize("bad", ["loss", "grad"])
def test_non_finite_task_is_dropped_and_counted(bad: str, step_scalars: str):
    model = mlp()
    leap = Leap(model)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    run_manual(leap, model, task_data(1, 4), sgd)
    leap.begin_task(model)
    opt = sgd(model.parameters())
    for i, (x, y) in enumerate(task_data(2, 4)[:-1]):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if i == 2 and bad == "grad":
            model[0].weight.grad[0, 0] = float("inf")
        leap.observe(model, float("nan") if i == 2 and bad == "loss" else loss)
        opt.step()
        opt.zero_grad()
    assert leap.end_task(model, 1.0).dropped
    stats = leap.meta_grad()
    assert (stats.tasks, stats.dropped) == (1, 1)
    grad = torch.cat([p.grad.flatten() for _, p in leap.named_meta_parameters()])
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, meta_grad_of(run_manual, tasks=(1,), steps=4,
                                                  make_opt=sgd), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_gradient_drops_the_task_when_the_loss_did_not_change(dtype,
                                                                          step_scalars):
    """Δf = 0 gives g a zero coefficient in the accumulator's update (one matrix-vector
    product over [−Δθ; g]); 0 · inf is still NaN there, so the task is still dropped."""
    model = mlp().to(dtype)
    leap = Leap(model)
    leap.begin_task(model)
    with torch.no_grad():
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        model[0].weight.grad[0, 0] = float("inf")
    leap.observe(model, 1.0)
    with torch.no_grad():
        model[0].weight.add_(0.1)
    assert leap.end_task(model, 1.0).dropped


def test_accumulator_update_matches_two_separate_updates_to_rounding():
    """float32 Leap over a 20-step task agrees with the same task replayed in float64.

    The bound: each float32 step of this tanh MLP (sums of at most 8 terms, no max-pool or
    BatchNorm to reroute or cancel) rounds at a relative few 1e-7, and 20 steps at lr 0.1 of a
    smooth loss grow that at most tenfold; rtol 1e-3 leaves a factor 100 above it, while a
    wrong coefficient in the update moves the meta-gradient by O(1)."""
    model, model64 = mlp().float(), mlp()
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    grads = []
    for m in (model, model64):
        leap = Leap(m)
        leap.begin_task(m)
        opt = sgd(m.parameters())
        for x, y in task_data(3, 20)[:-1]:
            loss = nn.functional.cross_entropy(m(x.to(m[0].weight.dtype)), y)
            loss.backward()
            leap.observe(m, loss)
            opt.step()
            opt.zero_grad()
        leap.end_task(m, loss.detach())
        leap.meta_grad()
        grads.append(torch.cat([p.grad.flatten().double()
                                for _, p in leap.named_meta_parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_all_tasks_dropped_writes_no_gradient():
    model = mlp()
    leap = Leap(model)
    leap.begin_task(model)
    leap.observe(model, float("nan"))
    leap.end_task(model, 1.0)
    stats = leap.meta_grad()
    assert (stats.tasks, stats.dropped) == (0, 1)
    assert all(p.grad is None for p in leap.parameters())


def test_misuse_raises_clear_errors():
    model = mlp()
    leap = Leap(model)
    with pytest.raises(RuntimeError, match="begin_task"):
        leap.observe(model, 1.0)
    with pytest.raises(RuntimeError, match="no task was finished"):
        leap.meta_grad()
    other = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 3)).double()
    with pytest.raises(ValueError, match="does not match"):
        leap.begin_task(other)
    with pytest.raises(ValueError, match="does not match"):
        leap.begin_task(nn.Linear(4, 3).double())
    leap.begin_task(model)
    with pytest.raises(RuntimeError, match="different model"):
        leap.observe(mlp(), 1.0)
    with pytest.raises(RuntimeError, match="while a task is running"):
        leap.begin_task(model)
    with pytest.raises(RuntimeError, match="while a task is running"):
        leap.meta_grad()
    with pytest.raises(RuntimeError, match="no step"):
        leap.end_task(model, 1.0)
    with pytest.raises(ValueError, match="scalar"):
        leap.observe(model, torch.ones(2))
    with pytest.raises(ValueError, match="move one to match"):
        leap.abort_task()
        leap.begin_task(mlp().float())
    with pytest.raises(ValueError, match="stabilizer"):
        Leap(model, loss_term=False, stabilizer=True)
    with pytest.raises(ValueError, match="metric"):
        Leap(model, metric="area")


# ---------------------------------------------------------------- state while a task runs


def test_state_and_parameters_do_not_change_while_a_task_runs():
    """The running task's model is not a submodule: θ⁰'s state has the same keys throughout."""
    model = mlp()
    leap = Leap(model)
    keys, params = list(leap.state_dict()), [id(p) for p in leap.parameters()]
    leap.begin_task(model)
    assert list(leap.state_dict()) == keys
    assert [id(p) for p in leap.parameters()] == params
    assert [n for n, _ in leap.named_children()] == ["init", "init_buffers"]
    leap.abort_task()


# ---------------------------------------------------------------- contribution → reduce → apply


def summed(contributions: list[metaleap.Contribution]) -> metaleap.Reduce:
    """A reduce that adds other processes' contributions, as an all-reduce would."""
    def reduce(local: metaleap.Contribution) -> metaleap.Contribution:
        return local.unflat(sum((c.flat("cpu") for c in contributions), local.flat("cpu")))
    return reduce


@pytest.mark.parametrize("buffers", ["reset", "average"])
def test_any_split_of_float32_tasks_equals_one_process_exactly(buffers: str):
    """Four float32 tasks on one process give bit for bit the θ⁰ gradient and averaged
    buffers of every split of them over two processes, in any order: the meta-batch sums are
    kept in float64, where float32 values of similar magnitude add without rounding."""
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731

    def run(tasks: tuple[int, ...]) -> Leap:
        leap = Leap(bn_net().float(), buffers=buffers)
        for t in tasks:
            net = bn_net().float()
            data = [(x.float(), y) for x, y in task_data(t, 4)]
            run_manual(leap, net, data, sgd)
        return leap

    whole = run((0, 1, 2, 3))
    whole.meta_grad()
    expected = [p.grad.clone() for _, p in whole.named_meta_parameters()]
    for mine, theirs in (((0, 1), (2, 3)), ((3,), (2, 0, 1)), ((1, 3), (0, 2))):
        local, other = run(mine), run(theirs)
        local.apply(summed([other.contribution()])(local.contribution()))
        assert all(torch.equal(p.grad, e) for (_, p), e in zip(
            local.named_meta_parameters(), expected, strict=True)), (mine, theirs)
        assert all(torch.equal(a, b) for a, b in zip(
            whole.init_buffers.buffers(), local.init_buffers.buffers(), strict=True))


@pytest.mark.parametrize("buffers", ["reset", "average"])
def test_split_meta_batch_equals_one_process(buffers: str):
    """Three tasks on one Leap equal tasks 1–2 on one and task 3 on another, sums reduced."""
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    model = bn_net()
    whole = Leap(model, buffers=buffers)
    for t in (1, 2, 3):
        run_manual(whole, model, task_data(t, 4), sgd)
    stats = whole.meta_grad()

    part_a, part_b = Leap(bn_net(), buffers=buffers), Leap(bn_net(), buffers=buffers)
    for leap, tasks in ((part_a, (1, 2)), (part_b, (3,))):
        for t in tasks:
            net = bn_net()
            run_manual(leap, net, task_data(t, 4), sgd)
    other = part_b.contribution()
    split = part_a.apply(summed([other])(part_a.contribution()))
    assert (split.tasks, split.dropped) == (stats.tasks, stats.dropped) == (3, 0)
    assert split.mean_path == pytest.approx(stats.mean_path, rel=1e-12)
    for (_, p), (_, q) in zip(whole.named_meta_parameters(), part_a.named_meta_parameters(),
                              strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)
    for a, b in zip(whole.init_buffers.buffers(), part_a.init_buffers.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_meta_grad_is_contribution_then_apply():
    model = mlp()
    a, b = Leap(model), Leap(mlp())
    for leap in (a, b):
        for t in (1, 2):
            run_manual(leap, mlp(), task_data(t, 3), lambda p: torch.optim.SGD(p, lr=0.1))
    sa = a.meta_grad()
    c = b.contribution()
    assert set(c.sums) == {"grad", "tasks", "dropped", "path"} and c.count("tasks") == 2
    sb = b.apply(c)
    assert sa == sb
    for (_, p), (_, q) in zip(a.named_meta_parameters(), b.named_meta_parameters(),
                              strict=True):
        assert torch.equal(p.grad, q.grad)
    empty = b.contribution()  # a process may hold no task of a meta-batch: zeros
    assert empty.count("tasks") == empty.count("dropped") == 0
    assert not empty.sums["grad"].any()
    with pytest.raises(RuntimeError, match="no task was finished"):
        b.apply(empty)


@pytest.mark.parametrize("stop", [3, 4])
@pytest.mark.parametrize("buffers", ["reset", "average"])
def test_progress_state_resumes_a_task_midway_bit_identically(tmp_path: Path, buffers: str,
                                                              stop: int, step_scalars: str):
    """Task 1 whole, task 2 stopped after ``stop`` of 6 steps (odd and even) and saved (a
    weights-only file); a fresh Leap and model restored from it finish task 2 with the
    uninterrupted meta-gradient."""
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    model = bn_net()
    straight = Leap(model, metric="energy", buffers=buffers)
    for t in (1, 2):
        run_manual(straight, model, task_data(t, 6), sgd)
    expected = straight.meta_grad()

    def steps(leap, model, opt, data):
        for x, y in data:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            leap.observe(model, loss)
            opt.step()
            opt.zero_grad(set_to_none=True)

    model = bn_net()
    first = Leap(model, metric="energy", buffers=buffers)
    run_manual(first, model, task_data(1, 6), sgd)
    data = task_data(2, 6)
    first.begin_task(model)
    opt = sgd(model.parameters())
    steps(first, model, opt, data[:stop])
    torch.save({"leap": first.state_dict(), "progress": first.progress_state(),
                "model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model = bn_net()
    resumed = Leap(model, metric="energy", buffers=buffers)
    resumed.load_state_dict(saved["leap"])
    resumed.begin_task(model)
    model.load_state_dict(saved["model"])
    opt = sgd(model.parameters())
    opt.load_state_dict(saved["opt"])
    resumed.load_progress_state(saved["progress"])
    steps(resumed, model, opt, data[stop:6])
    with torch.no_grad():
        resumed.end_task(model, nn.functional.cross_entropy(model(data[6][0]), data[6][1]))
    stats = resumed.meta_grad()
    assert (stats.tasks, stats.mean_path) == (expected.tasks, expected.mean_path)
    for (_, p), (_, q) in zip(straight.named_meta_parameters(), resumed.named_meta_parameters(),
                              strict=True):
        assert torch.equal(p.grad, q.grad)
    for a, b in zip(straight.init_buffers.buffers(), resumed.init_buffers.buffers(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="begin_task first"):
        Leap(bn_net()).load_progress_state(saved["progress"])
