"""From finished units to the numbers of an :class:`~wm_eval.types.Evaluation`.

Per policy: every statistic imagined and true with its interval (bootstrap for returns, Wilson for
success), the absolute error, the mean uncertainty; across policies: DOPE and SIMPLER ranking
metrics per statistic with a two-level bootstrap (policies, then paired episodes within each);
per horizon step: the state error over pairs still running on both sides and the share of pairs
whose termination has diverged; and the trust signal.

**Trust score** (one definition everywhere: report, Rerun, README): an episode's ensemble
disagreement summed over its imagined steps, each step weighted by how far it lies from the model's
training data (:mod:`~wm_eval.evaluation.trust_signal`; disagreement alone for a model that stores no
coverage data). Disagreement compounds along a rollout, and an imagined episode that ends early has
less of it only if it was confident. ``trust.auroc`` is its AUROC for flagging episodes whose imagined
undiscounted return is off by more than 20%, with a control: the AUROC of the imagined episode length
alone (``trust.length_auroc``), which a useful trust score beats. Per policy, ``risk`` and ``flagged``
(:func:`policy_trust`); ``trust.policy_auroc`` is the AUROC of ``risk`` for policies whose imagined mean
return is off by more than 25%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wm_eval.evaluation import estimators as E
from wm_eval.evaluation import metrics as M
from wm_eval.evaluation import trust_signal as T
from wm_eval.evaluation.statistics import TERMINATED, Statistic, interval
from wm_eval.evaluation.plan import Unit
from wm_eval.evaluation.units import UnitResult
from wm_eval.types import METRIC_NAMES

__all__ = ["merge_values", "policy_values", "paired", "policy_summary", "policy_trust", "true_estimates", "ranking",
           "horizon_error", "trust"]


def merge_values(results: Sequence[UnitResult], ranges: Sequence[tuple[int, int]], episodes: int
                 ) -> dict[str, np.ndarray]:
    """One policy's per-episode values ``[episodes]`` from its units (``ranges``: each unit's episodes),
    imagined-only units first, paired ones over them (their imagined values are the same)."""
    order = sorted(range(len(results)), key=lambda k: not np.isnan(results[k].values["true_return"]).all())
    out: dict[str, np.ndarray] = {}
    dtypes: dict[str, np.dtype] = {}
    for k in order:
        (start, stop), values = ranges[k], results[k].values
        for name, v in values.items():
            if name not in out:
                out[name] = np.full(episodes, np.nan)
            out[name][start:stop] = v
            dtypes[name] = v.dtype  # paired units come last: their dtypes (bool, int) win when nothing is missing
    return {k: v if np.isnan(v).any() else v.astype(dtypes[k]) for k, v in out.items()}


def policy_values(units: Sequence[Unit], results: dict[str, UnitResult], policies: int, episodes: int
                  ) -> list[dict[str, np.ndarray]]:
    """Per policy, its per-episode values assembled from its units."""
    out = []
    for i in range(policies):
        mine = [u for u in units if u.policy == i]
        out.append(merge_values([results[u.id] for u in mine], [(u.start, u.stop) for u in mine], episodes))
    return out


def paired(values: dict[str, np.ndarray], real: int) -> dict[str, np.ndarray]:
    """The first ``real`` episodes of every per-episode array: those with a real counterpart."""
    return {k: v[:real] for k, v in values.items()}


def policy_summary(values: dict[str, np.ndarray], statistics: Sequence[Statistic], *, seed: int,
                   n_resamples: int, real: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(statistics map, summary)`` of one policy (see :class:`~wm_eval.types.PolicyResult`).

    Imagined statistics use every episode; true statistics and the paired comparisons (``abs_error``,
    ``final_state_error``) the first ``real`` (default: all), which have a real counterpart.
    """
    pairs = paired(values, len(values["imagined_return"]) if real is None else real)
    none = {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}  # no real episode (real_episodes=0)

    def sides(s: Statistic) -> dict[str, dict[str, float]]:
        true = pairs[f"true_{s.name}"]
        return {"imagined": interval(s, values[f"imagined_{s.name}"], seed=seed, n_resamples=n_resamples),
                "true": interval(s, true, seed=seed, n_resamples=n_resamples) if len(true) else none}

    stats = {s.name: sides(s) for s in statistics}
    summary = {
        "imagined_return": stats["return"]["imagined"], "true_return": stats["return"]["true"],
        "imagined_return_discounted": stats["discounted_return"]["imagined"],
        "true_return_discounted": stats["discounted_return"]["true"],
        "abs_error": float(abs(pairs["imagined_return"].mean() - pairs["true_return"].mean()))
        if len(pairs["true_return"]) else math.nan,
        "uncertainty": float(values["imagined_uncertainty"].mean()),
        "trust_score": float(values["imagined_trust_score"].mean()),
        "final_state_error": float(pairs["final_state_error"].mean()) if len(pairs["true_return"]) else math.nan,
        "terminated": sides(TERMINATED),
    }
    return stats, summary


def true_estimates(values: Sequence[dict[str, np.ndarray]], statistics: Sequence[Statistic], *,
                   real: Sequence[int], confidence: float, coverage: Any = None,
                   flagged: Sequence[bool] | None = None, horizon: int | None = None
                   ) -> list[dict[str, dict[str, Any]]]:
    """Per policy and statistic, the estimate of the policy's TRUE mean with its interval
    (:mod:`~wm_eval.evaluation.estimators`): PPI++ from the ``real`` paired episodes and the imagined-only
    rest (``real``: per policy), with one ``lambda`` pooled over the policies, or the real-only Student-t interval when every
    episode is paired (or an imagined value is not finite). A policy with 0 real episodes gets the
    model-alone estimate, whose interval (returns only) is widened by the calibrated error the model's
    ``coverage`` stores for ``flagged`` (per policy) or unflagged policies, relative to at least the
    model's return floor at ``horizon`` (:meth:`~wm_eval.models.coverage.Coverage.return_floor`); an error
    calibrated at another horizon gives no interval."""
    out: list[dict[str, dict[str, Any]]] = [{} for _ in values]
    quantiles = E.error_quantiles_at(getattr(coverage, "risk", None), horizon)
    floor = coverage.return_floor(horizon) if coverage is not None and horizon is not None else 0.0
    for s in statistics:
        imagined = [v[f"imagined_{s.name}"] for v in values]
        true = [v[f"true_{s.name}"][:n] for v, n in zip(values, real)]
        lam = E.pooled_lambda(true, [f[:n] for f, n in zip(imagined, real)], [f[n:] for f, n in zip(imagined, real)])
        for i, (y, f, n) in enumerate(zip(true, imagined, real)):
            if n == 0:
                estimate = E.model_only(f, error_quantiles=quantiles if s.name == "return" else None,
                                        flagged=bool(flagged[i]) if flagged is not None else False, floor=floor,
                                        confidence=confidence)
            elif n == len(f) or not np.isfinite(f).all():  # nothing to add, or a diverged model
                estimate = E.real_mean(y, confidence=confidence)
            else:
                estimate = E.ppi_mean(y, f[:n], f[n:], confidence=confidence, lam=lam)
            out[i][s.name] = {**estimate.as_dict(), "confidence": confidence}
    return out


def ranking(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray], *, seed: int,
            n_resamples: int) -> dict[str, dict[str, float]]:
    """Ranking metrics over policies from per-episode values (two-level bootstrap intervals)."""
    if any(len(t) == 0 for t in truth):  # real_episodes=0: nothing to compare with
        return {n: {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan} for n in METRIC_NAMES}
    pred, true = np.array([p.mean() for p in predicted]), np.array([t.mean() for t in truth])
    # undefined with fewer than two policies, equal true values, or a diverged (non-finite) imagined episode
    if len(pred) < 2 or not (np.isfinite(pred).all() and np.isfinite(true).all()) or np.ptp(true) == 0:
        return {n: {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan} for n in METRIC_NAMES}
    return M.ranking_metrics(predicted=pred, ground_truth=true, seed=seed, n_resamples=n_resamples,
                             predicted_episodes=list(predicted), true_episodes=list(truth))


def horizon_error(results: Sequence[UnitResult], pairs: int) -> dict[str, Any]:
    """The horizon error over all units: see :attr:`wm_eval.types.Evaluation.horizon_error`."""
    error_sum = np.sum([r.error_sum for r in results], axis=0)
    running = np.sum([r.running for r in results], axis=0)
    diverged = np.sum([r.diverged for r in results], axis=0)
    error = np.where(running > 0, error_sum / np.maximum(running, 1), np.nan)
    return {"error": error, "running": running, "diverged": diverged, "pairs": int(pairs),
            "diverged_fraction": diverged / max(pairs, 1)}


def _either_way(auroc: float) -> float:
    """The better of ``auroc`` and ``1 - auroc`` (``nan`` stays ``nan``)."""
    return auroc if math.isnan(auroc) else max(auroc, 1.0 - auroc)


def policy_trust(values: dict[str, np.ndarray], coverage: Any, horizon: int) -> dict[str, Any]:
    """One policy's imagined-side trust: ``coverage`` (mean episode coverage distance), ``risk_features``,
    ``risk`` (``None`` when the model stores no coverage data or no risk model; 1 when the imagination
    diverged) and ``flagged``."""
    if coverage is None:
        return {"coverage": None, "risk_features": None, "risk": None, "flagged": False}
    if T.imagination_diverged(values):
        return {"coverage": float(np.mean(values["imagined_coverage"])), "risk_features": None,
                "risk": None if coverage.risk is None else 1.0, "flagged": coverage.risk is not None}
    features = T.policy_features(values, coverage, horizon)
    risk = None if coverage.risk is None else T.policy_risk(features, coverage.risk)
    return {"coverage": float(np.mean(values["imagined_coverage"])), "risk_features": features, "risk": risk,
            "flagged": risk is not None and risk > T.RISK_FLAG}


def trust(values: Sequence[dict[str, np.ndarray]], summaries: Sequence[dict[str, Any]], names: Sequence[str],
          coverage: Any) -> dict[str, Any]:
    """How well the trust score flags episodes whose imagined return is off, and ``risk`` the policies
    (``values``: the paired episodes; ``summaries``: the policies' :func:`policy_trust`)."""
    score = np.concatenate([v["imagined_trust_score"] for v in values])
    length = np.concatenate([v["imagined_length"] for v in values]).astype(float)
    imagined = np.concatenate([v["imagined_return"] for v in values])
    true = np.concatenate([v["true_return"] for v in values])
    off = M.return_is_off(imagined_return=imagined, true_return=true)
    risks = [s["risk"] for s in summaries]
    policy_auroc, policies_off = math.nan, None
    if all(r is not None for r in risks) and all(len(v["true_return"]) for v in values):
        means = np.array([[v["imagined_return"].mean(), v["true_return"].mean()] for v in values])
        wrong = M.return_is_off(imagined_return=means[:, 0], true_return=means[:, 1], threshold=0.25)
        policy_auroc, policies_off = M.auroc(scores=np.array(risks), labels=wrong), int(wrong.sum())
    if coverage is None:
        signal = "disagreement only: the model stores no coverage data (an older or user checkpoint); risk is not estimated"
    elif coverage.risk is None:
        signal = "disagreement and coverage; the model stores no risk model, so risk is not estimated"
    else:
        signal = f"disagreement and coverage; risk model fitted on {coverage.risk['fitted_on']}"
    return {
        "signal": signal,
        "flagged": [n for n, s in zip(names, summaries) if s["flagged"]],
        "policy_auroc": policy_auroc,
        "policies_off": policies_off,
        "risk_threshold": T.RISK_FLAG,
        "auroc": M.auroc(scores=score, labels=off),
        "length_auroc": M.auroc(scores=-length, labels=off),
        "auroc_length_control": _either_way(M.auroc(scores=-length, labels=off)),
        "fraction_off": float(off.mean()) if off.size else math.nan,
        "off_episodes": int(off.sum()),
        "episodes": int(off.size),
        "threshold": 0.2,
        "score": "trust_score",
        "definition": "trust score = ensemble disagreement summed over an episode's imagined steps, each step "
                      "weighted by max(1, its distance to the training data); auroc = its "
                      "AUROC for flagging episodes whose imagined undiscounted return is off by more than 20% of "
                      "max(|true|, 10% of the largest |true|); length_auroc = the same for shorter imagined "
                      "episodes; auroc_length_control = the imagined length's AUROC in whichever direction "
                      "(shorter or longer flagged) scores higher: the control a useful trust score beats; risk = estimated probability that "
                      "a policy's imagined mean return is off by more than 20%, flagged when risk > 0.5; "
                      "policy_auroc = AUROC of risk for policies off by more than 25%",
    }
