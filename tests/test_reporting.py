"""Reporting: report.json / report.md, plots and trajectories.h5 from a real (small) paired evaluation.

The ground truth is real Hopper-v5 MuJoCo; the "imagined" side is that rollout with drifting
observations, scaled rewards, some episodes cut short and a made-up uncertainty, so no world model
is needed and the imagined and true episodes of a pair differ in length.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import minari
import numpy as np
import pytest

from wm_eval.data import load_dataset
from wm_eval.errors import DatasetError
from wm_eval.evaluation.paired import Evaluation, PolicyRollouts, start_states
from wm_eval.evaluation.rollout import BatchRollout, MujocoBatch, run_episodes
from wm_eval.evaluation.summary import summarize
from wm_eval.policy import ConstantPolicy, LinearPolicy, load_policies
from wm_eval.reporting import (build_report, read_trajectories, summary_table, write_plots, write_report,
                               write_trajectories)
from wm_eval.tasks import make_env

REPO = Path(__file__).resolve().parents[1]
TASK, EPISODES, HORIZON, SEED = "Hopper-v5", 3, 30, 0
DESIGN_KEYS = ("task", "model", "seed", "policies", "metrics", "horizon_error", "versions", "config")
EXTRA_KEYS = ("format", "model_fingerprint", "mode", "propagation", "episodes", "horizon", "gamma", "start_seeds",
              "metrics_ci", "metrics_undiscounted", "trust", "timings", "complete")
METRICS = ("spearman", "kendall", "pearson", "mmrv", "regret_at_1", "regret_at_3", "normalized_abs_error")
VERSIONS = ("wm_eval", "python", "torch", "numpy", "mujoco", "gymnasium", "stable-baselines3", "h5py", "rerun-sdk")
SIDE = ("observations", "actions", "rewards", "terminations", "truncations")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = {"task": TASK, "episodes": EPISODES, "horizon": HORIZON, "seed": SEED, "gamma": 0.995, "out": "runs/x"}


def _imagined(true: BatchRollout, rng: np.random.Generator, *, cut: int) -> BatchRollout:
    """``true`` with drifting observations and scaled rewards; odd episodes end ``cut`` steps early."""
    n, h = true.rewards.shape
    lengths = np.maximum(true.lengths - cut * (np.arange(n) % 2), 1)
    valid = np.arange(h)[None] < lengths[:, None]
    obs_valid = np.arange(h + 1)[None] <= lengths[:, None]
    drift = rng.normal(scale=0.01, size=true.observations.shape) * np.arange(h + 1)[None, :, None]
    terminations = true.terminations & valid
    last = (np.arange(n), lengths - 1)
    truncations = np.zeros_like(terminations)
    truncations[last] = ~terminations[last]
    return BatchRollout(
        observations=np.where(obs_valid[..., None], true.observations + drift, 0.0),
        actions=np.where(valid[..., None], true.actions, 0.0).astype(np.float32),
        rewards=np.where(valid, true.rewards * rng.uniform(0.7, 1.3, size=(n, 1)), 0.0),
        terminations=terminations, truncations=truncations, lengths=lengths,
        uncertainty=np.where(valid, rng.uniform(0.0, 1.0, size=(n, h)), 0.0),
    )


@pytest.fixture(scope="module")
def evaluation() -> Evaluation:
    env = make_env(TASK)
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
    env.close()
    w = np.random.default_rng(1).normal(scale=0.3, size=(11, 3))
    policies = [p for spec in (ConstantPolicy([0.0, 0.0, 0.0], name="still"), ConstantPolicy([0.8] * 3, name="push"),
                               ConstantPolicy([-0.5, 0.5, -0.5], name="wobble"), LinearPolicy(w, name="linear"))
                for p in load_policies(spec, **spaces)]
    seeds, states = start_states(TASK, EPISODES, SEED)
    rng = np.random.default_rng(SEED)
    results = []
    for j, policy in enumerate(policies):
        world = MujocoBatch(TASK, EPISODES)
        true = run_episodes(world, states, HORIZON, policies=[(policy, slice(None))])
        world.close()
        results.append(PolicyRollouts(policy.name, None, true, _imagined(true, rng, cut=5 + j)))
    return Evaluation(task=TASK, model="fake-model", model_fingerprint="0123abcd", seed=SEED, mode="closed_loop",
                      horizon=HORIZON, propagation="mean", start_seeds=seeds, start_states=states,
                      obs_scale=np.full(11, 0.5), policies=results, timings={"model_rollouts": 0.5})


@pytest.fixture(scope="module")
def written(evaluation: Evaluation, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("evaluation")
    report = build_report(evaluation, summarize(evaluation, gamma=0.995, n_resamples=200), config=CONFIG)
    write_trajectories(folder, evaluation, config=CONFIG)
    write_plots(folder, report)
    write_report(folder, report)
    return folder, report


def test_report_has_every_contract_key_and_round_trips(evaluation: Evaluation,
                                                       written: tuple[Path, dict[str, Any]]) -> None:
    folder, report = written
    assert set(DESIGN_KEYS + EXTRA_KEYS) <= set(report)
    assert report["format"] == "wm_eval.report/1" and report["complete"] is True
    assert (report["task"], report["model"], report["seed"], report["episodes"], report["horizon"]) == (
        TASK, "fake-model", SEED, EPISODES, HORIZON)
    assert report["gamma"] == 0.995 and report["start_seeds"] == evaluation.start_seeds.tolist()
    assert set(METRICS) <= set(report["metrics"]) and set(METRICS) <= set(report["metrics_ci"])
    assert set(VERSIONS) <= set(report["versions"]) and report["versions"]["numpy"] == np.__version__
    assert len(report["horizon_error"]) == HORIZON + 1 and report["horizon_error"][0] == 0.0
    assert report["config"] == CONFIG
    for p, pr in zip(report["policies"], evaluation.policies):
        assert p["name"] == pr.name
        for key in ("imagined_return", "true_return"):
            assert set(p[key]) == {"mean", "ci_low", "ci_high"}
            assert p[key]["ci_low"] <= p[key]["mean"] <= p[key]["ci_high"]
        assert p["abs_error"] == pytest.approx(abs(p["imagined_return"]["mean"] - p["true_return"]["mean"]))
        assert p["uncertainty"] > 0 and len(p["episodes"]["true_return"]) == EPISODES
        assert p["episodes"]["true_length"] == pr.true.lengths.tolist()
    true_means = [p["true_return"]["mean"] for p in report["policies"]]
    assert [p["true_rank"] for p in report["policies"]] == (np.argsort(np.argsort(-np.array(true_means))) + 1).tolist()
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded == report
    json.dumps(loaded, allow_nan=False)
    again = build_report(evaluation, summarize(evaluation, gamma=0.995, n_resamples=200), config=CONFIG,
                         versions=report["versions"])
    assert again == report
    assert not list(folder.rglob(".*.tmp"))


def test_report_markdown_and_terminal_table(written: tuple[Path, dict[str, Any]]) -> None:
    folder, report = written
    md = (folder / "report.md").read_text()
    assert md.startswith(f"# wm_eval report: {TASK}") and "closed_loop" in md and f"horizon {HORIZON}" in md
    for name in ["still", "push", "wobble", "linear", *METRICS]:
        assert f"| {name} |" in md
    for link in ("report.json", "trajectories.h5", "returns.png", "horizon_error.png", "uncertainty.png"):
        assert f"]({link})" in md
    assert "| step | 1 | 10 | 30 |" in md
    table = summary_table(report).splitlines()
    assert len(table) == 1 + 4 + 1
    rows = sorted(report["policies"], key=lambda p: -p["true_return"]["mean"])
    assert [line.split()[0] for line in table[1:-1]] == [p["name"] for p in rows]
    assert all(word in table[-1] for word in ("Spearman", "Kendall", "Pearson", "MMRV", "regret@1", "NAE"))


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


def test_trajectories_round_trip(evaluation: Evaluation, written: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = written
    data = read_trajectories(folder)
    by_file = read_trajectories(data.path)
    assert data.path == by_file.path == folder / "trajectories.h5" and len(by_file.episodes) == len(data.episodes)
    a = data.attrs
    assert a["format"] == "wm_eval.trajectories/1" and a["config"] == CONFIG
    assert a["policies"] == ["still", "push", "wobble", "linear"] and a["episodes_per_policy"] == EPISODES
    assert (a["task"], a["model"], a["model_fingerprint"], a["seed"], a["horizon"]) == (
        TASK, "fake-model", "0123abcd", SEED, HORIZON)
    assert np.array_equal(a["obs_scale"], evaluation.obs_scale)
    assert len(data.episodes) == 4 * EPISODES
    lengths_differ = False
    for k, ep in enumerate(data.episodes):
        assert (ep.policy_index, ep.episode) == divmod(k, EPISODES)
        pr = evaluation.policies[ep.policy_index]
        seed = int(evaluation.start_seeds[ep.episode])
        assert ep.policy == pr.name and ep.seed == seed == ep.true.seed == ep.imagined.seed
        true, imagined = pr.true.trajectory(ep.episode), pr.imagined.trajectory(ep.episode)
        for name in SIDE + ("sim_states",):
            got, want = getattr(ep.true, name), getattr(true, name)
            assert got.dtype == want.dtype and np.array_equal(got, want), name
        for name in SIDE:
            assert np.array_equal(getattr(ep.imagined, name), getattr(imagined, name)), name
        assert np.array_equal(ep.imagined.infos["uncertainty"], imagined.infos["uncertainty"])
        assert np.array_equal(ep.true.sim_states[0], evaluation.start_states[ep.episode])
        lengths_differ |= len(ep.true) != len(ep.imagined)
    assert lengths_differ


def test_minari_reads_the_ground_truth(evaluation: Evaluation, written: tuple[Path, dict[str, Any]],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = written
    monkeypatch.chdir(tmp_path)  # the link is resolved next to main_data.hdf5, not in the working directory
    ds = minari.MinariDataset(folder / "minari")
    assert ds.total_episodes == 4 * EPISODES
    assert ds.total_steps == sum(int(pr.true.lengths.sum()) for pr in evaluation.policies)
    for k, ep in enumerate(ds.iterate_episodes()):
        pr, i = evaluation.policies[k // EPISODES], k % EPISODES
        true = pr.true.trajectory(i)
        assert ep.id == k and np.array_equal(ep.observations, true.observations)
        assert np.array_equal(ep.actions, true.actions) and np.array_equal(ep.rewards, true.rewards)
        assert np.array_equal(ep.infos["sim_state"], true.sim_states)
    env = ds.recover_environment()
    assert env.spec.id == TASK and env.observation_space == ds.observation_space
    env.close()
    project = load_dataset(folder / "minari")
    assert project.task == TASK and len(project) == 4 * EPISODES
    assert np.array_equal(project.episodes[-1].sim_states, evaluation.policies[-1].true.sim_states[-1][
        : evaluation.policies[-1].true.lengths[-1] + 1])


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
