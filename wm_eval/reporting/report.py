"""``report.json`` and ``report.md``: what an evaluation found, for machines and for people.

(The JSON and the Markdown and terminal views of the same report are kept together so that a key and its
rendering change in one place; the true-return estimates and the recommendation are in
:mod:`~wm_eval.reporting.estimates`.)

:func:`build_report` turns a finished :class:`~wm_eval.types.Evaluation` into one JSON-safe dict
(NaN becomes ``null``); :func:`report` (``wm_eval.report``) writes the whole folder: trajectories,
recording, plots, then ``report.json`` and ``report.md``::

    ev = wm_eval.evaluate("Hopper-v5", ["zoo"])
    wm_eval.report(ev, "runs/hopper")   # last: report.md links what the folder holds; "complete": true

This module reads only :mod:`wm_eval.types`, never the evaluation modules.

The report's keys are a contract (DESIGN.md): keys may be added, never renamed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from wm_eval.fileio import atomic_write_text
from wm_eval.machine import library_versions, machine
from wm_eval.types import METRIC_NAMES
from wm_eval.reporting.estimates import (NO_MUJOCO, estimates_section, has_true_returns, order_note, rank_cell,
                                         sorted_policies, terminal_recommendation)
from wm_eval.reporting.estimates import interval as _interval
from wm_eval.reporting.estimates import num as _num
from wm_eval.reporting.success import has_success, success_cell, success_section
from wm_eval.reporting.terminations import has_terminations, terminated_cell, termination_verdict
from wm_eval.reporting.trust import flagged_note, risk_cell, terminal_risk_cell, trust_section, trust_verdict

if TYPE_CHECKING:
    from wm_eval.types import Evaluation

__all__ = ["FORMAT", "METRIC_NAMES", "SPEARMAN_WARN", "TRUST_AUROC_WARN", "OWNED_FILES", "library_versions",
           "machine", "build_report", "report", "write_report", "summary_table"]

FORMAT = "wm_eval.report/1"
OWNED_FILES = ("report.json", "report.md", "trajectories.h5", "minari", "rollouts.rrd", "returns.png",
               "horizon_error.png", "uncertainty.png")
"""What :func:`report` writes into a folder (and removes first, so no stale artifact is linked)."""
INTERVALS = {
    "imagined": "95% percentile bootstrap over episodes (Wilson for success): the spread of the model's "
                "predictions over start states, NOT an interval for the policy's true value",
    "true": "95% percentile bootstrap over the real episodes (Wilson for success)",
    "metrics": "95% two-level bootstrap: policies resampled, then paired episodes within each policy",
}
SPEARMAN_WARN = 0.7
"""Below this Spearman correlation the report warns that the model's ranking is not to be trusted."""
TRUST_AUROC_WARN = 0.6
"""Below this trust AUROC the report warns that uncertainty does not flag the wrong episodes."""
_HORIZON_STEPS = (1, 10, 50, 100)
_LINKED_FILES = (("trajectories.h5", "paired episodes (HDF5; ground truth readable by Minari via minari/)"),
                 ("rollouts.rrd", "Rerun recording (`wm-eval view` or `rerun rollouts.rrd`)"))
_PLOTS = (("returns.png", "Imagined vs true return"), ("horizon_error.png", "State error vs horizon"),
          ("uncertainty.png", "Uncertainty vs return error"), ("success.png", "Imagined vs true success rate"))


def _ranks(values: list[float]) -> list[int | None]:
    """Rank 1 = highest value (ties share the better rank); ``None`` for a non-finite value."""
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    ranks = stats.rankdata(-array[finite], method="min")
    out: list[int | None] = [None] * len(array)
    for i, r in zip(np.flatnonzero(finite), ranks):
        out[i] = int(r)
    return out


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy to Python, NaN and inf to ``None``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


_EPISODE_KEYS = {  # report.json's per-episode names -> PolicyResult.episodes keys
    "imagined_return": "imagined_return", "true_return": "true_return",
    "imagined_return_discounted": "imagined_discounted_return", "true_return_discounted": "true_discounted_return",
    "imagined_length": "imagined_length", "true_length": "true_length",
    "imagined_terminated": "imagined_terminated", "true_terminated": "true_terminated",
    "imagined_success": "imagined_success", "true_success": "true_success",
    "uncertainty": "imagined_uncertainty", "trust_score": "imagined_trust_score",
    "final_state_error": "final_state_error", "coverage": "imagined_coverage",
}
_TRUST_KEYS = {"coverage": None, "risk_features": None, "risk": None, "flagged": False}
"""Per-policy trust keys of ``report.json`` and their values for a summary that lacks them."""


def _uniform(values: list[Any]) -> Any:
    """The common value of ``values``, or ``None`` when they differ (``real_budget`` spreads episodes unevenly)."""
    return values[0] if values and all(v == values[0] for v in values) else None


def _summed_disagreement(episodes: dict[str, np.ndarray]) -> np.ndarray:
    """``total_uncertainty`` as report/1 defined it: each episode's raw ensemble disagreement summed over its
    imagined steps (the per-step mean times the length; ``trust_score`` weights and scales it instead)."""
    return np.asarray(episodes["imagined_uncertainty"], dtype=np.float64) * np.asarray(episodes["imagined_length"])


def build_report(ev: Evaluation, *, config: dict[str, Any] | None = None,
                 versions: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The content of ``report.json`` for an :class:`~wm_eval.types.Evaluation`.

    Args:
        ev: the finished evaluation.
        config: the resolved configuration to record (default: the evaluation's own arguments).
        versions: library versions to record (default: :func:`library_versions`).

    Returns:
        A JSON-safe dict (NaN and inf are ``None``). Each policy entry carries its statistics,
        per-episode values, ``imagined_rank`` and ``true_rank`` (1 = best, by mean undiscounted return),
        and its trust: ``coverage``, ``risk_features``, ``risk`` (``None``: not estimated) and ``flagged``.
        Per episode, ``uncertainty`` is the ensemble disagreement per imagined step (mean),
        ``total_uncertainty`` its sum over the episode and ``trust_score`` that sum weighted by the
        distance to the training data over the model's reference disagreement.
    """
    policies = []
    for p in ev.policies:
        entry = {"name": p.name, "source": p.source, **_TRUST_KEYS, **p.summary, "statistics": p.statistics,
                 "true_estimate": p.true_estimate.get("return"), "true_estimate_by_statistic": p.true_estimate,
                 "episodes": {k: p.episodes[v] for k, v in _EPISODE_KEYS.items() if v in p.episodes}}
        entry["episodes"]["total_uncertainty"] = _summed_disagreement(p.episodes)
        policies.append(entry)
    imagined_ranks = _ranks([p["imagined_return"]["mean"] for p in policies])
    true_ranks = _ranks([p["true_return"]["mean"] for p in policies])
    for p, imagined_rank, true_rank in zip(policies, imagined_ranks, true_ranks):
        p["imagined_rank"], p["true_rank"] = imagined_rank, true_rank
    main = ev.metrics["discounted_return"]
    report = {
        "format": FORMAT,
        "task": ev.task,
        "model": ev.model,
        "model_fingerprint": ev.model_fingerprint,
        "seed": ev.seed,
        "mode": ev.mode,
        "propagation": ev.propagation,
        "sample": ev.sample,
        "episodes": ev.episodes,
        "real_episodes": _uniform([p.true_estimate.get("return", {}).get("real_episodes") for p in ev.policies]),
        "real_episodes_total": sum(p.true_estimate.get("return", {}).get("real_episodes", 0) for p in ev.policies),
        "real_budget": ev.config.get("real_budget"),
        "horizon": ev.horizon,
        "termination": ev.config.get("termination"),
        "gamma": ev.gamma,
        "chunk": ev.chunk,
        "start_seeds": ev.start_seeds,
        "policies": policies,
        "metrics": {k: v["value"] for k, v in main.items()},
        "metrics_ci": main,
        "metrics_undiscounted": ev.metrics["return"],
        "metrics_by_statistic": ev.metrics,
        "horizon_error": ev.horizon_error["error"],
        "horizon_error_episodes": ev.horizon_error["running"],
        "horizon_diverged": ev.horizon_error["diverged"],
        "horizon_pairs": ev.horizon_error["pairs"],
        "trust": ev.trust,
        "intervals": INTERVALS,
        "timings": dict(ev.timings),
        "units": list(ev.units),
        "versions": library_versions() if versions is None else dict(versions),
        "machine": machine(),
        "config": json.loads(json.dumps(_jsonable(ev.config if config is None else config), default=str)),
        "complete": True,
    }
    return _jsonable(report)


def report(evaluation: Evaluation, out: str | os.PathLike[str], *, trajectories: bool = True, rerun: bool = True,
           config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the report folder of ``evaluation`` into ``out`` and return the report.

    Writes ``trajectories.h5`` (with its ``minari/`` view) of the kept episodes, ``rollouts.rrd``
    (``rerun=True``), the plots, then ``report.json`` and ``report.md`` last, so a folder without
    ``report.json`` holds no finished report. Artifacts of an earlier run in ``out`` that this run
    does not write are removed before anything is written, so the report never links stale files.
    """
    import shutil
    import time

    from wm_eval.reporting.plots import write_plots
    from wm_eval.reporting.trajectories import write_trajectories

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in OWNED_FILES:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    timings = dict(evaluation.timings)
    kept = any(p.kept for p in evaluation.policies)
    if trajectories and kept:
        t0 = time.perf_counter()
        path = write_trajectories(folder / "trajectories.h5", evaluation, config=config or evaluation.config)
        timings["logging"] = time.perf_counter() - t0
        if rerun:
            from wm_eval.reporting.rerun_log import write_recording
            from wm_eval.reporting.trajectories import TrajectoryFile

            t0 = time.perf_counter()  # the kept episodes as in the file just written, without reading it back
            kept_file = TrajectoryFile(path, {"task": evaluation.task, "model": evaluation.model,
                                              "seed": evaluation.seed, "obs_scale": evaluation.obs_scale},
                                       [ep for p in evaluation.policies for ep in p.kept])
            write_recording(folder / "rollouts.rrd", kept_file)
            timings["recording"] = time.perf_counter() - t0
    content = build_report(evaluation, config=config)
    content["timings"] = _jsonable(timings)
    write_plots(folder, content)
    write_report(folder, content)
    return content


def _verdicts(report: dict[str, Any]) -> list[str]:
    """One line on the ranking, one on the uncertainty, and one each on the flagged policies and the
    mispredicted terminations if any."""
    rho = report["metrics_ci"]["spearman"]
    if not has_true_returns(report):
        ranking = "Ranking not assessed: the ranking metrics need real episodes, and none ran in MuJoCo."
    elif rho["value"] is None:
        ranking = "Ranking not assessed: it needs at least two policies whose true returns differ."
    elif rho["value"] >= SPEARMAN_WARN:
        ranking = f"Ranking agrees with MuJoCo (Spearman {_interval(_as_mean(rho), '.2f')})."
    else:
        ranking = (f"**Warning:** the model's ranking disagrees with MuJoCo (Spearman {_interval(_as_mean(rho), '.2f')}"
                   f" < {SPEARMAN_WARN}): do not pick a policy on these imagined returns.")
    trust = report["trust"]
    auroc, off = trust.get("auroc"), trust.get("fraction_off")
    share = f"{_num(None if off is None else 100 * off, '.0f')}% of episodes are off by more than " \
            f"{_num(100 * trust.get('threshold', 0.2), '.0f')}%"
    if not trust.get("episodes", 1):
        flag = f"Uncertainty not assessed: {NO_MUJOCO}."
    elif auroc is None:
        flag = f"Uncertainty not assessed: {share}, so there is nothing (or only failures) to flag."
    elif auroc >= TRUST_AUROC_WARN:
        flag = f"Uncertainty flags the episodes whose imagined return is off (trust AUROC {auroc:.2f}; {share})."
    else:
        flag = (f"**Warning:** uncertainty does not flag the wrong episodes (trust AUROC {auroc:.2f} < "
                f"{TRUST_AUROC_WARN}; {share}): a confident imagined return may still be wrong.")
    extra = [trust_verdict(report), termination_verdict(report)]
    return [ranking, flag] + [line for line in extra if line]


def _as_mean(entry: dict[str, float | None]) -> dict[str, float | None]:
    return {"mean": entry["value"], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"]}


def _markdown(report: dict[str, Any], folder: Path) -> str:
    gamma = report.get("gamma")
    falls = has_terminations(report)
    lines = [
        f"# wm_eval report: {report['task']} in model `{report['model']}`",
        "",
        f"Mode **{report['mode']}**, {_paired_count(report)} per policy, horizon {report['horizon']}, "
        f"seed {report['seed']}, propagation {report['propagation']}, model fingerprint "
        f"`{report['model_fingerprint']}`. Imagined terminations: "
        f"{report.get('termination') or 'task rule where the task has one, else the learned head'}.",
        "",
        *[f"- {line}" for line in _verdicts(report)],
        "",
        f"## Policies ({order_note(report)})",
        "",
        "Undiscounted returns, mean over episodes with 95% bootstrap intervals; ranks are 1 = best. An imagined "
        "interval is the spread of the model's predictions over start states, not an interval for the policy's "
        "true value. Trust score: ensemble disagreement summed over an episode's imagined steps, weighted by the "
        "distance to the training data when the model stores it (mean per policy). Risk: estimated probability "
        "that the policy's imagined mean return is off by more than 20% (⚑ flagged; n/a: not estimated)."
        + (" Terminated: share of episodes that ended by termination, not the time limit (a fall, for "
           "locomotion), imagined / true."
           if falls else ""),
        "",
        "| policy | imagined return [95% CI] | true return [95% CI] | abs error | trust score | risk | "
        f"rank imagined / true |{' terminated |' if falls else ''}",
        "|---|---|---|---|---|---|---|" + ("---|" if falls else ""),
    ]
    for p in sorted_policies(report):
        lines.append(f"| {p['name']} | {_interval(p['imagined_return'])} | {_interval(p['true_return'])} | "
                     f"{_num(p['abs_error'])} | {_num(p['trust_score'], '.3g')} | {risk_cell(p)} | {rank_cell(p)} |"
                     + (f" {terminated_cell(p)} |" if falls else ""))
    lines += trust_section(report)
    lines += success_section(report, sorted_policies(report))
    lines += estimates_section(report)
    lines += [
        "",
        f"## Ranking metrics (discounted returns, γ = {_num(gamma, 'g')}; 95% two-level bootstrap)",
        "",
        "Spearman, Kendall, Pearson and MMRV on raw returns (MMRV in return units, as SIMPLER; "
        "mmrv_normalized divides it by the true best - worst spread); normalized_abs_error and regret as DOPE.",
        "",
        "| metric | value [95% CI] | undiscounted |",
        "|---|---|---|",
    ]
    for name in METRIC_NAMES:
        entry, plain = report["metrics_ci"][name], report["metrics_undiscounted"][name]
        lines.append(f"| {name} | {_interval(_as_mean(entry), '.3f')} | {_num(plain['value'], '.3f')} |")
    error = report["horizon_error"]
    steps = sorted({s for s in (*_HORIZON_STEPS, len(error) - 1) if 0 < s < len(error)})
    lines += [
        "",
        "## State error vs horizon",
        "",
        "RMS over dimensions of (imagined - true) / model observation std, mean over the pairs still running on "
        "both sides; diverged: pairs where exactly one side has terminated by that step (no survivor bias: a "
        "fallen imagined episode shows there).",
        "",
        "| step | " + " | ".join(str(s) for s in steps) + " |",
        "|---|" + "---|" * len(steps),
        "| error | " + " | ".join(_num(error[s], ".3g") for s in steps) + " |",
        "| pairs running | " + " | ".join(str(report["horizon_error_episodes"][s]) for s in steps) + " |",
        "| diverged | " + " | ".join(str(report["horizon_diverged"][s]) for s in steps) + " |",
        "",
        "## Files",
        "",
        "- [report.json](report.json): every number above, per-episode values, versions and config",
    ]
    lines += [f"- [{name}]({name}): {what}" for name, what in _LINKED_FILES if (folder / name).exists()]
    lines += [f"\n![{title}]({name})" for name, title in _PLOTS if (folder / name).exists()]
    return "\n".join(lines) + "\n"


def _paired_count(report: dict[str, Any]) -> str:
    """``"10 paired episodes"``, or how many of the episodes are paired when not all are."""
    real = report.get("real_episodes")
    if real == report["episodes"] or real is None and not report.get("real_budget"):
        return f"{report['episodes']} paired episodes"
    paired = f"{real}" if real is not None else f"{report['real_episodes_total']} in total (real_budget)"
    return f"{report['episodes']} imagined episodes ({paired} paired with MuJoCo)"


def write_report(folder: str | os.PathLike[str], report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder`` (created if needed), each atomically.

    ``report.md`` links the plots and files present in ``folder`` now: write the report last.
    Returns ``(json_path, md_path)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    markdown = _markdown(report, folder)
    json_path, md_path = folder / "report.json", folder / "report.md"
    atomic_write_text(json_path, text)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def summary_table(report: dict[str, Any]) -> str:
    """The compact table printed to the terminal: one row per policy (best true return first, or best
    imagined return when no episode ran in MuJoCo, with its ``risk``, marked ``FLAGGED`` above the
    threshold, and its imagined/true share of terminated episodes when some ended so), one line of ranking
    metrics, the recommended policy when not every episode is paired, and a last line naming the flagged
    policies if any."""
    policies = sorted_policies(report)
    width = max(len("policy"), *(len(p["name"]) for p in policies))
    reals = [(p.get("true_estimate") or {}).get("real_episodes", report["episodes"]) for p in report["policies"]]
    budget = min(reals) < report["episodes"]
    head = f"{'true est. [CI]':>24}" if budget else ""
    success, falls = has_success(report), has_terminations(report)
    rows = [f"{'policy':<{width}}  {'imagined':>10}  {'true':>10}  {'|error|':>9}  {'trust score':>11}  {'risk':>5}{'':8}  "
            + (f"{'success im/true':>15}  " if success else "") + (f"{'falls im/true':>13}  " if falls else "") + head]
    for p in policies:
        est = f"{_interval(p['true_estimate']):>24}" if budget else ""
        rows.append(f"{p['name']:<{width}}  {_num(p['imagined_return']['mean']):>10}  {_num(p['true_return']['mean']):>10}  "
                    f"{_num(p['abs_error']):>9}  {_num(p['trust_score'], '.3g'):>11}  "
                    f"{terminal_risk_cell(p)}  "
                    + (f"{success_cell(p):>15}  " if success else "")
                    + (f"{terminated_cell(p).replace(' ', ''):>13}  " if falls else "") + est)
    rows = [r.rstrip() for r in rows]
    m = report["metrics"]
    rows.append(f"Spearman {_num(m['spearman'], '.2f')}  Kendall {_num(m['kendall'], '.2f')}  "
                f"Pearson {_num(m['pearson'], '.2f')}  MMRV {_num(m['mmrv'], '.1f')} "
                f"({_num(m['mmrv_normalized'], '.3f')} of spread)  "
                f"regret@1 {_num(m['regret_at_1'], '.3f')}  NAE {_num(m['normalized_abs_error'], '.3f')}")
    if success:
        ms = {k: (v or {}).get("value") for k, v in report["metrics_by_statistic"]["success"].items()}
        rows.append(f"Success rates: Spearman {_num(ms.get('spearman'), '.2f')}  Pearson {_num(ms.get('pearson'), '.2f')}  "
                    f"MMRV {_num(ms.get('mmrv'), '.3f')}  regret@1 {_num(ms.get('regret_at_1'), '.3f')}")
    best = terminal_recommendation(report, sum(reals), report["episodes"] * len(reals)) if budget else None
    if best:
        rows.append(best)
    note = flagged_note(report)
    return "\n".join(rows + ([note] if note else []))
