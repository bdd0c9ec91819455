"""Datasets: Minari layout, round trips, kill safety, determinism and exact state replay (real MuJoCo, real files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest

from wm_eval.data import Dataset, DatasetWriter, collect, load_dataset, write_dataset
from wm_eval.errors import ConfigError, DatasetError, SpaceMismatchError, TaskError
from wm_eval.tasks import make_env, set_state
from wm_eval.types import Trajectory

REPO = Path(__file__).resolve().parents[1]
OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
ARRAYS = ("observations", "actions", "rewards", "terminations", "truncations", "sim_states")


def _synthetic(seed: int, steps: int) -> Trajectory:
    rng = np.random.default_rng(seed)
    terminations = np.zeros(steps, bool)
    terminations[-1] = seed % 2 == 0
    return Trajectory(
        observations=rng.normal(size=(steps + 1, 4)), actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
        rewards=rng.normal(size=steps), terminations=terminations, truncations=~terminations & (np.arange(steps) == steps - 1),
        sim_states=rng.normal(size=(steps + 1, 7)), seed=1000 + seed, infos={"policy": f"pi_{seed}", "noise_scale": 0.1 * seed},
    )


def _assert_same_episodes(a: list[Trajectory], b: list[Trajectory]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in ARRAYS:
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
        assert (x.seed, x.infos) == (y.seed, y.infos)


@pytest.fixture
def episodes() -> list[Trajectory]:
    return [_synthetic(i, steps) for i, steps in enumerate((5, 1, 9))]


def test_write_read_round_trip(tmp_path: Path, episodes: list[Trajectory]) -> None:
    path = write_dataset(tmp_path / "ds", episodes, task="Hopper-v5", observation_space=OBS, action_space=ACT,
                         config={"episodes": 3, "note": "round trip"}, seed=7)
    ds = load_dataset(path)
    assert isinstance(ds, Dataset) and ds.task == "Hopper-v5" and len(ds) == 3 and ds.total_steps == 15
    assert ds.observation_space == OBS and ds.action_space == ACT
    _assert_same_episodes(ds.episodes, episodes)
    assert ds.episodes[0].actions.dtype == np.float32 and ds.episodes[0].terminations.dtype == bool
    info = ds.metadata["wm_eval"]
    assert (info["task"], info["seed"], info["config"]["note"]) == ("Hopper-v5", 7, "round trip")
    assert {"numpy", "mujoco", "gymnasium", "h5py", "minari"} <= set(info["versions"])
    assert all(e.sim_states is None for e in load_dataset(path, sim_states=False).episodes)


def test_minari_reads_our_layout(tmp_path: Path, episodes: list[Trajectory]) -> None:
    path = write_dataset(tmp_path / "ds", episodes, task="Hopper-v5", observation_space=OBS, action_space=ACT)
    assert sorted(p.name for p in (path / "episodes").iterdir()) == [f"episode_{i:06d}.h5" for i in range(3)]
    data = minari.MinariDataset(path)
    assert (data.total_episodes, data.total_steps) == (3, 15)
    assert data.observation_space == OBS and data.action_space == ACT
    assert data.spec.dataset_id == "wm_eval/hopper-v5/ds-v0" and data.env_spec.id == "Hopper-v5"
    for got, want in zip(data.iterate_episodes(), episodes):
        assert got.observations.shape == (len(want) + 1, 4) and len(got) == len(want)
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            assert np.array_equal(getattr(got, name), getattr(want, name))
        assert np.array_equal(got.infos["sim_state"], want.sim_states)
        assert set(got.infos["policy"]) == {want.infos["policy"].encode()}
    assert [m["seed"] for m in data.storage.get_episode_metadata(range(3))] == [1000, 1001, 1002]


def test_writer_commits_each_episode_and_checks_shapes(tmp_path: Path, episodes: list[Trajectory]) -> None:
    with DatasetWriter(tmp_path / "ds", task="Hopper-v5", observation_space=OBS, action_space=ACT) as writer:
        assert load_dataset(tmp_path / "ds").episodes == []
        writer.add(episodes[0])
        assert len(load_dataset(tmp_path / "ds")) == 1 and minari.MinariDataset(tmp_path / "ds").total_episodes == 1
        bad = Trajectory(np.zeros((2, 3)), np.zeros((1, 2)), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool))
        with pytest.raises(SpaceMismatchError, match="observations"):
            writer.add(bad)
    assert len(load_dataset(tmp_path / "ds")) == 1


def test_collect_is_deterministic_and_truncates_at_max_steps(tmp_path: Path) -> None:
    kwargs = dict(task="HalfCheetah-v5", episodes=4, max_steps=20, behaviour=["random"], progress=False, config={})
    a = load_dataset(collect(seed=3, out=tmp_path / "a", batch_size=3, **kwargs))
    b = load_dataset(collect(seed=3, out=tmp_path / "b", batch_size=1, **kwargs))
    c = load_dataset(collect(seed=4, out=tmp_path / "c", **kwargs))
    _assert_same_episodes(a.episodes, b.episodes)
    assert not np.array_equal(a.episodes[0].observations, c.episodes[0].observations)
    assert len({e.seed for e in a.episodes}) == 4
    for e in a.episodes:
        assert len(e) == 20 and not e.terminations.any() and e.truncations.tolist() == [False] * 19 + [True]
        assert e.infos == {"policy": "random", "noise_scale": 0.0}
        assert np.all(np.abs(e.actions) <= 1.0) and e.sim_states.shape == (21, 91)


def test_collected_policy_episodes_do_not_depend_on_the_batch(tmp_path: Path) -> None:
    """Policies act in fixed blocks, so the first episodes of a larger, differently batched collection
    are the same episodes (with the whole lockstep batch per call they differ at step one here)."""
    kwargs = dict(task="HalfCheetah-v5", max_steps=100, seed=2, noise_scales=[0.0, 0.1], progress=False, config={},
                  behaviour=["zoo:HalfCheetah-v5#sac_s11_0250k", "zoo:HalfCheetah-v5#ppo_0600k"])
    big = load_dataset(collect(episodes=12, batch_size=6, out=tmp_path / "big", **kwargs))
    small = load_dataset(collect(episodes=5, batch_size=1, out=tmp_path / "small", **kwargs))
    _assert_same_episodes(big.episodes[:5], small.episodes)
    assert [e.infos["policy"] for e in small.episodes] == ["sac_s11_0250k"] * 2 + ["ppo_0600k"] * 2 + ["sac_s11_0250k"]


def test_recorded_state_replays_exactly(tmp_path: Path) -> None:
    ds = load_dataset(collect(task="Hopper-v5", episodes=3, max_steps=30, seed=0, behaviour=["random"],
                              out=tmp_path / "ds", config={}, progress=False))
    episode = max(ds.episodes, key=len)
    env = make_env("Hopper-v5")
    env.reset(seed=0)
    start = len(episode) // 3
    assert np.array_equal(set_state(env, episode.sim_states[start]), episode.observations[start])
    for t in range(start, len(episode)):
        obs, reward, terminated, _, _ = env.step(episode.actions[t])
        assert np.array_equal(obs, episode.observations[t + 1]) and reward == episode.rewards[t]
        assert terminated == episode.terminations[t]
    env.close()


def test_killed_collection_leaves_every_finished_episode_readable(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    code = (f"from wm_eval.data import collect; collect(task='HalfCheetah-v5', episodes=5000, max_steps=40, seed=5, "
            f"behaviour=['random'], out={str(out)!r}, config={{}}, progress=False, batch_size=2)")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            meta = out / "metadata.json"
            if meta.exists() and json.loads(meta.read_text())["total_episodes"] >= 6:
                break
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ds = load_dataset(out)
    assert 6 <= len(ds) < 5000
    data = minari.MinariDataset(out)
    assert data.total_episodes == len(ds) and data.total_steps == ds.total_steps
    for got, want in zip(data.iterate_episodes(), ds.episodes):
        assert np.array_equal(got.observations, want.observations) and np.array_equal(got.actions, want.actions)
    fresh = load_dataset(collect(task="HalfCheetah-v5", episodes=len(ds), max_steps=40, seed=5, behaviour=["random"],
                                 out=tmp_path / "fresh", config={}, progress=False, batch_size=2))
    _assert_same_episodes(ds.episodes, fresh.episodes)


def test_second_run_refuses_unless_overwrite(tmp_path: Path) -> None:
    kwargs = dict(task="Hopper-v5", episodes=1, max_steps=5, behaviour=["random"], out=tmp_path / "ds",
                  config={}, progress=False)
    collect(seed=0, **kwargs)
    with pytest.raises(DatasetError, match=r"exists; pass overwrite=true to replace it") as info:
        collect(seed=1, **kwargs)
    assert "\n" not in str(info.value)
    assert load_dataset(tmp_path / "ds").metadata["wm_eval"]["seed"] == 0
    collect(seed=1, overwrite=True, **kwargs)
    assert load_dataset(tmp_path / "ds").metadata["wm_eval"]["seed"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not a dataset"):
        collect(seed=0, **{**kwargs, "out": other, "overwrite": True})
    assert (other / "keep.txt").read_text() == "mine"


def test_collect_rejects_bad_arguments(tmp_path: Path) -> None:
    kwargs = dict(task="Hopper-v5", episodes=2, max_steps=5, seed=0, behaviour=["random"], out=tmp_path / "x",
                  config={}, progress=False)
    with pytest.raises(TaskError, match="did you mean 'Hopper-v5'"):
        collect(**{**kwargs, "task": "Hoper-v5"})
    with pytest.raises(ConfigError, match="episodes must be a positive integer"):
        collect(**{**kwargs, "episodes": 0})
    with pytest.raises(ConfigError, match="max_steps must be a positive integer"):
        collect(**{**kwargs, "max_steps": 0})
    with pytest.raises(ConfigError, match="policy_block must be a positive integer or null"):
        collect(**{**kwargs, "policy_block": 0})
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match="cannot write a dataset"):
        collect(**{**kwargs, "out": tmp_path / "file" / "ds"})
    assert not (tmp_path / "x").exists()


def test_load_dataset_errors_are_one_line(tmp_path: Path, episodes: list[Trajectory]) -> None:
    (tmp_path / "empty").mkdir()
    path = write_dataset(tmp_path / "ds", episodes, task="Hopper-v5", observation_space=OBS, action_space=ACT)
    (path / "episodes" / "episode_000001.h5").unlink()
    broken = write_dataset(tmp_path / "broken", episodes, task="Hopper-v5", observation_space=OBS, action_space=ACT)
    (broken / "main_data.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    for target, message in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "is not a dataset"),
                            (path, "is corrupt"), (broken, "is corrupt")):
        with pytest.raises(DatasetError, match=message) as info:
            load_dataset(target)
        assert "\n" not in str(info.value)


def test_per_episode_infos_are_marked(tmp_path: Path, episodes: list[Trajectory]) -> None:
    path = write_dataset(tmp_path / "ds", episodes, task="Hopper-v5", observation_space=OBS, action_space=ACT)
    with h5py.File(path / "main_data.hdf5", "r") as f:
        link = f.get("episode_2", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "episodes/episode_000002.h5"
        policy = f["episode_2/infos/policy"]
        assert policy.shape == (10,) and policy.attrs["per_episode"]


def test_collect_mixes_policies_and_noise_round_robin(tmp_path: Path) -> None:
    from wm_eval.policy import load_policies

    manifest = f"{REPO}/policies/HalfCheetah-v5/manifest.json#ppo_0600k"
    ds = load_dataset(collect(task="HalfCheetah-v5", episodes=4, max_steps=20, seed=0, behaviour=["random", manifest],
                              noise_scales=[0.0, 0.3], out=tmp_path / "ds", config={}, progress=False))
    assert [(e.infos["policy"], e.infos["noise_scale"]) for e in ds.episodes] == [
        ("random", 0.0), ("ppo_0600k", 0.0), ("ppo_0600k", 0.3), ("random", 0.0)]
    policy = load_policies(manifest, observation_space=ds.observation_space, action_space=ds.action_space)[0]
    clean, noisy = ds.episodes[1], ds.episodes[2]
    assert np.allclose(clean.actions, policy.act(clean.observations[:-1]), atol=1e-6)
    residual = noisy.actions - policy.act(noisy.observations[:-1])
    inside = np.abs(noisy.actions) < 1.0  # clipped entries carry less than the full noise
    assert 0.2 < residual[inside].std() < 0.4


def test_collect_without_a_zoo_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Pusher-v5 has no policy zoo"):
        collect(task="Pusher-v5", episodes=1, max_steps=5, seed=0, behaviour=["random", "zoo"],
                out=tmp_path / "ds", config={}, progress=False)
    assert not (tmp_path / "ds").exists()
