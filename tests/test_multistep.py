"""The multi-step model family: windows, its loss, fine-tuning, its own config keys, the CLI end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_eval.cli import main
from wm_eval.data import load_dataset
from wm_eval.errors import ConfigError, DatasetError
from wm_eval.models.checkpoint import load_checkpoint
from wm_eval.models.coverage import build_coverage
from wm_eval.multistep import MultiStepHParams, _member_losses, epoch_windows, fit_multistep, segments
from wm_eval.types import Trajectory

SMALL = dict(ensemble_size=3, elites=2, hidden=32, layers=2, batch_size=64, rollout_steps=3, finetune_epochs=2)


def _episode(steps: int, terminal: bool) -> Trajectory:
    obs = np.arange((steps + 1) * 2, dtype=float).reshape(steps + 1, 2)
    term = np.zeros(steps, dtype=bool)
    term[-1] = terminal
    return Trajectory(obs, np.ones((steps, 1)), np.arange(steps, dtype=float), term, ~term & (np.arange(steps) == steps - 1))


def test_windows_stay_inside_episodes() -> None:
    data = segments([_episode(6, True), _episode(2, False), _episode(4, False)], 3, "cpu")
    assert data["obs"].shape == (4 + 0 + 2, 4, 2) and data["action"].shape == (6, 3, 1)
    # a window's steps are consecutive and the terminal transition is only ever a window's last
    assert torch.equal(data["obs"][:, 1:, 0] - data["obs"][:, :-1, 0], torch.full((6, 3), 2.0))
    assert not data["terminated"][:, :-1].any() and data["terminated"][3, -1]
    # steps from each window's last transition to its episode's fall (inf where the episode does not fall)
    assert data["to_termination"].tolist() == [3.0, 2.0, 1.0, 0.0, float("inf"), float("inf")]
    with pytest.raises(DatasetError, match="no episode has 9 consecutive"):
        segments([_episode(6, True)], 9, "cpu")


def test_fall_weight_draws_windows_near_a_fall_more_often(hopper_dataset: Path) -> None:
    data = segments(load_dataset(hopper_dataset, sim_states=False).episodes, 3, "cpu")
    near = data["to_termination"] <= 5
    assert 0 < int(near.sum()) < len(near) // 4  # the debug data's falls are a small minority of its windows
    uniform = epoch_windows(len(near), 4000, None, torch.Generator().manual_seed(0))
    assert len(set(uniform.tolist())) == len(uniform)  # without weights: distinct windows
    weights = torch.where(near, 20.0, 1.0).double()
    drawn = epoch_windows(len(near), 4000, weights, torch.Generator().manual_seed(0))
    expected = float(weights[near].sum() / weights.sum())  # the share of draws near a fall, in expectation
    assert abs(float(near[drawn].float().mean()) - expected) < 0.05 and expected > 2 * float(near.float().mean())
    assert torch.equal(drawn, epoch_windows(len(near), 4000, weights, torch.Generator().manual_seed(0)))
    for bad in (dict(fall_weight=0.5), dict(fall_weight=float("inf")), dict(fall_window=-1)):
        with pytest.raises(ConfigError, match="fall_weight must be a finite number >= 1"):
            MultiStepHParams(**bad)


def test_one_step_windows_give_the_one_step_loss(tiny_model: Path, hopper_dataset: Path) -> None:
    model = load_checkpoint(tiny_model)
    data = segments(load_dataset(hopper_dataset, sim_states=False).episodes, 1, "cpu")
    with torch.no_grad():
        mine = _member_losses(model, data)
        inputs = model.input_norm.normalize(torch.cat([data["obs"][:, 0], data["action"][:, 0]], dim=-1))
        targets = model.target_norm.normalize(model.targets(data["obs"][:, 0], data["obs"][:, 1], data["reward"][:, 0]))
        theirs = model.member_losses(inputs, targets, data["terminated"][:, 0])
    torch.testing.assert_close(mine, theirs)


def test_fine_tuning_is_deterministic_and_improves_the_k_step_loss(tiny_model: Path, hopper_dataset: Path,
                                                                   one_thread) -> None:
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    init = load_checkpoint(tiny_model)
    hp = MultiStepHParams(**{**SMALL, "finetune_epochs": 4, "finetune_lr": 1e-3})
    a, metrics = fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False)
    b, _ = fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert metrics["rollout_steps"] == 3 and metrics["finetune_epochs_run"] >= 1 and "one_step" in metrics
    assert type(a) is type(init) and a.spec() == init.spec()  # same family contract: same architecture
    val = segments(hp.held_out(episodes, 0)[1], 3, "cpu")
    with torch.no_grad():
        assert float(_member_losses(a, val).mean()) < float(_member_losses(init, val).mean())
    assert not any(torch.equal(x, y) for x, y in zip(a.state_dict().values(), init.state_dict().values())
                   if x.is_floating_point() and x.ndim == 3)  # the weights moved
    with pytest.raises(ConfigError, match="rollout_steps must be at least 2"):
        MultiStepHParams(rollout_steps=1)


def test_fine_tuning_warns_when_its_validation_may_hold_the_starts_training_episodes(
        tiny_model: Path, hopper_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--preset", "debug", f"dataset={hopper_dataset}", "model_type=multistep", "rollout_steps=3",
            "finetune_epochs=1", "threads=1", f"init={tiny_model}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the start held out by the same rule, seed and fraction: no warning
        assert main([*args, f"out={tmp_path / 'same'}"]) == 0
        assert main([*args, f"out={tmp_path / 'fixed'}", "seed=3", "split_seed=0"]) == 0
    for other in (["seed=3"], ["split=permutation"], ["val_fraction=0.2"]):
        with pytest.warns(UserWarning, match=r"init=.* held out \(split, split seed, val_fraction\) = "
                                             r"\('episode_hash', 0, 0.1\), this run"):
            assert main([*args, f"out={tmp_path / other[0].split('=')[0]}", *other]) == 0
    capsys.readouterr()
    metrics = json.loads((tmp_path / "fixed" / "spec.json").read_text())["metrics"]
    assert metrics["split"]["rule"] == "episode_hash" and metrics["split"]["seed"] == 0
    assert metrics["split"]["held_out_episodes"] >= 1
    model = load_checkpoint(tmp_path / "fixed")  # its coverage was probed on its held-out episodes
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    held = MultiStepHParams(split_seed=0).held_out(episodes, 3)[1]
    assert len(held) == metrics["split"]["held_out_episodes"]
    probed = build_coverage(model, episodes, seed=3, probe=held)
    assert (model.coverage.scale, model.coverage.uncertainty_ref) == pytest.approx((probed.scale, probed.uncertainty_ref))


def test_cli_trains_and_evaluates_the_second_family(tiny_model: Path, hopper_dataset: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--preset", "debug", f"dataset={hopper_dataset}", "out=ms", "model_type=multistep",
            "rollout_steps=3", "finetune_epochs=1", "threads=1", "fall_weight=4", "fall_window=20"]
    assert main([*args, f"init={tiny_model}"]) == 0
    model = load_checkpoint("ms")
    assert model.coverage is not None
    spec = (tmp_path / "ms" / "spec.json").read_text()
    assert '"model_type": "multistep"' in spec and '"rollout_steps": 3' in spec and '"fall_weight": 4' in spec
    assert '"near_termination_segments"' in spec
    assert main(["evaluate", "--preset", "debug", "task=Hopper-v5", "model=ms", "out=ev", "rerun=false"]) == 0
    capsys.readouterr()
    # keys of one family do not leak into the other's; an unknown family is one line, exit 2
    assert main(["train", f"dataset={hopper_dataset}", "rollout_steps=3"]) == 2
    assert "unknown key 'rollout_steps' for train model_type=ensemble" in capsys.readouterr().err
    assert main(["train", f"dataset={hopper_dataset}", "model_type=rnn"]) == 2
    assert "unknown model_type 'rnn': use one of ensemble, multistep" in capsys.readouterr().err
    (tmp_path / "ms.yaml").write_text("model_type: multistep\nrollout_steps: 1\n")
    assert main(["train", "--config", "ms.yaml", f"dataset={hopper_dataset}", "out=bad"]) == 2
    assert "rollout_steps must be at least 2" in capsys.readouterr().err
