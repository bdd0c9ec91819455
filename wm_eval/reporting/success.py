"""Success rates in the report: the ``report.md`` section, the terminal column and what they read.

Only for tasks with a success rule (:attr:`wm_eval.tasks.TaskSpec.success`): each policy's
``statistics["success"]`` holds imagined and true success rates with 95% Wilson intervals, and
``metrics_by_statistic["success"]`` the ranking metrics on success rates (Spearman, Pearson and MMRV as
SIMPLER computes them, MMRV in success-rate units, so it is also the normalised one when rates span 0 to 1).
"""

from __future__ import annotations

from typing import Any

__all__ = ["has_success", "success_rate", "success_section", "success_cell"]

_METRICS = ("spearman", "kendall", "pearson", "mmrv", "mmrv_normalized", "regret_at_1")


def has_success(report: dict[str, Any]) -> bool:
    """Whether the report's task defines success (its policies carry success statistics)."""
    return bool(report["policies"]) and "success" in (report["policies"][0].get("statistics") or {})


def success_rate(policy: dict[str, Any], side: str) -> dict[str, Any]:
    """``{mean, ci_low, ci_high}`` of a policy's ``side`` (``"imagined"`` or ``"true"``) success rate."""
    return policy["statistics"]["success"][side]


def _fmt(entry: dict[str, Any], spec: str = ".2f") -> str:
    values = [entry.get(k) for k in ("mean", "ci_low", "ci_high")]
    if values[0] is None:
        return "n/a"
    low, high = ("?" if v is None else format(v, spec) for v in values[1:])
    return f"{format(values[0], spec)} [{low}, {high}]"


def success_cell(policy: dict[str, Any]) -> str:
    """Terminal cell ``imagined/true`` success rates, e.g. ``0.90/0.95``."""
    imagined, true = (success_rate(policy, s)["mean"] for s in ("imagined", "true"))
    return "/".join("n/a" if v is None else f"{v:.2f}" for v in (imagined, true))


def success_section(report: dict[str, Any], policies: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the "Success rates" section (empty for a task without success)."""
    if not has_success(report):
        return []
    lines = ["", "## Success rates", "",
             "Fraction of episodes whose observation meets the task's success rule at some step, imagined and true, "
             "with 95% Wilson intervals.", "",
             "| policy | imagined success [95% CI] | true success [95% CI] | abs error |", "|---|---|---|---|"]
    for p in policies:
        imagined, true = success_rate(p, "imagined"), success_rate(p, "true")
        error = None if None in (imagined["mean"], true["mean"]) else abs(imagined["mean"] - true["mean"])
        lines.append(f"| {p['name']} | {_fmt(imagined)} | {_fmt(true)} | {'n/a' if error is None else f'{error:.2f}'} |")
    metrics = (report.get("metrics_by_statistic") or {}).get("success") or {}
    if metrics:
        lines += ["", "Ranking metrics on success rates (95% two-level bootstrap; MMRV as SIMPLER, in success-rate "
                  "units):", "", "| metric | value [95% CI] |", "|---|---|"]
        for name in _METRICS:
            m = metrics.get(name) or {}
            lines.append(f"| {name} | {_fmt({'mean': m.get('value'), 'ci_low': m.get('ci_low'), 'ci_high': m.get('ci_high')}, '.3f')} |")
    return lines
