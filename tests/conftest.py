"""Shared fixtures: a tiny dataset and a tiny trained world model, both real and built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own folder, so nothing lands in the checkout (``runs/``, MuJoCo logs)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module (training tests are faster and deterministic that way)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hopper_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 short Hopper-v5 episodes from the zoo and random behaviour (real MuJoCo)."""
    from wm_eval.data import collect

    out = tmp_path_factory.mktemp("data") / "hopper"
    return collect(task="Hopper-v5", episodes=12, max_steps=60, seed=0, out=out, behaviour=["random", "zoo"],
                   noise_scales=[0.0, 0.3], progress=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, hopper_dataset: Path) -> Path:
    """A small Hopper-v5 ensemble trained for a few epochs, saved as a real checkpoint."""
    import torch

    from wm_eval.data import load_dataset
    from wm_eval.models.checkpoint import save_checkpoint
    from wm_eval.training import EnsembleHParams, data_fingerprint, fit

    ds = load_dataset(hopper_dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hp = EnsembleHParams(ensemble_size=3, elites=2, hidden=32, layers=2, epochs=3, batch_size=64)
        model, metrics = fit(ds.episodes, task=ds.task, hparams=hp, seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("model") / "hopper-tiny"
    save_checkpoint(model, out, observation_space=ds.observation_space, action_space=ds.action_space,
                    data_fingerprint=data_fingerprint(ds.episodes), metrics=metrics, config={}, seed=0)
    return out
