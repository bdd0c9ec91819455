"""The ``envs/`` arm tasks as Gymnasium MuJoCo envs: ``WmEval/ArmPush-v0`` and ``WmEval/ArmDrawer-v0``.

Both are :class:`gymnasium.envs.mujoco.MujocoEnv` subclasses on the MJCF scenes in ``envs/assets/``
(registered with their time limits on ``import wm_eval``; see :data:`ENV_IDS`)::

    import gymnasium as gym
    import wm_eval  # noqa: F401  registers the ids

    env = gym.make("WmEval/ArmPush-v0", render_mode="rgb_array")
    obs, info = env.reset(seed=0)          # obs [18]: layout in wm_eval.envs.rules
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["is_success"]                      # the success rule, written on the observation

Every randomised placement (the puck and the goal; the cabinet, the drawer's opening and the target
opening) is drawn in ``reset_model`` from the env's seeded ``np_random`` and stored in the simulator
state (joint positions and mocap bodies), so ``mj_getState``/``mj_setState`` restore an episode's start
bit for bit. The tasks never terminate; episodes end at the time limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

from wm_eval.envs import rules

__all__ = ["ArmPushEnv", "ArmDrawerEnv"]

_ASSETS = Path(__file__).resolve().parent / "assets"
_CAMERA = {"distance": 1.3, "elevation": -55.0, "azimuth": 90.0, "lookat": np.array([0.0, 0.3, 0.0])}


class _ArmEnv(MujocoEnv, utils.EzPickle):
    """Shared arm scene logic: frame skip 10 at a 2 ms timestep (50 Hz control), no termination."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"], "render_fps": 50}
    xml: str = ""
    obs_dim: int = 0
    _reward: Any
    _success: Any

    def __init__(self, render_mode: str | None = None, width: int = 480, height: int = 480, **kwargs: Any) -> None:
        utils.EzPickle.__init__(self, render_mode=render_mode, width=width, height=height, **kwargs)
        MujocoEnv.__init__(self, str(_ASSETS / self.xml), 10,
                           observation_space=Box(-np.inf, np.inf, (self.obs_dim,), np.float64),
                           default_camera_config=_CAMERA, render_mode=render_mode, width=width, height=height,
                           **kwargs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs = self._get_obs()
        self.do_simulation(action, self.frame_skip)
        next_obs = self._get_obs()
        reward = float(self._reward(obs, np.asarray(action, dtype=np.float64), next_obs))
        if self.render_mode == "human":
            self.render()
        return next_obs, reward, False, False, {"is_success": bool(self._success(next_obs))}

    def _arm_obs(self) -> np.ndarray:
        """Joint angles, joint velocities, fingertip xy and velocity xy, from the current joint state by the
        arm's forward kinematics (MuJoCo's body positions lag one substep behind ``qpos`` after a step)."""
        q, qd = self.data.qpos[:3], self.data.qvel[:3]
        return np.concatenate([q, qd, rules.fingertip(q), rules.jacobian(q) @ qd])

    def _arm_start(self, keep_clear: Any) -> np.ndarray:
        """A folded arm facing the table (elbow bent either way by 1.8-2.3 rad), redrawn until
        ``keep_clear(fingertip xy)`` holds."""
        r = self.np_random
        while True:
            side = r.choice([-1.0, 1.0])
            q = np.array([np.pi / 2 - 0.6 * side + r.uniform(-0.5, 0.5), side * r.uniform(1.8, 2.3),
                          side * r.uniform(0.0, 0.8)])
            if keep_clear(rules.fingertip(q)):
                return q


class ArmPushEnv(_ArmEnv):
    """Push the puck to the goal; success: puck centre within 5 cm of the goal centre.

    Reset: puck at x in [-0.2, 0.2], y in [0.3, 0.45]; goal 0.1-0.2 m from it in a uniform direction,
    0.2-0.5 m from the base and |x| <= 0.35 (rejection-sampled from the seeded generator).
    """

    xml, obs_dim = "arm_push.xml", 18
    _reward = staticmethod(rules.push_reward)
    _success = staticmethod(rules.push_success)

    def reset_model(self) -> np.ndarray:
        r = self.np_random
        puck = np.array([r.uniform(-0.2, 0.2), r.uniform(0.3, 0.45)])
        while True:
            angle, dist = r.uniform(-np.pi, np.pi), r.uniform(0.1, 0.2)
            goal = puck + dist * np.array([np.cos(angle), np.sin(angle)])
            if 0.2 <= np.linalg.norm(goal) <= 0.5 and abs(goal[0]) <= 0.35:
                break
        arm = self._arm_start(lambda tip: np.linalg.norm(tip - puck) > 0.1)
        self.set_state(np.concatenate([arm, puck]), np.zeros(self.model.nv))
        self.data.mocap_pos[0, :2] = goal
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        d = self.data
        arm = self._arm_obs()
        return np.concatenate([arm, d.qpos[3:5], d.qvel[3:5], d.mocap_pos[0, :2], d.qpos[3:5] - arm[6:8]]
                              ).astype(np.float64)


class ArmDrawerEnv(_ArmEnv):
    """Hook the handle and pull the drawer open; success: opening >= target opening - 1 cm.

    Reset: cabinet at x in [-0.15, 0.15], y in [0.42, 0.5]; drawer opening in [0, 0.03] m; target
    opening in [0.08, 0.15] m (the green marker shows where the drawer front must reach).
    """

    xml, obs_dim = "arm_drawer.xml", 17
    _reward = staticmethod(rules.drawer_reward)
    _success = staticmethod(rules.drawer_success)

    def reset_model(self) -> np.ndarray:
        r = self.np_random
        cabinet = np.array([r.uniform(-0.15, 0.15), r.uniform(0.42, 0.5), 0.0])
        opening, target = r.uniform(0.0, 0.03), r.uniform(0.08, 0.15)
        hook_y = cabinet[1] + rules.HOOK_OFFSET[1] - opening
        arm = self._arm_start(lambda tip: tip[1] < hook_y - 0.06)
        self.set_state(np.concatenate([arm, [opening]]), np.zeros(self.model.nv))
        self.data.mocap_pos[0] = cabinet
        self.data.mocap_pos[1] = cabinet + [0.0, rules.TARGET_OFFSET - target, 0.001]
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        d = self.data
        arm = self._arm_obs()
        cabinet, opening = d.mocap_pos[0, :2], d.qpos[3]
        hook = cabinet + rules.HOOK_OFFSET - [0.0, opening]
        target = cabinet[1] + rules.TARGET_OFFSET - d.mocap_pos[1, 1]
        return np.concatenate([arm, hook, [opening, d.qvel[3], target], hook - arm[6:8]]).astype(np.float64)
