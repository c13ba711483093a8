"""Batched tasks (``task_batching``) equal the sequential path: meta-steps, held-out curves,
whole studies and their resume, on tiny budgets on the CPU.

The equality tests run in float64, where the two paths agree to about 1e-15: they compute
the same function, and only float rounding can tell them apart. Float32 training amplifies
rounding (BatchNorm cancels most of a convolution's weight gradient, a max-pool reroutes the
gradient when rounding reorders a near-tie), so float32 alone moves θ⁰ by more than 1e-5
within a few meta-steps, task by task as batched (docs/experiments.md); float32 is compared
only before training, with the bound derived at that test.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_transfer import KILLER, Synthetic, content, run_study

from metaleap.cli import parser
from metaleap.metalearners import Context, SupervisedMetaStep, TaskStream, make_metalearner
from metaleap.models import make_convnet
from metaleap.protocols import batched, evaluation
from metaleap.protocols.config import ConfigError
from metaleap.protocols.evaluation import train_task
from metaleap.protocols.transfer import TransferStudy, resolve_config
from metaleap.protocols.transfer import study as transfer_study
from metaleap.protocols.transfer.cli import fields_of
from metaleap.runs import load_initialization
from metaleap.seeding import generator
from metaleap.stacked import StackedNet, stackable
from metaleap.tasks.augment import RandomAffine
from metaleap.tasks.base import Task, batches

pytestmark = pytest.mark.numerics  # rerun by .ci/run under an emulated older CPU

TOL = 1e-5
EXACT = 1e-10  # float64: the same function up to rounding
CLASSES, SIZE, BATCH = 5, 16, 8


@pytest.fixture
def float64() -> Iterator[None]:
    """Models and data in float64 (the default dtype) for the test."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def streams(step: int, count: int, steps: int, poison: int | None = None
            ) -> list[TaskStream]:
    """``count`` tasks of ``steps + 1`` augmented random batches, each from its own stream;
    task ``poison`` sees a NaN image in its second batch."""
    augment = RandomAffine()

    def draw(t: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = generator(step, "batched-test", t)
        for i in range(steps + 1):
            x = augment(torch.rand(BATCH, 1, SIZE, SIZE, generator=g), g)
            if t == poison and i == 1:
                x[0, 0, 0, 0] = float("nan")
            yield x, torch.randint(0, CLASSES, (BATCH,), generator=g)

    return [TaskStream(t, draw(t)) for t in range(count)]


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


METHODS = [("leap", {}), ("leap", {"metric": "energy", "loss_term": False,
                                   "stabilizer": False}),
           ("leap", {"stabilizer": False, "buffers": "average"}), ("reptile", {}),
           ("fomaml", {})]


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_batched_meta_steps_equal_sequential(method: str, options: dict, float64: None):
    """θ⁰ (parameters and buffers) and the metrics after 3 meta-steps of 3 tasks × 4 inner
    steps, each task on its own augmented batches: batched equals sequential (float64)."""
    def learner() -> tuple:
        model = make_convnet(CLASSES, seed=0, image_size=SIZE)
        ml = make_metalearner(method, model, Context(num_tasks=3), **options)
        return ml, model

    (seq, seq_model), (bat, bat_model) = learner(), learner()
    sequential = SupervisedMetaStep(seq, seq_model, inner_lr=0.1)
    together = batched.BatchedMetaStep(bat, bat_model, inner_lr=0.1)
    for step in range(3):
        a, b = sequential(streams(step, 3, 4)), together(streams(step, 3, 4))
        assert a.keys() == b.keys()
        assert all(math.isclose(a[k], b[k], rel_tol=TOL, abs_tol=TOL) for k in a), (a, b)
    init = seq.initialization()
    assert close(init, bat.initialization()) < EXACT
    assert close(init, make_convnet(CLASSES, seed=0, image_size=SIZE).state_dict()) > 1e-3
    if options.get("buffers") == "average":  # the averaged BatchNorm statistics moved
        assert float(init["encoder.1.running_var"].sub(1).abs().max()) > 1e-3


@pytest.mark.parametrize("method", ["leap", "reptile"])
def test_a_non_finite_task_is_dropped_in_both_paths(method: str, float64: None):
    """A task that meets a NaN is dropped and counted; the others still step θ⁰, alike."""
    runs = []
    for cls in (SupervisedMetaStep, batched.BatchedMetaStep):
        model = make_convnet(CLASSES, seed=0, image_size=SIZE)
        ml = make_metalearner(method, model, Context(num_tasks=3))
        metrics = cls(ml, model, inner_lr=0.1)(streams(0, 3, 3, poison=1))
        runs.append((metrics["dropped"], ml.initialization()))
    (d1, i1), (d2, i2) = runs
    assert d1 == d2 == 1.0
    assert all(bool(torch.isfinite(v).all()) for v in i2.values())
    assert close(i1, i2) < EXACT


def test_batched_evaluation_equals_train_task(float64: None):
    """Held-out training from one initialization: curves, AUC, path length and test error of
    the batched tasks equal train_task's, task by task, each on its own stream (float64: five
    float32 SGD steps would amplify the two paths' different orders of sums)."""
    def make() -> torch.nn.Module:
        return make_convnet(CLASSES, seed=3, image_size=SIZE, channels_last=False)

    init = make_convnet(CLASSES, seed=1, image_size=SIZE).state_dict()
    g = torch.Generator().manual_seed(5)
    tasks = [Task(f"t{t}", CLASSES, torch.rand(20, 1, SIZE, SIZE, generator=g),
                  torch.arange(20) % CLASSES, torch.rand(10, 1, SIZE, SIZE, generator=g),
                  torch.arange(10) % CLASSES) for t in range(3)]
    augment = RandomAffine()
    together = batched.train_tasks(make, init, tasks, 5, 0.1, BATCH,
                                   [generator(0, "eval", t) for t in range(3)], augment)
    for t, task in enumerate(tasks):
        alone = train_task(make, init, task, 5, 0.1, BATCH, generator(0, "eval", t), augment)
        for name in ("train_error", "train_loss", "step_norms"):
            assert getattr(together[t], name) == pytest.approx(getattr(alone, name), abs=TOL)
        for name in ("test_error", "error_auc", "loss_auc", "path_length"):
            assert getattr(together[t], name) == pytest.approx(getattr(alone, name), abs=TOL)
    assert together[0].train_loss != pytest.approx(together[1].train_loss, abs=1e-3)


def test_stacked_net_keeps_tasks_apart():
    """Task t's outputs, gradients and BatchNorm statistics depend on task t's inputs and
    parameters only: perturbing task 1 leaves task 0 exactly as it was."""
    model = make_convnet(CLASSES, seed=0, image_size=SIZE)
    assert stackable(model) and not stackable(torch.nn.LSTM(2, 2))
    x = torch.rand(2, BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for shift in (0.0, 1.0):
        net = StackedNet(model, 2, model.state_dict())
        with torch.no_grad():
            net.params["encoder.0.weight"][1] += shift
        x2 = x.clone()
        x2[1] += shift
        out = net(x2)
        out.sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad[0] for n, p in net.params.items()})
        grads[-1].update({n: b[0] for n, b in net.buffers.items()})
    assert torch.equal(outs[0][0], outs[1][0]) and not torch.equal(outs[0][1], outs[1][1])
    assert close(grads[0], grads[1]) == 0.0


def test_study_batched_equals_sequential(tmp_path: Path, float64: None):
    """A tiny study with task_batching on equals it off, in float64: held-out metrics and
    curves (also at heldout_at) and the exported initializations, to 1e-5."""
    common = ["methods=leap,fomaml,scratch", "meta_steps=2", "heldout_at=1", "image_size=16",
              "num_val=0", "channels_last=false"]  # the stacked network's layout: NCHW
    off = run_study(tmp_path / "off", common + ["task_batching=off"])
    on = run_study(tmp_path / "on", common + ["task_batching=on"])
    for key, a in off.items():
        b = on[key]
        for metric in ("error_auc", "loss_auc", "test_error", "path_length"):
            assert b[metric] == pytest.approx(a[metric], rel=TOL, abs=TOL), (key, metric)
            for step, values in a.get("budget", {}).items():
                assert b["budget"][step][metric] == pytest.approx(values[metric], rel=TOL,
                                                                  abs=TOL)
        for curve in ("train_error_curves", "train_loss_curves"):
            assert torch.tensor(b[curve]) == pytest.approx(torch.tensor(a[curve]), rel=TOL,
                                                           abs=TOL)
        inits = [load_initialization(tmp_path / d / "init" / f"{key}.safetensors")
                 .state_dict() for d in ("off", "on")]
        assert close(*inits) < TOL, key


def test_float32_study_batched_agrees_before_training_amplifies_rounding(tmp_path: Path):
    """In float32 the two paths agree where no SGD step has amplified their different orders
    of sums: from the same θ⁰ (no meta-step), each held-out task's first loss is one forward
    pass. Its float32 sums (at most 3×3×64 = 576 terms) round at a relative √576·2⁻²⁴ ≈ 1.4e-6
    per layer in the typical case, 576·2⁻²⁴ ≈ 3.4e-5 at worst; rel 2e-4 covers the worst case
    of the four blocks and the head, while a batching bug (a task seeing another's batch or
    parameters) moves the loss by O(1)."""
    common = ["methods=leap,scratch", "meta_steps=0", "image_size=16", "num_val=0",
              "channels_last=false"]
    off = run_study(tmp_path / "off", common + ["task_batching=off"])
    on = run_study(tmp_path / "on", common + ["task_batching=on"])
    for key, a in off.items():
        first = [curve[0] for curve in a["train_loss_curves"]]
        assert [c[0] for c in on[key]["train_loss_curves"]] == pytest.approx(first, rel=2e-4)
        assert len(set(first)) == len(first)  # each task its own batch


def test_batched_run_resumes_bit_identically(tmp_path: Path):
    """A batched run killed after its first checkpoint and resumed equals the uninterrupted
    batched run bit for bit (transfer checkpoints between meta-steps, so batching changes
    nothing there)."""
    overrides = ["methods=leap", "meta_steps=4", "checkpoint_every=2", "eval_every=3",
                 "heldout_at=1,3", "task_batching=on"]
    run_study(tmp_path / "straight", overrides)
    code = KILLER.format(tests=str(Path(__file__).parent), threads=torch.get_num_threads(),
                         kill_at=4, overrides=overrides, path=str(tmp_path / "killed"))
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 137, child.stderr
    assert not (tmp_path / "killed" / "results" / "seed0-leap.json").exists()
    run_study(tmp_path / "killed", overrides, resume=True)
    for rel in ["metrics.jsonl", "results/seed0-leap.json", "init/seed0-leap.safetensors"]:
        assert content(tmp_path / "straight" / rel) == content(tmp_path / "killed" / rel), rel


def test_auto_batches_on_cuda_only_and_bad_modes_are_refused(monkeypatch):
    assert not batched.use_task_batching("auto", "cpu")
    assert batched.use_task_batching("auto", "cuda")
    assert batched.use_task_batching("on", "cpu") and not batched.use_task_batching("off", "cuda")
    assert TransferStudy(resolve_config("tiny", ["task_batching=on"]), Synthetic()).batched
    assert not TransferStudy(resolve_config("tiny"), Synthetic()).batched  # auto on the CPU
    with pytest.raises(ConfigError, match="task_batching"):
        resolve_config("tiny", ["task_batching=sometimes"])
    monkeypatch.setattr(transfer_study, "stackable", lambda model: False)  # a model it cannot stack
    with pytest.raises(ConfigError, match="cannot stack"):
        TransferStudy(resolve_config("tiny", ["task_batching=on"]), Synthetic())


def test_cli_flag_sets_the_config_and_the_note_names_the_sequential_methods():
    """--task-batching on becomes the config's task_batching; with it, the methods without a
    batched form (MAML, finetuning) are named in the one-line note the command prints."""
    args = parser().parse_args(["transfer", "--preset", "tiny", "--task-batching", "on"])
    cfg = resolve_config(args.preset, args.overrides, **fields_of(args))
    assert cfg.task_batching == "on"
    assert resolve_config("tiny", [], **fields_of(parser().parse_args(["transfer"]))
                          ).task_batching == "auto"
    mixed = resolve_config("tiny", ["methods=leap,maml,finetune,scratch", "task_batching=on"])
    assert TransferStudy(mixed, Synthetic()).notes() == [
        "task batching is on; maml, finetune meta-train task by task (no batched form), their "
        "held-out evaluations are batched"]
    assert TransferStudy(resolve_config("tiny", ["task_batching=on"]), Synthetic()
                         ).notes() == []


def test_every_task_sees_the_data_the_sequential_path_feeds_it(monkeypatch):
    """Batched, each task of a meta-step and each held-out task draws the same batches
    (augmented images and labels, in the same order) as task by task."""
    seen: dict[str, dict[tuple, list]] = {}

    def recorded(mode: str, task: tuple, stream: Iterator) -> Iterator:
        for x, y in stream:
            seen[mode].setdefault(task, []).append((hash(x.numpy().tobytes()), y.tolist()))
            yield x, y

    draw = batches
    for mode, step_fn in (("off", SupervisedMetaStep), ("on", batched.BatchedMetaStep)):
        seen[mode] = {}
        cfg = resolve_config("tiny", ["methods=reptile", "num_pretrain=3", "meta_batch=3",
                                      "image_size=16", f"task_batching={mode}"])
        study = TransferStudy(cfg, Synthetic())
        run = next(study.runs())
        assert isinstance(run.step_fn, step_fn)
        run.step_fn([TaskStream(t.index, recorded(mode, ("meta", t.index), t.batches))
                     for t in study.meta_batch(cfg, 0, 0)])

        def recording(task: Task, *args, mode: str = mode, **kwargs) -> Iterator:
            return recorded(mode, ("eval", task.name), draw(task, *args, **kwargs))

        monkeypatch.setattr(batched, "batches", recording)
        monkeypatch.setattr(evaluation, "batches", recording)
        study.train_curves(run.learner.initialization(), 0, study.splits[0].heldout, "eval")
    assert seen["on"] == seen["off"]
    assert len(seen["on"]) == 3 + 2 and all(len(v) == 4 for v in seen["on"].values())
