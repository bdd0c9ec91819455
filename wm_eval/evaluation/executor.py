"""Executors run work units. ``local`` (the default): the imagined side in this process, batched
over a group of units, the ground truth in spawned worker processes across the cores, overlapping
in closed loop (open loop replays the true actions, so the ground truth comes first).

``ray`` (:mod:`wm_eval.evaluation.ray_executor`) runs the same units on a Ray cluster.

An executor receives a :class:`Job` (everything a unit needs besides its episode range) and the
units still to run, and hands back each unit's rollouts through ``done(unit, true, imagined)``
(``local``: in plan order; ``ray``: as units finish). ``imagined=False`` or ``truth=False`` skips a
side (closed loop only), which is then ``None``. Because every episode owns its random streams and
the model and policies are called on fixed-size row blocks, how units are grouped, ordered or spread
over processes and nodes does not change any number.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_eval.errors import WmEvalError
from wm_eval.evaluation.plan import Unit
from wm_eval.evaluation.rollout import imagined_env, real_env, run_episodes
from wm_eval.types import BatchRollout

__all__ = ["Job", "LocalExecutor", "real_rollouts", "imagined_rollouts", "group_units", "check_sides", "open_executor",
           "EXECUTORS"]

Done = Callable[[Unit, "BatchRollout | None", "BatchRollout | None"], None]
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """What every unit of one evaluation shares.

    Attributes:
        task, model: the ground-truth task and the loaded world model.
        policies: loaded policies, indexed by ``Unit.policy`` (on ``device``, for the imagined side).
        real_policies: the same policies on the CPU, for the ground truth (which is then the same
            whatever ``device`` and however many workers).
        states: ``[episodes, state_dim]`` start states (episode ``j`` starts from ``states[j]``).
        horizon, seed, mode, propagation, sample, device: as in :func:`wm_eval.evaluate`.
    """

    task: str
    model: Any
    policies: Sequence[Any]
    real_policies: Sequence[Any]
    states: np.ndarray
    horizon: int
    seed: int
    mode: str
    propagation: str
    sample: bool
    device: str


def real_rollouts(task: str, policy: Any, states: np.ndarray, horizon: int) -> BatchRollout:
    """``policy``'s MuJoCo episodes from simulator ``states`` ``[K, state_dim]`` (at most ``horizon`` steps)."""
    env = real_env(task, len(states), horizon=horizon)
    try:
        return run_episodes(env, states, horizon, policies=[(policy, slice(None))])
    finally:
        env.close()


def imagined_rollouts(job: Job, units: Sequence[Unit], truth: Sequence[BatchRollout] | None = None
                      ) -> list[BatchRollout]:
    """The imagined episodes of ``units``, all in one batched world model (closed loop, or replaying
    ``truth``'s actions in open loop); one ``BatchRollout`` per unit."""
    bounds = np.cumsum([0] + [u.size for u in units])
    states = np.concatenate([job.states[u.start:u.stop] for u in units])
    seeds = np.concatenate([u.episode_seeds(job.seed) for u in units])
    loop: dict[str, Any]
    if truth is None:
        loop = {"policies": [(job.policies[u.policy], slice(a, b)) for u, a, b in zip(units, bounds[:-1], bounds[1:])]}
    else:
        loop = {"actions": np.concatenate([t.actions for t in truth]), "lengths": np.concatenate([t.lengths for t in truth])}
    env = imagined_env(job.model, len(states), horizon=job.horizon, device=job.device, propagation=job.propagation,
                       sample=job.sample)
    try:
        rollout = run_episodes(env, states, job.horizon, episode_seeds=seeds, **loop)
    finally:
        env.close()
    return [rollout.rows(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


_WORKER_CACHE: dict[tuple, Any] = {}
"""A ground-truth worker's policies and MuJoCo envs, kept across the units it runs (a pool lives for one
evaluation). An env restored with ``reset(options={"state": ...})`` is in exactly the state a fresh one
would be, so reuse changes no number (the worker-count tests compare against fresh in-process envs)."""


def _real_job(task: str, source: str, states: np.ndarray, horizon: int) -> BatchRollout:
    """Worker-process job: one unit's MuJoCo episodes, the policy reloaded from its source (once per worker)."""
    import torch

    from wm_eval import tasks
    from wm_eval.policy import load_policies

    torch.set_num_threads(1)
    tasks.allow_task_code(task)  # checked by the parent process
    policy_key, env_key = ("policy", task, source), ("env", task, len(states), horizon)
    if policy_key not in _WORKER_CACHE:
        (_WORKER_CACHE[policy_key],) = load_policies(source, task=task, device="cpu", **tasks.spaces(task))
    if env_key not in _WORKER_CACHE:
        _WORKER_CACHE[env_key] = real_env(task, len(states), horizon=horizon)
    return run_episodes(_WORKER_CACHE[env_key], states, horizon, policies=[(_WORKER_CACHE[policy_key], slice(None))])


class LocalExecutor:
    """Units in groups of at most ``max_rows`` episodes: per group, the ground truth of each unit in a
    pool of ``workers`` spawned processes (0: one per core; in-process when 1 or when a policy has
    no ``source`` to reload from), the imagined side of the whole group in one batch here.

    Memory is bounded by a group, whatever the number of episodes.
    """

    def __init__(self, *, workers: int = 0, max_rows: int = 512) -> None:
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self.max_rows = max(1, max_rows)

    def run(self, job: Job, units: Sequence[Unit], done: Done, *, imagined: bool = True,
            truth: bool = True) -> dict[str, float]:
        """Run ``units`` and call ``done`` for each, in order; returns wall seconds per side."""
        import time

        import torch

        check_sides(job, imagined, truth)
        timings = {"model_rollouts": 0.0, "ground_truth_rollouts": 0.0}
        parallel = truth and self.workers > 1 and all(job.policies[u.policy].source for u in units)
        pool = (cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
                if parallel and units else None)
        threads = torch.get_num_threads()
        finished = False
        try:
            for group in group_units(units, self.max_rows):
                t0 = time.perf_counter()
                futures = []
                if pool is not None:
                    futures = [pool.submit(_real_job, job.task, job.policies[u.policy].source,
                                           job.states[u.start:u.stop], job.horizon) for u in group]

                def collect() -> list[BatchRollout | None]:
                    if not truth:
                        return [None] * len(group)
                    if pool is not None:
                        out = [f.result() for f in futures]
                    else:
                        out = [real_rollouts(job.task, job.real_policies[u.policy], job.states[u.start:u.stop],
                                             job.horizon) for u in group]
                    timings["ground_truth_rollouts"] += time.perf_counter() - t0
                    return out

                true = collect() if job.mode == "open_loop" else None
                t1 = time.perf_counter()
                # Leave the ground-truth workers their cores: oversubscribed threads slow the model tenfold.
                busy = self.workers if pool is not None and true is None else 0
                torch.set_num_threads(max(1, (os.cpu_count() or 1) - busy))
                imag: list[BatchRollout | None] = [None] * len(group)
                if imagined:
                    imag = list(imagined_rollouts(job, group, true))  # type: ignore[arg-type]
                torch.set_num_threads(threads)
                timings["model_rollouts"] += time.perf_counter() - t1
                true = true if true is not None else collect()
                for unit, t, i in zip(group, true, imag):
                    done(unit, t, i)
            finished = True
        finally:
            torch.set_num_threads(threads)
            if pool is not None:  # the workers exit in the background; after an error, pending jobs are dropped
                pool.shutdown(wait=False, cancel_futures=not finished)
        return timings


def group_units(units: Sequence[Unit], max_rows: int) -> list[list[Unit]]:
    """Consecutive units, at most ``max_rows`` episodes per group (at least one unit per group)."""
    out: list[list[Unit]] = []
    for unit in units:
        if out and sum(u.size for u in out[-1]) + unit.size <= max_rows:
            out[-1].append(unit)
        else:
            out.append([unit])
    return out


def check_sides(job: Job, imagined: bool, truth: bool) -> None:
    if not (imagined or truth):
        raise ValueError("an executor run needs imagined=True or truth=True")
    if job.mode == "open_loop" and imagined and not truth:
        raise ValueError("open loop replays the ground truth's actions: it needs truth=True")


@contextlib.contextmanager
def open_executor(name: str, *, workers: int = 0, max_rows: int = 512, ray_address: str | None = None,
                  ray_actors: int = 1) -> Iterator[Any]:
    """The executor called ``name``: ``"local"`` (:class:`LocalExecutor`) or ``"ray"``
    (:class:`~wm_eval.evaluation.ray_executor.RayExecutor`, connected to ``ray_address`` as
    :func:`~wm_eval.ray_cluster.connect` says and disconnected on exit if it connected).
    Without Ray installed, ``"ray"`` raises a one-line :class:`~wm_eval.errors.WmEvalError` with the
    install hint."""
    if name == "local":
        yield LocalExecutor(workers=workers, max_rows=max_rows)
        return
    if name != "ray":
        raise WmEvalError(f"unknown executor '{name}': use {' or '.join(EXECUTORS)}")
    from wm_eval.evaluation.ray_executor import RayExecutor
    from wm_eval.ray_cluster import session

    executor = RayExecutor(actors=ray_actors, max_rows=max_rows)
    with session(ray_address):
        yield executor
