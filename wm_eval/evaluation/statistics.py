"""Episode statistics, pluggable: what one number per episode means, and its interval per policy.

* ``return``: the undiscounted sum of rewards; intervals by percentile bootstrap over episodes.
* ``discounted_return``: ``sum_t gamma**t r_t`` (γ = 0.995 as in DOPE); bootstrap intervals.
* ``success``: 1 if the task's success rule (on observations, so it also applies to imagined
  states) holds at any step of the episode, else 0; Wilson score intervals. Only for tasks that
  define one (:attr:`wm_eval.tasks.TaskSpec.success`).

An interval of an *imagined* statistic is the spread of the model's predictions over start states,
not an interval for the policy's true value: only real episodes give that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wm_eval.evaluation import metrics as M
from wm_eval.types import BatchRollout

__all__ = ["Statistic", "statistics_for", "side_values", "interval"]


@dataclass(frozen=True)
class Statistic:
    """A per-episode statistic: ``name``, its kind (``"continuous"`` or ``"binary"``)."""

    name: str
    kind: str


RETURN = Statistic("return", "continuous")
DISCOUNTED = Statistic("discounted_return", "continuous")
SUCCESS = Statistic("success", "binary")
TERMINATED = Statistic("terminated", "binary")
"""The share of episodes ended by termination, not truncation (a fall, for locomotion): summarised per
policy (Wilson intervals), not ranked on."""


def statistics_for(success_rule: Callable[[np.ndarray], np.ndarray] | None) -> list[Statistic]:
    """The statistics of a task: returns always, success where the task has a rule."""
    return [RETURN, DISCOUNTED] + ([SUCCESS] if success_rule is not None else [])


def side_values(rollout: BatchRollout, *, gamma: float,
                success_rule: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, np.ndarray]:
    """Per-episode ``return``, ``discounted_return``, ``success`` (if defined), ``length`` and
    ``terminated`` of one side, each ``[N]``; plus ``uncertainty`` (mean per step) and ``trust_score``
    (summed over the episode) when the rollout has uncertainty."""
    mask = rollout.mask
    out = {
        "return": M.returns(rollout.rewards, mask=mask, gamma=None),
        "discounted_return": M.returns(rollout.rewards, mask=mask, gamma=gamma),
        "length": rollout.lengths.astype(np.int64),
        "terminated": rollout.terminations.any(axis=1),
    }
    if success_rule is not None:
        steps = np.arange(rollout.observations.shape[1])[None, :]
        valid = (steps >= 1) & (steps <= rollout.lengths[:, None])
        out["success"] = (np.asarray(success_rule(rollout.observations), dtype=bool) & valid).any(axis=1).astype(float)
    if rollout.uncertainty is not None:
        total = (rollout.uncertainty * mask).sum(axis=1)
        out["trust_score"] = total
        out["uncertainty"] = total / np.maximum(mask.sum(axis=1), 1)
    return out


def interval(statistic: Statistic, values: np.ndarray, *, seed: int, n_resamples: int) -> dict[str, float]:
    """``{mean, ci_low, ci_high}`` (95%) of ``values`` ``[N]``: bootstrap, or Wilson for binary."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if statistic.kind == "binary":
        low, high = M.binomial_ci(int(round(values.sum())), len(values), method="wilson")
    else:
        low, high = M.bootstrap_ci(values, np.mean, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "ci_low": float(low), "ci_high": float(high)}
