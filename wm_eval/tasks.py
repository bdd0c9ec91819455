"""Ground-truth MuJoCo tasks: one registry, full simulator state, termination, reward and pose.

(Slightly over 400 lines: the registry, the checks that admit any other MuJoCo env and the state capture
they rely on belong together; the rules themselves are in :mod:`wm_eval.gym_rules` and ``envs/``.)

Each task is one :class:`TaskSpec` entry in :data:`TASKS`. A spec knows how to
make the Gymnasium MuJoCo env, which parts of the observation decide
termination (the rule Gymnasium applies, written on observations so it also
works on imagined ones), the reward when it is a function of what is observed,
and how to turn an observation back into a drawable ``qpos``.

Any other task: ``task=`` also takes any registered Gymnasium id whose env is MuJoCo-based (Ant-v5,
Swimmer-v5, InvertedPendulum-v5, ...) and ``module:factory`` for a user's own env (a callable returning a
Gymnasium env whose ``unwrapped`` is a ``gymnasium.envs.mujoco.MujocoEnv``, or anything with ``model``,
``data`` and ``_get_obs()``). Such a task has no termination, reward or success rule (the world model's
learned heads decide; reports say so) and, when its observation starts with ``qpos`` minus the root's
position (Gymnasium's convention), a pose for drawing the imagined robot. On first use wm_eval checks
that a restored state replays 10 steps exactly, and refuses the task with one line when it does not.
Dict observations are refused: flatten them with ``gymnasium.wrappers.FlattenObservation`` in a factory.
Tasks that keep state in Python attributes (not in MuJoCo's state) cannot replay exactly: the check
names them.

Simulator state is the state of ``mujoco.mj_getState`` with the
``mjSTATE_INTEGRATION`` spec: the full physics (time, qpos, qvel, actuator
activations, plugin state) plus the solver warm start, controls, applied forces
and mocap, not just qpos/qvel. The full-physics spec alone is not enough for
exact replay: without the warm start, contact-rich tasks (Hopper, Walker2d)
drift by ~1e-15 from the first step. With it, a state restored with
:func:`set_state` reproduces the following steps bit for bit.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_eval import gym_rules as g
from wm_eval.envs import rules as arm
from wm_eval.errors import TaskError, did_you_mean
from wm_eval.gym_rules import PUSHER_SUCCESS_DISTANCE, REACHER_SUCCESS_DISTANCE

__all__ = [
    "TaskSpec",
    "TASKS",
    "get_task",
    "allow_task_code",
    "allow_any_task_code",
    "task_ids",
    "quiet_mujoco",
    "make_env",
    "get_state",
    "set_state",
    "frozen",
    "reset_states",
    "state_dim",
    "time_limit",
    "qpos_from_states",
    "qpos_from_observations",
    "mocap_from_states",
    "mocap_from_observations",
    "PUSHER_SUCCESS_DISTANCE",
    "REACHER_SUCCESS_DISTANCE",
]

ObsFn = Callable[[np.ndarray], np.ndarray]
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TaskSpec:
    """One ground-truth task.

    Attributes:
        id: versioned id, e.g. ``"Hopper-v5"``.
        gym_id: the id passed to ``gymnasium.make`` (our own tasks in ``envs/`` register one).
        terminated: batched termination rule on next observations, ``[..., obs_dim] -> [...] bool``;
            ``None`` when the task never terminates.
        reward: batched reward ``(obs, action, next_obs) -> [...]`` when it is a function of
            observations, else ``None`` (it then needs unobserved state, e.g. the root x).
        pose: ``(obs [..., obs_dim], root_x [...], mjModel) -> qpos [..., nq]`` for drawing.
        root_velocity_index: observation index of the root's forward velocity, integrated over
            time to place imagined walkers along x; ``None`` for fixed-base robots.
        make_kwargs: extra keyword arguments for ``gymnasium.make``.
        success: batched success rule on observations, ``[..., obs_dim] -> [...] bool``, so it
            applies to imagined states too; an episode succeeds when the rule holds at any of its
            steps. ``None``: the task defines no success.
    """

    id: str
    gym_id: str
    terminated: ObsFn | None
    reward: RewardFn | None
    pose: Callable[[np.ndarray, np.ndarray, Any], np.ndarray]
    root_velocity_index: int | None = None
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    success: ObsFn | None = None
    factory: Callable[..., Any] | None = None
    """``module:factory`` tasks: makes the env (instead of ``gymnasium.make(gym_id)``)."""
    pose_drawable: bool = True
    """``False`` when observations cannot be turned into a ``qpos`` (the imagined robot is not drawn)."""
    mocap: ObsFn | None = None
    """Mocap body positions ``[..., nmocap, 3]`` from observations (goals, fixtures placed per reset), for drawing."""


TASKS: dict[str, TaskSpec] = {
    spec.id: spec
    for spec in (
        TaskSpec("HalfCheetah-v5", "HalfCheetah-v5", None, None, g.planar_pose(8), root_velocity_index=8),
        TaskSpec("Hopper-v5", "Hopper-v5", g.hopper_terminated, None, g.planar_pose(5), root_velocity_index=5),
        TaskSpec("Walker2d-v5", "Walker2d-v5", g.walker_terminated, None, g.planar_pose(8), root_velocity_index=8),
        TaskSpec("Pusher-v5", "Pusher-v5", None, g.pusher_reward, g.pusher_pose, success=g.pusher_success),
        TaskSpec("Reacher-v5", "Reacher-v5", None, None, g.reacher_pose, success=g.reacher_success),
        TaskSpec("WmEval/ArmPush-v0", "WmEval/ArmPush-v0", None, arm.push_reward, arm.push_pose,
                 success=arm.push_success, mocap=arm.push_mocap),
        TaskSpec("WmEval/ArmDrawer-v0", "WmEval/ArmDrawer-v0", None, arm.drawer_reward, arm.drawer_pose,
                 success=arm.drawer_success, mocap=arm.drawer_mocap),
    )
}


def task_ids() -> list[str]:
    """All registered task ids."""
    return sorted(TASKS)


_OTHER: dict[str, TaskSpec] = {}
"""Specs of other Gymnasium MuJoCo ids and ``module:factory`` envs, made (and checked) on first use."""
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_ALLOWED: set[str] = set()
"""``module:factory`` task ids whose code may run in this process (see :func:`allow_task_code`)."""


def allow_task_code(task_id: str) -> None:
    """Consent to running a ``module:factory`` task's code in this process (``"*"``: any task). Entry
    points call it for a task the user named (``task=`` of evaluate, collect, record a baseline), and for
    a task read from a file (a baseline, a checkpoint, trajectories) only when the user passed
    ``allow_code``: a file naming code is code. Work processes call it for the job their parent checked.
    Only ``module:factory`` ids are recorded (anything else needs no consent)."""
    if isinstance(task_id, str) and _FACTORY.fullmatch(task_id):
        _ALLOWED.add(task_id)


def allow_any_task_code() -> None:
    """Consent to running any ``module:factory`` task's code in this process (``view allow_code=true``:
    the recording names the task)."""
    _ALLOWED.add("*")


def get_task(task_id: str) -> TaskSpec:
    """The spec of ``task_id``: a task of :data:`TASKS`, any registered Gymnasium MuJoCo id, or
    ``module:factory`` (see the module docstring). Anything else raises :class:`TaskError` with a hint."""
    import gymnasium as gym

    if isinstance(task_id, str) and task_id in TASKS:
        return TASKS[task_id]
    if isinstance(task_id, str) and (task_id in gym.registry or _FACTORY.fullmatch(task_id)):
        if task_id not in gym.registry and not _ALLOWED & {task_id, "*"}:  # checked before the cache too
            raise TaskError(f"task '{task_id}' names code to run (module:factory) that nobody consented to: if it "
                            "came from a file you trust pass allow_code=true; in Python call "
                            "wm_eval.tasks.allow_task_code(task) first")
        if task_id not in _OTHER:
            _OTHER[task_id] = _other_task(task_id)
        return _OTHER[task_id]
    hint = did_you_mean(str(task_id), [*TASKS, *gym.registry], cutoff=0.6)
    raise TaskError(f"unknown task '{task_id}': {hint}use a registered Gymnasium MuJoCo id (e.g. Ant-v5), "
                    f"module:factory for your own env, or one of {', '.join(task_ids())}")


def _other_task(task_id: str) -> TaskSpec:
    """The spec of a Gymnasium MuJoCo id or ``module:factory`` env, after checking that it is MuJoCo-based,
    has Box spaces and replays exactly from a restored state."""
    import gymnasium as gym

    factory = None
    if task_id not in gym.registry:
        module_name, _, attr = task_id.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise TaskError(f"task '{task_id}': cannot load {attr} from {module_name} ({e})") from None
    quiet_mujoco()
    env = _make_other(task_id, factory)
    try:
        u = env.unwrapped
        if not all(hasattr(u, a) for a in ("model", "data", "_get_obs")) or type(u.model).__name__ != "MjModel":
            raise TaskError(f"task '{task_id}' is not a MuJoCo env (its unwrapped env has no MjModel, MjData and "
                            "_get_obs()): wm_eval needs the simulator state for ground truth")
        for kind, space in (("observation", env.observation_space), ("action", env.action_space)):
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise TaskError(f"task '{task_id}' has {type(space).__name__} {kind}s of shape "
                                f"{getattr(space, 'shape', None)}: wm_eval needs flat Box spaces (wrap the env with "
                                "gymnasium.wrappers.FlattenObservation in a module:factory)")
        _check_replay(env, task_id)
        skip = _root_skip(env)
    finally:
        env.close()
    nq = int(u.model.nq)
    pose, velocity = _observed_qpos_pose(skip, nq), (None if not skip else nq - skip)
    return TaskSpec(task_id, task_id, None, None, pose, root_velocity_index=velocity, factory=factory,
                    pose_drawable=skip is not None)


def _make_other(task_id: str, factory: Callable[..., Any] | None) -> Any:
    """The env of a Gymnasium id or of a user's factory; what the factory raises or returns wrong is one line."""
    import gymnasium as gym

    if factory is None:
        try:
            return gym.make(task_id)
        except gym.error.Error as e:
            raise TaskError(f"task '{task_id}' cannot be made: {str(e).splitlines()[0]}") from None
    try:
        env = factory()
    except Exception as e:  # user code: reported as a task problem, with the original chained
        raise TaskError(f"task '{task_id}': the factory raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        ) from e
    if not isinstance(env, gym.Env):
        raise TaskError(f"task '{task_id}': the factory returned {type(env).__name__}, not a gymnasium.Env")
    return env


def _check_replay(env: Any, task_id: str, steps: int = 10) -> None:
    """A state restored with :func:`set_state` must replay ``steps`` seeded random steps exactly."""
    env.reset(seed=0)
    state = get_state(env)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    actions = [rng.uniform(np.maximum(low, -1.0), np.minimum(high, 1.0)).astype(env.action_space.dtype)
               for _ in range(steps)]
    runs = []
    for _ in range(2):
        set_state(env, state)
        runs.append(np.array([env.step(a)[0] for a in actions]))
    if not np.array_equal(runs[0], runs[1]):
        raise TaskError(f"task '{task_id}' does not replay exactly from a restored MuJoCo state (it keeps state "
                        "outside MuJoCo, e.g. in Python attributes): wm_eval cannot pair its episodes")


def _root_skip(env: Any) -> int | None:
    """How many leading ``qpos`` entries (the root's position) the observation leaves out, when it
    starts with the rest of ``qpos`` (Gymnasium's convention); ``None`` otherwise."""
    obs = env.unwrapped._get_obs()
    qpos = env.unwrapped.data.qpos
    for skip in range(min(3, len(qpos))):
        if len(obs) >= len(qpos) - skip and np.allclose(obs[: len(qpos) - skip], qpos[skip:]):
            return skip
    return None


def _observed_qpos_pose(skip: int | None, nq: int) -> Callable[[np.ndarray, np.ndarray, Any], np.ndarray]:
    """Pose for observations that start with ``qpos[skip:]``: the root x from ``root_x``, the root y (if
    skipped) and anything undrawable from the model's rest pose."""
    def pose(obs: np.ndarray, root_x: np.ndarray, model: Any) -> np.ndarray:
        qpos = np.broadcast_to(np.asarray(model.qpos0, dtype=np.float64), (*obs.shape[:-1], nq)).copy()
        if skip is None:
            return qpos
        qpos[..., skip:] = obs[..., : nq - skip]
        if skip >= 1:
            qpos[..., 0] = root_x
        return qpos

    return pose


def _mujoco_warning(message: str) -> None:
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


def quiet_mujoco() -> None:
    """Route MuJoCo's warnings through Python (so no ``MUJOCO_LOG.TXT`` is written) and drop the
    ``settotalmass`` deprecation that Gymnasium's MuJoCo v5 models trigger."""
    import mujoco

    os.environ.setdefault("MUJOCO_GL", "egl")
    mujoco.set_mju_user_warning(_mujoco_warning)


def make_env(task_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make`` the ground-truth env of ``task_id`` (with its TimeLimit), MuJoCo quietened."""
    import gymnasium as gym

    spec = get_task(task_id)
    quiet_mujoco()
    if spec.factory is not None:
        return spec.factory(**kwargs)
    return gym.make(spec.gym_id, **{**spec.make_kwargs, **kwargs})


def time_limit(task_id: str) -> int:
    """The task's time limit in steps (its Gymnasium ``max_episode_steps``), or 1000 when it has none."""
    env = make_env(task_id)
    env.close()
    return int(getattr(env.spec, "max_episode_steps", None) or 1000)


def spaces(task_id: str) -> dict[str, Any]:
    """``{"observation_space": ..., "action_space": ...}`` of the task's env (for checking checkpoints)."""
    env = make_env(task_id)
    env.close()
    return {"observation_space": env.observation_space, "action_space": env.action_space}


def _state_spec() -> int:
    import mujoco

    return int(mujoco.mjtState.mjSTATE_INTEGRATION)


def state_dim(env: Any) -> int:
    """Length of the simulator state vector of ``env``'s model."""
    import mujoco

    return int(mujoco.mj_stateSize(env.unwrapped.model, _state_spec()))


def get_state(env: Any) -> np.ndarray:
    """The simulator state of ``env`` (float64 vector, ``mjSTATE_INTEGRATION`` layout)."""
    import mujoco

    u = env.unwrapped
    state = np.empty(state_dim(env), dtype=np.float64)
    mujoco.mj_getState(u.model, u.data, state, _state_spec())
    return state


def set_state(env: Any, state: np.ndarray) -> np.ndarray:
    """Restore a simulator state into ``env`` and return the task observation there."""
    import mujoco

    u = env.unwrapped
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (state_dim(env),):
        raise TaskError(f"simulator state has shape {state.shape}; {env.spec.id if env.spec else 'this task'} "
                        f"expects ({state_dim(env)},): was it recorded for another task?")
    mujoco.mj_setState(u.model, u.data, state, _state_spec())
    mujoco.mj_forward(u.model, u.data)
    return u._get_obs().astype(np.float64)


@contextlib.contextmanager
def frozen(env: Any) -> Iterator[Any]:
    """Context in which ``env`` may be stepped freely; its simulator state is restored on exit."""
    saved = get_state(env)
    try:
        yield env
    finally:
        set_state(env, saved)


def reset_states(task_id: str, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded MuJoCo resets: observations ``[N, obs_dim]`` (float64) and full states ``[N, state_dim]``."""
    env = make_env(task_id)
    try:
        obs, states = [], []
        for seed in seeds:
            o, _ = env.reset(seed=int(seed))
            obs.append(o)
            states.append(get_state(env))
        return np.asarray(obs, dtype=np.float64), np.asarray(states)
    finally:
        env.close()


def qpos_from_states(env: Any, states: np.ndarray) -> np.ndarray:
    """``qpos`` rows ``[..., nq]`` of simulator states ``[..., state_dim]`` (time comes first)."""
    nq = env.unwrapped.model.nq
    return np.asarray(states)[..., 1 : 1 + nq]


def qpos_from_observations(task_id: str, env: Any, observations: np.ndarray, *, root_x0: float = 0.0) -> np.ndarray:
    """Drawable ``qpos [T, nq]`` for an observation sequence ``[T, obs_dim]`` (e.g. an imagined one).

    Walkers do not observe their root x; it is integrated from the observed root velocity,
    starting at ``root_x0`` (the true start position, so both robots start together).
    """
    spec = get_task(task_id)
    observations = np.asarray(observations, dtype=np.float64)
    root_x = np.zeros(len(observations))
    if spec.root_velocity_index is not None:
        velocity = observations[:, spec.root_velocity_index]
        root_x = root_x0 + np.concatenate([[0.0], np.cumsum(velocity[1:]) * env.unwrapped.dt])
    return spec.pose(observations, root_x, env.unwrapped.model)


def mocap_from_states(env: Any, states: np.ndarray) -> np.ndarray:
    """Mocap body positions ``[T, nmocap, 3]`` of simulator states ``[T, state_dim]``."""
    import mujoco

    u = env.unwrapped
    data = mujoco.MjData(u.model)
    out = np.empty((len(states), u.model.nmocap, 3))
    for t, state in enumerate(np.asarray(states, dtype=np.float64)):
        mujoco.mj_setState(u.model, data, state, _state_spec())
        out[t] = data.mocap_pos
    return out


def mocap_from_observations(task_id: str, env: Any, observations: np.ndarray) -> np.ndarray:
    """Mocap body positions ``[T, nmocap, 3]`` for observations ``[T, obs_dim]``: the task's rule, else
    the model's defaults (where a task without one keeps its mocap bodies)."""
    spec, model = get_task(task_id), env.unwrapped.model
    if spec.mocap is not None:
        return np.asarray(spec.mocap(np.asarray(observations, dtype=np.float64)))
    bodies = np.flatnonzero(model.body_mocapid >= 0)
    rest = np.empty((model.nmocap, 3))
    rest[model.body_mocapid[bodies]] = model.body_pos[bodies]
    return np.broadcast_to(rest, (len(observations), model.nmocap, 3)).copy()

