"""The off-policy experts of ``policies/experts`` (issue: fidelity on strong policies): published without
optimizer states and with zeroed critics, still loaded exactly by wm_eval's zip reader."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_eval.policy import load_policies

EXPERTS = Path(__file__).resolve().parents[1] / "policies" / "experts"
UNSEEN = EXPERTS.parent / "unseen"  # held-out runs: kept out of the zoos and the data


def test_publish_strips_optimizers_and_keeps_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stable_baselines3 import SAC

    monkeypatch.syspath_prepend(str(EXPERTS.parent))
    sys.modules.pop("train_experts", None)
    from train_experts import publish

    env = gym.make("Pendulum-v1")
    model = SAC("MlpPolicy", env, seed=0, device="cpu", learning_starts=0)
    model.learn(64)
    model.save(tmp_path / "full.zip")
    publish(tmp_path / "full.zip", tmp_path / "small.zip")
    names = zipfile.ZipFile(tmp_path / "small.zip").namelist()
    assert "policy.pth" in names and not any(n.endswith("optimizer.pth") for n in names)
    assert (tmp_path / "small.zip").stat().st_size < 0.3 * (tmp_path / "full.zip").stat().st_size
    state = torch.load(io.BytesIO(zipfile.ZipFile(tmp_path / "small.zip").read("policy.pth")), weights_only=True)
    assert state.keys() == model.policy.state_dict().keys()  # SB3's layout, so the strict loader accepts it
    assert not any(v.any() for k, v in state.items() if k.startswith(("critic.", "critic_target.")))
    (policy,) = load_policies(tmp_path / "small.zip", observation_space=env.observation_space,
                              action_space=env.action_space)
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    np.testing.assert_allclose(policy.act(obs), expected, atol=1e-6)


@pytest.mark.parametrize("manifest", sorted(EXPERTS.glob("*/manifest.json")) + sorted(UNSEEN.glob("*/manifest.json")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_published_experts_load_and_act(manifest: Path) -> None:
    task = json.loads(manifest.read_text())["task"]
    env = gym.make(task)
    policies = load_policies(str(manifest), task=task, observation_space=env.observation_space,
                             action_space=env.action_space)
    assert policies and all(np.isfinite(p.metadata["true_return"]) for p in policies)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    assert policies[-1].act(obs).shape == (3, *env.action_space.shape)


def test_add_experts_joins_the_zoo_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.syspath_prepend(str(EXPERTS.parent))
    sys.modules.pop("train_zoo", None)
    from train_zoo import add_experts

    shutil.copytree(EXPERTS.parent / "HalfCheetah-v5", tmp_path / "HalfCheetah-v5")
    zoo = json.loads((tmp_path / "HalfCheetah-v5" / "manifest.json").read_text())
    zoo["policies"] = [e for e in zoo["policies"] if not e["file"].startswith("../")]  # the PPO/A2C zoo alone
    (tmp_path / "HalfCheetah-v5" / "manifest.json").write_text(json.dumps(zoo))
    shutil.copytree(EXPERTS / "HalfCheetah-v5", tmp_path / "experts" / "HalfCheetah-v5")
    experts = json.loads((EXPERTS / "HalfCheetah-v5" / "manifest.json").read_text())["policies"]
    add_experts("HalfCheetah-v5", root=tmp_path)
    add_experts("HalfCheetah-v5", root=tmp_path)  # refreshes, never duplicates
    merged = json.loads((tmp_path / "HalfCheetah-v5" / "manifest.json").read_text())
    assert len(merged["policies"]) == len(zoo["policies"]) + len(experts)
    returns = [e["true_return"] for e in merged["policies"]]
    assert returns == sorted(returns) and returns[-1] == max(e["true_return"] for e in experts)
    env = gym.make("HalfCheetah-v5")
    loaded = load_policies(str(tmp_path / "HalfCheetah-v5" / "manifest.json"), task="HalfCheetah-v5",
                           observation_space=env.observation_space, action_space=env.action_space)
    best = next(p for p in loaded if p.name == experts[-1]["name"])
    (direct,) = load_policies(str(EXPERTS / "HalfCheetah-v5" / experts[-1]["file"]),
                              observation_space=env.observation_space, action_space=env.action_space)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    np.testing.assert_array_equal(best.act(obs), direct.act(obs))


@pytest.mark.parametrize("algo", ["sac", "td3", "ppo"])
def test_train_experts_publishes_a_resumable_ladder(tmp_path: Path, algo: str) -> None:
    """The README's ``train_experts.py`` commands, debug-sized: checkpoints along the run, published for acting
    (held out with ``--held-out``), a manifest with true returns and the recipe; ``--resume`` continues."""
    import subprocess

    script = EXPERTS.parent / "train_experts.py"
    base = [sys.executable, str(script), "--task", "Hopper-v5", "--algo", algo, "--seed", "3", "--every", "1000",
            "--publish-every", "1000", "--eval-episodes", "1", "--root", str(tmp_path), "--held-out"]
    for steps, extra in ((2000, []), (3000, ["--resume"])):
        done = subprocess.run([*base, "--steps", str(steps), *extra], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    kept = 0 if algo == "ppo" else 2000  # on-policy PPO has no replay buffer to keep
    assert f"resumed {algo}_s3_0002k.zip with {kept} transitions in its replay buffer" in done.stdout
    assert (tmp_path / "runs" / "experts" / "Hopper-v5" / f"{algo}_s3_replay.pkl").is_file() == (algo != "ppo")
    manifest = json.loads((tmp_path / "policies" / "unseen" / "Hopper-v5" / "manifest.json").read_text())
    steps = [e["training_steps"] for e in manifest["policies"]]  # PPO learns in whole rollouts of 2048 steps
    assert steps == ([2048, 4096, 6144] if algo == "ppo" else [1000, 2000, 3000])
    assert manifest["recipes"][f"{algo}_s3"] == (  # the whole command: checkpoint and publishing steps too
        f"python policies/train_experts.py --task Hopper-v5 --algo {algo} --seed 3 --steps 3000 --every 1000 "
        "--publish-every 1000 --held-out")
    assert not (tmp_path / "policies" / "experts").exists()
    env = gym.make("Hopper-v5")
    policies = load_policies(str(tmp_path / "policies" / "unseen" / "Hopper-v5" / "manifest.json"), task="Hopper-v5",
                             observation_space=env.observation_space, action_space=env.action_space)
    assert len(policies) == 3 and all(np.isfinite(p.metadata["true_return"]) for p in policies)


def test_publish_only_adds_saved_checkpoints_and_keeps_other_runs(tmp_path: Path) -> None:
    """``--publish-only`` publishes a run's saved checkpoints after the fact, in step order, without dropping
    the entries another seed's run wrote to the same manifest meanwhile; an unsaved step count is a one-line
    error (exit 2)."""
    import subprocess

    script = EXPERTS.parent / "train_experts.py"
    base = [sys.executable, str(script), "--task", "Hopper-v5", "--algo", "td3", "--seed", "3", "--eval-episodes", "1",
            "--root", str(tmp_path)]
    done = subprocess.run([*base, "--steps", "2000", "--every", "1000", "--publish-every", "2000"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    path = tmp_path / "policies" / "experts" / "Hopper-v5" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert [e["name"] for e in manifest["policies"]] == ["td3_s3_0002k"]
    other = {"name": "td3_s4_0001k", "file": "td3_s4_0001k.zip", "algorithm": "TD3", "training_steps": 1000,
             "seed": 4, "true_return": 1.0}  # as a concurrent run of seed 4 would have written it
    manifest["policies"].append(other)
    path.write_text(json.dumps(manifest))
    done = subprocess.run([*base, "--publish-only", "1000"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "td3_s3_0001k: true return" in done.stdout
    manifest = json.loads(path.read_text())
    assert [e["name"] for e in manifest["policies"]] == ["td3_s4_0001k", "td3_s3_0001k", "td3_s3_0002k"]
    assert manifest["recipes"]["td3_s3"].endswith("--steps 2000 --every 1000 --publish-every 2000")  # the training
    # command stays the recipe
    env = gym.make("Hopper-v5")
    (policy,) = load_policies(str(path.parent / "td3_s3_0001k.zip"), observation_space=env.observation_space,
                              action_space=env.action_space)
    assert policy.act(env.reset(seed=0)[0][None]).shape == (1, 3)
    bad = subprocess.run([*base, "--publish-only", "5000"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no saved checkpoint td3_s3_0005k.zip" in bad.stderr
    assert bad.stderr.strip().endswith("pass step counts the run saved (1000 2000)")
    assert "Traceback" not in bad.stderr and json.loads(path.read_text()) == manifest
