"""The reinforcement-learning protocol's configuration and presets (free of torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from metaleap.protocols.config import (
    ConfigError,
    MethodConfig,
    at_least,
    positive,
    resolve_preset,
)


@dataclass
class RLConfig(MethodConfig):
    """Every number of the reinforcement-learning protocol (docs/rl.md)."""

    PROTOCOL: ClassVar[str] = "rl"
    TITLE: ClassVar[str] = "RL"
    PER_METHOD: ClassVar[tuple[str, ...]] = ("meta_steps", "meta_batch")

    env: str = "minatar"
    """"minatar" (the five MinAtar games) or "atari" (ALE games, 84×84 preprocessing)"""
    methods: list[str] = field(default_factory=lambda: RLConfig.supported())
    """the methods to compare (default: every registered method this protocol runs: Leap and
    no pretraining, the random initialization it is compared with)"""
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
        self.check_methods()
        if not self.seeds or not self.pretrain or not self.heldout:
            raise ConfigError("at least one seed, pretraining and held-out game needed")
        for name in ("seeds", "pretrain", "heldout"):
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
        self.check_each_method(self._check_method)

    @staticmethod
    def _check_method(cfg: RLConfig) -> None:
        """One method's protocol fields (``for_method``)."""
        at_least(cfg, 0, "meta_steps")
        at_least(cfg, 1, "meta_batch")


PRESETS: dict[str, dict[str, Any]] = {
    # The committed MinAtar study (docs/results/rl): what this 2-core machine allows in an hour.
    "minatar": {},
    # A budget at which A2C learns MinAtar: each pretraining game 500,000 environment steps per
    # meta-step, 16 meta-steps, each held-out game 2,000,000 steps. Held out: Breakout and
    # SpaceInvaders, the paper's pair; from no pretraining, A2C took both far above the random
    # policy in 2M steps (seed 0: returns 0.40 → 3.85 and 3.83 → 28.3) but not Asterix
    # (0.38 → 0.51), which therefore pretrains.
    "minatar-long": dict(pretrain=["asterix", "freeway", "seaquest"],
                         heldout=["breakout", "space_invaders"], train_steps=500_000,
                         meta_steps=16, eval_steps=2_000_000, segment_steps=250_000),
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
