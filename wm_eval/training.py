"""Fitting a :class:`~wm_eval.models.GaussianMLPEnsemble` on episodes, and measuring any world model on held-out ones."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wm_eval.errors import ConfigError, DatasetError
from wm_eval.models import GaussianMLPEnsemble, WorldModel
from wm_eval.tasks import TASKS
from wm_eval.types import Trajectory

__all__ = ["HORIZONS", "SPLITS", "EnsembleHParams", "data_fingerprint", "evaluate_model", "fit", "recorded_split",
           "split_episodes"]

HORIZONS = (1, 10, 50, 100)
SPLITS = ("episode_hash", "permutation")
"""How :func:`split_episodes` holds episodes out: ``episode_hash`` decides each episode from its own data
and the seed alone, ``permutation`` (the rule before it) from a seeded permutation of the episode indices."""
_MIN_DELTA = 1e-4  # a member improves when its validation loss drops by more than this


@dataclass(frozen=True)
class EnsembleHParams:
    """Architecture and optimisation settings of :func:`fit`.

    ``max_train_seconds`` stops training after the epoch that crosses it (``None``: no limit).
    ``bf16_autocast`` runs the training matrix products in bfloat16 under ``torch.autocast``
    (weights, optimiser and validation stay float32); about 2.5x faster on CPUs with AMX.
    ``split`` and ``split_seed`` choose the held-out episodes (:func:`split_episodes`; ``split_seed=None``:
    the training seed).
    """

    ensemble_size: int = 7
    elites: int = 5
    hidden: int = 200
    layers: int = 4
    lr: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    epochs: int = 100
    patience: int = 8
    val_fraction: float = 0.1
    max_train_seconds: float | None = None
    bf16_autocast: bool = False
    split: str = "episode_hash"
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.elites <= self.ensemble_size:
            raise ConfigError(f"elites must be between 1 and ensemble_size ({self.ensemble_size}), got {self.elites}")
        if min(self.hidden, self.layers, self.batch_size, self.epochs, self.patience) < 1:
            raise ConfigError("hidden, layers, batch_size, epochs and patience must all be at least 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def held_out(self, episodes: list[Trajectory], seed: int) -> tuple[list[Trajectory], list[Trajectory]]:
        """``(train, held_out)`` of ``episodes`` by this split (``split_seed``, else ``seed``)."""
        return split_episodes(episodes, self.val_fraction, seed if self.split_seed is None else self.split_seed,
                              self.split)

    def split_record(self, seed: int, held_out: int) -> dict[str, Any]:
        """What a checkpoint's metrics record of its split: ``{rule, seed, val_fraction, held_out_episodes}``."""
        return {"rule": self.split, "seed": seed if self.split_seed is None else self.split_seed,
                "val_fraction": self.val_fraction, "held_out_episodes": held_out}


def fit(
    episodes: list[Trajectory],
    *,
    task: str,
    hparams: EnsembleHParams,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[GaussianMLPEnsemble, dict[str, Any]]:
    """Train a probabilistic ensemble on ``episodes`` and return it with its held-out metrics.

    A seeded ``val_fraction`` of the episodes is held out (:meth:`EnsembleHParams.held_out`). Each
    member trains with Adam on its own bootstrap of the training transitions (PETS) to minimise the Gaussian NLL of
    the normalised ``(next_obs - obs, reward)`` plus the log-variance bound penalty, plus
    the termination BCE weighted by ``#non-terminal / #terminal``. Training stops when no
    member has improved its validation loss for ``patience`` epochs; each member keeps its
    best epoch, the ``elites`` best members are kept, and the termination logit is shifted
    by ``-log(pos_weight)`` so that probabilities match the data's base rate again.

    On CPU the result is a deterministic function of the data, ``hparams``, ``seed`` and
    the torch thread count.

    Returns:
        ``(model, metrics)``; ``metrics`` is :func:`evaluate_model` on the held-out episodes
        plus ``train_transitions``, ``val_transitions``, ``split`` (:meth:`EnsembleHParams.split_record`),
        ``epochs_run``, ``train_seconds``, ``elites`` (indices of the kept members) and ``val_loss`` (theirs).
    """
    if len(episodes) < 2:
        raise DatasetError(f"training needs at least 2 episodes (one is held out), got {len(episodes)}; collect more data")
    _check_shapes(episodes)
    train_episodes, val_episodes = hparams.held_out(episodes, seed)
    train, val = _transitions(train_episodes, device), _transitions(val_episodes, device)
    if len(train["action"]) == 0 or len(val["action"]) == 0:
        raise DatasetError("the training or held-out episodes contain no transitions; collect longer episodes")

    generator = torch.Generator().manual_seed(seed)
    obs_dim, act_dim = train["obs"].shape[1], train["action"].shape[1]
    model = GaussianMLPEnsemble(
        task=task, obs_dim=obs_dim, act_dim=act_dim, ensemble_size=hparams.ensemble_size,
        hidden=hparams.hidden, layers=hparams.layers, generator=generator,
    ).to(device)
    model.fit_normalizers(train["obs"], train["action"], train["next_obs"], train["reward"])
    train_x, train_y = _normalised(model, train)
    val_x, val_y = _normalised(model, val)
    n_terminal = int(train["terminated"].sum())
    pos_weight = (len(train_x) - n_terminal) / n_terminal if n_terminal else 1.0

    decay = [p for name, p in model.named_parameters() if name.startswith("weights.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("weights.")]
    optimizer = torch.optim.Adam(
        [{"params": decay, "weight_decay": hparams.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=hparams.lr
    )
    n, size = len(train_x), hparams.ensemble_size
    bootstrap = torch.randint(n, (size, n), generator=generator)
    best_loss = torch.full((size,), math.inf)
    best_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    stale, epochs_run, start = 0, 0, time.perf_counter()
    bar = tqdm(range(hparams.epochs), desc=f"train {task}", unit="epoch", disable=not progress)
    for _ in bar:
        order = bootstrap.gather(1, torch.argsort(torch.rand(size, n, generator=generator), dim=1)).to(device)
        total = 0.0
        for begin in range(0, n, hparams.batch_size):
            index = order[:, begin : begin + hparams.batch_size]
            with torch.autocast(train_x.device.type, dtype=torch.bfloat16, enabled=hparams.bf16_autocast):
                losses = model.member_losses(train_x[index], train_y[index], train["terminated"][index], pos_weight=pos_weight)
            loss = losses.sum() + model.logvar_bound_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(losses.detach().mean()) * index.shape[1]
        val_loss = _validation_losses(model, val_x, val_y, val["terminated"], pos_weight)
        improved = val_loss < best_loss - _MIN_DELTA
        best_loss = torch.where(improved, val_loss, best_loss)
        for name, param in model.named_parameters():
            best_params[name][improved] = param.detach()[improved]
        epochs_run += 1
        stale = 0 if bool(improved.any()) else stale + 1
        bar.set_postfix(train=f"{total / n:.4f}", val=f"{float(val_loss.mean()):.4f}")
        elapsed = time.perf_counter() - start
        if stale >= hparams.patience or (hparams.max_train_seconds is not None and elapsed >= hparams.max_train_seconds):
            break
    bar.close()
    train_seconds = time.perf_counter() - start

    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(best_params[name])
    elites = torch.argsort(best_loss)[: hparams.elites].sort().values.tolist()
    model = model.select_members(elites)
    with torch.no_grad():
        model.biases[-1][..., -1] -= math.log(pos_weight)
    model.eval()
    metrics = evaluate_model(model, val_episodes)
    metrics.update(
        train_transitions=n,
        val_transitions=len(val_x),
        epochs_run=epochs_run,
        train_seconds=round(train_seconds, 3),
        elites=elites,
        val_loss=[float(best_loss[i]) for i in elites],
        split=hparams.split_record(seed, len(val_episodes)),
    )
    return model, metrics


@torch.no_grad()
def evaluate_model(
    model: WorldModel,
    episodes: Sequence[Trajectory],
    *,
    horizons: Sequence[int] = HORIZONS,
    starts_per_episode: int = 8,
    batch_size: int = 8192,
) -> dict[str, Any]:
    """Held-out accuracy of ``model`` on ``episodes`` (propagation ``"mean"``), as JSON-able numbers.

    Returns:
        ``nll``: mean of :meth:`WorldModel.nll` over transitions; ``mse_per_dim``: mean squared
        next-observation error per dimension (observation units); ``reward_r2``: coefficient of
        determination of the predicted rewards; ``termination_f1``: F1 of the learned ``terminated``
        (``None`` without terminal transitions); ``termination_f1_task_rule``: F1 of the task's own
        termination rule applied to the predicted next observations (``None`` when the task has no
        rule or no terminal transitions); ``open_loop_error``: ``{str(k): e}``, where the
        model replays the recorded actions open loop for ``k`` steps from up to
        ``starts_per_episode`` evenly spaced start points of every episode at least ``k`` long,
        and ``e`` is the mean over those rollouts of the RMS over dimensions of
        ``(predicted - true) / obs_scale`` after ``k`` steps (``None`` if no episode is long enough).
    """
    data = _transitions(list(episodes), model.device)
    if len(data["action"]) == 0:
        raise DatasetError("cannot evaluate a world model on episodes without transitions")
    next_obs, reward, termination, nll = [], [], [], []
    for begin in range(0, len(data["action"]), batch_size):
        rows = slice(begin, begin + batch_size)
        prediction = model.predict(data["obs"][rows], data["action"][rows], propagation="mean")
        next_obs.append(prediction.next_obs)
        reward.append(prediction.reward)
        termination.append(prediction.terminated)
        nll.append(model.nll(data["obs"][rows], data["action"][rows], data["next_obs"][rows], data["reward"][rows]))
    pred_reward, true_reward = torch.cat(reward), data["reward"]
    spec = TASKS.get(model.task)
    rule = spec.terminated if spec is not None else None
    rule_f1 = None
    if rule is not None:
        by_rule = torch.as_tensor(rule(torch.cat(next_obs).double().cpu().numpy()), device=model.device)
        rule_f1 = _f1(by_rule, data["terminated"])
    total_variance = float((true_reward - true_reward.mean()).square().sum())
    residual = float((pred_reward - true_reward).square().sum())
    return {
        "nll": float(torch.cat(nll).mean()),
        "mse_per_dim": (torch.cat(next_obs) - data["next_obs"]).square().mean(dim=0).tolist(),
        "reward_r2": 1.0 - residual / total_variance if total_variance > 0 else None,
        "termination_f1": _f1(torch.cat(termination), data["terminated"]),
        "termination_f1_task_rule": rule_f1,
        "open_loop_error": {str(k): _open_loop_error(model, episodes, k, starts_per_episode) for k in horizons},
    }


def split_episodes(episodes: list[Trajectory], val_fraction: float, seed: int,
                   rule: str = "episode_hash") -> tuple[list[Trajectory], list[Trajectory]]:
    """``(train, held_out)``: about ``val_fraction`` of the episodes (at least one, never all) held out.

    ``episode_hash`` (the default) holds an episode out when a hash of ``seed`` and the episode's own data
    (:func:`data_fingerprint` of it alone) falls below ``val_fraction``. Whether an episode is held out
    therefore does not depend on the other episodes: a model fine-tuned (``init=``) on a grown or reordered
    dataset with the same seed and fraction validates on none of the episodes its start trained on, and
    identical episodes fall on the same side. The share held out is ``val_fraction`` on average, not
    exactly. ``permutation`` holds out the first ``round(val_fraction * n)`` of a seeded permutation of the
    episode indices (the rule before; each added episode reshuffles the split).
    """
    if rule == "permutation":
        order = np.random.default_rng(seed).permutation(len(episodes))
        n_val = min(len(episodes) - 1, max(1, round(val_fraction * len(episodes))))
        return [episodes[i] for i in sorted(order[n_val:])], [episodes[i] for i in sorted(order[:n_val])]
    if rule != "episode_hash":
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {rule!r}")
    keys = np.array([int.from_bytes(hashlib.sha256(f"{seed}:{data_fingerprint([e])}".encode()).digest()[:8], "big")
                     for e in episodes], dtype=np.float64) / 2.0**64
    held = keys < val_fraction
    if len(episodes) > 1 and not held.any():
        held[np.argmin(keys)] = True
    if held.all():
        held[np.argmax(keys)] = False
    return [e for e, h in zip(episodes, held) if not h], [e for e, h in zip(episodes, held) if h]


def recorded_split(spec: dict[str, Any]) -> tuple[str, int, float]:
    """``(rule, seed, val_fraction)`` that a checkpoint's training held episodes out by, from its ``spec.json``
    (:func:`~wm_eval.models.checkpoint.read_spec`): its ``metrics.split``, or for checkpoints trained before
    that record, ``permutation`` with the spec's seed and configured ``val_fraction``."""
    record = (spec.get("metrics") or {}).get("split")
    if isinstance(record, dict):
        return str(record["rule"]), int(record["seed"]), float(record["val_fraction"])
    config = spec.get("config") or {}
    return "permutation", int(config.get("seed", spec.get("seed", 0))), float(config.get("val_fraction", 0.1))


def data_fingerprint(episodes: Sequence[Trajectory]) -> str:
    """Short sha256 hex digest of the episodes' observations, actions, rewards, terminations and truncations."""
    digest = hashlib.sha256()
    for episode in episodes:
        for array, dtype in (
            (episode.observations, np.float32), (episode.actions, np.float32), (episode.rewards, np.float32),
            (episode.terminations, np.bool_), (episode.truncations, np.bool_),
        ):
            array = np.ascontiguousarray(array, dtype=dtype)
            digest.update(repr(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _check_shapes(episodes: Sequence[Trajectory]) -> None:
    if not episodes:
        raise DatasetError("no episodes given; collect a dataset first")
    shapes = {(e.observations.shape[1:], e.actions.shape[1:]) for e in episodes}
    if len(shapes) != 1:
        raise DatasetError(f"episodes disagree on observation/action shapes {sorted(shapes)}; use one task per dataset")


def _transitions(episodes: list[Trajectory], device: str | torch.device) -> dict[str, torch.Tensor]:
    _check_shapes(episodes)

    def stack(arrays: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.concatenate(arrays), dtype=dtype, device=device)

    return {
        "obs": stack([e.observations[:-1] for e in episodes], torch.float32),
        "action": stack([e.actions for e in episodes], torch.float32),
        "next_obs": stack([e.observations[1:] for e in episodes], torch.float32),
        "reward": stack([e.rewards for e in episodes], torch.float32),
        "terminated": stack([e.terminations for e in episodes], torch.float32),
    }


def _normalised(model: GaussianMLPEnsemble, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = model.input_norm.normalize(torch.cat([data["obs"], data["action"]], dim=-1))
    targets = model.target_norm.normalize(model.targets(data["obs"], data["next_obs"], data["reward"]))
    return inputs, targets


@torch.no_grad()
def _validation_losses(
    model: GaussianMLPEnsemble, inputs: torch.Tensor, targets: torch.Tensor, terminated: torch.Tensor, pos_weight: float
) -> torch.Tensor:
    chunk = 4096
    total = torch.zeros(model.num_members)
    for begin in range(0, len(inputs), chunk):
        rows = slice(begin, begin + chunk)
        losses = model.member_losses(inputs[rows], targets[rows], terminated[rows], pos_weight=pos_weight)
        total += losses.cpu() * len(inputs[rows])
    return total / len(inputs)


def _f1(predicted: torch.Tensor, actual: torch.Tensor) -> float | None:
    actual = actual.bool()
    if not bool(actual.any()):
        return None
    true_pos = int((predicted & actual).sum())
    return 2 * true_pos / (int(predicted.sum()) + int(actual.sum()))


def _open_loop_error(model: WorldModel, episodes: Sequence[Trajectory], k: int, starts_per_episode: int) -> float | None:
    first_obs, actions, final_obs = [], [], []
    for episode in episodes:
        if len(episode) < k:
            continue
        starts = np.unique(np.linspace(0, len(episode) - k, starts_per_episode).round().astype(int))
        first_obs.append(episode.observations[starts])
        actions.append(np.stack([episode.actions[s : s + k] for s in starts]))
        final_obs.append(episode.observations[starts + k])
    if not first_obs:
        return None
    action = torch.as_tensor(np.concatenate(actions), dtype=torch.float32, device=model.device)
    target = torch.as_tensor(np.concatenate(final_obs), dtype=torch.float32, device=model.device)
    state = model.initial_state(np.concatenate(first_obs))
    for j in range(k):
        state, prediction = model.step(state, action[:, j], propagation="mean")
    error = (prediction.next_obs - target) / model.obs_scale
    return float(error.square().mean(dim=-1).sqrt().mean())
