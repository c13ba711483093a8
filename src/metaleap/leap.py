"""Leap: meta-learning an initialization that shortens learning processes.

Flennerhag, Moreno, Lawrence, Damianou. *Transferring Knowledge across Learning Processes*,
ICLR 2019. A task trains a model from θ⁰ with any optimizer, θ^{i+1} = u(θ^i), and traces the
curve γ^i = (θ^i, f(θ^i)) on its loss surface. Leap descends the expected length (p = 1) or
energy (p = 2) of that curve, eq. (2),

    d_p = Σ_{i=0}^{K-1} ‖γ^{i+1} − γ^i‖₂^p,

through the pull-forward surrogate, eqs. (4)–(5): the forward point γ^{i+1} is frozen and
∂θ^i/∂θ⁰ ≈ I. Each of the K segments then adds, with Δθ = θ^{i+1} − θ^i,
Δf = f(θ^{i+1}) − f(θ^i) and g = ∇f(θ^i),

    increment_i = −(Δθ + Δf·g) / ‖(Δθ, Δf)‖₂^{2−p}         (the factor p folded into the meta lr)

and the meta-gradient is the mean over a meta-batch of tasks of Σ_i increment_i.
Everything is read during ordinary training: per step a few vector operations over flat
buffers, no autograd graph, no wait on an accelerator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from metaleap.choices import check_leap_options
from metaleap.shared import (
    Contribution,
    Exclude,
    Reduce,
    add_exactly,
    add_mean_to_grad,
    excluder,
    mangle,
    single_process,
)

__all__ = ["Leap", "LeapTask", "MetaGradStats", "TaskStats", "increment"]

Metric = Literal["length", "energy"]
BufferPolicy = Literal["reset", "average"]


def increment(delta_theta: Tensor, delta_f: Tensor | None, grad: Tensor,
              metric: Metric = "length", stabilizer: bool = True) -> tuple[Tensor, Tensor]:
    """Segment i's pull-forward increment and its term of d_p, eqs. (2), (4)–(5):

        increment_i = −(Δθ + Δf·g) / ‖(Δθ, Δf)‖₂^{2−p},    d_p term = ‖(Δθ, Δf)‖₂^p

    with Δθ = θ^{i+1} − θ^i (``delta_theta``), Δf = f(θ^{i+1}) − f(θ^i) (``delta_f``; −|Δf|
    with the ``stabilizer``; ``None`` leaves the loss coordinate out) and g = ∇f(θ^i)
    (``grad``). Rows of a 2-d ``delta_theta`` are tasks (``delta_f`` then has one entry per
    row). This is the statement of the mathematics: :meth:`Leap.observe` computes the same
    numbers in a preallocated workspace (``_segment``), and the batched path calls this.
    """
    sq = (delta_theta * delta_theta).sum(-1)
    pull = delta_theta
    if delta_f is not None:
        if stabilizer:
            delta_f = -delta_f.abs()
        sq = sq + delta_f * delta_f
        pull = delta_theta + delta_f.unsqueeze(-1) * grad
    if metric == "energy":
        return -pull, sq
    norm = sq.sqrt()
    return -pull / (norm + torch.finfo(norm.dtype).tiny).unsqueeze(-1), norm


@dataclass(frozen=True)
class TaskStats:
    """What one finished task contributed.

    ``path`` is the task's path length (metric "length") or energy ("energy"), eq. (2), over
    the γ the options define (with or without the loss coordinate). ``dropped`` is True when a
    non-finite loss, gradient or parameter made Leap discard the task's contribution.
    """

    steps: int
    path: float
    dropped: bool


@dataclass(frozen=True)
class MetaGradStats:
    """What :meth:`Leap.meta_grad` averaged: finished tasks kept and dropped, mean path."""

    tasks: int
    dropped: int
    mean_path: float


class Leap(nn.Module):
    """The Leap meta-learner: holds θ⁰ and accumulates the pull-forward meta-gradient.

    θ⁰ is a copy of ``model``'s trainable parameters (minus those ``exclude`` names) and,
    per ``buffers``, of its buffers. They are this module's own parameters and buffers, so
    any ``torch.optim`` optimizer and scheduler steps them and ``state_dict``/``.to`` work.

    Args:
        model: the network whose initialization is meta-learned.
        metric: ``"length"`` (p = 1, the paper's default) or ``"energy"`` (p = 2).
        loss_term: include the loss coordinate of γ; without it γ = θ alone.
        stabilizer: replace Δf by −|Δf| so a step where the loss rose still pulls along −g.
        exclude: parameter names, or a predicate on the name, to leave out of θ⁰ (for example
            a per-task output head). Excluded parameters are never touched by Leap.
        buffers: ``"reset"`` loads θ⁰'s buffers (e.g. BatchNorm statistics) into the model at
            each task, and they stay as they were at construction (the 2019 behaviour);
            ``"average"`` also loads them, and :meth:`meta_grad` replaces θ⁰'s floating-point
            buffers by the mean of the kept tasks' final buffers.

    Example::

        leap = Leap(model)
        meta_opt = torch.optim.SGD(leap.parameters(), lr=0.1)
        for task in meta_batch:
            leap.begin_task(model)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in task:
                loss = criterion(model(x), y)
                loss.backward()
                leap.observe(model, loss)   # just before opt.step(), after any clipping
                opt.step(); opt.zero_grad()
            leap.end_task(model, final_loss)
        leap.meta_grad()
        meta_opt.step(); meta_opt.zero_grad()
    """

    def __init__(self, model: nn.Module, metric: Metric = "length", loss_term: bool = True,
                 stabilizer: bool = True, exclude: Exclude = (),
                 buffers: BufferPolicy = "reset") -> None:
        super().__init__()
        check_leap_options(metric, loss_term, stabilizer, buffers)
        excluded = excluder(model, exclude)
        self.metric, self.loss_term, self.stabilizer, self.buffer_policy = (
            metric, loss_term, stabilizer, buffers)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad and not excluded(n)]
        if not self.names:
            raise ValueError("Leap found no trainable parameter to meta-learn in the model")
        params = dict(model.named_parameters())
        first = params[self.names[0]]
        if any(params[n].dtype != first.dtype or params[n].device != first.device
               for n in self.names):
            raise ValueError("Leap needs all meta-parameters on one device with one dtype")
        self.init = nn.ParameterDict(
            {mangle(n): nn.Parameter(params[n].detach().clone()) for n in self.names})
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.init_buffers = nn.Module()
        for n, b in model.named_buffers():
            self.init_buffers.register_buffer(mangle(n), b.detach().clone())
        self._numels = [params[n].numel() for n in self.names]
        self._prev: Tensor | None = None  # flat work buffers, allocated by begin_task
        # The running task's model and parameters, kept in a plain container: an nn.Module
        # attribute would register the model as a submodule of θ⁰ (its state_dict would move).
        self._running: _Running | None = None
        self._reset_meta_batch()

    # ---------------------------------------------------------------- θ⁰ access
    def named_meta_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """θ⁰ under the model's own parameter names."""
        for n in self.names:
            yield n, self.init[mangle(n)]

    def initialization(self) -> dict[str, Tensor]:
        """θ⁰ and its buffers under the model's names, detached (load with ``strict=False``)."""
        out = {n: p.detach() for n, p in self.named_meta_parameters()}
        out.update({n: getattr(self.init_buffers, mangle(n)) for n in self.buffer_names})
        return out

    # ---------------------------------------------------------------- the task protocol
    def begin_task(self, model: nn.Module) -> None:
        """Copy θ⁰ (and the buffers) into ``model`` and start a new path."""
        if self._running is not None:
            raise RuntimeError("begin_task called while a task is running: "
                               "call end_task (or abort_task) first")
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        wrong = [n for n in self.names if n in params and params[n].shape != self.init[
            mangle(n)].shape]
        if missing or wrong:
            raise ValueError(f"model does not match θ⁰: missing {missing}, wrong shape {wrong}")
        init = [p.detach() for _, p in self.named_meta_parameters()]
        like = init[0]
        if any(params[n].device != like.device or params[n].dtype != like.dtype
               for n in self.names):
            raise ValueError(f"θ⁰ is {like.dtype} on {like.device} but the model is not: "
                             "move one to match (leap.to(...) or model.to(...))")
        task_params = [params[n] for n in self.names]
        with torch.no_grad():
            torch._foreach_copy_(task_params, init)
            model_buffers = dict(model.named_buffers())
            for n in self.buffer_names:
                model_buffers[n].copy_(getattr(self.init_buffers, mangle(n)))
        if self._prev is None or self._prev.device != like.device or self._prev.dtype != like.dtype:
            total = sum(self._numels)
            # θ^i (then −Δθ) and g_i are the two rows of one buffer, so that the accumulator
            # takes c·(−Δθ) − c·Δf·g in one matrix-vector product (see _segment).
            self._pair = torch.empty(2, total, dtype=like.dtype, device=like.device)
            self._prev, self._grad = self._pair[0], self._pair[1]
            self._acc = torch.empty(total, dtype=like.dtype, device=like.device)
            self._prev_views = self._views(self._prev)
            self._grad_views = self._views(self._grad)
            self._host = _python_scalars(like)
            self._ops = math if self._host else torch
            self._weights = torch.empty(2, dtype=like.dtype, device=like.device)
            self._written = self._weights.numpy() if self._host else None
            self._tiny = torch.finfo(like.dtype).tiny
        self._acc.zero_()
        if self._host:
            self._running = _Running(model, task_params, 0.0, 0.0, True)
        else:
            zero = torch.zeros((), dtype=like.dtype, device=like.device)
            self._running = _Running(model, task_params, zero, zero.clone(),
                                     torch.ones((), dtype=torch.bool, device=like.device))

    def observe(self, model: nn.Module, loss: Tensor | float) -> None:
        """Read θ^i, ∇f(θ^i) and f(θ^i) for step i; call it just before ``optimizer.step()``.

        The gradient is read as it is then, so call it after clipping and after
        ``GradScaler.unscale_`` (or use :meth:`task`, which hooks the optimizer and does so).
        A parameter without a gradient (``None``) counts as a zero gradient.
        """
        self._check_running(model)
        loss = self._read_loss(loss)
        if self._running.steps:
            self._segment(loss)
        self._snapshot(loss)

    def end_task(self, model: nn.Module, final_loss: Tensor | float | None) -> TaskStats:
        """Close the K-th segment at θ^K and fold the task into the meta-batch.

        ``final_loss`` is f(θ^K), for instance the loss of one more forward pass on the next
        batch (what the other segments see) or an evaluation loss. Passing ``None`` is the
        explicit choice to drop the loss coordinate from the last segment only: it then
        pulls θ⁰ along Δθ alone.
        """
        self._check_running(model)
        run = self._running
        if run.steps == 0:
            raise RuntimeError("end_task: no step was observed in this task")
        self._segment(None if final_loss is None else self._read_loss(final_loss))
        stats = self.fold(self._in_order(self._acc), run.path, run.finite, run.steps,
                          dict(model.named_buffers()))
        self._running = None
        return stats

    @torch.no_grad()
    def fold(self, acc: Tensor, path: Tensor, finite: Tensor, steps: int,
             buffers: dict[str, Tensor]) -> TaskStats:
        """Fold one finished task into the meta-batch: its Σ_i increment_i (``acc``, flat in
        θ⁰'s order), its path d_p, whether its losses were finite, its final ``buffers``.

        :meth:`end_task` calls it; a caller that computed a task's increments itself (several
        tasks batched as one computation) folds each task with it, in task order. A task with
        a non-finite value is dropped and counted.
        """
        kept = bool((finite & torch.isfinite(acc).all()).item())
        if kept:
            self._sum = add_exactly(self._sum, acc)
            self._paths.append(float(path))
            if self.buffer_policy == "average":
                self._add_buffers(buffers)
        else:
            self._dropped += 1
        return TaskStats(steps=steps, path=float(path), dropped=not kept)

    def abort_task(self) -> None:
        """Discard the running task without counting it."""
        self._running = None

    def contribution(self) -> Contribution:
        """This process's sums over the finished tasks (zeros if none); starts a new meta-batch.

        ``"grad"``: Σ over kept tasks of Σ_i increment_i (flat, θ⁰'s order); ``"tasks"``,
        ``"dropped"``: counts; ``"path"``: Σ of the kept tasks' paths; with
        ``buffers="average"``, :attr:`Contribution.buffers`: Σ of the kept tasks' final
        floating-point buffers.
        """
        if self._running is not None:
            raise RuntimeError("meta_grad (contribution) called while a task is running: "
                               "call end_task first")
        kept = len(self._paths)
        like = self.init[mangle(self.names[0])]
        sums = {"grad": self._sum if self._sum is not None else
                torch.zeros(sum(self._numels), dtype=torch.float64, device=like.device),
                "tasks": torch.tensor(kept), "dropped": torch.tensor(self._dropped),
                "path": torch.tensor(sum(self._paths), dtype=torch.float64)}
        buffers = {}
        if self.buffer_policy == "average":
            for n in self.buffer_names:
                b = getattr(self.init_buffers, mangle(n))
                if b.is_floating_point():
                    buffers[n] = self._buffer_sums.get(mangle(n),
                                                    torch.zeros_like(b, dtype=torch.float64))
        self._reset_meta_batch()
        return Contribution(sums, buffers)

    @torch.no_grad()
    def apply(self, contribution: Contribution) -> MetaGradStats:
        """Add the (global) mean Σ_i increment_i to ``.grad`` of θ⁰; average the buffers.

        Tasks dropped for non-finite values are left out of the mean and counted. If every
        task was dropped, no gradient is written, so the meta-optimizer leaves θ⁰ as it is.
        """
        sums, kept = contribution.sums, contribution.count("tasks")
        if kept + contribution.count("dropped") == 0:
            raise RuntimeError("meta_grad: no task was finished since the last meta_grad")
        stats = MetaGradStats(tasks=kept, dropped=contribution.count("dropped"),
                              mean_path=float(sums["path"]) / kept if kept else float("nan"))
        if kept:
            add_mean_to_grad([p for _, p in self.named_meta_parameters()], sums["grad"], kept)
            for name, total in contribution.buffers.items():
                getattr(self.init_buffers, mangle(name)).copy_(total / kept)
        return stats

    def meta_grad(self, reduce: Reduce = single_process) -> MetaGradStats:
        """:meth:`contribution`, ``reduce`` (all-reduce across processes) and :meth:`apply`.

        On one process (the default ``reduce``) this writes the meta-batch's mean
        Σ_i increment_i into ``.grad`` of θ⁰ and starts a new meta-batch.
        """
        return self.apply(reduce(self.contribution()))

    # ---------------------------------------------------------------- suspend and resume
    def progress_state(self) -> dict[str, Tensor]:
        """The meta-batch so far and the running task's path, as plain tensors.

        With :meth:`load_progress_state` this checkpoints Leap inside a meta-step, even inside
        a task: a task of millions of steps resumes where it stopped, bit-identically. θ⁰
        itself is in :meth:`state_dict`.
        """
        state: dict[str, Tensor] = {
            "paths": torch.tensor(self._paths, dtype=torch.float64),
            "dropped": torch.tensor(self._dropped)}
        if self._sum is not None:
            state["sum"] = self._sum.clone()
        state.update({f"buffer:{k}": v.clone() for k, v in self._buffer_sums.items()})
        run = self._running
        if run is not None:
            state.update(prev=self._prev.clone(), grad=self._grad.clone(), acc=self._acc.clone(),
                         steps=torch.tensor(run.steps),
                         **{k: _tensor(getattr(run, k)) for k in ("loss", "path", "finite")})
        return state

    @torch.no_grad()
    def load_progress_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`progress_state`; a running task's part needs that task begun (on
        the model whose parameters were restored too)."""
        self._paths = state["paths"].tolist()
        self._dropped = int(state["dropped"])
        like = self.init[mangle(self.names[0])]
        self._sum = state["sum"].to(like.device, torch.float64, copy=True) if "sum" in state \
            else None
        self._buffer_sums = {k[7:]: v.to(torch.float64, copy=True) for k, v in state.items()
                             if k.startswith("buffer:")}
        if "acc" in state:
            if self._running is None:
                raise RuntimeError("this state holds a running task: begin_task first")
            for name in ("prev", "grad", "acc"):
                getattr(self, f"_{name}").copy_(state[name])
            run = self._running
            run.steps = int(state["steps"])
            for k, dtype in (("loss", self._acc.dtype), ("path", self._acc.dtype),
                             ("finite", torch.bool)):
                setattr(run, k, state[k].item() if self._host else
                        state[k].to(self._acc.device, dtype).clone())

    @contextmanager
    def task(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[LeapTask]:
        """Automatic mode: a task whose steps Leap reads from ``optimizer``'s step hooks.

        The loop only reports its loss; the gradient is read in the optimizer's pre-step
        hook, so after clipping and GradScaler unscaling, and a step GradScaler skips is not
        a step. Gives the same meta-gradient as the manual protocol::

            with leap.task(model, opt) as t:
                for x, y in data:
                    loss = criterion(model(x), y)
                    loss.backward()
                    t.report(loss)
                    opt.step(); opt.zero_grad()
                t.finish(final_loss)
        """
        self.begin_task(model)
        handle = LeapTask(self, model)
        hook = optimizer.register_step_pre_hook(lambda *_: handle._step())
        try:
            yield handle
        except BaseException:
            if self._running is not None:
                self.abort_task()
            raise
        finally:
            hook.remove()
        if handle.stats is None:
            self.abort_task()
            raise RuntimeError("a Leap task ended without finish(final_loss): it was discarded")

    # ---------------------------------------------------------------- internals
    def _reset_meta_batch(self) -> None:
        self._sum: Tensor | None = None
        self._paths: list[float] = []
        self._dropped = 0
        self._buffer_sums: dict[str, Tensor] = {}

    def _views(self, flat: Tensor) -> list[Tensor]:
        """A work buffer as one view per parameter, each in θ⁰'s memory layout (a
        channels-last weight's slice is channels-last)."""
        return [_like(v, p) for v, (_, p) in
                zip(flat.split(self._numels), self.named_meta_parameters(), strict=True)]

    def _in_order(self, flat: Tensor) -> Tensor:
        """A work buffer in θ⁰'s order (each parameter row-major), as sums and ``fold`` use."""
        views = self._views(flat)
        if all(v.is_contiguous() for v in views):
            return flat
        return torch.cat([v.reshape(-1) for v in views])

    def _check_running(self, model: nn.Module) -> None:
        if self._running is None:
            raise RuntimeError("no Leap task is running: call begin_task(model) first")
        if model is not self._running.model:
            raise RuntimeError("observe/end_task got a different model than begin_task")

    def _read_loss(self, loss: Tensor | float) -> Tensor | float:
        """A loss as the step's scalars are kept; a non-finite one marks the task dropped."""
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
            loss = loss.item() if self._host else loss.detach().reshape(()).to(self._acc.dtype)
        else:
            loss = self._scalar(torch.tensor(float(loss), dtype=self._acc.dtype,
                                             device=self._acc.device))
        self._running.finite &= self._ops.isfinite(loss)
        return loss

    def _scalar(self, value: Tensor) -> Tensor | float | bool:
        """A 0-d tensor as the step's scalars are kept: a Python number on the CPU."""
        return value.item() if self._host else value

    def _row_weights(self, first: Tensor | float, second: Tensor | float) -> Tensor:
        """The weights of the accumulator's two rows as one vector on the device."""
        if self._host:
            self._written[:] = first, second
            return self._weights
        return torch.stack([first, second])

    @torch.no_grad()
    def _snapshot(self, loss: Tensor | float) -> None:
        """Keep θ^i, g_i and f_i for the segment that the next point closes."""
        run = self._running
        torch._foreach_copy_(self._prev_views, run.params)
        views, grads = self._grad_views, [p.grad for p in run.params]
        if any(g is None for g in grads):  # no gradient this step: a zero gradient
            torch._foreach_zero_([v for v, g in zip(views, grads, strict=True) if g is None])
            views = [v for v, g in zip(views, grads, strict=True) if g is not None]
            grads = [g for g in grads if g is not None]
        if grads:
            torch._foreach_copy_(views, grads)
        run.loss = loss
        run.steps += 1

    @torch.no_grad()
    def _segment(self, loss: Tensor | float | None) -> None:
        """Add increment_i for the segment from the stored point to the model's current θ:
        :func:`increment`, computed in the task's workspace (the fast path the tests hold to
        it).

        ``self._prev`` becomes −Δθ in place (3 passes over θ-sized memory), its squared norm
        is read (1), and the accumulator takes c·(−Δθ) + (−c·Δf)·g as one matrix-vector
        product over the buffer's two rows [−Δθ; g] (4: read both rows, read and write the
        accumulator; two separate updates take 6). With the two snapshot copies (4), a step
        costs 12 passes. See docs/benchmarks.md, "The MLP's overhead".
        """
        ops, run = self._ops, self._running
        torch._foreach_sub_(self._prev_views, run.params)                   # −Δθ
        sq = self._scalar(torch.dot(self._prev, self._prev))
        with_grad = self.loss_term and loss is not None
        if with_grad:
            df = loss - run.loss
            if self.stabilizer:
                df = -abs(df)
            sq = sq + df * df
        if self.metric == "length":
            norm = ops.sqrt(sq)
            run.path += norm
            scale = 1 / (norm + self._tiny)  # a zero segment adds 0
        else:
            run.path += sq
            scale = 1.0 if self._host else torch.ones_like(sq)
        if with_grad:                                                 # c·(−Δθ − Δf·g)
            self._acc.addmv_(self._pair.t(), self._row_weights(scale, -df * scale))
        elif self._host:
            self._acc.add_(self._prev, alpha=scale)
        else:
            self._acc.addcmul_(self._prev, scale)

    def _add_buffers(self, buffers: dict[str, Tensor]) -> None:
        for n, b in buffers.items():
            if n in self.buffer_names and b.is_floating_point():
                key = mangle(n)
                self._buffer_sums[key] = add_exactly(self._buffer_sums.get(key), b.detach())


def _like(flat: Tensor, p: Tensor) -> Tensor:
    """``flat`` (``p.numel()`` values) shaped like ``p`` and laid out in memory like it: a
    channels-last ``p`` gets a channels-last view (so copies from it are not strided), any
    other a row-major one."""
    if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(
            memory_format=torch.channels_last):
        n, c, h, w = p.shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view_as(p)


def _python_scalars(like: Tensor) -> bool:
    """Whether a task on ``like``'s device and dtype keeps its step scalars (losses, norms,
    path, coefficients) as Python numbers. On the CPU reading a tensor waits for nothing, and
    a dozen 0-d tensor ops per step cost about as much as the vector work of a small convnet
    (docs/benchmarks.md); the coefficients are then written through a NumPy view. On an
    accelerator (and for dtypes NumPy lacks) they stay 0-d tensors on the device, so that no
    step waits for it."""
    return like.device.type == "cpu" and like.dtype in (torch.float16, torch.float32,
                                                        torch.float64)


def _tensor(value: Tensor | float | bool) -> Tensor:
    """A step scalar as a tensor for a checkpoint (a Python float as float64, exactly)."""
    if isinstance(value, Tensor):
        return value.clone()
    return torch.tensor(value, dtype=torch.float64 if isinstance(value, float) else None)


@dataclass(eq=False)
class _Running:
    """The task in progress: its model, the model's meta-learned parameters (θ⁰'s order) and
    the step's scalars (Python numbers or 0-d tensors, see :func:`_python_scalars`). A plain
    object, not the module: an ``nn.Module`` attribute write costs microseconds per step."""

    model: nn.Module
    params: list[Tensor]
    loss: Tensor | float  # f(θ^i) of the stored point
    path: Tensor | float  # d_p so far
    finite: Tensor | bool  # every loss so far was finite
    steps: int = 0


class LeapTask:
    """Handle of an automatic-mode task (see :meth:`Leap.task`)."""

    def __init__(self, leap: Leap, model: nn.Module) -> None:
        self._leap, self._model = leap, model
        self._loss: Tensor | float | None = None
        self.stats: TaskStats | None = None

    def report(self, loss: Tensor | float) -> None:
        """The loss f(θ^i) of the step about to be taken."""
        self._loss = loss

    def finish(self, final_loss: Tensor | float | None) -> TaskStats:
        """End the task with f(θ^K) (see :meth:`Leap.end_task`)."""
        self.stats = self._leap.end_task(self._model, final_loss)
        return self.stats

    def _step(self) -> None:
        if self._loss is None:
            raise RuntimeError("optimizer.step() ran before report(loss) for this step")
        self._leap.observe(self._model, self._loss)
        self._loss = None
