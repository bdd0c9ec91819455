"""Reporting: the folder ``wm_eval.report`` writes (report.json / report.md, plots, trajectories.h5 with
its minari/ view, rollouts.rrd) from a real, small paired evaluation.

``wm_eval.evaluate`` runs four simple Hopper-v5 policies for three episodes of 30 steps, in the
embedded Hopper world model and in MuJoCo. The model ends some imagined episodes at other steps
than MuJoCo does (``wobble`` falls a step later in imagination; a model update that fixed that would
fail the length checks, so pick another such policy then) and swaps two policies' order, so paired
episodes differ in length and the ranking metrics are not trivial. Every number checked here is recomputed from the per-episode values or the
kept trajectories, not copied from the code under test.

Per-policy risk: the same policies in the embedded model given a risk model (``RISK``), which flags
some of them and not the others, and in the model stripped of its coverage data (risk ``n/a``).

Model-only: the same policies with ``real_episodes=0`` (no MuJoCo episode), read back from report.md,
report.json and the terminal table.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import matplotlib.image
import minari
import numpy as np
import pytest
from scipy import stats

import wm_eval
from wm_eval.data import load_dataset
from wm_eval.errors import DatasetError
from wm_eval.evaluation import metrics as M
from wm_eval.evaluation.executor import real_rollouts
from wm_eval.policy import ConstantPolicy, LinearPolicy, load_policies
from wm_eval.reporting import build_report, read_trajectories, summary_table, write_plots, write_report
from wm_eval.tasks import make_env, reset_states
from wm_eval.types import Evaluation

REPO = Path(__file__).resolve().parents[1]
TASK, EPISODES, HORIZON, SEED = "Hopper-v5", 3, 30, 0
NAMES = ["still", "push", "wobble", "linear"]
DESIGN_KEYS = ("task", "model", "seed", "policies", "metrics", "horizon_error", "versions", "config")
EXTRA_KEYS = ("format", "model_fingerprint", "mode", "propagation", "episodes", "horizon", "gamma", "start_seeds",
              "metrics_ci", "metrics_undiscounted", "trust", "timings", "complete")
NEW_KEYS = ("metrics_by_statistic", "horizon_diverged", "horizon_pairs", "horizon_error_episodes", "machine", "units",
            "intervals", "sample", "chunk")
METRICS = ("spearman", "kendall", "pearson", "mmrv", "mmrv_normalized", "regret_at_1", "regret_at_3",
           "normalized_abs_error")
VERSIONS = ("wm_eval", "python", "torch", "numpy", "mujoco", "gymnasium", "stable-baselines3", "h5py", "rerun-sdk")
SIDE = ("observations", "actions", "rewards", "terminations", "truncations")
OWNED = ("trajectories.h5", "minari", "rollouts.rrd")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = {"task": TASK, "episodes": EPISODES, "horizon": HORIZON, "seed": SEED, "gamma": 0.995, "out": "runs/x"}
RISK = {"features": ["log_disagreement", "log_coverage", "return_excess"], "weights": [1.0, 2.0, 1.0], "bias": -1.0,
        "fitted_on": "test"}
TRUST_KEYS = ("coverage", "risk_features", "risk", "flagged")
QUANTILES = {"levels": [0.5, 0.8, 0.9, 0.95], "unflagged": [0.05, 0.1, 0.15, 0.2], "flagged": [0.3, 0.5, 0.6, 0.8]}
"""Calibrated relative errors of imagined mean returns, as a risk model stores them (for ``real_episodes=0``)."""


def _policies() -> list[Any]:
    env = make_env(TASK)
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
    env.close()
    w = np.random.default_rng(1).normal(scale=0.3, size=(11, 3))
    specs = (ConstantPolicy([0.0, 0.0, 0.0], name="still"), ConstantPolicy([0.8] * 3, name="push"),
             ConstantPolicy([0.5, -0.5, 0.5], name="wobble"), LinearPolicy(w, name="linear"))
    return [p for spec in specs for p in load_policies(spec, **spaces)]


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    return wm_eval.evaluate(TASK, _policies(), episodes=EPISODES, horizon=HORIZON, seed=SEED, workers=1,
                            bootstrap=200, progress=False)


@pytest.fixture(scope="module")
def written(evaluation: Evaluation, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("evaluation")
    return folder, wm_eval.report(evaluation, folder, config=CONFIG)


def _kept(evaluation: Evaluation) -> list[Any]:
    return [ep for p in evaluation.policies for ep in p.kept]


def _model(coverage: str) -> Any:
    """The embedded Hopper model in memory: as stored (``"stored"``), with the ``RISK`` model (``"risk"``) or
    without coverage data (``"none"``)."""
    from wm_eval.models import resolve_model

    model = resolve_model(None, task=TASK)
    if coverage != "stored":
        model.coverage = None if coverage == "none" else model.coverage.with_risk(RISK)
    return model


@pytest.fixture(scope="module")
def risky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Evaluation]:
    """The policies evaluated with the ``RISK`` model, its report folder (no trajectories) and report."""
    ev = wm_eval.evaluate(TASK, _policies(), model=_model("risk"), episodes=EPISODES, horizon=HORIZON, seed=SEED,
                          workers=1, bootstrap=200, trajectories="summary", progress=False)
    folder = tmp_path_factory.mktemp("risky")
    return folder, wm_eval.report(ev, folder), ev


@pytest.fixture(scope="module")
def uncovered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Two policies in a model that stores no coverage data: trust rests on disagreement alone."""
    ev = wm_eval.evaluate(TASK, _policies()[:2], model=_model("none"), episodes=2, horizon=20, seed=SEED, workers=1,
                          bootstrap=50, trajectories="summary", progress=False)
    folder = tmp_path_factory.mktemp("uncovered")
    return folder, wm_eval.report(ev, folder)


@pytest.fixture(scope="module")
def model_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The policies with ``real_episodes=0`` in the model given ``RISK`` and calibrated errors, and its report."""
    model = _model("stored")
    model.coverage = model.coverage.with_risk({**RISK, "error_quantiles": QUANTILES})
    ev = wm_eval.evaluate(TASK, _policies(), model=model, episodes=EPISODES, horizon=HORIZON, seed=SEED,
                          real_episodes=0, workers=1, bootstrap=50, trajectories="summary", progress=False)
    folder = tmp_path_factory.mktemp("model_only")
    return folder, wm_eval.report(ev, folder)


def _signals(episode: Any, coverage: Any) -> tuple[float, float]:
    """An imagined episode's ``(trust score, coverage)`` recomputed from its kept steps: disagreement over the
    model's reference, weighted by ``max(1, distance to the training data)``, summed; the mean distance."""
    imagined = episode.imagined
    distance = coverage.distance(imagined.observations[:-1].astype(np.float64), imagined.actions.astype(np.float64))
    score = np.sum(imagined.infos["uncertainty"] / coverage.uncertainty_ref * np.maximum(1.0, distance))
    return float(score), float(np.mean(distance))


def _auroc(scores: list[float], labels: list[bool]) -> float | None:
    """AUROC by counting pairs (ties one half); ``None`` when a class is empty."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def _red_pixels(path: Path) -> int:
    """Pixels of a PNG in the flag colour (strong pure red; no other element of the figures has it)."""
    rgb = matplotlib.image.imread(path)[..., :3]
    return int(np.sum((rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.12) & (rgb[..., 2] < 0.12)))


def test_report_has_every_contract_key_and_round_trips(evaluation: Evaluation,
                                                       written: tuple[Path, dict[str, Any]]) -> None:
    folder, report = written
    assert set(DESIGN_KEYS + EXTRA_KEYS + NEW_KEYS) <= set(report)
    assert report["format"] == "wm_eval.report/1" and report["complete"] is True
    assert (report["task"], report["seed"], report["episodes"], report["horizon"]) == (TASK, SEED, EPISODES, HORIZON)
    assert (report["model"], report["model_fingerprint"]) == (evaluation.model, evaluation.model_fingerprint)
    assert TASK in report["model"] and report["model_fingerprint"]
    assert report["gamma"] == 0.995 and report["start_seeds"] == evaluation.start_seeds.tolist()
    assert len(set(report["start_seeds"])) == EPISODES
    for block in ("metrics_ci", "metrics_undiscounted"):
        assert set(METRICS) <= set(report[block])
        assert all(set(report[block][m]) == {"value", "ci_low", "ci_high"} for m in METRICS)
    assert set(METRICS) <= set(report["metrics"])
    assert set(VERSIONS) <= set(report["versions"]) and report["versions"]["numpy"] == np.__version__
    assert {"cpu", "cores"} <= set(report["machine"])
    assert report["units"] == list(evaluation.units) and len(report["units"]) == len(NAMES)  # one chunk per policy
    assert report["config"] == CONFIG
    assert {"model_rollouts", "ground_truth_rollouts", "metrics", "total", "logging", "recording"} <= set(
        report["timings"])
    assert [p["name"] for p in report["policies"]] == NAMES
    assert report["trust"]["signal"].startswith("disagreement and coverage")  # the embedded model stores coverage
    assert report["trust"]["flagged"] == [p["name"] for p in report["policies"] if p["flagged"]]
    coverage = _model("stored").coverage
    for p, pr in zip(report["policies"], evaluation.policies):
        ep = p["episodes"]
        assert p["name"] == pr.name and p["source"] is None  # in-memory policies
        assert set(p["statistics"]) == {"return", "discounted_return"}  # Hopper defines no success
        for stat, key, suffix in (("return", "return", ""), ("discounted_return", "return_discounted", "_discounted")):
            for side in ("imagined", "true"):
                entry = p["statistics"][stat][side]
                assert entry == p[f"{side}_return{suffix}"]
                assert set(entry) == {"mean", "ci_low", "ci_high"}
                assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
                assert entry["mean"] == pytest.approx(np.mean(ep[f"{side}_{key}"]))
        assert p["abs_error"] == pytest.approx(abs(p["imagined_return"]["mean"] - p["true_return"]["mean"]))
        assert len(ep["true_return"]) == EPISODES
        assert ep["true_length"] == [len(e.true) for e in pr.kept]
        assert ep["imagined_length"] == [len(e.imagined) for e in pr.kept]
        # total_uncertainty (report/1): the raw disagreement summed over an episode; the trust score weights it by
        # the distance to the training data and divides it by the model's reference disagreement
        raw = [float(np.sum(e.imagined.infos["uncertainty"])) for e in pr.kept]
        assert ep["total_uncertainty"] == pytest.approx(raw, rel=1e-6)
        assert ep["total_uncertainty"] != pytest.approx(ep["trust_score"], rel=1e-3)
        recomputed = np.array([_signals(e, coverage) for e in pr.kept])
        assert ep["trust_score"] == pytest.approx(recomputed[:, 0])
        assert ep["coverage"] == pytest.approx(recomputed[:, 1])
        assert p["trust_score"] == pytest.approx(np.mean(ep["trust_score"])) and p["uncertainty"] > 0
        assert p["coverage"] == pytest.approx(np.mean(ep["coverage"]))
        assert set(p["risk_features"]) == set(RISK["features"])
        assert p["flagged"] is (p["risk"] is not None and p["risk"] > 0.5)
        for side in ("imagined", "true"):  # the share of episodes ended by Hopper's rule, with scipy's Wilson interval
            ended = np.asarray(ep[f"{side}_terminated"], dtype=bool)
            wilson = stats.binomtest(int(ended.sum()), len(ended)).proportion_ci(method="wilson")
            assert p["terminated"][side] == pytest.approx({"mean": ended.mean(), "ci_low": wilson.low,
                                                           "ci_high": wilson.high})
    true_means = [p["true_return"]["mean"] for p in report["policies"]]
    assert [p["true_rank"] for p in report["policies"]] == (np.argsort(np.argsort(-np.array(true_means))) + 1).tolist()
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded == report
    json.dumps(loaded, allow_nan=False)
    again = build_report(evaluation, config=CONFIG, versions=report["versions"])
    varying = ("timings", "machine")  # report() adds the writing times; the load average moves
    assert {k: v for k, v in again.items() if k not in varying} == {k: v for k, v in report.items() if k not in varying}
    assert not list(folder.rglob(".*.tmp"))


def _mmrv(imagined: np.ndarray, true: np.ndarray) -> float:
    """SIMPLER's mean maximum rank violation, in return units."""
    violated = (imagined[:, None] > imagined[None, :]) != (true[:, None] > true[None, :])
    return float(np.mean(np.max(np.abs(true[:, None] - true[None, :]) * violated, axis=1)))


def test_ranking_metrics_are_on_raw_returns(written: tuple[Path, dict[str, Any]]) -> None:
    _, report = written
    policies = report["policies"]
    for block, suffix in ((report["metrics_ci"], "_discounted"), (report["metrics_undiscounted"], "")):
        imagined = np.array([p[f"imagined_return{suffix}"]["mean"] for p in policies])
        true = np.array([p[f"true_return{suffix}"]["mean"] for p in policies])
        assert block["spearman"]["value"] == pytest.approx(stats.spearmanr(imagined, true)[0])
        assert block["kendall"]["value"] == pytest.approx(stats.kendalltau(imagined, true)[0])
        assert block["pearson"]["value"] == pytest.approx(stats.pearsonr(imagined, true)[0])
        mmrv = _mmrv(imagined, true)
        assert block["mmrv"]["value"] == pytest.approx(mmrv)
        assert block["mmrv_normalized"]["value"] == pytest.approx(mmrv / np.ptp(true))
        assert block["mmrv_normalized"]["value"] <= block["mmrv"]["value"]  # returns spread over more than 1
    # the embedded model may rank these four policies right (MMRV 0 above): the reference must also agree
    # with the library where the order is violated
    swapped = imagined[::-1].copy()
    reference = _mmrv(swapped, true)
    assert reference > 0 and M.mmrv(predicted=swapped, ground_truth=true) == pytest.approx(reference)
    assert report["metrics"] == {k: v["value"] for k, v in report["metrics_ci"].items()}
    assert report["metrics_by_statistic"] == {"discounted_return": report["metrics_ci"],
                                              "return": report["metrics_undiscounted"]}


def test_horizon_error_and_divergence_follow_the_kept_episodes(evaluation: Evaluation,
                                                              written: tuple[Path, dict[str, Any]]) -> None:
    _, report = written
    pairs = _kept(evaluation)
    assert len(pairs) == report["horizon_pairs"] == len(NAMES) * EPISODES
    error_sum, running, diverged = np.zeros(HORIZON + 1), np.zeros(HORIZON + 1, int), np.zeros(HORIZON + 1, int)
    for ep in pairs:
        both = min(len(ep.true), len(ep.imagined))
        diff = (ep.imagined.observations[: both + 1] - ep.true.observations[: both + 1]) / evaluation.obs_scale
        error_sum[: both + 1] += np.sqrt(np.mean(diff**2, axis=1))
        running[: both + 1] += 1
        for t in range(HORIZON + 1):
            diverged[t] += bool(ep.true.terminations[:t].any()) != bool(ep.imagined.terminations[:t].any())
    assert report["horizon_error_episodes"] == running.tolist()
    assert report["horizon_diverged"] == diverged.tolist()
    assert max(report["horizon_diverged"]) > 0  # some imagined episodes end where the true ones do not
    assert len(report["horizon_error"]) == HORIZON + 1 and report["horizon_error"][0] == 0.0  # same start state
    assert report["horizon_error"] == pytest.approx((error_sum / running).tolist())


def test_report_markdown_and_terminal_table(written: tuple[Path, dict[str, Any]]) -> None:
    folder, report = written
    md = (folder / "report.md").read_text()
    assert md.startswith(f"# wm_eval report: {TASK}") and "closed_loop" in md and f"horizon {HORIZON}" in md
    for name in [*NAMES, *METRICS]:
        assert f"| {name} |" in md
    for link in ("report.json", "trajectories.h5", "rollouts.rrd", "returns.png", "horizon_error.png",
                 "uncertainty.png"):
        assert f"]({link})" in md
    assert "| step | 1 | 10 | 30 |" in md and "| diverged |" in md and "summed over an episode" in md
    table = summary_table(report).splitlines()
    flagged = bool(report["trust"]["flagged"])  # a flagged policy adds a last line naming it
    assert len(table) == 1 + len(NAMES) + 1 + flagged
    metrics = table[1 + len(NAMES)]
    rows = sorted(report["policies"], key=lambda p: -p["true_return"]["mean"])
    assert [line.split()[0] for line in table[1:1 + len(NAMES)]] == [p["name"] for p in rows]
    assert all(word in metrics for word in ("Spearman", "Kendall", "Pearson", "MMRV", "of spread", "regret@1", "NAE"))
    assert f"MMRV {report['metrics']['mmrv']:.1f} ({report['metrics']['mmrv_normalized']:.3f} of spread)" in metrics


def test_terminations_column_and_verdict(written: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Shares of terminated episodes are shown when some episode ended by the rule; the policies whose imagined
    and true shares differ by 25 points or more are named, largest difference first."""
    report = copy.deepcopy(written[1])
    shares = {"still": (0.35, 0.1), "push": (0.1, 0.8), "wobble": (0.5, 0.3), "linear": (1.0, 0.6)}
    for p in report["policies"]:
        p["terminated"] = {side: {"mean": v, "ci_low": 0.0, "ci_high": 1.0}
                           for side, v in zip(("imagined", "true"), shares[p["name"]])}
    lines = write_report(tmp_path / "falls", report)[1].read_text().splitlines()
    assert ("- Terminations (falls) are mispredicted for 3 of 4 policies, by 25 points of their episodes or more: "
            "push (10% imagined, 80% true), linear (100% imagined, 60% true), still (35% imagined, 10% true). Their "
            "imagined returns are the ones to doubt.") in lines  # exactly 25 points (0.35 - 0.1 < 0.25 in floats)
    assert any(line.startswith("| policy |") and line.endswith("| rank imagined / true | terminated |") for line in lines)
    assert any(line.startswith("| push |") and line.endswith("| 10% / 80% |") for line in lines)
    table = summary_table(report).splitlines()
    assert table[0].split()[-2:] == ["falls", "im/true"] and "10%/80%" in next(r for r in table if r.startswith("push"))
    for p in report["policies"]:  # nothing terminated: no column, no verdict
        p["terminated"] = {side: {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.1} for side in ("imagined", "true")}
    md = write_report(tmp_path / "none", report)[1].read_text()
    assert "| rank imagined / true |\n" in md and "terminated |" not in md and "mispredicted" not in md
    assert "falls" not in summary_table(report)
    for p in report["policies"]:  # a report.json written before the key existed reads as before
        del p["terminated"]
    md = write_report(tmp_path / "older", report)[1].read_text()
    assert "| rank imagined / true |\n" in md and "mispredicted" not in md and "falls" not in summary_table(report)


@pytest.mark.parametrize(("spearman", "auroc", "expected"), [
    (0.95, 0.9, ["Ranking agrees with MuJoCo (Spearman 0.95 [0.50, 1.00])", "Uncertainty flags the episodes whose imagined return is off"]),
    (0.3, 0.5, ["**Warning:** the model's ranking disagrees", "**Warning:** uncertainty does not flag"]),
    (None, None, ["Ranking not assessed", "Uncertainty not assessed"]),
])
def test_report_verdict(written: tuple[Path, dict[str, Any]], tmp_path: Path, spearman: float | None,
                        auroc: float | None, expected: list[str]) -> None:
    report = copy.deepcopy(written[1])
    report["metrics_ci"]["spearman"] = {"value": spearman, "ci_low": 0.5, "ci_high": 1.0}
    report["trust"]["auroc"] = auroc
    md = write_report(tmp_path, report)[1].read_text()
    assert all(text in md for text in expected)
    assert "trajectories.h5" not in md and ".png" not in md  # nothing to link in an empty folder


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, path


def test_plots_are_pngs(written: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, report = written
    for name in ("returns.png", "horizon_error.png", "uncertainty.png"):
        _assert_png(folder / name)
    sparse = copy.deepcopy(report)  # one policy: intervals, metrics and AUROC undefined (JSON null)
    sparse["policies"] = sparse["policies"][:1]
    sparse["policies"][0]["true_return"].update(ci_low=None, ci_high=None)
    sparse["metrics"] = dict.fromkeys(sparse["metrics"])
    sparse["trust"]["auroc"] = None
    sparse["horizon_error"][-3:] = [None] * 3
    paths = write_plots(tmp_path / "sparse", sparse)
    assert [p.name for p in paths] == ["returns.png", "horizon_error.png", "uncertainty.png"]
    for path in paths:
        _assert_png(path)


def test_risk_and_flagged_are_in_report_json(risky: tuple[Path, dict[str, Any], Evaluation]) -> None:
    folder, report, ev = risky
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded == report
    policies = loaded["policies"]
    for p, pr in zip(policies, ev.policies):
        assert set(TRUST_KEYS) <= set(p) and {k: p[k] for k in TRUST_KEYS} == {k: pr.summary[k] for k in TRUST_KEYS}
        z = RISK["bias"] + sum(w * p["risk_features"][f] for f, w in zip(RISK["features"], RISK["weights"]))
        assert p["risk"] == pytest.approx(1 / (1 + np.exp(-z))) and p["flagged"] is (p["risk"] > 0.5)
        assert p["coverage"] == pytest.approx(np.mean(p["episodes"]["coverage"]))
        reference = _model("risk").coverage.episode_coverage_ref  # relative to a typical training episode
        assert p["risk_features"]["log_coverage"] == pytest.approx(np.log(p["coverage"] / reference))
    flagged = [p["name"] for p in policies if p["flagged"]]
    assert flagged and len(flagged) < len(policies), "RISK should flag some of the policies, not all"
    trust = loaded["trust"]
    assert trust["signal"] == "disagreement and coverage; risk model fitted on test"
    assert trust["flagged"] == flagged and trust["risk_threshold"] == 0.5
    imagined = np.array([p["imagined_return"]["mean"] for p in policies])
    true = np.array([p["true_return"]["mean"] for p in policies])
    off = np.abs(imagined - true) > 0.25 * np.maximum(np.abs(true), 0.1 * np.max(np.abs(true)))
    assert trust["policies_off"] == int(off.sum())
    expected = _auroc([p["risk"] for p in policies], off.tolist())
    assert trust["policy_auroc"] == (None if expected is None else pytest.approx(expected))
    assert {"auroc", "length_auroc", "auroc_length_control", "best_policy"} <= set(trust)


def test_risk_and_flags_in_markdown_terminal_and_plot(risky: tuple[Path, dict[str, Any], Evaluation],
                                                      tmp_path: Path) -> None:
    folder, report, _ = risky
    md = (folder / "report.md").read_text()
    assert "- Signal: disagreement and coverage; risk model fitted on test." in md
    assert "| trust score | risk | rank imagined / true |" in md
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and " / " in line}
    flagged = [p for p in report["policies"] if p["flagged"]]
    for p in report["policies"]:
        cell = f"{p['risk']:.2f} ⚑" if p["flagged"] else f"{p['risk']:.2f}"
        assert f"| {cell} | {p['imagined_rank']} / {p['true_rank']} |" in rows[p["name"]]
    named = ", ".join(f"{p['name']} (risk {p['risk']:.2f})" for p in flagged)
    assert f"- Flagged (risk > 0.5): {named}." in md
    assert f"- **Warning:** ⚑ flagged (risk > 0.5): {named}:" in md  # among the verdicts at the top
    auroc = report["trust"]["policy_auroc"]  # None when no policy is off (or every one is): then no AUROC line
    assert ("risk AUROC" in md) is (auroc is not None)
    if auroc is not None:
        assert f"risk AUROC {auroc:.2f}" in md
    # with a computable AUROC (one policy off, as a worse model would have it) the line names it and the count
    from wm_eval.reporting.trust import trust_section

    computable = copy.deepcopy(report)
    computable["trust"].update(policy_auroc=0.75, policies_off=1)
    assert (f"- Policies: risk AUROC 0.75 for flagging the policies whose imagined mean return is off by more than "
            f"25% (1 of {len(report['policies'])}).") in trust_section(computable)
    assert "trust AUROC" in md and "the imagined length alone" in md

    table = summary_table(report).splitlines()
    assert table[0].split()[:7] == ["policy", "imagined", "true", "|error|", "trust", "score", "risk"]
    by_name = {line.split()[0]: line for line in table[1:1 + len(NAMES)]}
    for p in report["policies"]:
        assert f"{p['risk']:.2f}" in by_name[p["name"]]
        assert ("FLAGGED" in by_name[p["name"]]) is p["flagged"]
    assert table[-1].startswith(f"FLAGGED (risk > 0.5): {named}:")

    assert _red_pixels(folder / "returns.png") > 100  # the flagged policies are ringed in red
    calm = copy.deepcopy(report)
    for p in calm["policies"]:
        p["flagged"] = False
    (path,) = [p for p in write_plots(tmp_path, calm) if p.name == "returns.png"]
    assert _red_pixels(path) == 0


def test_a_model_without_coverage_falls_back_to_disagreement_and_says_so(
        uncovered: tuple[Path, dict[str, Any]]) -> None:
    folder, report = uncovered
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded == report
    trust = loaded["trust"]
    assert trust["signal"].startswith("disagreement only: the model stores no coverage data")
    assert (trust["flagged"], trust["policy_auroc"], trust["policies_off"]) == ([], None, None)
    for p in loaded["policies"]:
        assert {k: p[k] for k in TRUST_KEYS} == {"coverage": None, "risk_features": None, "risk": None,
                                                 "flagged": False}
        ep = p["episodes"]
        assert "coverage" not in ep  # no per-episode coverage without coverage data
        assert ep["trust_score"] == pytest.approx(np.multiply(ep["uncertainty"], ep["imagined_length"]))  # summed
    md = (folder / "report.md").read_text()
    assert f"- Signal: {trust['signal']}." in md and "no policy flagged" in md
    assert "risk AUROC" not in md and " ⚑ |" not in md and "**Warning:** ⚑" not in md
    for p in loaded["policies"]:
        assert any(line.startswith(f"| {p['name']} |") and f"| n/a | {p['imagined_rank']} / " in line
                   for line in md.splitlines())
    table = summary_table(loaded).splitlines()
    assert len(table) == 1 + 2 + 1 and "FLAGGED" not in "\n".join(table)
    assert all(line.split()[-1] == "n/a" for line in table[1:3])
    assert _red_pixels(folder / "returns.png") == 0


def test_model_only_report_says_no_episode_ran_in_mujoco(model_only: tuple[Path, dict[str, Any]],
                                                          tmp_path: Path) -> None:
    folder, report = model_only
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded == report and loaded["trust"]["episodes"] == 0 and loaded["real_episodes"] == 0
    policies = loaded["policies"]
    for p in policies:  # report/1's total_uncertainty: the raw disagreement summed over each episode
        ep = p["episodes"]
        assert ep["total_uncertainty"] == pytest.approx(np.multiply(ep["uncertainty"], ep["imagined_length"]))
        assert ep["total_uncertainty"] != pytest.approx(ep["trust_score"], rel=1e-3)
        assert p["true_rank"] is None and p["true_estimate"]["method"].startswith("model-only (calibrated")
    by_imagined = [p["name"] for p in sorted(policies, key=lambda p: -p["imagined_return"]["mean"])]
    assert by_imagined != [p["name"] for p in policies]  # the report's order differs: sorting is visible
    md = (folder / "report.md").read_text()
    lines = md.splitlines()
    for wrong in ("Every episode is paired", "Student-t", "needs at least two policies", "n/a%", "/ None",
                  "sorted by true return"):
        assert wrong not in md, wrong
    assert "- Ranking not assessed: the ranking metrics need real episodes, and none ran in MuJoCo." in lines
    assert "- Uncertainty not assessed: no episode ran in MuJoCo (real_episodes=0)." in lines
    assert "## Policies (sorted by imagined return; no episode ran in MuJoCo)" in lines
    assert ("No episode ran in MuJoCo (real_episodes=0), so the estimates are the imagined means with intervals "
            "from the model alone: the spread of the imagined returns widened by the model's calibrated error") in md
    policy_rows = [line.split(" | ") for line in lines if line.startswith("| ") and " / n/a |" in line]
    assert [r[0][2:] for r in policy_rows] == by_imagined
    assert [r[6].removesuffix(" |") for r in policy_rows] == [f"{p['imagined_rank']} / n/a" for p in sorted(
        policies, key=lambda p: -p["imagined_return"]["mean"])]
    falls = any(p["terminated"]["imagined"]["mean"] for p in policies)  # no true side: "x% / n/a", no verdict
    assert [r[7] if len(r) > 7 else None for r in policy_rows] == [
        f"{100 * p['terminated']['imagined']['mean']:.0f}% / n/a |" if falls else None
        for p in sorted(policies, key=lambda p: -p["imagined_return"]["mean"])]
    assert all(p["terminated"]["true"] == {"mean": None, "ci_low": None, "ci_high": None} for p in policies)
    assert "mispredicted" not in md
    estimate_rows = [line.split(" | ") for line in lines if "| model-only" in line]
    assert [r[0][2:] for r in estimate_rows] == by_imagined
    assert all(r[3:] == ["0", "n/a", "n/a |"] for r in estimate_rows)  # real episodes, λ, worth
    best = loaded["trust"]["best_policy"]
    assert best["name"] == by_imagined[0] and best["probability"] is None
    assert (f"Recommended: **{best['name']}** on the imagined means alone, as no episode ran in MuJoCo (estimated "
            f"true return {best['mean']:.1f}; probability that it is truly the best: n/a).") in lines
    table = summary_table(loaded).splitlines()
    assert [line.split()[0] for line in table[1:1 + len(NAMES)]] == by_imagined
    assert (f"Recommended: {best['name']} on the imagined means alone, as no episode ran in MuJoCo (P(truly best) "
            f"n/a; 0 of {EPISODES * len(NAMES)} episodes run in MuJoCo)") in table
    bare = copy.deepcopy(loaded)  # a model that stores no calibrated error: no interval
    for p in bare["policies"]:
        p["true_estimate"].update(method="model-only (no calibrated model error: no interval)", ci_low=None,
                                  ci_high=None)
    md = write_report(tmp_path, bare)[1].read_text()
    assert ("the estimates are the imagined means with no interval: the model stores no calibrated error of its "
            "imagined returns") in md and "widened" not in md


def test_trajectories_round_trip(evaluation: Evaluation, written: tuple[Path, dict[str, Any]]) -> None:
    folder, report = written
    data = read_trajectories(folder)
    by_file = read_trajectories(data.path)
    assert data.path == by_file.path == folder / "trajectories.h5" and len(by_file.episodes) == len(data.episodes)
    a = data.attrs
    assert a["format"] == "wm_eval.trajectories/1" and a["config"] == CONFIG
    assert a["policies"] == NAMES and a["episodes_per_policy"] == EPISODES
    assert (a["task"], a["model"], a["model_fingerprint"], a["seed"], a["horizon"]) == (
        TASK, evaluation.model, evaluation.model_fingerprint, SEED, HORIZON)
    assert np.array_equal(a["obs_scale"], evaluation.obs_scale)
    assert len(data.episodes) == len(NAMES) * EPISODES
    states = reset_states(TASK, evaluation.start_seeds.tolist())[1]
    coverage = _model("stored").coverage
    lengths_differ = False
    for k, ep in enumerate(data.episodes):
        assert (ep.policy_index, ep.episode) == divmod(k, EPISODES)
        pr = evaluation.policies[ep.policy_index]
        kept = pr.kept[ep.episode]
        seed = int(evaluation.start_seeds[ep.episode])
        assert ep.policy == pr.name == kept.policy and ep.seed == seed == ep.true.seed == ep.imagined.seed
        for name in SIDE + ("sim_states",):
            got, want = getattr(ep.true, name), getattr(kept.true, name)
            assert got.dtype == want.dtype and np.array_equal(got, want), name
        for name in SIDE:
            assert np.array_equal(getattr(ep.imagined, name), getattr(kept.imagined, name)), name
        assert np.array_equal(ep.imagined.infos["uncertainty"], kept.imagined.infos["uncertainty"])
        assert np.array_equal(ep.true.sim_states[0], states[ep.episode])
        assert np.array_equal(ep.imagined.observations[0], ep.true.observations[0])
        values = report["policies"][ep.policy_index]["episodes"]
        assert values["true_return"][ep.episode] == pytest.approx(ep.true.total_reward)
        assert values["imagined_return"][ep.episode] == pytest.approx(ep.imagined.total_reward)
        assert values["trust_score"][ep.episode] == pytest.approx(_signals(ep, coverage)[0])
        lengths_differ |= len(ep.true) != len(ep.imagined)
    assert lengths_differ


def test_true_side_is_mujoco_from_the_recorded_start_seeds(evaluation: Evaluation) -> None:
    states = reset_states(TASK, evaluation.start_seeds.tolist())[1]
    for policy, pr in zip(_policies(), evaluation.policies):
        again = real_rollouts(TASK, policy, states, HORIZON)
        for i, ep in enumerate(pr.kept):
            want = again.trajectory(i)
            for name in SIDE + ("sim_states",):
                assert np.array_equal(getattr(ep.true, name), getattr(want, name)), (pr.name, i, name)


def test_minari_reads_the_ground_truth(evaluation: Evaluation, written: tuple[Path, dict[str, Any]],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = written
    monkeypatch.chdir(tmp_path)  # the link is resolved next to main_data.hdf5, not in the working directory
    pairs = _kept(evaluation)
    ds = minari.MinariDataset(folder / "minari")
    assert ds.total_episodes == len(pairs) == len(NAMES) * EPISODES
    assert ds.total_steps == sum(len(ep.true) for ep in pairs)
    for k, (ep, pair) in enumerate(zip(ds.iterate_episodes(), pairs, strict=True)):
        true = pair.true
        assert ep.id == k and np.array_equal(ep.observations, true.observations)
        assert np.array_equal(ep.actions, true.actions) and np.array_equal(ep.rewards, true.rewards)
        assert np.array_equal(ep.infos["sim_state"], true.sim_states)
    env = ds.recover_environment()
    assert env.spec.id == TASK and env.observation_space == ds.observation_space
    env.close()
    project = load_dataset(folder / "minari")
    assert project.task == TASK and len(project) == len(pairs)
    assert np.array_equal(project.episodes[-1].sim_states, pairs[-1].true.sim_states)


def test_recording_shows_the_selected_episodes_with_their_trust_score(written: tuple[Path, dict[str, Any]]) -> None:
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    from wm_eval.reporting import rerun_log

    folder, report = written
    chosen = rerun_log.select_episodes(read_trajectories(folder))  # the worst and a typical one per policy
    assert {ep.policy for ep in chosen} == set(NAMES)
    texts: dict[str, str] = {}
    for chunk in RrdReader(folder / "rollouts.rrd").stream().to_chunks():
        if chunk.entity_path.endswith("/summary"):
            texts[chunk.entity_path] = chunk.to_record_batch().to_pylist()[0]["TextDocument:text"][0]
    assert set(texts) == {f"{rerun_log.episode_path(ep)}/summary" for ep in chosen}
    for ep in chosen:
        trust = report["policies"][ep.policy_index]["episodes"]["trust_score"][ep.episode]
        assert f"{trust:.4f}" in texts[f"{rerun_log.episode_path(ep)}/summary"]  # one trust score everywhere


def test_report_without_kept_episodes_removes_stale_artifacts(written: tuple[Path, dict[str, Any]],
                                                               tmp_path: Path) -> None:
    folder = shutil.copytree(written[0], tmp_path / "again")
    assert all((folder / name).exists() for name in OWNED)
    summary = wm_eval.evaluate(TASK, _policies()[:2], episodes=2, horizon=10, seed=SEED, workers=1, bootstrap=50,
                               trajectories="summary", progress=False)
    assert not any(p.kept for p in summary.policies)
    report = wm_eval.report(summary, folder)
    assert not any((folder / name).exists() for name in OWNED)  # the earlier run's files would be stale
    md = (folder / "report.md").read_text()
    assert all(f"]({name})" not in md for name in OWNED) and "](returns.png)" in md
    assert json.loads((folder / "report.json").read_text()) == report
    assert (report["episodes"], report["horizon"], [p["name"] for p in report["policies"]]) == (2, 10, NAMES[:2])
    assert report["config"] == summary.config and report["config"]["episodes"] == 2


def _broken(kind: str, good: Path, tmp_path: Path) -> Path:
    path = tmp_path / "trajectories.h5"
    if kind == "missing":
        return tmp_path / "nowhere"
    if kind == "not_hdf5":
        path.write_text("hello\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    else:
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "a") as f:
            if kind == "newer":
                f.attrs["format"] = "wm_eval.trajectories/2"
            else:
                del f["episode_4/imagined/rewards"]
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "does not exist"), ("not_hdf5", "is corrupt"), ("truncated", "is corrupt"),
    ("foreign", "is not a wm_eval trajectories file"), ("newer", "upgrade wm_eval"), ("damaged", "is corrupt"),
])
def test_bad_trajectory_files_raise_dataset_error(written: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                  kind: str, message: str) -> None:
    path = _broken(kind, written[0] / "trajectories.h5", tmp_path)
    with pytest.raises(DatasetError, match=message) as info:
        read_trajectories(path)
    assert "\n" not in str(info.value)


def test_reporting_imports_no_evaluation_code() -> None:
    code = ("import sys, wm_eval.reporting; "
            "bad = [m for m in sys.modules if m.startswith('wm_eval.evaluation') or m == 'torch']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})
