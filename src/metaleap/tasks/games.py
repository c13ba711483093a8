"""Games for the reinforcement-learning protocol (docs/rl.md): MinAtar and real Atari (ALE).

A game is a task: :func:`open_games` checks the names and installed packages up front and
describes each game (its minimal action set, its observation shape); :func:`make_envs` gives
a seeded vector of environments; :func:`observe` turns their observations into a float batch.

* ``"minatar"``: the five MinAtar games (``pip install minatar``) through their gymnasium
  registration, minimal action sets, sticky actions 0.1 (MinAtar's default). Observations are
  10×10 grids of up to 10 channels; games with fewer channels are zero-padded to 10, so one
  encoder reads every game.
* ``"atari"``: ALE games (``pip install ale-py``; the ROMs ship inside the wheel) through
  ALE's own vector environment with the standard preprocessing: frame skip 4 with max-pooling,
  84×84 grayscale, 4 stacked frames, up to 30 no-op starts, minimal action sets, episodes cut
  at 108,000 frames. Rewards come back unclipped: the agent clips them.

Nothing here knows about learning; the environments' randomness comes from the seeds given.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaleap.tasks.errors import DataError, MissingDependencyError

ENVS = ("minatar", "atari")
MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
#: Channels of every MinAtar observation after padding (Seaquest, the most, has 10).
MINATAR_CHANNELS = 10
PACKAGES = {"minatar": ("minatar", "gymnasium"), "atari": ("ale-py", "gymnasium")}
INSTALL = {"minatar": "pip install 'metaleap[rl]' (or: pip install minatar gymnasium)",
           "atari": "pip install 'metaleap[rl]' (or: pip install ale-py gymnasium)"}


@dataclass(frozen=True)
class Game:
    """One game: its name, the size of its minimal action set and its observation shape."""

    env: str
    name: str
    num_actions: int
    obs_shape: tuple[int, int, int]


def _require(env: str) -> None:
    for package in PACKAGES[env]:
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise MissingDependencyError(
                f"--env {env} needs the Python package {package!r}, which is not installed; "
                f"install it with: {INSTALL[env]}") from None


def _minatar_env_id(game: str) -> str:
    """The gymnasium id MinAtar registers for ``game`` (v1: the minimal action set)."""
    import gymnasium as gym
    from minatar.gym import register_envs

    env_id = f"MinAtar/{game.title().replace('_', '')}-v1"
    if env_id not in gym.registry:
        register_envs()
    return env_id


def atari_games() -> list[str]:
    """Every game whose ROM ships with the installed ale-py."""
    _require("atari")
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def open_games(env: str, names: Sequence[str]) -> dict[str, Game]:
    """Check ``env``'s packages and every game name; describe each game.

    Raises :class:`DataError` (:class:`MissingDependencyError` for a missing package) in one
    line before any training starts.
    """
    if env not in ENVS:
        raise DataError(f"unknown environment {env!r}; choose from {', '.join(ENVS)}")
    _require(env)
    known = MINATAR_GAMES if env == "minatar" else tuple(atari_games())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"unknown {env} game(s) {', '.join(unknown)}; known: {', '.join(known)}")
    games = {}
    for name in names:
        envs = make_envs(env, name, 1, seed=0)
        try:
            obs_shape = observe(env, envs.reset(seed=0)[0]).shape[1:]
            games[name] = Game(env, name, int(envs.single_action_space.n),
                               tuple(obs_shape))  # type: ignore[arg-type]
        finally:
            envs.close()
    return games


def make_envs(env: str, game: str, num_envs: int, seed: int) -> Any:
    """A gymnasium vector environment of ``num_envs`` copies of ``game``.

    Finished episodes restart within the same step (gymnasium's ``SAME_STEP`` autoreset), so
    every step returns a usable observation. Seed it with ``reset(seed=seed)``; copy i then
    draws from ``seed + i``.
    """
    import gymnasium as gym

    same_step = gym.vector.AutoresetMode.SAME_STEP
    if env == "minatar":
        return gym.make_vec(_minatar_env_id(game), num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": same_step})
    from ale_py import AtariVectorEnv

    return AtariVectorEnv(game=game, num_envs=num_envs, reward_clipping=False,
                          autoreset_mode=same_step)


def observe(env: str, obs: np.ndarray) -> Tensor:
    """A batch of observations as floats in [0, 1], channels first.

    MinAtar: (N, 10, 10, C) booleans → (N, 10, 10, 10) zero-padded channels, then channels
    first; Atari: (N, 4, 84, 84) bytes → floats.
    """
    x = torch.from_numpy(np.asarray(obs))
    if env == "minatar":
        x = x.permute(0, 3, 1, 2).float()
        pad = MINATAR_CHANNELS - x.shape[1]
        return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
    return x.float().div_(255)


def identity(env: str, names: Sequence[str]) -> dict[str, Any]:
    """What identifies the environments: the packages' versions and the games."""
    versions = {p: importlib.metadata.version(p) for p in PACKAGES[env]}
    return {"kind": env, "packages": versions, "games": list(names)}
