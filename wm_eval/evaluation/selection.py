"""Closed-loop model selection: score a training snapshot by how it ranks policies against MuJoCo.

Validation loss and open-loop error on held-out episodes do not predict how well a model ranks
policies in closed loop (README, "Collect data and train a model": Walker2d candidates with the same
validation loss rank the zoo with Spearman 0.91 and 0.95). :class:`ClosedLoopSelector` measures the
thing itself: it rolls a set of policies out in MuJoCo once (``episodes`` per policy from ``seed``'s
start states), then scores each snapshot it is called with by imagining the same episodes and
comparing the per-policy means of ``statistic`` with the true ones by ``metric``
(:func:`wm_eval.evaluation.metrics.point_metrics`). :func:`wm_eval.multistep.fit_multistep` calls it
every ``select_every`` epochs and keeps the best-scoring snapshot.

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


def _point_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Every selection metric on per-policy means ``[n_policies]`` (no intervals); ``None`` where undefined
    (a diverged snapshot ranks nothing; constant predictions have no Kendall tau), so the record is JSON."""
    if not np.isfinite(predicted).all():
        return {name: None for name in SELECT_METRICS}
    values = M.point_metrics(predicted=predicted, ground_truth=truth)
    return {name: values[name] if math.isfinite(values[name]) else None for name in SELECT_METRICS}


class ClosedLoopSelector:
    """Scores world-model snapshots by closed-loop fidelity on ``policies`` (higher is better).

    Args:
        task: ground-truth task id.
        policies: a list of what :func:`wm_eval.evaluate` takes (``"zoo"``, zips, manifests, ...), loaded
            here (a bad spec fails before any training); at least 2 policies.
        episodes: paired episodes per policy (at least 2).
        seed: seed of the start states and the model's streams (pick one the final evaluation does not use).
        metric: one of :data:`SELECT_METRICS`; the score is its value, negated where lower is better.
        statistic: the per-episode value compared (``discounted_return``, ``return``, or ``success``).
        horizon: steps per episode (``None``: the task's time limit).

    Calling it with a model returns the score (``-inf`` for a snapshot whose metric is undefined, such
    as a diverged one); ``history`` holds every call's metrics (``None`` where undefined). The first call
    also runs the MuJoCo episodes (the one costly part); later calls imagine only. Deterministic: the same
    snapshot and arguments give the same score.
    """

    def __init__(self, task: str, policies: Sequence[Any], *, episodes: int = 10, seed: int = 1,
                 metric: str = "spearman", statistic: str = "discounted_return", horizon: int | None = None) -> None:
        from wm_eval.evaluation.api import load_policy_list
        from wm_eval.evaluation.statistics import statistics_for
        from wm_eval.tasks import get_task

        if metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric={metric!r}: use one of {', '.join(SELECT_METRICS)}")
        if episodes < 2:
            raise ConfigError(f"select_episodes must be at least 2, got {episodes}")
        if horizon is not None and horizon < 1:
            raise ConfigError(f"select_horizon must be at least 1 (or null: the task's time limit), got {horizon}")
        if seed < 0:
            raise ConfigError(f"select_seed must be 0 or more, got {seed}")
        if isinstance(policies, str) or len(policies) == 0:
            raise ConfigError("select_policies takes a list of policies, e.g. select_policies=[zoo]")
        names = [s.name for s in statistics_for(get_task(task).success)]
        if statistic not in names:
            raise ConfigError(f"select_statistic={statistic!r}: {task} has {', '.join(names)}")
        self.task, self.episodes, self.seed = task, episodes, seed
        self.metric, self.statistic, self.horizon = metric, statistic, horizon
        self.policies = load_policy_list(policies, task=task)  # bad specs fail here, before any training
        self.names = [p.name for p in self.policies]
        self.truth: np.ndarray | None = None
        self.history: list[dict[str, float | None]] = []

    def __call__(self, model: Any) -> float:
        """Score ``model`` (a :class:`~wm_eval.models.WorldModel`; not modified)."""
        from wm_eval.evaluation.api import evaluate

        ev = evaluate(self.task, self.policies, model=model, episodes=self.episodes, horizon=self.horizon,
                      seed=self.seed, real_episodes=0 if self.truth is not None else None, trajectories="summary",
                      bootstrap=10, progress=False)
        key = f"imagined_{self.statistic}"
        if self.truth is None:
            truth = np.array([p.episodes[f"true_{self.statistic}"].mean() for p in ev.policies])
            if len(truth) < 2 or np.ptp(truth) == 0:
                raise ConfigError(f"select_policies: the true {self.statistic} of all {len(truth)} policies is "
                                  "the same; selection needs policies that differ")
            self.truth = truth
        predicted = np.array([p.episodes[key].mean() for p in ev.policies])
        values = _point_metrics(predicted, self.truth)
        self.history.append(values)
        value = values[self.metric]
        return -math.inf if value is None else SELECT_METRICS[self.metric] * value
