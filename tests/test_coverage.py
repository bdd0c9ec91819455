"""Coverage data stored with a model, and the trust signal built on it: distances, checkpoints, risk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import wm_eval
from wm_eval.data import load_dataset
from wm_eval.errors import CheckpointError
from wm_eval.evaluation.trust_signal import FEATURES, policy_features, policy_risk
from wm_eval.models.checkpoint import attach_coverage, load_checkpoint, model_fingerprint, resolve_model
from wm_eval.models.coverage import COVERAGE_FILE, Coverage, build_coverage, default_risk

RISK = {"features": list(FEATURES), "weights": [1.0, 2.0, 1.0], "bias": -1.0, "fitted_on": "a test"}


@pytest.fixture(scope="module")
def covered(tiny_model: Path, hopper_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with the coverage of its training data (and a risk model) attached."""
    out = tmp_path_factory.mktemp("covered") / "model"
    shutil.copytree(tiny_model, out)
    model = load_checkpoint(out)
    attach_coverage(out, build_coverage(model, load_dataset(hopper_dataset).episodes, seed=0, risk=RISK))
    return out


def test_distance_is_about_one_inside_the_data_and_large_outside(covered: Path, hopper_dataset: Path) -> None:
    coverage = load_checkpoint(covered).coverage
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    obs = np.concatenate([e.observations[:-1] for e in episodes])
    act = np.concatenate([e.actions for e in episodes])
    inside = coverage.distance(obs, act)
    assert 0.2 < np.median(inside) < 2.0
    far = coverage.distance(obs + 20 * coverage.std[: obs.shape[1]], act)
    assert far.min() > 5 * np.median(inside)
    # a row's distance does not depend on the batch it is computed in; non-finite rows are infinitely far
    assert coverage.distance(obs[3:4], act[3:4])[0] == pytest.approx(inside[3], rel=1e-5)
    bad = obs[:2].copy()
    bad[1, 0] = np.nan
    assert np.isinf(coverage.distance(bad, act[:2])[1]) and np.isfinite(coverage.distance(bad, act[:2])[0])


def test_coverage_round_trips_through_the_checkpoint(covered: Path, tiny_model: Path, tmp_path: Path) -> None:
    coverage = load_checkpoint(covered).coverage
    assert coverage.risk == RISK
    assert (covered / COVERAGE_FILE).stat().st_size < 300_000
    again = Coverage.load(covered / COVERAGE_FILE)
    np.testing.assert_array_equal(again.sample, coverage.sample)
    assert again.scale == coverage.scale and again.uncertainty_ref > 0
    assert load_checkpoint(tiny_model).coverage is None  # saved without: trust falls back to disagreement
    assert model_fingerprint(covered) != model_fingerprint(tiny_model)  # the coverage is part of the model


def test_corrupt_or_foreign_coverage_is_a_clear_error(covered: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(covered, broken)
    (broken / COVERAGE_FILE).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="coverage.npz is missing or corrupt"):
        load_checkpoint(broken)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, format=np.array("something/1"))
    with pytest.raises(CheckpointError, match="is not a wm_eval.coverage/1 file"):
        Coverage.load(foreign)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array("wm_eval.coverage/1"), mean=np.array([{"code": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):  # no pickle is ever read
        Coverage.load(pickled)


def test_evaluation_reports_coverage_trust_score_and_risk(covered: Path) -> None:
    model = load_checkpoint(covered)
    ev = wm_eval.evaluate("Hopper-v5", ["zoo#ppo_0000k", "zoo#ppo_0600k"], model=model, episodes=3, horizon=25,
                          seed=4, trajectories="all", bootstrap=50, progress=False)
    coverage = model.coverage
    for p in ev.policies:
        assert p.episodes["imagined_coverage"].shape == (3,) and np.all(p.episodes["imagined_coverage"] > 0)
        expected = policy_risk(policy_features(p.episodes, coverage, 25), RISK)
        assert p.summary["risk"] == pytest.approx(expected)
        assert p.summary["flagged"] == (expected > 0.5)
        for pair in p.kept:  # the trust score recomputed from the kept imagined episode
            im = pair.imagined
            d = coverage.distance(im.observations[:-1], im.actions)
            score = np.sum(im.infos["uncertainty"] / coverage.uncertainty_ref * np.maximum(1.0, d))
            assert p.episodes["imagined_trust_score"][pair.episode] == pytest.approx(score, rel=1e-6)
    assert ev.trust["signal"].startswith("disagreement and coverage; risk model fitted on a test")
    assert ev.trust["flagged"] == [p.name for p in ev.policies if p.summary["flagged"]]
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    wm_eval.report(ev, "rep")  # the policy's risk travels with its episodes into trajectories.h5 and Rerun
    texts = [chunk.to_record_batch().to_pylist()[0]["TextDocument:text"][0]
             for chunk in RrdReader(Path("rep") / "rollouts.rrd").stream().to_chunks()
             if chunk.entity_path.endswith("/summary")]
    assert texts and all("**Policy risk**" in t for t in texts)
    risks = {f"{p.summary['risk']:.2f}" for p in ev.policies}
    assert {t.split("**Policy risk** (probability that the imagined mean return is off by more than 20%): ")[1][:4]
            for t in texts} <= risks

    model.coverage = None  # an older checkpoint: disagreement only, and said so
    old = wm_eval.evaluate("Hopper-v5", ["zoo#ppo_0000k"], model=model, episodes=2, horizon=10, progress=False)
    assert old.trust["signal"].startswith("disagreement only")
    assert old.policies[0].summary["risk"] is None and not old.policies[0].summary["flagged"]
    assert "imagined_coverage" not in old.policies[0].episodes


def test_train_stores_coverage_and_the_default_risk_model(hopper_dataset: Path, tmp_path: Path) -> None:
    from wm_eval.cli import main

    assert main(["train", f"dataset={hopper_dataset}", "out=m", "epochs=1", "ensemble_size=2", "elites=1",
                 "hidden=16", "layers=1", "threads=1"]) == 0
    model = load_checkpoint("m")
    assert model.coverage is not None and len(model.coverage.sample) > 0
    assert model.coverage.risk == default_risk()


def test_embedded_models_store_coverage_and_a_risk_model_fitted_without_their_task() -> None:
    from wm_eval.tasks import time_limit

    for task in wm_eval.models.EMBEDDED_TASKS:
        coverage = resolve_model(None, task=task).coverage
        assert coverage is not None and coverage.risk is not None, task
        fitted_on = coverage.risk["fitted_on"]
        assert fitted_on.endswith("(leave this task out)"), task  # honest: its own policies took no part
        assert task not in fitted_on.removeprefix("policies of ").split(" (")[0].split(", "), task
        assert coverage.risk["horizon"] == time_limit(task)
        quantiles = coverage.risk["error_quantiles"]
        assert quantiles["levels"] == [0.5, 0.8, 0.9, 0.95]
        for group in ("flagged", "unflagged"):
            assert quantiles[group] == sorted(quantiles[group]) and min(quantiles[group]) >= 0
    assert default_risk() is not None and "leave" not in default_risk()["fitted_on"]


def test_a_diverged_imagination_is_flagged_whatever_the_risk_model_says(covered: Path) -> None:
    from wm_eval.evaluation.summary import policy_trust

    coverage = load_checkpoint(covered).coverage.with_risk({**RISK, "weights": [0.0, 0.0, 0.0], "bias": -10.0})
    values = {"imagined_return": np.array([1.0, 2.0]), "imagined_uncertainty": np.array([0.1, 0.1]),
              "imagined_coverage": np.array([1.0, 1.0])}
    calm = policy_trust(values, coverage, 30)
    assert calm["risk"] < 1e-3 and not calm["flagged"]
    for key, bad in (("imagined_return", np.nan), ("imagined_coverage", np.inf), ("imagined_uncertainty", np.nan)):
        wild = {**values, key: np.array([1.0, bad])}
        assert policy_trust(wild, coverage, 30) | {"coverage": 0} == {"coverage": 0, "risk_features": None,
                                                                        "risk": 1.0, "flagged": True}


def test_malformed_risk_models_and_mismatched_coverage_are_refused(covered: Path, tmp_path: Path) -> None:
    coverage = load_checkpoint(covered).coverage
    for bad in ({**RISK, "weights": [1.0]}, {**RISK, "features": ["log_coverage", "speed", "x"]},
                {**RISK, "bias": float("nan")}, {k: v for k, v in RISK.items() if k != "fitted_on"}):
        with pytest.raises(CheckpointError, match="risk model is malformed"):
            coverage.with_risk(bad)
    other = tmp_path / "other"
    shutil.copytree(covered, other)
    (other / "notes.txt").write_text("mine")
    attach_coverage(other, coverage.with_risk(None))
    assert (other / "notes.txt").read_text() == "mine" and load_checkpoint(other).coverage.risk is None
    from dataclasses import replace

    with pytest.raises(CheckpointError, match="coverage data is for 3 observation dimensions"):
        attach_coverage(other, replace(coverage, obs_low=coverage.obs_low[:3]))


def test_the_probe_is_the_episodes_given_and_stays_out_of_the_sample(tiny_model: Path, hopper_dataset: Path) -> None:
    model = load_checkpoint(tiny_model)
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    coverage = build_coverage(model, episodes, seed=0, probe=episodes[-3:], size=100_000)

    def rows(eps: list) -> set[tuple[float, ...]]:
        x = np.concatenate([np.concatenate([e.observations[:-1] for e in eps]), np.concatenate([e.actions for e in eps])],
                           axis=1)
        return {tuple(r) for r in ((x - coverage.mean) / coverage.std).astype(np.float16).astype(np.float32)}

    assert rows(episodes[:-3]) == {tuple(r) for r in coverage.sample}  # every other pair, no probe pair
    other = build_coverage(model, episodes, seed=0, probe=episodes[:3], size=100_000)
    assert (other.scale, other.uncertainty_ref) != (coverage.scale, coverage.uncertainty_ref)  # measured on the probe
    with pytest.raises(ValueError, match="probe must be some"):
        build_coverage(model, episodes, seed=0, probe=list(episodes))
