"""The imagined-side trust signal: per episode, how far the imagination left the model's data and how
much its members disagreed; per policy, ``risk`` (the estimated probability that the imagined mean
return is off by more than 20%) and ``flagged`` (``risk > 0.5``).

Everything here reads the imagined episodes and what the model stores (its
:class:`~wm_eval.models.coverage.Coverage`), never real outcomes, so ``risk`` and ``flagged`` mean
the same with or without real episodes.

**Per episode** (``imagined_<name>`` values of an evaluation):

* ``coverage``: the mean over the episode's imagined steps of the state–action pair's distance to
  its nearest training pairs, in units of the distance typical inside the data (1: inside, 3: three
  times as far as training pairs lie from each other);
* ``trust_score``: the combined score, ``sum_t (u_t / u_ref) * max(1, c_t)`` over the imagined steps,
  with ``u_t`` the step's ensemble disagreement, ``u_ref`` the model's median disagreement on its
  training data and ``c_t`` the step's coverage distance: disagreement counts more where the data
  is thin. Without stored coverage it is the summed disagreement alone (``c_t = 1``, ``u_ref = 1``).

**Per policy** the features of :data:`FEATURES` feed a logistic regression stored with the model
(``Coverage.risk``), fitted on held-out policies (``examples/trust_calibration.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from wm_eval.types import RISK_FEATURES, BatchRollout

__all__ = ["FEATURES", "RISK_FLAG", "episode_signals", "imagination_diverged", "policy_features", "policy_risk"]

FEATURES = RISK_FEATURES
"""Per-policy features of the risk model: the logs of the policy's mean per-step disagreement and mean
coverage distance, each relative to a typical training episode's (``Coverage.episode_*_ref``: 0 is
"like the data"); the imagined mean return's excess over the best training episode return (scaled to
the evaluation's horizon), in units of the training returns' range (0 when inside it)."""
RISK_FLAG = 0.5
"""A policy with ``risk`` above this is ``flagged``."""


def episode_signals(imagined: BatchRollout, coverage: Any) -> dict[str, np.ndarray]:
    """Per imagined episode ``[N]``: ``coverage`` and the combined ``trust_score`` (module docstring).

    ``coverage`` is a :class:`~wm_eval.models.coverage.Coverage`; the distance is computed for the
    ``sum(lengths)`` valid steps in one batch."""
    mask = imagined.mask  # [N, H]
    rows, steps = np.nonzero(mask)
    distance = np.ones(mask.shape)
    distance[rows, steps] = coverage.distance(imagined.observations[rows, steps], imagined.actions[rows, steps])
    count = np.maximum(mask.sum(axis=1), 1)
    out = {"coverage": (distance * mask).sum(axis=1) / count}
    if imagined.uncertainty is not None:
        weight = np.maximum(1.0, distance)
        out["trust_score"] = (imagined.uncertainty / coverage.uncertainty_ref * weight * mask).sum(axis=1)
    return out


def policy_features(values: Mapping[str, np.ndarray], coverage: Any, horizon: int) -> dict[str, float]:
    """The :data:`FEATURES` of one policy from its per-episode ``imagined_*`` values (all finite: see
    :func:`imagination_diverged`), for an evaluation of ``horizon`` steps."""
    disagreement = float(np.mean(values["imagined_uncertainty"])) / coverage.episode_uncertainty_ref
    distance = float(np.mean(values["imagined_coverage"])) / coverage.episode_coverage_ref
    fraction = min(1.0, horizon / max(coverage.episode_steps, 1))
    span = max(coverage.return_high - coverage.return_low, 1e-9) * fraction
    excess = max(0.0, (float(np.mean(values["imagined_return"])) - coverage.return_high * fraction) / span)
    return {"log_disagreement": math.log(max(disagreement, 1e-9)), "log_coverage": math.log(max(distance, 1e-9)),
            "return_excess": excess}


def imagination_diverged(values: Mapping[str, np.ndarray]) -> bool:
    """Whether any imagined return, disagreement or coverage distance of the policy is not finite: its
    imagination left every scale, so its risk is 1 whatever the risk model says."""
    keys = ("imagined_return", "imagined_uncertainty", "imagined_coverage")
    return not all(np.isfinite(values[k]).all() for k in keys if k in values)


def policy_risk(features: Mapping[str, float], risk: Mapping[str, Any]) -> float:
    """``sigmoid(bias + weights · features)``: the stored risk model applied to one policy's features."""
    z = float(risk["bias"]) + sum(float(w) * features[name] for name, w in zip(risk["features"], risk["weights"]))
    return 1.0 / (1.0 + math.exp(-min(max(z, -500.0), 500.0)))
