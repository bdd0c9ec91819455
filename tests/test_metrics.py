"""Golden tests for wm_eval.evaluation.metrics.

SIMPLER golden values: the per-policy success rates are ``REAL_PERF`` and ``SIMPLER_PERF`` in
simpler-env/SimplerEnv ``simpler_env/utils/metrics.py`` (commit 6f5a5f74); ``tools/calc_metrics.py``
there calls ``mean_maximum_rank_violation(SIMPLER_PERF, REAL_PERF)``. The expected numbers are the
published ones (SIMPLER paper / our ANCHORS): pick coke can MMRV 0.031, Pearson 0.975, Spearman
0.771; Google robot mean of 5 tasks MMRV 0.053, Pearson 0.911. DOPE values are hand-computed from
the definitions in google-research/deep_ope ``plots.ipynb``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from wm_eval.errors import SpaceMismatchError
from wm_eval.evaluation.metrics import (
    _resample,
    auroc,
    binomial_ci,
    bootstrap_ci,
    bootstrap_over_policies,
    discounted_return,
    dope_normalize,
    kendall,
    mmrv,
    mmrv_normalized,
    normalized_abs_error,
    pearson,
    ranking_metrics,
    regret_at_k,
    return_is_off,
    returns,
    spearman,
    trust_auroc,
)

# Policies: rt-2-x, rt-1-converged, rt-1-15pct, rt-1-x, rt-1-begin, octo-base.
SIMPLER_REAL = {
    "pick_coke_can": [0.907, 0.853, 0.920, 0.760, 0.133, 0.293],
    "move_near": [0.733, 0.633, 0.583, 0.450, 0.017, 0.350],
    "open_drawer": [0.333, 0.815, 0.704, 0.519, 0.000, 0.148],
    "close_drawer": [0.630, 0.926, 0.889, 0.741, 0.000, 0.519],
    "place_apple_in_closed_top_drawer": [0.074, 0.185, 0.185, 0.407, 0.000, 0.000],
}
SIMPLER_SIM = {
    "pick_coke_can": [0.787, 0.857, 0.710, 0.567, 0.027, 0.170],
    "move_near": [0.779, 0.442, 0.354, 0.317, 0.050, 0.042],
    "open_drawer": [0.157, 0.601, 0.463, 0.296, 0.000, 0.009],
    "close_drawer": [0.343, 0.861, 0.667, 0.891, 0.278, 0.444],
    "place_apple_in_closed_top_drawer": [0.037, 0.065, 0.130, 0.213, 0.000, 0.000],
}
COKE = dict(predicted=SIMPLER_SIM["pick_coke_can"], ground_truth=SIMPLER_REAL["pick_coke_can"])


# ----------------------------------------------------------------------------- SIMPLER


def test_simpler_pick_coke_can_published_numbers():
    assert round(mmrv(**COKE), 3) == 0.031
    assert round(pearson(**COKE), 3) == 0.975
    assert round(spearman(**COKE), 3) == 0.771


def test_simpler_google_robot_mean_of_five_tasks():
    mmrvs = [mmrv(predicted=SIMPLER_SIM[t], ground_truth=SIMPLER_REAL[t]) for t in SIMPLER_REAL]
    pearsons = [pearson(predicted=SIMPLER_SIM[t], ground_truth=SIMPLER_REAL[t]) for t in SIMPLER_REAL]
    assert round(float(np.mean(mmrvs)), 3) == 0.053
    assert round(float(np.mean(pearsons)), 3) == 0.911


def test_mmrv_is_asymmetric():
    # Swapping the SIMPLER arguments (as its README does) doubles the coke-can MMRV.
    swapped = mmrv(predicted=COKE["ground_truth"], ground_truth=COKE["predicted"])
    assert swapped == pytest.approx(0.0618, abs=5e-5)
    # Hand example: both policies are misordered; the violation costs the gap in ground truth.
    assert mmrv(predicted=[0.9, 0.5], ground_truth=[0.1, 0.9]) == pytest.approx(0.8)
    assert mmrv(predicted=[0.1, 0.9], ground_truth=[0.9, 0.5]) == pytest.approx(0.4)


def test_mmrv_ties_follow_simpler_strict_comparison():
    # A predicted tie charges only the policy that is better in ground truth: (0 + 0.6) / 2.
    assert mmrv(predicted=[0.5, 0.5], ground_truth=[0.2, 0.8]) == pytest.approx(0.3)
    assert mmrv(predicted=[1.0, 2.0, 3.0], ground_truth=[10.0, 20.0, 30.0]) == 0.0


# ------------------------------------------------------------------------ correlations


def test_kendall_hand_example():
    # pairs (0,1), (0,2) concordant, (1,2) discordant: tau = (2 - 1) / 3
    assert kendall(predicted=[1, 2, 3], ground_truth=[1, 3, 2]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("fn", [spearman, kendall, pearson])
def test_correlations_are_nan_on_degenerate_input_without_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(fn(predicted=[1.0, 1.0, 1.0], ground_truth=[1.0, 2.0, 3.0]))
        assert math.isnan(fn(predicted=[1.0, 2.0, 3.0], ground_truth=[5.0, 5.0, 5.0]))
        assert math.isnan(fn(predicted=[1.0], ground_truth=[2.0]))
        assert fn(predicted=[1.0, 2.0, 4.0], ground_truth=[0.0, 3.0, 9.0]) > 0.9


def test_mismatched_shapes_are_rejected():
    with pytest.raises(SpaceMismatchError):
        mmrv(predicted=[1.0, 2.0], ground_truth=[1.0, 2.0, 3.0])
    with pytest.raises(SpaceMismatchError):
        spearman(predicted=[[1.0, 2.0]], ground_truth=[[1.0, 2.0]])


# -------------------------------------------------------------------------------- DOPE

GT = [0.0, 5.0, 10.0]


def test_dope_normalize_and_clip():
    assert dope_normalize([1.0, 4.0, 30.0], ground_truth=GT) == pytest.approx([0.1, 0.4, 3.0])
    assert dope_normalize([1.0, 4.0, 30.0], ground_truth=GT, clip=2.0) == pytest.approx([0.1, 0.4, 2.0])
    assert dope_normalize([-10.0], ground_truth=GT, clip=2.0) == pytest.approx([-1.0])  # no lower clip
    with pytest.raises(ValueError):
        dope_normalize([1.0, 2.0], ground_truth=[3.0, 3.0])


def test_normalized_abs_error_clips_predictions_at_two():
    # gt_n = [0, .5, 1], pred_n = [.1, .4, min(3, 2)]: mean(.1, .1, 1) = 0.4 (0.733 unclipped).
    assert normalized_abs_error(predicted=[1.0, 4.0, 30.0], ground_truth=GT) == pytest.approx(0.4)
    assert normalized_abs_error(predicted=GT, ground_truth=GT) == 0.0


def test_regret_at_k_hand_examples():
    assert regret_at_k(predicted=[1.0, 4.0, 30.0], ground_truth=GT, k=1) == 0.0
    assert regret_at_k(predicted=[30.0, 4.0, 1.0], ground_truth=GT, k=1) == pytest.approx(1.0)
    assert regret_at_k(predicted=[30.0, 4.0, 1.0], ground_truth=GT, k=2) == pytest.approx(0.5)
    assert regret_at_k(predicted=[30.0, 4.0, 1.0], ground_truth=GT, k=3) == 0.0
    # Negative returns: normalisation keeps the regret in [0, 1] (raw values would give -1).
    assert regret_at_k(
        predicted=[-150.0, -250.0, -120.0], ground_truth=[-300.0, -100.0, -200.0], k=1
    ) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        regret_at_k(predicted=GT, ground_truth=GT, k=0)


def test_regret_ranks_by_clipped_prediction_ties_to_later_policy():
    # pred_n = [4 -> 2, 2.5 -> 2, 0.1]: tied at the clip, DOPE's argsort tail picks policy 1.
    assert regret_at_k(predicted=[40.0, 25.0, 1.0], ground_truth=GT, k=1) == pytest.approx(0.5)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_deterministic_and_plausible():
    data = np.random.default_rng(0).normal(loc=3.0, scale=1.0, size=200)
    first = bootstrap_ci(data, np.mean, seed=1)
    assert first == bootstrap_ci(data, np.mean, seed=1)
    assert first != bootstrap_ci(data, np.mean, seed=2)
    low, high = first
    assert low < data.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)


def test_bootstrap_ci_degenerate_samples():
    assert bootstrap_ci([2.5], np.mean, seed=0) == (2.5, 2.5)
    assert bootstrap_ci([1.0, 1.0, 1.0], np.mean, seed=0) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([], np.mean, seed=0)


def test_bootstrap_over_policies_skips_undefined_resamples():
    kwargs = dict(predicted=[1.0, 2.0, 3.0], ground_truth=[1.0, 3.0, 2.0], n_resamples=200, seed=3)
    value, low, high = bootstrap_over_policies(spearman, **kwargs)
    assert value == pytest.approx(0.5)
    assert -1.0 <= low <= high <= 1.0  # finite although many resamples are constant (nan)
    assert (value, low, high) == bootstrap_over_policies(spearman, **kwargs)
    single = bootstrap_over_policies(spearman, predicted=[1.0], ground_truth=[2.0], seed=0)
    assert math.isnan(single[0]) and math.isnan(single[1]) and math.isnan(single[2])


RANKING_KEYS = {
    "spearman", "kendall", "pearson", "mmrv", "mmrv_normalized", "regret_at_1", "regret_at_3",
    "normalized_abs_error",
}  # fmt: skip


def test_ranking_metrics_on_simpler_data():
    result = ranking_metrics(**COKE, seed=0, n_resamples=200)
    assert set(result) == RANKING_KEYS
    for name, entry in result.items():
        assert entry["ci_low"] <= entry["ci_high"], name
    assert result["pearson"]["value"] == pytest.approx(pearson(**COKE))
    assert result["spearman"]["value"] == pytest.approx(spearman(**COKE))
    assert result["kendall"]["value"] == pytest.approx(kendall(**COKE))
    assert result["regret_at_1"]["value"] == pytest.approx(regret_at_k(**COKE, k=1))
    assert result["regret_at_3"]["value"] == pytest.approx(regret_at_k(**COKE, k=3))
    assert result["normalized_abs_error"]["value"] == pytest.approx(normalized_abs_error(**COKE))
    assert result == ranking_metrics(**COKE, seed=0, n_resamples=200)


def test_ranking_metrics_mmrv_is_simpler_raw_and_normalized_by_spread():
    result = ranking_metrics(**COKE, seed=0, n_resamples=200)
    raw = mmrv(**COKE)
    assert round(raw, 3) == 0.031  # SIMPLER's published coke-can MMRV, in success-rate units
    assert result["mmrv"]["value"] == raw
    spread = max(COKE["ground_truth"]) - min(COKE["ground_truth"])
    assert mmrv_normalized(**COKE) == pytest.approx(raw / spread)
    assert result["mmrv_normalized"]["value"] == pytest.approx(raw / spread)
    # The interval is scaled by the full-set spread, not by each resample's spread.
    assert result["mmrv_normalized"]["ci_low"] == pytest.approx(result["mmrv"]["ci_low"] / spread)
    assert result["mmrv_normalized"]["ci_high"] == pytest.approx(result["mmrv"]["ci_high"] / spread)
    # Raw MMRV scales with the units; the normalised one does not.
    scaled = ranking_metrics(
        predicted=1000 * np.asarray(COKE["predicted"]), ground_truth=1000 * np.asarray(COKE["ground_truth"]),
        seed=0, n_resamples=200,
    )
    assert scaled["mmrv"]["value"] == pytest.approx(1000 * raw)
    assert scaled["mmrv_normalized"]["value"] == pytest.approx(raw / spread)


def test_mmrv_normalized_hand_examples_and_degenerate_input():
    assert mmrv_normalized(predicted=[0.9, 0.5], ground_truth=[0.1, 0.9]) == pytest.approx(1.0)
    assert mmrv_normalized(predicted=[0.5, 0.5], ground_truth=[0.2, 0.8]) == pytest.approx(0.5)
    assert mmrv_normalized(predicted=[1.0, 2.0, 3.0], ground_truth=[10.0, 20.0, 30.0]) == 0.0
    assert math.isnan(mmrv_normalized(predicted=[1.0, 2.0], ground_truth=[3.0, 3.0]))
    assert math.isnan(mmrv_normalized(predicted=[], ground_truth=[]))
    with pytest.raises(SpaceMismatchError):
        mmrv_normalized(predicted=[1.0], ground_truth=[1.0, 2.0])


def test_ranking_metrics_correlations_use_raw_values_when_the_dope_clip_binds():
    gt = [0.0, 1.0, 9.0, 10.0]
    pred = [0.5, 1.5, 9.5, 60.0]  # pred_n of the last policy is 6, clipped to 2 by DOPE
    clipped = dope_normalize(pred, ground_truth=gt, clip=2.0)
    assert clipped[-1] == 2.0
    result = ranking_metrics(predicted=pred, ground_truth=gt, seed=0, n_resamples=100)
    raw_r = stats.pearsonr(gt, pred).statistic
    clipped_r = stats.pearsonr(gt, clipped).statistic
    assert raw_r == pytest.approx(0.740, abs=1e-3) and clipped_r == pytest.approx(0.914, abs=1e-3)
    assert result["pearson"]["value"] == pytest.approx(raw_r, abs=1e-12)
    assert result["pearson"]["value"] == pytest.approx(pearson(predicted=pred, ground_truth=gt))
    # The DOPE metrics keep the clip: pred_n = [.05, .15, .95, 2], gt_n = [0, .1, .9, 1].
    assert result["normalized_abs_error"]["value"] == pytest.approx((0.05 + 0.05 + 0.05 + 1.0) / 4)

    # Two predictions above the clip tie once clipped; on raw values their order still counts.
    gt, pred = [0.0, 5.0, 10.0], [1.0, 40.0, 25.0]
    result = ranking_metrics(predicted=pred, ground_truth=gt, seed=0, n_resamples=100)
    clipped = dope_normalize(pred, ground_truth=gt, clip=2.0)
    assert result["spearman"]["value"] == pytest.approx(0.5)
    assert stats.spearmanr(gt, clipped).statistic == pytest.approx(math.sqrt(3) / 2)
    assert result["mmrv"]["value"] == pytest.approx(mmrv(predicted=pred, ground_truth=gt))
    assert result["mmrv"]["value"] != pytest.approx(mmrv(predicted=clipped, ground_truth=gt))
    # DOPE's regret ranks by the clipped pred_n = [.1, 2, 2]: the tie goes to the later (best)
    # policy, regret 0; ranking by the raw 40 > 25 would pick policy 1 and give 0.5.
    assert result["regret_at_1"]["value"] == 0.0


# ---------------------------------------------------------------- two-level bootstrap


def _noise(rng, noise: float, n: int) -> np.ndarray:
    x = rng.standard_normal(n)
    return noise * (x - x.mean())


def _episodes(noise: float, *, n_policies: int = 8, n_episodes: int = 20, seed: int = 0):
    """Paired per-episode values with independent imagined and true noise around exact means.

    The true mean of policy ``i`` is ``i`` and the imagined one ``0.5 + 1.1 * i``, so the policy
    means rank perfectly whatever the noise; only the episodes are noisy.
    """
    rng = np.random.default_rng(seed)
    true = [i + _noise(rng, noise, n_episodes) for i in range(n_policies)]
    imagined = [0.5 + 1.1 * i + _noise(rng, noise, n_episodes) for i in range(n_policies)]
    return dict(
        predicted=np.array([x.mean() for x in imagined]), ground_truth=np.array([x.mean() for x in true]),
        predicted_episodes=imagined, true_episodes=true,
    )


def _width(entry):
    return entry["ci_high"] - entry["ci_low"]


def test_two_level_bootstrap_widens_the_interval_under_episode_noise():
    data = _episodes(noise=4.0)  # episode sd 4 vs. a gap of 1 between policy means
    two_level = ranking_metrics(**data, seed=0, n_resamples=500)
    policies_only = ranking_metrics(
        predicted=data["predicted"], ground_truth=data["ground_truth"], seed=0, n_resamples=500
    )
    assert set(two_level) == RANKING_KEYS
    for name in RANKING_KEYS:  # point values come from the given means either way
        assert two_level[name]["value"] == policies_only[name]["value"], name
    # Resampling policies alone cannot see the episode noise: the ranking is perfect in every resample.
    assert policies_only["spearman"]["value"] == pytest.approx(1.0)
    assert _width(policies_only["spearman"]) == pytest.approx(0.0, abs=1e-12)
    assert _width(two_level["spearman"]) > 0.2
    assert two_level["spearman"]["ci_low"] < 0.9
    assert _width(two_level["mmrv"]) > _width(policies_only["mmrv"])


def test_two_level_bootstrap_equals_policies_only_without_episode_noise():
    # Values that are not exact in binary; uneven episode counts per policy.
    means = np.array([0.1, 1 / 3, 0.7, 0.3, 2 / 3, 0.9])
    truth = np.array([0.2, 0.3, 0.8, 0.1, 0.6, 1.1])
    imagined = [np.full(3 + i, m) for i, m in enumerate(means)]
    true = [np.full(3 + i, t) for i, t in enumerate(truth)]
    two_level = ranking_metrics(
        predicted=means, ground_truth=truth, predicted_episodes=imagined, true_episodes=true, seed=4, n_resamples=300
    )
    assert two_level == ranking_metrics(predicted=means, ground_truth=truth, seed=4, n_resamples=300)


def test_two_level_bootstrap_resamples_paired_episodes_together():
    # A perfect model (imagined == true per episode) with noisy episodes: every paired resample
    # has identical predicted and true means, so the ranking is perfect in every resample.
    rng = np.random.default_rng(1)
    true = [i + 3.0 * rng.standard_normal(15) for i in range(6)]
    means = np.array([x.mean() for x in true])
    result = ranking_metrics(
        predicted=means, ground_truth=means, predicted_episodes=true, true_episodes=[x.copy() for x in true],
        seed=0, n_resamples=300,
    )
    assert result["spearman"]["ci_low"] == pytest.approx(1.0)
    assert result["mmrv"]["ci_high"] == 0.0
    assert result["normalized_abs_error"]["ci_high"] == 0.0


def test_two_level_resampled_means_are_means_of_drawn_episodes():
    # Two episodes per policy: a resampled mean is x0, (x0 + x1) / 2 or x1 with odds 1:2:1.
    p, g = np.array([1.5, 15.0]), np.array([0.5, 5.0])
    episodes = [(np.array([1.0, 2.0]), np.array([0.0, 1.0])), (np.array([10.0, 20.0]), np.array([0.0, 10.0]))]
    P, G = _resample(p, g, episodes, n_resamples=4000, seed=0)
    assert P.shape == G.shape == (4000, 2)
    for x, y in episodes:
        drawn = np.array([x[0], x.mean(), x[1]])
        of_policy = np.isin(P, drawn)
        assert of_policy.sum() > 3000  # about half of the 8000 slots
        # paired: the true mean uses the same episode indices as the imagined one
        frac = (P[of_policy] - x[0]) / (x[1] - x[0])
        assert np.allclose(G[of_policy], y[0] + frac * (y[1] - y[0]))
        counts = np.array([np.sum(np.isclose(P[of_policy], v)) for v in drawn])
        assert counts.sum() == of_policy.sum()
        assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert np.isin(P, [1.0, 1.5, 2.0, 10.0, 15.0, 20.0]).all()


def test_two_level_bootstrap_is_seeded():
    data = _episodes(noise=2.0, n_episodes=50)
    first = ranking_metrics(**data, seed=7, n_resamples=200)
    assert first == ranking_metrics(**data, seed=7, n_resamples=200)
    assert first != ranking_metrics(**data, seed=8, n_resamples=200)


def test_two_level_bootstrap_accepts_a_policies_by_episodes_array():
    data = _episodes(noise=2.0, n_episodes=12)
    as_array = dict(data, predicted_episodes=np.stack(data["predicted_episodes"]),
                    true_episodes=np.stack(data["true_episodes"]))
    assert ranking_metrics(**as_array, seed=1, n_resamples=100) == ranking_metrics(**data, seed=1, n_resamples=100)


def _bad(data, **changes):
    return {**data, **changes}


def test_two_level_bootstrap_rejects_bad_inputs():
    data = _episodes(noise=1.0, n_policies=4, n_episodes=5)
    imagined, true = data["predicted_episodes"], data["true_episodes"]
    bad_inputs = [
        _bad(data, predicted_episodes=imagined[:3]),                      # too few policies
        _bad(data, true_episodes=true + [true[0]]),                       # too many policies
        _bad(data, predicted_episodes=None),                              # only one side given
        _bad(data, true_episodes=None),
        _bad(data, predicted_episodes=[imagined[0][None]] + imagined[1:]),  # 2-D episode array
        _bad(data, predicted_episodes=[np.float64(1.0)] + imagined[1:]),    # 0-D
        _bad(data, predicted_episodes=[np.array([])] + imagined[1:],
             true_episodes=[np.array([])] + true[1:]),                    # empty
        _bad(data, predicted_episodes=[imagined[0][:4]] + imagined[1:],
             predicted=np.array([imagined[0][:4].mean(), *data["predicted"][1:]])),  # unpaired lengths
        _bad(data, predicted=data["predicted"] + 1.0),                    # not the episodes' means
        _bad(data, ground_truth=data["ground_truth"][::-1]),
    ]
    for i, kwargs in enumerate(bad_inputs):
        with pytest.raises(SpaceMismatchError) as info:
            ranking_metrics(**kwargs, seed=0, n_resamples=10)
        assert "\n" not in str(info.value), i


def test_two_level_bootstrap_handles_many_episodes():
    """1000 episodes per policy, as a large evaluation has: finite intervals around the point values. (Its
    speed is a benchmark figure, ``wm-eval bench``'s metrics time, not a timed test.)"""
    rng = np.random.default_rng(0)
    true = [i + rng.standard_normal(1000) for i in range(12)]
    imagined = [x + 0.3 * rng.standard_normal(1000) for x in true]
    out = ranking_metrics(
        predicted=np.array([x.mean() for x in imagined]), ground_truth=np.array([x.mean() for x in true]),
        predicted_episodes=imagined, true_episodes=true, seed=0, n_resamples=1000,
    )
    rho = out["spearman"]
    assert np.isfinite([rho["ci_low"], rho["ci_high"]]).all() and rho["ci_low"] <= rho["value"] <= rho["ci_high"]


# ------------------------------------------------------------------ binomial intervals


def _wilson_oracle(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval written out (Wilson 1927; Newcombe 1998 method 3)."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def _clopper_pearson_oracle(k: int, n: int, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low = 0.0 if k == 0 else stats.beta.ppf(alpha / 2, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(1 - alpha / 2, k + 1, n - k)
    return low, high


CASES = [(0, 10), (3, 10), (10, 10), (1, 1), (47, 100), (199, 200)]


@pytest.mark.parametrize("k, n", CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_binomial_ci_wilson_matches_the_formula(k, n, confidence):
    low, high = binomial_ci(k, n, confidence=confidence)
    assert (low, high) == pytest.approx(_wilson_oracle(k, n, confidence), abs=1e-12)
    assert binomial_ci(k, n, confidence=confidence, method="wilson") == (low, high)
    assert isinstance(low, float) and isinstance(high, float)
    assert 0.0 <= low <= k / n <= high <= 1.0


@pytest.mark.parametrize("k, n", CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_binomial_ci_exact_is_clopper_pearson(k, n, confidence):
    low, high = binomial_ci(k, n, confidence=confidence, method="exact")
    assert (low, high) == pytest.approx(_clopper_pearson_oracle(k, n, confidence), abs=1e-9)
    wilson = binomial_ci(k, n, confidence=confidence)
    assert high - low >= (wilson[1] - wilson[0]) - 1e-12 or k in (0, n)


def test_binomial_ci_known_value_and_bad_input():
    # 3/10 at 95%: Wilson (0.1078, 0.6032), Clopper-Pearson (0.0667, 0.6525), as tabulated by Newcombe (1998).
    assert binomial_ci(3, 10) == pytest.approx((0.1078, 0.6032), abs=5e-5)
    assert binomial_ci(3, 10, method="exact") == pytest.approx((0.0667, 0.6525), abs=5e-5)
    assert binomial_ci(np.int64(3), np.int64(10)) == binomial_ci(3, 10)
    for k, n in [(0, 0), (1, 0), (-1, 10), (11, 10)]:
        with pytest.raises(ValueError):
            binomial_ci(k, n)
    with pytest.raises(ValueError):
        binomial_ci(3, 10, method="wald")
    with pytest.raises(TypeError):
        binomial_ci(2.5, 10)


# ------------------------------------------------------------------------------- AUROC


def test_auroc_separating_reversed_tied_and_hand_example():
    labels = [False, False, True, True]
    assert auroc(scores=[0.1, 0.2, 0.8, 0.9], labels=labels) == 1.0
    assert auroc(scores=[0.9, 0.8, 0.2, 0.1], labels=labels) == 0.0
    assert auroc(scores=[0.5, 0.5, 0.5, 0.5], labels=labels) == 0.5
    assert auroc(scores=[0.1, 0.4, 0.35, 0.8], labels=labels) == pytest.approx(0.75)
    assert math.isnan(auroc(scores=[0.1, 0.2], labels=[True, True]))


def test_auroc_random_scores_near_chance():
    rng = np.random.default_rng(0)
    value = auroc(scores=rng.random(4000), labels=rng.random(4000) < 0.3)
    assert value == pytest.approx(0.5, abs=0.03)


def test_return_is_off_relative_far_from_zero_absolute_near_zero():
    true = [1000.0, 1.0, 1000.0, 1.0]
    imagined = [1150.0, 15.0, 1300.0, 40.0]
    # 15% and (near zero) 14 <= 0.2 * 0.1 * 1000 are fine; 30% and 39 > 20 are off.
    off = return_is_off(imagined_return=imagined, true_return=true)
    assert off.tolist() == [False, False, True, True]
    assert return_is_off(imagined_return=[0.0, 1e-9], true_return=[0.0, 0.0]).tolist() == [False, True]
    trust = trust_auroc(uncertainty=[0.1, 0.2, 0.9, 0.8], imagined_return=imagined, true_return=true)
    assert trust == 1.0
    assert math.isnan(trust_auroc(uncertainty=[0.1, 0.2], imagined_return=[1.0, 1.0], true_return=[1.0, 1.0]))


# ----------------------------------------------------------------------------- returns


def test_returns_with_gamma_and_mask():
    rewards = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, np.nan]])
    mask = np.array([[True, True, True], [True, True, False]])
    assert returns(rewards, mask=mask, gamma=0.5) == pytest.approx([1.75, 3.0])
    assert returns(rewards, mask=mask, gamma=None) == pytest.approx([3.0, 4.0])
    with pytest.raises(ValueError):
        returns(rewards, mask=np.array([[True, False, True], [True, True, True]]), gamma=0.5)


def test_discounted_return_default_gamma():
    assert discounted_return([1.0, 2.0, 3.0], gamma=0.9) == pytest.approx(5.23)
    assert discounted_return(np.ones(1000)) == pytest.approx((1 - 0.995**1000) / 0.005)
    assert isinstance(discounted_return([1.0]), float)
