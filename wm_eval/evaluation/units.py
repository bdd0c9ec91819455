"""A finished work unit: its per-episode values, its share of the horizon error, and the rollouts
it keeps; written atomically to ``<out>/units/<id>.npz`` so an interrupted run resumes from it.

Memory is bounded by the unit: a unit's full rollouts are reduced here to per-episode values and
per-step sums, and kept whole only when the evaluation keeps every episode (``trajectories="all"``, or
``"auto"`` under :data:`~wm_eval.evaluation.api.AUTO_ALL_STEPS`).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_eval.errors import DatasetError
from wm_eval.evaluation.statistics import side_values
from wm_eval.evaluation.trust_signal import episode_signals
from wm_eval.fileio import atomic_write
from wm_eval.types import BatchRollout

__all__ = ["UnitResult", "state_error", "reduce_unit", "save_unit", "load_unit"]

_ROLLOUT_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "lengths", "uncertainty",
                   "sim_states")


@dataclass(frozen=True)
class UnitResult:
    """What a unit leaves behind.

    Attributes:
        unit: the unit id.
        values: per-episode values ``[size]``, keys ``imagined_<v>`` and ``true_<v>`` for the values of
            :func:`~wm_eval.evaluation.statistics.side_values`, plus ``final_state_error``.
        error_sum, running, diverged: ``[H + 1]`` per-step sums over the unit's pairs: normalised
            state error over pairs still running on both sides, their count, and the count of pairs
            where exactly one side has terminated by that step.
        true, imagined: the unit's full rollouts, or ``None`` when not kept.
    """

    unit: str
    values: dict[str, np.ndarray]
    error_sum: np.ndarray
    running: np.ndarray
    diverged: np.ndarray
    true: BatchRollout | None = None
    imagined: BatchRollout | None = None


def state_error(true: BatchRollout, imagined: BatchRollout, obs_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised state error per episode and step, ``[N, H + 1]``, and where it is defined.

    The error at step ``t`` is the RMS over dimensions of ``(imagined - true) / obs_scale``; it is
    defined while both episodes are still running (``t <= min`` of the two lengths) and finite (a
    diverged imagined state is not averaged in; its episode's return shows it).
    """
    diff = (imagined.observations - true.observations) / np.maximum(obs_scale, 1e-8)
    with np.errstate(over="ignore", invalid="ignore"):
        error = np.sqrt(np.mean(diff**2, axis=-1))
    steps = np.arange(error.shape[1])[None, :]
    valid = (steps <= np.minimum(true.lengths, imagined.lengths)[:, None]) & np.isfinite(error)
    return np.where(valid, error, 0.0), valid


def _terminated_by(rollout: BatchRollout) -> np.ndarray:
    """``[N, H + 1]`` bool: the episode has terminated (not truncated) at or before step ``t``."""
    n, h = rollout.rewards.shape
    ended = np.zeros((n, h + 1), dtype=bool)
    ended[:, 1:] = np.cumsum(rollout.terminations, axis=1) > 0
    return ended


def reduce_unit(unit: str, true: BatchRollout | None, imagined: BatchRollout, *, obs_scale: np.ndarray, gamma: float,
                success_rule: Callable[[np.ndarray], np.ndarray] | None, keep: bool, coverage: Any = None) -> UnitResult:
    """The :class:`UnitResult` of a unit's paired rollouts; with ``true=None`` (imagined-only episodes,
    see ``real_episodes`` of :func:`wm_eval.evaluate`) the true values and state errors are NaN and the
    per-step sums zero. With the model's ``coverage``, the imagined side also gets ``coverage`` and the
    combined ``trust_score`` of :mod:`~wm_eval.evaluation.trust_signal`."""
    imag = side_values(imagined, gamma=gamma, success_rule=success_rule)
    if coverage is not None:
        imag.update(episode_signals(imagined, coverage))
    if true is None:
        values = {f"true_{k}": np.full(len(v), np.nan) for k, v in imag.items()
                  if k not in ("uncertainty", "trust_score", "coverage")}
        values.update({f"imagined_{k}": v for k, v in imag.items()})
        values["final_state_error"] = np.full(imagined.rewards.shape[0], np.nan)
        zeros = np.zeros(imagined.rewards.shape[1] + 1)
        return UnitResult(unit, values, zeros, zeros.astype(np.int64), zeros.astype(np.int64), None,
                          imagined if keep else None)
    values = {f"true_{k}": v for k, v in side_values(true, gamma=gamma, success_rule=success_rule).items()}
    values.update({f"imagined_{k}": v for k, v in imag.items()})
    error, valid = state_error(true, imagined, obs_scale)
    last = np.minimum(true.lengths, imagined.lengths)
    values["final_state_error"] = error[np.arange(len(error)), last]
    diverged = _terminated_by(true) != _terminated_by(imagined)
    return UnitResult(unit, values, error.sum(axis=0), valid.sum(axis=0), diverged.sum(axis=0),
                      true if keep else None, imagined if keep else None)


def save_unit(folder: Path, result: UnitResult) -> Path:
    """Write ``folder/<unit>.npz`` atomically."""
    arrays = {f"values/{k}": v for k, v in result.values.items()}
    arrays.update(error_sum=result.error_sum, running=result.running, diverged=result.diverged)
    for side, rollout in (("true", result.true), ("imagined", result.imagined)):
        if rollout is not None:
            arrays.update({f"{side}/{f}": getattr(rollout, f) for f in _ROLLOUT_FIELDS if getattr(rollout, f) is not None})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(folder / f"{result.unit}.npz", write)


def load_unit(path: Path) -> UnitResult:
    """Read a unit written by :func:`save_unit` (no pickles: ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, io.UnsupportedOperation) as e:
        raise DatasetError(f"unit file {path} is unreadable ({e}); delete it to recompute that unit") from None
    values = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("values/")}
    sides = {}
    for side in ("true", "imagined"):
        fields = {f: arrays.get(f"{side}/{f}") for f in _ROLLOUT_FIELDS}
        sides[side] = None if fields["rewards"] is None else BatchRollout(**fields)
    return UnitResult(path.stem, values, arrays["error_sum"], arrays["running"], arrays["diverged"],
                      sides["true"], sides["imagined"])
