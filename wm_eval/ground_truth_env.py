"""The ground truth as a ``gymnasium.vector.VectorEnv`` with the world model's reset options.

:class:`MujocoVectorEnv` steps ``N`` copies of a task's MuJoCo env and takes the same
``reset(options={"state": ..., "reset_mask": ..., "episode_seeds": ...})`` as
:class:`~wm_eval.world_model_env.WorldModelVectorEnv`, so one rollout loop drives both worlds
from the very same simulator states. Autoreset is ``DISABLED``: an ended episode is no longer
stepped until it is reset. ``info["sim_state"]`` holds every env's simulator state after the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from wm_eval import tasks
from wm_eval.errors import SpaceMismatchError, WmEvalError

__all__ = ["MujocoVectorEnv"]


class MujocoVectorEnv(VectorEnv):
    """``N`` ground-truth MuJoCo envs of ``task`` (no TimeLimit of their own), autoreset disabled.

    Args:
        num_envs: ``N``.
        task: task id (see :mod:`wm_eval.tasks`).
        max_episode_steps: truncate an episode after this many steps (default: the task's).

    Reset options: ``state`` (``[K, state_dim]`` simulator states, required: the ground truth
    starts only from given states or, without options, from seeded resets ``seed, seed + 1, ...``),
    ``reset_mask`` (``[N]`` bool, which envs; default all) and ``episode_seeds`` (accepted for
    symmetry with the world model; MuJoCo is deterministic and uses none).
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, num_envs: int, *, task: str, max_episode_steps: int | None = None) -> None:
        if int(num_envs) < 1:
            raise WmEvalError(f"num_envs must be at least 1, got {num_envs}")
        self.task, self.num_envs = task, int(num_envs)
        wrapped = [tasks.make_env(task) for _ in range(self.num_envs)]
        self.max_episode_steps = int(max_episode_steps or wrapped[0].spec.max_episode_steps)
        self.envs = [env.unwrapped for env in wrapped]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.done = np.ones(self.num_envs, dtype=bool)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.obs = np.zeros((self.num_envs,) + self.single_observation_space.shape)

    def states(self) -> np.ndarray:
        """Current simulator states ``[N, state_dim]``."""
        return np.stack([tasks.get_state(env) for env in self.envs])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        options = dict(options or {})
        unknown = set(options) - {"state", "episode_seeds", "reset_mask"}
        if unknown:
            raise WmEvalError(f"unknown reset option(s) {sorted(unknown)}: use 'state', 'episode_seeds' or 'reset_mask'")
        mask = np.asarray(options.get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise SpaceMismatchError(f"options['reset_mask'] has shape {mask.shape}; expected ({self.num_envs},)")
        rows = np.flatnonzero(mask)
        if "state" in options:
            states = np.asarray(options["state"], dtype=np.float64)
            if states.ndim != 2 or len(states) != len(rows):
                raise SpaceMismatchError(f"options['state'] has shape {states.shape}; expected ({len(rows)}, state_dim)")
            for row, state in zip(rows, states):
                self.obs[row] = tasks.set_state(self.envs[row], state)
        else:
            for k, row in enumerate(rows):
                self.obs[row] = self.envs[row].reset(seed=None if seed is None else seed + k)[0]
        self.done[rows] = False
        self.steps[rows] = 0
        return self.obs.copy(), {"sim_state": self.states()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        n = self.num_envs
        if actions.shape != (n,) + self.single_action_space.shape:
            raise SpaceMismatchError(f"actions have shape {actions.shape}; expected {(n,) + self.single_action_space.shape}")
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        running = np.flatnonzero(~self.done)
        for i in running:
            self.obs[i], reward[i], terminated[i], _, _ = self.envs[i].step(actions[i])
        self.steps[running] += 1
        truncated = ~self.done & (self.steps >= self.max_episode_steps) & ~terminated
        self.done |= terminated | truncated
        return self.obs.copy(), reward, terminated, truncated, {"sim_state": self.states()}

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
