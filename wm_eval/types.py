"""Frozen dataclasses that cross module lines.

They follow the Minari trajectory convention: ``T`` steps have ``T + 1``
observations and ``T`` actions, rewards, terminations and truncations, with
``terminated`` and ``truncated`` kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Trajectory"]


@dataclass(frozen=True)
class Trajectory:
    """One episode.

    Attributes:
        observations: ``[T + 1, obs_dim]`` float array.
        actions: ``[T, act_dim]`` float array.
        rewards: ``[T]`` float array.
        terminations: ``[T]`` bool array (MDP termination).
        truncations: ``[T]`` bool array (time limit or cut-off).
        sim_states: ``[T + 1, state_dim]`` full MuJoCo physics state per step, or ``None``.
        seed: the reset seed of the episode, or ``None``.
        infos: extra per-episode data (for example ``{"policy": "ppo_0300k"}``).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    sim_states: np.ndarray | None = None
    seed: int | None = None
    infos: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if len(self.observations) != steps + 1:
            raise ValueError(f"Trajectory has {len(self.observations)} observations for {steps} actions; expected {steps + 1}")
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"Trajectory.{name} has length {len(getattr(self, name))}; expected {steps}")
        if self.sim_states is not None and len(self.sim_states) != steps + 1:
            raise ValueError(f"Trajectory.sim_states has length {len(self.sim_states)}; expected {steps + 1}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        """Undiscounted return."""
        return float(np.sum(self.rewards))
