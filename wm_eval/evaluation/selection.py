"""Closed-loop model selection: score a training snapshot by how it ranks policies against MuJoCo.

Validation loss and open-loop error on held-out episodes do not predict how well a model ranks
policies in closed loop (README, "Fidelity": candidates with the same validation loss rank the zoo
with Spearman 0.91 and 0.95). :class:`ClosedLoopSelector` measures the thing itself: it rolls a set
of policies out in MuJoCo once (``episodes`` per policy from ``seed``'s start states), then scores each
snapshot it is called with by imagining the same episodes and comparing the per-policy means of
``statistic`` with the true ones by ``metric``. :func:`wm_eval.multistep.fit_multistep` calls it every
``select_every`` epochs and keeps the best-scoring snapshot.

Use a ``seed`` other than the one of the evaluation that will judge the model, so selection and
judgement see different start states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wm_eval.errors import ConfigError
from wm_eval.evaluation import metrics as M

__all__ = ["SELECT_METRICS", "ClosedLoopSelector"]

#: metric name -> +1 where higher is better, -1 where lower is better
SELECT_METRICS = {"spearman": 1, "kendall": 1, "pearson": 1, "mmrv_normalized": -1, "regret_at_1": -1,
                  "normalized_abs_error": -1}


def _point_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every selection metric on per-policy means ``[n_policies]`` (no intervals)."""
    if not np.isfinite(predicted).all():  # a diverged snapshot ranks nothing
        return {name: math.nan for name in SELECT_METRICS}
    return {"spearman": M.spearman(predicted=predicted, ground_truth=truth),
            "kendall": M.kendall(predicted=predicted, ground_truth=truth),
            "pearson": M.pearson(predicted=predicted, ground_truth=truth),
            "mmrv_normalized": M.mmrv_normalized(predicted=predicted, ground_truth=truth),
            "regret_at_1": M.regret_at_k(predicted=predicted, ground_truth=truth, k=1),
            "normalized_abs_error": M.normalized_abs_error(predicted=predicted, ground_truth=truth)}


class ClosedLoopSelector:
    """Scores world-model snapshots by closed-loop fidelity on ``policies`` (higher is better).

    Args:
        task: ground-truth task id.
        policies: anything :func:`wm_eval.evaluate` takes (``"zoo"``, zips, manifests, ...); at least 2.
        episodes: paired episodes per policy (at least 2).
        seed: seed of the start states and the model's streams (pick one the final evaluation does not use).
        metric: one of :data:`SELECT_METRICS`; the score is its value, negated where lower is better.
        statistic: the per-episode value compared (``discounted_return``, ``return``, or ``success``).
        horizon: steps per episode (``None``: the task's time limit).

    Calling it with a model returns the score (``-inf`` for a snapshot whose metric is undefined, such
    as a diverged one); ``history`` holds every call's metrics. The first call also runs the MuJoCo
    episodes (the one costly part); later calls imagine only. Deterministic: the same snapshot and
    arguments give the same score.
    """

    def __init__(self, task: str, policies: Sequence[Any], *, episodes: int = 10, seed: int = 1,
                 metric: str = "spearman", statistic: str = "discounted_return", horizon: int | None = None) -> None:
        if metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric={metric!r}: use one of {', '.join(SELECT_METRICS)}")
        if episodes < 2:
            raise ConfigError(f"select_episodes must be at least 2, got {episodes}")
        if len(policies) == 0:
            raise ConfigError("no policies to select with: pass select_policies=[zoo] or a list of policies")
        self.task, self.policies, self.episodes, self.seed = task, list(policies), episodes, seed
        self.metric, self.statistic, self.horizon = metric, statistic, horizon
        self.truth: np.ndarray | None = None
        self.names: list[str] = []
        self.history: list[dict[str, float]] = []

    def __call__(self, model: Any) -> float:
        """Score ``model`` (a :class:`~wm_eval.models.WorldModel`; not modified)."""
        from wm_eval.evaluation.api import evaluate

        ev = evaluate(self.task, self.policies, model=model, episodes=self.episodes, horizon=self.horizon,
                      seed=self.seed, real_episodes=0 if self.truth is not None else None, trajectories="summary",
                      bootstrap=10, progress=False)
        key = f"imagined_{self.statistic}"
        if key not in ev.policies[0].episodes:
            raise ConfigError(f"select_statistic={self.statistic!r}: {self.task} has no such statistic "
                              f"(it has {', '.join(k[9:] for k in ev.policies[0].episodes if k.startswith('imagined_'))})")
        if self.truth is None:
            self.names = [p.name for p in ev.policies]
            self.truth = np.array([p.episodes[f"true_{self.statistic}"].mean() for p in ev.policies])
            if len(self.truth) < 2 or np.ptp(self.truth) == 0:
                raise ConfigError(f"select_policies: need at least 2 policies whose true {self.statistic} differ "
                                  f"(got {len(self.truth)})")
        predicted = np.array([p.episodes[key].mean() for p in ev.policies])
        values = _point_metrics(predicted, self.truth)
        self.history.append(values)
        value = values[self.metric]
        return SELECT_METRICS[self.metric] * value if math.isfinite(value) else -math.inf
