"""wm_eval's own arm tasks (``envs/``): real MuJoCo envs, exact restore, success rules, scripted zoos."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_eval
from wm_eval import tasks
from wm_eval.envs import ENV_IDS
from wm_eval.envs.experts import expert
from wm_eval.errors import PolicyError, TaskError
from wm_eval.policy import load_policies, zoo_tasks

IDS = sorted(ENV_IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_and_offscreen_rendering(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", width=96, height=64)
    check_env(env.unwrapped, skip_render_check=True)  # "human" needs a display; rgb_array is checked below
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8 and frame.std() > 5  # a scene, not a blank
    assert env.spec.max_episode_steps == ENV_IDS[env_id][1]


@pytest.mark.parametrize("env_id", IDS)
def test_placements_live_in_the_simulator_state_and_200_steps_replay_exactly(env_id: str) -> None:
    env = gym.make(env_id)
    start_obs, _ = env.reset(seed=7)
    start = tasks.get_state(env)
    other_obs, _ = env.reset(seed=8)
    assert not np.allclose(start_obs, other_obs)  # placements are randomised per seeded reset
    restored = tasks.set_state(env, start)
    np.testing.assert_array_equal(restored, start_obs)  # puck/goal or cabinet/target come back with the state
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (200, 3)).astype(np.float32)
    policy = expert(env_id, 1.0)
    runs = []
    for _ in range(2):
        obs = tasks.set_state(env, start)
        seen = []
        for t in range(200):  # the expert's contacts first, then random actions
            action = policy(obs[None])[0] if t < 100 else actions[t]
            obs, *_ = env.step(action)
            seen.append(obs)
        runs.append((np.array(seen), tasks.get_state(env)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def _simulator_success(env: gym.Env, env_id: str) -> bool:
    """Success read from MuJoCo's own state, independently of the observation: puck body to goal mocap
    within 5 cm; drawer slide at least the target (front-to-marker distance) minus 1 cm."""
    data = env.unwrapped.data
    if env_id == "WmEval/ArmPush-v0":
        return bool(np.linalg.norm(data.body("puck").xpos[:2] - data.mocap_pos[0, :2]) < 0.05)
    front = data.body("cabinet").xpos[1] - 0.105  # the closed drawer's front, in the cabinet's frame
    return bool(data.joint("drawer").qpos[0] >= front - data.body("target").xpos[1] - 0.01)


@pytest.mark.parametrize("env_id", IDS)
def test_success_and_reward_rules_on_observations_match_the_env(env_id: str) -> None:
    spec = tasks.get_task(env_id)
    env = gym.make(env_id)
    policy = expert(env_id, 1.0)
    hits = 0
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        for _ in range(150):
            action = policy(obs[None])[0]
            next_obs, reward, terminated, truncated, info = env.step(action)
            assert bool(spec.success(next_obs)) == info["is_success"] == _simulator_success(env, env_id)
            assert spec.reward(obs, action.astype(np.float64), next_obs) == pytest.approx(reward, abs=1e-12)
            assert not terminated
            hits += info["is_success"]
            obs = next_obs
        assert truncated  # the time limit ends every episode
    assert hits > 0


@pytest.mark.parametrize("env_id", IDS)
def test_pose_and_mocap_from_observations_redraw_the_true_scene(env_id: str) -> None:
    """What the viewer draws for imagined observations equals the simulator's own qpos and mocap bodies."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=3)
    for _ in range(40):
        obs, *_ = env.step(expert(env_id, 1.0)(obs[None])[0])
    state = tasks.get_state(env)[None]
    np.testing.assert_allclose(tasks.qpos_from_observations(env_id, env, obs[None]), tasks.qpos_from_states(env, state),
                               atol=1e-12)
    np.testing.assert_allclose(tasks.mocap_from_observations(env_id, env, obs[None]),
                               tasks.mocap_from_states(env, state), atol=1e-12)


@pytest.mark.parametrize("env_id", IDS)
def test_shipped_zoo_is_a_ladder_of_scripted_experts(env_id: str) -> None:
    assert env_id in zoo_tasks()
    env = gym.make(env_id)
    policies = load_policies("zoo", task=env_id, observation_space=env.observation_space,
                             action_space=env.action_space)
    assert len(policies) >= 10
    rates = [p.metadata["true_success"] for p in policies]
    assert min(rates) <= 0.05 and max(rates) >= 0.95 and len(set(rates)) >= 8
    # the manifest's measured rates are what the experts do: re-measure two ends on 10 episodes
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * 10)
    for policy in (policies[0], policies[-1]):
        obs, _ = vec.reset(seed=list(range(10000, 10010)))
        success = np.zeros(10, dtype=bool)
        for _ in range(150):
            obs, _, _, _, info = vec.step(policy.act(obs))
            success |= info["is_success"]
        assert abs(success.mean() - policy.metadata["true_success"]) <= 0.3
    reloaded = load_policies(policies[3].source, observation_space=env.observation_space, action_space=env.action_space)
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    np.testing.assert_array_equal(reloaded[0].act(obs), policies[3].act(obs))


def test_manifest_knobs_are_numbers_only(tmp_path: Path) -> None:
    env = gym.make("WmEval/ArmPush-v0")
    spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
    manifest = {"format": "wm_eval.zoo/1", "task": "WmEval/ArmPush-v0",
                "policies": [{"name": "x", "scripted": {"skill": "os.system('true')"}}]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(PolicyError, match="numeric knobs"):
        load_policies(path, task="WmEval/ArmPush-v0", **spaces)
    manifest["policies"] = [{"name": "x", "scripted": {"skill": 1.5}}]
    path.write_text(json.dumps(manifest))
    with pytest.raises(PolicyError, match=r"policy 'x': skill must be in \[0, 1\]"):
        load_policies(path, task="WmEval/ArmPush-v0", **spaces)
    for bad in ({"skill": True}, {"skill": float("nan")}):
        manifest["policies"] = [{"name": "x", "scripted": bad}]
        path.write_text(json.dumps(manifest))
        with pytest.raises(PolicyError, match="finite numeric knobs"):
            load_policies(path, task="WmEval/ArmPush-v0", **spaces)
    manifest["policies"] = [{"name": "x", "scripted": {"skill": 0.5}, "file": "x.zip"}]
    path.write_text(json.dumps(manifest))
    with pytest.raises(PolicyError, match="not both"):
        load_policies(path, task="WmEval/ArmPush-v0", **spaces)
    manifest["policies"] = [{"name": "x", "scripted": {"skil": 0.5}}]
    path.write_text(json.dumps(manifest))
    with pytest.raises(PolicyError, match="unexpected keyword argument 'skil'"):
        load_policies(path, task="WmEval/ArmPush-v0", **spaces)


def test_unknown_envs_id_gets_a_hint() -> None:
    with pytest.raises(TaskError, match="did you mean 'WmEval/ArmPush-v0'"):
        tasks.get_task("WmEval/ArmPsh-v0")


def test_gate_records_and_checks_scripted_zoo_entries(tmp_path: Path) -> None:
    """A baseline of two scripted experts stores ``<manifest>#<name>`` paths, reloads exactly those two and
    gates their success rates too."""
    from wm_eval.regress import check_baseline, record_baseline

    names = ["expert_s1.00", "expert_s0.30"]
    baseline = record_baseline(tmp_path / "gate.json", task="WmEval/ArmPush-v0", episodes=4, horizon=40,
                               policies=[f"zoo:WmEval/ArmPush-v0#{n}" for n in names])
    assert [e["path"].rsplit("#", 1)[1] for e in baseline["policies"]] == names
    assert all(len(e["episode_successes"]) == 4 for e in baseline["policies"])
    result = check_baseline(tmp_path / "gate.json")
    assert [c.name for c in result.checks] == names and not result.regressions
    assert all(c.success_test is not None and c.candidate == c.baseline for c in result.checks)


@pytest.mark.parametrize("env_id", IDS)
def test_unseen_ppo_checkpoints_load_as_a_manifest(env_id: str) -> None:
    """The PPO checkpoints kept out of the datasets (``policies/<task>/ppo``) are real SB3 policies."""
    manifest = Path(__file__).resolve().parents[1] / "policies" / env_id.replace("/", "_") / "ppo" / "manifest.json"
    env = gym.make(env_id)
    policies = load_policies(str(manifest), task=env_id, observation_space=env.observation_space,
                             action_space=env.action_space)
    assert len(policies) >= 5 and {p.algorithm for p in policies} == {"PPO"}
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    assert policies[-1].act(obs).shape == (4, 3)


def test_world_model_env_reports_imagined_success() -> None:
    """``WorldModel-v0`` on an arm task: ``info["is_success"]`` is the task's rule on the imagined observation
    (single and vector env); asking for it on a task without a rule is one clear error."""
    from wm_eval.world_model_env import WorldModelVectorEnv

    env = gym.make("WorldModel-v0", task="WmEval/ArmPush-v0")
    obs, _ = env.reset(seed=0)
    policy, hits = expert("WmEval/ArmPush-v0", 1.0), 0
    for _ in range(150):
        obs, _, _, truncated, info = env.step(policy(obs[None])[0])
        assert info["is_success"] == bool(tasks.get_task("WmEval/ArmPush-v0").success(obs))
        hits += info["is_success"]
        if truncated:
            break
    assert hits > 0  # the imagined expert gets there
    vec = WorldModelVectorEnv(3, task="WmEval/ArmDrawer-v0")
    obs, _ = vec.reset(seed=1)
    _, _, _, _, infos = vec.step(np.zeros((3, 3), dtype=np.float32))
    assert infos["is_success"].shape == (3,) and infos["_is_success"].all()
    with pytest.raises(TaskError, match="HalfCheetah-v5 has no success rule"):
        gym.make("WorldModel-v0", task="HalfCheetah-v5", success="task")
    off = gym.make("WorldModel-v0", task="WmEval/ArmPush-v0", success="off")
    off.reset(seed=0)
    assert "is_success" not in off.step(np.zeros(3, np.float32))[4]


def test_random_policy_in_the_gate_and_in_a_resumed_evaluation(tmp_path: Path) -> None:
    """``random`` is wm_eval's own code: a baseline naming it needs no allow_code, and a run resumes with it."""
    from wm_eval.regress import check_baseline, record_baseline

    record_baseline(tmp_path / "gate.json", task="WmEval/ArmPush-v0", policies=["random"], episodes=3, horizon=20)
    assert not check_baseline(tmp_path / "gate.json").regressions
    kwargs = {"episodes": 3, "horizon": 20, "workers": 1, "bootstrap": 20, "progress": False, "out": tmp_path / "run"}
    first = wm_eval.evaluate("WmEval/ArmPush-v0", ["random"], **kwargs)
    again = wm_eval.evaluate("WmEval/ArmPush-v0", ["random"], resume=True, **kwargs)
    assert again.policies[0].episodes["true_return"].tolist() == first.policies[0].episodes["true_return"].tolist()
