"""``wm_eval.evaluate``: the typed entry point of a paired evaluation.

(Slightly over 400 lines: argument checks, the resume identity and its fingerprints, and the assembly of
the result all belong to the one entry point; rounds, estimators and statistics live beside it.)

    import wm_eval

    ev = wm_eval.evaluate("HalfCheetah-v5", ["zoo"], episodes=10, horizon=1000, seed=0)
    ev.policy("ppo_0300k").statistics["return"]   # {"imagined": {...}, "true": {...}}
    wm_eval.report(ev, "runs/my-eval")            # report.json/.md, plots, trajectories.h5, rollouts.rrd
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wm_eval import __version__
from wm_eval.errors import ConfigError, WmEvalError
from wm_eval.evaluation import summary as S
from wm_eval.evaluation.executor import EXECUTORS, Job, open_executor
from wm_eval.evaluation.budget import FIRST, add_timings, check_budget, spend
from wm_eval.evaluation.plan import Unit, plan, start_seeds
from wm_eval.evaluation.statistics import statistics_for
from wm_eval.evaluation.units import UnitResult, load_unit, reduce_unit, save_unit
from wm_eval.fileio import atomic_write_text
from wm_eval.policy import POLICY_BLOCK
from wm_eval.streams import BOOTSTRAP, policy_key
from wm_eval.types import Evaluation, PairedEpisode, PolicyResult

__all__ = ["evaluate", "load_policy_list", "check_device", "MODES", "TRAJECTORIES", "PRECISIONS", "AUTO_ALL_STEPS"]

MODES = ("closed_loop", "open_loop")
TRAJECTORIES = ("auto", "all", "selected", "summary")
PRECISIONS = ("float32", "bfloat16")
AUTO_ALL_STEPS = 400_000
"""``trajectories="auto"`` keeps every episode up to this many paired steps (about 200 MB of HDF5)."""


def load_policy_list(specs: Sequence[Any], *, task: str, device: str = "cpu") -> list[Any]:
    """Every policy named by ``specs`` (``"zoo"`` is the task's zoo; objects pass through), checked
    against the task's spaces."""
    from wm_eval.policy import load_policies
    from wm_eval.tasks import spaces

    task_spaces = spaces(task)
    policies: list[Any] = []
    for spec in specs:
        policies += load_policies(f"zoo:{task}" if spec == "zoo" else spec, task=task, device=device, **task_spaces)
    return policies


def _policy_fingerprint(policy: Any) -> str | None:
    """SHA-256 of the file behind a policy (its zip, or the module file of ``module:callable``), so a
    resumed run notices a replaced policy; ``None`` for a policy passed in memory."""
    import importlib.util

    from wm_eval.fileio import sha256
    from wm_eval.policy import policy_file

    if "scripted" in policy.metadata:  # a scripted expert: its knobs and the experts' code, not the whole manifest
        import hashlib
        import json

        from wm_eval.envs import experts

        knobs = json.dumps([policy.metadata["scripted"], sha256(Path(experts.__file__))], sort_keys=True)
        return hashlib.sha256(knobs.encode()).hexdigest()
    if policy.source == "random":  # wm_eval's own RandomPolicy
        return sha256(Path(__file__).resolve().parents[1] / "policy.py")
    file = policy_file(policy)
    if file is None and policy.source is not None and ":" in policy.source:  # module:callable
        found = importlib.util.find_spec(policy.source.partition(":")[0])
        file = Path(found.origin) if found is not None and found.origin else None
    return sha256(file) if file is not None and file.is_file() else None


def _seed(seed: int, name: str) -> int:
    """The bootstrap seed of a policy's intervals: from its name, not its place in the list."""
    return int(np.random.SeedSequence(seed, spawn_key=(BOOTSTRAP, policy_key(name))).generate_state(1)[0])


def _check_arguments(*, mode: str, trajectories: str, propagation: str, episodes: int, horizon: int, chunk: int,
                     seed: int, bootstrap: int, max_batch: int, workers: int, device: str, local: bool) -> None:
    """Every argument checked before anything runs or is written: one-line errors."""
    from wm_eval.models.base import PROPAGATIONS

    if mode not in MODES:
        raise WmEvalError(f"unknown mode '{mode}': use closed_loop or open_loop")
    if trajectories not in TRAJECTORIES:
        raise WmEvalError(f"unknown trajectories '{trajectories}': use {', '.join(TRAJECTORIES)}")
    if propagation not in PROPAGATIONS:
        raise WmEvalError(f"unknown propagation '{propagation}': use one of {', '.join(PROPAGATIONS)}")
    small = {"episodes": episodes, "horizon": horizon, "chunk": chunk, "bootstrap": bootstrap, "max_batch": max_batch}
    bad = [f"{k}={v}" for k, v in small.items() if int(v) < 1]
    if bad or seed < 0 or workers < 0:
        bad += [f"seed={seed}"] * (seed < 0) + [f"workers={workers}"] * (workers < 0)
        raise WmEvalError(f"{', '.join(bad)}: sizes must be at least 1, seed and workers at least 0")
    check_device(device, local=local)


def check_device(device: str, *, local: bool = True) -> None:
    """A one-line error for a torch device that does not exist here (``cuda`` without CUDA, a typo);
    ``local=False`` (a Ray cluster's actors use it) checks the name only."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise WmEvalError(f"unknown device '{device}': use cpu, cuda or cuda:N") from None
    if local and kind == "cuda" and not torch.cuda.is_available():
        raise WmEvalError(f"device={device} but torch sees no CUDA device here: use device=cpu")


def _weights_hash(model: Any) -> str:
    """A fingerprint of an in-memory model's weights (16 hex digits of a SHA-256 over its state dict)."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        tensor = value.detach().cpu()
        digest.update((tensor.double() if tensor.is_floating_point() else tensor).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _identity(job: dict[str, Any]) -> str:
    return json.dumps(job, sort_keys=True, default=str)


def _unit_store(out: Path | None, identity: dict[str, Any], resume: bool) -> Path | None:
    """``out/units`` checked for (or prepared for) this evaluation; ``None`` without ``out``."""
    if out is None:
        return None
    folder = out / "units"
    plan_file = folder / "plan.json"
    if plan_file.exists():
        if not resume:
            raise ConfigError(f"{folder} holds units of an earlier run: pass resume=true to continue it, or "
                              "choose another out")
        if json.loads(plan_file.read_text()) != json.loads(_identity(identity)):
            raise ConfigError(f"{folder} was written by a different evaluation (other policies, model, seed or "
                              "settings): resume needs the same ones, or choose another out")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, _identity(identity))
    return folder


def _select(values: dict[str, np.ndarray]) -> list[int]:
    """The worst episode (largest |imagined - true| return) and a typical one (median gap)."""
    gap = np.abs(values["imagined_return"] - values["true_return"])
    worst = int(np.argmax(gap))
    typical = int(np.argsort(gap, kind="stable")[(len(gap) - 1) // 2])
    return sorted({worst, typical})


def evaluate(task: str, policies: Sequence[Any], *, model: Any = None, episodes: int = 10, horizon: int | None = None,
             seed: int = 0, mode: str = "closed_loop", propagation: str = "mean", sample: bool = False,
             device: str = "cpu", gamma: float = 0.995, chunk: int = 10, workers: int = 0,
             out: str | Path | None = None, resume: bool = False, trajectories: str = "auto",
             bootstrap: int = 1000, max_batch: int = 512, precision: str = "float32",
             executor: str = "local", ray_address: str | None = None, ray_actors: int = 1,
             real_episodes: int | None = None, real_budget: int | None = None, confidence: float = 0.95,
             allow_code: bool = False,
             progress: bool = True) -> Evaluation:
    """Roll every policy out in the world model and in MuJoCo from the same seeded start states.

    Args:
        task: ground-truth task id (``"Hopper-v5"``).
        policies: SB3 ``.zip`` paths, zoo manifests, ``"zoo"``, ``"module:callable"`` or loaded
            policy objects (with ``predict(obs)`` or ``act(obs)``).
        model: checkpoint folder, embedded task name, ``"module:factory"`` returning a ``WorldModel``,
            or a loaded ``WorldModel`` (default: embedded).
        episodes: paired episodes per policy; horizon: steps per episode at most (``None``: the task's
            time limit, 1000 for a task without one).
        seed: seed of the start states (shared by all policies) and of each episode's model streams.
        mode: ``"closed_loop"`` (policies act in the model) or ``"open_loop"`` (the model replays
            the ground-truth actions, separating model error from policy feedback).
        propagation: ``"mean"``, ``"ts1"`` or ``"ts_inf"``; sample: sample from the members' Gaussians.
        device: torch device of the world model and of the policies acting in it; the ground truth
            always runs its policies on the CPU (so it is the same on any device and worker count).
        gamma: discount of ``discounted_return``.
        chunk: episodes per work unit (results do not depend on it).
        workers: ground-truth processes (0: one per core).
        out: folder for finished units (``out/units``), so a killed run resumes with ``resume=True``.
        trajectories: which paired episodes are kept whole: ``"all"``, ``"selected"`` (per policy the
            worst and a typical one, re-rolled from their seeds at the end), ``"summary"`` (none), or
            ``"auto"`` (all up to :data:`AUTO_ALL_STEPS` paired steps, else selected).
        bootstrap: bootstrap resamples for intervals.
        max_batch: episodes imagined at once (whole units); bounds memory, changes no number.
        precision: the world model's layer arithmetic, ``"float32"`` or ``"bfloat16"`` (about 3x
            faster at large batches on CPUs with AVX512-BF16; ``examples/precision.py`` measures
            whether it changes verdicts).
        executor: ``"local"`` (this machine: ``workers`` processes) or ``"ray"`` (a Ray cluster:
            model actors and ground-truth tasks; same numbers, see
            :mod:`wm_eval.evaluation.ray_executor`).
        ray_address: the cluster (default ``RAY_ADDRESS`` or one started with ``ray start``;
            ``"local"``: a private Ray on this machine's CPUs); ray_actors: model actors.
        real_episodes: run only the first ``real_episodes`` (>= 2) episodes of each policy in MuJoCo
            too; the rest are imagined only (closed loop). Fidelity numbers (errors, ranking metrics,
            trust AUROC, horizon error) then use the paired episodes, and each policy's
            ``true_estimate`` combines both by PPI++. Default: every episode in both worlds.
        real_budget: instead of ``real_episodes``: ``K`` real episodes in total, placed by wm_eval (2 per
            policy, the rest to the contenders for first place; :mod:`~wm_eval.evaluation.budget`).
        confidence: level of the ``true_estimate`` intervals.
        allow_code: load a checkpoint whose spec names a model class outside wm_eval (its module is
            imported, which runs code: only for checkpoints you trust).
        progress: show progress bars.

    Returns:
        An :class:`~wm_eval.types.Evaluation`; an episode's numbers depend only on ``seed``, the
        policy's name and the episode index.
    """
    from tqdm.auto import tqdm

    from wm_eval import tasks
    from wm_eval.models.base import WorldModel
    from wm_eval.models.checkpoint import model_identity, resolve_model
    from wm_eval.models.user import code_fingerprint
    from wm_eval.world_model_env import BLOCK_ROWS

    if horizon is None:
        tasks.allow_task_code(task)  # the caller named it
        horizon = tasks.time_limit(task)
    if precision not in PRECISIONS:
        raise WmEvalError(f"unknown precision '{precision}': use {' or '.join(PRECISIONS)}")
    if executor not in EXECUTORS:
        raise WmEvalError(f"unknown executor '{executor}': use {' or '.join(EXECUTORS)}")
    _check_arguments(mode=mode, trajectories=trajectories, propagation=propagation, episodes=episodes,
                     horizon=horizon, chunk=chunk, seed=seed, bootstrap=bootstrap, max_batch=max_batch,
                     workers=workers, device=device, local=executor == "local")
    here = device if executor == "local" else "cpu"  # on Ray the actors put the model and policies on device
    if not policies:
        raise WmEvalError("no policies to evaluate")
    n_real = _check_real(real_episodes, episodes=episodes, mode=mode, confidence=confidence)
    if real_budget is not None:
        if real_episodes is not None:
            raise WmEvalError("give real_episodes or real_budget, not both")
        n_real = min(FIRST, episodes)
    if resume and out is None:
        raise WmEvalError("resume=True needs out= (the folder holding the finished units)")
    # Connect first (Ray may be missing or unreachable), so that a failure writes nothing.
    with open_executor(executor, workers=workers, max_rows=max_batch, ray_address=ray_address,
                       ray_actors=ray_actors) as runner:
        tasks.allow_task_code(task)  # the caller named it
        spec = tasks.get_task(task)
        started = time.perf_counter()
        if isinstance(model, WorldModel):
            world, name, fingerprint = model.to(here), f"in-memory:{model.task}", _weights_hash(model)
            fingerprint += "-" + code_fingerprint(type(model))  # an in-memory model's class is often user code
        else:
            world = resolve_model(model, task=task, device=here, allow_code=allow_code, **tasks.spaces(task))
            _, name, fingerprint = model_identity(model, world)
        if world.task != task:
            raise WmEvalError(f"the model was trained for {world.task}, not {task}")
        if precision != "float32" and not hasattr(world, "set_inference_dtype"):
            raise WmEvalError(f"{type(world).__name__} has no reduced-precision inference: use precision=float32")
        loaded = load_policy_list(policies, task=task, device=here)
        if real_budget is not None:
            check_budget(real_budget, names=[p.name for p in loaded], episodes=episodes, mode=mode)
        real = loaded if here == "cpu" else load_policy_list([p.source or p for p in loaded], task=task, device="cpu")
        units = plan([p.name for p in loaded], episodes=episodes, chunk=chunk, split=n_real)
        seeds = start_seeds(seed, episodes)
        states = tasks.reset_states(task, seeds.tolist())[1]
        keep = trajectories == "all" or (trajectories == "auto" and len(loaded) * episodes * horizon <= AUTO_ALL_STEPS)
        config = {"task": task, "policies": [p.source or p.name for p in loaded], "model": name,
                  "fingerprint": fingerprint, "episodes": episodes, "horizon": horizon, "seed": seed, "mode": mode,
                  "propagation": propagation, "sample": sample, "gamma": gamma, "chunk": chunk, "device": device,
                  "precision": precision, "real_episodes": None if n_real == episodes else n_real,
                  "real_budget": real_budget,
                  "confidence": confidence}
        identity = {**config, "policy_fingerprints": [_policy_fingerprint(p) for p in loaded], "keep": keep,
                    "task_code": None if spec.factory is None else code_fingerprint(spec.factory),
                    "wm_eval": __version__, "block_rows": BLOCK_ROWS, "policy_block": POLICY_BLOCK}
        config["executor"] = executor  # recorded, but not part of the identity: any executor resumes a run
        config["termination"] = "task rule" if spec.terminated is not None else "learned head (the task has no rule)"
        if resume and None in identity["policy_fingerprints"]:
            raise ConfigError("resume needs every policy loaded from a file or module:callable (a policy passed in "
                              "memory cannot be recognised again): pass its file, or run without resume")
        store = _unit_store(Path(out) if out is not None else None, identity, resume)
        obs_scale = world.obs_scale.detach().cpu().numpy().astype(np.float64)
        coverage = getattr(world, "coverage", None)
        job = Job(task=task, model=world, policies=loaded, real_policies=real, states=states, horizon=horizon,
                  seed=seed, mode=mode, propagation=propagation, sample=sample, device=device)
        results: dict[str, UnitResult] = {}
        if store is not None and resume:
            for unit in units:
                path = store / f"{unit.id}.npz"
                if path.exists():
                    results[unit.id] = load_unit(path)
        todo = [u for u in units if u.id not in results]
        resumed = len(units) - len(todo)
        what = "imagined + MuJoCo" if n_real == episodes else f"imagined; {n_real} of {episodes} also in MuJoCo"
        bar = tqdm(total=sum(u.size for u in todo), desc=f"episodes ({what})", unit="ep",
                   disable=not progress)

        def done(unit: Unit, true: Any, imagined: Any) -> None:
            result = reduce_unit(unit.id, true, imagined, obs_scale=obs_scale, gamma=gamma, success_rule=spec.success,
                                 keep=keep, coverage=coverage)
            if store is not None:
                save_unit(store, result)
            results[unit.id] = result
            bar.update(unit.size)

        setup = time.perf_counter() - started  # loading the model and policies, start states
        if precision != "float32":
            import torch

            world.set_inference_dtype(getattr(torch, precision))
        try:
            timings = runner.run(job, [u for u in todo if not u.imagined_only], done)
            if any(u.imagined_only for u in todo):
                add_timings(timings, runner.run(job, [u for u in todo if u.imagined_only], done, truth=False))
            n = [n_real] * len(loaded)
            # trust reads imagined episodes only, all of which exist now: computed once, before any real budget
            trusts = [S.policy_trust(v, coverage, horizon)
                      for v in S.policy_values(units, results, len(loaded), episodes)]
            if real_budget is not None:
                n, loaded_extra = spend(job, runner, done, units, results, store, bar, timings, budget=real_budget,
                                         chunk=chunk, episodes=episodes, confidence=confidence,
                                         flagged=[t["flagged"] for t in trusts])
                resumed += loaded_extra
            values = S.policy_values(units, results, len(loaded), episodes)
            kept = _kept(job, runner, units, results, [S.paired(v, k) for v, k in zip(values, n)], seeds, timings,
                         keep=keep,
                         select=trajectories != "summary")
        finally:
            bar.close()
            if precision != "float32":
                world.set_inference_dtype(torch.float32)
        timings["setup"], timings["resumed_units"] = setup, float(resumed)
        timings["rollouts"] = time.perf_counter() - started - setup
        t0 = time.perf_counter()
        statistics = statistics_for(spec.success)
        results_ = []
        for pairs, policy_trust in zip(kept, trusts):  # the policy's risk travels with its kept episodes (Rerun)
            for pair in pairs:
                if policy_trust["risk"] is not None:
                    pair.imagined.infos["policy_risk"] = float(policy_trust["risk"])
        estimates = S.true_estimates(values, statistics, real=n, confidence=confidence, coverage=coverage,
                                     flagged=[t["flagged"] for t in trusts], horizon=horizon)
        for i, (policy, vals, estimate) in enumerate(zip(loaded, values, estimates)):
            stats, summary = S.policy_summary(vals, statistics, seed=_seed(seed, policy.name), n_resamples=bootstrap,
                                              real=n[i])
            summary.update(trusts[i])
            results_.append(PolicyResult(policy.name, policy.source, policy_key(policy.name), vals,
                                         tuple(kept[i]), stats, summary, estimate))
        pairs = [S.paired(v, k) for v, k in zip(values, n)]
        metrics = {s.name: S.ranking([v[f"imagined_{s.name}"] for v in pairs], [v[f"true_{s.name}"] for v in pairs],
                                     seed=seed, n_resamples=bootstrap) for s in statistics}
        trust = S.trust(pairs, [r.summary for r in results_], [p.name for p in loaded], coverage)
        trust["best_policy"] = _best_policy(results_, seed)
        timings["metrics"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started
        return Evaluation(task=task, model=name, model_fingerprint=fingerprint, seed=seed, mode=mode, horizon=horizon,
                          propagation=propagation, sample=sample, gamma=gamma, chunk=chunk, start_seeds=seeds,
                          obs_scale=obs_scale, policies=tuple(results_), metrics=metrics,
                          horizon_error=S.horizon_error([results[u.id] for u in units], sum(n)),
                          trust=trust, config=config, timings=timings, units=tuple(u.id for u in units))


def _best_policy(results: Sequence[PolicyResult], seed: int) -> dict[str, Any]:
    """``best_policy`` from the policies' true-return estimates (:func:`~wm_eval.evaluation.estimators.best_policy`)."""
    from wm_eval.evaluation.estimators import best_policy
    from wm_eval.streams import BEST_POLICY

    est = [r.true_estimate["return"] for r in results]
    draw_seed = int(np.random.SeedSequence(seed, spawn_key=(BEST_POLICY,)).generate_state(1)[0])
    return best_policy([e["mean"] for e in est], [e["se"] for e in est], [e["real_episodes"] for e in est],
                       [r.name for r in results], seed=draw_seed)


def _check_real(real_episodes: int | None, *, episodes: int, mode: str, confidence: float) -> int:
    """The number of paired episodes per policy (``episodes`` unless ``real_episodes`` says fewer)."""
    if not 0 < confidence < 1:
        raise WmEvalError(f"confidence={confidence}: use a level between 0 and 1, e.g. 0.95")
    if real_episodes is None or real_episodes == episodes:
        return episodes
    if not (2 <= real_episodes <= episodes or real_episodes == 0):
        raise WmEvalError(f"real_episodes={real_episodes}: use 2 to episodes={episodes} (an interval for the true "
                          "value needs at least 2 real episodes per policy), or 0 for intervals from the model alone")
    if mode == "open_loop" and real_episodes < episodes:
        raise WmEvalError("real_episodes < episodes needs mode=closed_loop: open loop replays every episode's "
                          "real actions")
    return int(real_episodes)


def _kept(job: Job, runner: Any, units: Sequence[Unit], results: dict[str, UnitResult],
          values: list[dict[str, np.ndarray]], seeds: np.ndarray, timings: dict[str, float], *, keep: bool,
          select: bool) -> list[list[PairedEpisode]]:
    """Per policy, the paired episodes kept whole: all (from the units) or the selected ones, re-rolled
    by ``runner`` from their own seeds as one-episode units (identical to the originals by
    construction). Only paired episodes (``values`` holds theirs) are kept."""
    out: list[list[PairedEpisode]] = [[] for _ in values]
    if select and not keep:
        again = [Unit(i, job.policies[i].name, policy_key(job.policies[i].name), j, j + 1)
                 for i in range(len(values)) for j in _select(values[i])]
        rolled: dict[str, tuple[Any, Any]] = {}
        more = runner.run(job, again, lambda unit, true, imagined: rolled.__setitem__(unit.id, (true, imagined)))
        timings["selected_rerolls"] = sum(v for k, v in more.items() if k.endswith("_rollouts"))
        for unit in again:
            true, imagined = rolled[unit.id]
            seed = int(seeds[unit.start])
            out[unit.policy].append(PairedEpisode(unit.name, unit.policy, unit.start, seed,
                                                  true.trajectory(0, seed=seed), imagined.trajectory(0, seed=seed)))
        return out
    for i in range(len(values)):
        if keep:
            for unit in sorted((u for u in units if u.policy == i and not u.imagined_only), key=lambda u: u.start):
                r = results[unit.id]
                for k in range(unit.size):
                    j = unit.start + k
                    out[i].append(PairedEpisode(job.policies[i].name, i, j, int(seeds[j]),
                                                r.true.trajectory(k, seed=int(seeds[j])),
                                                r.imagined.trajectory(k, seed=int(seeds[j]))))
    for i, pairs in enumerate(out):  # the episode's trust values travel with it (trajectory file, Rerun)
        for pair in pairs:
            for name in ("trust_score", "coverage"):
                if f"imagined_{name}" in values[i]:
                    pair.imagined.infos[name] = float(values[i][f"imagined_{name}"][pair.episode])
    return out
