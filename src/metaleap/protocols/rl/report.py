"""The RL study's tables, plots (the paper's Fig. 3) and generated sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaleap import stats  # noqa: E402
from metaleap.methods import color, label  # noqa: E402
from metaleap.protocols.reporting import (  # noqa: E402
    LEVEL,
    cell,
    interval_note,
    provenance_line,
    verdict,
)
from metaleap.protocols.rl.summary import compared  # noqa: E402
from metaleap.runs import read_metrics  # noqa: E402
from metaleap.stats import Interval, mean_ci  # noqa: E402


def plot_rl_curves(summary: dict[str, Any], path: Path) -> None:
    """Paper Fig. 3: normalised score (moving average) against environment steps per
    held-out game, mean and ±2 std over seeds, one line per initialization."""
    games = summary["config"]["heldout"]
    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 3.6), squeeze=False)
    steps = summary["steps"]
    for ax, game in zip(axes[0], games, strict=True):
        for method, e in summary["methods"].items():
            mean, std = e["curves"][game]["mean"], e["curves"][game]["std"]
            ax.plot(steps, [100 * m for m in mean],
                    label=f"{label(method)} ({len(e['seeds'])} seeds)",
                    color=color(method))
            ax.fill_between(steps, [100 * (m - 2 * s) for m, s in zip(mean, std, strict=True)],
                            [100 * (m + 2 * s) for m, s in zip(mean, std, strict=True)],
                            alpha=0.15, color=color(method))
        ax.set(title=game, xlabel="environment steps", ylabel="normalised score (%)")
        ax.legend(fontsize=8)
    fig.suptitle("Held-out games (mean over seeds; bands ±2 std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rl_meta_training(records: list[dict[str, Any]], path: Path) -> bool:
    """Return (last episodes) of each pretraining game as meta-training proceeds, and the
    mean path energy of the meta-batch: mean over seeds."""
    steps = [r for r in records if r.get("event") == "meta_step"]
    if not steps:
        return False
    keys = sorted({k for r in steps for k in r if k.startswith("return_")})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in keys + ["path"]:
        by_step: dict[int, list[float]] = {}
        for r in steps:
            if key in r:
                by_step.setdefault(r["step"], []).append(r[key])
        xs = sorted(by_step)
        ys = [sum(by_step[x]) / len(by_step[x]) for x in xs]
        ax = axes[1] if key == "path" else axes[0]
        ax.plot(xs, ys, marker="o", label=key.removeprefix("return_"))
    axes[0].set(xlabel="meta-step", ylabel="return (last episodes of the game)",
                title="Pretraining games, trained from θ⁰")
    if keys:
        axes[0].legend(fontsize=8)
    axes[1].set(xlabel="meta-step", ylabel="mean path (energy)", title="Leap's objective")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def rl_report(run: Path, summary: dict[str, Any]) -> list[str]:
    """The RL study's report lines and plots."""
    plot_rl_curves(summary, run / "heldout_scores.png")
    figures = ["heldout_scores.png"]
    if (run / "metrics.jsonl").is_file() and plot_rl_meta_training(
            read_metrics(run), run / "meta_training.png"):
        figures.append("meta_training.png")
    cfg, methods = summary["config"], summary["methods"]
    lines = [f"# Reinforcement learning: {cfg['env']}, held out {', '.join(cfg['heldout'])}",
             "",
             f"Leap meta-trained the encoder on {', '.join(cfg['pretrain'])} "
             f"({cfg['meta_steps']} meta-steps of {min(cfg['meta_batch'], len(cfg['pretrain']))}"
             f" games × {cfg['train_steps']:,} environment steps). Each held-out game then "
             f"trained for {cfg['eval_steps']:,} environment steps from each initialization "
             "(same heads, environment seeds and action streams). Scores are normalised per "
             "game: 0 = uniformly random policy, 100 = the best moving average "
             f"({cfg['window']} episodes) any run reached. Higher is better.", "",
             "| initialization | score AUC (%) [95% CI] | final score (%) [95% CI] | "
             "seeds × games |", "|---|---|---|---|"]
    for method, e in methods.items():
        scores = " | ".join(cell(Interval(**e[m]["ci"]), {"seeds": stats.by_group(
            e[m]["per_seed"], LEVEL)}, 100) for m, _ in RL_METRICS)
        lines.append(f"| {label(method)} | {scores} | {len(e['seeds'])} × {len(e['games'])} |")
    lines += ["", "| game | random policy | " + " | ".join(
        f"{label(m)}: final return" for m in methods)
              + " |", "|---|---|" + "---|" * len(methods)]
    for i, game in enumerate(cfg["heldout"]):
        cells = []
        for e in methods.values():
            values = [v[i] for v in e["final_return"]["per_seed"].values()]
            cells.append(mean_ci(values).format(1.0, 2))
        lines.append(f"| {game} | {summary['random_return'][game]:.2f} | "
                     + " | ".join(cells) + " |")
    pair = compared(list(methods))
    if "difference" in summary and pair is not None:
        ref, other = (label(m) for m in pair)
        lines += ["", f"Paired difference, {ref} − {other.lower()}, on the same (seed, game):",
                  "", "| metric | difference (points) [95% CI] | verdict |", "|---|---|---|"]
        for metric, name in RL_METRICS:
            d = Interval(**summary["difference"][metric])
            seeds = stats.by_group(stats.differences(
                *(methods[m][metric]["per_seed"] for m in pair)), LEVEL)
            lines.append(f"| all games: {name} | {cell(d, {'seeds': seeds}, 100)} | "
                         f"{verdict(d)} |")
        lines += [f"| {game}: {name} | {d.format(100.0, 1)} | {verdict(d)} |"
                  for game, name, d in rl_game_differences(summary, pair)]
        lines += ["", "**Reading.** " + rl_reading(summary, pair)]
    lines += ["", interval_note("(seed, game)", "seeds") + " Per game, an interval is over "
              "the seeds alone (df = seeds − 1).", "", provenance_line(summary), ""]
    return lines + [f"![{f}]({f})" for f in figures]


RL_METRICS = (("score_auc", "score AUC"), ("final_score", "final score"))


def rl_game_differences(summary: dict[str, Any], pair: tuple[str, str]
                        ) -> list[tuple[str, str, Interval]]:
    """(game, metric name, the reference − the untrained initialization over seeds) for
    every held-out game; ``pair`` as :func:`~metaleap.protocols.rl.summary.compared`."""
    methods, out = summary["methods"], []
    for i, game in enumerate(summary["config"]["heldout"]):
        for metric, name in RL_METRICS:
            ref, other = (methods[m][metric]["per_seed"] for m in pair)
            common = [k for k in ref if k in other]
            out.append((game, name, stats.paired_difference([ref[k][i] for k in common],
                                                            [other[k][i] for k in common])))
    return out


def rl_reading(summary: dict[str, Any], pair: tuple[str, str]) -> str:
    """Plain sentences, generated from the paired differences, on what the table shows."""
    ref, other = label(pair[0]), label(pair[1]).lower()
    sentences = []
    for metric, name in RL_METRICS:
        d = Interval(**summary["difference"][metric])
        if d.excludes_zero:
            side = "higher" if d.mean > 0 else "lower"
            sentences.append(f"{ref}'s {name} is {side} than {other}'s by "
                             f"{abs(100 * d.mean):.1f} points ({d.format(100.0, 1)}).")
        else:
            sentences.append(f"The {name} difference, {d.format(100.0, 1)} points, spans 0: "
                             f"this study does not show {ref} and {other} apart "
                             f"on {name}.")
    if len(summary["config"]["heldout"]) > 1:
        per_game = rl_game_differences(summary, pair)
        resolved = [f"{game} {name} ({d.format(100.0, 1)}, {verdict(d)})"
                    for game, name, d in per_game if d.excludes_zero]
        tests = len(per_game)
        chance = 1 - 0.95 ** tests
        sentences.append(
            f"Per game, {len(resolved)} of {tests} intervals exclude 0"
            + (f": {'; '.join(resolved)}" if resolved else "")
            + f". With {tests} intervals, at least one would exclude 0 by chance with "
            f"probability {100 * chance:.0f} % if they were independent and there were no "
            "effect.")
    return " ".join(sentences)
