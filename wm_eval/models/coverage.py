"""What a world model's training data covered, stored with the model: the data-coverage half of trust.

Ensemble members trained on the same data agree while they extrapolate, so disagreement alone
cannot tell that an imagined episode left the data. :class:`Coverage` keeps, beside the weights
(``coverage.npz`` in the checkpoint folder, read with ``allow_pickle=False``, about 0.1 MB):

* ``sample`` ``[M, obs_dim + act_dim]``: a seeded sample of training state–action pairs,
  standardised with ``mean``/``std`` ``[obs_dim + act_dim]`` of the training transitions;
* ``scale``: the median distance (mean over the ``k`` nearest) from held-out training pairs to the
  sample, so a :meth:`distance` of 1 is typical inside the data, and 3 is three times as far;
* ``obs_low``/``obs_high`` ``[obs_dim]`` and ``return_low``/``return_high``: the ranges of the
  training observations and of the training episodes' undiscounted returns; ``episode_steps``: the
  longest training episode;
* ``uncertainty_ref``: the model's median one-step disagreement on held-out training transitions;
  ``episode_uncertainty_ref`` and ``episode_coverage_ref``: the medians, over held-out training
  episodes, of an episode's mean disagreement and mean distance (what a typical episode of the data
  looks like: the risk features are relative to them, so they mean the same on every task);
* optionally a per-policy **risk** model (``risk``, a JSON string): ``features``, ``weights`` and
  ``bias`` of a logistic regression from the imagined-side features of
  :func:`~wm_eval.evaluation.trust_signal.policy_features` to the probability that a policy's imagined
  mean return is off by more than 20%, ``fitted_on`` (which policies), and ``error_quantiles``: the
  calibrated relative model error that widens intervals from the model alone
  (:func:`~wm_eval.evaluation.estimators.model_only`).

:meth:`distance` is batched (one matrix product per block of rows) and runs on the evaluation's
reduced rollouts, not inside the imagination loop.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wm_eval.errors import CheckpointError
from wm_eval.fileio import atomic_write
from wm_eval.types import RISK_FEATURES

__all__ = ["COVERAGE_FILE", "Coverage", "build_coverage", "default_risk"]

COVERAGE_FILE = "coverage.npz"
FORMAT = "wm_eval.coverage/1"
BLOCK = 1024
"""Rows per block of :meth:`Coverage.distance`."""
_ARRAYS = ("mean", "std", "sample", "scale", "k", "obs_low", "obs_high", "return_range", "uncertainty_ref",
           "episode_steps", "episode_refs")


@dataclass(frozen=True)
class Coverage:
    """A compact description of a model's training data (see the module docstring)."""

    mean: np.ndarray
    std: np.ndarray
    sample: np.ndarray
    scale: float
    k: int
    obs_low: np.ndarray
    obs_high: np.ndarray
    return_low: float
    return_high: float
    uncertainty_ref: float
    episode_steps: int
    episode_uncertainty_ref: float
    episode_coverage_ref: float
    risk: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.risk is not None:
            _check_risk(self.risk)

    def return_floor(self, horizon: int) -> float:
        """The smallest magnitude a relative return error is taken of: 10% of the largest training episode
        return magnitude, scaled by ``horizon`` over the longest training episode (at most 1)."""
        largest = max(abs(self.return_low), abs(self.return_high))
        return 0.1 * largest * min(1.0, horizon / max(self.episode_steps, 1))

    @property
    def obs_dim(self) -> int:
        """Observation size."""
        return len(self.obs_low)

    def distance(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Mean distance ``[B]`` of state–action pairs ``obs`` ``[B, obs_dim]``, ``action`` ``[B, act_dim]``
        to their ``k`` nearest training pairs, in units of :attr:`scale` (non-finite rows give ``inf``).

        Computed in float32 in padded blocks of :data:`BLOCK` rows, so a row's distance does not
        depend on the other rows of the call."""
        import torch  # here, so that importing wm_eval stays light
        x = torch.as_tensor(np.concatenate([obs, action], axis=1), dtype=torch.float32)
        x = (x - torch.as_tensor(self.mean, dtype=torch.float32)) / torch.as_tensor(self.std, dtype=torch.float32)
        finite = torch.isfinite(x).all(dim=1)
        rows = x[finite]
        sample = torch.as_tensor(self.sample, dtype=torch.float32)
        sample_sq = sample.square().sum(dim=1)
        padded = -(-len(rows) // BLOCK) * BLOCK
        rows = torch.cat([rows, rows.new_zeros(padded - len(rows), rows.shape[1])])
        result = torch.empty(padded)
        with torch.inference_mode():
            for lo in range(0, padded, BLOCK):
                block = rows[lo:lo + BLOCK]
                squared = torch.addmm(sample_sq, block, sample.T, alpha=-2.0).add_(block.square().sum(dim=1, keepdim=True))
                nearest = squared.topk(self.k, dim=1, largest=False).values
                result[lo:lo + BLOCK] = nearest.clamp_(min=0.0).sqrt_().mean(dim=1)
        out = np.full(len(x), np.inf)
        out[finite.numpy()] = result[: int(finite.sum())].double().numpy() / self.scale
        return out

    def with_risk(self, risk: dict[str, Any] | None) -> Coverage:
        """A copy with the per-policy risk model ``risk`` (``features``, ``weights``, ``bias``, ``fitted_on``,
        optionally ``horizon`` and ``error_quantiles``; see the module docstring); checked like a loaded one."""
        return replace(self, risk=risk)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/coverage.npz`` atomically."""
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT), "mean": self.mean, "std": self.std, "sample": self.sample.astype(np.float16),
            "scale": np.array(self.scale), "k": np.array(self.k), "obs_low": self.obs_low, "obs_high": self.obs_high,
            "return_range": np.array([self.return_low, self.return_high]),
            "uncertainty_ref": np.array(self.uncertainty_ref), "episode_steps": np.array(self.episode_steps),
            "episode_refs": np.array([self.episode_uncertainty_ref, self.episode_coverage_ref]),
        }
        if self.risk is not None:
            arrays["risk"] = np.array(json.dumps(self.risk, allow_nan=False))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        return atomic_write(Path(folder) / COVERAGE_FILE, write)

    @classmethod
    def load(cls, path: str | Path) -> Coverage:
        """Read a ``coverage.npz`` written by :meth:`save` (no pickles); a malformed file is a
        :class:`~wm_eval.errors.CheckpointError`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                a = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation) as exc:
            raise CheckpointError(f"{path} is truncated or corrupt; re-train or delete it ({exc})") from None
        if str(a.get("format", "")) != FORMAT:
            raise CheckpointError(f"{path} is not a {FORMAT} file; re-train or delete it")
        missing = [key for key in _ARRAYS if key not in a]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)}; re-train or delete it")
        try:
            risk = json.loads(str(a["risk"])) if "risk" in a else None
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path} holds an unreadable risk model ({exc}); re-fit it or delete the file") from None
        return cls(mean=a["mean"], std=a["std"], sample=a["sample"].astype(np.float32), scale=float(a["scale"]),
                   k=int(a["k"]), obs_low=a["obs_low"], obs_high=a["obs_high"], return_low=float(a["return_range"][0]),
                   return_high=float(a["return_range"][1]), uncertainty_ref=float(a["uncertainty_ref"]),
                   episode_steps=int(a["episode_steps"]), episode_uncertainty_ref=float(a["episode_refs"][0]),
                   episode_coverage_ref=float(a["episode_refs"][1]), risk=risk)


def _check_risk(risk: Any) -> None:
    """A risk model must name known features, one finite weight each, a finite bias and what it was fitted on."""
    ok = (isinstance(risk, dict) and isinstance(risk.get("features"), list) and isinstance(risk.get("weights"), list)
          and len(risk["features"]) == len(risk["weights"]) and set(risk["features"]) <= set(RISK_FEATURES)
          and all(isinstance(w, (int, float)) and np.isfinite(w) for w in [*risk["weights"], risk.get("bias")])
          and isinstance(risk.get("fitted_on"), str))
    if not ok:
        raise CheckpointError("the stored risk model is malformed (it needs features among "
                              f"{', '.join(RISK_FEATURES)}, one finite weight each, a finite bias and fitted_on); "
                              "re-fit it with examples/trust_calibration.py")


def build_coverage(model: Any, episodes: list[Any], *, seed: int, size: int = 2048, k: int = 5,
                   risk: dict[str, Any] | None = None, probe: list[Any] | None = None) -> Coverage:
    """The :class:`Coverage` of ``model``'s training ``episodes`` (:class:`~wm_eval.types.Trajectory`).

    The probe episodes measure ``scale`` and ``uncertainty_ref``; they should be episodes the model did
    not train on: ``probe`` (some of ``episodes``, by identity: the held-out ones of its training) or, by
    default, a seeded tenth of the episodes (at least one, none if there is only one), which is the held-out
    set of ``split=permutation`` with ``val_fraction=0.1``. Whole episodes, so that a probe pair's
    neighbouring time steps are not in the sample. ``size`` pairs of the other episodes form the sample."""
    if probe is None:
        order = np.random.default_rng(seed).permutation(len(episodes))
        n_probe = min(len(episodes) - 1, max(1, round(0.1 * len(episodes))))
        probe_eps, sample_eps = [episodes[i] for i in order[:n_probe]], [episodes[i] for i in order[n_probe:]]
    else:
        held = {id(e) for e in probe}
        probe_eps, sample_eps = list(probe), [e for e in episodes if id(e) not in held]
        if len(sample_eps) != len(episodes) - len(held) or not sample_eps:
            raise ValueError("probe must be some (not all) of the episodes themselves, each once")

    def pairs(eps: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([e.observations[:-1] for e in eps]).astype(np.float64),
                np.concatenate([e.actions for e in eps]).astype(np.float64))

    obs, act = pairs(episodes)
    x = np.concatenate([obs, act], axis=1)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    s_obs, s_act = pairs(sample_eps)
    picked = np.random.default_rng(seed + 1).permutation(len(s_obs))[:size]
    sample = (np.concatenate([s_obs[picked], s_act[picked]], axis=1) - mean) / std
    returns = np.array([float(np.sum(e.rewards)) for e in episodes])
    unit = Coverage(mean=mean, std=std, sample=sample.astype(np.float16).astype(np.float32), scale=1.0,
                    k=min(k, len(picked)), obs_low=obs.min(axis=0), obs_high=obs.max(axis=0),
                    return_low=float(returns.min()), return_high=float(returns.max()), uncertainty_ref=1.0,
                    episode_steps=max(len(e.actions) for e in episodes), episode_uncertainty_ref=1.0,
                    episode_coverage_ref=1.0, risk=risk)
    p_obs, p_act = pairs(probe_eps) if probe_eps else (s_obs, s_act)
    probe = np.random.default_rng(seed + 2).permutation(len(p_obs))[:size]
    scale = max(float(np.median(unit.distance(p_obs[probe], p_act[probe]))), 1e-6)
    reference = max(float(model.predict(p_obs[probe], p_act[probe]).uncertainty.float().median()), 1e-9)  # no grad:
    # predict runs under torch.inference_mode
    unit = replace(unit, scale=scale, uncertainty_ref=reference)
    per_episode = [(float(model.predict(e.observations[:-1], e.actions).uncertainty.float().mean()),
                    float(unit.distance(e.observations[:-1].astype(np.float64), e.actions.astype(np.float64)).mean()))
                   for e in (probe_eps or sample_eps) if len(e.actions)]
    return replace(unit, episode_uncertainty_ref=max(float(np.median([u for u, _ in per_episode])), 1e-9),
                   episode_coverage_ref=max(float(np.median([d for _, d in per_episode])), 1e-9))


def default_risk() -> dict[str, Any] | None:
    """The risk model that ``wm-eval train`` stores in new models: fitted on the policies of every embedded
    task (``wm_eval/assets/risk.json``, written by ``examples/trust_calibration.py fit --write``), or
    ``None`` when the package has none."""
    file = importlib.resources.files("wm_eval") / "assets" / "risk.json"
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))
