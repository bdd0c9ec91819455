"""The report's figures, drawn from ``report.json`` content only (matplotlib, Agg, no pyplot state).

Each function draws one figure into a PNG and returns its path; :func:`write_plots` draws all three
under the names that ``report.md`` links.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wm_eval.fileio import atomic_write as _atomic_write
from wm_eval.reporting.success import has_success, success_rate
from wm_eval.reporting.trust import risk_threshold

__all__ = ["plot_returns", "plot_horizon_error", "plot_uncertainty", "write_plots"]

_DPI = 120
FLAG_COLOR = "#e00000"
"""The colour that marks flagged policies (no other element of the figures uses it)."""


def _floats(values: Any) -> np.ndarray:
    """``None`` (JSON null) to NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _metric(report: dict[str, Any], name: str, spec: str) -> str:
    value = report["metrics"].get(name)
    return "n/a" if value is None else format(value, spec)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))
    return path


def _error_bars(entries: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Means and ``[2, n]`` distances to the interval ends (0 where an end is unknown)."""
    mean = _floats([e["mean"] for e in entries])
    low, high = _floats([e["ci_low"] for e in entries]), _floats([e["ci_high"] for e in entries])
    return mean, np.nan_to_num(np.abs(np.stack([mean - low, high - mean])))


def _mark_flagged(ax: Any, report: dict[str, Any], x: np.ndarray, y: np.ndarray) -> None:
    """Ring the flagged policies' points ``(x, y)`` in :data:`FLAG_COLOR`, with a legend entry."""
    flagged = np.array([bool(p.get("flagged")) for p in report["policies"]], dtype=bool)
    shown = flagged & np.isfinite(x) & np.isfinite(y)
    if shown.any():
        ax.scatter(x[shown], y[shown], s=160, facecolors="none", edgecolors=FLAG_COLOR, linewidths=2, zorder=3,
                   label=f"flagged (risk > {risk_threshold(report):g})")


def plot_returns(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Imagined vs true mean return per policy, both 95% intervals as error bars, and ``y = x``; flagged
    policies ringed in red (names in red too)."""
    policies = report["policies"]
    true, true_err = _error_bars([p["true_return"] for p in policies])
    imagined, imagined_err = _error_bars([p["imagined_return"] for p in policies])
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    ax.errorbar(true, imagined, xerr=true_err, yerr=imagined_err, fmt="o", ms=5, capsize=3, lw=1)
    ends = np.concatenate([true - true_err[0], true + true_err[1], imagined - imagined_err[0],
                           imagined + imagined_err[1]])
    ends = ends[np.isfinite(ends)]
    if ends.size:
        lo, hi = ends.min(), ends.max()
        pad = 0.05 * (hi - lo) or 1.0
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", ls="--", lw=1, label="imagined = true")
    _mark_flagged(ax, report, true, imagined)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="upper left", fontsize=8)
    for p, x, y in zip(policies, true, imagined):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(p["name"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=FLAG_COLOR if p.get("flagged") else "black")
    ax.set_xlabel("true return (MuJoCo)")
    ax.set_ylabel("imagined return (world model)")
    ax.set_title(f"{report['task']}: Spearman {_metric(report, 'spearman', '.2f')}, "
                 f"MMRV {_metric(report, 'mmrv_normalized', '.3f')} of spread (discounted)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_horizon_error(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Normalised state error vs horizon step (mean over pairs running on both sides; log scale when
    the positive errors span more than two decades) and, below, the fraction of pairs whose
    termination has diverged (one side ended, the other not), so no fallen episode goes unseen."""
    error = _floats(report["horizon_error"])
    steps = np.arange(len(error))
    fig = Figure(figsize=(6, 5.5))
    ax, below = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    pairs = max(int(report.get("horizon_pairs") or 1), 1)
    below.plot(steps, _floats(report.get("horizon_diverged", np.zeros(len(error)))) / pairs, color="C3", lw=1.5)
    below.set_ylabel("termination\ndiverged", fontsize=8)
    below.set_ylim(0, 1)
    below.set_xlabel("horizon step")
    below.grid(alpha=0.3)
    positive = error[np.isfinite(error) & (error > 0)]
    log = positive.size > 1 and positive.max() > 100 * positive.min()
    shown = np.where(error > 0, error, np.nan) if log else error
    ax.plot(steps, shown, lw=1.5)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("state error (RMS, in model obs std)")
    ax.set_title(f"{report['task']}: imagined vs true state, {report['mode']}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_uncertainty(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Per-episode trust score (``trust_score``: summed disagreement, coverage-weighted) vs ``|imagined - true|``
    return, per policy."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for p in report["policies"]:
        episodes = p["episodes"]
        error = np.abs(_floats(episodes["imagined_return"]) - _floats(episodes["true_return"]))
        score = episodes.get("trust_score", episodes["total_uncertainty"])  # reports before trust_score
        ax.scatter(_floats(score), error, s=16, alpha=0.8, label=p["name"])
    ax.set_xlabel("episode trust score (summed disagreement, coverage-weighted when the model stores coverage)")
    ax.set_ylabel("|imagined - true| return")
    auroc = report["trust"].get("auroc")
    ax.set_title(f"{report['task']}: trust AUROC {'n/a' if auroc is None else f'{auroc:.2f}'} "
                 "(does uncertainty flag wrong episodes?)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_success(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Imagined vs true success rate per policy with 95% Wilson intervals, and ``y = x``."""
    policies = report["policies"]
    true, true_err = _error_bars([success_rate(p, "true") for p in policies])
    imagined, imagined_err = _error_bars([success_rate(p, "imagined") for p in policies])
    fig = Figure(figsize=(6, 5.5))
    ax = fig.add_subplot()
    ax.errorbar(true, imagined, xerr=true_err, yerr=imagined_err, fmt="o", ms=5, capsize=3, lw=1, color="tab:green")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="imagined = true")
    for p, x, y in zip(policies, true, imagined):
        if np.isfinite(x) and np.isfinite(y):
            ax.annotate(p["name"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    metrics = report["metrics_by_statistic"]["success"]
    value = {k: (metrics.get(k) or {}).get("value") for k in ("pearson", "mmrv")}
    ax.set_title(f"{report['task']} success rate: Pearson {_num(value['pearson'])}, MMRV {_num(value['mmrv'], '.3f')}",
                 fontsize=10)
    ax.set_xlabel("true success rate (MuJoCo)")
    ax.set_ylabel("imagined success rate (world model)")
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_plots(folder: str | os.PathLike[str], report: dict[str, Any]) -> list[Path]:
    """``returns.png``, ``horizon_error.png``, ``uncertainty.png`` and (for tasks with a success rule)
    ``success.png`` in ``folder``; their paths."""
    folder = Path(folder)
    paths = [plot_returns(report, folder / "returns.png"), plot_horizon_error(report, folder / "horizon_error.png"),
             plot_uncertainty(report, folder / "uncertainty.png")]
    return paths + ([plot_success(report, folder / "success.png")] if has_success(report) else [])
