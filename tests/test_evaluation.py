"""Paired evaluation: same start states, known returns, report schema, CLI end to end, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wm_eval import tasks
from wm_eval.commands import load_model, load_policy_list, run_evaluation
from wm_eval.config import load_config
from wm_eval.evaluation.paired import evaluate_policies, start_states
from wm_eval.evaluation.rollout import MujocoBatch, run_episodes
from wm_eval.policy import LinearPolicy, load_policies
from wm_eval.reporting.trajectories import read_trajectories

REPO = Path(__file__).resolve().parents[1]
DESIGN_KEYS = {"task", "model", "seed", "policies", "metrics", "horizon_error", "versions", "config"}
POLICY_KEYS = {"name", "imagined_return", "true_return", "abs_error", "uncertainty"}
METRIC_KEYS = {"spearman", "kendall", "pearson", "mmrv", "regret_at_1", "normalized_abs_error"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wm_eval.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_start_states_are_seeded_mujoco_resets() -> None:
    seeds, states = start_states("Hopper-v5", 3, seed=4)
    env = tasks.make_env("Hopper-v5")
    for seed, state in zip(seeds, states):
        env.reset(seed=int(seed))
        assert np.array_equal(tasks.get_state(env), state)
    again_seeds, again = start_states("Hopper-v5", 3, seed=4)
    assert np.array_equal(seeds, again_seeds) and np.array_equal(states, again)


def test_known_linear_policy_gives_its_known_return() -> None:
    env = tasks.make_env("HalfCheetah-v5")
    rng = np.random.default_rng(0)
    weights = rng.normal(scale=0.3, size=(17, 6)).astype(np.float32)
    (policy,) = load_policies(LinearPolicy(weights), observation_space=env.observation_space,
                              action_space=env.action_space)
    _, states = start_states("HalfCheetah-v5", 2, seed=0)
    batch = MujocoBatch("HalfCheetah-v5", 2)
    rollout = run_episodes(batch, states, 50, policies=[(policy, slice(None))])
    envs = [tasks.make_env("HalfCheetah-v5").unwrapped for _ in range(2)]
    obs = np.stack([tasks.set_state(e, s) for e, s in zip(envs, states)])
    totals = np.zeros(2)
    for _ in range(50):  # the same function, stepped by hand in plain Gymnasium envs (batched alike:
        actions = np.clip(obs.astype(np.float32) @ weights, -1, 1)  # BLAS rounding depends on the batch)
        for i, e in enumerate(envs):
            obs[i], reward, *_ = e.step(actions[i])
            totals[i] += reward
    assert np.allclose(rollout.rewards.sum(axis=1), totals, rtol=1e-12)
    assert (rollout.lengths == 50).all() and rollout.truncations[:, -1].all()


@pytest.mark.parametrize("mode", ["closed_loop", "open_loop"])
def test_pairing_starts_both_worlds_in_the_same_state(tiny_model: Path, mode: str) -> None:
    model, name, fingerprint = load_model(str(tiny_model), task="Hopper-v5", device="cpu")
    policies = load_policy_list(["zoo:Hopper-v5#ppo_0600k", "zoo:Hopper-v5#ppo_0000k"], task="Hopper-v5",
                                device="cpu")
    ev = evaluate_policies(task="Hopper-v5", model=model, model_name=name, model_fingerprint=fingerprint,
                           policies=policies, episodes=3, horizon=25, seed=1, mode=mode, workers=1, progress=False)
    for pr in ev.policies:
        assert np.array_equal(pr.true.observations[:, 0], pr.imagined.observations[:, 0])
        assert np.array_equal(pr.true.sim_states[:, 0], ev.start_states)
        if mode == "open_loop":
            steps = np.minimum(pr.true.lengths, pr.imagined.lengths)
            for i, t in enumerate(steps):
                assert np.array_equal(pr.imagined.actions[i, :t], pr.true.actions[i, :t])


def test_parallel_ground_truth_equals_in_process(tiny_model: Path) -> None:
    model, name, fingerprint = load_model(str(tiny_model), task="Hopper-v5", device="cpu")
    policies = load_policy_list(["zoo:Hopper-v5#ppo_0600k", "zoo:Hopper-v5#a2c_0300k"], task="Hopper-v5", device="cpu")
    kwargs = dict(task="Hopper-v5", model=model, model_name=name, model_fingerprint=fingerprint, policies=policies,
                  episodes=2, horizon=20, seed=0, progress=False)
    one, two = evaluate_policies(workers=1, **kwargs), evaluate_policies(workers=2, **kwargs)
    for a, b in zip(one.policies, two.policies):
        assert np.array_equal(a.true.observations, b.true.observations)
        assert np.array_equal(a.imagined.observations, b.imagined.observations)


def test_report_schema_and_outputs(tiny_model: Path, tmp_path: Path) -> None:
    cfg = load_config("evaluate", preset="debug", overrides=[
        "task=Hopper-v5", f"model={tiny_model}", "policies=[zoo]", "episodes=3", "horizon=20"])
    report = run_evaluation(cfg, tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report)) and on_disk["complete"] is True
    assert DESIGN_KEYS <= set(on_disk) and METRIC_KEYS <= set(on_disk["metrics"])
    assert len(on_disk["policies"]) == 12
    for entry in on_disk["policies"]:
        assert POLICY_KEYS <= set(entry)
        assert set(entry["true_return"]) == {"mean", "ci_low", "ci_high"}
    assert len(on_disk["horizon_error"]) == 21 and on_disk["horizon_error"][0] == 0.0
    for name in ("report.md", "returns.png", "horizon_error.png", "uncertainty.png", "trajectories.h5",
                 "rollouts.rrd", "config.yaml"):
        assert (tmp_path / name).stat().st_size > 0, name
    pairs = read_trajectories(tmp_path)
    assert len(pairs.episodes) == 36


def test_same_seed_same_numbers(tiny_model: Path, tmp_path: Path) -> None:
    def run(folder: str) -> dict:
        cfg = load_config("evaluate", preset="debug", overrides=[
            "task=Hopper-v5", f"model={tiny_model}", "policies=[zoo:Hopper-v5#ppo_0300k,zoo:Hopper-v5#a2c_0075k]",
            "rerun=false", "propagation=ts1"])
        report = run_evaluation(cfg, tmp_path / folder, progress=False)
        return {k: report[k] for k in ("policies", "metrics", "horizon_error", "trust")}

    assert run("a") == run("b")


def test_cli_end_to_end_on_debug_preset(tiny_model: Path, tmp_path: Path) -> None:
    done = _cli("evaluate", "--preset", "debug", "task=Hopper-v5", f"model={tiny_model}", "out=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Spearman" in done.stdout and "ppo_0600k" in done.stdout
    assert json.loads((tmp_path / "run" / "report.json").read_text())["task"] == "Hopper-v5"
    view = _cli("view", "run", "--save", "v.rrd", cwd=tmp_path)
    assert view.returncode == 0, view.stderr and (tmp_path / "v.rrd").stat().st_size > 0


def _bad(tmp_path: Path, tiny_model: Path, policy: str) -> subprocess.CompletedProcess:
    return _cli("evaluate", "--preset", "debug", "task=Hopper-v5", f"model={tiny_model}", f"policies=[{policy}]",
                "out=run", cwd=tmp_path)


def test_policy_for_another_task_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    done = _bad(tmp_path, tiny_model, str(REPO / "policies" / "HalfCheetah-v5" / "ppo_0600k.zip"))
    assert done.returncode == 2 and "ppo_0600k" in done.stderr and "Traceback" not in done.stderr


def test_truncated_zip_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    data = (REPO / "policies" / "Hopper-v5" / "ppo_0600k.zip").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    done = _bad(tmp_path, tiny_model, str(broken))
    assert done.returncode == 2 and "broken.zip" in done.stderr


def test_missing_policy_path_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    done = _bad(tmp_path, tiny_model, str(tmp_path / "nothing.zip"))
    assert done.returncode == 2 and "nothing.zip" in done.stderr


@pytest.mark.parametrize(("body", "message"), [
    ("return np.full(3, np.nan)", "NaN"),
    ("return np.zeros(5)", "shape"),
])
def test_bad_callable_policy_fails_without_a_report(tiny_model: Path, tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "mypolicies.py").write_text(f"import numpy as np\n\ndef act(obs):\n    {body}\n")
    done = _bad(tmp_path, tiny_model, "mypolicies:act")
    assert done.returncode == 2 and message in done.stderr and "act" in done.stderr, done.stderr
    assert not (tmp_path / "run" / "report.json").exists()


def test_zoo_manifests_span_poor_to_strong() -> None:
    for task in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"):
        manifest = json.loads((REPO / "policies" / task / "manifest.json").read_text())
        returns = [p["true_return"] for p in manifest["policies"]]
        assert len(returns) >= 11 and max(returns) > 3 * max(min(returns), 1.0)
        assert {p["algorithm"] for p in manifest["policies"]} >= {"PPO", "A2C"}
        for p in manifest["policies"]:
            assert (REPO / "policies" / task / p["file"]).is_file()


def test_evaluate_sb3_zips_the_project_never_saw(tiny_model: Path, tmp_path: Path) -> None:
    from stable_baselines3 import PPO, SAC

    env = tasks.make_env("Hopper-v5")
    PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64).save(tmp_path / "a")
    SAC("MlpPolicy", env, learning_starts=16, buffer_size=256, seed=0, device="cpu").learn(32).save(tmp_path / "b")
    done = _cli("evaluate", "--preset", "debug", "task=Hopper-v5", f"model={tiny_model}", "policies=[a.zip,b.zip]",
                "episodes=3", "out=r", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [p["name"] for p in report["policies"]] == ["a", "b"] and DESIGN_KEYS <= set(report)
