"""Policies: SB3 zips rebuilt without unpickling, zoo manifests, scripted, random and in-memory policies."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from wm_eval import zoo_manifests
from wm_eval.errors import PolicyError, SpaceMismatchError
from wm_eval.policy import (ConstantPolicy, LinearPolicy, Policy, load_policies, zoo_manifest,
                            zoo_tasks)
from wm_eval.sb3_loading import Opaque, PickledGlobal, read_pickle_literal

REPO = Path(__file__).resolve().parent.parent
PENDULUM = gym.make("Pendulum-v1")
SPACES = {"observation_space": PENDULUM.observation_space, "action_space": PENDULUM.action_space}
OFF_POLICY = {"buffer_size": 500, "learning_starts": 32, "batch_size": 32}
MAKERS = {
    "PPO": lambda env: PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu"),
    "A2C": lambda env: A2C("MlpPolicy", env, n_steps=8, seed=0, device="cpu"),
    "SAC": lambda env: SAC("MlpPolicy", env, seed=0, device="cpu", **OFF_POLICY),
    "TD3": lambda env: TD3("MlpPolicy", env, seed=0, device="cpu", **OFF_POLICY),
    "DDPG": lambda env: DDPG("MlpPolicy", env, seed=0, device="cpu", **OFF_POLICY),
}


def _obs(space: spaces.Box, n: int = 16, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """One briefly trained Pendulum model per algorithm: {algorithm: (zip path, model)}."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("zips")
    models = {}
    for algo, make in MAKERS.items():
        model = make(gym.make("Pendulum-v1"))
        model.learn(64)
        model.save(out / f"{algo.lower()}_pendulum.zip")
        models[algo] = (out / f"{algo.lower()}_pendulum.zip", model)
    return models


@pytest.mark.parametrize("algo", list(MAKERS))
def test_sb3_zip_matches_sb3_predict(zips, algo):
    path, model = zips[algo]
    (policy,) = load_policies(path, **SPACES)
    obs = _obs(PENDULUM.observation_space)
    expected, _ = model.predict(obs, deterministic=True)
    actions = policy.act(obs)
    assert policy.algorithm == algo  # detected from the file: every zip here has the same kind of name
    assert policy.name == f"{algo.lower()}_pendulum" and policy.source == str(path.resolve())
    assert actions.dtype == np.float32 and actions.shape == (16, 1)
    np.testing.assert_allclose(actions, expected, atol=1e-6)
    assert isinstance(policy, Policy)


def test_loading_never_unpickles(zips, monkeypatch):
    class Unpickled(Exception):
        pass

    def refuse(*args, **kwargs):
        raise Unpickled("unpickling attempted")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "loads", refuse)
        monkeypatch.setattr(module, "load", refuse)
    path, model = zips["SAC"]
    with pytest.raises(Unpickled):  # the control: SB3's own loader does unpickle
        SAC.load(path, device="cpu")
    (policy,) = load_policies(path, **SPACES)
    obs = _obs(PENDULUM.observation_space)
    np.testing.assert_allclose(policy.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-6)


def test_mujoco_sac_with_custom_activation_and_arch(tmp_path):
    from wm_eval.tasks import quiet_mujoco

    quiet_mujoco()
    env = gym.make("HalfCheetah-v5")
    model = SAC("MlpPolicy", env, seed=1, device="cpu", policy_kwargs={
        "net_arch": {"pi": [64, 64], "qf": [32]}, "activation_fn": torch.nn.ELU}, **OFF_POLICY)
    model.learn(64)
    model.save(tmp_path / "cheetah.zip")
    (policy,) = load_policies(tmp_path / "cheetah.zip", observation_space=env.observation_space,
                              action_space=env.action_space)
    obs = _obs(env.observation_space)
    assert policy.algorithm == "SAC"
    assert any(isinstance(m, torch.nn.ELU) for m in policy.actor.policy.actor.latent_pi)
    np.testing.assert_allclose(policy.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-6)


def test_ppo_with_relu_and_small_net(tmp_path):
    model = PPO("MlpPolicy", PENDULUM, seed=2, device="cpu",
                policy_kwargs={"activation_fn": torch.nn.ReLU, "net_arch": [32, 32]})
    model.save(tmp_path / "relu.zip")
    (policy,) = load_policies(tmp_path / "relu.zip", **SPACES)
    net = policy.actor.policy.mlp_extractor.policy_net
    assert [type(m) for m in net] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear, torch.nn.ReLU]
    assert net[0].out_features == 32
    obs = _obs(PENDULUM.observation_space)
    np.testing.assert_allclose(policy.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-6)


@pytest.mark.skipif(not list((REPO / "policies" / "HalfCheetah-v5").glob("ppo_*.zip")), reason="no zoo zips")
def test_real_zoo_zip_matches_sb3():
    from wm_eval.tasks import quiet_mujoco

    quiet_mujoco()
    env = gym.make("HalfCheetah-v5")
    path = sorted((REPO / "policies" / "HalfCheetah-v5").glob("ppo_*.zip"))[-1]
    (policy,) = load_policies(path, observation_space=env.observation_space, action_space=env.action_space)
    obs = _obs(env.observation_space, n=32)
    expected, _ = PPO.load(path, device="cpu").predict(obs, deterministic=True)
    assert policy.algorithm == "PPO"
    np.testing.assert_allclose(policy.act(obs), expected, atol=1e-6)


class TinyExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: spaces.Box) -> None:
        super().__init__(observation_space, features_dim=4)
        self.linear = torch.nn.Linear(3, 4)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs)


class Swish(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SAC("MlpPolicy", PENDULUM, use_sde=True, device="cpu", buffer_size=100), "gSDE"),
    (lambda: PPO("MlpPolicy", PENDULUM, device="cpu", policy_kwargs={"features_extractor_class": TinyExtractor}),
     "custom features extractor"),
    (lambda: PPO("MlpPolicy", PENDULUM, device="cpu", policy_kwargs={"activation_fn": Swish}), "activation_fn"),
], ids=["gsde", "extractor", "activation"])
def test_unrebuildable_policies_are_refused(tmp_path, make, message):
    make().save(tmp_path / "odd.zip")
    with pytest.raises(PolicyError, match=message):
        load_policies(tmp_path / "odd.zip", **SPACES)


def test_space_mismatch_names_both_shapes(zips):
    cheetah = {"observation_space": spaces.Box(-np.inf, np.inf, (17,)), "action_space": spaces.Box(-1, 1, (6,))}
    with pytest.raises(SpaceMismatchError, match=r"ppo_pendulum.*\(3,\).*\(1,\).*\(17,\).*\(6,\)"):
        load_policies(zips["PPO"][0], **cheetah)
    narrow = {**SPACES, "action_space": spaces.Box(-1, 1, (1,), np.float32)}
    with pytest.raises(SpaceMismatchError, match="action low bound"):
        load_policies(zips["SAC"][0], **narrow)


def test_broken_files_give_one_line_errors(zips, tmp_path):
    data = zips["PPO"][0].read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])  # still opens: policy.pth is itself a zip
    flipped = bytearray(data)
    flipped[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    (tmp_path / "flipped.zip").write_bytes(bytes(flipped))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with zipfile.ZipFile(zips["PPO"][0]) as src, zipfile.ZipFile(tmp_path / "pruned.zip", "w") as dst:
        for item in src.namelist():
            if item != "policy.pth":
                dst.writestr(item, src.read(item))
        state = torch.load(io.BytesIO(src.read("policy.pth")), weights_only=True)
        del state["action_net.bias"]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        dst.writestr("policy.pth", buffer.getvalue())
    cases = {"cut.zip": "truncated or corrupt", "flipped.zip": "truncated or corrupt", "missing.zip": "does not exist",
             "other.zip": "not a Stable-Baselines3 model zip", "pruned.zip": "do not fit.*action_net.bias"}
    for name, message in cases.items():
        with pytest.raises(PolicyError, match=message) as info:
            load_policies(tmp_path / name, **SPACES)
        assert name.removesuffix(".zip") in str(info.value) and "\n" not in str(info.value)


def test_zip_is_read_once_so_swapping_the_file_midway_changes_nothing(zips, tmp_path, monkeypatch):
    """The checks and the weights come from one read of the file: no time-of-check/time-of-use gap."""
    from wm_eval import sb3_loading

    path = tmp_path / "swapped.zip"
    path.write_bytes(zips["PPO"][0].read_bytes())
    other = PPO("MlpPolicy", PENDULUM, seed=99, device="cpu")  # same architecture, other weights
    detect = sb3_loading._detect

    def detect_then_swap(raw, where):
        other.save(path)  # the file changes after it was checked, before the weights are read
        return detect(raw, where)

    monkeypatch.setattr(sb3_loading, "_detect", detect_then_swap)
    (policy,) = load_policies(path, **SPACES)
    obs = _obs(PENDULUM.observation_space)
    np.testing.assert_allclose(policy.act(obs), zips["PPO"][1].predict(obs, deterministic=True)[0], atol=1e-6)
    assert not np.allclose(policy.act(obs), other.predict(obs, deterministic=True)[0], atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # would run if unpickled; weights_only refuses any call


def test_only_policy_pth_is_deserialized_with_weights_only(zips, tmp_path, monkeypatch):
    from wm_eval.sb3_loading import IgnoredEntriesWarning

    with zipfile.ZipFile(zips["SAC"][0]) as src, zipfile.ZipFile(tmp_path / "extra.zip", "w") as dst:
        for item in src.namelist():
            dst.writestr(item, src.read(item))
        dst.writestr("evil.pth", pickle.dumps(_Evil()))
    calls = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.warns(IgnoredEntriesWarning, match=r"ignored actor\.optimizer\.pth.*evil\.pth"):
        (policy,) = load_policies(tmp_path / "extra.zip", **SPACES)
    assert calls == [True]  # policy.pth only, with weights_only=True passed explicitly
    obs = _obs(PENDULUM.observation_space)
    np.testing.assert_allclose(policy.act(obs), zips["SAC"][1].predict(obs, deterministic=True)[0], atol=1e-6)


def test_in_memory_objects(zips):
    obs = _obs(PENDULUM.observation_space)
    model = zips["TD3"][1]
    (sb3_object,) = load_policies(model, **SPACES)
    assert sb3_object.source is None and sb3_object.name == "TD3"
    np.testing.assert_allclose(sb3_object.act(obs), model.predict(obs, deterministic=True)[0], atol=1e-6)
    (function,) = load_policies(lambda o: o[:, 1:2] * 10.0, **SPACES)
    np.testing.assert_allclose(function.act(obs), np.clip(obs[:, 1:2] * 10.0, -2, 2), rtol=1e-6)
    assert load_policies(function, **SPACES) == [function]


def test_scripted_policies_and_predict():
    obs = _obs(PENDULUM.observation_space)
    (constant,) = load_policies(ConstantPolicy([5.0]), **SPACES)
    np.testing.assert_array_equal(constant.act(obs), np.full((16, 1), 2.0, np.float32))  # clipped to the bounds
    W, b = np.array([[1.0], [-2.0], [0.5]]), np.array([0.1])
    (linear,) = load_policies(LinearPolicy(W, b, name="lin"), **SPACES)
    assert linear.name == "lin" and isinstance(linear, Policy)
    assert not isinstance(LinearPolicy(W, b), Policy)  # no action_space or source until loaded for a task
    np.testing.assert_allclose(linear.act(obs), np.clip(obs @ W + b, -2, 2), rtol=1e-6)
    single, state = linear.predict(obs[0])
    assert single.shape == (1,) and state is None
    np.testing.assert_allclose(single, linear.act(obs[:1])[0])


def _write_manifest(folder: Path, zips, task: str = "Pendulum-v1", algorithm_of_ppo: str = "PPO") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, algo in (("ppo_a", algorithm_of_ppo), ("a2c_a", "A2C")):
        real = "PPO" if name.startswith("ppo") else "A2C"
        (folder / f"{name}.zip").write_bytes(zips[real][0].read_bytes())
        entries.append({"name": name, "file": f"{name}.zip", "algorithm": algo, "training_steps": 64,
                        "perturbation": 0.0, "true_return": -1000.0 - len(entries)})
    path = folder / "manifest.json"
    path.write_text(json.dumps({"format": "wm_eval.zoo/1", "task": task, "policies": entries}))
    return path


def test_manifest_loads_all_and_selects_one(zips, tmp_path):
    manifest = _write_manifest(tmp_path / "zoo", zips)
    policies = load_policies(manifest, task="Pendulum-v1", **SPACES)
    assert [(p.name, p.algorithm) for p in policies] == [("ppo_a", "PPO"), ("a2c_a", "A2C")]
    assert policies[1].source == f"{manifest.resolve()}#a2c_a" and policies[1].metadata["true_return"] == -1001.0
    (a2c,) = load_policies(policies[1].source, **SPACES)
    obs = _obs(PENDULUM.observation_space)
    np.testing.assert_array_equal(a2c.act(obs), zips["A2C"][1].predict(obs, deterministic=True)[0])
    assert [p.name for p in load_policies(tmp_path / "zoo", **SPACES)] == ["ppo_a", "a2c_a"]  # the folder works too
    with pytest.raises(PolicyError, match="no policy 'a2c'; did you mean 'a2c_a'"):
        load_policies(f"{manifest}#a2c", **SPACES)
    with pytest.raises(PolicyError, match="is for task 'Pendulum-v1', not 'HalfCheetah-v5'"):
        load_policies(manifest, task="HalfCheetah-v5", **SPACES)


def test_manifest_errors(zips, tmp_path):
    lying = _write_manifest(tmp_path / "lying", zips, algorithm_of_ppo="SAC")
    with pytest.raises(PolicyError, match="says policy 'ppo_a' is SAC, but its file holds a PPO model"):
        load_policies(lying, **SPACES)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other/2", "policies": []}))
    with pytest.raises(PolicyError, match="not a wm_eval zoo manifest"):
        load_policies(tmp_path / "bad.json", **SPACES)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies(tmp_path / "none" / "manifest.json", **SPACES)


def test_zoo_specs(zips, tmp_path, monkeypatch):
    _write_manifest(tmp_path / "Pendulum-v1", zips)
    monkeypatch.setattr(zoo_manifests, "_zoo_root", lambda: tmp_path)
    assert zoo_tasks() == ["Pendulum-v1"]
    assert zoo_manifest("Pendulum-v1") == tmp_path / "Pendulum-v1" / "manifest.json"
    assert len(load_policies("zoo:Pendulum-v1", **SPACES)) == 2
    assert [p.name for p in load_policies("zoo#ppo_a", task="Pendulum-v1", **SPACES)] == ["ppo_a"]
    with pytest.raises(PolicyError, match="needs a task"):
        load_policies("zoo", **SPACES)
    with pytest.raises(PolicyError, match="did you mean 'Pendulum-v1'.*zoo tasks: Pendulum-v1"):
        zoo_manifest("Pendulm-v1")


def test_zoo_root_is_the_shipped_policies_folder():
    assert (zoo_manifests._zoo_root() / "train_zoo.py").is_file()


def test_pickle_reader_reads_literals_and_refuses_nothing_it_runs():
    value = {"net_arch": [32, {"pi": (1, 2.5)}], "act": torch.nn.ReLU, "flag": True, "none": None, "b": b"x",
             "obj": np.float64(1.0)}
    read = read_pickle_literal(cloudpickle.dumps(value))
    assert read["net_arch"] == [32, {"pi": (1, 2.5)}] and read["flag"] is True and read["none"] is None
    assert read["act"] == PickledGlobal("torch.nn.modules.activation", "ReLU") and read["b"] == b"x"
    assert isinstance(read["obj"], Opaque)
    with pytest.raises(ValueError):
        read_pickle_literal(cloudpickle.dumps(value)[:-5])


def test_random_policy_is_a_reproducible_function_of_the_observation() -> None:
    box = spaces.Box(-2.0, np.array([1.0, 3.0]), dtype=np.float32)
    obs_space = spaces.Box(-np.inf, np.inf, (4,), np.float64)
    (policy,) = load_policies("random", observation_space=obs_space, action_space=box)
    assert policy.name == "random" and policy.source == "random"
    obs = np.random.default_rng(0).normal(size=(50, 4))
    actions = policy.act(obs)
    assert actions.shape == (50, 2) and (actions >= box.low).all() and (actions <= box.high).all()
    np.testing.assert_array_equal(policy.act(obs[::-1])[::-1], actions)  # batch order does not matter
    np.testing.assert_array_equal(policy.act(obs[7:8]), actions[7:8])
    assert len(np.unique(actions[:, 0])) == 50 and actions[:, 1].std() > 0.8  # spread over the box
