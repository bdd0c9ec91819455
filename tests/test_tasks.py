"""Ground-truth tasks: registry, exact state round trips, termination, reward and pose (real MuJoCo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wm_eval import tasks
from wm_eval.errors import TaskError

TASKS = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Pusher-v5"]


def test_registry_has_the_tasks() -> None:
    assert set(TASKS) <= set(tasks.task_ids())


def test_unknown_task_has_a_hint() -> None:
    with pytest.raises(TaskError, match="did you mean 'Walker2d-v"):
        tasks.get_task("Walker2d-v9")  # (v4 is a registered MuJoCo id, so a valid task now)
    with pytest.raises(TaskError, match="unknown task 'NoSuchTask-v0'"):
        tasks.make_env("NoSuchTask-v0")


@pytest.mark.parametrize("task", TASKS)
def test_state_round_trip_reproduces_next_100_steps(task: str) -> None:
    env = tasks.make_env(task)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for a in rng.uniform(-1, 1, (7,) + env.action_space.shape):  # leave the reset state first
        env.step(a)
    state = tasks.get_state(env)
    actions = rng.uniform(-1, 1, (100,) + env.action_space.shape)
    first = [env.step(a)[:2] for a in actions]
    tasks.set_state(env, state)
    second = [env.step(a)[:2] for a in actions]
    for (o1, r1), (o2, r2) in zip(first, second):
        assert np.array_equal(o1, o2) and r1 == r2


def test_frozen_restores_the_state() -> None:
    env = tasks.make_env("Hopper-v5")
    env.reset(seed=0)
    before = tasks.get_state(env)
    with tasks.frozen(env):
        for _ in range(5):
            env.step(env.action_space.sample())
    assert np.array_equal(tasks.get_state(env), before)


def test_state_for_another_task_is_refused() -> None:
    cheetah, hopper = tasks.make_env("HalfCheetah-v5"), tasks.make_env("Hopper-v5")
    cheetah.reset(seed=0)
    hopper.reset(seed=0)
    with pytest.raises(TaskError, match="another task"):
        tasks.set_state(hopper, tasks.get_state(cheetah))


@pytest.mark.parametrize("task", ["Hopper-v5", "Walker2d-v5"])
def test_termination_rule_matches_gymnasium(task: str) -> None:
    env, spec = tasks.make_env(task), tasks.get_task(task)
    rng = np.random.default_rng(1)
    seen = 0
    for episode in range(5):
        env.reset(seed=episode)
        for _ in range(300):
            obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
            assert bool(spec.terminated(obs)) == terminated
            seen += terminated
            if terminated or truncated:
                break
    assert seen > 0, "random actions make the robot fall: the rule was exercised"


def test_pusher_reward_matches_gymnasium() -> None:
    env, spec = tasks.make_env("Pusher-v5"), tasks.get_task("Pusher-v5")
    obs, _ = env.reset(seed=0)
    for a in np.random.default_rng(2).uniform(-2, 2, (20, 7)):
        next_obs, reward, *_ = env.step(a)
        assert spec.reward(obs, a, next_obs) == pytest.approx(reward, abs=1e-9)
        obs = next_obs


@pytest.mark.parametrize("task", TASKS)
def test_pose_from_observation_matches_qpos(task: str) -> None:
    env = tasks.make_env(task)
    obs, _ = env.reset(seed=0)
    observations, states = [obs], [tasks.get_state(env)]
    for a in np.random.default_rng(3).uniform(-1, 1, (30,) + env.action_space.shape):
        obs, _, terminated, _, _ = env.step(a)
        observations.append(obs)
        states.append(tasks.get_state(env))
        if terminated:
            break
    qpos = tasks.qpos_from_states(env, np.array(states))
    pose = tasks.qpos_from_observations(task, env, np.array(observations), root_x0=float(qpos[0, 0]))
    if tasks.get_task(task).root_velocity_index is None:
        assert np.allclose(pose, qpos, atol=1e-9)
    else:  # the root x is integrated from the observed velocity: exact except that drift
        assert np.allclose(pose[:, 1:], qpos[:, 1:], atol=1e-9)
        assert pose[0, 0] == qpos[0, 0] and np.abs(pose[:, 0] - qpos[:, 0]).max() < 0.1


def test_no_mujoco_log_in_the_working_folder(tmp_path: Path) -> None:
    code = f"from wm_eval import tasks\nfor t in {TASKS!r}:\n    tasks.make_env(t).reset(seed=0)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "settotalmass" not in done.stderr + done.stdout
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
