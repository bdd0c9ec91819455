"""Choosing the weights fine-tuning keeps: closed-loop selection (scores, snapshot, CLI keys) and weight averaging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_eval.cli import main
from wm_eval.data import load_dataset
from wm_eval.errors import ConfigError, PolicyError
from wm_eval.evaluation.api import evaluate
from wm_eval.evaluation.selection import SELECT_METRICS, ClosedLoopSelector, _point_metrics
from wm_eval.models.checkpoint import load_checkpoint
from wm_eval.multistep import MultiStepHParams, fit_multistep

POLICIES = ["zoo#ppo_0000k", "zoo#ppo_0300k", "zoo#sac_s11_0350k"]
SMALL = dict(ensemble_size=3, elites=2, hidden=32, layers=2, batch_size=64, rollout_steps=3, finetune_lr=1e-3)


def _selector(metric: str = "spearman") -> ClosedLoopSelector:
    return ClosedLoopSelector("Hopper-v5", POLICIES, episodes=2, seed=5, metric=metric, horizon=40)


def test_selector_scores_like_a_paired_evaluation(tiny_model: Path) -> None:
    model = load_checkpoint(tiny_model)
    select = _selector("normalized_abs_error")
    first, again = select(model), select(model)  # MuJoCo once, then imagined only: the same score
    assert first == again and select.names == ["ppo_0000k", "ppo_0300k", "sac_s11_0350k"]
    full = evaluate("Hopper-v5", POLICIES, model=model, episodes=2, seed=5, horizon=40, trajectories="summary",
                    progress=False)
    expected = full.metrics["discounted_return"]["normalized_abs_error"]["value"]
    assert first == pytest.approx(-expected, rel=1e-12)  # lower is better: negated
    assert set(select.history[0]) == set(SELECT_METRICS)
    assert select.history[0]["spearman"] == pytest.approx(full.metrics["discounted_return"]["spearman"]["value"])


def test_bad_selection_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="select_metric='mse': use one of spearman"):
        _selector("mse")
    with pytest.raises(ConfigError, match="select_episodes must be at least 2"):
        ClosedLoopSelector("Hopper-v5", POLICIES, episodes=1)
    with pytest.raises(ConfigError, match="select_statistic='success': Hopper-v5 has return, discounted_return"):
        ClosedLoopSelector("Hopper-v5", POLICIES, episodes=2, statistic="success")
    with pytest.raises(ConfigError, match="select_statistic='uncertainty'"):
        ClosedLoopSelector("Hopper-v5", POLICIES, episodes=2, statistic="uncertainty")
    with pytest.raises(ConfigError, match="select_horizon must be at least 1"):
        ClosedLoopSelector("Hopper-v5", POLICIES, episodes=2, horizon=0)
    with pytest.raises(ConfigError, match="select_seed must be 0 or more"):
        ClosedLoopSelector("Hopper-v5", POLICIES, episodes=2, seed=-1)
    with pytest.raises(ConfigError, match="takes a list of policies"):
        ClosedLoopSelector("Hopper-v5", "zoo", episodes=2)
    with pytest.raises(PolicyError, match="no policy 'nope'"):  # policies load up front, before any training
        ClosedLoopSelector("Hopper-v5", ["zoo#nope"], episodes=2)


def test_undefined_metrics_are_none_and_score_last() -> None:
    truth = np.array([1.0, 2.0, 3.0])
    assert set(_point_metrics(np.array([1.0, np.nan, 2.0]), truth).values()) == {None}  # a diverged snapshot
    flat = _point_metrics(np.array([5.0, 5.0, 5.0]), truth)  # constant predictions: no correlation
    assert flat["spearman"] is None and flat["kendall"] is None and flat["normalized_abs_error"] is not None


def test_fine_tuning_keeps_the_best_scoring_snapshot(tiny_model: Path, hopper_dataset: Path, one_thread) -> None:
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    init = load_checkpoint(tiny_model)
    hp = MultiStepHParams(**SMALL, finetune_epochs=3)
    chosen = set()
    # here spearman ties at every snapshot, so the start is kept (ties keep the earlier); pearson improves
    for metric in ("spearman", "pearson"):
        model, metrics = fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False,
                                       select=_selector(metric), select_every=2)
        sel = metrics["selection"]
        assert sel["epochs"] == [0, 2, 3]  # the start, every 2nd epoch and the last
        scores = [s if s is not None else -np.inf for s in sel["scores"]]
        assert sel["chosen_epoch"] == sel["epochs"][int(np.argmax(scores))]
        assert _selector(metric)(model) == max(scores)  # the kept weights are the snapshot that scored best
        unchanged = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), init.state_dict().values()))
        assert unchanged == (sel["chosen_epoch"] == 0)
        chosen.add(sel["chosen_epoch"])
    assert 0 in chosen and len(chosen) == 2
    # scoring does not disturb training, and a non-finite score ranks last: a score that is nan at the start
    # and then rises (after a real closed-loop evaluation) keeps the last epoch, as averaging one epoch does
    selector, calls = _selector(), []

    def rising(candidate) -> float:
        selector(candidate)
        calls.append(len(calls))
        return math.nan if len(calls) == 1 else float(len(calls))

    kept, metrics = fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False,
                                  select=rising)
    last, _ = fit_multistep(episodes, task="Hopper-v5", hparams=MultiStepHParams(**SMALL, finetune_epochs=3,
                                                                                average_epochs=1),
                            seed=0, init=init, progress=False)
    assert metrics["selection"]["scores"] == [None, 2.0, 3.0, 4.0] and metrics["selection"]["chosen_epoch"] == 3
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), last.state_dict().values()))
    with pytest.raises(ConfigError, match="select_every must be at least 1"):
        fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False,
                      select=_selector(), select_every=0)


def test_cli_selects_by_closed_loop_fidelity(tiny_model: Path, hopper_dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "selected"
    args = ["train", f"dataset={hopper_dataset}", f"out={out}", "model_type=multistep", f"init={tiny_model}",
            "ensemble_size=3", "elites=2", "hidden=32", "layers=2", "rollout_steps=3", "finetune_epochs=2",
            "threads=1", f"select_policies=[{','.join(POLICIES)}]", "select_episodes=2", "select_horizon=40",
            "select_metric=kendall"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "of 2 (0: the start) by closed-loop kendall on 3 policies" in printed
    spec = json.loads((out / "spec.json").read_text())
    sel = spec["metrics"]["selection"]
    assert sel["metric"] == "kendall" and sel["policies"] == ["ppo_0000k", "ppo_0300k", "sac_s11_0350k"]
    assert sel["epochs"] == [0, 1, 2] and len(sel["per_epoch"]) == 3
    assert spec["config"]["select_episodes"] == 2
    # the keys belong to the multistep family only, and a bad metric fails before any training
    assert main(["train", f"dataset={hopper_dataset}", f"out={tmp_path / 'x'}", "select_episodes=2"]) == 2
    assert "select_episodes" in capsys.readouterr().err
    assert main(args[:-1] + ["select_metric=mse", f"out={tmp_path / 'y'}"]) == 2
    assert "select_metric='mse'" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_weight_averaging_keeps_the_mean_of_the_last_epochs(tiny_model: Path, hopper_dataset: Path,
                                                            one_thread) -> None:
    episodes = load_dataset(hopper_dataset, sim_states=False).episodes
    init = load_checkpoint(tiny_model)

    def run(epochs: int, average: int):
        hp = MultiStepHParams(**SMALL, finetune_epochs=epochs, average_epochs=average)
        return fit_multistep(episodes, task="Hopper-v5", hparams=hp, seed=0, init=init, progress=False)

    after2, _ = run(2, 1)  # averaging one epoch keeps the last weights
    after3, _ = run(3, 1)
    averaged, metrics = run(3, 2)
    assert metrics["averaged_epochs"] == 2
    for name, p in averaged.named_parameters():
        expected = (dict(after2.named_parameters())[name] + dict(after3.named_parameters())[name]) / 2
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(dict(after2.named_parameters())["weights.0"], dict(after3.named_parameters())["weights.0"])
    with pytest.raises(ConfigError, match="average_epochs and a select score"):
        fit_multistep(episodes, task="Hopper-v5", hparams=MultiStepHParams(**SMALL, average_epochs=2), seed=0,
                      init=init, progress=False, select=_selector())
    with pytest.raises(ConfigError, match="average_epochs must be 0"):
        MultiStepHParams(average_epochs=-1)
