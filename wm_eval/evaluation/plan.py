"""An evaluation as a plan of work units: policy × fixed-size chunk of episodes.

Each :class:`Unit` has a stable id built from the policy's stream key and its episode range, and
its seeds follow from the evaluation seed, the policy's name and the episode index alone
(:mod:`wm_eval.streams`). An executor may therefore run units in any grouping and order, on any
number of workers: results are merged in plan order and do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wm_eval.errors import WmEvalError
from wm_eval.streams import episode_seed, policy_key, start_seed

__all__ = ["Unit", "plan", "paired_units", "start_seeds"]


@dataclass(frozen=True)
class Unit:
    """Episodes ``start .. stop - 1`` of policy number ``policy`` (called ``name``, stream key ``key``);
    ``imagined_only``: without their MuJoCo counterparts."""

    policy: int
    name: str
    key: int
    start: int
    stop: int
    imagined_only: bool = False

    @property
    def id(self) -> str:
        """Stable id, e.g. ``"1a2b3c4d-000010-000020"`` (``-imagined`` appended for imagined-only units):
        the same whatever else is in the plan."""
        return f"{self.key:08x}-{self.start:06d}-{self.stop:06d}" + ("-imagined" if self.imagined_only else "")

    @property
    def size(self) -> int:
        """Number of episodes."""
        return self.stop - self.start

    def episode_seeds(self, seed: int) -> np.ndarray:
        """``[size]`` seeds of the world model's random stream of each episode."""
        return np.array([episode_seed(seed, self.key, j) for j in range(self.start, self.stop)], dtype=np.int64)


def start_seeds(seed: int, episodes: int) -> np.ndarray:
    """``[episodes]`` Gymnasium reset seeds of the start states (shared by all policies)."""
    return np.array([start_seed(seed, j) for j in range(episodes)], dtype=np.int64)


def plan(names: Sequence[str], *, episodes: int, chunk: int, split: int | None = None) -> list[Unit]:
    """The units of evaluating policies ``names`` on ``episodes`` episodes, ``chunk`` per unit.

    Units are ordered by policy, then episode. Names must be unique (they key the random streams).
    ``split``: no unit straddles episode ``split`` (the first ``split`` episodes are paired with real
    ones, the rest imagined only).
    """
    if episodes < 1 or chunk < 1:
        raise WmEvalError(f"episodes and chunk must be at least 1 (got {episodes} and {chunk})")
    split = episodes if split is None else split
    if len(set(names)) != len(names):
        raise WmEvalError(f"policy names must be unique, got {list(names)}")
    keys = [policy_key(n) for n in names]
    if len(set(keys)) != len(keys):
        raise WmEvalError(f"two policy names share a stream key: rename one of {list(names)}")
    ranges = [(lo, min(lo + chunk, split), False) for lo in range(0, split, chunk)]
    ranges += [(lo, min(lo + chunk, episodes), True) for lo in range(split, episodes, chunk)]
    return [Unit(i, name, key, lo, hi, only) for i, (name, key) in enumerate(zip(names, keys)) for lo, hi, only in ranges]


def paired_units(policy: int, name: str, start: int, stop: int, chunk: int) -> list[Unit]:
    """Paired units of episodes ``start .. stop - 1`` of one policy, ``chunk`` per unit."""
    key = policy_key(name)
    return [Unit(policy, name, key, lo, min(lo + chunk, stop)) for lo in range(start, stop, chunk)]
