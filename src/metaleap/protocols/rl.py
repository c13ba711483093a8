"""Leap across games with an actor-critic (the paper's Atari experiment; docs/rl.md).

Each game is a task whose learning process is an advantage actor-critic (A2C) run of
millions of environment steps. Leap meta-learns the encoder: every game of a meta-batch
trains from θ⁰ with fresh policy and value heads (games differ in their action sets), Leap
reads each RMSProp step from the optimizer's hook, and the meta-step follows the mean
pull-forward gradient (energy metric). Memory stays flat however long a game trains: Leap
keeps a few flat buffers, never the trajectory. Held-out games then train from the learned
encoder and from the random one ("scratch"), with the same heads, environment seeds and
action streams, and we record episode returns against environment steps.

A game trains in segments of ``segment_steps`` environment steps; each segment starts its
environments afresh from the stream (seed, purpose, game, segment). Checkpoints fall on
segment boundaries, inside a game as well as between games and during the evaluation, so a
run killed anywhere resumes bit-identically, losing at most one segment.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metaleap import seeding
from metaleap.metalearners import METHODS, Context, MetaLearner, TaskHandle
from metaleap.models import ActorCritic
from metaleap.protocols.base import (
    ONE_PROCESS,
    CheckpointError,
    ConfigError,
    DivergedError,
    MethodConfig,
    MethodRun,
    StudyProtocol,
    at_least,
    positive,
    resolve_preset,
)
from metaleap.stats import mean_ci, paired_groups, pooled
from metaleap.tasks.games import Game, identity, make_envs, observe, open_games

SCHEMA_VERSION = 1
RL_METHODS = ("leap", "scratch")


@dataclass
class RLConfig(MethodConfig):
    """Every number of the reinforcement-learning protocol (docs/rl.md)."""

    PER_METHOD: ClassVar[tuple[str, ...]] = ("meta_steps", "meta_batch")

    env: str = "minatar"
    """"minatar" (the five MinAtar games) or "atari" (ALE games, 84×84 preprocessing)"""
    methods: list[str] = field(default_factory=lambda: list(RL_METHODS))
    """"leap" and "scratch" (the random initialization it is compared with)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """one full study per seed: initial encoder, heads, environments and actions"""
    pretrain: list[str] = field(default_factory=lambda: ["freeway", "seaquest",
                                                         "space_invaders"])
    """the games Leap meta-trains on"""
    heldout: list[str] = field(default_factory=lambda: ["asterix", "breakout"])
    """the games trained from each initialization for the evaluation"""
    max_actions: int = 18
    """largest minimal action set allowed among the pretraining games (the paper: 10)"""
    meta_batch: int = 3
    """games per meta-step, drawn from the pretraining games (capped at their number)"""
    meta_steps: int = 8
    """meta-training steps"""
    train_steps: int = 100_000
    """environment steps (over all environments) each game trains for in a meta-step"""
    eval_steps: int = 250_000
    """environment steps each held-out game trains for"""
    num_envs: int = 32
    """parallel environments per game"""
    unroll: int = 5
    """environment steps per environment between two updates"""
    lr: float = 1e-4
    """RMSProp learning rate"""
    rms_eps: float = 1e-4
    """RMSProp ε"""
    rms_alpha: float = 0.99
    """RMSProp smoothing constant α"""
    gamma: float = 0.99
    """discount factor"""
    entropy_cost: float = 0.01
    """weight of the policy-entropy bonus"""
    value_cost: float = 0.5
    """weight of the value loss"""
    reward_clip: float = 5.0
    """rewards are clipped to ±reward_clip for learning (returns are reported unclipped)"""
    max_grad_norm: float = 40.0
    """gradient norm clipping before each RMSProp step (0: none)"""
    segment_steps: int = 100_000
    """environment steps between checkpoints inside a game; environments restart at each, so
    segment_steps / num_envs must exceed the longest episode (MinAtar Freeway: 2,500)"""
    window: int = 100
    """episodes in the moving average of returns (the paper: 500)"""
    curve_points: int = 50
    """points of each held-out learning curve"""
    random_steps: int = 20_000
    """environment steps of a uniformly random policy, whose mean return scores 0"""
    per_method: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"leap": {"metric": "energy", "meta_lr": 0.5}})
    """sparse per-method settings: meta_steps, meta_batch or the method's options"""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def update_steps(self) -> int:
        """Environment steps per update: ``num_envs × unroll``."""
        return self.num_envs * self.unroll

    @property
    def updates_per_segment(self) -> int:
        return max(1, self.segment_steps // self.update_steps)

    def updates(self, steps: int) -> int:
        """Updates (of ``num_envs × unroll`` environment steps each) in ``steps``."""
        return steps // self.update_steps

    def check(self) -> None:
        """Reject impossible settings before any environment is built."""
        unknown = [m for m in self.methods if m not in RL_METHODS]
        if unknown:
            raise ConfigError(f"the RL protocol runs {', '.join(RL_METHODS)}; not {unknown}")
        if not self.methods or not self.seeds or not self.pretrain or not self.heldout:
            raise ConfigError("at least one method, seed, pretraining and held-out game needed")
        for name in ("methods", "seeds", "pretrain", "heldout"):
            values = getattr(self, name)
            if len(set(values)) < len(values):
                raise ConfigError(f"{name} must not repeat")
        at_least(self, 1, "num_envs", "unroll", "window", "curve_points", "max_actions")
        at_least(self, 0, "random_steps")
        positive(self, "lr", "rms_eps", "reward_clip")
        if not 0 <= self.gamma <= 1 or not 0 < self.rms_alpha < 1:
            raise ConfigError("gamma must lie in [0, 1] and rms_alpha in (0, 1)")
        if self.entropy_cost < 0 or self.value_cost < 0 or self.max_grad_norm < 0:
            raise ConfigError("entropy_cost, value_cost and max_grad_norm must be ≥ 0")
        batch = self.update_steps
        for name in ("train_steps", "eval_steps", "segment_steps"):
            if getattr(self, name) < batch:
                raise ConfigError(f"{name} = {getattr(self, name)} is less than one update "
                                  f"(num_envs × unroll = {batch} environment steps)")
        for method in self.methods:
            cfg = self.for_method(method)
            try:
                at_least(cfg, 0, "meta_steps")
                at_least(cfg, 1, "meta_batch")
            except ConfigError as e:
                raise ConfigError(f"{method}: {e}") from None
            self.options(method)


PRESETS: dict[str, dict[str, Any]] = {
    # The committed MinAtar study (docs/results/rl): what this 2-core machine allows in an hour.
    "minatar": {},
    # `metaleap rl` in minutes: one meta-step pass over every game, short evaluations.
    "minatar-quick": dict(seeds=[0], meta_steps=2, train_steps=10_000, eval_steps=30_000,
                          segment_steps=30_000, random_steps=5_000, window=50),
    # The paper's budget (docs/rl.md): 16 games of ≤ 10 actions per meta-step, 5M steps each,
    # 100 meta-steps, Breakout and SpaceInvaders held out, 10 seeds.
    "atari-paper": dict(
        env="atari", seeds=list(range(10)), heldout=["breakout", "space_invaders"],
        pretrain=["air_raid", "assault", "asterix", "atlantis", "beam_rider", "carnival",
                  "demon_attack", "enduro", "freeway", "gopher", "ms_pacman", "name_this_game",
                  "phoenix", "pong", "pooyan", "qbert"],
        max_actions=10, meta_batch=16, meta_steps=100, train_steps=5_000_000,
        eval_steps=5_000_000, segment_steps=1_000_000, window=500, random_steps=100_000),
    # Real Atari in minutes: three short games, Breakout held out.
    "atari-quick": dict(env="atari", seeds=[0], pretrain=["pong", "freeway", "asterix"],
                        heldout=["breakout"], max_actions=10, meta_batch=3, meta_steps=1,
                        num_envs=8, train_steps=4_000, eval_steps=8_000, segment_steps=4_000,
                        random_steps=4_000, window=10),
    # Seconds: tests and smoke checks.
    "tiny": dict(seeds=[0], pretrain=["asterix", "freeway"], heldout=["breakout"],
                 meta_batch=2, meta_steps=2, num_envs=4, unroll=5, train_steps=200,
                 eval_steps=200, segment_steps=100, window=5, curve_points=4,
                 random_steps=100),
}


def resolve_config(preset: str = "minatar", overrides: Sequence[str] = (),
                   **fields: Any) -> RLConfig:
    """A preset, then ``fields``, then ``key=value`` overrides, checked."""
    return resolve_preset(RLConfig, PRESETS, preset, overrides, **fields)


# ------------------------------------------------------------------------ the agent
@dataclass
class Episodes:
    """Finished episodes of one game's training: the environment step each ended at, and
    its return (unclipped)."""

    steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)

    def state(self) -> dict[str, Tensor]:
        return {"steps": torch.tensor(self.steps, dtype=torch.int64),
                "returns": torch.tensor(self.returns, dtype=torch.float64)}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> Episodes:
        return cls(state["steps"].tolist(), state["returns"].tolist())


def a2c_segment(agent: ActorCritic, optimizer: torch.optim.Optimizer, cfg: RLConfig,
                game: Game, updates: int, seed: int, generator: torch.Generator,
                episodes: Episodes, steps_before: int,
                report: Callable[[Tensor], None] = lambda loss: None,
                closing: bool = False) -> Tensor | None:
    """Train ``agent`` on fresh environments of ``game`` for ``updates`` A2C updates.

    Each update plays ``unroll`` steps in every environment, bootstraps the discounted
    returns from the value of the last observation (an episode that ended, or was cut at
    its time limit, bootstraps nothing), and descends
    ``policy loss + value_cost · value loss − entropy_cost · entropy``. ``report(loss)`` sees
    each update's loss after the gradient is clipped, just before ``optimizer.step()``.
    Finished episodes are added to ``episodes`` (their end counted from ``steps_before``).
    With ``closing``, one more rollout after the last update gives f(θ^K), which is returned
    (the extra rollout's steps and episodes are not counted).
    """
    device = next(agent.parameters()).device
    envs = make_envs(game.env, game.name, cfg.num_envs, seed)
    raw, _ = envs.reset(seed=seed)
    obs = observe(game.env, raw).to(device)
    running = torch.zeros(cfg.num_envs, dtype=torch.float64)
    steps = steps_before
    try:
        for update in range(updates + closing):
            counted = update < updates
            # 1. Rollout: `unroll` steps of every environment under the current policy.
            log_probs, values, entropies, rewards, dones = [], [], [], [], []
            for _ in range(cfg.unroll):
                logits, value = agent(obs)
                log_pi = logits.log_softmax(-1)
                action = torch.multinomial(log_pi.detach().exp().cpu(), 1,
                                           generator=generator)[:, 0]
                raw, reward, terminated, truncated, _ = envs.step(action.numpy())
                done = torch.from_numpy(terminated | truncated)
                reward = torch.as_tensor(reward, dtype=torch.float64)
                running += reward
                steps += cfg.num_envs
                if counted:
                    for i in done.nonzero()[:, 0].tolist():
                        episodes.steps.append(steps)
                        episodes.returns.append(float(running[i]))
                running[done] = 0
                log_probs.append(log_pi.gather(1, action.to(device)[:, None])[:, 0])
                values.append(value)
                entropies.append(-(log_pi.exp() * log_pi).sum(-1))
                rewards.append(reward.clamp(-cfg.reward_clip, cfg.reward_clip).float())
                dones.append(done.float())
                obs = observe(game.env, raw).to(device)
            # 2. Returns: discounted sums bootstrapped from V(s_T), cut where an episode ended.
            with torch.no_grad():
                ret = agent(obs)[1]
            returns = []
            for reward, done in zip(reversed(rewards), reversed(dones), strict=True):
                ret = reward.to(device) + cfg.gamma * ret * (1 - done.to(device))
                returns.append(ret)
            returns = torch.stack(returns[::-1])
            # 3. Loss: policy gradient with the advantage, value regression, entropy bonus.
            value = torch.stack(values)
            advantage = returns - value
            loss = (-(torch.stack(log_probs) * advantage.detach()).mean()
                    + cfg.value_cost * advantage.pow(2).mean()
                    - cfg.entropy_cost * torch.stack(entropies).mean())
            if not torch.isfinite(loss):
                raise DivergedError(f"the A2C loss of {game.name} is not finite at update "
                                    f"{update + 1} of a segment: lower lr or max_grad_norm")
            if not counted:  # the closing rollout gives f(θ^K); no step
                return loss.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            report(loss)
            optimizer.step()
    finally:
        envs.close()
    return None


def random_return(cfg: RLConfig, game: Game, seed: int) -> float:
    """Mean return of the episodes a uniformly random policy finishes in ``random_steps``."""
    envs = make_envs(game.env, game.name, cfg.num_envs, seed)
    envs.reset(seed=seed)
    g = seeding.generator(seed, "random-policy", game.name)
    running, finished = torch.zeros(cfg.num_envs, dtype=torch.float64), []
    try:
        for _ in range(max(1, cfg.random_steps // cfg.num_envs)):
            action = torch.randint(game.num_actions, (cfg.num_envs,), generator=g)
            _, reward, terminated, truncated, _ = envs.step(action.numpy())
            running += torch.as_tensor(reward, dtype=torch.float64)
            done = torch.from_numpy(terminated | truncated)
            finished += running[done].tolist()
            running[done] = 0
    finally:
        envs.close()
    return statistics.fmean(finished) if finished else float(running.mean())


# ------------------------------------------------------------------------ the study
class RLStudy(StudyProtocol):
    """The protocol bound to a config and a device; see the module docstring."""

    name = "rl"

    def __init__(self, cfg: RLConfig, device: torch.device | str = "cpu",
                 progress: bool = False) -> None:
        cfg.check()
        self.cfg, self.device, self.processes = cfg, torch.device(device), ONE_PROCESS
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
        size = min(cfg.meta_batch, len(cfg.pretrain))
        pick = torch.randperm(len(cfg.pretrain),
                              generator=seeding.generator(seed, "meta-batch", step))[:size]
        return [cfg.pretrain[i] for i in pick.tolist()]


def _encoder_only(name: str) -> bool:
    return not name.startswith("encoder.")


class RLRun(MethodRun):
    """One method on one seed: meta-train the encoder on the pretraining games (Leap), then
    train every held-out game from the encoder."""

    def __init__(self, study: RLStudy, method: str, seed: int) -> None:
        cfg = study.cfg.for_method(method)
        self.study, self.cfg, self.method, self.seed = study, cfg, method, seed
        template = study.agent(cfg.heldout[0], seed, "template")
        context = Context(num_tasks=len(cfg.pretrain), seed=seed, exclude=_encoder_only)
        self.learner: MetaLearner = METHODS[method](template, cfg.options(method), context)
        self.meta_steps, self.eval_every, self.checkpoint_every = cfg.meta_steps, 1, 1
        self.pending: dict[str, Any] | None = None

    def load_state(self, state: dict[str, Any]) -> None:
        """Progress saved inside the meta-step or the evaluation the checkpoint stopped in."""
        if state and state.get("phase") not in ("meta", "eval"):
            raise CheckpointError(f"checkpoints/{self.key}.pt holds progress of another kind")
        self.pending = state or None

    def _take(self, phase: str) -> dict[str, Any] | None:
        """The saved progress of ``phase``, if the run stopped inside it (then it is the
        meta-step or evaluation the trainer resumes first)."""
        progress, self.pending = self.pending, None
        return progress if progress is not None and progress["phase"] == phase else None

    def _train_game(self, game: str, agent: ActorCritic, optimizer: torch.optim.Optimizer,
                    total: int, purpose: str, progress: dict[str, Any] | None,
                    save: Callable[[int, Episodes], None],
                    report: Callable[[Tensor], None] = lambda loss: None,
                    closing: bool = False, bar: tqdm | None = None
                    ) -> tuple[Tensor | None, Episodes]:
        """Train one game for ``total`` environment steps, segment by segment, from the saved
        ``progress`` (the agent, its optimizer and the episodes so far); ``save(next_segment,
        episodes)`` after every segment but the last. With ``closing``, returns f(θ^K)."""
        cfg, info = self.cfg, self.study.games[game]
        updates, per = cfg.updates(total), cfg.updates_per_segment
        segments = math.ceil(updates / per)
        episodes, first = Episodes(), 0
        if progress is not None and progress["segment"] > 0:
            agent.load_state_dict(progress["agent"])
            optimizer.load_state_dict(progress["optimizer"])
            episodes, first = Episodes.from_state(progress["episodes"]), progress["segment"]
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
                save(s + 1, episodes)
        return final, episodes

    @property
    def trained_steps(self) -> int:
        """Meta-steps run before the evaluation (none for a method that never meta-trains)."""
        return self.meta_steps if self.learner.meta_trains else 0

    def meta_step(self, step: int) -> dict[str, float]:
        cfg, learner = self.cfg, self.learner
        games = self.study.meta_batch(cfg, self.seed, step)
        progress = self._take("meta")
        start = progress["game"] if progress else 0
        if progress is not None and progress["segment"] == 0:
            learner.load_progress_state(progress["learner"])
        scores = {}
        for j in range(start, len(games)):
            game = games[j]
            agent = self.study.agent(game, self.seed, step)
            optimizer = self.study.optimizer(agent)
            mine = progress if progress is not None and j == start else None
            with learner.task(agent, optimizer, index=j) as t:
                if mine is not None and mine["segment"] > 0:
                    learner.load_progress_state(mine["learner"], t)

                def save(segment: int, episodes: Episodes, j: int = j, t: TaskHandle = t,
                         agent: ActorCritic = agent,
                         optimizer: torch.optim.Optimizer = optimizer) -> None:
                    self.save_progress(step, {
                        "phase": "meta", "game": j, "segment": segment,
                        "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                        "episodes": episodes.state(), "learner": learner.progress_state(t)})

                with tqdm(total=cfg.train_steps, desc=f"meta-step {step + 1}: {game}",
                          unit="env-step", unit_scale=True, leave=False,
                          disable=not self.study.progress, dynamic_ncols=True) as bar:
                    final, episodes = self._train_game(game, agent, optimizer, cfg.train_steps,
                                                       "train", mine, save, t.report,
                                                       closing=True, bar=bar)
                assert final is not None
                t.finish(final)
            if episodes.returns:
                scores[f"return_{game}"] = statistics.fmean(episodes.returns[-cfg.window:])
            if j + 1 < len(games):
                self.save_progress(step, {"phase": "meta", "game": j + 1,
                                          "segment": 0, "learner": learner.progress_state()})
        return {**learner.meta_update(), **scores}

    def validate(self, step: int) -> dict[str, Any] | None:
        return None

    def evaluate(self, init: dict[str, Tensor], progress: bool) -> dict[str, Any]:
        cfg, step = self.cfg, self.trained_steps
        saved = self._take("eval")
        done: dict[str, Any] = dict(saved["done"]) if saved else {}
        bar = tqdm(total=len(cfg.heldout) * cfg.eval_steps, desc=f"{self.method} seed "
                   f"{self.seed} held-out", unit="env-step", unit_scale=True,
                   disable=not progress, dynamic_ncols=True)
        with bar:
            for game in cfg.heldout:
                if game in done:
                    bar.update(cfg.eval_steps)
                    continue
                agent = self.study.agent(game, self.seed, "eval")
                agent.load_state_dict(init, strict=False)
                optimizer = self.study.optimizer(agent)
                mine = saved if saved is not None and saved["game"] == game else None

                def save(segment: int, episodes: Episodes, game: str = game,
                         agent: ActorCritic = agent,
                         optimizer: torch.optim.Optimizer = optimizer) -> None:
                    self.save_progress(step, {
                        "phase": "eval", "game": game, "segment": segment,
                        "done": done, "agent": agent.state_dict(),
                        "optimizer": optimizer.state_dict(), "episodes": episodes.state()})

                _, episodes = self._train_game(game, agent, optimizer, cfg.eval_steps, "eval",
                                               mine, save, bar=bar)
                done[game] = {"steps": episodes.steps, "returns": episodes.returns,
                              "random_return": random_return(cfg, self.study.games[game],
                                                             self.seed)}
        return {"method": self.method, "seed": self.seed, "games": done}

    def export_metadata(self) -> dict[str, str]:
        return {"method": self.method, "seed": str(self.seed), "env": self.cfg.env,
                "architecture": "metaleap.models.ActorCritic (encoder)"}


# ------------------------------------------------------------------------ the summary
def moving_average(steps: Sequence[int], returns: Sequence[float], grid: Sequence[int],
                   window: int, before: float) -> list[float]:
    """At each grid step, the mean return of the last ``window`` episodes finished by then
    (``before`` until the first episode finishes)."""
    out, end = [], 0
    for point in grid:
        while end < len(steps) and steps[end] <= point:
            end += 1
        out.append(statistics.fmean(returns[max(0, end - window):end]) if end else before)
    return out


def summarize(record: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results.json`` of an RL run: held-out learning curves and scores per method.

    Scores are normalised per game, 0 = the uniformly random policy (mean over seeds of
    ``random_return``) and 1 = the best moving-average return any run of this study reached
    on that game. Per method: ``score_auc`` (the mean normalised score over the curve: how
    fast the game was learned) and ``final_score`` (normalised mean of the last ``window``
    episodes), each with ``per_seed`` values per held-out game and a 95% t-interval over the
    (seed, game) pairs; ``final_return`` (raw); ``curves`` (mean and std over seeds of the
    normalised moving average at ``steps``). ``difference``: Leap − random initialization
    on the same (seed, game), with its interval (when both ran).
    """
    cfg = record["config"]
    grid = [round(cfg["eval_steps"] * (i + 1) / cfg["curve_points"])
            for i in range(cfg["curve_points"])]
    window = cfg["window"]
    games = cfg["heldout"]
    runs = {(r["method"], r["seed"]): r for r in results.values()}
    random = {g: statistics.fmean(r["games"][g]["random_return"] for r in runs.values())
              for g in games}
    raw = {key: {g: moving_average(r["games"][g]["steps"], r["games"][g]["returns"], grid,
                                   window, random[g]) for g in games}
           for key, r in runs.items()}
    best = {g: max(max(c[g]) for c in raw.values()) for g in games}

    def normalise(value: float, game: str) -> float:
        return (value - random[game]) / max(best[game] - random[game], 1e-9)

    methods: dict[str, Any] = {}
    for method in cfg["methods"]:
        seeds = sorted(s for m, s in runs if m == method)
        if not seeds:
            continue
        entry: dict[str, Any] = {"seeds": seeds, "games": games}
        per_seed: dict[str, dict[str, list[float]]] = {"score_auc": {}, "final_score": {},
                                                       "final_return": {}}
        curves = {}
        for seed in seeds:
            result = runs[(method, seed)]["games"]
            tails = [statistics.fmean(result[g]["returns"][-window:]) if result[g]["returns"]
                     else random[g] for g in games]
            per_seed["final_return"][str(seed)] = tails
            per_seed["final_score"][str(seed)] = [normalise(t, g) for t, g in
                                                  zip(tails, games, strict=True)]
            per_seed["score_auc"][str(seed)] = [
                statistics.fmean(normalise(v, g) for v in raw[(method, seed)][g]) for g in games]
        for metric, values in per_seed.items():
            entry[metric] = {"per_seed": values, "ci": mean_ci(pooled(values)).to_dict()}
        for g in games:
            normed = torch.tensor([[normalise(v, g) for v in raw[(method, s)][g]] for s in seeds],
                                  dtype=torch.float64)
            curves[g] = {"mean": normed.mean(0).tolist(),
                         "std": normed.std(0, correction=0).tolist()}
        entry["curves"] = curves
        methods[method] = entry
    summary: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "protocol": record["protocol"], "config": cfg,
        "methods_config": record["methods"], "steps": grid,
        "random_return": random, "best_return": best, "methods": methods}
    if "leap" in methods and "scratch" in methods:
        summary["difference"] = {
            metric: paired_groups(methods["leap"][metric]["per_seed"],
                                  methods["scratch"][metric]["per_seed"]).to_dict()
            for metric in ("score_auc", "final_score")}
    return summary
