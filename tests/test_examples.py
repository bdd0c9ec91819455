"""Every example runs, with a tiny budget (CleanRL habit: scripts users copy must keep working)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _zoo_size(task: str) -> int:
    return len(json.loads((EXAMPLES.parent / "policies" / task / "manifest.json").read_text())["policies"])


CHEETAH_ZOO, HOPPER_ZOO = _zoo_size("HalfCheetah-v5"), _zoo_size("Hopper-v5")


def _run(script: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_gym_env_example(tmp_path: Path) -> None:
    out = _run("gym_env.py", "--task", "Hopper-v5", "--steps", "15", "--num-envs", "8", cwd=tmp_path)
    assert "imagined return" in out and "evaluate_policy" in out and "8 imagined episodes" in out
    length = float(re.search(r"8 imagined episodes: mean return -?[\d.]+, mean length ([\d.]+)", out).group(1))
    assert 1 <= length <= 15  # each env's first episode only, cut at --steps


def test_fidelity_example(tmp_path: Path) -> None:
    out = _run("fidelity.py", "--tasks", "Hopper-v5", "--episodes", "2", "--horizon", "10", "--out", "fid",
               cwd=tmp_path)
    assert f"| Hopper-v5 | {HOPPER_ZOO} × 2 |" in out and "| mmrv | mmrv_normalized |" in out
    (row,) = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    report = json.loads((tmp_path / "fid" / "Hopper-v5" / "report.json").read_text())
    assert row["task"] == "Hopper-v5" and (report["episodes"], report["horizon"], len(report["policies"])) == (2, 10, HOPPER_ZOO)
    assert all(row[m] == report["metrics_ci"][m] for m in ("spearman", "mmrv", "mmrv_normalized"))
    assert row["trust_auroc"] == report["trust"]["auroc"]
    assert (tmp_path / "fid" / "Hopper-v5" / "trajectories.h5").is_file()
    assert not (tmp_path / "fid" / "Hopper-v5" / "rollouts.rrd").exists()  # rerun=False


def test_fidelity_example_on_unseen_policies_with_another_model(tmp_path: Path) -> None:
    from wm_eval.models.checkpoint import embedded_model_path

    held_out = json.loads((EXAMPLES.parent / "policies/unseen/HalfCheetah-v5/manifest.json").read_text())["policies"]
    model = embedded_model_path("HalfCheetah-v5")
    _run("fidelity.py", "--tasks", "HalfCheetah-v5", "--episodes", "2", "--horizon", "10", "--set", "unseen",
         "--model", f"HalfCheetah-v5={model}", "--propagation", "ts1", "--out", "fid", cwd=tmp_path)
    (row,) = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert (row["set"], row["model"], row["policies"]) == ("unseen", str(model), len(held_out))
    report = json.loads((tmp_path / "fid" / "HalfCheetah-v5" / "report.json").read_text())
    assert row["propagation"] == report["config"]["propagation"] == "ts1" and row["sample"] is False
    assert (tmp_path / "fid" / "fidelity.md").read_text().startswith("Propagation `ts1`, sample false:")
    assert {p["name"] for p in report["policies"]} == {e["name"] for e in held_out}
    bad = subprocess.run([sys.executable, str(EXAMPLES / "fidelity.py"), "--model", "nonsense"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "TASK=PATH" in bad.stderr


def test_fidelity_example_on_an_arm_task_has_the_success_table(tmp_path: Path) -> None:
    out = _run("fidelity.py", "--tasks", "WmEval/ArmDrawer-v0", "--episodes", "4", "--horizon", "60", "--out", "fid",
               cwd=tmp_path)
    assert "Success rates:" in out and "| WmEval/ArmDrawer-v0 | 12 × 4 | " in out
    (row,) = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    report = json.loads((tmp_path / "fid" / "WmEval" / "ArmDrawer-v0" / "report.json").read_text())
    assert row["success"] == report["metrics_by_statistic"]["success"]
    assert (tmp_path / "fid" / "WmEval" / "ArmDrawer-v0" / "success.png").stat().st_size > 0
    assert "## Success rates" in (tmp_path / "fid" / "WmEval" / "ArmDrawer-v0" / "report.md").read_text()


def test_gate_power_example(tmp_path: Path) -> None:
    out = _run("gate_power.py", "--task", "Hopper-v5", "--policy", "zoo:Hopper-v5#ppo_0600k", "--episodes", "4",
               "--horizon", "15", "--trials", "2", "--calibration-episodes", "4", "--json", "g.json", cwd=tmp_path)
    result = json.loads((tmp_path / "g.json").read_text())
    assert {"detection_rate", "false_alarm_rate"} <= set(result), out


def test_model_quality_example(tmp_path: Path, hopper_dataset: Path) -> None:
    out = _run("model_quality.py", "--tasks", "Hopper-v5", "--dataset", f"Hopper-v5={hopper_dataset}",
               "--json", "q.json", cwd=tmp_path)
    row = json.loads((tmp_path / "q.json").read_text())[0]
    assert row["task"] == "Hopper-v5" and row["reward_r2"] is not None and "| Hopper-v5 |" in out
    # --model names a checkpoint: the embedded one by path scores the same held-out episodes the same
    from wm_eval.models.checkpoint import embedded_model_path

    path = embedded_model_path("Hopper-v5")
    _run("model_quality.py", "--tasks", "Hopper-v5", "--dataset", f"Hopper-v5={hopper_dataset}",
         "--model", f"Hopper-v5={path}", "--json", "q2.json", cwd=tmp_path)
    assert json.loads((tmp_path / "q2.json").read_text())[0] == dict(row, model=str(path))
    # a model trained here (split=episode_hash): scored on the episodes its training held out, so the same numbers
    trained = subprocess.run([str(Path(sys.executable).parent / "wm-eval"), "train", "--preset", "debug",
                              f"dataset={hopper_dataset}", "out=m", "threads=1"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    _run("model_quality.py", "--tasks", "Hopper-v5", "--dataset", f"Hopper-v5={hopper_dataset}",
         "--model", "Hopper-v5=m", "--json", "q3.json", cwd=tmp_path)
    mine, logged = json.loads((tmp_path / "q3.json").read_text())[0], json.loads((tmp_path / "m" / "spec.json").read_text())
    assert logged["metrics"]["split"]["rule"] == "episode_hash"
    for key in ("reward_r2", "termination_f1", "open_loop_error"):
        assert mine[key] == pytest.approx(logged["metrics"][key]), key


def test_memory_example(tmp_path: Path) -> None:
    out = _run("memory.py", "2", "20", cwd=tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["episodes"], result["horizon"], result["policies"]) == (2, 20, CHEETAH_ZOO)
    assert result["peak_memory_mb"] > 100 and result["trajectories_h5_mb"] > 0


def test_precision_example(tmp_path: Path) -> None:
    out = _run("precision.py", "--tasks", "Hopper-v5", "--episodes", "2", "--horizon", "20", cwd=tmp_path)
    row = json.loads(out.strip().splitlines()[-1])
    assert row["task"] == "Hopper-v5" and row["policies"] == HOPPER_ZOO and 0 <= row["outside_interval"] <= HOPPER_ZOO
    assert set(row["metrics_float32_bfloat16"]) >= {"spearman", "mmrv_normalized"}


def test_block_speed_example(tmp_path: Path) -> None:
    out = _run("block_speed.py", "--batch", "64", "--seconds", "0.02", "--repeats", "1", cwd=tmp_path)
    rates = json.loads(out.strip().splitlines()[-1])["env_steps_per_s"]
    assert set(rates) == {"128", "256", "one call"} and all(r["low"] <= r["median"] <= r["high"] for r in rates.values())


def test_scale_out_example(tmp_path: Path) -> None:
    """A simulated 3-node Ray cluster (1 CPU each): identical numbers, ground truth spread over two nodes."""
    out = _run("scale_out.py", "2", "30", "3", cwd=tmp_path)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["executor"] for r in rows] == ["local", "ray"] and rows[1]["nodes"] == 3
    assert rows[1]["identical"] and rows[1]["units"] == CHEETAH_ZOO and rows[1]["overhead_ms_per_unit"] > 0
    assert rows[1]["nodes_used"] == 2  # the model actor holds the third node's CPU
    assert "| ray | 3 × 1 |" in out


def test_calibration_example(tmp_path: Path) -> None:
    args = ["--tasks", "Hopper-v5", "--episodes", "12", "--pool", "6", "--horizon", "30", "--draws", "5", "--n", "3", "5",
            "--budgets", "0", "12", "36", "--cache", "c"]
    out = _run("calibration.py", *args, cwd=tmp_path)
    cached = list((tmp_path / "c").iterdir())  # keyed by the model and the manifests: a new model re-measures
    assert len(cached) == 1 and re.fullmatch(r"Hopper-v5-12x30-seed0(-unseen)?-[0-9a-f]{10}\.npz", cached[0].name)
    with np.load(cached[0]) as data:
        saved = {k: data[k] for k in data.files}
    np.savez(cached[0], **{**saved, "spearman": np.array(0.125)})
    again = json.loads(next(line for line in _run("calibration.py", *args, cwd=tmp_path).splitlines()
                            if line.startswith("{")))
    assert again["spearman"] == 0.125  # the second run read the cache instead of evaluating
    row = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    held_out = EXAMPLES.parent / "policies" / "unseen" / "Hopper-v5" / "manifest.json"  # unseen policies, when trained
    unseen = len(json.loads(held_out.read_text())["policies"]) if held_out.is_file() else 0
    assert row["policies"] == HOPPER_ZOO + unseen and row["true_mean_episodes"] == 6 and set(row["coverage"]) == {"3", "5"}
    for c in row["coverage"].values():
        assert 0 <= c["ppi"] <= 1 and c["intervals"] == 5 * row["policies"] and c["width_ppi"] > 0
    assert set(row["regret"]) == {"0", "12", "36"} and all(0 <= g["with_model"] <= 1 for g in row["regret"].values())
    assert "| Hopper-v5 | 3 |" in out and f"| Hopper-v5 | 36 ({36 / row['policies']:.2g} per policy) |" in out


def test_single_episode_lambda_recovers_the_optimal_lambda() -> None:
    """One real episode per policy: centring on the imagined-only mean still finds cov(Y, f) / var(f)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from calibration import single_episode_lambda
    finally:
        sys.path.remove(str(EXAMPLES))
    rng = np.random.default_rng(0)
    policies, imagined = 20000, 50
    offsets = rng.normal(0, 100, policies)  # policies' true means vary widely, their model biases less
    biases = rng.normal(0, 3, policies)
    for rho, want in ((0.6, 0.6 / (1 + 1 / imagined)), (0.0, 0.0)):
        noise = rng.normal(0, 1, (policies, imagined + 1))
        f_all = offsets[:, None] + biases[:, None] + noise  # imagined returns, var 1 within a policy
        y = offsets + rho * noise[:, 0] + np.sqrt(1 - rho ** 2) * rng.normal(0, 1, policies)
        lam = single_episode_lambda([y[p:p + 1] for p in range(policies)], [f_all[p, :1] for p in range(policies)],
                                    [f_all[p, 1:] for p in range(policies)])
        assert abs(lam - want) < 0.1, (rho, lam)


def test_custom_model_example(tmp_path: Path) -> None:
    row = json.loads(_run("custom_model.py", "6", "40", cwd=tmp_path).strip().splitlines()[-1])
    assert row["same_numbers"] and row["checkpoint_refused_without_allow_code"]
    assert row["model"] == "custom_model:make_model" and len(row["policies"]) == 3


def test_pool_members_example(tmp_path: Path) -> None:
    """Two checkpoints holding members 0-1 and 2-4 of the embedded HalfCheetah model pool back into the
    embedded model: the same weights and the same imagined steps; another task's model is a one-line error."""
    import torch

    from wm_eval.models import load_checkpoint, save_checkpoint
    from wm_eval.models.checkpoint import resolve_model
    from wm_eval.tasks import spaces

    task = "HalfCheetah-v5"
    whole = resolve_model(task, task=task)
    parts = []
    for name, members in (("a", [0, 1]), ("b", [2, 3, 4])):
        parts.append(str(save_checkpoint(whole.select_members(members), tmp_path / name, **spaces(task),
                                         data_fingerprint="test", metrics={}, config={}, seed=0,
                                         coverage=whole.coverage)))
    row = json.loads(_run("pool_members.py", str(tmp_path / "pooled"), *parts, cwd=tmp_path).strip())
    assert row == {"out": str(tmp_path / "pooled"), "task": task, "members": [2, 3], "pooled": 5}
    pooled = load_checkpoint(tmp_path / "pooled")
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in pooled.state_dict().items())
    obs = np.random.default_rng(0).normal(size=(4, whole.obs_dim)).astype(np.float32)
    action = np.random.default_rng(1).uniform(-1, 1, size=(4, whole.act_dim)).astype(np.float32)
    for propagation in ("mean", "ts1"):
        mine = pooled.predict(obs, action, propagation=propagation, generator=torch.Generator().manual_seed(3))
        theirs = whole.predict(obs, action, propagation=propagation, generator=torch.Generator().manual_seed(3))
        assert torch.equal(mine.next_obs, theirs.next_obs) and torch.equal(mine.reward, theirs.reward)
    done = subprocess.run([sys.executable, str(EXAMPLES / "pool_members.py"), str(tmp_path / "bad"), parts[0],
                           "Hopper-v5"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "pool models of one task" in done.stderr
    other = whole.select_members([0])
    other.input_norm.mean += 1.0  # as if fitted on other data
    save_checkpoint(other, tmp_path / "c", **spaces(task), data_fingerprint="test", metrics={}, config={}, seed=0)
    done = subprocess.run([sys.executable, str(EXAMPLES / "pool_members.py"), str(tmp_path / "bad"), parts[0],
                           str(tmp_path / "c")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "other input_norm.mean" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_trust_calibration_example(tmp_path: Path, tiny_model: Path, hopper_dataset: Path) -> None:
    import shutil

    from wm_eval.models.checkpoint import embedded_model_path, load_checkpoint

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    out = _run("trust_calibration.py", "attach", "--task", "Hopper-v5", "--dataset", str(hopper_dataset), "--model",
               str(model), cwd=tmp_path)
    assert "stored the coverage of 12 episodes" in out and load_checkpoint(model).coverage is not None
    _run("trust_calibration.py", "attach", "--task", "Hopper-v5", "--dataset", str(hopper_dataset), "--model",
         str(model), "--risk-from", "Walker2d-v5", cwd=tmp_path)  # the risk model of another checkpoint
    assert load_checkpoint(model).coverage.risk == load_checkpoint(embedded_model_path("Walker2d-v5")).coverage.risk
    for task, extra in (("Hopper-v5", ["--model", str(model)]), ("Walker2d-v5", [])):
        row = json.loads(_run("trust_calibration.py", "measure", "--task", task, "--episodes", "3", "--horizon", "20",
                              "--out", "t", *extra, cwd=tmp_path).strip().splitlines()[-1])
        assert row["task"] == task and 0 <= row["length_control"] <= 1
    record = json.loads((tmp_path / "t" / "Hopper-v5.json").read_text())
    assert len(record["policies"]) >= 12 and all(set(p["features"]) == {"log_disagreement", "log_coverage",
                                                                        "return_excess"} for p in record["policies"])
    fit = _run("trust_calibration.py", "fit", "--out", "t", cwd=tmp_path)
    lines = [json.loads(line) for line in fit.splitlines() if line.startswith("{")]
    hopper = next(line for line in lines if line.get("task") == "Hopper-v5")
    assert hopper["fitted_on"] == "policies of Walker2d-v5 (leave this task out)"
    assert 0 <= hopper["model_only_coverage90"] <= 1 and "| Hopper-v5 |" in fit
    scored = [json.loads(line) for line in _run("trust_calibration.py", "score", "--out", "t", cwd=tmp_path).splitlines()]
    assert "measured with" in scored[0]["skipped"]  # Hopper's record is the tiny model's, not the embedded one's
    walker = json.loads((tmp_path / "t" / "Walker2d-v5.json").read_text())
    assert scored[1]["task"] == "Walker2d-v5" and scored[-1]["pooled_policies"] == len(walker["policies"])
    assert math.isnan(scored[1]["model_only_coverage90"])  # horizon 20: the shipped quantiles are for 1000 steps
    cost = json.loads(_run("trust_calibration.py", "overhead", "--task", "Hopper-v5", "--episodes", "4", "--horizon",
                           "20", "--repeats", "2", cwd=tmp_path))
    assert len(cost["overhead_percent"]) == 2 and cost["median"] > 0 and 4 <= cost["steps"] <= 80
    bad = subprocess.run([sys.executable, str(EXAMPLES / "trust_calibration.py"), "attach", "--task", "Hopper-v5",
                          "--dataset", str(hopper_dataset)], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "is not the data" in bad.stderr  # the embedded model was trained on other data


def test_seed_spread_example(tmp_path: Path, hopper_dataset: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"dataset: [{hopper_dataset}]\nepochs: 2\nensemble_size: 2\nelites: 1\nhidden: 16\n"
                      "layers: 1\nbatch_size: 64\nthreads: 1\n")
    args = ("--config", str(recipe), "--seeds", "0", "1", "--episodes", "2", "--horizon", "10", "--out", "sp")
    out = _run("seed_spread.py", *args, "--", "patience=2", cwd=tmp_path)
    assert f"Hopper-v5, zoo: {HOPPER_ZOO} policies × 2 episodes, 2 seeds" in out
    assert re.search(r"^\| 0 \| -?[\d.]+ \[", out, re.M) and re.search(r"^\| 1 \| ", out, re.M)
    assert "| mean ± sd |" in out and "| range |" in out
    spread = json.loads((tmp_path / "sp" / "spread.json").read_text())
    specs = [json.loads((tmp_path / "sp" / f"seed{s}" / "model" / "spec.json").read_text()) for s in (0, 1)]
    assert specs[0]["weights_sha256"] != specs[1]["weights_sha256"]  # two training runs
    assert [s["metrics"]["split"]["seed"] for s in specs] == [0, 0] and [s["seed"] for s in specs] == [0, 1]
    values = [r["metrics"]["spearman"]["value"] for r in spread["runs"]]
    assert spread["summary"]["spearman"]["mean"] == pytest.approx(np.mean(values))
    assert spread["summary"]["spearman"]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert spread["overrides"] == ["patience=2"] and spread["versions"]["torch"] and spread["machine"]
    again = _run("seed_spread.py", *args, "--", "patience=2", cwd=tmp_path)  # resumes: nothing trained or evaluated
    assert again.count("not trained again") == 2 and again.count("not evaluated again") == 2
    assert again.splitlines()[-4:] == out.splitlines()[-4:]
    for bad, message in ((["--seeds", "0", "0"], "repeats a seed"), (["--", "seed=3"], "not seed, split_seed or out"),
                         (["--config", "nope.yaml"], "no such file"), (["--", "no_such_key=1"], "no_such_key")):
        done = subprocess.run([sys.executable, str(EXAMPLES / "seed_spread.py"), *args, *bad], capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
