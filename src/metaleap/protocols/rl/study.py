"""Leap across games with an actor-critic (the paper's Atari experiment; docs/rl.md).

Each game is a task whose learning process is an advantage actor-critic run
(:mod:`metaleap.protocols.rl.a2c`) of millions of environment steps. Leap meta-learns the
encoder: every game of a meta-batch trains from θ⁰ with fresh policy and value heads (games
differ in their action sets), Leap reads each RMSProp step from the optimizer's hook, and
the meta-step follows the mean pull-forward gradient (energy metric). Memory stays flat
however long a game trains: Leap keeps a few flat buffers, never the trajectory. Held-out
games then train from the learned encoder and from the random one (no pretraining), with the
same heads, environment seeds and action streams, and we record episode returns against
environment steps.

A game trains in segments of ``segment_steps`` environment steps; each segment starts its
environments afresh from the stream (seed, purpose, game, segment). Progress is saved on
segment boundaries, inside a game as well as between games and during the evaluation
(:class:`MetaProgress`, :class:`EvalProgress`), so a run killed anywhere resumes
bit-identically, losing at most one segment.

Under torchrun, each process trains its share of a meta-batch's games (the learner's
``share``) and one all-reduce per meta-step combines the sums; the held-out games are shared
the same way and their episodes all-reduced, exactly. Only rank 0 writes checkpoints, so
every process saves at the same points together and rank 0's checkpoint holds every
process's progress (:class:`metaleap.protocols.trainer.SavePoints`, docs/distributed.md).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import methods, seeding
from metaleap.metalearners import Context, MetaLearner
from metaleap.models import ActorCritic, outside_encoder
from metaleap.protocols.base import (
    CheckpointError,
    MethodRun,
    RunContext,
    StudyProtocol,
    meta_batch_picks,
)
from metaleap.protocols.config import ConfigError
from metaleap.protocols.rl.a2c import Episodes, a2c_segment, random_return
from metaleap.protocols.rl.config import RLConfig
from metaleap.protocols.trainer import SavePoints
from metaleap.shared import ONE_PROCESS, Processes
from metaleap.tasks.games import identity, open_games


# ------------------------------------------------------------------------ progress
@dataclass
class Segments:
    """A game stopped on a segment boundary: the next segment to train and, once one has
    ended, the agent, its optimizer and the episodes so far."""

    segment: int = 0
    agent: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    episodes: dict[str, Tensor] | None = None

    def state(self) -> dict[str, Any]:
        return {"segment": self.segment, "agent": self.agent, "optimizer": self.optimizer,
                "episodes": self.episodes}


@dataclass
class MetaProgress:
    """Inside a meta-step: game ``game`` of the meta-batch is next (or running), after the
    learner's sums so far (``learner``: :meth:`MetaLearner.progress_state`, with the running
    task's path once a segment of it ended)."""

    game: int
    learner: dict[str, Any]
    segments: Segments = field(default_factory=Segments)

    def state(self) -> dict[str, Any]:
        return {"kind": "meta", "game": self.game, "learner": self.learner,
                "segments": self.segments.state()}


@dataclass
class EvalProgress:
    """Inside the evaluation: held-out game ``game`` is running; ``done`` holds the games
    already trained (their episodes and random-policy return)."""

    game: str
    done: dict[str, Any]
    segments: Segments = field(default_factory=Segments)

    def state(self) -> dict[str, Any]:
        return {"kind": "eval", "game": self.game, "done": self.done,
                "segments": self.segments.state()}


def _progress(state: dict[str, Any] | None, kind: type, key: str) -> Any:
    """The saved progress ``state`` as ``kind`` (:class:`MetaProgress` or
    :class:`EvalProgress`), or ``None``; a checkpoint of the other kind is refused."""
    if state is None:
        return None
    expected = "meta" if kind is MetaProgress else "eval"
    if state.get("kind") != expected:
        raise CheckpointError(f"checkpoints/{key}.pt holds progress of another kind")
    rest = {k: v for k, v in state.items() if k not in ("kind", "segments")}
    return kind(segments=Segments(**state["segments"]), **rest)


# ------------------------------------------------------------------------ the study
class RLStudy(StudyProtocol):
    """The protocol bound to a config, a device and its processes; see the module docstring.
    Each process needs a game of every meta-batch: more processes are refused."""

    name = "rl"

    def __init__(self, cfg: RLConfig, device: torch.device | str = "cpu",
                 progress: bool = False, processes: Processes = ONE_PROCESS) -> None:
        cfg.check()
        self.cfg, self.device, self.processes = cfg, torch.device(device), processes
        games = min(cfg.meta_batch, len(cfg.pretrain))
        if processes.world > games:
            raise ConfigError(f"{processes.world} processes but a meta-batch has {games} "
                              f"games: start at most {games}")
        self.progress = progress  # a bar of environment steps per pretraining game
        self.games = open_games(cfg.env, list(dict.fromkeys(cfg.pretrain + cfg.heldout)))
        wide = [f"{g} ({self.games[g].num_actions})" for g in cfg.pretrain
                if self.games[g].num_actions > cfg.max_actions]
        if wide:
            raise ConfigError(f"pretraining games with more than max_actions = "
                              f"{cfg.max_actions} actions: {', '.join(wide)}")

    def config_record(self) -> dict[str, Any]:
        return {"protocol": self.name, "config": self.cfg.to_dict(),
                "methods": self.cfg.resolved_methods()}

    def data_identity(self) -> dict[str, Any]:
        return identity(self.cfg.env, list(self.games))

    def data_digest(self) -> None:
        """None: the games are generated by the environments' code, which ``data_identity``
        names by package version; there are no stored bytes to digest."""
        return None

    def runs(self) -> Iterator[RLRun]:
        for seed in self.cfg.seeds:
            for method in self.cfg.methods:
                yield RLRun(self, method, seed)

    def agent(self, game: str, seed: int, *head_key: int | str) -> ActorCritic:
        """An actor-critic for ``game``: the seed's encoder, heads from (seed, head_key)."""
        return ActorCritic(self.cfg.env, self.games[game].num_actions,
                           seeding.generator(seed, "model"),
                           seeding.generator(seed, "heads", game, *head_key)).to(self.device)

    def optimizer(self, agent: nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.RMSprop(agent.parameters(), lr=cfg.lr, alpha=cfg.rms_alpha,
                                   eps=cfg.rms_eps)

    def meta_batch(self, cfg: RLConfig, seed: int, step: int) -> list[str]:
        """The games of meta-step ``step``: identical for every method."""
        return [cfg.pretrain[i] for i in meta_batch_picks(len(cfg.pretrain), cfg.meta_batch,
                                                          seed, step)]


class RLRun(MethodRun):
    """One method on one seed: meta-train the encoder on the pretraining games (Leap), then
    train every held-out game from the encoder."""

    def __init__(self, study: RLStudy, method: str, seed: int) -> None:
        cfg = study.cfg.for_method(method)
        self.study, self.cfg, self.method, self.seed = study, cfg, method, seed
        template = study.agent(cfg.heldout[0], seed, "template")
        context = Context(num_tasks=len(cfg.pretrain), seed=seed, exclude=outside_encoder)
        self.learner: MetaLearner = methods.get(method).load()(template, cfg.options(method),
                                                              context)
        self.meta_steps, self.eval_every, self.checkpoint_every = cfg.meta_steps, 1, 1

    def _train_game(self, game: str, agent: ActorCritic, optimizer: torch.optim.Optimizer,
                    total: int, purpose: str, saved: Segments | None,
                    save: Callable[[Segments], None],
                    report: Callable[[Tensor], None] = lambda loss: None,
                    closing: bool = False, bar: tqdm | None = None
                    ) -> tuple[Tensor | None, Episodes]:
        """Train one game for ``total`` environment steps, segment by segment, from the
        ``saved`` segments (the agent, its optimizer and the episodes so far); ``save`` after
        every segment but the last. With ``closing``, returns f(θ^K)."""
        cfg, info = self.cfg, self.study.games[game]
        updates, per = cfg.updates(total), cfg.updates_per_segment
        segments = self.segments(total)
        episodes, first = Episodes(), 0
        if saved is not None and saved.segment > 0:
            agent.load_state_dict(saved.agent)
            optimizer.load_state_dict(saved.optimizer)
            episodes, first = Episodes.from_state(saved.episodes), saved.segment
            if bar is not None:
                bar.update(first * per * cfg.update_steps)
        final = None
        for s in range(first, segments):
            n = min(per, updates - s * per)
            env_seed = seeding.derive_seed(self.seed, purpose, game, s) % 2**31
            final = a2c_segment(agent, optimizer, cfg, info, n, env_seed,
                                seeding.generator(self.seed, purpose + "-actions", game, s),
                                episodes, s * per * cfg.update_steps, report,
                                closing=closing and s + 1 == segments)
            if bar is not None:
                bar.update(n * cfg.update_steps)
            if s + 1 < segments:
                save(Segments(s + 1, agent.state_dict(), optimizer.state_dict(),
                              episodes.state()))
        return final, episodes

    def segments(self, total: int) -> int:
        """Segments of a game of ``total`` environment steps."""
        return math.ceil(self.cfg.updates(total) / self.cfg.updates_per_segment)

    def meta_step(self, step: int, context: RunContext) -> dict[str, float]:
        cfg, learner, processes = self.cfg, self.learner, self.study.processes
        games = self.study.meta_batch(cfg, self.seed, step)
        share = learner.share(range(len(games)), processes)
        per_game = self.segments(cfg.train_steps)
        save = SavePoints(self.key, context, processes, math.ceil(len(games) / processes.world)
                          * per_game, MetaProgress(len(games), learner.progress_state()),
                          functools.partial(_progress, kind=MetaProgress, key=self.key))
        resumed = save.resumed
        start = resumed.game if resumed is not None else 0
        if resumed is not None and resumed.segments.segment == 0:
            learner.load_progress_state(resumed.learner)
        positions = [j for j in share if j >= start]
        scores = torch.zeros(len(games), 2, dtype=torch.float64)  # (mean return, has one)
        for j in positions:
            game = games[j]
            agent = self.study.agent(game, self.seed, step)
            optimizer = self.study.optimizer(agent)
            mine = resumed if resumed is not None and j == start else None
            with learner.task(agent, optimizer, index=j) as t:
                if mine is not None and mine.segments.segment > 0:
                    learner.load_progress_state(mine.learner, t)
                with tqdm(total=cfg.train_steps, desc=f"meta-step {step + 1}: {game}",
                          unit="env-step", unit_scale=True, leave=False,
                          disable=not self.study.progress, dynamic_ncols=True) as bar:
                    final, episodes = self._train_game(
                        game, agent, optimizer, cfg.train_steps, "train",
                        mine.segments if mine is not None else None,
                        lambda segments, j=j, t=t: save(MetaProgress(
                            j, learner.progress_state(t), segments)),
                        t.report, closing=True, bar=bar)
                assert final is not None
                t.finish(final)
            if episodes.returns:
                scores[j] = torch.tensor([statistics.fmean(episodes.returns[-cfg.window:]),
                                          1.0], dtype=torch.float64)
            if j + 1 < len(games) or processes.world > 1:
                save(MetaProgress(j + 1, learner.progress_state()))
        save.finish()
        metrics = learner.meta_update(processes.reduce)
        # Each game's score from the process whose share holds it, summed exactly (a resumed
        # process logs the games it trained since).
        owned = set(processes.share(range(len(games))))
        scores = processes.all_sum(scores * torch.tensor(
            [[float(j in owned)] for j in range(len(games))], dtype=torch.float64))
        return {**metrics, **{f"return_{games[j]}": float(scores[j, 0])
                              for j in range(len(games)) if scores[j, 1]}}

    def validate(self, step: int) -> dict[str, Any] | None:
        return None

    def evaluate(self, init: dict[str, Tensor], context: RunContext) -> dict[str, Any]:
        cfg, processes = self.cfg, self.study.processes
        share = processes.share(cfg.heldout)
        save = SavePoints(self.key, context, processes, math.ceil(
            len(cfg.heldout) / processes.world) * self.segments(cfg.eval_steps),
            EvalProgress("", {}), functools.partial(_progress, kind=EvalProgress, key=self.key))
        resumed = save.resumed
        done: dict[str, Any] = dict(resumed.done) if resumed is not None else {}
        bar = tqdm(total=len(share) * cfg.eval_steps, desc=f"{self.method} seed "
                   f"{self.seed} held-out", unit="env-step", unit_scale=True,
                   disable=not context.bars, dynamic_ncols=True)
        with bar:
            for game in share:
                if game in done:
                    bar.update(cfg.eval_steps)
                    continue
                agent = self.study.agent(game, self.seed, "eval")
                agent.load_state_dict(init, strict=False)
                optimizer = self.study.optimizer(agent)
                mine = resumed.segments if resumed is not None and resumed.game == game \
                    else None
                _, episodes = self._train_game(
                    game, agent, optimizer, cfg.eval_steps, "eval", mine,
                    lambda segments, game=game: save(EvalProgress(game, done, segments)),
                    bar=bar)
                done[game] = {"steps": episodes.steps, "returns": episodes.returns,
                              "random_return": random_return(cfg, self.study.games[game],
                                                             self.seed)}
                if processes.world > 1:  # a point of every game, as in meta-training
                    save(EvalProgress("", done))
        save.finish()
        if processes.world > 1:
            done = self.gather(done)
        return {"method": self.method, "seed": self.seed,
                "games": {game: done[game] for game in cfg.heldout}}

    def gather(self, done: dict[str, Any]) -> dict[str, Any]:
        """Every held-out game's record from the process that trained it: the episode counts,
        then (random return, steps, returns) zero-padded to the longest, each all-reduced
        (exactly: one process's values plus zeros)."""
        processes, heldout = self.study.processes, self.cfg.heldout
        counts = torch.tensor([len(done[g]["steps"]) if g in done else 0 for g in heldout],
                              dtype=torch.int64)
        counts = processes.all_sum(counts)
        width = int(counts.max()) if len(counts) else 0
        rows = torch.zeros(len(heldout), 1 + 2 * width, dtype=torch.float64)
        for i, game in enumerate(heldout):
            if game in done:
                record, n = done[game], len(done[game]["steps"])
                rows[i, 0] = record["random_return"]
                rows[i, 1:1 + n] = torch.tensor(record["steps"], dtype=torch.float64)
                rows[i, 1 + width:1 + width + n] = torch.tensor(record["returns"],
                                                                dtype=torch.float64)
        rows = processes.all_sum(rows)
        return {game: {"steps": [int(v) for v in rows[i, 1:1 + n].tolist()],
                       "returns": rows[i, 1 + width:1 + width + n].tolist(),
                       "random_return": float(rows[i, 0])}
                for i, (game, n) in enumerate(zip(heldout, counts.tolist(), strict=True))}

    def export_metadata(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed), "env": self.cfg.env,
                "architecture": "metaleap.models.ActorCritic (encoder)"}
