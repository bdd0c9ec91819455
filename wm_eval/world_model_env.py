"""``WorldModel-v0``: a learned world model as a real ``gymnasium.Env`` and a batched ``VectorEnv``.

Both classes share one batched core, :class:`ImaginedBatch`, that holds the
model's state for ``N`` rollouts as torch tensors and advances all of them in
one model call. Observation and action spaces are the ground-truth task's, so a
policy trained in MuJoCo acts here unchanged. Episodes start from seeded MuJoCo
reset states (the same ones ``gymnasium.make(task).reset(seed=...)`` gives), or
from a given simulator state or observation.

Example::

    import gymnasium as gym
    import wm_eval  # noqa: F401

    env = gym.make("WorldModel-v0", task="Hopper-v5")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["uncertainty"]  # ensemble disagreement of this step

    venv = gym.make_vec("WorldModel-v0", num_envs=1024, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from wm_eval import tasks
from wm_eval.errors import CheckpointError, InvalidActionError, SpaceMismatchError, TaskError, WmEvalError
from wm_eval.models.base import PROPAGATIONS, WorldModel
from wm_eval.models.checkpoint import resolve_model

__all__ = ["ImaginedBatch", "WorldModelEnv", "WorldModelVectorEnv"]


class ImaginedBatch:
    """``N`` imagined rollouts advanced together: the shared core of both environments.

    Args:
        num_envs: number of rollouts ``N``.
        task: ground-truth task id; default: the model's task (HalfCheetah-v5 for the default model).
        model: checkpoint folder, embedded task name or a loaded ``WorldModel``; default: the
            embedded model of ``task``.
        device: torch device of the model and the rollout tensors.
        propagation: ``"mean"`` (ensemble mean), ``"ts1"`` (random member each step) or
            ``"ts_inf"`` (one member per rollout, drawn at its reset).
        reward: ``"learned"`` or ``"task"`` (the task's own reward of observations, where it has one).
        termination: ``"task"`` (the task's own rule applied to each imagined next observation),
            ``"learned"`` (the model's termination head) or ``"auto"``: the task's rule where it has
            one, else learned. The rule is exact on true states and, on held-out data, flags the
            model's predicted next states with F1 1.0 on Hopper where the learned head reaches ~0.6
            (see the checkpoint's ``termination_f1*`` metrics).
        max_episode_steps: truncation limit; default: the task's.
        max_uncertainty: truncate a rollout when its step uncertainty exceeds this.
        sample: sample next states from the members' Gaussians instead of taking their means.
    """

    def __init__(self, num_envs: int = 1, *, task: str | None = None, model: Any = None, device: str = "cpu",
                 propagation: str = "mean", reward: str = "learned", termination: str = "auto",
                 max_episode_steps: int | None = None, max_uncertainty: float | None = None,
                 sample: bool = False) -> None:
        if int(num_envs) < 1:
            raise WmEvalError(f"num_envs must be at least 1, got {num_envs}")
        if propagation not in PROPAGATIONS:
            raise WmEvalError(f"unknown propagation '{propagation}': use one of {', '.join(PROPAGATIONS)}")
        if reward not in ("learned", "task"):
            raise WmEvalError(f"reward must be 'learned' or 'task', got '{reward}'")
        if termination not in ("learned", "task", "auto"):
            raise WmEvalError(f"termination must be 'auto', 'learned' or 'task', got '{termination}'")
        if task is not None:
            tasks.get_task(task)  # unknown ids fail here, with a hint, before any model is loaded
        if isinstance(model, WorldModel):
            if task is not None and model.task != task:
                raise CheckpointError(f"the model was trained for {model.task}, not {task}")
            self.model = model.to(device)
        else:
            self.model = resolve_model(model, task=task, device=device)
        self.task = self.model.task
        self.spec = tasks.get_task(self.task)
        if reward == "task" and self.spec.reward is None:
            raise TaskError(f"{self.task} has no reward function of observations (it needs unobserved state): "
                            "use reward='learned'")
        self.gt_env = tasks.make_env(self.task)
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        if termination == "auto":
            termination = "task" if self.spec.terminated is not None else "learned"
        self.propagation, self.reward_mode, self.termination_mode = propagation, reward, termination
        self.max_episode_steps = int(max_episode_steps or self.gt_env.spec.max_episode_steps)
        self.max_uncertainty = max_uncertainty
        self.sample = sample
        self.observation_space = self.gt_env.observation_space
        self.action_space = self.gt_env.action_space
        self._low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.state: torch.Tensor | None = None
        self.obs = np.zeros((self.num_envs,) + self.observation_space.shape, dtype=np.float64)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.members = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._starts = np.zeros((0,) + self.observation_space.shape)

    def close(self) -> None:
        """Release the ground-truth env used for start states."""
        self.gt_env.close()

    # ---- start states -------------------------------------------------------------------------
    def mujoco_starts(self, count: int, seed: int | None = None) -> np.ndarray:
        """Observations of ``count`` MuJoCo resets: seeds ``seed, seed + 1, ...`` when given (as
        Gymnasium's vector envs seed their sub-envs), else the ground-truth env's continuing stream."""
        starts = np.empty((count,) + self.observation_space.shape)
        for i in range(count):
            starts[i], _ = self.gt_env.reset(seed=None if seed is None else seed + i)
        return starts

    def _next_starts(self, count: int) -> np.ndarray:
        """Start observations for autoreset, from a pool refilled in blocks (no per-env work per step)."""
        if len(self._starts) < count:
            block = max(count, min(self.num_envs, 256))
            self._starts = np.concatenate([self._starts, self.mujoco_starts(block)])
        taken, self._starts = self._starts[:count], self._starts[count:]
        return taken

    def starts_from_states(self, states: np.ndarray) -> np.ndarray:
        """Observations at the given simulator states ``[N, state_dim]``."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim == 1:
            states = np.broadcast_to(states, (self.num_envs, states.shape[0]))
        if states.shape[0] != self.num_envs:
            raise SpaceMismatchError(f"options['state'] holds {states.shape[0]} states for {self.num_envs} envs")
        return np.stack([tasks.set_state(self.gt_env, s) for s in states])

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> np.ndarray:
        """Start every rollout: from ``options["state"]``, ``options["obs"]`` or seeded MuJoCo resets."""
        options = dict(options or {})
        unknown = set(options) - {"state", "obs"}
        if unknown:
            raise WmEvalError(f"unknown reset option(s) {sorted(unknown)}: use 'state' or 'obs'")
        self._starts = np.zeros((0,) + self.observation_space.shape)
        if seed is not None:
            self.gt_env.reset(seed=seed)  # seeds the stream of later (autoreset) starts
        self.generator.manual_seed(int(self.gt_env.unwrapped.np_random.integers(2**63 - 1)))
        if "state" in options:
            obs = self.starts_from_states(options["state"])
        elif "obs" in options:
            obs = np.asarray(options["obs"], dtype=np.float64).reshape(-1, *self.observation_space.shape)
            obs = np.array(np.broadcast_to(obs, (self.num_envs,) + self.observation_space.shape))
            if not np.isfinite(obs).all():
                raise InvalidActionError("options['obs'] holds NaN or inf")
        else:
            obs = self.mujoco_starts(self.num_envs, seed)
        self._restart(np.ones(self.num_envs, dtype=bool), obs)
        return self.obs.copy()

    def reset_to(self, states: np.ndarray, *, seed: int | None = 0) -> np.ndarray:
        """Start rollout ``i`` from simulator state ``states[i]`` (the evaluation loop's entry)."""
        return self.reset(seed, {"state": states})

    def _restart(self, mask: np.ndarray, obs: np.ndarray) -> None:
        """Restart the rollouts in ``mask`` from observations ``obs`` (one row per True entry)."""
        self.obs[mask] = obs
        self.steps[mask] = 0
        fresh = self.model.initial_state(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        members = torch.randint(self.model.num_members, (self.num_envs,), generator=self.generator,
                                device=self.device)
        if mask.all():
            self.state, self.members = fresh, members
        else:
            index = torch.as_tensor(np.flatnonzero(mask), device=self.device)
            self.state = self.state.index_copy(0, index, fresh)
            self.members = torch.where(torch.as_tensor(mask, device=self.device), members, self.members)

    # ---- stepping -----------------------------------------------------------------------------
    def check_actions(self, actions: Any) -> torch.Tensor:
        """Actions as a ``[N, act_dim]`` tensor, clipped to the control range; bad input raises."""
        array = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs,) + self.action_space.shape
        if array.shape != expected:
            raise SpaceMismatchError(f"actions have shape {array.shape}; {self.task} expects {expected}")
        if not np.isfinite(array).all():
            raise InvalidActionError(f"actions hold NaN or inf (rows {np.flatnonzero(~np.isfinite(array).all(-1))[:5].tolist()})")
        tensor = torch.as_tensor(array, device=self.device)
        return torch.clamp(tensor, self._low, self._high)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance all rollouts one step (no autoreset): obs, reward, terminated, truncated, info."""
        if self.state is None:
            raise WmEvalError("call reset() before step()")
        action = self.check_actions(actions)
        with torch.inference_mode():
            self.state, pred = self.model.step(self.state, action, propagation=self.propagation,
                                               members=self.members, generator=self.generator, sample=self.sample)
        prev_obs = self.obs
        self.obs = pred.next_obs.double().cpu().numpy()
        uncertainty = pred.uncertainty.float().cpu().numpy()
        if self.reward_mode == "task":
            reward = self.spec.reward(prev_obs, action.cpu().numpy(), self.obs)
        else:
            reward = pred.reward.double().cpu().numpy()
        if self.termination_mode == "task":
            terminated = (self.spec.terminated(self.obs) if self.spec.terminated is not None
                          else np.zeros(self.num_envs, dtype=bool))
        else:
            terminated = pred.terminated.cpu().numpy().astype(bool)
        self.steps += 1
        too_uncertain = (uncertainty > self.max_uncertainty if self.max_uncertainty is not None
                         else np.zeros(self.num_envs, dtype=bool))
        truncated = (self.steps >= self.max_episode_steps) | too_uncertain
        info = {"uncertainty": uncertainty, "member": pred.member.cpu().numpy(),
                "uncertainty_truncated": too_uncertain}
        return self.obs.copy(), np.asarray(reward, dtype=np.float64), terminated, truncated & ~terminated, info


class WorldModelEnv(gym.Env):
    """A learned world model as a single ``gymnasium.Env``; see :class:`ImaginedBatch` for arguments.

    ``reset(seed=s)`` starts from the observation of ``gymnasium.make(task).reset(seed=s)``;
    ``reset(options={"state": full_simulator_state})`` or ``{"obs": observation}`` starts there.
    ``info["uncertainty"]`` is the step's ensemble disagreement and ``info["member"]`` the member
    used (-1 for the ensemble mean). The env truncates at ``max_episode_steps`` itself.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.batch = ImaginedBatch(1, **kwargs)
        self.observation_space = self.batch.observation_space
        self.action_space = self.batch.action_space
        self.task = self.batch.task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs = self.batch.reset(seed, options)
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise SpaceMismatchError(f"action has shape {action.shape}; {self.task} expects {self.action_space.shape}")
        obs, reward, terminated, truncated, info = self.batch.step(action[None])
        info = {"uncertainty": float(info["uncertainty"][0]), "member": int(info["member"][0]),
                "uncertainty_truncated": bool(info["uncertainty_truncated"][0])}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def close(self) -> None:
        self.batch.close()


class WorldModelVectorEnv(VectorEnv):
    """``N`` imagined rollouts stepped in one batched model call (``gym.make_vec(..., "vector_entry_point")``).

    Autoreset is ``NEXT_STEP``: the step after an episode ends returns the new start observation
    with reward 0 and no termination. Truncation at ``max_episode_steps`` is handled here (make_vec
    adds no TimeLimit). ``reset(options={"state": states[N, state_dim]})`` starts each env from its
    own simulator state; ``{"obs": obs[N, obs_dim]}`` from given observations. Arguments as
    :class:`ImaginedBatch`.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        self.batch = ImaginedBatch(num_envs, **kwargs)
        self.num_envs = self.batch.num_envs
        self.task = self.batch.task
        self.single_observation_space = self.batch.observation_space
        self.single_action_space = self.batch.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._done = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._done[:] = False
        return self.batch.reset(seed, options), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        restarting = self._done.copy()
        obs, reward, terminated, truncated, info = self.batch.step(actions)
        if restarting.any():
            self.batch._restart(restarting, self.batch._next_starts(int(restarting.sum())))
            obs[restarting] = self.batch.obs[restarting]
            reward[restarting], terminated[restarting], truncated[restarting] = 0.0, False, False
            info["uncertainty"][restarting] = 0.0
        self._done = terminated | truncated
        info = {**info, **{f"_{key}": np.ones(self.num_envs, dtype=bool) for key in info}}
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.batch.close()
