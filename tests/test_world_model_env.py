"""WorldModel-v0 as a real Gymnasium Env and VectorEnv (real models, real MuJoCo start states)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

import wm_eval  # noqa: F401  (registers WorldModel-v0)
from wm_eval import tasks
from wm_eval.errors import CheckpointError, InvalidActionError, SpaceMismatchError, TaskError
from wm_eval.models.checkpoint import load_checkpoint


def _make(tiny_model: Path, **kwargs):
    return gym.make("WorldModel-v0", task="Hopper-v5", model=str(tiny_model), **kwargs)


def test_import_is_light_and_registers() -> None:
    code = ("import sys, wm_eval, gymnasium as gym; "
            "assert 'WorldModel-v0' in gym.registry; "
            "spec = gym.registry['WorldModel-v0']; "
            "assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str); "
            "heavy = [m for m in ('torch', 'mujoco', 'rerun') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_namespaced_make_imports_the_package(tiny_model: Path) -> None:
    code = ("import gymnasium as gym; "
            f"env = gym.make('wm_eval:WorldModel-v0', task='Hopper-v5', model={str(tiny_model)!r}); "
            "obs, _ = env.reset(seed=0); assert obs.shape == (11,)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_make_uses_embedded_halfcheetah() -> None:
    env = gym.make("WorldModel-v0")
    assert env.unwrapped.task == "HalfCheetah-v5"
    truth = tasks.make_env("HalfCheetah-v5")
    assert env.observation_space == truth.observation_space and env.action_space == truth.action_space
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert np.array_equal(obs, truth.reset(seed=3)[0])
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (17,) and np.isfinite(reward) and info["uncertainty"] >= 0


def test_check_env_and_spaces(tiny_model: Path) -> None:
    env = _make(tiny_model)
    check_env(env.unwrapped, skip_render_check=True)
    truth = tasks.make_env("Hopper-v5")
    assert env.observation_space == truth.observation_space and env.action_space == truth.action_space
    assert env.unwrapped.batch.max_episode_steps == truth.spec.max_episode_steps


def test_reset_matches_mujoco_and_first_step_matches_model(tiny_model: Path) -> None:
    env = _make(tiny_model)
    truth = tasks.make_env("Hopper-v5")
    obs, _ = env.reset(seed=11)
    true_obs, _ = truth.reset(seed=11)
    assert np.array_equal(obs, true_obs)
    state = tasks.get_state(truth)
    obs2, _ = env.reset(options={"state": state})
    assert np.array_equal(obs2, true_obs)
    action = np.linspace(-0.5, 0.5, 3).astype(np.float32)
    next_obs, reward, terminated, _, info = env.step(action)
    model = load_checkpoint(tiny_model)
    pred = model.predict(torch.as_tensor(true_obs[None], dtype=torch.float32), torch.as_tensor(action[None]))
    assert np.allclose(next_obs, pred.next_obs[0].double().numpy())
    assert reward == pytest.approx(float(pred.reward[0]))
    assert terminated == bool(pred.terminated[0])
    assert info["uncertainty"] == pytest.approx(float(pred.uncertainty[0])) and info["member"] == -1


def test_reset_from_observation(tiny_model: Path) -> None:
    env = _make(tiny_model)
    start = tasks.make_env("Hopper-v5").reset(seed=5)[0]
    obs, _ = env.reset(options={"obs": start})
    assert np.array_equal(obs, start)


def test_bad_actions(tiny_model: Path) -> None:
    env = _make(tiny_model)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.array([np.nan, 0, 0], dtype=np.float32))
    with pytest.raises(SpaceMismatchError, match="expects"):
        env.step(np.zeros(4, dtype=np.float32))
    env.reset(seed=0)
    big = env.step(np.full(3, 5.0, dtype=np.float32))[0]
    env.reset(seed=0)
    bound = env.step(np.full(3, 1.0, dtype=np.float32))[0]
    assert np.array_equal(big, bound), "actions outside the bounds are clipped like MuJoCo's control range"


def test_unknown_task_and_model(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="did you mean 'Hopper-v5'"):
        gym.make("WorldModel-v0", task="Hoper-v5")
    with pytest.raises(CheckpointError):
        gym.make("WorldModel-v0", task="Hopper-v5", model=str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="Hopper-v5"):
        gym.make("WorldModel-v0", task="Walker2d-v5", model=str(tiny_model))


def test_sb3_evaluate_policy(tiny_model: Path) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    env = _make(tiny_model, max_episode_steps=20)
    agent = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    agent.learn(32)
    mean, std = evaluate_policy(agent, env, n_eval_episodes=3, deterministic=True)
    assert np.isfinite(mean) and np.isfinite(std)


def test_task_termination_when_fallen(tiny_model: Path) -> None:
    env = _make(tiny_model, termination="task")
    fallen = tasks.make_env("Hopper-v5").reset(seed=0)[0]
    fallen[0] = 0.3  # torso height far below Hopper's healthy range
    env.reset(options={"obs": fallen})
    terminated = env.step(np.zeros(3, dtype=np.float32))[2]
    assert terminated


@pytest.mark.parametrize("termination", ["auto", "learned"])
def test_embedded_hopper_terminates_when_it_falls(termination: str) -> None:
    env = gym.make("WorldModel-v0", task="Hopper-v5", termination=termination)
    fallen = tasks.make_env("Hopper-v5").reset(seed=0)[0]
    fallen[0], fallen[1] = 0.5, 0.6  # low and tilted: the hopper has fallen
    env.reset(options={"obs": fallen})
    assert env.step(np.zeros(3, dtype=np.float32))[2]
    env.reset(seed=0)
    assert not env.step(np.zeros(3, dtype=np.float32))[2], "a standing hopper does not terminate at once"


def test_embedded_hopper_episode_ends_by_falling_under_random_actions() -> None:
    env = gym.make("WorldModel-v0", task="Hopper-v5")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for step in range(1000):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        if terminated or truncated:
            break
    assert terminated and step < 200, "random torques topple the hopper, in imagination as in MuJoCo"


def test_max_uncertainty_truncates(tiny_model: Path) -> None:
    env = _make(tiny_model, max_uncertainty=0.0)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(3, dtype=np.float32))
    assert info["uncertainty_truncated"] == (info["uncertainty"] > 0.0)
    assert truncated or terminated


def test_vector_env_shapes_and_single_env_agreement(tiny_model: Path) -> None:
    venv = gym.make_vec("WorldModel-v0", num_envs=4, vectorization_mode="vector_entry_point", task="Hopper-v5",
                        model=str(tiny_model))
    assert isinstance(venv, VectorEnv) and venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert venv.observation_space.shape == (4, 11) and venv.action_space.shape == (4, 3)
    seeds = [1, 2, 3, 4]
    _, states = tasks.reset_states("Hopper-v5", seeds)
    obs, _ = venv.reset(seed=0, options={"state": states})
    assert obs.dtype == np.float64 and obs.shape == (4, 11)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (5, 4, 3)).astype(np.float32)
    vec_obs = []
    for a in actions:
        o, r, term, trunc, info = venv.step(a)
        assert r.shape == (4,) and term.dtype == bool and trunc.dtype == bool and info["uncertainty"].shape == (4,)
        vec_obs.append(o)
    single = _make(tiny_model)
    for i in range(4):
        o, _ = single.reset(options={"state": states[i]})
        for t, a in enumerate(actions):
            o, _, term, trunc, _ = single.step(a[i])
            assert np.allclose(o, vec_obs[t][i], atol=1e-5)
            if term or trunc:
                break


def test_vector_autoreset_next_step(tiny_model: Path) -> None:
    venv = gym.make_vec("WorldModel-v0", num_envs=3, vectorization_mode="vector_entry_point", task="Hopper-v5",
                        model=str(tiny_model), max_episode_steps=2, termination="task")
    venv.reset(seed=0)
    zeros = np.zeros((3, 3), dtype=np.float32)
    venv.step(zeros)
    _, _, term, trunc, _ = venv.step(zeros)
    assert (term | trunc).all(), "every env ends at max_episode_steps=2"
    obs, reward, term, trunc, _ = venv.step(zeros)
    assert (reward == 0).all() and not term.any() and not trunc.any()
    assert np.isfinite(obs).all()


def test_vector_seeding_is_deterministic(tiny_model: Path) -> None:
    def run(seed: int) -> np.ndarray:
        venv = gym.make_vec("WorldModel-v0", num_envs=3, vectorization_mode="vector_entry_point", task="Hopper-v5",
                            model=str(tiny_model), propagation="ts1", sample=True)
        obs = [venv.reset(seed=seed)[0]]
        for _ in range(4):
            obs.append(venv.step(np.full((3, 3), 0.3, dtype=np.float32))[0])
        return np.array(obs)

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_vector_env_with_1024_envs(tiny_model: Path) -> None:
    venv = gym.make_vec("WorldModel-v0", num_envs=1024, vectorization_mode="vector_entry_point", task="Hopper-v5",
                        model=str(tiny_model))
    obs, _ = venv.reset(seed=0)
    obs, r, term, trunc, info = venv.step(venv.action_space.sample())
    assert obs.shape == (1024, 11) and r.shape == (1024,)


def test_vector_autoreset_resets_step_info(tiny_model: Path) -> None:
    """The step that restarts an env reports no member, no uncertainty and no uncertainty truncation."""
    venv = gym.make_vec("WorldModel-v0", num_envs=3, vectorization_mode="vector_entry_point", task="Hopper-v5",
                        model=str(tiny_model), max_episode_steps=2, propagation="ts_inf", max_uncertainty=0.0)
    venv.reset(seed=0)
    zeros = np.zeros((3, 3), dtype=np.float32)
    _, _, term, trunc, info = venv.step(zeros)
    assert (term | trunc).all() and info["uncertainty_truncated"].any() and (info["member"] >= 0).all()
    _, reward, term, trunc, info = venv.step(zeros)
    assert (reward == 0).all() and not (term | trunc).any()
    assert (info["member"] == -1).all() and (info["uncertainty"] == 0).all() and not info["uncertainty_truncated"].any()


def test_disabled_autoreset_freezes_ended_rows_until_reset(tiny_model: Path) -> None:
    venv = gym.make_vec("WorldModel-v0", num_envs=2, vectorization_mode="vector_entry_point", task="Hopper-v5",
                        model=str(tiny_model), autoreset_mode=AutoresetMode.DISABLED)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    _, states = tasks.reset_states("Hopper-v5", [1, 2])
    fallen = tasks.make_env("Hopper-v5").reset(seed=0)[0]
    fallen[0] = 0.3  # env 0 starts fallen: it terminates at once
    venv.reset(options={"obs": np.stack([fallen, tasks.make_env("Hopper-v5").reset(seed=2)[0]])})
    obs, _, term, _, _ = venv.step(np.zeros((2, 3), dtype=np.float32))
    assert term[0] and not term[1]
    later, reward, term, _, info = venv.step(np.full((2, 3), 0.5, dtype=np.float32))
    assert np.array_equal(later[0], obs[0]) and reward[0] == 0 and not term[0] and info["uncertainty"][0] == 0
    assert not np.array_equal(later[1], obs[1]), "the running env keeps going"
    restarted, _ = venv.reset(options={"state": states[:1], "reset_mask": np.array([True, False])})
    assert np.array_equal(restarted[0], tasks.reset_states("Hopper-v5", [1])[0][0])
    assert np.array_equal(restarted[1], later[1]), "a partial reset leaves the other env alone"
