"""Observation layouts and the rules written on observations of the ``envs/`` arm tasks.

Numpy only (no MuJoCo), so :mod:`wm_eval.tasks` can use the rules on imagined observations and the
scripted experts can act on them. Both tasks share a 3-joint planar arm (links :data:`LINKS` m, joints
about the vertical axis at 0.1 m above the table, base at the origin) driven by velocity servos: an
action is the three joints' target angular velocities in units of 2 rad/s, in ``[-1, 1]``.

``WmEval/ArmPush-v0`` observation ``[18]`` (:data:`PUSH`):
``[0:3]`` joint angles (rad), ``[3:6]`` joint velocities (rad/s), ``[6:8]`` fingertip xy (m), ``[8:10]`` fingertip
velocity xy (m/s), ``[10:12]`` puck xy, ``[12:14]`` puck velocity xy, ``[14:16]`` goal xy, ``[16:18]`` puck - fingertip.

``WmEval/ArmDrawer-v0`` observation ``[17]`` (:data:`DRAWER`):
``[0:3]`` joint angles, ``[3:6]`` joint velocities, ``[6:8]`` fingertip xy, ``[8:10]`` fingertip velocity xy,
``[10:12]`` the handle's hook point xy (where the fingertip pulls from), ``[12]`` drawer opening (m), ``[13]`` its
velocity, ``[14]`` target opening (m), ``[15:17]`` hook point - fingertip.

Like Gymnasium-Robotics' Fetch observations, both carry the end effector's velocity and the object relative to
it: contact depends on them, and a learned model predicts contact far better from them than from joint
velocities and absolute positions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LINKS", "PUSH", "DRAWER", "PUSH_SUCCESS_DISTANCE", "DRAWER_TOLERANCE", "HOOK_OFFSET", "TARGET_OFFSET",
           "push_success", "push_reward", "push_pose", "push_mocap", "drawer_success", "drawer_reward",
           "drawer_pose", "drawer_mocap", "fingertip", "jacobian"]

LINKS = (0.25, 0.2, 0.15)
"""Arm link lengths (m), shoulder to fingertip."""
PUSH = {"q": slice(0, 3), "qd": slice(3, 6), "tip": slice(6, 8), "tip_vel": slice(8, 10), "puck": slice(10, 12),
        "puck_vel": slice(12, 14), "goal": slice(14, 16), "rel": slice(16, 18)}
"""ArmPush observation layout (18 dims)."""
DRAWER = {"q": slice(0, 3), "qd": slice(3, 6), "tip": slice(6, 8), "tip_vel": slice(8, 10), "hook": slice(10, 12),
          "opening": 12, "opening_vel": 13, "target": 14, "rel": slice(15, 17)}
"""ArmDrawer observation layout (17 dims)."""
PUSH_SUCCESS_DISTANCE = 0.05
"""ArmPush succeeds when the puck's centre is within this distance (m) of the goal's centre."""
DRAWER_TOLERANCE = 0.01
"""ArmDrawer succeeds when the opening reaches the target opening minus this tolerance (m)."""
HOOK_OFFSET = np.array([0.01, -0.135])
"""Hook point of the closed drawer's handle relative to the cabinet (m); it moves by ``-opening`` in y."""
TARGET_OFFSET = -0.105
"""y of the closed drawer's front relative to the cabinet (m): the target marker sits ``target`` in front."""
_CTRL_WEIGHT = 0.05
_P, _D = PUSH, DRAWER


def push_success(obs: np.ndarray) -> np.ndarray:
    """``[..., 18] -> [...]`` bool: puck within :data:`PUSH_SUCCESS_DISTANCE` of the goal."""
    return np.linalg.norm(obs[..., _P["puck"]] - obs[..., _P["goal"]], axis=-1) < PUSH_SUCCESS_DISTANCE


def push_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Dense ArmPush reward on the next observation: ``-|puck - goal| - 0.5 |tip - puck| - 0.05 |a|^2``."""
    dist = np.linalg.norm(next_obs[..., _P["puck"]] - next_obs[..., _P["goal"]], axis=-1)
    near = np.linalg.norm(next_obs[..., _P["tip"]] - next_obs[..., _P["puck"]], axis=-1)
    return -dist - 0.5 * near - _CTRL_WEIGHT * np.square(action).sum(axis=-1)


def push_pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
    """``qpos [..., 5]``: the joint angles and the puck's slides (its body sits at the origin)."""
    return np.concatenate([obs[..., _P["q"]], obs[..., _P["puck"]]], axis=-1)


def push_mocap(obs: np.ndarray) -> np.ndarray:
    """``mocap_pos [..., 1, 3]``: the goal marker on the table."""
    goal = obs[..., _P["goal"]]
    return np.stack([goal[..., 0], goal[..., 1], np.full(obs.shape[:-1], 0.001)], axis=-1)[..., None, :]


def drawer_success(obs: np.ndarray) -> np.ndarray:
    """``[..., 17] -> [...]`` bool: opening at least the target opening minus :data:`DRAWER_TOLERANCE`."""
    return obs[..., _D["opening"]] >= obs[..., _D["target"]] - DRAWER_TOLERANCE


def drawer_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Dense ArmDrawer reward: ``-2 max(target - opening, 0) - 0.5 |tip - hook| - 0.05 |a|^2``."""
    short = np.maximum(next_obs[..., _D["target"]] - next_obs[..., _D["opening"]], 0.0)
    near = np.linalg.norm(next_obs[..., _D["tip"]] - next_obs[..., _D["hook"]], axis=-1)
    return -2.0 * short - 0.5 * near - _CTRL_WEIGHT * np.square(action).sum(axis=-1)


def drawer_pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
    """``qpos [..., 4]``: the joint angles and the drawer's opening."""
    return np.concatenate([obs[..., _D["q"]], obs[..., _D["opening"], None]], axis=-1)


def drawer_mocap(obs: np.ndarray) -> np.ndarray:
    """``mocap_pos [..., 2, 3]``: the cabinet (from the hook point and the opening) and the target marker."""
    hook, opening = obs[..., _D["hook"]], obs[..., _D["opening"]]
    cab_x = hook[..., 0] - HOOK_OFFSET[0]
    cab_y = hook[..., 1] - HOOK_OFFSET[1] + opening
    zero = np.zeros(obs.shape[:-1])
    cabinet = np.stack([cab_x, cab_y, zero], axis=-1)
    marker = np.stack([cab_x, cab_y + TARGET_OFFSET - obs[..., _D["target"]], zero + 0.001], axis=-1)
    return np.stack([cabinet, marker], axis=-2)


def fingertip(q: np.ndarray) -> np.ndarray:
    """Fingertip xy ``[..., 2]`` of joint angles ``q [..., 3]`` (planar forward kinematics)."""
    heading = np.cumsum(q, axis=-1)
    links = np.asarray(LINKS)
    return np.stack([(links * np.cos(heading)).sum(-1), (links * np.sin(heading)).sum(-1)], axis=-1)


def jacobian(q: np.ndarray) -> np.ndarray:
    """``d fingertip / d q``, ``[..., 2, 3]``, for joint angles ``q [..., 3]``."""
    heading = np.cumsum(q, axis=-1)
    links = np.asarray(LINKS)
    dx, dy = -links * np.sin(heading), links * np.cos(heading)
    # column j: the sum over links i >= j
    jx, jy = np.flip(np.cumsum(np.flip(dx, -1), -1), -1), np.flip(np.cumsum(np.flip(dy, -1), -1), -1)
    return np.stack([jx, jy], axis=-2)
