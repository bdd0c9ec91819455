"""Metrics that score predicted policy performance against ground truth.

The ranking metrics copy their reference implementations rather than paraphrase them:

* **DOPE** (Fu et al. 2021, ``google-research/deep_ope``, ``plots.ipynb``): per task,
  normalise by the worst and best ground-truth values among the policies,
  ``gt_n = (gt - worst) / (best - worst)`` and ``pred_n = min((pred - worst) / (best - worst), 2)``;
  then ``normalized_abs_error = mean|pred_n - gt_n|``, ``rank_correlation = spearman(gt_n, pred_n)``
  and ``regret@k = (max(gt_n) - max(gt_n[top-k by pred_n])) / max(gt_n)``. Error bars come from a
  bootstrap over policies that keeps the full-set normalisation fixed (so ``max(gt_n)`` is 1 on the
  full set but can be below 1 in a resample, which is why the division is there).
* **SIMPLER** (Li et al. 2024, ``simpler-env/SimplerEnv``, ``simpler_env/utils/metrics.py``):
  ``pearson_correlation`` and ``mean_maximum_rank_violation``. MMRV is asymmetric and takes no
  normalisation: ``mean_i max_j |gt_i - gt_j| * 1[(pred_i > pred_j) != (gt_i > gt_j)]``.

Every function comparing a prediction with the truth takes ``predicted=`` and ``ground_truth=`` by
keyword. Inputs are array-likes, scalar outputs are Python floats. A metric that is undefined for its
input (a correlation of a constant vector, an AUROC with one class) is ``nan``, never an exception,
and the bootstrap skips such resamples.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from wm_eval.errors import SpaceMismatchError

__all__ = [
    "DOPE_GAMMA", "DOPE_CLIP", "discounted_return", "returns",
    "spearman", "kendall", "pearson", "mmrv",
    "dope_normalize", "normalized_abs_error", "regret_at_k",
    "bootstrap_ci", "bootstrap_over_policies",
    "auroc", "return_is_off", "trust_auroc", "ranking_metrics",
]  # fmt: skip

DOPE_GAMMA = 0.995
"""Discount of the off-policy-evaluation literature (DOPE plots "Return (d=0.995)")."""
DOPE_CLIP = 2.0
"""Upper clip of DOPE's normalised predictions (``np.minimum(..., 2)`` in ``plots.ipynb``)."""

PairMetric = Callable[..., float]
"""A metric called as ``fn(predicted=..., ground_truth=...)`` returning a float (nan if undefined)."""


def _pair(predicted: ArrayLike, ground_truth: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(ground_truth, dtype=np.float64)
    if p.ndim != 1 or p.shape != g.shape:
        raise SpaceMismatchError(
            f"predicted {p.shape} and ground_truth {g.shape} must be 1-D and of equal length "
            "(one value per policy or episode)"
        )
    return p, g


def returns(rewards: ArrayLike, *, mask: ArrayLike | None = None, gamma: float | None = DOPE_GAMMA) -> np.ndarray:
    """Per-episode returns ``sum_t gamma**t * r[n, t]`` over the valid steps, shape ``[N]``.

    ``rewards`` is ``[N, T]``; ``mask`` (``[N, T]`` bool, default all True) marks valid steps and
    must be a prefix in each row (an episode that ended early is padded after its last step;
    padded rewards may be anything, even nan). ``gamma=None`` gives the undiscounted sum.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise SpaceMismatchError(f"rewards must be [N, T], got shape {r.shape}")
    m = np.ones(r.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != r.shape:
        raise SpaceMismatchError(f"mask {m.shape} must have the shape of rewards {r.shape}")
    if np.any(m[:, 1:] & ~m[:, :-1]):
        raise ValueError("mask must be True on a prefix of each row: valid steps first, then padding")
    discount = np.ones(r.shape[1]) if gamma is None else gamma ** np.arange(r.shape[1])
    return np.where(m, r, 0.0) @ discount


def discounted_return(rewards: ArrayLike, *, gamma: float = DOPE_GAMMA) -> float:
    """Discounted return ``sum_t gamma**t * r_t`` of one episode (DOPE uses ``gamma=0.995``)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise SpaceMismatchError(f"rewards must be 1-D [T], got shape {r.shape}")
    return float(returns(r[None], gamma=gamma)[0])


def _correlation(fn: Callable, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    p, g = _pair(predicted, ground_truth)
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(g) == 0:
        return float("nan")
    return float(fn(g, p).statistic)


def spearman(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """Spearman rank correlation (``scipy.stats.spearmanr``; DOPE's ``rank_correlation``).

    ``nan`` when either vector is constant or has fewer than 2 entries: no ranking to compare.
    """
    return _correlation(stats.spearmanr, predicted, ground_truth)


def kendall(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``); ``nan`` for constant or length-<2 input."""
    return _correlation(stats.kendalltau, predicted, ground_truth)


def pearson(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """Pearson correlation (``scipy.stats.pearsonr``), SIMPLER's ``pearson_correlation``.

    Equal to SIMPLER's value up to the ``1e-8`` it adds to the denominator. For a constant input
    SIMPLER returns 1 (both constant) or 0 (one constant); here the correlation is undefined and
    the result is ``nan``, so bootstraps skip such resamples instead of averaging in a made-up value.
    """
    return _correlation(stats.pearsonr, predicted, ground_truth)


def mmrv(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """Mean maximum rank violation, exactly SIMPLER's ``mean_maximum_rank_violation(sim, real)``.

    ``mean_i max_j |gt_i - gt_j| * 1[(pred_i > pred_j) != (gt_i > gt_j)]`` in the units of
    ``ground_truth`` (no normalisation). Asymmetric: swapping the arguments changes the value
    (SIMPLER's README swaps them, its ``tools/calc_metrics.py`` does not). Ties follow SIMPLER's
    strict ``>``: a predicted tie charges only the policy that is better in ground truth.
    ``nan`` for empty input.
    """
    p, g = _pair(predicted, ground_truth)
    if p.size == 0:
        return float("nan")
    violated = (p[:, None] > p[None, :]) != (g[:, None] > g[None, :])
    return float(np.mean(np.max(np.abs(g[:, None] - g[None, :]) * violated, axis=1)))


def dope_normalize(values: ArrayLike, *, ground_truth: ArrayLike, clip: float | None = None) -> np.ndarray:
    """DOPE normalisation ``(values - worst) / (best - worst)`` with worst/best of ``ground_truth``.

    Pass ``clip=DOPE_CLIP`` for predictions (DOPE: ``pred_n = min(..., 2)``; no lower clip).
    Raises ``ValueError`` if all ground-truth values are equal (the scale is undefined).
    """
    g = np.asarray(ground_truth, dtype=np.float64)
    worst, best = float(np.min(g)), float(np.max(g))
    if not best > worst:
        raise ValueError("all ground-truth values are equal: DOPE normalisation is undefined")
    normalized = (np.asarray(values, dtype=np.float64) - worst) / (best - worst)
    return normalized if clip is None else np.minimum(normalized, clip)


def _normalized_pair(predicted: ArrayLike, ground_truth: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, g = _pair(predicted, ground_truth)
    return dope_normalize(p, ground_truth=g, clip=DOPE_CLIP), dope_normalize(g, ground_truth=g)


def _abs_error_n(*, predicted: np.ndarray, ground_truth: np.ndarray) -> float:
    """DOPE ``absolute_error`` on already-normalised values."""
    return float(np.mean(np.abs(predicted - ground_truth)))


def _regret_n(*, predicted: np.ndarray, ground_truth: np.ndarray, k: int) -> float:
    """DOPE ``normalized_regret`` on already-normalised values; nan if ``max(gt_n) == 0``."""
    best = float(np.max(ground_truth))
    if best <= 0.0:
        return float("nan")
    top_k = ground_truth[np.argsort(predicted, kind="stable")[-k:]]
    return (best - float(np.max(top_k))) / best


def normalized_abs_error(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """DOPE normalised absolute error ``mean|pred_n - gt_n|`` (``pred_n`` clipped at 2)."""
    p_n, g_n = _normalized_pair(predicted, ground_truth)
    return _abs_error_n(predicted=p_n, ground_truth=g_n)


def regret_at_k(*, predicted: ArrayLike, ground_truth: ArrayLike, k: int) -> float:
    """DOPE normalised regret@k: ``(max(gt_n) - max(gt_n[top-k by pred_n])) / max(gt_n)``.

    On a full policy set ``max(gt_n) == 1`` by construction, so this is ``1 - max(gt_n[top-k])``;
    the division matters only inside DOPE's bootstrap (see :func:`ranking_metrics`). Policies are
    ranked by the clipped ``pred_n`` as in DOPE; ties go to the later policy (stable argsort tail).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p_n, g_n = _normalized_pair(predicted, ground_truth)
    return _regret_n(predicted=p_n, ground_truth=g_n, k=k)


def bootstrap_ci(
    data: ArrayLike, statistic: Callable[..., float], *, n_resamples: int = 2000, confidence: float = 0.95, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over 1-D ``data`` (``scipy.stats.bootstrap``).

    The percentile method is used rather than BCa: BCa's jackknife degenerates on the small and
    discrete samples we see (few episodes, success flags) and then returns nan. With fewer than
    two observations or constant data the interval collapses to ``(value, value)``.
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sample, got shape {x.shape}")
    if x.size < 2 or np.ptp(x) == 0:
        value = float(statistic(x))
        return value, value
    interval = stats.bootstrap(
        (x,), statistic, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(interval.low), float(interval.high)


def bootstrap_over_policies(
    metric_fn: PairMetric, *, predicted: ArrayLike, ground_truth: ArrayLike,
    n_resamples: int = 1000, confidence: float = 0.95, seed: int,
) -> tuple[float, float, float]:
    """``(value, low, high)``: the metric and its percentile interval, resampling policies.

    Policies are drawn with replacement as (predicted, ground_truth) pairs, as in DOPE's
    ``bootstrap_metric``; ``metric_fn`` is called as ``metric_fn(predicted=..., ground_truth=...)``.
    Resamples where the metric is undefined (nan, e.g. a correlation over copies of one policy)
    are skipped, so the interval is conditional on the metric being defined; if none is defined
    the interval is ``(nan, nan)``. The same seed gives the same resamples for every metric.
    """
    p, g = _pair(predicted, ground_truth)
    value = float(metric_fn(predicted=p, ground_truth=g))
    indices = np.random.default_rng(seed).integers(0, p.size, size=(n_resamples, p.size))
    draws = np.array([metric_fn(predicted=p[i], ground_truth=g[i]) for i in indices], dtype=float)
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return value, float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return value, float(low), float(high)


def auroc(*, scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (True = positive).

    ``U / (n_pos * n_neg)`` with ``U`` from ``scipy.stats.mannwhitneyu`` (ties count one half).
    ``nan`` if either class is empty.
    """
    s, y = _pair(scores, labels)
    positives, negatives = s[y != 0], s[y == 0]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    u = stats.mannwhitneyu(positives, negatives, method="asymptotic").statistic
    return float(u / (positives.size * negatives.size))


def return_is_off(
    *, imagined_return: ArrayLike, true_return: ArrayLike, threshold: float = 0.2, floor: float = 0.1
) -> np.ndarray:
    """Which imagined episodes are "off by more than ``threshold``" (bool array).

    Episode ``i`` is off when ``|imagined_i - true_i| > threshold * max(|true_i|, floor * S)``
    with ``S = max_j |true_j|`` the scale of the true returns in the set. Far from zero this is a
    relative error of 20%; for returns near zero (a random policy, a falling hopper), where a
    relative error explodes, the tolerance becomes ``threshold * floor * S`` (2% of the largest
    return magnitude by default). If every true return is 0, any nonzero error is off.
    """
    imagined, true = _pair(imagined_return, true_return)
    scale = np.maximum(np.abs(true), floor * np.max(np.abs(true), initial=0.0))
    return np.abs(imagined - true) > threshold * scale


def trust_auroc(
    *, uncertainty: ArrayLike, imagined_return: ArrayLike, true_return: ArrayLike,
    threshold: float = 0.2, floor: float = 0.1,
) -> float:
    """AUROC of per-episode ``uncertainty`` for detecting episodes that :func:`return_is_off`.

    1 means the uncertainty ranks every wrong imagined episode above every right one, 0.5 is
    chance; ``nan`` when all episodes are off or none is.
    """
    off = return_is_off(imagined_return=imagined_return, true_return=true_return, threshold=threshold, floor=floor)
    return auroc(scores=uncertainty, labels=off)


def ranking_metrics(
    *, predicted: ArrayLike, ground_truth: ArrayLike, seed: int, n_resamples: int = 1000, confidence: float = 0.95
) -> dict[str, dict[str, float]]:
    """All ranking metrics over one task's policies, each as ``{value, ci_low, ci_high}``.

    Keys: ``spearman, kendall, pearson, mmrv, regret_at_1, regret_at_3, normalized_abs_error``.
    Following DOPE, values are normalised once per task with the full policy set (``gt_n``,
    ``pred_n`` clipped at 2) and every metric, point value and bootstrap alike, is computed on
    the normalised values. Correlations are unchanged by this (affine) normalisation unless the
    clip binds; MMRV is therefore reported as a fraction of the ground-truth spread
    ``best - worst`` (SIMPLER's MMRV divided by that spread), comparable across tasks.
    Intervals: :func:`bootstrap_over_policies` with the same resamples for every metric.
    """
    p_n, g_n = _normalized_pair(predicted, ground_truth)
    metric_fns: dict[str, PairMetric] = {
        "spearman": spearman, "kendall": kendall, "pearson": pearson, "mmrv": mmrv,
        "regret_at_1": partial(_regret_n, k=1), "regret_at_3": partial(_regret_n, k=3),
        "normalized_abs_error": _abs_error_n,
    }  # fmt: skip
    result = {}
    for name, fn in metric_fns.items():
        value, low, high = bootstrap_over_policies(
            fn, predicted=p_n, ground_truth=g_n, n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        result[name] = {"value": value, "ci_low": low, "ci_high": high}
    return result
