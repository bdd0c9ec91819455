"""True-value estimators: PPI++ matches the reference implementation (``ppi_py``) to 1e-9, falls back
to the real-only estimate when imagined and real episodes are unrelated, and its small-sample
intervals cover; ``real_episodes`` end to end."""

from __future__ import annotations

import numpy as np
import pytest

import wm_eval
from wm_eval.errors import WmEvalError
from wm_eval.evaluation.estimators import best_policy, error_quantiles_at, model_only, pooled_lambda, ppi_mean, real_mean


def _data(rng: np.random.Generator, n: int, big_n: int, rho: float, bias: float = 0.0):
    """Real outcomes and imagined ones correlated by ``rho`` (imagined shifted by ``bias``)."""
    z = rng.normal(size=n + big_n)
    noise = rng.normal(size=n + big_n)
    y = 10 + 3 * z[:n]
    f = 10 + bias + 3 * (rho * z + np.sqrt(1 - rho**2) * noise)
    return y, f[:n], f[n:]


@pytest.mark.parametrize("n,big_n,rho", [(3, 20, 0.9), (5, 50, 0.5), (10, 7, 0.99), (30, 300, 0.0), (4, 1000, -0.8)])
def test_ppi_matches_ppi_py(n: int, big_n: int, rho: float) -> None:
    import ppi_py  # the reference implementation, installed by the test extra
    rng = np.random.default_rng(n * 1000 + big_n)
    y, f, f_u = _data(rng, n, big_n, rho, bias=2.0)
    ours = ppi_mean(y, f, f_u, confidence=0.9, interval="z")
    low, high = ppi_py.ppi_mean_ci(y, f, f_u, alpha=0.1)
    point = ppi_py.ppi_mean_pointestimate(y, f, f_u)
    assert ours.mean == pytest.approx(float(np.squeeze(point)), abs=1e-9, rel=1e-12)
    assert ours.ci_low == pytest.approx(float(np.squeeze(low)), abs=1e-9, rel=1e-12)
    assert ours.ci_high == pytest.approx(float(np.squeeze(high)), abs=1e-9, rel=1e-12)
    given = ppi_mean(y, f, f_u, confidence=0.9, interval="z", lam=0.37)  # a pooled lambda is passed in
    low, high = ppi_py.ppi_mean_ci(y, f, f_u, alpha=0.1, lam=0.37)
    assert (given.ci_low, given.ci_high) == (pytest.approx(float(np.squeeze(low)), abs=1e-9),
                                             pytest.approx(float(np.squeeze(high)), abs=1e-9))
    assert given.mean == pytest.approx(float(np.squeeze(ppi_py.ppi_mean_pointestimate(y, f, f_u, lam=0.37))), abs=1e-9)


def test_pooled_lambda() -> None:
    rng = np.random.default_rng(3)
    one = _data(rng, 8, 40, rho=0.8)
    assert pooled_lambda([one[0]], [one[1]], [one[2]]) == pytest.approx(ppi_mean(*one).lam, abs=1e-12)
    related = [_data(rng, 20, 400, rho=0.95, bias=b) for b in (0.0, 5.0, -3.0, 2.0)]  # policies at different levels
    unrelated = [(y, rng.permutation(f), f_u) for y, f, f_u in related]
    assert pooled_lambda(*zip(*related)) > 0.7 and pooled_lambda(*zip(*unrelated)) < 0.3
    assert pooled_lambda([np.ones(1)], [np.ones(1)], [np.ones(3)]) == 0.0  # nothing to pool


def test_ppi_falls_back_and_leans_as_the_data_say() -> None:
    rng = np.random.default_rng(0)
    y, f, f_u = _data(rng, 10, 500, rho=0.0)
    f = rng.permutation(f)  # unrelated
    unrelated = ppi_mean(y, f, f_u)
    y2, f2, f_u2 = _data(rng, 10, 500, rho=0.999, bias=5.0)
    tight = ppi_mean(y2, f2, f_u2)
    assert unrelated.lam < 0.3 and tight.lam > 0.6
    assert tight.effective_real_episodes > 5 * 10  # imagined episodes buy many real ones
    assert tight.ci_low < 10 < tight.ci_high  # the bias is removed by the rectifier
    only = real_mean(y)
    assert only.method == "real-only (t)" and only.effective_real_episodes == 10


def test_small_sample_intervals_cover() -> None:
    """At n = 3 on normal data, the t interval with a given lambda holds its level where a normal one
    falls short, and tuning lambda on the 3 episodes themselves costs coverage (why reports pool it)."""
    rng = np.random.default_rng(1)
    hits = {"t": 0, "z": 0, "t, lambda tuned on 3 episodes": 0}
    trials = 2000
    for _ in range(trials):
        y, f, f_u = _data(rng, 3, 40, rho=0.7, bias=1.0)
        for kind, est in (("t", ppi_mean(y, f, f_u, confidence=0.9, lam=0.5)),
                          ("z", ppi_mean(y, f, f_u, confidence=0.9, interval="z", lam=0.5)),
                          ("t, lambda tuned on 3 episodes", ppi_mean(y, f, f_u, confidence=0.9))):
            hits[kind] += est.ci_low <= 10 <= est.ci_high
    rate = {k: v / trials for k, v in hits.items()}
    assert rate["t"] >= 0.88 and rate["z"] < rate["t"] - 0.05 and rate["t, lambda tuned on 3 episodes"] < rate["t"]


def test_bad_inputs_are_clear() -> None:
    with pytest.raises(WmEvalError, match="at least 2 paired"):
        ppi_mean([1.0], [1.0], [1.0, 2.0])
    with pytest.raises(WmEvalError, match="non-finite"):
        ppi_mean([1.0, 2.0], [1.0, np.inf], [1.0])
    assert np.isnan(real_mean([3.0]).ci_low)
    pick = best_policy([1.0, 5.0, 4.9], [0.1, 0.1, 0.1], [5, 5, 5], ["a", "b", "c"], seed=0)
    assert pick["name"] == "b" and 0.5 < pick["probability"] < 1.0
    assert best_policy([1.0, 5.0, 4.9], [0.1, 0.1, 0.1], [5, 5, 5], ["a", "b", "c"], seed=0) == pick


def test_real_episodes_end_to_end(tmp_path) -> None:
    kw = dict(episodes=6, horizon=60, seed=2, workers=1, bootstrap=100, progress=False)
    policies = ["zoo:Hopper-v5#ppo_0000k", "zoo:Hopper-v5#ppo_0400k"]
    full = wm_eval.evaluate("Hopper-v5", policies, **kw)
    part = wm_eval.evaluate("Hopper-v5", policies, real_episodes=3, chunk=2, **kw)
    for a, b in zip(full.policies, part.policies):
        # imagined episodes are the same; only the first 3 have a real counterpart
        np.testing.assert_array_equal(a.episodes["imagined_return"], b.episodes["imagined_return"])
        np.testing.assert_array_equal(a.episodes["true_return"][:3], b.episodes["true_return"][:3])
        assert np.isnan(b.episodes["true_return"][3:]).all()
        est = b.true_estimate["return"]
        assert est["method"] == "ppi++ (t)" and est["real_episodes"] == 3 and est["imagined_episodes"] == 3
        assert est["ci_low"] <= est["mean"] <= est["ci_high"]
        assert a.true_estimate["return"]["method"] == "real-only (t)"
    assert part.horizon_error["pairs"] == 2 * 3 and part.trust["best_policy"]["name"] in {p for p in
                                                                                          ("ppo_0000k", "ppo_0400k")}
    wm_eval.report(part, tmp_path, rerun=False)
    text = (tmp_path / "report.md").read_text()
    assert "True return estimates" in text and "Recommended:" in text
    for bad, match in (({"real_episodes": 7}, "real_episodes=7"), ({"real_episodes": 1}, "at least 2"),
                       ({"real_episodes": 3, "mode": "open_loop"}, "closed_loop"), ({"confidence": 1.5}, "confidence")):
        with pytest.raises(WmEvalError, match=match):
            wm_eval.evaluate("Hopper-v5", policies, **{**kw, **bad})


def test_real_budget_goes_to_contenders(tmp_path) -> None:
    from wm_eval.evaluation.budget import next_allocation

    est = [{"ci_low": 0.0, "ci_high": 10.0, "se": 3.0}, {"ci_low": 50.0, "ci_high": 70.0, "se": 5.0},
           {"ci_low": 45.0, "ci_high": 80.0, "se": 9.0}, {"ci_low": 60.0, "ci_high": 62.0, "se": 0.5}]
    new = next_allocation(est, [2, 2, 2, 2], give=5, episodes=10)
    assert new[0] == 2 and sum(new) == 13 and new[2] >= new[1] >= new[3]  # never the clear loser; widest first
    alone = [{"ci_low": 0.0, "ci_high": 1.0, "se": 1.0}, {"ci_low": 5.0, "ci_high": 6.0, "se": 0.2}]
    assert next_allocation(alone, [2, 2], give=2, episodes=10) == [4, 2]  # verdict clear: tighten the widest
    wide = [{**est[0], "se": 20.0}, *est[1:]]
    assert next_allocation(wide, [2, 2, 2, 2], give=5, episodes=10)[0] == 2
    flagged = next_allocation(wide, [2, 2, 2, 2], give=5, episodes=10, flagged=[True, False, False, False])
    assert flagged[0] > 2 and sum(flagged) == 13  # a flagged policy is in the pool though it cannot win

    kw = dict(episodes=6, horizon=40, seed=4, workers=1, bootstrap=100, progress=False, chunk=2)
    policies = ["zoo:Hopper-v5#ppo_0000k", "zoo:Hopper-v5#ppo_0400k", "zoo:Hopper-v5#a2c_0150k"]
    ev = wm_eval.evaluate("Hopper-v5", policies, real_budget=10, out=tmp_path / "run", **kw)
    reals = [p.true_estimate["return"]["real_episodes"] for p in ev.policies]
    assert sum(reals) == 10 and min(reals) >= 2
    for p, n in zip(ev.policies, reals):  # the first n episodes are paired, the rest imagined only
        assert np.isfinite(p.episodes["true_return"][:n]).all() and np.isnan(p.episodes["true_return"][n:]).all()
    full = wm_eval.evaluate("Hopper-v5", policies, **kw)
    for a, b, n in zip(full.policies, ev.policies, reals):
        np.testing.assert_array_equal(a.episodes["imagined_return"], b.episodes["imagined_return"])
        np.testing.assert_array_equal(a.episodes["true_return"][:n], b.episodes["true_return"][:n])
    again = wm_eval.evaluate("Hopper-v5", policies, real_budget=10, out=tmp_path / "run", resume=True, **kw)
    assert again.timings["resumed_units"] == len(again.units) and [p.true_estimate for p in again.policies] == \
        [p.true_estimate for p in ev.policies]
    wm_eval.report(ev, tmp_path / "report", rerun=False)
    assert "real_budget 10" in (tmp_path / "report" / "report.md").read_text()
    for bad, match in (({"real_budget": 5}, "leaves a2c_0150k without"), ({"real_budget": 19}, "exceeds"),
                       ({"real_budget": 8, "real_episodes": 3}, "not both")):
        with pytest.raises(WmEvalError, match=match):
            wm_eval.evaluate("Hopper-v5", policies, **{**kw, **bad})


QUANTILES = {"levels": [0.5, 0.8, 0.9, 0.95], "unflagged": [0.05, 0.1, 0.15, 0.2], "flagged": [0.3, 0.5, 0.6, 0.8]}


def test_model_only_intervals_are_widened_by_the_calibrated_error() -> None:
    from scipy import stats

    f = np.array([100.0, 110.0, 90.0, 105.0])
    se = f.std(ddof=1) / 2
    est = model_only(f, error_quantiles=QUANTILES, flagged=False, floor=5.0, confidence=0.9)
    half = stats.t.ppf(0.95, 3) * se + 0.15 * 101.25
    assert est.mean == pytest.approx(101.25) and est.ci_high - est.mean == pytest.approx(half)
    assert est.method == "model-only (calibrated unflagged error)" and est.real_episodes == 0
    wide = model_only(f, error_quantiles=QUANTILES, flagged=True, floor=5.0, confidence=0.9)
    assert wide.ci_high - wide.mean == pytest.approx(stats.t.ppf(0.95, 3) * se + 0.6 * 101.25)
    near_zero = model_only(np.array([0.1, -0.1, 0.0]), error_quantiles=QUANTILES, flagged=False, floor=5.0,
                           confidence=0.5)
    assert near_zero.ci_high - near_zero.mean >= 0.05 * 5.0  # relative to the floor near zero
    capped = model_only(f, error_quantiles=QUANTILES, flagged=False, floor=5.0, confidence=0.99)
    assert "capped at 0.95" in capped.method
    bare = model_only(f, error_quantiles=None, flagged=False, floor=5.0)
    assert np.isnan(bare.ci_low) and "no calibrated model error" in bare.method


def test_real_episodes_zero_runs_no_mujoco_and_says_model_only(tmp_path) -> None:
    from wm_eval.models.checkpoint import resolve_model

    model = resolve_model(None, task="Hopper-v5")
    risk = {"features": ["log_disagreement", "log_coverage", "return_excess"], "weights": [0.0, 0.0, 0.0],
            "bias": -3.0, "fitted_on": "a test", "error_quantiles": QUANTILES}
    model.coverage = model.coverage.with_risk(risk)
    ev = wm_eval.evaluate("Hopper-v5", ["zoo#ppo_0000k", "zoo#ppo_0400k"], model=model, episodes=4, horizon=30,
                          real_episodes=0, seed=3, bootstrap=50, progress=False)
    for p in ev.policies:
        assert np.isnan(p.episodes["true_return"]).all() and np.isnan(p.summary["abs_error"])
        est = p.true_estimate["return"]
        assert est["method"] == "model-only (calibrated unflagged error)" and est["real_episodes"] == 0
        assert est["mean"] == pytest.approx(p.episodes["imagined_return"].mean())
        assert est["ci_low"] < est["mean"] < est["ci_high"]
        assert np.isnan(p.true_estimate["discounted_return"]["ci_low"])  # calibrated on returns only
    assert ev.horizon_error["pairs"] == 0 and np.isnan(ev.metrics["return"]["spearman"]["value"])
    assert np.isnan(ev.trust["policy_auroc"]) and ev.trust["episodes"] == 0
    report = wm_eval.report(ev, tmp_path, rerun=False)
    md = (tmp_path / "report.md").read_text()
    assert "model-only" in md and "Every episode is paired" not in md and "/ None" not in md
    assert "the imagined means with intervals from the model alone" in md and "calibrated error" in md
    assert md.count("| model-only (calibrated unflagged error) | 0 | n/a | n/a |") == 2  # no λ, no worth
    assert "Uncertainty not assessed: no episode ran in MuJoCo (real_episodes=0)." in md
    assert "on the imagined means alone" in md and "truly the best: n/a" in md
    for p in report["policies"]:
        ep = p["episodes"]
        assert ep["total_uncertainty"] == pytest.approx(np.multiply(ep["uncertainty"], ep["imagined_length"]))


def test_error_quantiles_apply_only_at_the_horizon_they_were_calibrated_at() -> None:
    risk = {"features": ["log_coverage"], "weights": [1.0], "bias": 0.0, "fitted_on": "a test"}
    quantiles = {"levels": [0.9], "flagged": [0.5], "unflagged": [0.1]}
    assert error_quantiles_at({**risk, "error_quantiles": quantiles, "horizon": 1000}, 1000) == quantiles
    assert error_quantiles_at({**risk, "error_quantiles": quantiles, "horizon": 1000}, 300) is None
    assert error_quantiles_at({**risk, "error_quantiles": quantiles}, 300) == quantiles  # no horizon: any length
    assert error_quantiles_at({**risk, "horizon": 1000}, 1000) is None and error_quantiles_at(None, 1000) is None
