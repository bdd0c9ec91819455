"""``report.json`` and ``report.md``: what an evaluation found, for machines and for people.

:func:`build_report` turns a finished :class:`~wm_eval.evaluation.paired.Evaluation` and its
:func:`~wm_eval.evaluation.summary.summarize` output into one JSON-safe dict (NaN becomes
``null``); :func:`write_report` writes it with a Markdown rendering beside it::

    summary = summarize(ev, gamma=cfg.gamma)
    report = build_report(ev, summary, config=to_dict(cfg))
    write_plots(out, report)
    write_report(out, report)  # last: report.md links what the folder holds; "complete": true

The report's keys are a contract (DESIGN.md): keys may be added, never renamed.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from wm_eval import __version__
from wm_eval.fileio import atomic_write_text

if TYPE_CHECKING:
    from wm_eval.evaluation.paired import Evaluation

__all__ = ["FORMAT", "METRIC_NAMES", "SPEARMAN_WARN", "TRUST_AUROC_WARN", "library_versions", "build_report",
           "write_report", "summary_table"]

FORMAT = "wm_eval.report/1"
METRIC_NAMES = ("spearman", "kendall", "pearson", "mmrv", "regret_at_1", "regret_at_3", "normalized_abs_error")
SPEARMAN_WARN = 0.7
"""Below this Spearman correlation the report warns that the model's ranking is not to be trusted."""
TRUST_AUROC_WARN = 0.6
"""Below this trust AUROC the report warns that uncertainty does not flag the wrong episodes."""
_PACKAGES = ("torch", "numpy", "scipy", "mujoco", "gymnasium", "stable-baselines3", "h5py", "minari", "rerun-sdk",
             "matplotlib")
_HORIZON_STEPS = (1, 10, 50, 100)
_LINKED_FILES = (("trajectories.h5", "paired episodes (HDF5; ground truth readable by Minari via minari/)"),
                 ("rollouts.rrd", "Rerun recording (`wm-eval view` or `rerun rollouts.rrd`)"))
_PLOTS = (("returns.png", "Imagined vs true return"), ("horizon_error.png", "State error vs horizon"),
          ("uncertainty.png", "Uncertainty vs return error"))


def library_versions() -> dict[str, str | None]:
    """Versions of wm_eval, Python and the libraries that shape the numbers (``None``: not installed)."""
    versions: dict[str, str | None] = {"wm_eval": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _ranks(values: list[float]) -> list[int]:
    """Rank 1 = highest value (ties share the better rank)."""
    return [int(r) for r in stats.rankdata(-np.asarray(values, dtype=np.float64), method="min")]


def build_report(ev: Evaluation, summary: dict[str, Any], *, config: dict[str, Any],
                 versions: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The content of ``report.json``.

    Args:
        ev: the finished evaluation (identity, start seeds, timings).
        summary: ``summarize(ev, ...)``; its ``gamma`` (else ``config["gamma"]``) is recorded.
        config: the resolved configuration of the run (JSON-serialisable; other values become strings).
        versions: library versions to record (default: :func:`library_versions`).

    Returns:
        A JSON-safe dict (NaN and inf are ``None``). Each policy entry carries the summary's fields
        plus ``imagined_rank`` and ``true_rank`` (1 = best, by mean undiscounted return).
    """
    from wm_eval.evaluation.summary import clean

    policies = [dict(p) for p in summary["policies"]]
    imagined_ranks = _ranks([p["imagined_return"]["mean"] for p in policies])
    true_ranks = _ranks([p["true_return"]["mean"] for p in policies])
    for p, imagined_rank, true_rank in zip(policies, imagined_ranks, true_ranks):
        p["imagined_rank"], p["true_rank"] = imagined_rank, true_rank
    report = {
        "format": FORMAT,
        "task": ev.task,
        "model": ev.model,
        "model_fingerprint": ev.model_fingerprint,
        "seed": ev.seed,
        "mode": ev.mode,
        "propagation": ev.propagation,
        "episodes": len(ev.start_seeds),
        "horizon": ev.horizon,
        "gamma": summary.get("gamma", config.get("gamma")),
        "start_seeds": ev.start_seeds,
        "policies": policies,
        "metrics": summary["metrics"],
        "metrics_ci": summary["metrics_ci"],
        "metrics_undiscounted": summary["metrics_undiscounted"],
        "horizon_error": summary["horizon_error"],
        "horizon_error_episodes": summary.get("horizon_error_episodes"),
        "trust": summary["trust"],
        "timings": dict(ev.timings),
        "versions": library_versions() if versions is None else dict(versions),
        "config": json.loads(json.dumps(clean(config), default=str)),
        "complete": True,
    }
    return clean(report)


def _num(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _interval(entry: dict[str, float | None], spec: str = ".1f") -> str:
    return f"{_num(entry['mean'], spec)} [{_num(entry['ci_low'], spec)}, {_num(entry['ci_high'], spec)}]"


def _by_true_return(report: dict[str, Any]) -> list[dict[str, Any]]:
    def key(policy: dict[str, Any]) -> float:
        mean = policy["true_return"]["mean"]
        return -math.inf if mean is None else mean

    return sorted(report["policies"], key=key, reverse=True)


def _verdicts(report: dict[str, Any]) -> list[str]:
    """One line on the ranking, one on the uncertainty."""
    rho = report["metrics_ci"]["spearman"]
    if rho["value"] is None:
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
    if auroc is None:
        flag = f"Uncertainty not assessed: {share}, so there is nothing (or only failures) to flag."
    elif auroc >= TRUST_AUROC_WARN:
        flag = f"Uncertainty flags the episodes whose imagined return is off (trust AUROC {auroc:.2f}; {share})."
    else:
        flag = (f"**Warning:** uncertainty does not flag the wrong episodes (trust AUROC {auroc:.2f} < "
                f"{TRUST_AUROC_WARN}; {share}): a confident imagined return may still be wrong.")
    return [ranking, flag]


def _as_mean(entry: dict[str, float | None]) -> dict[str, float | None]:
    return {"mean": entry["value"], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"]}


def _markdown(report: dict[str, Any], folder: Path) -> str:
    gamma = report.get("gamma")
    lines = [
        f"# wm_eval report: {report['task']} in model `{report['model']}`",
        "",
        f"Mode **{report['mode']}**, {report['episodes']} paired episodes per policy, horizon {report['horizon']}, "
        f"seed {report['seed']}, propagation {report['propagation']}, model fingerprint "
        f"`{report['model_fingerprint']}`.",
        "",
        *[f"- {line}" for line in _verdicts(report)],
        "",
        "## Policies (sorted by true return)",
        "",
        "Undiscounted returns, mean over episodes with 95% bootstrap intervals; ranks are 1 = best.",
        "",
        "| policy | imagined return [95% CI] | true return [95% CI] | abs error | uncertainty | rank imagined / true |",
        "|---|---|---|---|---|---|",
    ]
    for p in _by_true_return(report):
        lines.append(f"| {p['name']} | {_interval(p['imagined_return'])} | {_interval(p['true_return'])} | "
                     f"{_num(p['abs_error'])} | {_num(p['uncertainty'], '.3g')} | "
                     f"{p['imagined_rank']} / {p['true_rank']} |")
    lines += [
        "",
        f"## Ranking metrics (discounted returns, γ = {_num(gamma, 'g')}; 95% bootstrap over policies)",
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
        "RMS over dimensions of (imagined - true) / model observation std, mean over running episodes.",
        "",
        "| step | " + " | ".join(str(s) for s in steps) + " |",
        "|---|" + "---|" * len(steps),
        "| error | " + " | ".join(_num(error[s], ".3g") for s in steps) + " |",
        "",
        "## Files",
        "",
        "- [report.json](report.json): every number above, per-episode values, versions and config",
    ]
    lines += [f"- [{name}]({name}): {what}" for name, what in _LINKED_FILES if (folder / name).exists()]
    lines += [f"\n![{title}]({name})" for name, title in _PLOTS if (folder / name).exists()]
    return "\n".join(lines) + "\n"


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
    """The compact table printed to the terminal: one row per policy (best true return first), then
    one line of ranking metrics."""
    policies = _by_true_return(report)
    width = max(len("policy"), *(len(p["name"]) for p in policies))
    rows = [f"{'policy':<{width}}  {'imagined':>10}  {'true':>10}  {'|error|':>9}  {'uncertainty':>11}"]
    rows += [f"{p['name']:<{width}}  {_num(p['imagined_return']['mean']):>10}  {_num(p['true_return']['mean']):>10}  "
             f"{_num(p['abs_error']):>9}  {_num(p['uncertainty'], '.3g'):>11}" for p in policies]
    m = report["metrics"]
    rows.append(f"Spearman {_num(m['spearman'], '.2f')}  Kendall {_num(m['kendall'], '.2f')}  "
                f"Pearson {_num(m['pearson'], '.2f')}  MMRV {_num(m['mmrv'], '.3f')}  "
                f"regret@1 {_num(m['regret_at_1'], '.3f')}  NAE {_num(m['normalized_abs_error'], '.3f')}")
    return "\n".join(rows)
