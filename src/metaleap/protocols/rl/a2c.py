"""Advantage actor-critic (A2C), the learning process of every game (docs/rl.md).

Read top to bottom: :class:`Episodes` records what finished; :func:`a2c_segment` trains an
agent on fresh environments, each update in three steps (rollout, returns, loss); and
:func:`random_return` scores a uniformly random policy, the 0 of the normalised scores. The
per-update loss goes to ``report`` just before the optimizer steps, where Leap reads it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metaleap import seeding
from metaleap.models import ActorCritic
from metaleap.protocols.base import DivergedError
from metaleap.protocols.rl.config import RLConfig
from metaleap.tasks.games import Game, make_envs, observe


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
