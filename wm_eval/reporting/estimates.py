"""The policies' true returns in the report: their order, the ``report.md`` estimates section and the
recommended policy (in ``report.md`` and on the terminal).

Reads ``report.json`` content only. Each policy's ``true_estimate`` is a PPI++ (``method`` ``"ppi..."``),
real-only or model-only estimate; a model-only one (``real_episodes == 0``, ``method`` ``"model-only ..."``)
is the imagined mean with an interval from the model alone, widened by the model's calibrated error, or
no interval when the model stores none. With ``real_episodes=0`` no episode runs in MuJoCo: every true
value is null, so the policies are ordered by imagined return and ``trust.best_policy`` has no probability.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["NO_MUJOCO", "num", "interval", "is_model_only", "has_true_returns", "sorted_policies", "order_note",
           "rank_cell", "estimates_section", "recommendation", "terminal_recommendation"]

NO_MUJOCO = "no episode ran in MuJoCo (real_episodes=0)"
"""Why a report of a model-only run shows no true value."""


def num(value: float | None, spec: str = ".1f") -> str:
    """``value`` formatted with ``spec``; ``"n/a"`` for ``None`` (JSON null), NaN or inf."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def interval(entry: dict[str, float | None], spec: str = ".1f") -> str:
    """``"mean [ci_low, ci_high]"`` of a ``{mean, ci_low, ci_high}`` entry."""
    return f"{num(entry['mean'], spec)} [{num(entry['ci_low'], spec)}, {num(entry['ci_high'], spec)}]"


def is_model_only(estimate: dict[str, Any] | None) -> bool:
    """Whether a ``true_estimate`` rests on the imagined episodes alone (it has no real episode)."""
    return bool(estimate) and estimate.get("real_episodes") == 0


def _all_model_only(report: dict[str, Any]) -> bool:
    return bool(report["policies"]) and all(is_model_only(p.get("true_estimate")) for p in report["policies"])


def has_true_returns(report: dict[str, Any]) -> bool:
    """Whether any policy has a true (MuJoCo) mean return."""
    return any(p["true_return"]["mean"] is not None for p in report["policies"])


def sorted_policies(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The policies, best first: by mean true return (policies without one last), or by mean imagined
    return when no policy has a true one (see :func:`order_note`)."""
    side = "true_return" if has_true_returns(report) else "imagined_return"

    def key(policy: dict[str, Any]) -> float:
        mean = policy[side]["mean"]  # over the paired episodes, as true_rank
        return -math.inf if mean is None else mean

    return sorted(report["policies"], key=key, reverse=True)


def order_note(report: dict[str, Any]) -> str:
    """How :func:`sorted_policies` orders the policies, in words."""
    if has_true_returns(report):
        return "sorted by true return"
    return "sorted by imagined return; no episode ran in MuJoCo" if _all_model_only(report) else \
        "sorted by imagined return; no policy has a true return"


def rank_cell(policy: dict[str, Any]) -> str:
    """``"3 / 1"``: the imagined and true ranks, ``n/a`` for a rank that does not exist."""
    return " / ".join("n/a" if policy.get(k) is None else str(policy[k]) for k in ("imagined_rank", "true_rank"))


def _estimates_text(report: dict[str, Any]) -> str:
    """How many episodes ran in MuJoCo and what the estimates are, from their ``method``."""
    methods = [p["true_estimate"]["method"] for p in report["policies"]]
    bare = [m.startswith("model-only (no calibrated") for m in methods]
    if _all_model_only(report):
        if all(bare):
            how = "with no interval: the model stores no calibrated error of its imagined returns"
        else:
            how = ("with intervals from the model alone: the spread of the imagined returns widened by the model's "
                   "calibrated error" + (", or no interval where the model stores none" if any(bare) else ""))
        return (f"No episode ran in MuJoCo (real_episodes=0), so the estimates are the imagined means {how} (column "
                "'method'); nothing checks them against MuJoCo.")
    if any(m.startswith("ppi") for m in methods):
        text = ("Estimates combine them with the imagined episodes by PPI++ (λ tunes how far the imagined returns are "
                "trusted: 0 = real episodes only) with Student-t intervals; *worth* is the number of real episodes "
                "alone that would give the same precision.")
    else:
        text = "Every episode is paired, so the estimates are the real episodes' means with Student-t intervals."
    if any(is_model_only(p["true_estimate"]) for p in report["policies"]):
        text += " A policy with no real episode has a model-only estimate: its imagined mean (column 'method')."
    return f"{_real_share(report)} {text}"


def _real_share(report: dict[str, Any]) -> str:
    """How many of the episodes were also run in MuJoCo, in words."""
    if report.get("real_episodes") is not None:
        return f"{report['real_episodes']} of {report['episodes']} episodes per policy were also run in MuJoCo."
    return (f"{report['real_episodes_total']} real (MuJoCo) episodes in total (real_budget {report['real_budget']}), "
            "placed by wm_eval: 2 per policy, the rest to the contenders for first place (column 'real episodes').")


def estimates_section(report: dict[str, Any]) -> list[str]:
    """Markdown lines of the "True return estimates" section: the policies' TRUE mean returns (PPI++,
    real-only or model-only) with their intervals, and the recommended policy."""
    first = report["policies"][0].get("true_estimate") if report["policies"] else None
    if not first:
        return []
    level = num(100 * first["confidence"], "g")
    lines = ["", f"## True return estimates ({level}% intervals for the policy's true mean)", "",
             _estimates_text(report), "",
             "| policy | true return estimate [CI] | method | real episodes | λ | worth (real episodes) |",
             "|---|---|---|---|---|---|"]
    for p in sorted_policies(report):
        e = p["true_estimate"]
        lam, worth = (None, None) if is_model_only(e) else (e["lam"], e["effective_real_episodes"])
        lines.append(f"| {p['name']} | {interval(e)} | {e['method']} | {e['real_episodes']} | {num(lam, '.2f')} "
                     f"| {num(worth, '.1f')} |")
    line = recommendation(report)
    return lines + (["", line] if line else [])


def _basis(report: dict[str, Any], best: dict[str, Any]) -> str:
    """``" on the imagined means alone, as ..."`` when the recommendation rests on imagined returns only,
    else ``""``."""
    if _all_model_only(report):
        return " on the imagined means alone, as no episode ran in MuJoCo"
    chosen = next((p for p in report["policies"] if p["name"] == best["name"]), {})
    alone = is_model_only(chosen.get("true_estimate"))
    return " on its imagined mean alone, as it ran no real episode" if alone else ""


def recommendation(report: dict[str, Any]) -> str | None:
    """The ``report.md`` line naming the recommended policy (``trust.best_policy``), or ``None``."""
    best = report["trust"].get("best_policy") or {}
    if not best.get("name"):
        return None
    return (f"Recommended: **{best['name']}**{_basis(report, best)} (estimated true return {num(best['mean'])}; "
            f"probability that it is truly the best: {num(best.get('probability'), '.2f')}).")


def terminal_recommendation(report: dict[str, Any], real: int, total: int) -> str | None:
    """The terminal line naming the recommended policy, given ``real`` of ``total`` episodes run in MuJoCo."""
    best = report["trust"].get("best_policy") or {}
    if not best.get("name"):
        return None
    return (f"Recommended: {best['name']}{_basis(report, best)} (P(truly best) {num(best.get('probability'), '.2f')}; "
            f"{real} of {total} episodes run in MuJoCo)")
