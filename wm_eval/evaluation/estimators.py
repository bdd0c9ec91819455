"""Estimates of a policy's TRUE mean from few real episodes and many imagined ones.

**PPI++** (prediction-powered inference with power tuning; Angelopoulos, Duchi and Zrnic, 2023): with
``n`` paired episodes (real outcome ``Y``, imagined outcome ``f`` from the same start state) and ``N``
imagined-only episodes ``f_u``,

    theta = mean(lambda * f_u) + mean(Y - lambda * f)

``lambda`` minimises the estimate's variance (``cov(Y, f) / ((1 + n/N) var([f, f_u]))``, clipped to
``[0, 1]``), so the estimate falls back to the real-only mean when imagined and real episodes are
uncorrelated, and leans on the imagined episodes as far as they track the real ones. Its standard
error is ``sqrt(var(lambda f_u) / N + var(Y - lambda f) / n)``.

**One lambda per evaluation.** Tuned per policy from 3 paired episodes, lambda is mostly noise, and
that noise costs coverage (measured by ``examples/calibration.py``: 0.03 to 0.04 below the real-only
interval's at n = 3). :func:`pooled_lambda` tunes one lambda from all policies' paired episodes
(covariances and variances taken within each policy, then pooled), which reports use.

Intervals: ``"z"`` reproduces ``ppi_py.ppi_mean_ci`` exactly (normal quantile, ``ddof=0``; the tests
check it to 1e-9). ``"t"`` (the default, what reports use) is small-sample-correct: ``ddof=1``
variances and Student-t quantiles with ``n - 1`` degrees of freedom, because with 3 real episodes a
normal quantile undercovers (about 0.8 instead of 0.9 for a nominal 90% interval).

**Model alone** (:func:`model_only`, a policy with 0 real episodes): the imagined mean, with an interval
widened by the model's calibrated error: ``mean ± (q se + e max(|mean|, floor))`` where ``e`` is the
relative error of imagined means that held-out policies stayed within at the confidence level
(``error_quantiles`` of the model's risk model, separately for flagged and unflagged policies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from wm_eval.errors import WmEvalError

__all__ = ["Estimate", "ppi_mean", "pooled_lambda", "real_mean", "model_only", "error_quantiles_at", "best_policy"]


@dataclass(frozen=True)
class Estimate:
    """An estimate of a true mean with its interval.

    Attributes:
        mean, ci_low, ci_high: the estimate and its two-sided interval at ``confidence``.
        se: its standard error; method: ``"ppi++ (t)"``, ``"ppi++ (z)"`` or ``"real-only (t)"``.
        real_episodes, imagined_episodes: ``n`` paired and ``N`` imagined-only episodes used.
        lam: the power-tuning ``lambda`` (0 for real-only).
        effective_real_episodes: how many real episodes alone would give the same standard error
            (``var(Y) / se**2``): what the imagined episodes bought.
    """

    mean: float
    ci_low: float
    ci_high: float
    se: float
    method: str
    real_episodes: int
    imagined_episodes: int
    lam: float
    effective_real_episodes: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _lambda(y: np.ndarray, f: np.ndarray, f_u: np.ndarray) -> float:
    """The variance-optimal ``lambda`` of PPI++ for a mean, clipped to ``[0, 1]`` (as ``ppi_py`` computes it)."""
    n, big_n = len(y), len(f_u)
    cov = np.mean((y - y.mean()) * (f - f.mean()))
    var = np.var(np.concatenate([f, f_u]), ddof=1)
    if not var > 0:
        return 0.0
    return float(np.clip(cov / ((1 + n / big_n) * var), 0.0, 1.0))


def pooled_lambda(ys: Sequence[np.ndarray], fs: Sequence[np.ndarray], f_us: Sequence[np.ndarray]) -> float:
    """One PPI++ ``lambda`` for several policies: ``sum_p n_p cov_p(Y, f) / sum_p n_p (1 + n_p/N_p) var_p([f, f_u])``
    (each policy's covariance and variance around its own means), clipped to ``[0, 1]``."""
    num = den = 0.0
    for y, f, f_u in zip(ys, fs, f_us):
        y, f, f_u = (np.asarray(a, dtype=np.float64).ravel() for a in (y, f, f_u))
        if len(y) < 2 or len(f_u) < 1 or not (np.isfinite(f).all() and np.isfinite(f_u).all()):
            continue
        num += len(y) * np.mean((y - y.mean()) * (f - f.mean()))
        den += len(y) * (1 + len(y) / len(f_u)) * np.var(np.concatenate([f, f_u]), ddof=1)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0


def ppi_mean(y: np.ndarray, f: np.ndarray, f_u: np.ndarray, *, confidence: float = 0.95,
             interval: str = "t", lam: float | None = None) -> Estimate:
    """PPI++ estimate of the mean of ``y``.

    Args:
        y: ``[n]`` real outcomes; f: ``[n]`` imagined outcomes of the same episodes.
        f_u: ``[N]`` imagined outcomes of episodes without a real counterpart (``N >= 1``).
        confidence: two-sided level; interval: ``"t"`` (small-sample) or ``"z"`` (as ``ppi_py``).
        lam: a given ``lambda`` (e.g. :func:`pooled_lambda`); ``None`` tunes it from these episodes.
    """
    y, f, f_u = (np.asarray(a, dtype=np.float64).ravel() for a in (y, f, f_u))
    n, big_n = len(y), len(f_u)
    if len(f) != n or n < 2 or big_n < 1:
        raise WmEvalError(f"PPI++ needs at least 2 paired episodes and 1 imagined-only one (got {n} paired, "
                          f"{len(f)} imagined paired, {big_n} imagined-only)")
    if not (np.isfinite(y).all() and np.isfinite(f).all() and np.isfinite(f_u).all()):
        raise WmEvalError("PPI++ got a non-finite outcome (a diverged imagined episode?)")
    lam = _lambda(y, f, f_u) if lam is None else float(lam)
    mean = float(np.mean(lam * f_u) + np.mean(y - lam * f))
    ddof = 1 if interval == "t" else 0
    if interval not in ("t", "z"):
        raise WmEvalError(f"unknown interval '{interval}': use t or z")
    se = math.sqrt(np.var(lam * f_u, ddof=ddof if big_n > 1 else 0) / big_n + np.var(y - lam * f, ddof=ddof) / n)
    q = _quantile(confidence, n - 1 if interval == "t" else None)
    var_y = np.var(y, ddof=ddof)
    ess = float(var_y / se**2) if se > 0 else math.inf
    return Estimate(mean, mean - q * se, mean + q * se, se, f"ppi++ ({interval})", n, big_n, lam, ess)


def real_mean(y: np.ndarray, *, confidence: float = 0.95) -> Estimate:
    """The real-only estimate: mean of ``y`` ``[n]`` with a Student-t interval (NaN for ``n = 1``)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) < 2:
        mean = float(y.mean()) if len(y) else math.nan
        return Estimate(mean, math.nan, math.nan, math.nan, "real-only (1 episode: no interval)", len(y), 0, 0.0,
                        float(len(y)))
    se = float(np.std(y, ddof=1) / math.sqrt(len(y)))
    q = _quantile(confidence, len(y) - 1)
    mean = float(y.mean())
    return Estimate(mean, mean - q * se, mean + q * se, se, "real-only (t)", len(y), 0, 0.0, float(len(y)))


def error_quantiles_at(risk: dict[str, Any] | None, horizon: int | None) -> dict[str, Any] | None:
    """A risk model's ``error_quantiles`` if they apply to episodes of ``horizon`` steps, else ``None``.

    Errors are calibrated on episodes of one length (the risk model's ``horizon``) and apply only
    there; a risk model without a ``horizon`` applies at any length."""
    risk = risk or {}
    quantiles = risk.get("error_quantiles")
    if quantiles is None or risk.get("horizon") is None:
        return quantiles
    return quantiles if risk["horizon"] == horizon else None


def model_only(f_u: np.ndarray, *, error_quantiles: dict | None, flagged: bool, floor: float,
               confidence: float = 0.95) -> Estimate:
    """The model-alone estimate of a policy's true mean from its imagined outcomes ``f_u`` ``[N]``.

    Args:
        error_quantiles: ``{"levels": [...], "flagged": [...], "unflagged": [...]}``: per level, the
            relative error ``|imagined - true| / max(|imagined|, floor)`` that held-out policies stayed
            within (``None``: the model stores none, so there is no interval).
        flagged: whether the trust signal flags this policy (its error is the flagged one).
        floor: the smallest magnitude errors are relative to (10% of the largest imagined mean).
    """
    f_u = np.asarray(f_u, dtype=np.float64).ravel()
    mean = float(f_u.mean())
    se = float(np.std(f_u, ddof=1) / math.sqrt(len(f_u))) if len(f_u) > 1 else 0.0
    if error_quantiles is None or not np.isfinite(f_u).all():
        return Estimate(mean, math.nan, math.nan, math.nan, "model-only (no calibrated model error: no interval)",
                        0, len(f_u), 1.0, 0.0)
    levels = list(error_quantiles["levels"])
    at = next((i for i, level in enumerate(levels) if level >= confidence - 1e-12), len(levels) - 1)
    error = float(error_quantiles["flagged" if flagged else "unflagged"][at])
    half = _quantile(confidence, len(f_u) - 1 if len(f_u) > 1 else None) * se + error * max(abs(mean), floor)
    capped = "" if levels[at] >= confidence - 1e-12 else f", error quantile capped at {levels[at]:g}"
    return Estimate(mean, mean - half, mean + half, half / _quantile(confidence, None),
                    f"model-only (calibrated {'flagged' if flagged else 'unflagged'} error{capped})", 0, len(f_u),
                    1.0, 0.0)


def _quantile(confidence: float, df: int | None) -> float:
    if not 0 < confidence < 1:
        raise WmEvalError(f"confidence must be in (0, 1), got {confidence}")
    p = 0.5 + confidence / 2
    return float(stats.norm.ppf(p) if df is None else stats.t.ppf(p, df))


def best_policy(means: Sequence[float], ses: Sequence[float], real_episodes: Sequence[int], names: Sequence[str], *,
                seed: int, draws: int = 20_000) -> dict[str, object]:
    """The policy with the highest estimated true mean and the probability that it is truly best.

    The probability treats each policy's true mean as ``mean + se * T`` (``T`` Student-t with
    ``real_episodes - 1`` degrees of freedom, independent across policies) and counts, over ``draws``
    seeded joint draws, how often the recommended policy comes out on top.
    """
    best = int(np.argmax(means))
    if min(real_episodes, default=0) == 0:  # a model-alone estimate: its error is systematic, not a t draw
        return {"name": names[best], "probability": math.nan, "mean": float(means[best]), "draws": 0,
                "definition": "the policy with the highest estimated true mean return (no probability: some "
                              "estimates rest on the imagined episodes alone, whose error is shared, not random)"}
    if not np.isfinite(np.asarray(ses, dtype=float)).all():
        return {"name": names[best], "probability": math.nan, "mean": float(means[best]), "draws": 0,
                "definition": "the policy with the highest estimated true mean return (no probability: an "
                              "interval is undefined)"}
    rng = np.random.default_rng(seed)
    samples = np.stack([m + s * rng.standard_t(max(1, n - 1), size=draws) for m, s, n in zip(means, ses, real_episodes)])
    return {"name": names[best], "probability": float(np.mean(np.argmax(samples, axis=0) == best)),
            "mean": float(means[best]), "draws": draws,
            "definition": "the policy with the highest estimated true mean return; probability = share of joint "
                          "draws (each true mean ~ estimate + se x Student-t) in which it is the best"}
