"""One rollout loop for both worlds, over the public Gymnasium vector-env interface.

The imagined side is a :class:`~wm_eval.world_model_env.WorldModelVectorEnv` and the real side a
:class:`~wm_eval.ground_truth_env.MujocoVectorEnv`, both with autoreset disabled and started with
``reset(options={"state": states})`` (the model also with each row's ``episode_seeds``): what ``check_env`` and the vector-env
tests validate is what produces the numbers. :func:`run_episodes` drives either with policies acting
on slices of the batch (closed loop) or with fixed actions (open-loop replay).

Policies are called on fixed blocks of :data:`~wm_eval.policy.POLICY_BLOCK` rows (the running rows
of a slice, packed, the last block padded), so, as for the model, an action does not depend on how many
other episodes are running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wm_eval.policy import act_in_blocks
from wm_eval.types import BatchRollout

__all__ = ["run_episodes", "imagined_env", "real_env"]

def imagined_env(model: Any, num_envs: int, *, horizon: int, device: str = "cpu", propagation: str = "mean",
                 sample: bool = False) -> Any:
    """A ``WorldModelVectorEnv`` of ``num_envs`` rows for evaluation (autoreset disabled)."""
    from gymnasium.vector import AutoresetMode

    from wm_eval.world_model_env import WorldModelVectorEnv

    return WorldModelVectorEnv(num_envs, model=model, device=device, propagation=propagation, sample=sample,
                               max_episode_steps=horizon, autoreset_mode=AutoresetMode.DISABLED)


def real_env(task: str, num_envs: int, *, horizon: int) -> Any:
    """A ``MujocoVectorEnv`` of ``num_envs`` envs truncating at ``horizon``."""
    from wm_eval.ground_truth_env import MujocoVectorEnv

    return MujocoVectorEnv(num_envs, task=task, max_episode_steps=horizon)


def run_episodes(env: Any, start_states: np.ndarray, horizon: int, *,
                 policies: Sequence[tuple[Any, slice]] | None = None, actions: np.ndarray | None = None,
                 lengths: np.ndarray | None = None, episode_seeds: np.ndarray | None = None) -> BatchRollout:
    """Roll ``N = env.num_envs`` episodes from ``start_states`` for at most ``horizon`` steps.

    Args:
        env: a vector env with autoreset disabled taking ``reset(options={"state", "episode_seeds"})``.
        start_states: ``[N, state_dim]`` simulator states; both worlds start from the very same ones.
        horizon: step limit; the last step of an episode that reaches it is marked truncated.
        policies: ``(policy, rows)`` pairs: ``policy.act`` acts for those episodes (closed loop),
            on the rows still running only.
        actions: ``[N, horizon, act_dim]`` fixed actions (open-loop replay) instead of policies.
        lengths: with ``actions``, the number of valid actions per row; rows stop there.
        episode_seeds: ``[N]`` seeds of each row's random stream (the world model's draws; MuJoCo,
            deterministic, takes none).

    Returns:
        The padded episodes; ``sim_states`` when the env reports ``info["sim_state"]``,
        ``uncertainty`` when it reports ``info["uncertainty"]``.
    """
    n = env.num_envs
    if len(start_states) != n:
        raise ValueError(f"{len(start_states)} start states for {n} envs")
    options: dict[str, Any] = {"state": start_states}
    if episode_seeds is not None:
        options["episode_seeds"] = episode_seeds
    obs, info = env.reset(options=options)
    act_dim = env.single_action_space.shape[0]
    out_obs = np.zeros((n, horizon + 1, obs.shape[1]))
    out_obs[:, 0] = obs
    out_act = np.zeros((n, horizon, act_dim), dtype=np.float32)
    out_rew = np.zeros((n, horizon))
    out_term = np.zeros((n, horizon), dtype=bool)
    out_trunc = np.zeros((n, horizon), dtype=bool)
    out_unc: np.ndarray | None = None
    out_states: np.ndarray | None = None
    if "sim_state" in info:
        out_states = np.zeros((n, horizon + 1, info["sim_state"].shape[1]))
        out_states[:, 0] = info["sim_state"]
    run_lengths = np.zeros(n, dtype=np.int64)
    limit = np.full(n, horizon) if lengths is None else np.minimum(lengths, horizon)
    alive = limit > 0
    for t in range(horizon):
        if not alive.any():
            break
        act = np.zeros((n, act_dim), dtype=np.float32)
        if actions is not None:
            act[:] = actions[:, t]
        else:
            for policy, rows in policies or ():
                idx = np.arange(n)[rows][alive[rows]]
                if len(idx):
                    act[idx] = act_in_blocks(policy, obs[idx])
        obs, reward, terminated, truncated, info = env.step(act)
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
    return BatchRollout(out_obs, out_act, out_rew, out_term, out_trunc, run_lengths, out_unc, out_states)
