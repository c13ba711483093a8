"""The meta-learners: each against a hand reference, determinism, resume, per-task heads."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaleap import Leap, methods
from metaleap.metalearners import (
    FOMAML,
    MAML,
    Context,
    Finetune,
    LeapLearner,
    MetaLearner,
    Scratch,
    SupervisedMetaStep,
    TaskStream,
    make_metalearner,
)
from metaleap.metalearners.supervised import with_last
from metaleap.methods import MetaOptions
from metaleap.models import ConvNet
from metaleap.protocols.config import field_docs
from metaleap.seeding import generator

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

Batches = list[tuple[Tensor, Tensor]]
CLASSES = 5



def flat(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """The parameters as one vector (``reshape``: the convnet's conv weights are
    channels-last, so ``parameters_to_vector``'s ``view`` does not apply)."""
    return torch.cat([p.detach().reshape(-1) for p in params])

def small_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> ConvNet:
    """The Omniglot architecture on 28×28 images, narrowed to 4 channels to stay fast."""
    return ConvNet(CLASSES, channels=4, generator=generator(seed, "model")).to(dtype)


def tiny_net(seed: int = 0) -> ConvNet:
    """One conv block on 4×4 images in float64 (51 parameters): for finite differences."""
    return ConvNet(3, channels=2, blocks=1, image_size=4, generator=generator(seed, "model")
                   ).double()


def make_tasks(seed: int, n: int = 2, steps: int = 3, batch: int = 4, size: int = 28,
               classes: int = CLASSES, dtype: torch.dtype = torch.float32) -> list[Batches]:
    """``n`` tasks of ``steps + 1`` random batches (images, labels)."""
    g = generator(seed, "test-data")
    return [[(torch.rand(batch, 1, size, size, generator=g, dtype=dtype),
              torch.randint(0, classes, (batch,), generator=g)) for _ in range(steps + 1)]
            for _ in range(n)]


def streams(tasks: list[Batches]) -> list[TaskStream]:
    return [TaskStream(i, iter(batches)) for i, batches in enumerate(tasks)]


class Built:
    """A learner around a working model, with the supervised meta-step at inner lr 0.1."""

    def __init__(self, name: str, seed: int = 0, model: nn.Module | None = None,
                 exclude: Any = (), inner_lr: float = 0.1, **options: Any) -> None:
        self.model = model if model is not None else small_net(seed)
        self.learner = make_metalearner(
            name, self.model, Context(num_tasks=2, seed=seed, inner_lr=inner_lr,
                                      exclude=exclude), **options)
        self.step = SupervisedMetaStep(self.learner, self.model, inner_lr=inner_lr)

    def meta_step(self, tasks: list[TaskStream]) -> dict[str, float]:
        return self.step(tasks)


def build(name: str, seed: int = 0, **options: Any) -> Built:
    return Built(name, seed, **options)


def flat_init(learner: MetaLearner | Built) -> dict[str, Tensor]:
    learner = learner.learner if isinstance(learner, Built) else learner
    return {k: v.clone() for k, v in learner.initialization().items()}


def meta_params(built: Built) -> dict[str, Tensor]:
    """θ⁰'s parameters (no buffers) as the model names them."""
    params = {n for n, _ in built.model.named_parameters()}
    return {k: v for k, v in flat_init(built).items() if k in params}


def sgd_task(model: nn.Module, batches: Batches, lr: float) -> None:
    """K plain SGD steps on all but the last batch, in place."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in batches[:-1]:
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- every method


META_BATCH = sorted(m.name for m in methods.METHODS.values() if m.kind == methods.META_BATCH)


@pytest.mark.parametrize("name", META_BATCH)
def test_meta_step_runs_changes_theta_and_is_deterministic(name: str) -> None:
    tasks = make_tasks(1)
    a, b = build(name), build(name)
    before = flat_init(a)
    metrics = a.meta_step(streams(tasks))
    b.meta_step(streams(tasks))
    after = flat_init(a)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in flat_init(b).items())
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    if name == "scratch":
        assert metrics == {} and not changed
    else:
        assert changed
        assert metrics["tasks"] == 2
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    fresh = small_net(7)
    missing, unexpected = fresh.load_state_dict(a.learner.initialization(), strict=False)
    assert not unexpected
    assert missing == (["head.weight", "head.bias"] if name == "finetune" else [])


def test_scratch_reads_no_data_and_keeps_the_seeded_init() -> None:
    model = small_net(3)
    built = Built("scratch", model=model)
    learner = built.learner
    assert isinstance(learner, Scratch)
    it = iter(make_tasks(0)[0])
    assert built.meta_step([TaskStream(0, it)]) == {}
    assert len(list(it)) == 4
    init = learner.initialization()
    assert init.keys() == model.state_dict().keys()
    assert all(torch.equal(init[k], v) for k, v in small_net(3).state_dict().items())


def test_make_metalearner_checks_names_and_options() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        make_metalearner("nope", small_net())
    with pytest.raises(ValueError, match="reptile has no option metric"):
        make_metalearner("reptile", small_net(), metric="energy")
    learner = make_metalearner("leap", small_net(), metric="energy", meta_optimizer="adam")
    assert isinstance(learner, LeapLearner) and learner.leap.metric == "energy"
    assert isinstance(learner.meta_optimizer, torch.optim.Adam)
    for name, options, message in [
            ("fomaml", {"meta_optimizer": "rmsprop"}, "meta_optimizer"),
            ("leap", {"meta_lr": float("nan")}, "meta_lr must be a positive"),
            ("leap", {"loss_term": False}, "stabilizer needs loss_term"),
            ("leap", {"metric": "area"}, "metric"),
            ("finetune", {"momentum": 1.5}, "momentum")]:
        with pytest.raises(ValueError, match=message):
            make_metalearner(name, small_net(), **options)


def test_every_method_is_registered_with_label_color_and_documented_options() -> None:
    labels = [m.label for m in methods.METHODS.values()]
    assert len(set(labels)) == len(labels)  # one display name per method, never shared
    assert [m.name for m in methods.METHODS.values() if m.reference] == ["leap"]
    for name, method in methods.METHODS.items():
        assert method.name == name and method.label and method.color.startswith("tab:")
        assert isinstance(method.load(), type)
        method.options().check()
        fields = {f.name for f in dataclasses.fields(method.options)}
        docs = field_docs(method.options)
        assert fields <= set(docs) and all(docs[f] for f in fields), name


def test_each_method_declares_the_batched_form_it_has() -> None:
    """``batched_form`` (what the protocols read) says whether ``batched`` gives a handle:
    Leap, Reptile and FOMAML do; MAML, finetuning and no pretraining do not."""
    declared = {}
    for name, method in methods.METHODS.items():
        if method.kind != methods.META_BATCH:
            continue
        learner = make_metalearner(name, ConvNet(num_classes=5))
        declared[name] = learner.batched_form
        assert (learner.batched(2) is not None) == learner.batched_form, name
    assert [n for n, has in declared.items() if has] == ["leap", "reptile", "fomaml"]


def test_a_task_needs_a_step_and_the_extra_batch() -> None:
    batch = make_tasks(0, n=1, steps=0)[0]
    with pytest.raises(ValueError, match="at least 2 batches"):
        list(with_last(iter(batch)))
    assert [last for _, last in with_last(iter(make_tasks(0, n=1, steps=2)[0]))] == [
        False, False, True]


def test_leap_recovers_from_a_task_that_failed() -> None:
    learner = build("leap")
    with pytest.raises(ValueError, match="at least 2 batches"):
        learner.meta_step(streams(make_tasks(0, n=1, steps=0)))
    assert learner.meta_step(streams(make_tasks(0)))["tasks"] == 2


# ---------------------------------------------------------------- hand references


def test_reptile_update_is_theta_minus_mean_final_iterate() -> None:
    tasks = make_tasks(2, n=3, dtype=torch.float64)
    model = small_net(0, torch.float64)
    reference = copy.deepcopy(model)
    learner = Built("reptile", model=model, meta_lr=0.3)
    learner.meta_step(streams(tasks))
    finals = []
    for batches in tasks:
        net = copy.deepcopy(reference)
        sgd_task(net, batches, 0.1)
        finals.append(dict(net.named_parameters()))
    theta = meta_params(learner)
    for n, p0 in reference.named_parameters():
        mean_final = torch.stack([f[n].detach() for f in finals]).mean(0)
        torch.testing.assert_close(theta[n], p0.detach() - 0.3 * (p0.detach() - mean_final),
                                   rtol=0, atol=1e-13)


def test_fomaml_update_is_mean_final_iterate_query_gradient() -> None:
    tasks = make_tasks(3, n=3, dtype=torch.float64)
    model = small_net(0, torch.float64)
    reference = copy.deepcopy(model)
    learner = Built("fomaml", model=model, meta_lr=0.5)
    learner.meta_step(streams(tasks))
    grads = []
    for batches in tasks:
        net = copy.deepcopy(reference)
        sgd_task(net, batches, 0.1)
        x, y = batches[-1]
        grads.append(dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(
            F.cross_entropy(net(x), y), list(net.parameters())), strict=True)))
    theta = meta_params(learner)
    for n, p0 in reference.named_parameters():
        mean_grad = torch.stack([g[n] for g in grads]).mean(0)
        torch.testing.assert_close(theta[n], p0.detach() - 0.5 * mean_grad, rtol=0, atol=1e-13)


def meta_loss(model: nn.Module, theta: Tensor, tasks: list[Batches], lr: float) -> float:
    """mean over tasks of f_query(θ^K(θ⁰)), with θ⁰ the flat vector ``theta``: MAML's objective."""
    losses = []
    for batches in tasks:
        net = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(theta.clone(), net.parameters())  # views of it
        sgd_task(net, batches, lr)
        with torch.no_grad():
            x, y = batches[-1]
            losses.append(F.cross_entropy(net(x), y).item())
    return sum(losses) / len(losses)


def maml_gradient(learner_cls: type, model: nn.Module, tasks: list[Batches], lr: float
                  ) -> Tensor:
    """The meta-gradient a learner applies, read back from one SGD meta-step of lr 1."""
    net = copy.deepcopy(model)
    learner = learner_cls(net, MetaOptions(meta_lr=1.0))
    before = torch.cat([p.detach().flatten() for p in learner.theta.values()])
    SupervisedMetaStep(learner, net, inner_lr=lr)(streams(tasks))
    return before - torch.cat([p.detach().flatten() for p in learner.theta.values()])


def test_maml_gradient_matches_finite_differences() -> None:
    model = tiny_net(0)
    tasks = make_tasks(4, n=2, steps=2, batch=6, size=4, classes=3, dtype=torch.float64)
    grad = maml_gradient(MAML, model, tasks, lr=0.5)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    eps, fd = 1e-6, torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        fd[i] = (meta_loss(model, theta + e, tasks, 0.5) - meta_loss(model, theta - e, tasks, 0.5)
                 ) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7)
    first_order = maml_gradient(FOMAML, model, tasks, lr=0.5)
    assert (grad - first_order).abs().max() > 1e-3  # the second-order term is there


def test_maml_with_one_step_differs_from_fomaml_by_the_hessian_term() -> None:
    model = tiny_net(1)
    tasks = make_tasks(5, n=1, steps=1, batch=6, size=4, classes=3, dtype=torch.float64)
    maml, fomaml = (maml_gradient(cls, model, tasks, lr=0.5) for cls in (MAML, FOMAML))
    # reference: (I − α H(θ⁰)) ∇f_q(θ¹) with plain autograd on the flat parameter vector
    net = copy.deepcopy(model)
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    (x, y), (xq, yq) = tasks[0]

    def unflat(v: Tensor) -> dict[str, Tensor]:
        return dict(zip(names, [t.view(s) for t, s in zip(
            v.split([s.numel() for s in shapes]), shapes, strict=True)], strict=True))

    def loss(v: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        return F.cross_entropy(torch.func.functional_call(net, {**unflat(v), **buffers}, (xb,)),
                               yb)

    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach().requires_grad_()
    (g0,) = torch.autograd.grad(loss(theta0, x, y), theta0, create_graph=True)
    theta1 = (theta0 - 0.5 * g0).detach().requires_grad_()
    (gq,) = torch.autograd.grad(loss(theta1, xq, yq), theta1)
    (hvp,) = torch.autograd.grad(g0 @ gq, theta0)  # H(θ⁰) ∇f_q(θ¹)
    torch.testing.assert_close(fomaml, gq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(maml, gq - 0.5 * hvp, rtol=1e-8, atol=1e-10)
    assert (maml - fomaml).abs().max() > 1e-4


def test_leap_adapter_matches_leap_driven_by_hand() -> None:
    tasks = make_tasks(6, n=3, steps=4)
    model = small_net(0)
    reference = copy.deepcopy(model)
    built = Built("leap", model=model)
    metrics = built.meta_step(streams(tasks))

    leap = Leap(reference)
    meta_opt = torch.optim.SGD(leap.parameters(), lr=0.1)
    paths = []
    for batches in tasks:
        leap.begin_task(reference)
        opt = torch.optim.SGD(reference.parameters(), lr=0.1)
        for x, y in batches[:-1]:
            loss = F.cross_entropy(reference(x), y)
            loss.backward()
            leap.observe(reference, loss)
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            x, y = batches[-1]
            paths.append(leap.end_task(reference, F.cross_entropy(reference(x), y)).path)
    leap.meta_grad()
    meta_opt.step()
    ours, theirs = built.learner.initialization(), leap.initialization()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert metrics["path"] == pytest.approx(sum(paths) / len(paths))


# ---------------------------------------------------------------- per-task heads, bad tasks


@pytest.mark.parametrize("name", ["leap", "reptile", "fomaml", "maml"])
def test_excluded_head_is_per_task_and_not_meta_learned(name: str) -> None:
    def is_head(n: str) -> bool:
        return n.startswith("head.")

    model = small_net(0)
    head0 = model.head.weight.detach().clone()
    learner = build(name, exclude=is_head)
    learner.meta_step(streams(make_tasks(7)))
    assert not any(is_head(k) for k in learner.learner.initialization())
    if name != "maml":  # the others train the working model in place; its head was reset
        seen = []

        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            seen.append(module.weight.detach().clone())

        learner.model.head.register_forward_pre_hook(record)
        learner.meta_step(streams(make_tasks(8)))
        assert torch.equal(seen[0], head0) and torch.equal(seen[4], head0)  # each task's start


@pytest.mark.parametrize("name", ["leap", "reptile", "fomaml", "maml"])
def test_non_finite_task_is_dropped(name: str) -> None:
    tasks = make_tasks(9, n=3)
    tasks[1][0] = (torch.full_like(tasks[1][0][0], float("nan")), tasks[1][0][1])
    learner = build(name)
    before = flat_init(learner)
    metrics = learner.meta_step(streams(tasks))
    assert metrics["dropped"] == 1
    after = flat_init(learner)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_finetune_trains_each_task_through_its_own_head() -> None:
    built = build("finetune")
    learner = built.learner
    assert isinstance(learner, Finetune) and len(learner.net.heads) == 2
    heads = [h.weight.detach().clone() for h in learner.net.heads]
    built.meta_step([TaskStream(1, iter(make_tasks(10, n=1)[0]))])  # only task 1
    assert torch.equal(learner.net.heads[0].weight, heads[0])
    assert not torch.equal(learner.net.heads[1].weight, heads[1])
    with pytest.raises(IndexError):
        built.meta_step([TaskStream(2, iter(make_tasks(10, n=1)[0]))])


def test_finetune_pretraining_is_round_robin_sgd_by_hand() -> None:
    """A finetuning meta-step is this hand loop: plain SGD (inner lr 0.1), one step of each
    task in turn, task t through head t; then each task's extra batch is forwarded without a
    step (in train mode, so it still moves the BatchNorm statistics). Running the tasks one
    after the other instead gives other weights: the order is what is tested."""
    built = build("finetune")
    net = built.learner.net
    tasks = make_tasks(3, n=2, steps=3)

    def by_hand(order: list[tuple[int, int]]) -> dict[str, Tensor]:
        ref = copy.deepcopy(net).train()
        params = list(ref.parameters())
        for t, i in order:
            x, y = tasks[t][i]
            grads = torch.autograd.grad(F.cross_entropy(ref(x, t), y), params,
                                        allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    if g is not None:  # the other task's head takes no step
                        p -= 0.1 * g
        with torch.no_grad():
            for t, batches in enumerate(tasks):
                ref(batches[-1][0], t)
        return {k: v.detach().clone() for k, v in ref.state_dict().items()}

    round_robin = by_hand([(t, i) for i in range(3) for t in range(2)])
    one_after_another = by_hand([(t, i) for t in range(2) for i in range(3)])
    built.meta_step(streams(tasks))
    after = net.state_dict()
    assert after.keys() == round_robin.keys()
    for name, value in round_robin.items():
        torch.testing.assert_close(after[name], value, msg=name)
    weight = "encoder.0.weight"
    assert not torch.allclose(round_robin[weight], one_after_another[weight], atol=1e-6)


# ---------------------------------------------------------------- checkpoint and resume


def nested_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(nested_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


RESUME: dict[str, Callable[[int], Built]] = {
    "leap": lambda seed: build("leap", seed, meta_optimizer="adam"),
    "finetune": lambda seed: build("finetune", seed, momentum=0.9),
    "reptile": lambda seed: build("reptile", seed, meta_optimizer="adam"),
    "fomaml": lambda seed: build("fomaml", seed),
    "maml": lambda seed: build("maml", seed, meta_optimizer="adam"),
}


@pytest.mark.parametrize("name", sorted(RESUME))
def test_resume_is_bit_identical(name: str, tmp_path: Path) -> None:
    first, second = make_tasks(11), make_tasks(12)
    built = RESUME[name](0)
    run = built.learner
    built.meta_step(streams(first))
    torch.save({"state": run.state_dict(), "extra": run.extra_state()}, tmp_path / "ckpt.pt")
    built.meta_step(streams(second))

    again = RESUME[name](1)  # another seed: everything must come from the checkpoint
    resumed = again.learner
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed.load_state_dict(ckpt["state"])
    resumed.load_extra_state(ckpt["extra"])
    again.meta_step(streams(second))
    assert nested_equal(run.state_dict(), resumed.state_dict())
    assert nested_equal(run.extra_state(), resumed.extra_state())


# ---------------------------------------------------------------- the caller-owned loop


def test_caller_loop_with_momentum_schedule_and_clipping_matches_a_hand_reference() -> None:
    """Reptile through ``task()`` with the caller's own optimizer, schedule and clipping:
    the meta-gradient is θ⁰ − θ^K of exactly the loop the caller ran."""
    tasks = make_tasks(13, n=2, steps=4, dtype=torch.float64)
    model = small_net(0, torch.float64)
    reference = copy.deepcopy(model)
    learner = make_metalearner("reptile", model, meta_lr=1.0)

    def train(net: nn.Module, batches: Batches) -> None:
        opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, len(batches) - 1)
        for x, y in batches[:-1]:
            F.cross_entropy(net(x), y).backward()
            nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
            schedule.step()

    finals = []
    for batches in tasks:
        net = copy.deepcopy(reference)
        train(net, batches)
        finals.append(flat(net.parameters()))
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        with learner.task(model, opt) as t:
            train_with_handle(model, batches, t, opt)
    metrics = learner.meta_update()
    theta0 = flat(reference.parameters())
    expected = theta0 - (theta0 - torch.stack(finals).mean(0))  # SGD, meta lr 1
    got = flat(learner.theta.values())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert metrics["tasks"] == 2 and metrics["dropped"] == 0


def train_with_handle(model: nn.Module, batches: Batches, t: Any,
                      opt: torch.optim.Optimizer) -> None:
    """The loop of the test above, stepping the caller's optimizer after ``t.report``."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, len(batches) - 1)
    for x, y in batches[:-1]:
        loss = F.cross_entropy(t.model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        t.report(loss)
        opt.step()
        opt.zero_grad()
        schedule.step()
    with torch.no_grad():
        t.finish(F.cross_entropy(t.model(batches[-1][0]), batches[-1][1]))


@pytest.mark.parametrize("name", ["leap", "reptile", "fomaml", "maml"])
def test_tasks_split_over_two_learners_and_summed_equal_one_learner(name: str) -> None:
    """What distributed meta-training relies on: the contributions of disjoint parts of a
    meta-batch, summed by the reduce step, give one learner's meta-step on all of it."""
    tasks = make_tasks(14, n=3, dtype=torch.float64)
    whole = Built(name, model=small_net(0, torch.float64))
    whole.meta_step(streams(tasks))
    a, b = (Built(name, model=small_net(0, torch.float64)) for _ in range(2))
    for built, part in ((a, tasks[:2]), (b, tasks[2:])):
        built.step.train(streams(part))
    other = b.learner.contribution()

    def reduce(local: Any) -> Any:  # every entry summed: the all-reduce of two processes
        return local.unflat(local.flat("cpu") + other.flat("cpu"))

    metrics = a.learner.meta_update(reduce)
    assert metrics["tasks"] == 3
    for k, v in flat_init(whole).items():
        torch.testing.assert_close(flat_init(a)[k], v, rtol=1e-10, atol=1e-12)


def test_handles_refuse_misuse_with_clear_errors() -> None:
    model = small_net()
    x, y = make_tasks(15, n=1)[0][0]
    maml = make_metalearner("maml", model)
    with pytest.raises(ValueError, match="plain SGD"), maml.task(
            model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)):
        pass
    with pytest.raises(RuntimeError, match="functionally"), maml.task(
            model, torch.optim.SGD(model.parameters(), lr=0.1)) as t:
        t.report(F.cross_entropy(t.model(x), y))
    fomaml = make_metalearner("fomaml", model)
    with pytest.raises(ValueError, match="with its graph"), fomaml.task(
            model, torch.optim.SGD(model.parameters(), lr=0.1)) as t:
        t.step(F.cross_entropy(t.model(x), y))
        with torch.no_grad():
            t.finish(F.cross_entropy(t.model(x), y))
    reptile = make_metalearner("reptile", model)
    with pytest.raises(RuntimeError, match="without finish"), reptile.task(
            model, torch.optim.SGD(model.parameters(), lr=0.1)) as t:
        t.step(F.cross_entropy(t.model(x), y))
    with pytest.raises(ValueError, match="own multi-headed network"), make_metalearner(
            "finetune", model).task(model, None):
        pass
    with pytest.raises(RuntimeError, match="does not meta-train"):
        make_metalearner("scratch", model).task(model, None)
    assert reptile.contribution().count("tasks") == 0  # the unfinished task was discarded
