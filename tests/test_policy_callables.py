"""Policies given as `module:callable` specs: predict objects, per-row functions, stateful callables, validation."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from wm_eval.errors import PolicyError, SpaceMismatchError
from wm_eval.policy import load_policies

PENDULUM = gym.make("Pendulum-v1")
SPACES = {"observation_space": PENDULUM.observation_space, "action_space": PENDULUM.action_space}

CALLABLES = '''
import numpy as np


class Heuristic:
    """SB3-style predict: (action, state); acts only when asked to be deterministic."""

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.tanh(obs[..., :1]) * (2.0 if deterministic else 0.0), state


def make():
    return Heuristic()


HEURISTIC = Heuristic()


def batched(obs):
    return -obs[:, :1]


def one_row(obs):
    assert obs.shape == (3,), "one observation at a time"
    return np.array([obs[2]])


one_row.batched = False


def one_row_undeclared(obs):
    assert obs.shape == (3,), "one observation at a time"
    return np.array([obs[2]])


class Counting:
    """Stateful: counts its calls; answers a batch with one action (the wrong shape) or raises."""

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def act(self, obs):
        self.calls += 1
        if self.fail:
            raise ValueError(f"cannot handle shape {obs.shape}")
        return np.zeros(1)


class CountingRows(Counting):
    batched = False


def nan_policy(obs):
    return np.full((len(obs), 1), np.nan)


def wrong_shape(obs):
    return np.zeros((len(obs), 2))
'''


def _obs(space: spaces.Box, n: int = 16, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


@pytest.fixture(scope="module")
def callables_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("callables")
    (folder / "wm_eval_test_callables.py").write_text(CALLABLES)
    return folder


@pytest.mark.parametrize("attr", ["Heuristic", "make", "HEURISTIC"])
def test_module_predict_objects(callables_dir, monkeypatch, attr):
    monkeypatch.syspath_prepend(str(callables_dir))
    spec = f"wm_eval_test_callables:{attr}"
    (policy,) = load_policies(spec, **SPACES)
    obs = _obs(PENDULUM.observation_space)
    assert policy.name == spec and policy.source == spec and policy.algorithm is None
    np.testing.assert_allclose(policy.act(obs), np.tanh(obs[:, :1]) * 2.0, rtol=1e-6)  # deterministic=True passed
    (again,) = load_policies(policy.source, **SPACES)
    np.testing.assert_array_equal(again.act(obs), policy.act(obs))


def test_module_functions_batched_and_per_row(callables_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(callables_dir))
    obs = _obs(PENDULUM.observation_space)
    (batched,) = load_policies("wm_eval_test_callables:batched", **SPACES)
    np.testing.assert_allclose(batched.act(obs), np.clip(-obs[:, :1], -2, 2))
    (one_row,) = load_policies("wm_eval_test_callables:one_row", **SPACES)  # declares batched = False
    np.testing.assert_allclose(one_row.act(obs), np.clip(obs[:, 2:3], -2, 2))
    assert one_row.actor.batched is False and batched.actor.batched is True


def test_single_observation_policies_must_say_so(callables_dir, monkeypatch):
    """A batch call that raises is a PolicyError with the cause chained and a hint, never a silent retry by rows."""
    monkeypatch.syspath_prepend(str(callables_dir))
    obs = _obs(PENDULUM.observation_space, n=8)
    (undeclared,) = load_policies("wm_eval_test_callables:one_row_undeclared", **SPACES)
    with pytest.raises(PolicyError, match=r"raised AssertionError: one observation at a time.*batched = False") as info:
        undeclared.act(obs)
    assert isinstance(info.value.__cause__, AssertionError) and "\n" not in str(info.value)


def test_stateful_policy_is_called_once_per_step(callables_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(callables_dir))
    import wm_eval_test_callables as module

    obs = _obs(PENDULUM.observation_space, n=8)
    wrong = module.Counting()
    (policy,) = load_policies(wrong, **SPACES)
    with pytest.raises(PolicyError, match=r"returned shape \(1,\) for a batch of 8.*batched = False"):
        policy.act(obs)
    assert wrong.calls == 1  # not called again, row by row, on the same observations
    raising = module.Counting(fail=True)
    (policy,) = load_policies(raising, **SPACES)
    with pytest.raises(PolicyError, match="raised ValueError: cannot handle shape") as info:
        policy.act(obs)
    assert raising.calls == 1 and isinstance(info.value.__cause__, ValueError)
    rows = module.CountingRows()
    (policy,) = load_policies(rows, **SPACES)
    assert policy.act(obs).shape == (8, 1) and rows.calls == 8  # declared: once per observation
    assert policy.act(obs[:1]).shape == (1, 1) and rows.calls == 9


def test_batched_attribute_must_be_a_bool():
    def policy(obs):
        return obs[:, :1]

    policy.batched = "yes"
    with pytest.raises(PolicyError, match="'batched' attribute is 'yes'"):
        load_policies(policy, **SPACES)


def test_bad_callables_raise_policy_error(callables_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(callables_dir))
    obs = _obs(PENDULUM.observation_space, n=8)
    (nan,) = load_policies("wm_eval_test_callables:nan_policy", **SPACES)
    with pytest.raises(PolicyError, match="returned NaN or inf"):
        nan.act(obs)
    (wrong,) = load_policies("wm_eval_test_callables:wrong_shape", **SPACES)
    with pytest.raises(PolicyError, match=r"returned shape \(8, 2\) for a batch of 8; expected \(8, 1\)"):
        wrong.act(obs)
    with pytest.raises(PolicyError, match="did you mean 'wm_eval_test_callables:batched'"):
        load_policies("wm_eval_test_callables:batchd", **SPACES)
    with pytest.raises(PolicyError, match="importing 'no_such_module_xyz' failed"):
        load_policies("no_such_module_xyz:policy", **SPACES)
    with pytest.raises(PolicyError, match="is not an existing .zip"):
        load_policies("not/a/policy", **SPACES)
    with pytest.raises(SpaceMismatchError, match="got observations of shape"):
        nan.act(obs[:, :2])
