"""Safety of loading and saving: dependency floor, checkpoint spaces and crash-safe replacement,
config input handling, dataset errors that are not bugs in disguise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from wm_eval.config import EvaluateConfig, RegressConfig, ViewConfig, describe, load_config
from wm_eval.data import hdf5, load_dataset, write_dataset
from wm_eval.errors import CheckpointError, ConfigError, DatasetError, SpaceMismatchError
from wm_eval.models import GaussianMLPEnsemble, load_checkpoint, resolve_model, save_checkpoint
from wm_eval.models import checkpoint as checkpoint_module
from wm_eval.models.checkpoint import backup_path
from wm_eval.types import Trajectory

REPO = Path(__file__).resolve().parents[1]
OBS_DIM, ACT_DIM = 3, 2
OBS_SPACE = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
ACT_SPACE = spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


# ---- dependency floor -------------------------------------------------------------------------
def test_torch_floor_excludes_the_weights_only_bypasses():
    """torch < 2.6: CVE-2025-32434 (weights_only RCE); <= 2.9.1: GHSA-63cw-57p8-fm3p."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [r for r in map(Requirement, deps) if r.name == "torch"]
    assert not any(torch_req.specifier.contains(v) for v in ("2.4.0", "2.5.1", "2.6.0", "2.9.1"))
    assert torch_req.specifier.contains("2.10.0")
    assert Version(torch.__version__.split("+")[0]) >= Version("2.10")


# ---- checkpoints: spaces ----------------------------------------------------------------------
def make_model(seed: int = 0) -> GaussianMLPEnsemble:
    generator = torch.Generator().manual_seed(seed)
    model = GaussianMLPEnsemble(task="Toy-v0", obs_dim=OBS_DIM, act_dim=ACT_DIM, ensemble_size=2, hidden=8,
                                layers=1, generator=generator)
    data = torch.randn(50, 2 * OBS_DIM + ACT_DIM + 1, generator=generator)
    obs, action, next_obs, reward = data.split([OBS_DIM, ACT_DIM, OBS_DIM, 1], dim=1)
    model.fit_normalizers(obs, action, next_obs, reward[:, 0])
    return model.eval()


def save(model: GaussianMLPEnsemble, path: str | Path) -> Path:
    return save_checkpoint(model, path, observation_space=OBS_SPACE, action_space=ACT_SPACE, data_fingerprint="x",
                           metrics={}, config={}, seed=0)


def _next_obs(model: GaussianMLPEnsemble) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    obs, action = torch.randn(4, OBS_DIM, generator=generator), torch.rand(4, ACT_DIM, generator=generator)
    return model.predict(obs, action).next_obs


def _edit_spec(path: Path, key: str, **changes) -> None:
    spec = json.loads((path / "spec.json").read_text())
    spec[key].update(changes)
    (path / "spec.json").write_text(json.dumps(spec))


def test_load_compares_stored_and_live_spaces(tmp_path):
    path = save(make_model(), tmp_path / "ckpt")
    live = {"observation_space": OBS_SPACE, "action_space": ACT_SPACE}
    assert load_checkpoint(path, task="Toy-v0", **live).act_dim == ACT_DIM  # the same spaces load
    _edit_spec(path, "action_space", high=[2.0, 2.0])  # trained for wider action bounds than the task has
    pattern = (r"trained with action space Box\(-1\.0, 2\.0, \(2,\), float32\), but the task's action space is "
               r"Box\(-1\.0, 1\.0, \(2,\), float32\)")
    with pytest.raises(SpaceMismatchError, match=pattern):
        load_checkpoint(path, **live)
    with pytest.raises(SpaceMismatchError, match=pattern):
        resolve_model(path, task="Toy-v0", **live)
    load_checkpoint(path)  # no live spaces given: nothing to compare with

    other = save(make_model(), tmp_path / "other")
    wider_obs = spaces.Box(-np.inf, np.inf, (OBS_DIM + 1,), np.float32)
    with pytest.raises(SpaceMismatchError, match=r"observation space Box\(-inf, inf, \(3,\), float32\).*\(4,\)"):
        load_checkpoint(other, observation_space=wider_obs, action_space=ACT_SPACE)

    _edit_spec(other, "action_space", shape=[3], low=[-1.0] * 3, high=[1.0] * 3)  # inconsistent with the weights
    with pytest.raises(CheckpointError, match=r"action shape \[3\] but a model of sizes 3 and 2"):
        load_checkpoint(other)
    _edit_spec(other, "action_space", low=None)
    with pytest.raises(CheckpointError, match="corrupt action_space"):
        load_checkpoint(other)


# ---- checkpoints: replacing one --------------------------------------------------------------
class Crash(BaseException):
    """Stands for the process dying at one step of the swap."""


@pytest.mark.parametrize("step", ["old_to_backup", "new_into_place", "delete_backup"])
def test_failed_replacement_leaves_a_complete_checkpoint(tmp_path, monkeypatch, step):
    path = save(make_model(seed=0), tmp_path / "ckpt")
    old, new = _next_obs(make_model(seed=0)), _next_obs(make_model(seed=1))
    real_replace, real_rmtree = os.replace, shutil.rmtree
    crashed = []

    def crash_once(at: str) -> None:
        if step == at and not crashed:
            crashed.append(at)
            raise Crash(at)

    def replace(src, dst):
        if Path(src) == path:
            crash_once("old_to_backup")
        if Path(dst) == path and Path(src) != backup_path(path):
            crash_once("new_into_place")
        real_replace(src, dst)

    def rmtree(folder, *args, **kwargs):
        if Path(folder) == backup_path(path):
            crash_once("delete_backup")
        real_rmtree(folder, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", rmtree)
    with pytest.raises(Crash):
        save(make_model(seed=1), path)
    monkeypatch.undo()
    expected = new if step == "delete_backup" else old  # the swap completed only in the last case
    torch.testing.assert_close(_next_obs(load_checkpoint(path)), expected)
    save(make_model(seed=2), path)  # the next save works and tidies up
    torch.testing.assert_close(_next_obs(load_checkpoint(path)), _next_obs(make_model(seed=2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


KILL_BETWEEN_RENAMES = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_safety import make_model, save
path = sys.argv[1]
save(make_model(seed=0), path)
real_replace = os.replace
def replace(src, dst):
    if os.fspath(dst) == path:
        os._exit(3)  # killed: the old checkpoint is at the backup, the new one not yet in place
    real_replace(src, dst)
os.replace = replace
save(make_model(seed=1), path)
"""


def test_a_kill_between_the_renames_is_explained_on_load(tmp_path):
    path = tmp_path / "ckpt"
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert not path.exists() and backup_path(path).is_dir()
    message = rf"no checkpoint directory at '{path}', but '{backup_path(path)}' holds the checkpoint .* interrupted"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=message):
        resolve_model(str(path), task=None)
    os.replace(backup_path(path), path)  # what the message says to do
    torch.testing.assert_close(_next_obs(load_checkpoint(path)), _next_obs(make_model(seed=0)))


# ---- configs --------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "key", "value", "expected"), [
    ("train", "dataset", "datasets/data/hopper", ["datasets/data/hopper"]),
    ("evaluate", "policies", "a.zip", ["a.zip"]),
    ("collect", "behaviour", "zoo", ["zoo"]),
    ("collect", "noise_scales", "0.2", [0.2]),
    ("view", "episodes", "3", [3]),
])
def test_a_list_key_takes_a_single_value(tmp_path, command, key, value, expected):
    assert getattr(load_config(command, overrides=[f"{key}={value}", "seed=1" if command != "view" else "web=true"]),
                   key) == expected
    file = tmp_path / "one.yaml"
    file.write_text(f"{key}: {value}\n")
    assert getattr(load_config(command, files=[str(file)]), key) == expected
    assert getattr(load_config(command, overrides=[f"{key}=[{value},{value}]"]), key) == expected * 2


def test_the_train_command_line_of_the_bug_report():
    cfg = load_config("train", overrides=["dataset=datasets/data/hopper", "out=runs/m"])
    assert (cfg.dataset, cfg.out) == (["datasets/data/hopper"], "runs/m")


def test_new_keys_and_their_help():
    evaluate = EvaluateConfig()
    assert (evaluate.chunk, evaluate.resume, evaluate.trajectories) == (10, False, "auto")
    assert RegressConfig().allow_code is False and ViewConfig().host == "127.0.0.1"
    assert "results do not depend on it" in describe("evaluate") and "0.0.0.0 exposes" in describe("view")
    assert load_config("view", overrides=["host=0.0.0.0"]).host == "0.0.0.0"


def test_config_bugs_are_not_reported_as_bad_input(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    (tmp_path / "broken.yaml").write_text("episodes: [1,\n")
    with pytest.raises(ConfigError, match="could not read the collect config"):
        load_config("collect", files=[str(tmp_path / "broken.yaml")])

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in wm_eval")

    monkeypatch.setattr(OmegaConf, "to_object", bug)
    with pytest.raises(RuntimeError, match="a bug in wm_eval"):
        load_config("collect")


# ---- datasets -------------------------------------------------------------------------------
def _dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    episode = Trajectory(observations=rng.normal(size=(4, 4)), actions=rng.uniform(-1, 1, (3, 2)).astype(np.float32),
                         rewards=rng.normal(size=3), terminations=np.zeros(3, bool),
                         truncations=np.array([False, False, True]), sim_states=None, seed=1)
    return write_dataset(path, [episode], task="Hopper-v5", observation_space=gym.spaces.Box(-np.inf, np.inf, (4,)),
                         action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32))


def test_a_bug_while_reading_a_dataset_is_not_called_corruption(tmp_path, monkeypatch):
    path = _dataset(tmp_path / "ds")
    assert len(load_dataset(path)) == 1

    def bug(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(hdf5, "_read_episode", bug)
    with pytest.raises(AttributeError):
        load_dataset(path)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: [m], "not a JSON object"),
    (lambda m: {**m, "wm_eval": None, "env_spec": None}, "names no task"),
    (lambda m: {**m, "wm_eval": "odd", "env_spec": "{not json"}, "names no task"),
    (lambda m: {**m, "total_episodes": "1"}, "total_episodes is '1'"),
    (lambda m: {**m, "action_space": 5}, "action_space"),
    (lambda m: {**m, "action_space": json.dumps({"type": "Galaxy"})}, "unknown space type 'Galaxy'"),
])
def test_foreign_metadata_is_a_dataset_error(tmp_path, change, reason):
    path = _dataset(tmp_path / "ds")
    metadata = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps(change(metadata)))
    with pytest.raises(DatasetError, match=f"is corrupt .*{reason}") as info:
        load_dataset(path)
    assert "\n" not in str(info.value)
