"""Scripted experts for the ``envs/`` arm tasks, with a skill knob that yields a graded ladder.

An expert is a deterministic, batched function of the observation alone (no memory), so it acts the
same on imagined observations as on real ones::

    from wm_eval.envs.experts import expert
    policy = expert("WmEval/ArmPush-v0", skill=0.7)
    actions = policy(obs)  # [B, 18] -> [B, 3] float32 joint velocity targets in [-1, 1]

Each expert moves the fingertip along waypoints computed from the observation (a Cartesian servo
mapped to joint velocities (actions are in units of 2 rad/s) by the damped pseudo-inverse of the arm's Jacobian). ``skill`` in
``[0, 1]`` degrades it three ways at once, all deterministic: speed (the fingertip's top speed goes
from 0.05 to 0.5 m/s), aim (its idea of the goal is off by ``(1 - skill) * aim_error`` m in the
direction ``bias_angle``; ``aim_error`` is 0.1 m for ArmPush, 0.015 m for ArmDrawer, whose hook
leaves 2.5 cm of play) and tremor (``(1 - skill) * 0.6`` rad/s of a smooth function of the state on
every joint). The shipped zoos (``policies/WmEval_*``) hold ladders of these.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wm_eval.envs import rules

__all__ = ["expert", "PushExpert", "DrawerExpert"]


class _Expert:
    """Common servo: Cartesian velocity of the fingertip -> joint velocity targets in [-1, 1]."""

    aim_error = 0.1
    """Aim error (m) at skill 0."""

    def __init__(self, skill: float = 1.0, *, bias_angle: float = 0.0, aim_error: float | None = None) -> None:
        if not 0.0 <= float(skill) <= 1.0:
            raise ValueError(f"skill must be in [0, 1], got {skill}")
        if aim_error is not None and not 0.0 <= float(aim_error) <= 0.5:
            raise ValueError(f"aim_error must be in [0, 0.5] m, got {aim_error}")
        self.skill = float(skill)
        self.speed = 0.05 + 0.45 * self.skill
        error = (1.0 - self.skill) * (self.aim_error if aim_error is None else aim_error)
        self.bias = error * np.array([np.cos(bias_angle), np.sin(bias_angle)])
        self.tremor = (1.0 - self.skill) * 0.6

    def _servo(self, obs: np.ndarray, target: np.ndarray, gain: float = 6.0) -> np.ndarray:
        """Joint velocities ``[B, 3]`` moving the fingertip towards ``target [B, 2]``."""
        q, tip = obs[:, rules.PUSH["q"]], obs[:, rules.PUSH["tip"]]  # the same slices in both tasks' layouts
        v = gain * (target - tip)
        norm = np.linalg.norm(v, axis=-1, keepdims=True)
        v = v * np.minimum(1.0, self.speed / np.maximum(norm, 1e-9))
        jac = rules.jacobian(q)
        damped = jac @ np.swapaxes(jac, -1, -2) + 1e-3 * np.eye(2)
        qdot = (np.swapaxes(jac, -1, -2) @ np.linalg.solve(damped, v[..., None]))[..., 0]
        # keep the elbow and the wrist away from their limits (+-2.7 rad), in the arm's null space
        excess = np.clip(np.abs(q[:, 1:]) - np.array([2.2, 1.5]), 0.0, None) * np.sign(q[:, 1:])
        null = np.eye(3) - np.swapaxes(jac, -1, -2) @ np.linalg.solve(damped, jac)
        qdot -= 3.0 * (null @ np.concatenate([np.zeros((len(q), 1)), excess], axis=-1)[..., None])[..., 0]
        shake = self.tremor * np.sin(np.array([23.0, 31.0, 37.0]) * tip.sum(-1, keepdims=True) + q * 3.0)
        return np.clip((qdot + shake) / 2.0, -1.0, 1.0).astype(np.float32)  # actions are in units of 2 rad/s


class PushExpert(_Expert):
    """ArmPush: get behind the puck (on the far side from the goal), then push it along the line to the goal."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        p = rules.PUSH
        tip, puck, goal = obs[:, p["tip"]], obs[:, p["puck"]], obs[:, p["goal"]] + self.bias
        line = goal - puck
        dist = np.linalg.norm(line, axis=-1, keepdims=True)
        d = line / np.maximum(dist, 1e-9)
        n = np.stack([-d[:, 1], d[:, 0]], axis=-1)
        rel = tip - puck
        along, across = (rel * d).sum(-1, keepdims=True), (rel * n).sum(-1, keepdims=True)
        behind = puck - 0.065 * d
        pushing = (along < -0.03) & (np.abs(across) < 0.025)
        # in front of or beside the puck: go round it on the tip's side first
        detour = puck + np.sign(across + 1e-9) * 0.09 * n - 0.08 * d
        blocked = (along > -0.05) & (np.linalg.norm(rel, axis=-1, keepdims=True) < 0.11)
        target = np.where(blocked, detour, behind)
        target = np.where(pushing, puck + d * np.minimum(dist, 0.05) - 0.05 * d - 0.3 * across * n, target)
        target = np.where(pushing & (dist < 0.01), tip, target)
        return self._servo(obs, target)


class DrawerExpert(_Expert):
    """ArmDrawer: go to the hook's open end, slide into the hook, then pull until the target opening."""

    aim_error = 0.015

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        d = rules.DRAWER
        tip, hook = obs[:, d["tip"]], obs[:, d["hook"]] + self.bias * np.array([1.0, 0.4])
        opening, goal_opening = obs[:, d["opening"], None], obs[:, d["target"], None]
        rel = tip - hook
        # in the hook: between the drawer front and the crossbar, or pressing into the crossbar's force field
        in_hook = (rel[:, 1:2] > -0.035) & (rel[:, 1:2] < 0.012) & (rel[:, 0:1] > -0.04) & (rel[:, 0:1] < 0.05)
        in_lane = (np.abs(rel[:, 1:2]) < 0.012) & (rel[:, 0:1] >= 0.05)
        entry, below_entry = hook + [0.12, 0.0], hook + [0.12, -0.09]
        # below the crossbar and left of its open end: go round its end first
        approach = np.where((rel[:, 0:1] < 0.1) & (rel[:, 1:2] < -0.02), below_entry, entry)
        target = np.where(in_lane, hook, approach)
        pull = hook + [0.0, -0.06]
        target = np.where(in_hook, np.where(opening >= goal_opening + 0.01, tip, pull), target)
        return self._servo(obs, target)


_EXPERTS: dict[str, type[_Expert]] = {"WmEval/ArmPush-v0": PushExpert, "WmEval/ArmDrawer-v0": DrawerExpert}


def expert(task: str, skill: float = 1.0, **knobs: float) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of ``task`` at ``skill`` (``bias_angle``, ``aim_error`` as further knobs)."""
    if task not in _EXPERTS:
        raise ValueError(f"no scripted expert for task '{task}'; experts exist for {', '.join(_EXPERTS)}")
    return _EXPERTS[task](skill, **knobs)
