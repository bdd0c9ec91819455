"""Metrics that score predicted policy performance against ground truth.

(Over 400 lines on purpose: every reference metric and its bootstrap sit together, each docstring citing
its reference, so one reading checks all definitions against each other and against the golden tests.)

The ranking metrics copy their reference implementations rather than paraphrase them:

* **DOPE** (Fu et al. 2021, ``google-research/deep_ope``, ``plots.ipynb``): per task,
  normalise by the worst and best ground-truth values among the policies,
  ``gt_n = (gt - worst) / (best - worst)`` and ``pred_n = min((pred - worst) / (best - worst), 2)``;
  then ``normalized_abs_error = mean|pred_n - gt_n|`` and
  ``regret@k = (max(gt_n) - max(gt_n[top-k by pred_n])) / max(gt_n)``. Error bars come from a
  bootstrap over policies that keeps the full-set normalisation fixed (so ``max(gt_n)`` is 1 on the
  full set but can be below 1 in a resample, which is why the division is there).
* **SIMPLER** (Li et al. 2024, ``simpler-env/SimplerEnv``, ``simpler_env/utils/metrics.py``):
  ``pearson_correlation`` and ``mean_maximum_rank_violation``. MMRV is asymmetric and takes no
  normalisation: ``mean_i max_j |gt_i - gt_j| * 1[(pred_i > pred_j) != (gt_i > gt_j)]``, in the
  units of the ground truth. :func:`mmrv_normalized` divides it by the ground-truth spread
  ``max(gt) - min(gt)`` so that tasks with different return scales can be compared.

:func:`ranking_metrics` computes Spearman, Kendall, Pearson and MMRV on the raw values it is given
(the DOPE clip at 2 never touches them) and only ``normalized_abs_error`` and ``regret_at_k`` on
DOPE's normalised values. With per-episode values it bootstraps at two levels (policies, then each
drawn policy's episodes). :func:`binomial_ci` gives intervals for success rates.

Every function comparing a prediction with the truth takes ``predicted=`` and ``ground_truth=`` by
keyword. Inputs are array-likes, scalar outputs are Python floats. A metric that is undefined for its
input (a correlation of a constant vector, an AUROC with one class) is ``nan``, not an exception,
and the bootstrap skips such resamples; the exception is DOPE's normalisation, which raises
``ValueError`` when all ground-truth values are equal (there is no scale).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from wm_eval.errors import SpaceMismatchError

__all__ = [
    "DOPE_GAMMA", "DOPE_CLIP", "discounted_return", "returns",
    "spearman", "kendall", "pearson", "mmrv", "mmrv_normalized",
    "dope_normalize", "normalized_abs_error", "regret_at_k",
    "bootstrap_ci", "bootstrap_over_policies", "binomial_ci",
    "auroc", "return_is_off", "trust_auroc", "point_metrics", "ranking_metrics",
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
    # a row-wise sum, not a matrix product: BLAS sums in an order that depends on the number of rows
    return (np.where(m, r, 0.0) * discount).sum(axis=1)


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



def mmrv_normalized(*, predicted: ArrayLike, ground_truth: ArrayLike) -> float:
    """SIMPLER's :func:`mmrv` divided by the ground-truth spread ``max(gt) - min(gt)``.

    ``predicted`` and ``ground_truth`` are 1-D, one value per policy. The result is a fraction of
    the spread (0 = no violation, at most 1), comparable across tasks with different return
    scales. ``nan`` for empty input or when all ground-truth values are equal (no spread).
    """
    p, g = _pair(predicted, ground_truth)
    if p.size == 0:
        return float("nan")
    spread = float(np.ptp(g))
    if spread == 0.0:
        return float("nan")
    return mmrv(predicted=p, ground_truth=g) / spread


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
    return (value, *_percentile_interval(draws, confidence))


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the defined (non-nan) bootstrap draws; ``(nan, nan)`` if none is."""
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def binomial_ci(successes: int, n: int, *, confidence: float = 0.95, method: str = "wilson") -> tuple[float, float]:
    """``(low, high)``: two-sided interval for a success rate ``successes / n`` (scalars in, floats out).

    ``scipy.stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method=method)``
    with ``method="wilson"`` (Wilson score interval, no continuity correction; the default: good
    coverage and never a zero-width interval at 0 or n successes) or ``"exact"`` (Clopper-Pearson,
    conservative). Raises ``ValueError`` for ``n < 1``, ``successes`` outside ``[0, n]`` or another
    method, and ``TypeError`` for non-integer counts.
    """
    k, n = operator.index(successes), operator.index(n)
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {k}")
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method=method)
    return float(interval.low), float(interval.high)


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


def _episode_arrays(episodes: Sequence[ArrayLike], name: str, n_policies: int) -> list[np.ndarray]:
    if len(episodes) != n_policies:
        raise SpaceMismatchError(f"{name} must hold one 1-D array per policy ({n_policies}), got {len(episodes)}")
    arrays = [np.asarray(x, dtype=np.float64) for x in episodes]
    for i, x in enumerate(arrays):
        if x.ndim != 1 or x.size == 0:
            raise SpaceMismatchError(f"{name}[{i}] must be a non-empty 1-D array of episode values, got {x.shape}")
    return arrays


def _check_episodes(
    p: np.ndarray, g: np.ndarray, predicted_episodes: Sequence[ArrayLike] | None,
    true_episodes: Sequence[ArrayLike] | None,
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Validated ``[(imagined_i, true_i)]`` per policy, or None for a policies-only bootstrap."""
    if predicted_episodes is None and true_episodes is None:
        return None
    if predicted_episodes is None or true_episodes is None:
        raise SpaceMismatchError("pass both predicted_episodes and true_episodes (paired per policy), or neither")
    imagined = _episode_arrays(predicted_episodes, "predicted_episodes", p.size)
    true = _episode_arrays(true_episodes, "true_episodes", p.size)
    for i, (x, y) in enumerate(zip(imagined, true)):
        if x.shape != y.shape:
            raise SpaceMismatchError(
                f"policy {i}: {x.size} predicted and {y.size} true episodes; they must be paired (same start states)"
            )
    for name, values, arrays in (("predicted", p, imagined), ("ground_truth", g, true)):
        means = np.array([x.mean() for x in arrays])
        scale = 1e-9 * (1.0 + np.max(np.abs(means)))
        bad = np.flatnonzero(~np.isclose(values, means, rtol=1e-6, atol=scale))
        if bad.size:
            i = int(bad[0])
            raise SpaceMismatchError(
                f"{name}[{i}] = {values[i]:g} is not the mean ({means[i]:g}) of its per-episode values"
            )
    return list(zip(imagined, true))


_EPISODE_CHUNK = 4_000_000
"""Most episode indices drawn at once in the two-level bootstrap (bounds memory, not results)."""


def _resample(
    p: np.ndarray, g: np.ndarray, episodes: list[tuple[np.ndarray, np.ndarray]] | None,
    *, n_resamples: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap values ``(P, G)``, each ``[n_resamples, n_policies]``.

    Policies are drawn with replacement exactly as in :func:`bootstrap_over_policies`. With
    episodes, each drawn slot then draws its policy's episodes with replacement (one index set for
    the paired imagined and true episodes) and takes the two means. A resampled mean is computed
    as ``mean_i + mean(d[idx]) - mean(d)`` with ``d = x - x[0]``, which equals ``mean(x[idx])``
    and is exactly ``mean_i`` when a policy's episodes are all equal.
    """
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, p.size, size=(n_resamples, p.size))
    if episodes is None:
        return p[indices], g[indices]
    flat = indices.ravel()
    P, G = np.empty(flat.size), np.empty(flat.size)
    for i, (x, y) in enumerate(episodes):
        slots = np.flatnonzero(flat == i)
        dx, dy = x - x[0], y - y[0]
        rows = max(1, _EPISODE_CHUNK // x.size)
        for start in range(0, slots.size, rows):
            chunk = slots[start:start + rows]
            draw = rng.integers(0, x.size, size=(chunk.size, x.size))
            P[chunk] = p[i] + (dx[draw].mean(axis=1) - dx.mean())
            G[chunk] = g[i] + (dy[draw].mean(axis=1) - dy.mean())
    return P.reshape(indices.shape), G.reshape(indices.shape)


def point_metrics(*, predicted: ArrayLike, ground_truth: ArrayLike, scale: ArrayLike | None = None) -> dict[str, float]:
    """Every ranking metric of :func:`ranking_metrics` as a plain value, without intervals.

    ``predicted`` and ``ground_truth`` are 1-D ``[n_policies]``. The DOPE normalisation and the
    ``mmrv_normalized`` spread come from ``scale`` (default: ``ground_truth``), so a bootstrap resample
    keeps the full set's scale. Correlations are ``nan`` where undefined (constant input); raises
    ``ValueError`` if ``scale`` has no spread.
    """
    pred, truth = _pair(predicted, ground_truth)
    g = truth if scale is None else np.asarray(scale, dtype=np.float64)
    pred_n = dope_normalize(pred, ground_truth=g, clip=DOPE_CLIP)
    truth_n = dope_normalize(truth, ground_truth=g)
    raw_mmrv = mmrv(predicted=pred, ground_truth=truth)
    return {
        "spearman": spearman(predicted=pred, ground_truth=truth),
        "kendall": kendall(predicted=pred, ground_truth=truth),
        "pearson": pearson(predicted=pred, ground_truth=truth),
        "mmrv": raw_mmrv,
        "mmrv_normalized": raw_mmrv / float(np.ptp(g)),
        "regret_at_1": _regret_n(predicted=pred_n, ground_truth=truth_n, k=1),
        "regret_at_3": _regret_n(predicted=pred_n, ground_truth=truth_n, k=3),
        "normalized_abs_error": _abs_error_n(predicted=pred_n, ground_truth=truth_n),
    }


def ranking_metrics(
    *, predicted: ArrayLike, ground_truth: ArrayLike, seed: int, n_resamples: int = 1000, confidence: float = 0.95,
    predicted_episodes: Sequence[np.ndarray] | None = None, true_episodes: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """All ranking metrics over one task's policies, each as ``{value, ci_low, ci_high}``.

    ``predicted`` and ``ground_truth`` are 1-D ``[n_policies]`` (e.g. mean imagined and mean true
    returns). Keys: ``spearman, kendall, pearson, mmrv, mmrv_normalized, regret_at_1, regret_at_3,
    normalized_abs_error``.

    * ``spearman``, ``kendall``, ``pearson`` and ``mmrv`` are computed on the raw values, as
      SIMPLER does; ``mmrv`` is in the units of ``ground_truth``.
    * ``mmrv_normalized`` is ``mmrv`` divided by the full set's ground-truth spread
      ``best - worst`` (:func:`mmrv_normalized`).
    * ``normalized_abs_error``, ``regret_at_1`` and ``regret_at_3`` follow DOPE: normalised with
      the full set's worst/best ground truth, predictions clipped at 2.

    Intervals are percentile bootstraps with the same resamples for every metric; within a
    resample the normalisation scale (for the DOPE metrics and ``mmrv_normalized``) stays the
    full-set one, as in DOPE. Without episodes, policies are resampled (as
    :func:`bootstrap_over_policies`). With ``predicted_episodes`` and ``true_episodes`` (one 1-D
    array ``[n_episodes_i]`` per policy, ``predicted``/``ground_truth`` being their means, and
    index ``j`` of both arrays of a policy coming from the same start state), each resample draws
    policies with replacement, then each drawn policy's episodes with replacement (the same
    indices for its imagined and true episodes), and computes the metrics on the resampled means;
    the interval then also reflects the finite number of episodes per policy. Resamples where a
    metric is undefined (nan) are skipped. The same seed gives the same result.

    Raises ``SpaceMismatchError`` for inconsistent inputs (lengths, shapes, unpaired episodes,
    means that are not the episodes' means) and ``ValueError`` if all ground-truth values are equal.
    """
    p, g = _pair(predicted, ground_truth)
    episodes = _check_episodes(p, g, predicted_episodes, true_episodes)
    dope_normalize(g, ground_truth=g)  # ValueError if the ground truth has no spread
    values = point_metrics(predicted=p, ground_truth=g)
    P, G = _resample(p, g, episodes, n_resamples=n_resamples, seed=seed)
    per_resample = [point_metrics(predicted=P[b], ground_truth=G[b], scale=g) for b in range(n_resamples)]
    result = {}
    for name, value in values.items():
        draws = np.array([r[name] for r in per_resample], dtype=float)
        low, high = _percentile_interval(draws, confidence)
        result[name] = {"value": value, "ci_low": low, "ci_high": high}
    return result
