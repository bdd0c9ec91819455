"""The second model family: the Gaussian MLP ensemble trained with a multi-step (k-step rollout) loss.

A one-step model is trained on true states only; at evaluation it is fed its own predictions and
errors compound. Multi-step training (as in the multi-step-loss literature, e.g. Lutter et al. 2021)
makes each member roll its own mean prediction ``k`` steps along a recorded segment, with the
recorded actions, and scores every step's Gaussian NLL of the *true* next state and reward
relative to the member's *predicted* state, back-propagating through the rollout: a member learns
to correct the drift its own predictions cause. The termination head is trained on the predicted
states too.

The architecture, checkpoint format, uncertainty and coverage are those of
:class:`~wm_eval.models.GaussianMLPEnsemble`, so everything downstream (``WorldModel-v0``, the
trust signal) is unchanged. Training starts from a one-step model: ``init`` (a checkpoint, for
example the embedded model) or, without it, a one-step :func:`wm_eval.training.fit` on the same
data; the multi-step fine-tuning then runs on the same train/validation split of episodes (each
epoch a random ``1/k`` of the overlapping windows, so about as many predicted steps as a one-step
epoch; with ``fall_weight > 1`` the windows that end within ``fall_window`` steps of a termination are
drawn that many times as often, so the rare transitions into a fall weigh more), stops on the validation
k-step loss, and keeps each member's best epoch; or the average of
the last ``average_epochs`` epochs' weights (stochastic weight averaging, Izmailov et al. 2018); or,
given a ``select`` score (closed-loop fidelity on policies,
:class:`wm_eval.evaluation.selection.ClosedLoopSelector`), the whole ensemble of the best-scoring
epoch, the starting model included.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wm_eval.errors import ConfigError, DatasetError
from wm_eval.models import GaussianMLPEnsemble
from wm_eval.training import EnsembleHParams, evaluate_model, fit
from wm_eval.types import Trajectory

__all__ = ["MultiStepHParams", "epoch_windows", "fit_multistep", "segments"]

_MIN_DELTA = 1e-4


@dataclass(frozen=True)
class MultiStepHParams(EnsembleHParams):
    """:class:`~wm_eval.training.EnsembleHParams` plus ``rollout_steps`` (``k``), the fine-tuning
    ``lr``/``epochs``/``patience`` (``finetune_*``), ``init`` (a checkpoint to start from),
    ``average_epochs`` (``N > 0``: keep the average of the weights after each of the last ``N`` epochs run,
    stochastic weight averaging, instead of each member's best epoch) and ``fall_weight``/``fall_window``
    (windows ending within ``fall_window`` steps of a termination are drawn ``fall_weight`` times as often;
    1: uniform)."""

    rollout_steps: int = 5
    finetune_lr: float = 2e-4
    finetune_epochs: int = 30
    finetune_patience: int = 5
    init: str | None = None
    average_epochs: int = 0
    fall_weight: float = 1.0
    fall_window: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.fall_weight >= 1.0 and math.isfinite(self.fall_weight)) or self.fall_window < 0:
            raise ConfigError(f"fall_weight must be a finite number >= 1 (1: off) and fall_window >= 0, got "
                              f"{self.fall_weight} and {self.fall_window}")
        if self.average_epochs < 0:
            raise ConfigError(f"average_epochs must be 0 (off) or more, got {self.average_epochs}")
        if self.rollout_steps < 2:
            raise ConfigError(f"rollout_steps must be at least 2 (1 is the one-step ensemble), got {self.rollout_steps}")
        if min(self.finetune_epochs, self.finetune_patience) < 1 or not self.finetune_lr > 0:
            raise ConfigError("finetune_epochs and finetune_patience must be at least 1 and finetune_lr positive")


def _snapshot(model: GaussianMLPEnsemble) -> dict[str, torch.Tensor]:
    """A copy of every parameter of ``model`` (by name)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def segments(episodes: list[Trajectory], k: int, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Every window of ``k`` consecutive transitions inside an episode (a terminal transition only as a
    window's last): ``obs`` ``[S, k + 1, obs_dim]``, ``action`` ``[S, k, act_dim]``, ``reward`` and
    ``terminated`` ``[S, k]``, ``to_termination`` ``[S]`` (steps from the window's last transition to its
    episode's terminal one, 0 when it is that one; ``inf`` in an episode that does not terminate)."""
    obs, action, reward, terminated, to_termination = [], [], [], [], []
    for e in episodes:
        steps = len(e.actions)
        ends = np.flatnonzero(e.terminations)
        end = float(ends.min()) if len(ends) else math.inf
        for t in range(steps - k + 1):
            if end < t + k - 1:  # a terminal transition before the window's last
                break
            to_termination.append(end - (t + k - 1))
            obs.append(e.observations[t:t + k + 1])
            action.append(e.actions[t:t + k])
            reward.append(e.rewards[t:t + k])
            terminated.append(e.terminations[t:t + k])
    if not obs:
        raise DatasetError(f"no episode has {k} consecutive transitions; lower rollout_steps or collect longer episodes")

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.stack(arrays), dtype=torch.float32, device=device)

    return {"obs": stack(obs), "action": stack(action), "reward": stack(reward), "terminated": stack(terminated),
            "to_termination": torch.as_tensor(to_termination, dtype=torch.float64, device=device)}


def epoch_windows(n: int, count: int, weights: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """``[count]`` indices of the windows one epoch trains on, out of ``n``: distinct and uniform without
    ``weights``; drawn with replacement in proportion to ``weights`` ``[n]`` otherwise (a window favoured
    by ``fall_weight`` can come up several times an epoch)."""
    if weights is None:
        return torch.randperm(n, generator=generator)[:count]
    return torch.multinomial(weights, count, replacement=True, generator=generator)


def _member_losses(model: GaussianMLPEnsemble, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[E]`` mean over the batch and the ``k`` steps of each member's own-rollout Gaussian NLL plus BCE."""
    obs, action = batch["obs"], batch["action"]
    k = action.shape[1]
    state = obs[:, 0].expand(model.num_members, -1, -1)  # [E, B, obs_dim]
    total = torch.zeros(model.num_members, device=obs.device)
    for h in range(k):
        act = action[:, h].expand(model.num_members, -1, -1)
        inputs = model.input_norm.normalize(torch.cat([state, act], dim=-1))
        mean, logvar, logit = model(inputs)
        target = model.target_norm.normalize(torch.cat([obs[:, h + 1] - state, batch["reward"][:, h].expand(
            model.num_members, -1).unsqueeze(-1)], dim=-1))
        nll = 0.5 * ((mean - target).square() * torch.exp(-logvar) + logvar)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logit, batch["terminated"][:, h].expand_as(logit), reduction="none")
        total = total + nll.mean(dim=(1, 2)) + bce.mean(dim=1)
        state = state + model.target_norm.denormalize(mean)[..., : model.obs_dim]
    return total / k


@torch.no_grad()
def _validation(model: GaussianMLPEnsemble, data: dict[str, torch.Tensor], chunk: int = 2048) -> torch.Tensor:
    total = torch.zeros(model.num_members)
    n = len(data["action"])
    for lo in range(0, n, chunk):
        part = {key: value[lo:lo + chunk] for key, value in data.items()}
        total += _member_losses(model, part).cpu() * len(part["action"])
    return total / n


def fit_multistep(
    episodes: list[Trajectory],
    *,
    task: str,
    hparams: MultiStepHParams,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
    init: GaussianMLPEnsemble | None = None,
    select: Callable[[GaussianMLPEnsemble], float] | None = None,
    select_every: int = 1,
) -> tuple[GaussianMLPEnsemble, dict[str, Any]]:
    """A multi-step-trained ensemble and its held-out metrics (the module docstring says how).

    ``init`` (or the checkpoint ``hparams.init``, loaded by the caller) is the one-step model to start
    from; without it a one-step :func:`~wm_eval.training.fit` runs first. The held-out episodes are
    those of :func:`~wm_eval.training.fit` with the same ``seed`` and split settings. Deterministic on
    CPU for given data, ``hparams``, ``seed`` and thread count (and ``select``, if it is deterministic).

    ``select`` scores a copy of the ensemble (higher is better): the starting model, then every
    ``select_every`` epochs and the last one. The best-scoring snapshot is returned whole (ties keep the
    earlier one; a non-finite score ranks last) instead of each member's best epoch by validation loss;
    stopping still follows the validation loss, and ``max_train_seconds`` counts training time only.

    Returns:
        ``(model, metrics)``: :func:`~wm_eval.training.evaluate_model` on the held-out episodes plus
        ``one_step`` (the starting model's), ``finetune_epochs_run``, ``finetune_seconds``,
        ``train_segments``, ``val_segments``, ``split`` and ``val_loss`` (the kept members' k-step losses); with
        ``select`` also ``selection``: ``{epochs, scores, chosen_epoch, seconds}`` (epoch 0: the start);
        with ``average_epochs`` also ``averaged_epochs`` (how many were averaged).
    """
    if select_every < 1:
        raise ConfigError(f"select_every must be at least 1, got {select_every}")
    if select is not None and hparams.average_epochs:
        raise ConfigError("average_epochs and a select score (select_policies) each choose the weights kept: "
                          "use one of them")
    one_step_metrics: dict[str, Any] | None = None
    if init is None:
        init, one_step_metrics = fit(episodes, task=task, hparams=hparams, seed=seed, device=device, progress=progress)
    if not isinstance(init, GaussianMLPEnsemble) or init.task != task:
        raise ConfigError(f"init must be a {task} GaussianMLPEnsemble checkpoint")
    train_episodes, val_episodes = hparams.held_out(episodes, seed)
    k = hparams.rollout_steps
    train, val = segments(train_episodes, k, device), segments(val_episodes, k, device)
    model = init.select_members(range(init.num_members)).to(device).train()  # a copy
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(
        [{"params": [p for name, p in model.named_parameters() if name.startswith("weights.")],
          "weight_decay": hparams.weight_decay},
         {"params": [p for name, p in model.named_parameters() if not name.startswith("weights.")], "weight_decay": 0.0}],
        lr=hparams.finetune_lr)
    best_loss = _validation(model, val)
    best = _snapshot(model)
    n, stale, epochs_run, start = len(train["action"]), 0, 0, time.perf_counter()
    selection: dict[str, Any] = {"epochs": [], "scores": [], "chosen_epoch": 0, "seconds": 0.0}
    chosen: dict[str, torch.Tensor] | None = None
    best_score = -math.inf

    def score(epoch: int) -> None:
        nonlocal chosen, best_score
        t0 = time.perf_counter()
        value = float(select(model.select_members(range(model.num_members)).eval()))  # type: ignore[misc]
        value = value if math.isfinite(value) else -math.inf  # nan or inf: an undefined score ranks last
        selection["seconds"] += time.perf_counter() - t0
        selection["epochs"].append(epoch)
        selection["scores"].append(value if math.isfinite(value) else None)
        if chosen is None or value > best_score:
            chosen = _snapshot(model)
            best_score, selection["chosen_epoch"] = value, epoch

    if select is not None:
        score(0)
    recent: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=hparams.average_epochs)
    per_epoch = max(1, n // k)  # windows overlap k-fold: an epoch predicts about as many steps as one-step training
    near = (train["to_termination"] <= hparams.fall_window).cpu()  # windows ending near a fall
    draw_weights = torch.where(near, hparams.fall_weight, 1.0).double() if hparams.fall_weight > 1.0 else None
    bar = tqdm(range(hparams.finetune_epochs), desc=f"multi-step {task} (k={k})", unit="epoch", disable=not progress)
    for _ in bar:
        perm = epoch_windows(n, per_epoch, draw_weights, generator).to(device)
        for lo in range(0, per_epoch, hparams.batch_size):
            rows = perm[lo:lo + hparams.batch_size]
            with torch.autocast(train["obs"].device.type, dtype=torch.bfloat16, enabled=hparams.bf16_autocast):
                losses = _member_losses(model, {key: value[rows] for key, value in train.items()})
            loss = losses.sum() + model.logvar_bound_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_loss = _validation(model, val)
        improved = val_loss < best_loss - _MIN_DELTA
        best_loss = torch.where(improved, val_loss, best_loss)
        for name, param in model.named_parameters():
            best[name][improved] = param.detach()[improved]
        epochs_run += 1
        stale = 0 if bool(improved.any()) else stale + 1
        if hparams.average_epochs:
            recent.append(_snapshot(model))
        elapsed = time.perf_counter() - start - selection["seconds"]  # the time budget is training time
        last = epochs_run == hparams.finetune_epochs or stale >= hparams.finetune_patience or (
            hparams.max_train_seconds is not None and elapsed >= hparams.max_train_seconds)
        postfix = {"val": f"{float(val_loss.mean()):.4f}"}
        if select is not None and (epochs_run % select_every == 0 or last):
            score(epochs_run)
            postfix["select"] = "undefined" if selection["scores"][-1] is None else f"{selection['scores'][-1]:.4f}"
        bar.set_postfix(postfix)
        if last:
            break
    bar.close()
    if hparams.average_epochs:
        chosen = {name: torch.stack([snap[name] for snap in recent]).mean(dim=0) for name in best}
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(best[name] if chosen is None else chosen[name])
    model.eval()
    if chosen is not None:  # the kept weights' own k-step losses, not each member's best
        best_loss = _validation(model, val)
    metrics = evaluate_model(model, val_episodes)
    metrics.update(one_step=one_step_metrics if one_step_metrics is not None else evaluate_model(init, val_episodes),
                   finetune_epochs_run=epochs_run, finetune_seconds=round(time.perf_counter() - start, 3),
                   train_segments=n, val_segments=len(val["action"]), rollout_steps=k,
                   near_termination_segments=int(near.sum()), split=hparams.split_record(seed, len(val_episodes)),
                   val_loss=[float(v) if math.isfinite(float(v)) else None for v in best_loss])
    if select is not None:
        metrics["selection"] = {**selection, "seconds": round(selection["seconds"], 3)}
    if hparams.average_epochs:
        metrics["averaged_epochs"] = len(recent)
    return model, metrics
