"""Why the MLP's Leap overhead stays above 1.5×: passes over θ per step, priced in the loop.

Trains the parameter-bound MLP of ``overhead.py`` (784-1024-1024-20, 1.9M parameters, batch
20, SGD) for 100 steps per run and, interleaved, the same loop with one extra piece of work
per step done where Leap's observe runs (after backward, before the optimizer's step):

- ``plain``: nothing;
- ``leap``: metaleap's own ``Leap.observe`` / ``end_task`` (14 passes over θ-sized memory);
- ``read1``: one read-only pass (a dot over a θ-sized buffer): the price of one pass;
- ``copy2``: ``θ → buffer`` (2 passes); ``copy8``: four such copies over three buffers;
- ``ops1`` … ``ops5``: the first 1 … 5 operations of Leap's step as ``leap.py`` now does it
  (``_foreach_sub_`` 3 passes, ``dot`` 1, ``addmv`` 4, copy θ 2, copy g 2; ``ops5`` is the
  whole step, 12 passes): the differences price each operation inside the loop;
- ``pingpong11``: sub and snapshot copy fused through ``_fused_sgd_`` (11 passes, a fourth
  buffer);
- ``fused10``/``fused8``: the whole segment as two ``torch.compile`` kernels: a norm
  (2 reads) and one fused update (8 passes with the gradient copied, 6 with the previous
  step's gradient kept by reference, valid only when the loop sets gradients to None).

Prints the median step time of each and its median paired ratio to plain; ``--json`` writes
every repeat. Run under the benchmark lock, one thread:

    flock /tmp/metaleap-bench.lock python benchmarks/mlp_passes.py --threads 1 \
        --json benchmarks/results/mlp-passes-cpu-1thread.json
    flock /tmp/metaleap-bench.lock python benchmarks/mlp_passes.py --threads 1 --isolated
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metaleap import Leap

STEPS = 100


def isolated(repeats: int) -> None:
    """Each of Leap's operations alone on 1,867,796-element float32 buffers, with a 64 MB
    buffer touched before each so that they start cold (out of the 32 MB L3)."""
    n = 1_867_796
    x, y, acc = torch.randn(n), torch.randn(n), torch.randn(n)
    two, evict = torch.randn(2, n), torch.zeros(16_000_000)
    c, e = torch.tensor(0.5), torch.tensor(-0.1)
    ops: dict[str, Callable[[], object]] = {
        "sub_ (3 passes)": lambda: x.sub_(y),
        "dot (1)": lambda: torch.dot(x, x),
        "copy_ (2)": lambda: x.copy_(y),
        "2 x addcmul_ (6)": lambda: (acc.addcmul_(two[0], c), acc.addcmul_(two[1], e)),
        "addmv_ (4)": lambda: acc.addmv_(two.t(), torch.stack([c, e])),
    }
    times: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(repeats + 2):
        for name, op in ops.items():
            evict.add_(1.0)
            start = time.perf_counter()
            op()
            times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cold buffers")
    for name, ts in times.items():
        print(f"{name:18s} {statistics.median(ts[2:]) * 1e3:6.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="skip the fused variants")
    parser.add_argument("--json", help="write every repeat here")
    parser.add_argument("--isolated", action="store_true",
                        help="instead: each operation alone on cold (evicted) buffers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.isolated:
        isolated(args.repeats)
        return
    torch.manual_seed(0)  # benchmark set-up only
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                          nn.ReLU(), nn.Linear(1024, 20))
    params = list(model.parameters())
    numels = [p.numel() for p in params]
    n = sum(numels)
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(20, 1, 28, 28, generator=g), torch.randint(0, 20, (20,), generator=g))
            for _ in range(STEPS + 1)]
    with torch.no_grad():
        two = torch.zeros(2, n)  # rows: the stored point (then −Δθ) and the stored gradient
        acc, b1, b2 = torch.zeros(n), torch.zeros(n), torch.zeros(n)

    def views(flat: Tensor) -> list[Tensor]:
        return [v.view_as(p) for v, p in zip(flat.split(numels), params, strict=True)]

    prev_v, grad_v, acc_v, b1_v, b2_v = (views(t) for t in (two[0], two[1], acc, b1, b2))
    state: dict = {}

    def coeff(loss: Tensor, sq: Tensor) -> tuple[Tensor, Tensor]:
        df = -(loss - state["loss"]).abs()
        return df, (sq + df * df).sqrt().clamp_min(torch.finfo(sq.dtype).tiny).reciprocal()

    def prefix(ops: int) -> Callable[[Tensor], None]:
        """The first ``ops`` operations of Leap's step (12 passes in all): sub, dot, addmv,
        copy θ, copy g; timing each prefix prices each operation inside the loop."""
        def step(loss: Tensor) -> None:
            first = "loss" not in state
            if ops >= 1 and not first:
                torch._foreach_sub_(prev_v, params)
            if ops >= 2 and not first:
                df, c = coeff(loss, torch.dot(two[0], two[0]))
                if ops >= 3:
                    acc.addmv_(two.t(), torch.stack([c, -df * c]))
            if ops >= 4 or first:
                torch._foreach_copy_(prev_v, params)
            if ops >= 5 or first:
                torch._foreach_copy_(grad_v, [p.grad for p in params])
            state["loss"] = loss
        return step

    with torch.no_grad():
        three = torch.zeros(3, n)  # rows: stored point A, gradient, stored point B
    a_v, g3_v, b_v = (views(t) for t in three)

    def pingpong11(loss: Tensor) -> None:
        """sub and the snapshot copy as one kernel: ``_fused_sgd_`` with momentum 1 on its
        first step writes θ into the other point's row and subtracts it from this one (4
        passes instead of 5); 11 passes, one more θ-sized buffer."""
        k = state.get("k", 0)
        here, there = (a_v, b_v) if k % 2 == 0 else (b_v, a_v)
        if "loss" in state:
            torch._fused_sgd_(here, [p.data for p in params], there, weight_decay=0.0,
                              momentum=1.0, lr=1.0, dampening=0.0, nesterov=False,
                              maximize=False, is_first_step=True)
            d = three[0] if k % 2 == 0 else three[2]
            df, c = coeff(loss, torch.dot(d, d))
            if k % 2 == 0:
                acc.addmv_(three[0:2].t(), torch.stack([c, -df * c]))
            else:
                acc.addmv_(three[1:3].t(), torch.stack([-df * c, c]))
            state["k"] = k + 1
        else:
            torch._foreach_copy_(here, params)
        torch._foreach_copy_(g3_v, [p.grad for p in params])
        state["loss"] = loss

    def norm(p_: list[Tensor], t_: list[Tensor]) -> Tensor:
        return sum(((a - b) ** 2).sum() for a, b in zip(p_, t_, strict=True))

    def update10(p_, t_, g_, a_, gn_, df, c) -> None:
        for a, t, gg, ac, gn in zip(p_, t_, g_, a_, gn_, strict=True):
            ac.add_(c * (a - t - df * gg))
            a.copy_(t)
            gg.copy_(gn)

    def update8(p_, t_, g_, a_, df, c) -> None:
        for a, t, gg, ac in zip(p_, t_, g_, a_, strict=True):
            ac.add_(c * (a - t - df * gg))
            a.copy_(t)

    variants: dict[str, Callable[[Tensor], None] | None] = {
        "plain": lambda loss: None,
        "leap": None,  # the library itself, below
        "read1": lambda loss: torch.dot(b1, b1),
        "copy2": lambda loss: torch._foreach_copy_(b1_v, params),
        "copy8": lambda loss: [torch._foreach_copy_(v, params) for v in (b1_v, b2_v, acc_v, b1_v)],
        **{f"ops{k}": prefix(k) for k in range(1, 6)},
        "pingpong11": pingpong11,
    }
    if not args.no_compile:
        c_norm = torch.compile(norm, dynamic=False)
        c_up10 = torch.compile(update10, dynamic=False)
        c_up8 = torch.compile(update8, dynamic=False)

        def fused10(loss: Tensor) -> None:
            grads = [p.grad for p in params]
            if "loss" in state:
                df, c = coeff(loss, c_norm(prev_v, params))
                c_up10(prev_v, params, grad_v, acc_v, grads, df, c)
            else:
                torch._foreach_copy_(prev_v, params)
                torch._foreach_copy_(grad_v, grads)
            state["loss"] = loss

        def fused8(loss: Tensor) -> None:
            if "loss" in state:
                df, c = coeff(loss, c_norm(prev_v, params))
                c_up8(prev_v, params, state["grads"], acc_v, df, c)
            else:
                torch._foreach_copy_(prev_v, params)
            state["grads"] = [p.grad for p in params]  # kept by reference: zero_grad sets None
            state["loss"] = loss

        variants |= {"fused10": fused10, "fused8": fused8}
    leap = Leap(model)

    def run(name: str) -> float:
        fn = variants[name]
        state.clear()
        opt = torch.optim.SGD(params, lr=0.01)
        start = time.perf_counter()
        if fn is None:
            leap.begin_task(model)
        for x, y in data[:-1]:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if fn is None:
                leap.observe(model, loss)
            else:
                with torch.no_grad():
                    fn(loss.detach())
            opt.step()
            opt.zero_grad()
        if fn is None:
            x, y = data[-1]
            with torch.no_grad():
                leap.end_task(model, nn.functional.cross_entropy(model(x), y))
        return time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(2):  # warm-up (and compilation)
        for name in variants:
            run(name)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, warm-up "
          f"{time.perf_counter() - start:.1f} s")
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):  # interleaved, in a rotating order
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(run(name))
    plain = times["plain"]
    rows = {}
    for name, ts in times.items():
        ratio = statistics.median(t / p for t, p in zip(ts, plain, strict=True))
        extra = (statistics.median(ts) - statistics.median(plain)) / STEPS * 1e3
        rows[name] = {"ms_per_step": statistics.median(ts) / STEPS * 1e3, "ratio": ratio,
                      "extra_ms_per_step": extra, "runs_s": ts}
        print(f"{name:8s} {rows[name]['ms_per_step']:6.3f} ms/step  +{extra:6.3f} ms"
              f"  median ratio {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "steps": STEPS, "repeats": args.repeats, "params": n,
                       "variants": rows}, f, indent=1)


if __name__ == "__main__":
    main()
