"""Leap's meta-gradient against references written straight from the maths.

* A plain loop over a recorded trajectory (docs/leap.md, increment_i) must agree with Leap's
  ``.grad`` to 1e-9 in float64, for every option, model and inner optimizer.
* The pull-forward objective (paper eqs. 4–5), differentiated exactly through the unrolled
  inner SGD loop, must be approached by Leap's identity-Jacobian meta-gradient as α → 0.
* Leap must actually meta-learn: shorter held-out paths (eq. 2) at no cost in final loss.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap import Leap
from metaleap.leap import increment

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

Batch = tuple[Tensor, Tensor]
Criterion = Callable[[Tensor, Tensor], Tensor]
OptFactory = Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer]

# (metric, loss_term, stabilizer): every combination Leap allows (stabilizer needs loss_term).
OPTIONS = [(m, lt, st) for m, (lt, st) in
           itertools.product(("length", "energy"), ((False, False), (True, False), (True, True)))]

INNER_OPTIMIZERS: dict[str, OptFactory] = {
    "sgd": partial(torch.optim.SGD, lr=0.1),
    "momentum": partial(torch.optim.SGD, lr=0.05, momentum=0.9),
    "adam": partial(torch.optim.Adam, lr=0.01),
}


# ---------------------------------------------------------------------------- helpers
def gen(seed: int) -> torch.Generator:
    """An explicit random stream (the tests never read the global RNG)."""
    return torch.Generator().manual_seed(seed)


def flat(tensors: Sequence[Tensor] | dict[str, Tensor]) -> Tensor:
    """Concatenate tensors (or a dict's values, in order) into one detached float64 vector."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in values])


def init_params(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every parameter of ``model`` from ``seed`` (no global RNG), in float64."""
    g = gen(seed)
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(fan_in))
    return model


def mlp(d_in: int = 5, hidden: int = 8, d_out: int = 3, seed: int = 0) -> nn.Module:
    return init_params(nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(),
                                     nn.Linear(hidden, d_out)), seed)


def convnet(seed: int = 0) -> nn.Module:
    """conv 3×3 → BatchNorm → ReLU → linear over 1×6×6 inputs, 4 classes."""
    return init_params(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                     nn.Flatten(), nn.Linear(3 * 36, 4)), seed)


def mse(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out, y)


@dataclass
class Task:
    """K+1 batches: batch i gives f(θ^i); the last gives the final loss f(θ^K)."""

    batches: list[Batch]
    criterion: Criterion

    @property
    def steps(self) -> int:
        return len(self.batches) - 1


def regression_tasks(n: int, steps: int, seed: int, d_in: int = 5, d_out: int = 3,
                     batch: int = 6, x_scale: float = 1.0) -> list[Task]:
    """Each task its own random linear map plus noise, a fresh mini-batch per step."""
    g = gen(seed)
    tasks = []
    for _ in range(n):
        w = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
        batches = []
        for _ in range(steps + 1):
            x = x_scale * torch.randn(batch, d_in, generator=g, dtype=torch.float64)
            y = x @ w + 0.3 * torch.randn(batch, d_out, generator=g, dtype=torch.float64)
            batches.append((x, y))
        tasks.append(Task(batches, mse))
    return tasks


def image_tasks(n: int, steps: int, seed: int, batch: int = 8) -> list[Task]:
    """Each task its own random 4-class image distribution, a fresh mini-batch per step."""
    g = gen(seed)
    tasks = []
    for _ in range(n):
        prototypes = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
        batches = []
        for _ in range(steps + 1):
            y = torch.randint(0, 4, (batch,), generator=g)
            x = prototypes[y] + torch.randn(batch, 1, 6, 6, generator=g, dtype=torch.float64)
            batches.append((x, y))
        tasks.append(Task(batches, F.cross_entropy))
    return tasks


@dataclass
class Trajectory:
    """θ^0..θ^K (flat), g_0..g_{K-1} (the gradients the optimizer stepped with), f_0..f_K;
    and the floating-point buffers at the end (BatchNorm statistics, which start from θ⁰'s)."""

    thetas: list[Tensor]
    grads: list[Tensor]
    losses: list[float]
    buffers: Tensor | None = None


def run_task(model: nn.Module, task: Task, make_opt: OptFactory, leap: Leap | None = None,
             drop_final_loss: bool = False, record: bool = True) -> Trajectory | None:
    """Train ``model`` on ``task`` from its current state (or from θ⁰ via ``leap``), recording.

    With ``leap`` the manual protocol is followed: ``observe`` after backward and before
    ``step``; ``end_task`` with f(θ^K) from one more forward pass on the next batch (no grad),
    or with ``None`` when ``drop_final_loss``.
    """
    if leap is not None:
        leap.begin_task(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_opt(params)
    thetas, grads, losses = [], [], []
    for x, y in task.batches[:-1]:
        opt.zero_grad(set_to_none=True)
        loss = task.criterion(model(x), y)
        loss.backward()
        if record:
            thetas.append(flat(params))
            grads.append(flat([p.grad for p in params]))
            losses.append(loss.item())
        if leap is not None:
            leap.observe(model, loss)
        opt.step()
    with torch.no_grad():
        x, y = task.batches[-1]
        final = task.criterion(model(x), y)
    if leap is not None:
        leap.end_task(model, None if drop_final_loss else final)
    if not record:
        return None
    thetas.append(flat(params))
    losses.append(final.item())
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    return Trajectory(thetas, grads, losses, flat(buffers) if buffers else None)


def segments(traj: Trajectory, loss_term: bool, stabilizer: bool, drop_final_loss: bool = False
             ) -> list[tuple[Tensor, float, Tensor]]:
    """Per segment i: (Δθ_i, Δf_i as Leap uses it, g_i); Δf_i = 0 where there is no loss term."""
    out = []
    k = len(traj.grads)
    for i in range(k):
        dtheta = traj.thetas[i + 1] - traj.thetas[i]
        df = traj.losses[i + 1] - traj.losses[i]
        if not loss_term or (drop_final_loss and i == k - 1):
            df = 0.0
        elif stabilizer:
            df = -abs(df)
        out.append((dtheta, df, traj.grads[i]))
    return out


def reference_increment_sum(traj: Trajectory, metric: str, loss_term: bool, stabilizer: bool,
                            drop_final_loss: bool = False) -> tuple[Tensor, float]:
    """docs/leap.md written out: (Σ_i increment_i, d_p of eq. 2) for one task, in float64."""
    total = torch.zeros_like(traj.thetas[0])
    path = 0.0
    for dtheta, df, g in segments(traj, loss_term, stabilizer, drop_final_loss):
        increment = -(dtheta + df * g)
        sq = float(dtheta @ dtheta) + df * df
        if metric == "length":
            increment = increment / math.sqrt(sq)
            path += math.sqrt(sq)
        else:
            path += sq
        total += increment
    return total, path


@pytest.mark.parametrize(("metric", "loss_term", "stabilizer"), OPTIONS)
def test_the_readable_increment_is_the_reference_and_the_fast_path_is_it(
        metric: str, loss_term: bool, stabilizer: bool, step_scalars: str):
    """metaleap.leap.increment, summed over a recorded task, gives this file's reference
    (docs/leap.md written out) and the Σ_i increment_i that Leap's workspace accumulates (its
    ``.grad`` after one task), both to 1e-12 in float64; a stack of tasks gives each row's."""
    model, task = mlp(), regression_tasks(1, 6, seed=3)[0]
    leap = Leap(model, metric=metric, loss_term=loss_term, stabilizer=stabilizer)
    traj = run_task(model, task, INNER_OPTIMIZERS["momentum"], leap)
    leap.meta_grad()
    total, path = torch.zeros_like(traj.thetas[0]), 0.0
    steps = []
    for i, g in enumerate(traj.grads):
        df = torch.tensor(traj.losses[i + 1] - traj.losses[i], dtype=torch.float64)
        step, term = increment(traj.thetas[i + 1] - traj.thetas[i], df if loss_term else None,
                               g, metric, stabilizer)
        total, path = total + step, path + float(term)
        steps.append((traj.thetas[i + 1] - traj.thetas[i], df, g, step))
    expected, expected_path = reference_increment_sum(traj, metric, loss_term, stabilizer)
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-14)
    assert path == pytest.approx(expected_path, rel=1e-12)
    torch.testing.assert_close(leap_grad(leap), total, rtol=1e-12, atol=1e-14)
    rows, df, g, _ = (torch.stack(column) for column in zip(*steps, strict=True))
    stacked, _ = increment(rows, df if loss_term else None, g, metric, stabilizer)
    torch.testing.assert_close(stacked, torch.stack([s[-1] for s in steps]), rtol=1e-14,
                               atol=1e-15)


def path_length(traj: Trajectory) -> float:
    """d_1 of eq. 2 with γ = (θ, f), computed independently of Leap."""
    return reference_increment_sum(traj, "length", True, False)[1]


def leap_grad(leap: Leap) -> Tensor:
    return flat([p.grad for _, p in leap.named_meta_parameters()])


def assert_close_1e9(actual: Tensor, expected: Tensor, what: str) -> None:
    abs_err = (actual - expected).abs().max().item()
    rel_err = ((actual - expected).norm() / expected.norm()).item()
    assert abs_err <= 1e-9 and rel_err <= 1e-9, (
        f"{what}: max abs error {abs_err:.3e}, relative error {rel_err:.3e}")


# ---------------------------------------------------------------------------- 1. reference
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int, int, int], list[Task]]]] = {
    "mlp": (mlp, regression_tasks),
    "convnet": (convnet, image_tasks),
}


@pytest.fixture(scope="module", params=list(itertools.product(MODELS, INNER_OPTIMIZERS)),
                ids=lambda p: "-".join(p))
def trained(request: pytest.FixtureRequest) -> tuple[nn.Module, list[Task], OptFactory,
                                                         list[Trajectory]]:
    """A float64 model, 3 tasks of 7 steps, and each task's trajectory trained without Leap."""
    model_name, opt_name = request.param
    make_model, make_tasks = MODELS[model_name]
    model = make_model()
    tasks = make_tasks(3, 7, 1)
    make_opt = INNER_OPTIMIZERS[opt_name]
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    trajs = []
    for task in tasks:
        model.load_state_dict(theta0)
        trajs.append(run_task(model, task, make_opt))
    model.load_state_dict(theta0)
    # The stabilizer only matters where a step raised the loss: make sure the data has some.
    assert any(t.losses[i + 1] > t.losses[i] for t in trajs for i in range(7)), \
        "no loss increase in the trajectories: the stabilizer would go untested"
    return model, tasks, make_opt, trajs


@pytest.mark.parametrize("drop_final_loss", [False, True], ids=["final_loss", "final_none"])
@pytest.mark.parametrize(("metric", "loss_term", "stabilizer"), OPTIONS)
def test_meta_grad_matches_reference(trained, metric: str, loss_term: bool, stabilizer: bool,
                                     drop_final_loss: bool, step_scalars: str) -> None:
    """Leap's ``.grad`` = mean over tasks of Σ_i increment_i from the recorded trajectory.

    The trajectories were recorded in runs without Leap and re-run under Leap, so this also
    checks that Leap neither perturbs training nor starts tasks away from θ⁰ (params and
    BatchNorm buffers). Task paths (eq. 2) are checked against the reference too.
    With ``end_task(model, None)`` the last segment has Δf := 0, also inside the norm.
    """
    model, tasks, make_opt, trajs = trained
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    leap = Leap(model, metric=metric, loss_term=loss_term, stabilizer=stabilizer)
    # Scramble the model so begin_task must restore θ⁰ (parameters and buffers).
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(1) if t.is_floating_point() else t.fill_(5)
    expected, paths = torch.zeros_like(trajs[0].thetas[0]), []
    for task, ref in zip(tasks, trajs, strict=True):
        traj = run_task(model, task, make_opt, leap, drop_final_loss)
        for name, a, b in (("θ", traj.thetas, ref.thetas), ("g", traj.grads, ref.grads)):
            assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)), \
                f"training under Leap changed the {name} trajectory"
        assert traj.losses == ref.losses
        if ref.buffers is not None:
            assert torch.equal(traj.buffers, ref.buffers), "buffers did not start from θ⁰'s"
        inc, path = reference_increment_sum(ref, metric, loss_term, stabilizer, drop_final_loss)
        expected += inc / len(tasks)
        paths.append(path)
    stats = leap.meta_grad()
    model.load_state_dict(theta0)

    assert stats.tasks == len(tasks) and stats.dropped == 0
    assert stats.mean_path == pytest.approx(sum(paths) / len(paths), rel=1e-12)
    assert_close_1e9(leap_grad(leap), expected, f"{metric} loss_term={loss_term} "
                     f"stabilizer={stabilizer} drop_final_loss={drop_final_loss}")


def test_reference_is_sensitive() -> None:
    """Guard: the reference's variants differ, so agreeing with one of them means something.

    Each variant (stabilizer, dropped last loss, a trajectory off by one step, a gradient
    from the wrong step) must move the reference well beyond the 1e-9 tolerance.
    """
    tasks = regression_tasks(1, 7, 1)
    traj = run_task(mlp(), tasks[0], INNER_OPTIMIZERS["momentum"])
    base, _ = reference_increment_sum(traj, "length", True, False)
    shifted = Trajectory(traj.thetas, traj.grads[1:] + traj.grads[:1], traj.losses)
    variants = {
        "stabilizer": reference_increment_sum(traj, "length", True, True)[0],
        "drop_final_loss": reference_increment_sum(traj, "length", True, False, True)[0],
        "no last segment": base - reference_increment_sum(
            Trajectory(traj.thetas[-2:], traj.grads[-1:], traj.losses[-2:]),
            "length", True, False)[0],
        "gradient off by one": reference_increment_sum(shifted, "length", True, False)[0],
        "energy": reference_increment_sum(traj, "energy", True, False)[0],
    }
    for name, other in variants.items():
        assert (other - base).norm() > 1e-4 * base.norm(), name


# ---------------------------------------------------------------------------- 2. eqs. 4–5
def exact_pull_forward_grad(model: nn.Module, task: Task, alpha: float, p: int
                            ) -> Tensor:
    """∇_θ⁰ F̄ = ∇ Σ_i ‖γ̄^{i+1} − γ^i(θ⁰)‖^p, through the unrolled inner SGD loop.

    γ̄^{i+1} = (ψ^{i+1}, f(ψ^{i+1})) is the baseline trajectory from the same θ⁰, detached;
    γ^i(θ⁰) = (θ^i(θ⁰), f(θ^i(θ⁰))) keeps its full dependence on θ⁰ (Jacobians, Hessians).
    Every batch of ``task`` must be the same full batch, so f is one deterministic function.
    """
    x, y = task.batches[0]
    theta0 = {n: p_.detach().clone().requires_grad_(True) for n, p_ in model.named_parameters()}

    def f(params: dict[str, Tensor]) -> Tensor:
        return task.criterion(torch.func.functional_call(model, params, (x,)), y)

    thetas, losses = [theta0], []
    for _ in range(task.steps):
        loss = f(thetas[-1])
        grads = torch.autograd.grad(loss, list(thetas[-1].values()), create_graph=True)
        losses.append(loss)
        thetas.append({n: t - alpha * g for (n, t), g in zip(thetas[-1].items(), grads,
                                                                strict=True)})
    losses.append(f(thetas[-1]))
    objective = torch.zeros((), dtype=torch.float64)
    for i in range(task.steps):
        dtheta = torch.cat([t.reshape(-1) for t in thetas[i + 1].values()]).detach() - \
            torch.cat([t.reshape(-1) for t in thetas[i].values()])
        df = losses[i + 1].detach() - losses[i]
        sq = dtheta @ dtheta + df * df
        objective = objective + (sq.sqrt() if p == 1 else sq)
    return flat(torch.autograd.grad(objective, list(theta0.values())))


def full_batch_tasks(n: int, steps: int, seed: int) -> list[Task]:
    """Regression tasks whose every batch is one fixed full batch (deterministic f)."""
    return [Task([t.batches[0]] * (steps + 1), t.criterion)
            for t in regression_tasks(n, steps, seed, batch=16, x_scale=0.5)]


@pytest.mark.parametrize("metric", ["length", "energy"])
def test_identity_jacobian_approximation(metric: str) -> None:
    """Leap's meta-gradient → the exact pull-forward gradient (eq. 5) as the inner lr α → 0.

    Leap replaces ∂θ^i/∂θ⁰ = Π_j (I − α H_j) by I, an O(α) error relative to the gradient.
    The exact gradient of eq. 4 carries the factor p (2 for the energy) that Leap folds into
    the meta lr, so Leap must match exact / p. The relative error must shrink monotonically
    with α, like α (10× smaller α, ≥ 5× smaller error: a constant bias would show), and be
    below 1e-2 at the smallest α. Stabilizer off: eq. 4 has none.
    """
    p = 1 if metric == "length" else 2
    tasks = full_batch_tasks(2, 6, 3)
    model = mlp(seed=4)
    alphas, errors = (0.1, 0.03, 0.01, 0.003, 0.001), []
    for alpha in alphas:
        leap = Leap(model, metric=metric, loss_term=True, stabilizer=False)
        exact = torch.zeros_like(flat(list(model.parameters())))
        for task in tasks:
            run_task(model, task, partial(torch.optim.SGD, lr=alpha), leap)
            model.load_state_dict(leap.initialization())
            exact += exact_pull_forward_grad(model, task, alpha, p) / (p * len(tasks))
        leap.meta_grad()
        errors.append(((leap_grad(leap) - exact).norm() / exact.norm()).item())
    msg = f"relative errors at α = {alphas}: {errors}"
    assert all(a > b for a, b in itertools.pairwise(errors)), msg
    assert errors[-1] < 1e-2, msg
    assert errors[-1] < 0.2 * errors[-3], f"not first order in α: {msg}"


# ---------------------------------------------------------------------------- 3. it learns
def linear_regression_task(g: torch.Generator, mean: Tensor, steps: int, n: int = 32) -> Task:
    """y = x·w with w ~ N(μ, 0.3² I): the shared μ ≠ 0 makes a good initialization exist."""
    w = mean + 0.3 * torch.randn(mean.shape, generator=g, dtype=torch.float64)
    x = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    return Task([(x, (x @ w).unsqueeze(1))] * (steps + 1), mse)


def test_meta_learning_shortens_paths() -> None:
    """Leap (length, loss term, stabilizer; meta SGD) learns an init with shorter paths.

    Linear-regression tasks with a shared non-zero mean weight, a small tanh MLP trained by
    20 full-batch SGD steps per task; 50 meta-steps of 4 tasks, meta lr cosine-annealed. On 20
    held-out tasks from a fresh generator, the mean d_1 (eq. 2 with the loss coordinate,
    recomputed independently of Leap) from the meta-learned θ⁰ must be at least 30% shorter
    than from the original θ⁰ (this seed: ~75%; 38–78% over 8 model/task seeds), and the mean
    final loss must not be worse.
    """
    steps, meta_steps = 20, 50
    mean = torch.tensor([1.5, -1.0, 2.0, 0.5], dtype=torch.float64)
    model = mlp(mean.numel(), 16, 1, seed=5)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    inner: OptFactory = partial(torch.optim.SGD, lr=0.1)

    def evaluate(init: dict[str, Tensor]) -> tuple[float, float]:
        g = gen(1234)  # the same held-out tasks for both initializations
        paths, finals = [], []
        for _ in range(20):
            model.load_state_dict(init)
            traj = run_task(model, linear_regression_task(g, mean, steps), inner)
            paths.append(path_length(traj))
            finals.append(traj.losses[-1])
        return sum(paths) / len(paths), sum(finals) / len(finals)

    leap = Leap(model, metric="length", loss_term=True, stabilizer=True)
    meta_opt = torch.optim.SGD(leap.parameters(), lr=0.02)
    # Length-metric increments are unit vectors that do not vanish near the optimum: anneal.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(meta_opt, meta_steps)
    g = gen(99)
    for _ in range(meta_steps):
        for _ in range(4):
            run_task(model, linear_regression_task(g, mean, steps), inner, leap, record=False)
        leap.meta_grad()
        meta_opt.step()
        meta_opt.zero_grad(set_to_none=True)
        schedule.step()

    path0, final0 = evaluate(original)
    path1, final1 = evaluate(leap.initialization())
    msg = (f"held-out mean path {path0:.4f} → {path1:.4f} ({1 - path1 / path0:.1%} shorter), "
           f"mean final loss {final0:.5f} → {final1:.5f}")
    print(msg)
    assert path1 <= 0.7 * path0, msg
    assert final1 <= final0, msg
