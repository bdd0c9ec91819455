"""The ``ray`` executor: the same work units as ``local``, on a Ray cluster, with the same numbers.

Placement:

* **World-model inference** runs in ``actors`` long-lived Ray actors. The model is shipped once, by
  value through the object store (a CPU copy, moved to ``device`` inside the actor, which asks for
  ``num_gpus=1`` when ``device`` is CUDA). Each actor call imagines a group of at most ``max_rows``
  episodes (whole units) in one batch.
* **MuJoCo ground truth** runs as one CPU task per unit (``num_cpus=1``); a Ray worker process keeps
  its MuJoCo envs across the tasks it runs.
* **Policies** go by value: the CPU-loaded policies are pickled once into the object store, so a
  cluster needs no shared filesystem (only ``wm_eval`` installed on every node). An actor on
  another device reloads each policy from its ``source`` (a file its node can read, or
  ``module:callable``) so that it acts on that device; in-memory policies stay on the CPU.

Numbers: every episode owns its random streams (:mod:`wm_eval.streams`) and the model and policies
are called on fixed-size row blocks, so grouping, placement and the order in which units finish
change nothing; nothing is seeded by worker or node. ``done`` is called as units finish (any order);
:func:`wm_eval.evaluate` merges results in plan order.

Faults: a task whose worker or node dies is retried up to ``max_retries`` times; an actor that dies
is restarted as often, and its pending calls retried. Errors raised by wm_eval itself (a policy
returning NaN, say) are not retried: they end the run with their own message. A run interrupted as
a whole resumes from ``out/units`` as locally.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from wm_eval.errors import WmEvalError
from wm_eval.evaluation.executor import Done, Job, check_sides, group_units, imagined_rollouts
from wm_eval.evaluation.plan import Unit
from wm_eval.evaluation.rollout import real_env, run_episodes
from wm_eval.ray_cluster import get, ray_module
from wm_eval.types import BatchRollout

__all__ = ["RayExecutor"]

# ---- code that runs on the cluster ------------------------------------------------------------------
_CACHE: dict[tuple, Any] = {}
"""A Ray worker's jobs (by object id) and MuJoCo envs, kept across the tasks it runs (one job at a time)."""


def _job(box: list[Any]) -> Job:
    """The job in ``box`` (``[ObjectRef]``, boxed so Ray does not resolve it per call), fetched once per process."""
    import ray

    key = ("job", box[0].hex())
    if key not in _CACHE:
        for old in [k for k in _CACHE if k[0] == "job"]:
            del _CACHE[old]
        _CACHE[key] = ray.get(box[0])
    return _CACHE[key]


def _ground_truth(box: list[Any], unit: Unit) -> tuple[BatchRollout, float, str]:
    """One unit's MuJoCo episodes; with the seconds they took and the node that ran them."""
    import ray
    import torch

    from wm_eval import tasks

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    job = _job(box)
    tasks.allow_task_code(job.task)  # checked by the driver that submitted this unit
    env_key = ("env", job.task, unit.size, job.horizon)
    if env_key not in _CACHE:
        _CACHE[env_key] = real_env(job.task, unit.size, horizon=job.horizon)
    rollout = run_episodes(_CACHE[env_key], job.states[unit.start:unit.stop], job.horizon,
                           policies=[(job.real_policies[unit.policy], slice(None))])
    return rollout, time.perf_counter() - t0, ray.get_runtime_context().get_node_id()


class _ModelActor:
    """Holds the world model (fetched once per evaluation) and imagines groups of units on ``device``."""

    def __init__(self, device: str) -> None:
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        # Ray shows an actor only its own GPU (CUDA_VISIBLE_DEVICES), always as index 0
        self.device, self.seconds = ("cuda" if device.startswith("cuda") else device), 0.0
        self.jobs: dict[str, Job] = {}

    def imagine(self, box: list[Any], units: list[Unit], *truth: tuple[BatchRollout, float, str]) -> Any:
        """``units``' imagined rollouts (one return value per unit), replaying ``truth`` in open loop.

        ``box`` is ``[job, model]`` object refs, boxed so that Ray does not fetch them for every call:
        the actor fetches them once (again after a restart, since the driver holds the references)."""
        t0 = time.perf_counter()
        out = imagined_rollouts(self._job(box), units, [t[0] for t in truth] if truth else None)
        self.seconds += time.perf_counter() - t0
        return out[0] if len(out) == 1 else tuple(out)

    def busy_seconds(self) -> float:
        return self.seconds

    def _job(self, box: list[Any]) -> Job:
        import ray

        from wm_eval import tasks

        key = box[0].hex()
        if key not in self.jobs:
            job = _job(box)
            tasks.allow_task_code(job.task)  # checked by the driver that submitted this call
            model = ray.get(box[1]).to(self.device)
            policies = list(job.real_policies)
            if self.device != "cpu":
                from wm_eval import tasks
                from wm_eval.policy import load_policies

                policies = [p if p.source is None else load_policies(p.source, task=job.task, device=self.device,
                                                                     **tasks.spaces(job.task))[0] for p in policies]
            self.jobs = {key: replace(job, model=model, policies=policies, device=self.device)}
        return self.jobs[key]


# ---- the driver side -------------------------------------------------------------------------------
class RayExecutor:
    """Runs units on the Ray cluster this process is connected to (see :func:`wm_eval.ray_cluster.connect`).

    Args:
        actors: model actors (each holds one copy of the model).
        actor_cpus: CPUs each actor reserves (its torch threads); ground-truth tasks take 1 CPU each.
        max_rows: episodes per actor call (whole units), bounding memory as locally.
        max_retries: retries of a task, restarts of an actor, after a worker or node dies.
    """

    def __init__(self, *, actors: int = 1, actor_cpus: float = 1.0, max_rows: int = 512, max_retries: int = 3) -> None:
        if actors < 1 or actor_cpus < 0 or max_retries < 0:
            raise WmEvalError(f"actors={actors}, actor_cpus={actor_cpus}, max_retries={max_retries}: "
                              "need at least 1 actor and non-negative CPUs and retries")
        self.actors, self.actor_cpus, self.max_retries = actors, actor_cpus, max_retries
        self.max_rows = max(1, max_rows)
        self.units_by_node: Counter[str] = Counter()
        """Ground-truth units per Ray node id in the last run (where the work went)."""

    def _check_cluster(self, ray: Any, device: str) -> None:
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if cpus < self.actors * self.actor_cpus + 1:
            raise WmEvalError(f"the Ray cluster has {cpus:g} CPUs: {self.actors} model actor(s) of {self.actor_cpus:g} "
                              "CPUs plus 1 CPU for ground truth do not fit: lower ray_actors, or add nodes")
        if device.startswith("cuda") and gpus < self.actors:
            raise WmEvalError(f"device={device} but the Ray cluster has {gpus:g} GPUs for {self.actors} model "
                              "actor(s): add GPU nodes, lower ray_actors, or use device=cpu")
        need = {"CPU": self.actor_cpus, **({"GPU": 1.0} if device.startswith("cuda") else {})}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(all(r.get(k, 0.0) >= v for k, v in need.items()) for r in nodes):  # else it waits forever
            largest = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
            raise WmEvalError(f"no Ray node has {' and '.join(f'{v:g} {k}' for k, v in need.items())} for a model "
                              f"actor (the largest has {largest:g} CPUs): lower RayExecutor(actor_cpus=...), use "
                              "device=cpu, or add a bigger node")

    def run(self, job: Job, units: Sequence[Unit], done: Done, *, imagined: bool = True,
            truth: bool = True) -> dict[str, float]:
        """Run ``units`` on the cluster and call ``done`` for each as it finishes.

        Returns busy seconds per side (summed over actors and tasks), the number of nodes that ran
        ground-truth units and the largest share of those units on one node."""
        ray = ray_module()
        check_sides(job, imagined, truth)
        if not units:
            return {"model_rollouts": 0.0, "ground_truth_rollouts": 0.0}
        self._check_cluster(ray, job.device)
        self.units_by_node = Counter()
        model = job.model if job.device == "cpu" else copy.deepcopy(job.model).to("cpu")
        box = [ray.put(replace(job, model=None, policies=())), ray.put(model)]
        gpu = 1 if job.device.startswith("cuda") else 0
        actor_cls = ray.remote(_ModelActor).options(num_cpus=self.actor_cpus, num_gpus=gpu,
                                                     max_restarts=self.max_retries,
                                                     max_task_retries=self.max_retries)
        actors = [actor_cls.remote(job.device) for _ in range(self.actors if imagined else 0)]
        truth_task = ray.remote(_ground_truth).options(num_cpus=1, max_retries=self.max_retries,
                                                      retry_exceptions=False)
        groups = group_units(units, self.max_rows)
        limit = 2 * self.actors * self.max_rows  # episodes in flight: keeps every CPU fed, bounds memory
        pending: dict[Any, tuple[Unit, str]] = {}
        parts: dict[str, dict[str, Any]] = {}
        truth_seconds, in_flight, next_group = 0.0, 0, 0
        try:
            # Placed before any ground-truth task is submitted, so no task takes the CPU an actor needs
            # (the actors would then wait for tasks to finish and land on whichever node freed first).
            get([a.busy_seconds.remote() for a in actors])
            while pending or next_group < len(groups):
                while next_group < len(groups) and (in_flight == 0 or in_flight + _rows(groups[next_group]) <= limit):
                    group = groups[next_group]
                    true = [truth_task.remote(box, u) for u in group] if truth else []
                    for u, ref in zip(group, true):
                        pending[ref] = (u, "true")
                    if imagined:
                        call = actors[next_group % len(actors)].imagine.options(num_returns=len(group))
                        imag = call.remote(box, group, *(true if job.mode == "open_loop" else []))
                        for u, ref in zip(group, [imag] if len(group) == 1 else imag):
                            pending[ref] = (u, "imagined")
                    in_flight += _rows(group)
                    next_group += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    unit, side = pending.pop(ref)
                    part = parts.setdefault(unit.id, {})
                    part[side] = get(ref)
                    if len(part) == imagined + truth:
                        rollout = None
                        if truth:
                            rollout, seconds, node = part["true"]
                            truth_seconds += seconds
                            self.units_by_node[node] += 1
                        done(unit, rollout, part.get("imagined"))
                        del parts[unit.id]
                        in_flight -= unit.size
            model_seconds = sum(ray.get([a.busy_seconds.remote() for a in actors]))
        finally:
            for ref, (_, side) in pending.items():
                if side == "true":
                    ray.cancel(ref)
            for actor in actors:
                ray.kill(actor)
        share = max(self.units_by_node.values(), default=0) / max(1, sum(self.units_by_node.values()))
        return {"model_rollouts": model_seconds, "ground_truth_rollouts": truth_seconds,
                "ray_nodes": float(len(self.units_by_node)), "ray_largest_node_share": share}


def _rows(group: Sequence[Unit]) -> int:
    return sum(u.size for u in group)

