"""Any MuJoCo Gymnasium env as ground truth: a registered id (Ant-v5) through collect, train, evaluate,
view and regress, and ``module:factory`` envs, with one-line refusals for envs wm_eval cannot pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import wm_eval
from wm_eval import tasks
from wm_eval.errors import TaskError

FACTORIES = '''
import gymnasium as gym
import numpy as np


def pendulum():
    return gym.make("InvertedPendulum-v5")


def cartpole():
    return gym.make("CartPole-v1")


class _PythonState(gym.Wrapper):
    """Keeps a random stream in Python: a restored MuJoCo state does not restore it."""

    def __init__(self, env):
        super().__init__(env)
        self.rng = np.random.default_rng(0)

    def step(self, action):
        return self.env.step(action + self.rng.normal(0, 0.1, size=np.shape(action)).astype(np.float32))


def python_state():
    return _PythonState(gym.make("InvertedPendulum-v5"))


class _DictObs(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"obs": env.observation_space})

    def observation(self, obs):
        return {"obs": obs}


def dict_obs():
    return _DictObs(gym.make("InvertedPendulum-v5"))


def raises():
    raise ValueError("no robot here")


def not_an_env():
    return 3


def ant_policy():
    return lambda obs: np.tanh(2.0 * obs[:, 5:13])
'''


@pytest.fixture()
def user_envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_envs.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_envs"


def test_ant_collect_train_evaluate_view_regress(tmp_path: Path, user_envs: str) -> None:
    from wm_eval.data.collect import collect
    from wm_eval.data.hdf5 import load_dataset
    from wm_eval.models.checkpoint import save_checkpoint
    from wm_eval.regress import check_baseline, record_baseline
    from wm_eval.training import EnsembleHParams, data_fingerprint, fit

    spec = tasks.get_task("Ant-v5")
    assert spec.terminated is None and spec.success is None and spec.pose_drawable and spec.root_velocity_index == 13
    data = load_dataset(collect(task="Ant-v5", episodes=4, max_steps=40, seed=0, behaviour=["random"],
                                noise_scales=[0.0], out=tmp_path / "data", progress=False))
    assert len(data.episodes) == 4 and data.episodes[0].observations.shape[1] == 105
    hp = EnsembleHParams(ensemble_size=2, elites=2, hidden=32, layers=2, epochs=2, batch_size=64)
    model, _ = fit(data.episodes, task="Ant-v5", hparams=hp, seed=0)
    save_checkpoint(model, tmp_path / "model", data_fingerprint=data_fingerprint(data.episodes), metrics={},
                    config={}, seed=0, **tasks.spaces("Ant-v5"))
    policy = f"{user_envs}:ant_policy"
    ev = wm_eval.evaluate("Ant-v5", [policy], model=tmp_path / "model", episodes=3, horizon=30, workers=1,
                          bootstrap=50, progress=False)
    assert ev.config["termination"].startswith("learned head")
    p = ev.policies[0]
    assert np.isfinite(p.episodes["true_return"]).all() and np.isfinite(p.episodes["imagined_return"]).all()
    wm_eval.report(ev, tmp_path / "run")
    assert (tmp_path / "run" / "rollouts.rrd").stat().st_size > 0
    assert "learned head" in (tmp_path / "run" / "report.md").read_text()
    record_baseline(tmp_path / "gate.json", task="Ant-v5", policies=[policy], model=str(tmp_path / "model"),
                    episodes=3, horizon=30)
    result = check_baseline(tmp_path / "gate.json", allow_code=True)
    assert not result.regressions and result.checks[0].candidate == result.checks[0].baseline


def test_factory_task_from_a_file_needs_allow_code(tmp_path: Path, user_envs: str, monkeypatch) -> None:
    """A task id read from a file (here a baseline) that names code runs nothing without consent."""
    import json

    from wm_eval.regress import check_baseline

    monkeypatch.setattr(tasks, "_ALLOWED", set())
    (tmp_path / "marker_env.py").write_text(f"import pathlib\n\ndef make():\n    pathlib.Path({str(tmp_path / 'ran')!r})"
                                            ".write_text('x')\n")
    baseline = {"format": "wm_eval.baseline/1", "task": "marker_env:make", "model": {"path": None, "name": "x",
                "fingerprint": "x"}, "horizon": 5, "seed": 0, "start_seeds": [1], "propagation": "mean",
                "tolerance": 0.05, "policies": []}
    (tmp_path / "gate.json").write_text(json.dumps(baseline))
    with pytest.raises(TaskError, match="names code to run .*allow_code=true"):
        check_baseline(tmp_path / "gate.json")
    assert not (tmp_path / "ran").exists()
    with pytest.raises(TaskError, match="names code to run"):
        tasks.get_task(f"{user_envs}:pendulum")


def test_factory_envs_and_refusals(user_envs: str) -> None:
    for name in ("pendulum", "cartpole", "python_state", "dict_obs", "missing", "raises", "not_an_env"):
        tasks.allow_task_code(f"{user_envs}:{name}")  # as evaluate(task=...) does for the task it is given
    spec = tasks.get_task(f"{user_envs}:pendulum")
    assert spec.factory is not None and spec.root_velocity_index is None
    obs, states = tasks.reset_states(f"{user_envs}:pendulum", [0, 1])  # seeded starts, restorable states
    env = tasks.make_env(f"{user_envs}:pendulum")
    np.testing.assert_array_equal(tasks.set_state(env, states[1]), obs[1])
    env.close()
    for name, match in (("cartpole", "is not a MuJoCo env"), ("python_state", "does not replay exactly"),
                        ("dict_obs", "Dict observations"), ("missing", "cannot load missing"),
                        ("raises", "the factory raised ValueError: no robot"),
                        ("not_an_env", "returned int, not a gymnasium.Env")):
        with pytest.raises(TaskError, match=match):
            tasks.get_task(f"{user_envs}:{name}")
    with pytest.raises(TaskError, match="did you mean 'Ant-v5'"):
        tasks.get_task("Antt-v5")


def test_reacher_success_rule_matches_mujoco() -> None:
    """Reacher-v5's success rule reads the fingertip-target vector from observations; it agrees with the
    bodies' positions in MuJoCo, and the pose rebuilds qpos from cosines, sines and the target."""
    spec = tasks.get_task("Reacher-v5")
    env = tasks.make_env("Reacher-v5")
    rng = np.random.default_rng(0)
    agree = 0
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        for _ in range(20):
            u = env.unwrapped
            wrapped = np.angle(np.exp(1j * (spec.pose(obs[None], np.zeros(1), u.model)[0] - u.data.qpos)))
            np.testing.assert_allclose(wrapped, 0.0, atol=1e-9)  # equal up to whole turns of the free joint
            distance = np.linalg.norm((u.get_body_com("fingertip") - u.get_body_com("target"))[:2])
            agree += bool(spec.success(obs[None])[0]) == (distance < tasks.REACHER_SUCCESS_DISTANCE)
            obs = env.step(rng.uniform(-1, 1, size=2).astype(np.float32))[0]
    env.close()
    assert agree == 100
    near = np.zeros((1, 10))
    near[0, 8:10] = [0.01, 0.01]
    assert spec.success(near)[0] and not spec.success(near * 2)[0]


def test_consent_is_per_task(user_envs: str, monkeypatch) -> None:
    """Consent names one factory task; an id that is not one (a typo, "*") grants nothing."""
    monkeypatch.setattr(tasks, "_ALLOWED", set())
    tasks.allow_task_code("*")
    tasks.allow_task_code("Antt-v5")
    with pytest.raises(TaskError, match="nobody consented to"):
        tasks.get_task(f"{user_envs}:pendulum")
    tasks.allow_task_code(f"{user_envs}:pendulum")
    assert tasks.get_task(f"{user_envs}:pendulum").factory is not None


def test_issue_command_chain_on_swimmer(tmp_path: Path) -> None:
    """The issue's own check, verbatim: collect (no zoo: random behaviour by default), train, evaluate
    with the ``random`` policy, each through the CLI."""
    import os
    import subprocess
    import sys

    wm = str(Path(sys.executable).with_name("wm-eval"))
    env = {**os.environ, "MUJOCO_GL": "egl"}
    for args, says in ((["collect", "task=Swimmer-v5", "episodes=4", "max_steps=100", "out=d"], "wrote 4 episodes"),
                       (["train", "dataset=d", "epochs=2", "out=m"], "trained Swimmer-v5 model"),
                       (["evaluate", "task=Swimmer-v5", "model=m", "policies=[random]", "episodes=2", "horizon=50"],
                        "report:")):
        run = subprocess.run([wm, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and says in run.stdout, run.stderr[-2000:]
