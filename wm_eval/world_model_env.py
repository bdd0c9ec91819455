"""``WorldModel-v0``: a learned world model as a real ``gymnasium.Env`` and a batched ``VectorEnv``.

(Slightly over 400 lines: the shared batched core and its two Gymnasium faces, whose reset options and
infos must stay in step.)

Both classes share one batched core, :class:`ImaginedCore`, that holds the
model's state for ``N`` rollouts as torch tensors and advances them in
fixed-size blocks of rows, each row with its own random stream. Observation and action spaces are the ground-truth task's, so a
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
from wm_eval.streams import RowStreams

__all__ = ["BLOCK_ROWS", "ImaginedCore", "WorldModelEnv", "WorldModelVectorEnv"]

BLOCK_ROWS = 128
"""Rows per model call. Every call has exactly this many rows (packed running rows, the last block
padded), which makes a row's result independent of its neighbours and of the batch size. Measured on
this project's CPU (AMD EPYC Zen 4, AVX-512): float32 rows are bitwise equal at any position inside
blocks of 64, 128 or 256 rows; 128 costs the default evaluation (120 episodes at once) little padding,
and at batch 8192 about 5% against 256-row blocks (``examples/block_speed.py``, README)."""


class ImaginedCore:
    """``N`` imagined rollouts advanced together: the shared core of both environments.

    Each row owns its random stream (:class:`~wm_eval.streams.RowStreams`), and the model is always
    called on blocks of exactly ``block_rows`` rows (the rows still running, packed, the last block
    padded), so a row's numbers depend neither on the other rows nor on how many there are: on CPUs
    a matrix product rounds differently for different row counts, and chaotic dynamics amplify that.

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
        success: ``"auto"`` (``info["is_success"]``, the task's success rule applied to each imagined
            observation, where the task has one), ``"task"`` (the same, and an error for a task without a
            rule) or ``"off"``.
        max_episode_steps: truncation limit; default: the task's.
        max_uncertainty: truncate a rollout when its step uncertainty exceeds this.
        sample: sample next states from the members' Gaussians instead of taking their means.
        block_rows: rows per model call (:data:`BLOCK_ROWS`).
        allow_code: load a checkpoint that names a model class outside wm_eval, or whose task is a
            ``module:factory`` env (both run code named by a file).
    """

    def __init__(self, num_envs: int = 1, *, task: str | None = None, model: Any = None, device: str = "cpu",
                 propagation: str = "mean", reward: str = "learned", termination: str = "auto", success: str = "auto",
                 max_episode_steps: int | None = None, max_uncertainty: float | None = None,
                 sample: bool = False, block_rows: int = BLOCK_ROWS, allow_code: bool = False) -> None:
        if int(num_envs) < 1:
            raise WmEvalError(f"num_envs must be at least 1, got {num_envs}")
        if int(block_rows) < 1:
            raise WmEvalError(f"block_rows must be at least 1, got {block_rows}")
        if propagation not in PROPAGATIONS:
            raise WmEvalError(f"unknown propagation '{propagation}': use one of {', '.join(PROPAGATIONS)}")
        if reward not in ("learned", "task"):
            raise WmEvalError(f"reward must be 'learned' or 'task', got '{reward}'")
        if termination not in ("learned", "task", "auto"):
            raise WmEvalError(f"termination must be 'auto', 'learned' or 'task', got '{termination}'")
        if task is not None:
            tasks.allow_task_code(task)  # the caller named it
            tasks.get_task(task)  # unknown ids fail here, with a hint, before any model is loaded
        if isinstance(model, WorldModel):
            if task is not None and model.task != task:
                raise CheckpointError(f"the model was trained for {model.task}, not {task}")
            self.model = model.to(device)
        else:
            self.model = resolve_model(model, task=task, device=device, allow_code=allow_code,
                                       **(tasks.spaces(task) if task else {}))
        self.task = self.model.task
        if allow_code:  # a checkpoint's own task may be a module:factory env
            tasks.allow_task_code(self.task)
        self.spec = tasks.get_task(self.task)
        if reward == "task" and self.spec.reward is None:
            raise TaskError(f"{self.task} has no reward function of observations (it needs unobserved state): "
                            "use reward='learned'")
        if success not in ("auto", "task", "off"):
            raise WmEvalError(f"success must be 'auto', 'task' or 'off', got '{success}'")
        if success == "task" and self.spec.success is None:
            raise TaskError(f"{self.task} has no success rule (tasks with one: Pusher-v5, Reacher-v5 and the envs/ "
                            "arm tasks): use success='auto' or 'off'")
        self.success_rule = None if success == "off" else self.spec.success
        self.gt_env = tasks.make_env(self.task)
        self.num_envs, self.block_rows = int(num_envs), int(block_rows)
        self.device = torch.device(device)
        if termination == "auto":
            termination = "task" if self.spec.terminated is not None else "learned"
        self.propagation, self.reward_mode, self.termination_mode = propagation, reward, termination
        self.max_episode_steps = int(max_episode_steps or getattr(self.gt_env.spec, "max_episode_steps", None) or 1000)
        self.max_uncertainty = max_uncertainty
        self.sample = sample
        self.observation_space = self.gt_env.observation_space
        self.action_space = self.gt_env.action_space
        self._low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=self.device)
        self.streams = RowStreams(self.num_envs, num_members=self.model.num_members,
                                  noise_dim=self.model.obs_dim + 1 if sample else 0, step_members=propagation == "ts1")
        self.state: torch.Tensor | None = None  # [N, *state_shape], allocated at the first reset in the model's dtype
        self.obs = np.zeros((self.num_envs,) + self.observation_space.shape, dtype=np.float64)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.started = False
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

    def next_starts(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Start observations and stream seeds for autoreset, from a pool refilled in blocks."""
        if len(self._starts) < count:
            block = max(count, min(self.num_envs, 256))
            self._starts = np.concatenate([self._starts, self.mujoco_starts(block)])
        taken, self._starts = self._starts[:count], self._starts[count:]
        return taken, self._stream_seeds(count)

    def _stream_seeds(self, count: int) -> np.ndarray:
        return self.gt_env.unwrapped.np_random.integers(2**63 - 1, size=count, dtype=np.int64)

    def starts_from_states(self, states: np.ndarray, count: int) -> np.ndarray:
        """Observations at the given simulator states ``[count, state_dim]`` (one state is broadcast)."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim == 1:
            states = np.broadcast_to(states, (count, states.shape[0]))
        if states.shape[0] != count:
            raise SpaceMismatchError(f"options['state'] holds {states.shape[0]} states for {count} envs to reset")
        return np.stack([tasks.set_state(self.gt_env, s) for s in states])

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> np.ndarray:
        """Start rollouts: all, or those in ``options["reset_mask"]`` (``[N]`` bool).

        Start from ``options["state"]`` (simulator states), ``options["obs"]`` or seeded MuJoCo
        resets; ``options["episode_seeds"]`` (``[K]`` ints, one per row reset) seeds each row's
        random stream, else the streams are seeded from ``seed``.
        """
        options = dict(options or {})
        unknown = set(options) - {"state", "obs", "episode_seeds", "reset_mask"}
        if unknown:
            raise WmEvalError(f"unknown reset option(s) {sorted(unknown)}: use 'state', 'obs', 'episode_seeds' "
                              "or 'reset_mask'")
        mask = np.ones(self.num_envs, dtype=bool)
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise SpaceMismatchError(f"options['reset_mask'] has shape {mask.shape}; expected ({self.num_envs},)")
            if not self.started and not mask.all():
                raise WmEvalError("the first reset must reset every env: drop 'reset_mask'")
        count = int(mask.sum())
        self._starts = np.zeros((0,) + self.observation_space.shape)
        if seed is not None:
            self.gt_env.reset(seed=seed)  # seeds the stream of later (autoreset) starts and stream seeds
        if "state" in options:
            obs = self.starts_from_states(options["state"], count)
        elif "obs" in options:
            obs = np.asarray(options["obs"], dtype=np.float64).reshape(-1, *self.observation_space.shape)
            obs = np.array(np.broadcast_to(obs, (count,) + self.observation_space.shape))
            if not np.isfinite(obs).all():
                raise InvalidActionError("options['obs'] holds NaN or inf")
        else:
            obs = self.mujoco_starts(count, seed)
        if "episode_seeds" in options:
            seeds = np.asarray(options["episode_seeds"], dtype=np.int64).reshape(-1)
            if seeds.shape != (count,):
                raise SpaceMismatchError(f"options['episode_seeds'] holds {seeds.size} seeds for {count} envs to reset")
        else:
            seeds = self._stream_seeds(count)
        self.restart(mask, obs, seeds)
        self.started = True
        return self.obs.copy()

    def restart(self, mask: np.ndarray, obs: np.ndarray, seeds: np.ndarray) -> None:
        """Restart the rollouts in ``mask`` from observations ``obs`` and stream ``seeds`` (a row per True)."""
        rows = np.flatnonzero(mask)
        self.obs[rows] = obs
        self.steps[rows] = 0
        self.streams.reset(rows, seeds)
        index = torch.as_tensor(rows, device=self.device)
        start = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        size = self.block_rows  # in fixed-size blocks too: a latent encoder must not see the batch size
        padded = torch.cat([start, start[:1].expand(self._padding(len(rows)), -1)])
        with torch.inference_mode():
            fresh = torch.cat([self.model.initial_state(padded[lo:lo + size]).clone()
                               for lo in range(0, len(padded), size)])[:len(rows)]
        if self.state is None:
            self.state = torch.zeros((self.num_envs, *fresh.shape[1:]), dtype=fresh.dtype, device=self.device)
        self.state = self.state.index_copy(0, index, fresh.to(self.state.dtype))

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

    def _padding(self, rows: int) -> int:
        """Rows to add to ``rows`` to fill whole blocks of ``block_rows``."""
        return -rows % self.block_rows

    def _predict(self, rows: np.ndarray, action: torch.Tensor) -> dict[str, np.ndarray]:
        """The model's step for ``rows`` (indices ``[K]``), in padded blocks of ``block_rows``."""
        members, noise = self.streams.draw(rows)
        if self.propagation == "ts_inf":
            members = self.streams.initial[rows]
        size, pad = self.block_rows, self._padding(len(rows))
        padded = len(rows) + pad
        take = np.concatenate([rows, np.full(pad, rows[0])])
        if members is not None:
            members = np.concatenate([members, np.zeros(pad, dtype=np.int64)])
        if noise is not None:
            noise = np.concatenate([noise, np.zeros((pad, noise.shape[1]), dtype=np.float32)])
        index = torch.as_tensor(take, device=self.device)
        state, act = self.state.index_select(0, index), action.index_select(0, index)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("state", "obs", "reward", "term", "unc", "member")}
        with torch.inference_mode():
            for lo in range(0, padded, size):
                block = slice(lo, lo + size)
                kwargs: dict[str, Any] = {"propagation": self.propagation, "sample": self.sample}
                if members is not None:
                    kwargs["members"] = torch.as_tensor(members[block], device=self.device)
                if noise is not None:
                    kwargs["noise"] = torch.as_tensor(noise[block], device=self.device)
                new_state, pred = self.model.step(state[block], act[block], **kwargs)
                for key, value in zip(parts, (new_state, pred.next_obs, pred.reward, pred.terminated,
                                              pred.uncertainty, pred.member)):
                    parts[key].append(value.clone())
        k = len(rows)
        out = {key: torch.cat(values)[:k] for key, values in parts.items()}
        self.state = self.state.index_copy(0, index[:k], out.pop("state").to(state.dtype))
        return {"obs": out["obs"].double().cpu().numpy(), "reward": out["reward"].double().cpu().numpy(),
                "term": out["term"].cpu().numpy().astype(bool), "unc": out["unc"].float().cpu().numpy(),
                "member": out["member"].cpu().numpy()}

    def step(self, actions: Any, active: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance the ``active`` rollouts (default all) one step, no autoreset: obs, reward,
        terminated, truncated, info. Inactive rows keep their observation, with reward 0. A rollout
        whose state or reward turns non-finite is truncated there (``info["diverged"]``), its values
        passed through, so the divergence shows in the results and no policy is fed a NaN."""
        if not self.started:
            raise WmEvalError("call reset() before step()")
        action = self.check_actions(actions)
        active = np.ones(self.num_envs, dtype=bool) if active is None else active
        rows = np.flatnonzero(active)
        n = self.num_envs
        reward, terminated = np.zeros(n), np.zeros(n, dtype=bool)
        uncertainty, member = np.zeros(n, dtype=np.float32), np.full(n, -1, dtype=np.int64)
        if len(rows):
            out = self._predict(rows, action)
            prev_obs = self.obs[rows]
            self.obs[rows] = out["obs"]
            uncertainty[rows], member[rows] = out["unc"], out["member"]
            if self.reward_mode == "task":
                reward[rows] = self.spec.reward(prev_obs, action.cpu().numpy()[rows], out["obs"])
            else:
                reward[rows] = out["reward"]
            if self.termination_mode == "task":
                if self.spec.terminated is not None:
                    terminated[rows] = self.spec.terminated(out["obs"])
            else:
                terminated[rows] = out["term"]
        self.steps[rows] += 1
        too_uncertain = active & (uncertainty > self.max_uncertainty if self.max_uncertainty is not None
                                  else np.zeros(n, dtype=bool))
        diverged = active & ~(np.isfinite(self.obs).all(axis=1) & np.isfinite(reward))
        truncated = active & ((self.steps >= self.max_episode_steps) | too_uncertain | diverged)
        info = {"uncertainty": uncertainty, "member": member, "uncertainty_truncated": too_uncertain,
                "diverged": diverged}
        if self.success_rule is not None:
            info["is_success"] = np.asarray(self.success_rule(self.obs), dtype=bool)
        return self.obs.copy(), reward, terminated, truncated & ~terminated, info


class WorldModelEnv(gym.Env):
    """A learned world model as a single ``gymnasium.Env``; see :class:`ImaginedCore` for arguments.

    ``reset(seed=s)`` starts from the observation of ``gymnasium.make(task).reset(seed=s)``;
    ``reset(options={"state": full_simulator_state})`` or ``{"obs": observation}`` starts there.
    ``info["uncertainty"]`` is the step's ensemble disagreement and ``info["member"]`` the member
    used (-1 for the ensemble mean); on tasks with a success rule ``info["is_success"]`` applies it to the
    imagined observation. The env truncates at ``max_episode_steps`` itself.
    """

    metadata = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        self.batch = ImaginedCore(1, **kwargs)
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
        info = {key: value[0].item() for key, value in info.items()}  # uncertainty, member, ..., is_success
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def close(self) -> None:
        self.batch.close()


class WorldModelVectorEnv(VectorEnv):
    """``N`` imagined rollouts stepped in batched model calls (``gym.make_vec(..., "vector_entry_point")``).

    ``autoreset_mode``:

    * ``NEXT_STEP`` (default): the step after an episode ends returns the new start observation
      with reward 0 and no termination.
    * ``DISABLED``: an ended episode stays ended (it is no longer computed; its observation stays,
      its reward is 0) until ``reset(options={"reset_mask": mask, ...})`` restarts the rows in
      ``mask``. This is how :mod:`wm_eval.evaluation` rolls policies out.

    Truncation at ``max_episode_steps`` is handled here (make_vec adds no TimeLimit). Reset
    options: ``{"state": states[K, state_dim]}`` starts each reset env from its own simulator
    state, ``{"obs": obs[K, obs_dim]}`` from given observations, ``{"episode_seeds": [K]}`` seeds
    each row's random stream (member draws, samples), ``{"reset_mask": [N] bool}`` chooses the rows
    (``K`` = its count; default all). Other arguments as :class:`ImaginedCore`.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, *, autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **kwargs: Any) -> None:
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise WmEvalError(f"autoreset_mode {mode.value!r} is not supported: use next_step or disabled")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.batch = ImaginedCore(num_envs, **kwargs)
        self.num_envs = self.batch.num_envs
        self.task = self.batch.task
        self.single_observation_space = self.batch.observation_space
        self.single_action_space = self.batch.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._done = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        mask = np.asarray((options or {}).get("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        obs = self.batch.reset(seed, options)
        self._done[mask] = False
        return obs, {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        restarting = self._done.copy()
        obs, reward, terminated, truncated, info = self.batch.step(actions, active=~restarting)
        if restarting.any() and self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            self.batch.restart(restarting, *self.batch.next_starts(int(restarting.sum())))
            obs[restarting] = self.batch.obs[restarting]
            self._done[restarting] = False
        self._done |= terminated | truncated
        info = {**info, **{f"_{key}": np.ones(self.num_envs, dtype=bool) for key in info}}
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.batch.close()
