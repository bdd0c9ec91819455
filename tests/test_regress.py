"""The ``wm-eval regress`` gate: baselines, the paired test, exit codes, JUnit XML and Markdown.

Real SB3 zips from the zoo, copied into tmp folders and replaced in place as teams do; a small
HalfCheetah world model trained here for a few seconds on real MuJoCo episodes.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_eval.config import load_config
from wm_eval.errors import CheckpointError, ConfigError, PolicyError, TaskError
from wm_eval.commands import regress as run_regress
from wm_eval.regress import check_baseline, paired_change, read_baseline
from wm_eval.reporting.gate import junit_xml, markdown_summary
from wm_eval.testing import assert_no_regression

REPO = Path(__file__).resolve().parents[1]
TASK = "HalfCheetah-v5"
ZOO = REPO / "policies" / TASK
STRONG, WEAK, OTHER = ZOO / "ppo_0600k.zip", ZOO / "ppo_0000k.zip", ZOO / "a2c_0150k.zip"
PERTURBED = ZOO / "ppo_0600k_perturbed40.zip"  # the same weights with 40% noise added
COMMITTED = sorted((REPO / "tests" / "baselines").glob("*.json"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A small HalfCheetah model trained on zoo episodes, a copy with one weight changed, and a copy storing
    what its training data covered (no risk model)."""
    from wm_eval.evaluation.executor import real_rollouts
    from wm_eval.evaluation.plan import start_seeds
    from wm_eval.models.checkpoint import save_checkpoint
    from wm_eval.models.coverage import build_coverage
    from wm_eval.policy import load_policies
    from wm_eval.tasks import make_env, reset_states
    from wm_eval.training import EnsembleHParams, data_fingerprint, fit

    env = make_env(TASK)
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
    states = reset_states(TASK, start_seeds(123, 8).tolist())[1]
    episodes = []
    for zip_file in (STRONG, WEAK, OTHER, ZOO / "ppo_0200k.zip"):
        (policy,) = load_policies(zip_file, task=TASK, **spaces)
        rollout = real_rollouts(TASK, policy, states, 100)
        episodes += [rollout.trajectory(i) for i in range(len(states))]
    # split=permutation: the held-out episodes this fixture's model was built with. The gate tests need a model
    # that imagines the perturbed copy below the original; trained on about 30 episodes, which 3 are held out
    # decides that (with split=episode_hash's 3 it imagines the copy higher).
    hparams = EnsembleHParams(ensemble_size=2, elites=2, hidden=32, layers=2, epochs=30, batch_size=64, patience=30,
                              split="permutation")
    model, metrics = fit(episodes, task=TASK, hparams=hparams, seed=0, progress=False)
    root = tmp_path_factory.mktemp("regress-models")
    save = dict(data_fingerprint=data_fingerprint(episodes), metrics=metrics, config={}, seed=0, **spaces)
    save_checkpoint(model, root / "model", **save)
    save_checkpoint(model, root / "covered", coverage=build_coverage(model, episodes, seed=0), **save)
    with torch.no_grad():
        model.biases[0][0, 0, 0] += 0.01
    save_checkpoint(model, root / "changed", **save)
    env.close()
    return root / "model", root / "changed", root / "covered"


@pytest.fixture
def suite(tmp_path: Path, models: tuple[Path, Path, Path]) -> Path:
    """A recorded baseline over two checkpoints living in ``ckpt/`` next to ``gate/baseline.json``."""
    (tmp_path / "ckpt").mkdir()
    shutil.copy(STRONG, tmp_path / "ckpt" / "walker.zip")
    shutil.copy(OTHER, tmp_path / "ckpt" / "runner.zip")
    baseline = tmp_path / "gate" / "baseline.json"
    code = run_regress(config(f"baseline={baseline}", "update_baseline=true", f"model={models[0]}",
                              "policies=[ckpt/walker.zip,ckpt/runner.zip]"))
    assert code == 0
    return baseline


def config(*overrides: str):
    return load_config("regress", overrides=["episodes=8", "horizon=30", *overrides])


def test_baseline_file_is_readable_json_with_paths_relative_to_it(suite: Path, models: tuple[Path, Path, Path]) -> None:
    text = suite.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["format"] == "wm_eval.baseline/1" and data["task"] == TASK
    assert (data["episodes"], data["horizon"], data["seed"], len(data["start_seeds"])) == (8, 30, 0, 8)
    assert data["model"]["path"] == models[0].resolve().as_posix()  # given absolute, kept absolute
    assert [(p["name"], p["path"]) for p in data["policies"]] == [("walker", "../ckpt/walker.zip"),
                                                                   ("runner", "../ckpt/runner.zip")]
    walker = data["policies"][0]
    assert len(walker["episode_returns"]) == 8
    estimate = walker["imagined_return"]
    assert estimate["mean"] == pytest.approx(np.mean(walker["episode_returns"]))
    assert estimate["ci_low"] <= estimate["mean"] <= estimate["ci_high"]
    assert len(walker["sha256"]) == 64 and "true_episode_returns" not in walker


def test_identical_policies_pass_with_identical_returns(suite: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths resolve next to the baseline, not in the working directory
    assert run_regress(config(f"baseline={suite}")) == 0
    out = capsys.readouterr().out
    assert "walker" in out and "runner" in out and "REGRESSION" not in out
    result = check_baseline(suite)
    for check in result.checks:
        assert check.file_changed is False
        assert (check.test.change, check.test.ci_low, check.test.ci_high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("weaker", [WEAK, PERTURBED], ids=["untrained", "perturbed-weights"])
def test_a_clearly_weaker_file_fails_and_is_named(weaker: Path, suite: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(weaker, tmp_path / "ckpt" / "walker.zip")  # replaced in place, and worse
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "reports" / "gate.xml"
    assert run_regress(config(f"baseline={suite}", f"junit={junit}")) == 1
    out = capsys.readouterr().out
    assert "regression: walker: imagined return changed by -" in out and "regression: runner" not in out
    assert "## wm-eval regress: HalfCheetah-v5, 1 regression" in summary.read_text()
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"walker", "runner"}
    assert cases["walker"].find("failure") is not None and cases["runner"].find("failure") is None
    result = check_baseline(suite)
    (walker,) = result.regressions
    assert walker.file_changed and walker.test.change < -0.05 and walker.test.ci_high < 0
    with pytest.raises(AssertionError, match=r"\*\*REGRESSION\*\*"):
        assert_no_regression(suite)


def test_junit_xml_is_valid_and_lists_each_policy(suite: Path) -> None:
    result = check_baseline(suite)
    root = ET.fromstring(junit_xml(result).encode())
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures")) == ("2", "0")
    (testsuite,) = root.findall("testsuite")
    assert [c.get("name") for c in testsuite.findall("testcase")] == ["walker", "runner"]
    assert all(float(c.get("time")) >= 0 and c.get("classname") for c in testsuite.findall("testcase"))
    props = {p.get("name"): p.get("value") for p in testsuite.iter("property")}
    assert props["task"] == TASK and props["episodes"] == "8"
    table = markdown_summary(result).splitlines()
    assert table[0] == "## wm-eval regress: HalfCheetah-v5, no regression"
    assert sum(line.startswith("| walker |") or line.startswith("| runner |") for line in table) == 2
    assert assert_no_regression(suite).checks == result.checks


def test_changed_model_is_refused_unless_allowed(suite: Path, models: tuple[Path, Path, Path]) -> None:
    with pytest.raises(CheckpointError, match="--allow-model-change"):
        run_regress(config(f"baseline={suite}", f"model={models[1]}"))
    result = check_baseline(suite, model=str(models[1]), allow_model_change=True)
    assert result.fingerprint != result.baseline_fingerprint and "world model changed" in result.notes[0]


def test_bad_input_raises_one_line_errors(suite: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_regress(config(f"baseline={tmp_path / 'missing.json'}"))
    with pytest.raises(ConfigError, match="--baseline FILE"):
        run_regress(config())
    with pytest.raises(TaskError, match="is for HalfCheetah-v5, not Hopper-v5"):
        run_regress(config(f"baseline={suite}", "task=Hopper-v5"))
    (tmp_path / "ckpt" / "runner.zip").unlink()
    with pytest.raises(PolicyError, match="runner"):
        run_regress(config(f"baseline={suite}"))
    (tmp_path / "not-a-baseline.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a wm_eval baseline"):
        read_baseline(tmp_path / "not-a-baseline.json")


def test_confirm_checks_flagged_policies_against_recorded_ground_truth(tmp_path: Path,
                                                                       models: tuple[Path, Path, Path]) -> None:
    shutil.copy(STRONG, tmp_path / "policy.zip")
    baseline = tmp_path / "baseline.json"
    # 300 steps: from some start states the strong cheetah's return is still negative after 100 (start-up)
    assert run_regress(config(f"baseline={baseline}", "update_baseline=true", f"model={models[0]}",
                              "policies=[policy.zip]", "confirm=true", "horizon=300")) == 0
    assert len(read_baseline(baseline)["policies"][0]["true_episode_returns"]) == 8
    shutil.copy(WEAK, tmp_path / "policy.zip")
    result = check_baseline(baseline, confirm=True)
    (check,) = result.checks
    assert check.test.regressed and check.true_test is not None and check.true_test.regressed
    assert check.true_candidate["mean"] < read_baseline(baseline)["policies"][0]["true_return"]["mean"]
    assert "confirmed in MuJoCo" in markdown_summary(result)


def test_paired_change_rule() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(100.0, 5.0, 32)
    same = paired_change(base, base, tolerance=0.05, seed=0)
    assert (same.change, same.ci_low, same.ci_high, same.regressed) == (0.0, 0.0, 0.0, False)
    drop = paired_change(base, 0.9 * base + rng.normal(0, 1, 32), tolerance=0.05, seed=0)
    assert drop.regressed and drop.ci_low < drop.change < drop.ci_high < 0
    assert drop.change == pytest.approx(-0.1, abs=0.01)
    small = paired_change(base, 0.98 * base, tolerance=0.05, seed=0)  # real, but within tolerance
    assert small.ci_high < 0 and not small.regressed
    # an unchanged policy from fresh (unpaired) start states: the interval must cover the noise
    alarms = [paired_change(rng.normal(100, 8, 16), rng.normal(100, 8, 16), tolerance=0.02, seed=s).regressed
              for s in range(200)]
    assert np.mean(alarms) <= 0.05
    # a 10% drop against noise with a standard error of ~1.8%: flagged nearly always
    hits = [paired_change(rng.normal(100, 5, 16), rng.normal(90, 5, 16), tolerance=0.05, seed=s).regressed
            for s in range(200)]
    assert np.mean(hits) >= 0.95


def test_gate_power_example_runs_with_a_tiny_budget(models: tuple[Path, Path, Path]) -> None:
    spec = importlib.util.spec_from_file_location("gate_power", REPO / "examples" / "gate_power.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.gate_power(task=TASK, policy=str(STRONG), model=str(models[0]), episodes=4, horizon=300,
                               trials=3, calibration_episodes=8)
    assert abs(result["true_drop"] - 0.10) < 0.05 and 0 < result["noise_std"] < 2
    for rate in ("detection_rate", "false_alarm_rate"):  # the share of 3 trials flagged
        assert 3 * result[rate] == pytest.approx(round(3 * result[rate])) and 0.0 <= result[rate] <= 1.0
    assert result["trials"] == 3 and np.isfinite(result["imagined_drop"])


@pytest.mark.parametrize("baseline", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_baselines_pass(baseline: Path) -> None:
    assert_no_regression(baseline)


def test_cli_records_and_checks_with_exit_codes(tmp_path: Path, models: tuple[Path, Path, Path]) -> None:
    from wm_eval.cli import main

    shutil.copy(STRONG, tmp_path / "policy.zip")
    baseline = str(tmp_path / "baseline.json")
    assert main(["regress", "--update-baseline", "--preset", "debug", "--baseline", baseline, f"model={models[0]}",
                 "policies=[policy.zip]"]) == 0
    assert main(["regress", "--baseline", baseline]) == 0
    assert main(["regress", "--baseline", baseline, f"model={models[1]}"]) == 2
    assert main(["regress", "--baseline", baseline, f"model={models[1]}", "--allow-model-change"]) in (0, 1)
    shutil.copy(WEAK, tmp_path / "policy.zip")
    assert main(["regress", "--baseline", baseline, "--junit", str(tmp_path / "gate.xml")]) == 1
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testsuite/testcase/failure") is not None
    assert main(["regress", "--baseline", str(tmp_path / "missing.json")]) == 2


def test_example_workflow_runs_the_gate_with_real_cli_flags() -> None:
    import yaml

    from wm_eval.cli import _parser

    workflow = yaml.safe_load((REPO / "examples" / "policy-gate.yml").read_text())
    steps = workflow["jobs"]["gate"]["steps"]
    (gate,) = [s["run"] for s in steps if "wm-eval regress" in s.get("run", "")]
    args = _parser().parse_args(shlex.split(gate)[1:])
    assert (args.command, args.baseline) == ("regress", "baselines/policies.json")
    assert args.junit == "reports/policy-gate.xml"
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["with"]["path"] == args.junit
    assert any("download.pytorch.org/whl/cpu" in s.get("run", "") for s in steps)


def test_module_callable_policies_are_recorded_by_spec(tmp_path: Path, models: tuple[Path, Path, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gate_policies.py").write_text("import numpy as np\n\n\ndef still(obs):\n"
                                               "    return np.zeros((len(obs), 6), np.float32)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    baseline = tmp_path / "baseline.json"
    assert run_regress(config(f"baseline={baseline}", "update_baseline=true", f"model={models[0]}",
                              "policies=[gate_policies:still]")) == 0
    (entry,) = read_baseline(baseline)["policies"]
    assert (entry["name"], entry["path"], entry["sha256"]) == ("gate_policies:still", "gate_policies:still", None)
    (check,) = assert_no_regression(baseline, allow_code=True).checks
    assert check.file_changed is None and check.test.change == 0.0
    with pytest.raises(ConfigError, match="allow_code=true"):  # a baseline file is data: its code runs only if allowed
        check_baseline(baseline)


def test_cli_refuses_code_named_by_a_baseline_unless_allowed(tmp_path: Path, models: tuple[Path, Path, Path]) -> None:
    """``wm-eval regress`` on a baseline naming ``module:callable`` exits 2 with one line, and imports nothing."""
    import subprocess
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "gate_code.py").write_text(
        f"import pathlib\nimport numpy as np\n\npathlib.Path({str(marker)!r}).touch()\n\n\n"
        "def still(obs):\n    return np.zeros((len(obs), 6), np.float32)\n")
    baseline = tmp_path / "baseline.json"

    def regress(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "wm_eval.cli", "regress", "--baseline", str(baseline), *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    recorded = regress("--update-baseline", "episodes=4", "horizon=10", f"model={models[0]}",
                       "policies=[gate_code:still]")
    assert recorded.returncode == 0, recorded.stderr
    marker.unlink()  # recording imported it: the user named the code on the command line
    refused = regress()
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wm-eval regress: error:") and "Traceback" not in refused.stderr
    assert "allow_code" in lines[0] and "gate_code:still" in lines[0]
    assert not marker.exists()  # refused before importing the module
    allowed = regress("allow_code=true")
    assert allowed.returncode == 0, allowed.stderr
    assert marker.exists()


def test_paired_success_is_mcnemar_exact() -> None:
    from scipy import stats

    from wm_eval.regress import paired_success

    b = np.array([1] * 10 + [0] * 10)
    c = np.array([0] * 8 + [1] * 2 + [1] * 1 + [0] * 9)  # 8 lost, 1 gained
    t = paired_success(b, c, tolerance=0.05)
    assert (t.lost, t.gained) == (8, 1) and t.change == pytest.approx(-0.35)
    assert t.p_value == pytest.approx(stats.binomtest(8, 9, 0.5, alternative="greater").pvalue) and t.regressed
    assert not paired_success(b, b, tolerance=0.05).regressed  # unchanged: p = 1
    small = paired_success(np.array([1, 1, 0]), np.array([0, 1, 0]), tolerance=0.05)
    assert small.change < -0.05 and not small.regressed  # one lost episode is not evidence


def test_gate_on_success_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pusher-v5 has a success rule: the baseline records per-episode successes, and a success rate that
    collapses from the recorded one fails the gate with McNemar's exact test, in every report format."""
    import json

    from wm_eval.data.collect import collect
    from wm_eval.data.hdf5 import load_dataset
    from wm_eval.models.checkpoint import save_checkpoint
    from wm_eval.regress import check_baseline, record_baseline
    from wm_eval.reporting.gate import junit_xml, markdown_summary, text_table
    from wm_eval.tasks import spaces
    from wm_eval.training import EnsembleHParams, data_fingerprint, fit

    (tmp_path / "pusher_policies.py").write_text("import numpy as np\n\n\ndef still():\n"
                                                 "    return lambda obs: np.zeros((len(obs), 7))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_dataset(collect(task="Pusher-v5", episodes=4, max_steps=30, seed=0, behaviour=["random"],
                                noise_scales=[0.0], out=tmp_path / "data", progress=False))
    hp = EnsembleHParams(ensemble_size=2, elites=2, hidden=32, layers=2, epochs=2, batch_size=64)
    model, _ = fit(data.episodes, task="Pusher-v5", hparams=hp, seed=0)
    save_checkpoint(model, tmp_path / "model", data_fingerprint=data_fingerprint(data.episodes), metrics={},
                    config={}, seed=0, **spaces("Pusher-v5"))
    record_baseline(tmp_path / "gate.json", task="Pusher-v5", policies=["pusher_policies:still"],
                    model=str(tmp_path / "model"), episodes=12, horizon=20)
    stored = json.loads((tmp_path / "gate.json").read_text())
    entry = stored["policies"][0]
    assert len(entry["episode_successes"]) == 12 and 0 <= entry["imagined_success"]["mean"] <= 1
    same = check_baseline(tmp_path / "gate.json", allow_code=True)
    assert not same.regressions and same.checks[0].success_test.p_value == 1.0
    entry["episode_successes"] = [1] * 12  # as if the recorded policy had always succeeded
    (tmp_path / "gate.json").write_text(json.dumps(stored))
    result = check_baseline(tmp_path / "gate.json", allow_code=True)
    check = result.checks[0]
    assert check.success_test.candidate_rate < 0.5, "the still arm should rarely push the object to the goal"
    assert check.success_test.regressed and not check.return_regressed and result.regressions == [check]
    assert "imagined success rate 1.00 ->" in text_table(result) and "McNemar" in markdown_summary(result)
    assert '"success"' in junit_xml(result) and "McNemar exact" in junit_xml(result)


def test_success_gate_edges_and_mixed_verdicts() -> None:
    from wm_eval.regress import paired_success
    from wm_eval.reporting.gate import text_table
    from wm_eval.types import ChangeTest, PolicyCheck, RegressResult

    exact = paired_success(np.array([1] * 200), np.array([0] * 10 + [1] * 190), tolerance=0.05)
    assert exact.lost == 10 and not exact.regressed  # a drop of exactly the tolerance is not "more than" it
    both = paired_success(np.array([1] * 20), np.array([0] * 20), tolerance=0.05)
    drop = ChangeTest(change=-0.5, ci_low=-0.6, ci_high=-0.4, regressed=True)
    check = PolicyCheck("p", "p.zip", False, {"mean": 10.0}, {"mean": 5.0}, drop, success_test=both)
    result = RegressResult("Pusher-v5", "m", "f", "f", 20, 10, 0, 0.05, 0.95, [check])
    table = text_table(result)
    assert "REGRESSION (return and success rate)" in table
    assert "return changed by -50.0%" in table and "and imagined success rate 1.00 -> 0.00" in table


def test_candidates_carry_their_risk_and_flags_are_reported_not_failed(tmp_path: Path, models: tuple[Path, Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Each candidate's risk is the one ``wm_eval.evaluate`` gives the same policy from the same start states;
    a flagged candidate is named in every report format, and the gate's verdicts do not change."""
    import wm_eval
    from wm_eval.models.checkpoint import attach_coverage, load_checkpoint
    from wm_eval.reporting.gate import text_table

    covered = tmp_path / "covered"
    shutil.copytree(models[2], covered)
    (tmp_path / "ckpt").mkdir()
    shutil.copy(STRONG, tmp_path / "ckpt" / "walker.zip")
    shutil.copy(OTHER, tmp_path / "ckpt" / "runner.zip")
    baseline = tmp_path / "baseline.json"
    assert run_regress(config(f"baseline={baseline}", "update_baseline=true", f"model={covered}",
                              "policies=[ckpt/walker.zip,ckpt/runner.zip]")) == 0
    capsys.readouterr()
    stored = check_baseline(baseline)  # coverage data, no risk model: risk not estimated
    assert [(c.risk, c.flagged) for c in stored.checks] == [(None, False), (None, False)]
    assert all(line.split()[-2] == "n/a" for line in text_table(stored).splitlines()[2:4])

    ev = wm_eval.evaluate(TASK, [str(tmp_path / "ckpt" / "walker.zip"), str(tmp_path / "ckpt" / "runner.zip")],
                          model=str(covered), episodes=8, horizon=30, seed=0, workers=1, bootstrap=50, progress=False)
    assert ev.start_seeds.tolist() == read_baseline(baseline)["start_seeds"]
    features = [p.summary["risk_features"] for p in ev.policies]
    weights = {"log_disagreement": 1.0, "log_coverage": 2.0, "return_excess": 1.0}
    z = [sum(w * f[name] for name, w in weights.items()) for f in features]
    assert z[0] != z[1]
    risk = {"features": list(weights), "weights": list(weights.values()), "bias": -(z[0] + z[1]) / 2,
            "fitted_on": "test"}  # between the two policies: exactly one of them is flagged
    attach_coverage(covered, load_checkpoint(covered, task=TASK).coverage.with_risk(risk))

    result = check_baseline(baseline, allow_model_change=True)
    assert not result.regressions  # the same files: flagged is information, not a failure
    for check, policy, zi in zip(result.checks, ev.policies, z):
        assert check.candidate["mean"] == pytest.approx(policy.statistics["return"]["imagined"]["mean"])
        assert check.risk == pytest.approx(1 / (1 + np.exp(-(zi + risk["bias"]))))
        assert check.flagged is (check.risk > 0.5)
    (flagged,) = [c for c in result.checks if c.flagged]
    (calm,) = [c for c in result.checks if not c.flagged]
    junit = tmp_path / "gate.xml"
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert run_regress(config(f"baseline={baseline}", "allow_model_change=true", f"junit={junit}")) == 0
    out = capsys.readouterr().out.splitlines()
    (row,) = [line for line in out if line.startswith(f"{flagged.name} ")]
    (other,) = [line for line in out if line.startswith(f"{calm.name} ")]
    assert f"{flagged.risk:.2f} FLAGGED" in row and row.endswith("pass")
    assert f"{calm.risk:.2f}" in other and "FLAGGED" not in other
    assert [line for line in out if line.startswith("flagged: ")] == [
        f"flagged: {flagged.name}: risk {flagged.risk:.2f} that its imagined mean return is off by more than 20%, "
        "so its verdict (pass) is less trustworthy; check it in MuJoCo (confirm=true re-runs regressions)"]
    md = summary.read_text()
    assert md.startswith(f"## wm-eval regress: {TASK}, no regression, 1 flagged ⚑")
    assert f"- ⚑ flagged: {flagged.name}: risk {flagged.risk:.2f}" in md and f"flagged: {calm.name}" not in md
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    for check in result.checks:
        props = {p.get("name"): p.get("value") for p in cases[check.name].iter("property")}
        assert props == {"risk": f"{check.risk:.4f}", "flagged": str(check.flagged).lower()}
        assert ("FLAGGED" in cases[check.name].find("system-out").text) is check.flagged
        assert cases[check.name].find("failure") is None


def test_gate_reports_mark_flagged_verdicts() -> None:
    """A flagged regression, a flagged pass, a calm pass and a pass without risk, in every report format."""
    from wm_eval.reporting.gate import text_table
    from wm_eval.types import ChangeTest, PolicyCheck, RegressResult

    drop, same = ChangeTest(-0.5, -0.6, -0.4, True), ChangeTest(0.0, 0.0, 0.0, False)
    checks = [PolicyCheck("down", "down.zip", True, {"mean": 10.0}, {"mean": 5.0}, drop, risk=0.91, flagged=True),
              PolicyCheck("odd", "odd.zip", False, {"mean": 10.0}, {"mean": 10.0}, same, risk=0.62, flagged=True),
              PolicyCheck("calm", "calm.zip", False, {"mean": 10.0}, {"mean": 10.0}, same, risk=0.08),
              PolicyCheck("old", "old.zip", False, {"mean": 10.0}, {"mean": 10.0}, same)]
    result = RegressResult(TASK, "m", "f", "f", 8, 30, 0, 0.05, 0.95, checks)
    assert [c.name for c in result.regressions] == ["down"]  # flags change no verdict
    lines = text_table(result).splitlines()
    header, rows = lines[1].split(), {line.split()[0]: line for line in lines[2:6]}
    assert header[-2:] == ["risk", "verdict"]
    assert rows["down"].endswith("0.91 FLAGGED  REGRESSION") and rows["odd"].endswith("0.62 FLAGGED  pass")
    assert rows["calm"].endswith("0.08          pass") and rows["old"].endswith("n/a           pass")
    assert [line.split(":")[1].strip() for line in lines if line.startswith("flagged: ")] == ["down", "odd"]
    assert "its verdict (REGRESSION) is less trustworthy" in text_table(result)
    md = markdown_summary(result)
    assert md.startswith(f"## wm-eval regress: {TASK}, 1 regression, 2 flagged ⚑")
    assert "| 0.91 FLAGGED | **REGRESSION** |" in md and "| n/a | pass |" in md
    cases = {c.get("name"): c for c in ET.fromstring(junit_xml(result).encode()).iter("testcase")}
    failure = cases["down"].find("failure")
    assert "[FLAGGED: down: risk 0.91" in failure.get("message")
    assert json.loads(failure.text)["risk"] == 0.91 and json.loads(failure.text)["flagged"] is True
    assert {p.get("name"): p.get("value") for p in cases["old"].iter("property")} == {"risk": "n/a",
                                                                                     "flagged": "false"}
