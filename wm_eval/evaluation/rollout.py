"""One rollout loop for both worlds: imagined (:class:`~wm_eval.world_model_env.ImaginedBatch`) and
real (:class:`MujocoBatch`), so their numbers are comparable by construction.

A *world* here is anything with ``reset_to(states) -> obs [N, obs_dim]`` and
``step(actions [N, act_dim]) -> (obs, reward, terminated, truncated, info)`` on
``N`` episodes at once, without autoreset. :func:`run_episodes` drives it with
policies acting on slices of the batch (or with fixed actions for open-loop
replay) and returns padded arrays plus each episode's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wm_eval import tasks
from wm_eval.types import Trajectory

__all__ = ["World", "MujocoBatch", "BatchRollout", "run_episodes"]


class World(Protocol):
    """``N`` episodes stepped together, no autoreset."""

    num_envs: int

    def reset_to(self, states: np.ndarray, *, seed: int) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]: ...


class MujocoBatch:
    """``N`` ground-truth Gymnasium MuJoCo envs (TimeLimit removed) stepped as one batch.

    ``info["sim_state"]`` holds each env's simulator state after the step.
    Envs whose episode has ended are not stepped again.
    """

    def __init__(self, task: str, num_envs: int) -> None:
        self.task = task
        self.num_envs = num_envs
        self.envs = [tasks.make_env(task).unwrapped for _ in range(num_envs)]
        self.done = np.zeros(num_envs, dtype=bool)

    def reset_to(self, states: np.ndarray, *, seed: int = 0) -> np.ndarray:
        """Put env ``i`` in simulator state ``states[i]``; returns the observations there (MuJoCo is
        deterministic: ``seed`` is unused)."""
        self.done[:] = False
        return np.stack([tasks.set_state(env, s) for env, s in zip(self.envs, states)])

    def states(self) -> np.ndarray:
        """Current simulator states ``[N, state_dim]``."""
        return np.stack([tasks.get_state(env) for env in self.envs])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        n = self.num_envs
        obs = np.zeros((n,) + self.envs[0].observation_space.shape)
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        for i in np.flatnonzero(~self.done):
            obs[i], reward[i], terminated[i], _, _ = self.envs[i].step(actions[i])
        self.done |= terminated
        return obs, reward, terminated, np.zeros(n, dtype=bool), {"sim_state": self.states()}

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclass(frozen=True)
class BatchRollout:
    """``N`` padded episodes of at most ``H`` steps; entries past ``lengths[i]`` are zero."""

    observations: np.ndarray  # [N, H + 1, obs_dim]
    actions: np.ndarray  # [N, H, act_dim]
    rewards: np.ndarray  # [N, H]
    terminations: np.ndarray  # [N, H] bool
    truncations: np.ndarray  # [N, H] bool
    lengths: np.ndarray  # [N] int
    uncertainty: np.ndarray | None = None  # [N, H], imagined worlds
    sim_states: np.ndarray | None = None  # [N, H + 1, state_dim], real worlds

    @property
    def mask(self) -> np.ndarray:
        """``[N, H]`` bool: the steps each episode really took (the rest is padding)."""
        return np.arange(self.rewards.shape[1])[None, :] < self.lengths[:, None]

    def trajectory(self, i: int, *, seed: int | None = None, infos: dict[str, Any] | None = None) -> Trajectory:
        """Episode ``i`` as a :class:`Trajectory` (uncertainty, when present, goes into ``infos``)."""
        t = int(self.lengths[i])
        extra = dict(infos or {})
        if self.uncertainty is not None:
            extra["uncertainty"] = self.uncertainty[i, :t]
        return Trajectory(
            observations=self.observations[i, : t + 1], actions=self.actions[i, :t], rewards=self.rewards[i, :t],
            terminations=self.terminations[i, :t], truncations=self.truncations[i, :t],
            sim_states=None if self.sim_states is None else self.sim_states[i, : t + 1], seed=seed, infos=extra,
        )


def run_episodes(world: Any, start_states: np.ndarray, horizon: int, *,
                 policies: Sequence[tuple[Any, slice]] | None = None, actions: np.ndarray | None = None,
                 lengths: np.ndarray | None = None, seed: int = 0, progress: Any = None) -> BatchRollout:
    """Roll ``N`` episodes from ``start_states`` for at most ``horizon`` steps.

    Args:
        world: an imagined or real batch (see :class:`World`).
        start_states: ``[N, state_dim]`` simulator states; both worlds start from the very same ones.
        horizon: step limit; the last step of an episode that reaches it is marked truncated.
        policies: ``(policy, rows)`` pairs: ``policy.act(obs[rows])`` acts for those episodes
            (closed loop). Only rows still running are passed to the policy.
        actions: ``[N, horizon, act_dim]`` fixed actions (open-loop replay) instead of policies.
        lengths: with ``actions``, the number of valid actions per row; rows stop there.
        seed: seed of the world's own randomness (ensemble member draws, sampling).
        progress: an optional tqdm bar, advanced once per step.
    """
    n = len(start_states)
    obs = world.reset_to(start_states, seed=seed)
    obs_dim = obs.shape[1]
    act_dim = actions.shape[2] if actions is not None else policies[0][0].action_space.shape[0]
    out_obs = np.zeros((n, horizon + 1, obs_dim))
    out_obs[:, 0] = obs
    out_act = np.zeros((n, horizon, act_dim), dtype=np.float32)
    out_rew = np.zeros((n, horizon))
    out_term = np.zeros((n, horizon), dtype=bool)
    out_trunc = np.zeros((n, horizon), dtype=bool)
    out_unc: np.ndarray | None = None
    out_states: np.ndarray | None = None
    if isinstance(world, MujocoBatch):
        out_states = np.zeros((n, horizon + 1, len(start_states[0])))
        out_states[:, 0] = world.states()
    run_lengths = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    limit = np.full(n, horizon) if lengths is None else np.minimum(lengths, horizon)
    alive &= limit > 0
    for t in range(horizon):
        if not alive.any():
            break
        act = np.zeros((n, act_dim), dtype=np.float32)
        if actions is not None:
            act[:] = actions[:, t]
        else:
            for policy, rows in policies:
                idx = np.arange(n)[rows][alive[rows]]
                if len(idx):
                    act[idx] = policy.act(obs[idx])
        obs, reward, terminated, truncated, info = world.step(act)
        out_obs[alive, t + 1] = obs[alive]
        out_act[alive, t] = act[alive]
        out_rew[alive, t] = reward[alive]
        out_term[alive, t] = terminated[alive]
        if "uncertainty" in info:
            if out_unc is None:
                out_unc = np.zeros((n, horizon))
            out_unc[alive, t] = info["uncertainty"][alive]
        if out_states is not None:
            out_states[alive, t + 1] = info["sim_state"][alive]
        run_lengths[alive] += 1
        at_limit = run_lengths >= limit
        out_trunc[alive, t] = (truncated[alive] | at_limit[alive]) & ~terminated[alive]
        alive &= ~(terminated | truncated | at_limit)
        if progress is not None:
            progress.update(1)
    return BatchRollout(out_obs, out_act, out_rew, out_term, out_trunc, run_lengths, out_unc, out_states)
