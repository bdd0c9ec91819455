"""The policy CI gate behind ``wm-eval regress``: fail when a checkpoint got worse than its baseline.

(Over 400 lines: recording and checking share the baseline format, its paths and the suite loading;
the statistics live in :mod:`wm_eval.evaluation.metrics` and the reports in :mod:`wm_eval.reporting.gate`.)

Record a baseline once and commit it; check it in CI after checkpoints were replaced in place::

    wm-eval regress --update-baseline --baseline gate.json task=HalfCheetah-v5 policies=[ckpt/a.zip,ckpt/b.zip]
    wm-eval regress --baseline gate.json --junit gate.xml     # exit 0 pass, 1 regression, 2 bad input

Everything runs in the world model (MuJoCo only with ``confirm=true``), all policies' episodes in one
batch, with **common random numbers**: the check starts from the baseline's recorded reset seeds and
uses its model seed, so an unchanged file under an unchanged deterministic model gives bit-identical
returns, and a changed file is compared episode by episode from the very same start states.

**The rule.** Per policy, with baseline per-episode returns ``b_i`` and candidate returns ``c_i`` (same
start state ``i``), the relative change is ``(mean(c) - mean(b)) / |mean(b)|``; its interval is a paired
percentile bootstrap over episodes (``(b_i, c_i)`` resampled together, ratio recomputed, seeded; widened
for small samples, see :func:`paired_change`). A policy regresses when both hold:

1. the change is below ``-tolerance`` (the drop is beyond the tolerance), and
2. the upper end of its two-sided 95% interval is below 0 (the drop is not noise).

Rule 2 bounds false alarms: an unchanged policy whose returns differ only by noise (fresh start states,
a stochastic model or policy, another machine's float rounding) passes it but about 2.5% of the time
(2-3.5% measured for 8 to 32 episodes); the bootstrap covers all such noise, paired or not, because it
resamples the observed differences. Rule 1 keeps tiny but real changes from failing CI. Deciding at the
midpoint between "unchanged" and "twice the tolerance" balances the two error rates: a drop of twice the
tolerance (10% at the default 5%) is flagged at least 95% of the time once the standard error of the
relative change is at most half the tolerance, which common random numbers reach with few episodes.
No resampling covers the world model's own bias (it may see a 6% drop where MuJoCo sees 10%):
``examples/gate_power.py`` measures the detection and false-alarm rates against MuJoCo ground truth,
and ``confirm=true`` re-checks regressed policies there. Each candidate also carries its ``risk`` and
``flagged`` (:mod:`wm_eval.evaluation.trust_signal`): information on how far to trust its verdict, never a failure.

**Baseline file** (JSON, sorted keys, indent 2, meant to be committed): ``format`` (``wm_eval.baseline/1``),
``wm_eval_version``, ``task``, ``model`` (``path``, ``name``, ``fingerprint``), ``episodes``, ``horizon``,
``seed``, ``start_seeds``, ``propagation``, ``tolerance``, ``confidence``, ``statistic`` and ``policies``,
each with ``name``, ``path``, ``sha256`` of the file, ``imagined_return`` ``{mean, ci_low, ci_high}`` and
``episode_returns`` (plus ``true_return`` and ``true_episode_returns`` when recorded with ``confirm=true``).
A path given relative (or through ``zoo``) is stored relative to the baseline file's folder and resolved
against that folder when checking, whatever the working directory; an absolute path stays absolute.
A ``module:callable`` policy has no file: its spec is its ``path`` and its ``sha256`` is ``null``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import wm_eval
from wm_eval.errors import CheckpointError, ConfigError, PolicyError, TaskError, WmEvalError
from wm_eval.evaluation.executor import Job, LocalExecutor, open_executor
from wm_eval.evaluation.plan import Unit
from wm_eval.fileio import atomic_write_text, sha256
from wm_eval.models.user import CODE_REF
from wm_eval.streams import policy_key
from wm_eval.types import ChangeTest, PolicyCheck, RegressResult, SuccessTest

__all__ = [
    "FORMAT", "DEFAULT_TOLERANCE", "ChangeTest", "PolicyCheck", "RegressResult", "paired_change",
    "record_baseline", "read_baseline", "check_baseline", "imagined_returns", "true_returns", "paired_success",
]  # fmt: skip

FORMAT = "wm_eval.baseline/1"
DEFAULT_TOLERANCE = 0.05
DEFAULT_TASK = "HalfCheetah-v5"
STATISTIC = "undiscounted imagined return per episode (and success, where the task has a success rule)"


def paired_success(baseline: Sequence[float], candidate: Sequence[float], *, tolerance: float,
                   confidence: float = 0.95) -> SuccessTest:
    """Paired test of per-episode success (0/1, entry ``i`` of both from the same start state): a
    regression when the rate drops by more than ``tolerance`` (absolute) and McNemar's exact one-sided
    test rejects "no change" at ``(1 - confidence) / 2``, the level of the return test's two-sided interval."""
    from scipy import stats

    b, c = np.asarray(baseline, dtype=bool), np.asarray(candidate, dtype=bool)
    if b.shape != c.shape or b.ndim != 1 or b.size == 0:
        raise WmEvalError(f"baseline and candidate need the same number of episodes, got {b.shape} and {c.shape}")
    lost, gained = int(np.sum(b & ~c)), int(np.sum(~b & c))
    p = float(stats.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue) if lost + gained else 1.0
    rates = float(b.mean()), float(c.mean())
    # "more than tolerance" on counts, so a drop of exactly the tolerance does not count (no float rounding)
    regressed = lost - gained > tolerance * b.size + 1e-9 and p < (1 - confidence) / 2
    return SuccessTest(rates[0], rates[1], lost, gained, p, tolerance, bool(regressed))


def paired_change(baseline: Sequence[float], candidate: Sequence[float], *, tolerance: float,
                  confidence: float = 0.95, n_resamples: int = 2000, seed: int) -> ChangeTest:
    """Paired bootstrap test of per-episode returns (entry ``i`` of both from the same start state).

    The interval is the percentile interval of the relative change over ``n_resamples`` paired
    resamples, expanded for small samples (Hesterberg 2015: the percentile level is raised so that its
    normal quantile equals ``sqrt(n / (n - 1)) * t_{n-1}``), which keeps the false-alarm rate near its
    nominal level even for 8 episodes. A baseline mean of exactly 0 makes any change infinite.
    """
    from scipy import stats

    b, c = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if b.shape != c.shape or b.ndim != 1 or b.size == 0:
        raise WmEvalError(f"baseline and candidate need the same number of episodes, got {b.shape} and {c.shape}")

    def change(b: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        scale = np.maximum(np.abs(b.mean(axis)), np.finfo(np.float64).tiny)
        return (c.mean(axis) - b.mean(axis)) / scale

    value = float(change(b, c))
    low = high = value
    n = b.size
    if n > 1:  # Hesterberg's expanded percentile interval: the plain one is too narrow for few episodes
        z = math.sqrt(n / (n - 1)) * stats.t.ppf(0.5 + confidence / 2, n - 1)
        interval = stats.bootstrap((b, c), change, paired=True, vectorized=True, n_resamples=n_resamples,
                                   confidence_level=float(1 - 2 * stats.norm.sf(z)), method="percentile",
                                   rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    return ChangeTest(value, low, high, bool(value < -tolerance and high < 0.0))


# ---- evaluation -------------------------------------------------------------------------------
def _load_model(ref: str | None, *, task: str, device: str, allow_code: bool = False
                ) -> tuple[Any, Path | None, str, str]:
    """``(model, checkpoint path or None if embedded or module:factory, display name, fingerprint)``."""
    from wm_eval.models.checkpoint import model_identity, resolve_model

    from wm_eval.tasks import spaces

    model = resolve_model(ref, task=task, device=device, allow_code=allow_code, **spaces(task))
    return (model, *model_identity(ref, model))


def imagined_returns(model: Any, task: str, policies: Sequence[Any], states: np.ndarray, *, horizon: int, seed: int,
                     device: str = "cpu", propagation: str = "mean", executor: Any = None) -> list[np.ndarray]:
    """Undiscounted imagined returns ``[len(states)]`` of each policy from the same start ``states``.

    Every episode ``j`` of a policy uses the random streams of ``(seed, policy name, j)``, as in
    :func:`wm_eval.evaluate`: common random numbers between a baseline and its candidate hold for every
    propagation, and a policy's returns do not depend on the others in the suite. ``executor``: a
    local or Ray executor (:func:`wm_eval.evaluation.executor.open_executor`; default: in-process).
    """
    return [r for r, *_ in _outcomes(Job(task=task, model=model, policies=list(policies), real_policies=list(policies),
                                         states=states, horizon=horizon, seed=seed, mode="closed_loop",
                                         propagation=propagation, sample=False, device=device),
                                     imagined=True, executor=executor)]


def true_returns(task: str, policy: Any, states: np.ndarray, horizon: int, *, executor: Any = None) -> np.ndarray:
    """Undiscounted MuJoCo returns ``[len(states)]`` of ``policy`` from simulator ``states``."""
    return _outcomes(_job(task, [policy], states, horizon), imagined=False, executor=executor)[0][0]


def _job(task: str, policies: list[Any], states: np.ndarray, horizon: int, *, model: Any = None, seed: int = 0,
         device: str = "cpu", propagation: str = "mean") -> Job:
    return Job(task=task, model=model, policies=policies, real_policies=policies, states=states, horizon=horizon,
               seed=seed, mode="closed_loop", propagation=propagation, sample=False, device=device)


def _outcomes(job: Job, *, imagined: bool, executor: Any
              ) -> list[tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]:
    """Per policy of ``job``: undiscounted returns and successes (``None`` when the task has no success
    rule), ``[len(job.states)]`` each, and (imagined side) its trust (``risk``, ``flagged``, ... as
    :func:`wm_eval.evaluate` reports them), from one unit of all its episodes on one side, run by ``executor``."""
    from wm_eval.evaluation.statistics import side_values
    from wm_eval.evaluation.summary import policy_trust
    from wm_eval.evaluation.trust_signal import episode_signals
    from wm_eval.tasks import get_task

    rule, coverage = get_task(job.task).success, getattr(job.model, "coverage", None) if imagined else None
    units = [Unit(i, p.name, policy_key(p.name), 0, len(job.states)) for i, p in enumerate(job.policies)]
    out: dict[str, tuple[np.ndarray, np.ndarray | None, dict[str, Any]]] = {}

    def done(unit: Unit, true: Any, imag: Any) -> None:
        values = side_values(imag if imagined else true, gamma=1.0, success_rule=rule)
        values.update(episode_signals(imag, coverage) if coverage is not None else {})
        trust = policy_trust({f"imagined_{k}": v for k, v in values.items()}, coverage, job.horizon) if imagined else {}
        out[unit.id] = values["return"], values.get("success"), trust

    (executor or LocalExecutor(workers=1)).run(job, units, done, imagined=imagined, truth=not imagined)
    return [out[u.id] for u in units]


def _estimate(values: np.ndarray, seed: int) -> dict[str, float]:
    from wm_eval.evaluation.metrics import bootstrap_ci

    low, high = bootstrap_ci(values, np.mean, seed=seed)
    return {"mean": float(np.mean(values)), "ci_low": low, "ci_high": high}


def _task_code(task: str) -> str | None:
    """The fingerprint of a ``module:factory`` task's code (``None`` for registered tasks)."""
    from wm_eval.models.user import code_fingerprint
    from wm_eval.tasks import get_task

    factory = get_task(task).factory
    return None if factory is None else code_fingerprint(factory)


def _on_cpu(policy: Any, task: str, device: str) -> Any:
    """``policy`` as the ground truth runs it: on the CPU (reloaded from its source when it was loaded on
    another device), so that MuJoCo returns do not depend on ``device`` and Ray's CPU workers can run it."""
    if device == "cpu" or policy.source is None:
        return policy
    from wm_eval.policy import load_policies
    from wm_eval.tasks import spaces

    (cpu,) = load_policies(policy.source, task=task, device="cpu", **spaces(task))
    return dataclasses.replace(cpu, name=policy.name)


def _rate(success: np.ndarray) -> dict[str, float]:
    from wm_eval.evaluation.metrics import binomial_ci

    low, high = binomial_ci(int(success.sum()), len(success))
    return {"mean": float(success.mean()), "ci_low": low, "ci_high": high}


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _stored(file: Path, folder: Path, *, absolute: bool) -> str:
    """How a path is written into a baseline living in ``folder`` (see the module docstring)."""
    if absolute:
        return file.resolve().as_posix()
    try:
        return Path(os.path.relpath(file.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return file.resolve().as_posix()


# ---- baselines --------------------------------------------------------------------------------
def record_baseline(path: str | os.PathLike[str], *, task: str, policies: Sequence[str], model: str | None = None,
                    episodes: int = 32, horizon: int | None = None, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
                    confidence: float = 0.95, propagation: str = "mean", confirm: bool = False,
                    device: str = "cpu", executor: str = "local", ray_address: str | None = None,
                    allow_code: bool = False) -> dict[str, Any]:
    """Evaluate ``policies`` (SB3 zips, zoo manifests, ``zoo``, ``module:callable``) in the world model and
    write the baseline file at ``path`` (atomically, replacing it); returns its content.

    ``confirm=True`` also records MuJoCo returns from the same start states, so that a later
    ``confirm`` check can compare ground truth with ground truth. ``executor="ray"`` runs the rollouts on
    the Ray cluster at ``ray_address`` (same numbers). ``allow_code``: ``model`` may be a checkpoint that
    names a model class outside wm_eval.
    """
    from wm_eval.evaluation.api import check_device
    from wm_eval.tasks import allow_task_code

    check_device(device)
    allow_task_code(task)  # the caller named it
    if horizon is None:  # the task's time limit
        from wm_eval.tasks import time_limit

        horizon = time_limit(task)
    from wm_eval.evaluation.plan import start_seeds
    from wm_eval.policy import load_policies, policy_file
    from wm_eval.tasks import reset_states

    if not policies:
        raise ConfigError("no policies to record: pass policies=[a.zip,b.zip] (SB3 zips, manifests or zoo)")
    if episodes < 1 or horizon < 1:
        raise ConfigError(f"episodes and horizon must be at least 1 (got {episodes} and {horizon})")
    folder = Path(path).resolve().parent
    model_obj, model_path, model_name, fingerprint = _load_model(model, task=task, device=device, allow_code=allow_code)
    from wm_eval.tasks import spaces as task_spaces

    spaces = task_spaces(task)
    entries, loaded = [], []
    for spec in policies:
        for policy in load_policies(f"zoo:{task}" if spec == "zoo" else spec, task=task, device=device, **spaces):
            if policy.source is None:
                raise ConfigError(f"policy '{policy.name}' was passed in memory: a baseline needs a file or "
                                  "module:callable")
            file = policy_file(policy)
            stored = policy.source if file is None else _stored(file, folder, absolute=os.path.isabs(spec))
            if "scripted" in policy.metadata:  # a scripted expert: its manifest's entry
                stored += f"#{policy.metadata['name']}"
            entries.append({"name": policy.name, "path": stored, "sha256": None if file is None else sha256(file)})
            loaded.append(policy)
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"policy names must be unique in a baseline (file stems or manifest names), got {names}")
    seeds = start_seeds(seed, episodes)
    states = reset_states(task, seeds.tolist())[1]
    with open_executor(executor, ray_address=ray_address, workers=1) as runner:
        imagined = _outcomes(_job(task, loaded, states, horizon, model=model_obj, seed=seed, device=device,
                                  propagation=propagation), imagined=True, executor=runner)
        for k, (entry, (values, success, _)) in enumerate(zip(entries, imagined)):
            entry["imagined_return"] = _estimate(values, _seed(seed, k))
            entry["episode_returns"] = values.tolist()
            if success is not None:  # the task has a success rule: the gate also tests the success rate
                entry["imagined_success"] = _rate(success)
                entry["episode_successes"] = success.astype(int).tolist()
            if confirm:
                ((truth, true_success, _),) = _outcomes(_job(task, [_on_cpu(loaded[k], task, device)], states, horizon),
                                                        imagined=False, executor=runner)
                entry["true_return"] = _estimate(truth, _seed(seed, k))
                entry["true_episode_returns"] = truth.tolist()
                if true_success is not None:
                    entry["true_episode_successes"] = true_success.astype(int).tolist()
    baseline = {
        "format": FORMAT, "wm_eval_version": wm_eval.__version__, "task": task,
        "model": {"path": None if model_path is None else _stored(model_path, folder, absolute=os.path.isabs(model)),
                  "name": model_name, "fingerprint": fingerprint},
        "episodes": episodes, "horizon": horizon, "seed": seed, "start_seeds": seeds.tolist(),
        "propagation": propagation, "tolerance": tolerance, "confidence": confidence, "statistic": STATISTIC,
        "task_code": _task_code(task), "policies": entries,
    }  # fmt: skip
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(baseline, indent=2, sort_keys=True) + "\n")
    return baseline


def read_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of a baseline file; a missing or malformed file raises :class:`ConfigError`."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"baseline '{file}' does not exist: record one with wm-eval regress --update-baseline")
    try:
        baseline = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read baseline '{file}': {str(e).splitlines()[0]}") from None
    if not isinstance(baseline, dict) or baseline.get("format") != FORMAT:
        found = baseline.get("format") if isinstance(baseline, dict) else None
        raise ConfigError(f"'{file}' is not a wm_eval baseline (format {found!r}, expected '{FORMAT}'); "
                          "record one with --update-baseline")
    keys = ("task", "model", "horizon", "seed", "start_seeds", "propagation", "tolerance", "policies")
    missing = [k for k in keys if k not in baseline]
    if missing:
        raise ConfigError(f"baseline '{file}' lacks {', '.join(missing)}; record it again with --update-baseline")
    return baseline


def check_baseline(path: str | os.PathLike[str], *, model: str | None = None, task: str | None = None,
                   tolerance: float | None = None, allow_model_change: bool = False, confirm: bool = False,
                   confidence: float | None = None, device: str = "cpu", allow_code: bool = False,
                   executor: str = "local", ray_address: str | None = None) -> RegressResult:
    """Re-evaluate the files a baseline names, with its seeds, and test each against its record.

    Args:
        path: the baseline file.
        model: world model to use (default: the baseline's); its fingerprint must match unless
            ``allow_model_change``.
        task: if given, must be the baseline's task.
        tolerance, confidence: default: the baseline's.
        confirm: re-run regressed policies in MuJoCo; with ground truth in the baseline, MuJoCo's
            paired verdict replaces the world model's.
        allow_code: a baseline naming ``module:callable`` policies imports and runs that code; it is
            refused unless this is ``True`` (a baseline file is data, not code).
        executor, ray_address: ``"ray"`` runs the rollouts on a Ray cluster (same numbers).

    Raises:
        ConfigError, TaskError, CheckpointError, PolicyError: bad input (the CLI exits with 2).
    """
    from wm_eval.tasks import reset_states

    from wm_eval.evaluation.api import check_device

    start = time.perf_counter()
    check_device(device)
    baseline = read_baseline(path)
    folder = Path(path).resolve().parent
    if task is not None and task != baseline["task"]:
        raise TaskError(f"the baseline '{path}' is for {baseline['task']}, not {task}: pass its task or another one")
    task, seed, horizon, recorded = baseline["task"], int(baseline["seed"]), int(baseline["horizon"]), baseline["model"]
    if allow_code:  # the baseline's task may name code (module:factory); without consent get_task refuses it
        from wm_eval.tasks import allow_task_code

        allow_task_code(task)
    ref = model if model is not None or recorded["path"] is None else os.path.normpath(folder / recorded["path"])
    if ref is None and CODE_REF.fullmatch(str(recorded["name"])):  # recorded with model=module:factory
        if not allow_code:
            raise ConfigError(f"the baseline names model code ({recorded['name']}): pass allow_code=true if you trust "
                              "this baseline file, or pass model=")
        ref = recorded["name"]
    model_obj, _, model_name, fingerprint = _load_model(ref, task=task, device=device, allow_code=allow_code)
    notes = []
    if fingerprint != recorded["fingerprint"]:
        if not allow_model_change:
            raise CheckpointError(f"the world model {model_name} (fingerprint {fingerprint}) is not the baseline's "
                                  f"(fingerprint {recorded['fingerprint']}): record the baseline again with "
                                  "--update-baseline, or pass --allow-model-change")
        notes.append(f"The world model changed (fingerprint {recorded['fingerprint']} -> {fingerprint}); "
                     "baseline returns come from the old model.")
    tolerance = float(baseline["tolerance"] if tolerance is None else tolerance)
    confidence = float(baseline.get("confidence", 0.95) if confidence is None else confidence)
    if "task_code" in baseline and baseline["task_code"] != _task_code(task):
        notes.append(f"The code of the task {task} changed since the baseline was recorded (module:factory env): "
                     "its MuJoCo episodes may differ; record the baseline again if the change was intended.")
    policies, files = _load_suite(baseline["policies"], folder, task=task, device=device, allow_code=allow_code)
    states = reset_states(task, baseline["start_seeds"])[1]
    with open_executor(executor, ray_address=ray_address, workers=1) as runner:
        checks = _check_all(baseline, policies, files, model_obj, states, tolerance=tolerance, confidence=confidence,
                            confirm=confirm, device=device, notes=notes, executor=runner)
    return RegressResult(task, model_name, fingerprint, recorded["fingerprint"], len(states), horizon, seed,
                         tolerance, confidence, checks, time.perf_counter() - start, notes)


def _check_all(baseline: dict[str, Any], policies: list[Any], files: list[Path | None], model: Any, states: np.ndarray,
               *, tolerance: float, confidence: float, confirm: bool, device: str, notes: list[str],
               executor: Any) -> list[PolicyCheck]:
    """Each policy's :class:`PolicyCheck` against the baseline's records (MuJoCo re-runs with ``confirm``)."""
    task, seed, horizon = baseline["task"], int(baseline["seed"]), int(baseline["horizon"])
    imagined = _outcomes(_job(task, policies, states, horizon, model=model, seed=seed, device=device,
                              propagation=baseline["propagation"]), imagined=True, executor=executor)
    checks = []
    for k, (entry, policy, file, (values, success, trust)) in enumerate(zip(baseline["policies"], policies, files,
                                                                            imagined)):
        test = paired_change(entry["episode_returns"], values, tolerance=tolerance, confidence=confidence,
                             seed=_seed(seed, k))
        success_test = None
        if success is not None and "episode_successes" in entry:
            success_test = paired_success(entry["episode_successes"], success, tolerance=tolerance,
                                          confidence=confidence)
        elif success is not None and k == 0:
            notes.append("The baseline holds no success outcomes (recorded before success gating): record it again "
                         "to gate on the success rate too.")
        check = PolicyCheck(entry["name"], entry["path"], None if file is None else sha256(file) != entry["sha256"],
                            entry["imagined_return"], _estimate(values, _seed(seed, k)), test,
                            success_test=success_test, risk=trust["risk"], flagged=trust["flagged"])
        if confirm and test.regressed:  # (a success-rate regression is the world model's verdict alone)
            truth = true_returns(task, _on_cpu(policy, task, device), states, horizon, executor=executor)
            now = _estimate(truth, _seed(seed, k, 1))
            true_test = None
            if "true_episode_returns" in entry:
                true_test = paired_change(entry["true_episode_returns"], truth, tolerance=tolerance,
                                          confidence=confidence, seed=_seed(seed, k, 1))
            else:
                notes.append(f"{entry['name']}: MuJoCo return now {now['mean']:.2f} [{now['ci_low']:.2f}, "
                             f"{now['ci_high']:.2f}]; the baseline holds no MuJoCo returns to compare with (record "
                             "it with confirm=true), so the world model's verdict stands.")
            check = dataclasses.replace(check, true_candidate=now, true_test=true_test)
        checks.append(check)
    return checks


def _load_suite(entries: list[dict[str, Any]], folder: Path, *, task: str, device: str,
                allow_code: bool) -> tuple[list, list]:
    """The baseline's policies, loaded from the files at its paths now, and those files (``None``: no file)."""
    from wm_eval.policy import load_policies

    from wm_eval.tasks import spaces as task_spaces

    spaces = task_spaces(task)
    policies, files = [], []
    code = [str(e["path"]) for e in entries if e.get("sha256") is None and e["path"] != "random"]
    if code and not allow_code:
        raise ConfigError(f"the baseline names code to run ({', '.join(code)}): pass allow_code=true if you trust "
                          "this baseline file")
    for entry in entries:
        path, sep, select = str(entry["path"]).partition("#")  # "<manifest>#<name>": a scripted expert
        file = None if entry.get("sha256") is None else Path(os.path.normpath(folder / path))
        if file is not None and not file.is_file():
            raise PolicyError(f"policy '{entry['name']}': file '{file}' named by the baseline does not exist")
        (policy,) = load_policies(str(entry["path"]) if file is None else f"{file}{sep}{select}", task=task,
                                  device=device, **spaces)
        # the recorded name keys the policy's random streams: a manifest entry reloaded from its file keeps it
        policy = dataclasses.replace(policy, name=entry["name"])
        policies.append(policy)
        files.append(file)
    return policies, files
