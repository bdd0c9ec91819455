"""Rules written on observations for Gymnasium's own MuJoCo tasks: termination, reward, success, pose.

Numpy only, applied batched (``[..., obs_dim]``) to real and imagined observations alike; the registry
that uses them is :mod:`wm_eval.tasks` (the ``envs/`` tasks keep theirs in :mod:`wm_eval.envs.rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PUSHER_SUCCESS_DISTANCE", "REACHER_SUCCESS_DISTANCE", "hopper_terminated", "walker_terminated",
           "pusher_reward", "pusher_success", "pusher_pose", "reacher_success", "reacher_pose", "planar_pose"]


def hopper_terminated(next_obs: np.ndarray) -> np.ndarray:
    """Gymnasium Hopper-v5 ``not is_healthy`` on observations ``[..., 11]``.

    Healthy: every element of ``obs[1:]`` in (-100, 100), height ``obs[0] > 0.7``,
    torso angle ``obs[1]`` in (-0.2, 0.2). Gymnasium checks the unclipped
    velocities; the observation clips them to +-10, which never leaves the range.
    """
    z, angle = next_obs[..., 0], next_obs[..., 1]
    state_ok = np.all((next_obs[..., 1:] > -100.0) & (next_obs[..., 1:] < 100.0), axis=-1)
    return ~(state_ok & (z > 0.7) & (angle > -0.2) & (angle < 0.2))


def walker_terminated(next_obs: np.ndarray) -> np.ndarray:
    """Gymnasium Walker2d-v5 ``not is_healthy``: height in (0.8, 2.0), angle in (-1, 1)."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    return ~((z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0))


def pusher_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Gymnasium Pusher-v5 reward (default weights) from the next observation and the action."""
    tips, obj, goal = next_obs[..., 14:17], next_obs[..., 17:20], next_obs[..., 20:23]
    near = -np.linalg.norm(obj - tips, axis=-1) * 0.5
    dist = -np.linalg.norm(obj - goal, axis=-1) * 1.0
    ctrl = -np.square(action).sum(axis=-1) * 0.1
    return dist + ctrl + near


PUSHER_SUCCESS_DISTANCE = 0.05
"""Pusher-v5 succeeds when the object's centre is within this distance (m) of the goal's."""


def pusher_success(obs: np.ndarray) -> np.ndarray:
    """Pusher-v5: object (obs 17:20) within :data:`PUSHER_SUCCESS_DISTANCE` of the goal (obs 20:23)."""
    return np.linalg.norm(obs[..., 17:20] - obs[..., 20:23], axis=-1) < PUSHER_SUCCESS_DISTANCE


REACHER_SUCCESS_DISTANCE = 0.02
"""Reacher-v5 succeeds when the fingertip is within 2 cm of the target (about the sum of the fingertip's
and the target's radii, 0.01 + 0.009 m), read from the observation's fingertip - target vector."""


def reacher_success(obs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(obs[..., 8:10], axis=-1) < REACHER_SUCCESS_DISTANCE


def reacher_pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
    """Joint angles from their cosines and sines, the target position as observed."""
    return np.stack([np.arctan2(obs[..., 2], obs[..., 0]), np.arctan2(obs[..., 3], obs[..., 1]),
                     obs[..., 4], obs[..., 5]], axis=-1)


def planar_pose(n_obs_qpos: int) -> Callable[[np.ndarray, np.ndarray, Any], np.ndarray]:
    """Pose of a planar walker: ``qpos = [root_x, obs[:n_obs_qpos]]``."""

    def pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
        return np.concatenate([np.asarray(root_x)[..., None], obs[..., :n_obs_qpos]], axis=-1)

    return pose


def pusher_pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
    """Pusher qpos: 7 arm joints from the observation; object and goal slides from their positions."""
    obj0, goal0 = model.body("object").pos, model.body("goal").pos
    obj, goal = obs[..., 17:20], obs[..., 20:23]
    slides = [obj[..., 1] - obj0[1], obj[..., 0] - obj0[0], goal[..., 1] - goal0[1], goal[..., 0] - goal0[0]]
    return np.concatenate([obs[..., :7], np.stack(slides, axis=-1)], axis=-1)
