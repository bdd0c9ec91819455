"""Paired evaluation: every policy's episodes rolled out in the world model and in MuJoCo from
the identical simulator states.

All policies share the same ``episodes`` seeded start states (common random
numbers), so differences between policies are not differences between starts.
The imagined side runs every episode of every policy in one batched world;
the ground truth runs in worker processes across the cores, overlapping with it.
In ``open_loop`` mode the model replays the ground-truth actions instead, which
separates model error from policy feedback.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wm_eval import tasks
from wm_eval.errors import WmEvalError
from wm_eval.evaluation.rollout import BatchRollout, MujocoBatch, run_episodes

__all__ = ["PolicyRollouts", "Evaluation", "start_states", "ground_truth", "imagine", "evaluate_policies", "MODES"]

MODES = ("closed_loop", "open_loop")


@dataclass(frozen=True)
class PolicyRollouts:
    """One policy's paired episodes: ``true[i]`` and ``imagined[i]`` start from the same state."""

    name: str
    source: str | None
    true: BatchRollout
    imagined: BatchRollout


@dataclass(frozen=True)
class Evaluation:
    """Everything a paired evaluation produced; reporting only reads this."""

    task: str
    model: str
    model_fingerprint: str
    seed: int
    mode: str
    horizon: int
    propagation: str
    start_seeds: np.ndarray  # [N]
    start_states: np.ndarray  # [N, state_dim]
    obs_scale: np.ndarray  # [obs_dim], the model's per-dimension observation std
    policies: list[PolicyRollouts]
    timings: dict[str, float] = field(default_factory=dict)


def start_states(task: str, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeds and simulator states of ``episodes`` seeded MuJoCo resets, derived from ``seed``."""
    seeds = np.random.SeedSequence(seed).generate_state(episodes) % (2**31 - 1)
    return seeds.astype(np.int64), tasks.reset_states(task, seeds.tolist())[1]


def _ground_truth_job(task: str, source: str, states: np.ndarray, horizon: int, device: str) -> BatchRollout:
    """Worker-process job: reload one policy from its source and roll it out in MuJoCo."""
    import torch

    from wm_eval.policy import load_policies

    torch.set_num_threads(1)
    env = tasks.make_env(task)
    (policy,) = load_policies(source, observation_space=env.observation_space, action_space=env.action_space,
                              task=task, device=device)
    return ground_truth(task, policy, states, horizon)


def ground_truth(task: str, policy: Any, states: np.ndarray, horizon: int) -> BatchRollout:
    """``policy``'s MuJoCo episodes from simulator ``states`` (at most ``horizon`` steps), batched."""
    world = MujocoBatch(task, len(states))
    try:
        return run_episodes(world, states, horizon, policies=[(policy, slice(None))])
    finally:
        world.close()


def imagine(model: Any, states: np.ndarray, horizon: int, *, seed: int, device: str = "cpu",
            propagation: str = "mean", **loop: Any) -> BatchRollout:
    """``len(states)`` episodes in the world model, all in one batch from simulator ``states``.

    ``loop`` is passed to :func:`~wm_eval.evaluation.rollout.run_episodes`: ``policies=[(policy, rows)]``
    (closed loop) or ``actions=`` and ``lengths=`` (open-loop replay), and ``progress=``.
    """
    from wm_eval.world_model_env import ImaginedBatch

    world = ImaginedBatch(len(states), task=model.task, model=model, device=device, propagation=propagation,
                          max_episode_steps=horizon)
    try:
        return run_episodes(world, states, horizon, seed=seed, **loop)
    finally:
        world.close()


def _workers(requested: int) -> int:
    return max(1, requested or (os.cpu_count() or 1))


def _imagine(model: Any, policies: Sequence[Any], states: np.ndarray, horizon: int, *, seed: int,
             mode: str, truth: list[BatchRollout], propagation: str, device: str, threads: int,
             progress: bool) -> BatchRollout:
    """Every episode of every policy in one imagined batch (policy ``i`` owns rows ``i*N:(i+1)*N``)."""
    import torch
    from tqdm.auto import tqdm

    n = len(states)
    all_states = np.concatenate([states] * len(policies))
    if mode == "closed_loop":
        loop: dict[str, Any] = {"policies": [(p, slice(i * n, (i + 1) * n)) for i, p in enumerate(policies)]}
    else:
        loop = {"actions": np.concatenate([t.actions for t in truth]),
                "lengths": np.concatenate([t.lengths for t in truth])}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tqdm(total=horizon, desc="imagined steps (all policies at once)", unit="step",
                  disable=not progress) as bar:
            return imagine(model, all_states, horizon, seed=seed, device=device, propagation=propagation,
                           progress=bar, **loop)
    finally:
        torch.set_num_threads(previous)


def evaluate_policies(*, task: str, model: Any, model_name: str, model_fingerprint: str, policies: Sequence[Any],
                      episodes: int, horizon: int, seed: int, mode: str = "closed_loop", propagation: str = "mean",
                      device: str = "cpu", workers: int = 0, progress: bool = True) -> Evaluation:
    """Roll every policy out in imagination and in MuJoCo from the same seeded start states.

    Args:
        task: ground-truth task id.
        model: a loaded :class:`~wm_eval.models.base.WorldModel` for ``task``.
        model_name, model_fingerprint: recorded in the result.
        policies: loaded policies (``.name``, ``.source``, ``.act``); a policy with a ``source``
            is re-loaded in worker processes for the ground truth, others run in this process.
        episodes: paired episodes per policy; horizon: steps per episode at most.
        seed: seed of the start states and of the model's randomness.
        mode: ``"closed_loop"`` (policies act in the model) or ``"open_loop"`` (the model replays
            the ground-truth actions).
        workers: processes for the ground truth (0: one per core).

    ``timings`` holds the wall time of the model rollouts and of the ground truth; with worker
    processes in closed loop the two overlap (the ground truth is timed from its start to its last
    episode).
    """
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise WmEvalError(f"unknown mode '{mode}': use closed_loop or open_loop")
    if episodes < 1 or horizon < 1:
        raise WmEvalError(f"episodes and horizon must be at least 1 (got {episodes} and {horizon})")
    if not policies:
        raise WmEvalError("no policies to evaluate")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise WmEvalError(f"policy names must be unique, got {names}")
    seeds, states = start_states(task, episodes, seed)
    n_pol, n_workers = len(policies), min(_workers(workers), len(policies))
    parallel = n_workers > 1 and all(p.source for p in policies)
    truth: list[Any] = [None] * n_pol
    timings: dict[str, float] = {}
    bar = tqdm(total=n_pol * episodes, desc="ground truth episodes", unit="ep", disable=not progress)
    t_truth = time.perf_counter()
    pool, futures = None, {}
    if parallel:
        pool = cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn"))
        futures = {pool.submit(_ground_truth_job, task, p.source, states, horizon, "cpu"): i
                   for i, p in enumerate(policies)}

    def finish_truth() -> None:
        start = t_truth if parallel else time.perf_counter()
        if parallel:
            for fut in cf.as_completed(futures):
                truth[futures[fut]] = fut.result()
                bar.update(episodes)
            pool.shutdown()
        else:
            for i, p in enumerate(policies):
                truth[i] = ground_truth(task, p, states, horizon)
                bar.update(episodes)
        bar.close()
        timings["ground_truth_rollouts"] = time.perf_counter() - start

    try:
        if mode == "open_loop":  # the model replays the true actions: they come first
            finish_truth()
        t_model = time.perf_counter()
        # While the ground-truth workers run, leave them their cores (oversubscribed OpenMP threads
        # slow the model tenfold).
        busy = n_workers if parallel and mode == "closed_loop" else 0
        imagined = _imagine(model, policies, states, horizon, seed=seed, mode=mode, truth=truth,
                            propagation=propagation, device=device, threads=max(1, (os.cpu_count() or 1) - busy),
                            progress=progress)
        timings["model_rollouts"] = time.perf_counter() - t_model
        if mode == "closed_loop":
            finish_truth()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    results = []
    for i, p in enumerate(policies):
        rows = slice(i * episodes, (i + 1) * episodes)
        part = BatchRollout(*(None if a is None else a[rows] for a in (
            imagined.observations, imagined.actions, imagined.rewards, imagined.terminations,
            imagined.truncations, imagined.lengths, imagined.uncertainty, imagined.sim_states)))
        results.append(PolicyRollouts(p.name, p.source, truth[i], part))
    return Evaluation(task=task, model=model_name, model_fingerprint=model_fingerprint, seed=seed, mode=mode,
                      horizon=horizon, propagation=propagation, start_seeds=seeds, start_states=states,
                      obs_scale=model.obs_scale.detach().cpu().numpy().astype(np.float64), policies=results,
                      timings=timings)
