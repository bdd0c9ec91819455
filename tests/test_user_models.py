"""Users' own world models: ``model=module:factory`` and checkpoints naming a user's class (only with
``allow_code``), with one-line errors for everything that can go wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wm_eval.errors import CheckpointError, SpaceMismatchError
from wm_eval.models import load_checkpoint, resolve_model, save_checkpoint
from wm_eval.tasks import spaces

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "from custom_model import LinearModel\n\n"
        "def good(task, observation_space, action_space):\n"
        "    return LinearModel(task=task, obs_dim=observation_space.shape[0], act_dim=action_space.shape[0])\n\n"
        "def not_a_model():\n    return 3\n\n"
        "def other_task():\n    return LinearModel(task='HalfCheetah-v5', obs_dim=17, act_dim=6)\n\n"
        "def wrong_size(task):\n    return LinearModel(task=task, obs_dim=5, act_dim=3)\n\n"
        "def needs_more(hidden):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return "my_models"


def test_factory_models_and_their_errors(user_module: str) -> None:
    space = spaces("Hopper-v5")
    model = resolve_model(f"{user_module}:good", task="Hopper-v5", **space)
    assert type(model).__name__ == "LinearModel" and model.obs_dim == 11 and not model.training
    for ref, error, match in ((f"{user_module}:not_a_model", CheckpointError, "returned int, not a"),
                              (f"{user_module}:other_task", CheckpointError, "for HalfCheetah-v5, not Hopper-v5"),
                              (f"{user_module}:wrong_size", SpaceMismatchError, "observation size 5"),
                              (f"{user_module}:missing", CheckpointError, "has no missing"),
                              ("no_such_module_xyz:make", CheckpointError, "cannot import no_such_module_xyz"),
                              (f"{user_module}:needs_more", CheckpointError, "raised TypeError")):
        with pytest.raises(error, match=match):
            resolve_model(ref, task="Hopper-v5", **space)


def test_checkpoint_naming_user_code_needs_allow_code(user_module: str, tmp_path: Path) -> None:
    space = spaces("Hopper-v5")
    model = resolve_model(f"{user_module}:good", task="Hopper-v5", **space)
    folder = save_checkpoint(model, tmp_path / "ckpt", data_fingerprint="x", metrics={}, config={}, seed=0, **space)
    with pytest.raises(CheckpointError, match="pass allow_code=true"):
        load_checkpoint(folder)
    loaded = load_checkpoint(folder, allow_code=True)
    assert type(loaded).__name__ == "LinearModel"
    spec = (folder / "spec.json").read_text().replace("custom_model:LinearModel", "gone_module_xyz:LinearModel")
    (folder / "spec.json").write_text(spec)
    with pytest.raises(CheckpointError, match="cannot import gone_module_xyz"):
        load_checkpoint(folder, allow_code=True)


def test_cli_evaluates_a_user_model(tmp_path: Path) -> None:
    """README: ``wm-eval evaluate task=Hopper-v5 model=custom_model:make_model`` with examples/ on PYTHONPATH."""
    run = subprocess.run([str(Path(sys.executable).parent / "wm-eval"), "evaluate", "task=Hopper-v5",
                          "model=custom_model:make_model", "episodes=2", "horizon=20", "workers=1", "bootstrap=50",
                          f"out={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(EXAMPLES), "MUJOCO_GL": "egl"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "report:" in run.stdout and '"model": "custom_model:make_model"' in (tmp_path / "run" / "report.json").read_text()


def test_cli_points_at_the_line_of_user_code_that_raised(tmp_path: Path) -> None:
    """A user's factory that raises is one line and exit 2, naming the file and line it raised at; with
    ``WM_EVAL_TRACEBACK=1`` the user code's traceback comes first."""
    (tmp_path / "broken_models.py").write_text("def make(task):\n    raise ValueError('no gain set')\n")
    run = subprocess.run([str(Path(sys.executable).parent / "wm-eval"), "evaluate", "task=Hopper-v5",
                          "model=broken_models:make", "episodes=2", "horizon=20", f"out={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "MUJOCO_GL": "egl"})
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    (line,) = run.stderr.strip().splitlines()
    assert "raised ValueError: no gain set" in line
    assert line.endswith(f"(raised at {tmp_path / 'broken_models.py'}:2 in make; WM_EVAL_TRACEBACK=1 shows the "
                         "traceback)")
    run = subprocess.run(run.args, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "MUJOCO_GL": "egl", "WM_EVAL_TRACEBACK": "1"})
    assert run.returncode == 2 and run.stderr.startswith("Traceback"), run.stderr[-2000:]
    assert f'File "{tmp_path / "broken_models.py"}", line 2, in make' in run.stderr
    assert run.stderr.strip().splitlines()[-1] == line  # the same one-line error, after the traceback
