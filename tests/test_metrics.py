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

from wm_eval.errors import SpaceMismatchError
from wm_eval.evaluation.metrics import (
    auroc,
    bootstrap_ci,
    bootstrap_over_policies,
    discounted_return,
    dope_normalize,
    kendall,
    mmrv,
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


def test_ranking_metrics_on_simpler_data():
    result = ranking_metrics(**COKE, seed=0, n_resamples=200)
    assert set(result) == {
        "spearman", "kendall", "pearson", "mmrv", "regret_at_1", "regret_at_3", "normalized_abs_error"
    }
    for name, entry in result.items():
        assert entry["ci_low"] <= entry["ci_high"], name
    assert result["pearson"]["value"] == pytest.approx(pearson(**COKE))
    assert result["spearman"]["value"] == pytest.approx(spearman(**COKE))
    spread = max(COKE["ground_truth"]) - min(COKE["ground_truth"])
    assert result["mmrv"]["value"] == pytest.approx(mmrv(**COKE) / spread)
    assert result["regret_at_1"]["value"] == pytest.approx(regret_at_k(**COKE, k=1))
    assert result["normalized_abs_error"]["value"] == pytest.approx(normalized_abs_error(**COKE))
    assert result == ranking_metrics(**COKE, seed=0, n_resamples=200)


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
