"""Collect a dataset: a D4RL-style mix of behaviour policies and action-noise levels in a MuJoCo task.

Seeding (everything follows from ``seed``; the dataset records it): episode ``i``
gets the child ``np.random.SeedSequence(seed).spawn(episodes)[i]``, which spawns
two streams: the first gives the episode's reset seed (a uint32, stored as the
episode's ``seed``), the second seeds the episode's own generator for uniform
random actions and Gaussian action noise. An episode's start state, behaviour and
noise therefore do not depend on how many episodes are collected or on the batch
size, and the first ``n`` episodes of a larger dataset with the same seed are the
same episodes.

Behaviours: ``"random"`` (uniform actions; always with noise 0, since noise on
uniform actions only piles them up at the bounds), ``"zoo"`` (every policy of the
task's zoo manifest) and any other spec that :func:`wm_eval.policy.load_policies`
accepts (an SB3 ``.zip``, a manifest, ``module:callable``). Episode ``i`` uses
combination ``i mod K`` of the ``K`` (policy, noise scale) pairs, in the order
given. Noisy actions are ``clip(a + N(0, scale^2), low, high)``.

Speed: episodes run in lockstep batches, one per behaviour policy, so a policy is
called once per step for the batch's running episodes, in padded blocks of ``policy_block`` rows
(:func:`wm_eval.policy.act_in_blocks`): an episode's actions then do not depend on which episodes
run beside it, so the same seed gives the same episodes whatever ``episodes``, ``batch_size`` or the
executor. ``policy_block=None`` calls the policy on the whole lockstep batch instead, as collection
first did (the recipes of the embedded models trained on such data keep it): the data then depends
on the batch's composition and on the number of threads at the rounding level, which chaotic
dynamics amplify, so only the same seed, ``episodes``, ``batch_size`` and thread count give the same
data (measured: Walker2d's 728-episode expert recipe with ``OMP_NUM_THREADS=1`` instead of 2 changes
18 episodes; with blocks, both give the same data). ``executor="ray"`` runs the same batches
as Ray tasks (behaviour policies shipped by value), written in episode order: the same dataset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wm_eval.data.hdf5 import DatasetWriter
from wm_eval.errors import ConfigError, DatasetError, WmEvalError
from wm_eval.policy import POLICY_BLOCK, act_in_blocks
from wm_eval.ray_cluster import map_ordered, session
from wm_eval.tasks import allow_task_code, get_state, get_task, make_env
from wm_eval.types import Trajectory

__all__ = ["collect"]


@dataclass(frozen=True)
class _Behaviour:
    """A behaviour policy (a :class:`~wm_eval.policy.LoadedPolicy`); ``policy=None`` is uniform random."""

    name: str
    policy: Any


@dataclass(frozen=True)
class _EpisodePlan:
    index: int
    behaviour: int
    noise_scale: float
    reset_seed: int
    noise_seed: np.random.SeedSequence


def _load_behaviours(specs: Sequence[str], task: str, env: Any) -> list[_Behaviour]:
    behaviours = []
    for spec in specs:
        if spec == "random":
            behaviours.append(_Behaviour("random", None))
            continue
        from wm_eval.policy import load_policies, zoo_manifest

        if spec == "zoo":
            try:
                spec = str(zoo_manifest(task))
            except WmEvalError:
                raise DatasetError(f"task {task} has no policy zoo; use behaviour=[random] or pass policy files") from None
        loaded = load_policies(spec, observation_space=env.observation_space, action_space=env.action_space, task=task)
        behaviours.extend(_Behaviour(p.name, p) for p in loaded)
    return behaviours


def _plan(episodes: int, seed: int, behaviours: list[_Behaviour], noise_scales: Sequence[float]) -> list[_EpisodePlan]:
    combos = [(b, 0.0 if behaviour.policy is None else float(scale))
              for b, behaviour in enumerate(behaviours)
              for scale in ([0.0] if behaviour.policy is None else noise_scales)]
    plans = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(episodes)):
        reset_ss, noise_ss = child.spawn(2)
        b, scale = combos[i % len(combos)]
        plans.append(_EpisodePlan(i, b, scale, int(reset_ss.generate_state(1)[0]), noise_ss))
    return plans


def _rollout(envs: list[Any], behaviour: _Behaviour, plans: list[_EpisodePlan], max_steps: int,
             policy_block: int | None) -> list[Trajectory]:
    """Run the episodes of ``plans`` in lockstep, one env each; the policy acts on the running episodes
    in blocks of ``policy_block`` rows (``None``: on the whole batch every step)."""
    space = envs[0].action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    rngs = [np.random.default_rng(p.noise_seed) for p in plans]
    obs = np.stack([env.reset(seed=p.reset_seed)[0] for env, p in zip(envs, plans)]).astype(np.float64)
    record: list[dict[str, list[Any]]] = [
        {"obs": [obs[i].copy()], "state": [get_state(env)], "action": [], "reward": [], "term": [], "trunc": []}
        for i, env in enumerate(envs)
    ]
    active = np.ones(len(plans), dtype=bool)
    for t in range(max_steps):
        if behaviour.policy is None:
            base = np.stack([rng.uniform(low, high) if on else low for rng, on in zip(rngs, active)])
        elif policy_block is None:
            base = np.asarray(behaviour.policy.act(obs), dtype=np.float64)
        else:
            base = np.zeros((len(plans), *space.shape))
            base[active] = act_in_blocks(behaviour.policy, obs[active], policy_block)
        for i in np.flatnonzero(active):
            action = base[i]
            if plans[i].noise_scale > 0:
                action = action + rngs[i].normal(0.0, plans[i].noise_scale, size=action.shape)
            action = np.clip(action, low, high).astype(space.dtype)
            next_obs, reward, terminated, truncated, _ = envs[i].step(action)
            truncated = bool(truncated) or t + 1 == max_steps
            rec = record[i]
            rec["obs"].append(next_obs)
            rec["state"].append(get_state(envs[i]))
            rec["action"].append(action)
            rec["reward"].append(float(reward))
            rec["term"].append(bool(terminated))
            rec["trunc"].append(truncated)
            obs[i] = next_obs
            active[i] = not (terminated or truncated)
        if not active.any():
            break
    return [
        Trajectory(observations=np.asarray(rec["obs"], dtype=np.float64), actions=np.asarray(rec["action"]),
                   rewards=np.asarray(rec["reward"], dtype=np.float64), terminations=np.asarray(rec["term"]),
                   truncations=np.asarray(rec["trunc"]), sim_states=np.asarray(rec["state"]),
                   seed=plan.reset_seed, infos={"policy": behaviour.name, "noise_scale": plan.noise_scale})
        for rec, plan in zip(record, plans)
    ]


def _chunk(envs: list[Any], behaviours: list[_Behaviour], plans: list[_EpisodePlan], max_steps: int,
           policy_block: int | None, make: Any) -> list[Trajectory]:
    """The episodes of ``plans``, one lockstep batch per behaviour, in episode order (``make()`` adds envs)."""
    finished: dict[int, Trajectory] = {}
    for b, beh in enumerate(behaviours):
        group = [p for p in plans if p.behaviour == b]
        if not group:
            continue
        envs += [make() for _ in range(len(group) - len(envs))]
        rolled = _rollout(envs[: len(group)], beh, group, max_steps, policy_block)
        finished.update(zip((p.index for p in group), rolled))
    return [finished[i] for i in sorted(finished)]


_WORKER: dict[str, Any] = {}
"""A Ray worker's behaviours (by object id) and envs, kept across the chunks it collects."""


def _remote_chunk(task: str, box: list[Any], plans: list[_EpisodePlan], max_steps: int,
                  policy_block: int | None) -> list[Trajectory]:
    """Ray task: :func:`_chunk` with the behaviours in ``box`` (``[ObjectRef]``), fetched once per worker."""
    import ray

    allow_task_code(task)  # checked by the driver that submitted this chunk
    if _WORKER.get("key") != (task, box[0].hex()):
        for env in _WORKER.get("envs", []):
            env.close()
        _WORKER.update(key=(task, box[0].hex()), behaviours=ray.get(box[0]), envs=[])
    return _chunk(_WORKER["envs"], _WORKER["behaviours"], plans, max_steps, policy_block, lambda: make_env(task))


def default_behaviour(task: str) -> list[str]:
    """``["random", "zoo"]`` for a task with a shipped zoo, else ``["random"]``."""
    from wm_eval.policy import zoo_tasks

    return ["random", "zoo"] if task in zoo_tasks() else ["random"]


def collect(*, task: str, episodes: int, max_steps: int, seed: int, out: str | os.PathLike[str],
            behaviour: Sequence[str] | None = None, noise_scales: Sequence[float] = (0.0, 0.1, 0.3),
            overwrite: bool = False, config: dict[str, Any] | None = None, progress: bool = True,
            batch_size: int = 32, policy_block: int | None = POLICY_BLOCK, executor: str = "local",
            ray_address: str | None = None) -> Path:
    """Roll out behaviour policies in ``task`` and write a dataset folder at ``out`` (see :mod:`wm_eval.data.hdf5`).

    Args:
        task: ground-truth task id, e.g. ``"Hopper-v5"``.
        episodes: number of episodes (>= 1).
        max_steps: steps per episode at most (>= 1); the env's own time limit also truncates.
        seed: seed of the resets, the behaviour mix and the action noise (see the module docstring).
        out: dataset folder to write.
        behaviour: behaviour policy specs: ``"random"``, ``"zoo"``, a policy path or ``module:callable``
            (``None``: random, plus the task's zoo where it has one).
        noise_scales: Gaussian action-noise standard deviations mixed over episodes.
        overwrite: replace an existing dataset at ``out``.
        config: resolved configuration recorded in the dataset metadata.
        progress: show a progress bar over episodes.
        batch_size: episodes run in lockstep per behaviour policy; does not change the data (with a
            ``policy_block``).
        policy_block: rows per behaviour-policy call (see the module docstring); ``None``: the whole
            lockstep batch, which makes the data depend on ``episodes`` and ``batch_size``.
        executor: ``"local"`` (this process) or ``"ray"`` (one Ray task per batch, on the cluster at
            ``ray_address``; see :func:`wm_eval.ray_cluster.connect`); the same dataset either way.

    Returns:
        The dataset folder. Finished episodes are committed as they complete, so an interrupted
        run leaves a readable dataset of the episodes finished so far.
    """
    allow_task_code(task)  # the caller named it
    get_task(task)
    for name, value in (("episodes", episodes), ("max_steps", max_steps), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if policy_block is not None and (not isinstance(policy_block, (int, np.integer)) or policy_block < 1):
        raise ConfigError(f"policy_block must be a positive integer or null, got {policy_block!r}")
    if behaviour is None:
        behaviour = default_behaviour(task)
    if not behaviour:
        raise ConfigError("behaviour is empty; pass at least one of random, zoo, a policy path or module:callable")
    if not noise_scales or any(not np.isfinite(s) or s < 0 for s in noise_scales):
        raise ConfigError(f"noise_scales must be a non-empty list of finite values >= 0, got {list(noise_scales)}")

    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{executor}': use local or ray")
    envs = [make_env(task)]
    try:
        behaviours = _load_behaviours(behaviour, task, envs[0])
        plans = _plan(episodes, seed, behaviours, noise_scales)
        chunk = batch_size * len(behaviours)
        chunks = [plans[begin : begin + chunk] for begin in range(0, episodes, chunk)]
        with contextlib.ExitStack() as stack:
            ray = stack.enter_context(session(ray_address)) if executor == "ray" else None
            writer = stack.enter_context(DatasetWriter(out, task=task, observation_space=envs[0].observation_space,
                                                       action_space=envs[0].action_space, config=config, seed=seed,
                                                       overwrite=overwrite))
            bar = stack.enter_context(tqdm(total=episodes, desc=f"collect {task}", unit="episode",
                                           disable=not progress))

            def write(_: int, trajectories: list[Trajectory]) -> None:
                writer.extend(trajectories)
                bar.update(len(trajectories))

            if ray is None:
                for i, part in enumerate(chunks):
                    write(i, _chunk(envs, behaviours, part, max_steps, policy_block, lambda: make_env(task)))
            else:
                box = [ray.put(behaviours)]
                window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
                map_ordered(_remote_chunk, [(task, box, part, max_steps, policy_block) for part in chunks],
                            window=window, on_result=write)
        return writer.path
    finally:
        for env in envs:
            env.close()
