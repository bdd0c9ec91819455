"""A non-editable install carries its configs, policy zoo and embedded models as package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_runs_from_any_directory(tmp_path: Path) -> None:
    site, source = tmp_path / "site", tmp_path / "source"
    # Build from a copy, so the build leaves nothing in the checkout.
    skip = shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info", "__pycache__")
    shutil.copytree(REPO, source, ignore=lambda folder, names: set(skip(folder, names))
                    | ({"data"} if Path(folder).name == "datasets" else set()))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(source)], check=True,
                   capture_output=True)
    code = f"""
import importlib.resources as resources
import gymnasium as gym
import wm_eval
assert wm_eval.__file__.startswith({str(site)!r}), wm_eval.__file__
from wm_eval.models.checkpoint import EMBEDDED_TASKS, resolve_model
from wm_eval.policy import zoo_manifest
for task in EMBEDDED_TASKS:
    assert resolve_model(None, task=task).task == task
    assert zoo_manifest(task).is_file()
assert (resources.files("wm_eval.configs") / "train" / "Hopper-v5.yaml").is_file()
env = gym.make("WorldModel-v0")
env.reset(seed=0)
env.step(env.action_space.sample())
from gymnasium.utils.env_checker import check_env
from wm_eval.envs import ENV_IDS
for env_id in ENV_IDS:  # our own robot tasks: registered on import, MJCF scenes shipped as package data
    own = gym.make(env_id)
    assert own.unwrapped.fullpath.startswith({str(site)!r}), own.unwrapped.fullpath
    check_env(own.unwrapped, skip_render_check=True)
"""
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
