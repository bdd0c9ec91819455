"""Frozen, validated dataclasses that cross module lines.

Reporting reads only these records (never the evaluation modules). Trajectories follow the Minari trajectory convention: ``T`` steps have ``T + 1``
observations and ``T`` actions, rewards, terminations and truncations, with
``terminated`` and ``truncated`` kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METRIC_NAMES", "RISK_FEATURES", "Trajectory", "BatchRollout", "PairedEpisode", "PolicyResult", "Evaluation", "ChangeTest",
           "PolicyCheck", "RegressResult"]


METRIC_NAMES = ("spearman", "kendall", "pearson", "mmrv", "mmrv_normalized", "regret_at_1", "regret_at_3",
                "normalized_abs_error")
"""The ranking metrics of an :class:`Evaluation`, per statistic."""

RISK_FEATURES = ("log_disagreement", "log_coverage", "return_excess")
"""The per-policy features a stored risk model may use (:mod:`wm_eval.evaluation.trust_signal` computes
them; :mod:`wm_eval.models.coverage` stores the model)."""


@dataclass(frozen=True)
class Trajectory:
    """One episode.

    Attributes:
        observations: ``[T + 1, obs_dim]`` float array.
        actions: ``[T, act_dim]`` float array.
        rewards: ``[T]`` float array.
        terminations: ``[T]`` bool array (MDP termination).
        truncations: ``[T]`` bool array (time limit or cut-off).
        sim_states: ``[T + 1, state_dim]`` full MuJoCo physics state per step, or ``None``.
        seed: the reset seed of the episode, or ``None``.
        infos: extra per-episode data (for example ``{"policy": "ppo_0300k"}``).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    sim_states: np.ndarray | None = None
    seed: int | None = None
    infos: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if len(self.observations) != steps + 1:
            raise ValueError(f"Trajectory has {len(self.observations)} observations for {steps} actions; expected {steps + 1}")
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"Trajectory.{name} has length {len(getattr(self, name))}; expected {steps}")
        if self.sim_states is not None and len(self.sim_states) != steps + 1:
            raise ValueError(f"Trajectory.sim_states has length {len(self.sim_states)}; expected {steps + 1}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def total_reward(self) -> float:
        """Undiscounted return."""
        return float(np.sum(self.rewards))


@dataclass(frozen=True)
class BatchRollout:
    """``N`` padded episodes of at most ``H`` steps; entries past ``lengths[i]`` are zero."""

    observations: np.ndarray  # [N, H + 1, obs_dim]
    actions: np.ndarray  # [N, H, act_dim]
    rewards: np.ndarray  # [N, H]
    terminations: np.ndarray  # [N, H] bool
    truncations: np.ndarray  # [N, H] bool
    lengths: np.ndarray  # [N] int
    uncertainty: np.ndarray | None = None  # [N, H], imagined worlds
    sim_states: np.ndarray | None = None  # [N, H + 1, state_dim], real worlds

    def __post_init__(self) -> None:
        n, h = self.rewards.shape
        checks = {"observations": (self.observations.shape[:2], (n, h + 1)),
                  "actions": (self.actions.shape[:2], (n, h)), "terminations": (self.terminations.shape, (n, h)),
                  "truncations": (self.truncations.shape, (n, h)), "lengths": (self.lengths.shape, (n,))}
        if self.uncertainty is not None:
            checks["uncertainty"] = (self.uncertainty.shape, (n, h))
        if self.sim_states is not None:
            checks["sim_states"] = (self.sim_states.shape[:2], (n, h + 1))
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"BatchRollout.{name} has shape {tuple(got)}; expected {want}")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def mask(self) -> np.ndarray:
        """``[N, H]`` bool: the steps each episode really took (the rest is padding)."""
        return np.arange(self.rewards.shape[1])[None, :] < self.lengths[:, None]

    def rows(self, index: Any) -> BatchRollout:
        """The episodes ``index`` (a slice or an index array) as a new ``BatchRollout``."""
        return BatchRollout(*(None if a is None else a[index] for a in (
            self.observations, self.actions, self.rewards, self.terminations, self.truncations, self.lengths,
            self.uncertainty, self.sim_states)))

    def trajectory(self, i: int, *, seed: int | None = None, infos: dict[str, Any] | None = None) -> Trajectory:
        """Episode ``i`` as a :class:`Trajectory` (uncertainty, when present, goes into ``infos``)."""
        t = int(self.lengths[i])
        extra = dict(infos or {})
        if self.uncertainty is not None:
            extra["uncertainty"] = self.uncertainty[i, :t]
        return Trajectory(
            observations=self.observations[i, : t + 1], actions=self.actions[i, :t], rewards=self.rewards[i, :t],
            terminations=self.terminations[i, :t], truncations=self.truncations[i, :t],
            sim_states=None if self.sim_states is None else self.sim_states[i, : t + 1], seed=seed, infos=extra,
        )


@dataclass(frozen=True)
class PairedEpisode:
    """One start state, rolled out by one policy in MuJoCo (``true``) and in the model (``imagined``).

    ``true.sim_states`` holds the simulator states; ``imagined.infos["uncertainty"]`` the per-step
    uncertainty ``[T']``. Both trajectories carry the start ``seed``.
    """

    policy: str
    policy_index: int
    episode: int
    seed: int
    true: Trajectory
    imagined: Trajectory


@dataclass(frozen=True)
class PolicyResult:
    """One policy's evaluation.

    Attributes:
        name, source: the policy's name and where another process reloads it from (``None``: in memory).
        key: the stable key of its random streams (:func:`wm_eval.streams.policy_key` of ``name``).
        episodes: per-episode values, each ``[episodes]``: ``imagined_<v>`` and ``true_<v>`` for ``v``
            in ``return``, ``discounted_return``, ``success`` (where the task defines success),
            ``length``, ``terminated``; ``imagined_uncertainty`` (mean per step),
            ``imagined_trust_score`` (summed over the episode) and ``final_state_error``.
        kept: the paired episodes kept in full (see ``trajectories=`` of :func:`wm_eval.evaluate`).
        statistics: per statistic (``return``, ``discounted_return``, ``success``) the imagined and
            true ``{mean, ci_low, ci_high}``.
        summary: the remaining per-policy numbers of ``report.json`` (``abs_error``, ``uncertainty``, ...;
            ``terminated``: the imagined and true share of episodes ended by termination (not truncation),
            each ``{mean, ci_low, ci_high}`` with a Wilson interval).
        true_estimate: per statistic, the estimate of the policy's TRUE mean with its interval
            (``mean``, ``ci_low``, ``ci_high``, ``method``, ``real_episodes``, ``lam``,
            ``effective_real_episodes``, ...; see :mod:`wm_eval.evaluation.estimators`).
    """

    name: str
    source: str | None
    key: int
    episodes: dict[str, np.ndarray]
    kept: tuple[PairedEpisode, ...]
    statistics: dict[str, dict[str, dict[str, float]]]
    summary: dict[str, Any]
    true_estimate: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: len(v) for k, v in self.episodes.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"PolicyResult '{self.name}': per-episode arrays differ in length: {sizes}")


@dataclass(frozen=True)
class Evaluation:
    """Everything a paired evaluation produced (``wm_eval.evaluate``'s result); reporting reads only this.

    Attributes:
        task, model, model_fingerprint: what was evaluated with what.
        seed, mode, horizon, propagation, sample, gamma, chunk: how.
        start_seeds: ``[N]`` Gymnasium reset seeds of the episodes' start states.
        obs_scale: ``[obs_dim]`` the model's per-dimension observation std (unit of state errors).
        policies: one :class:`PolicyResult` per policy, in the order given.
        metrics: ranking metrics across policies, each ``{value, ci_low, ci_high}``, keyed by
            statistic (``discounted_return``, ``return``, ``success``) then metric name.
        horizon_error: ``error`` ``[H + 1]`` (mean normalised state error over pairs still running
            on both sides), ``running`` ``[H + 1]`` (their count), ``diverged`` ``[H + 1]`` (pairs
            where exactly one side has terminated by then), ``pairs`` (all pairs) and
            ``diverged_fraction`` (``diverged / pairs``). Non-finite errors (a diverged model) count
            as not running.
        trust: the trust signal's definition and how well it flags wrong imagined returns.
        config: the arguments of the call, JSON-able.
        timings: wall seconds per phase.
        units: the ids of the work units, in plan order.
    """

    task: str
    model: str
    model_fingerprint: str
    seed: int
    mode: str
    horizon: int
    propagation: str
    sample: bool
    gamma: float
    chunk: int
    start_seeds: np.ndarray
    obs_scale: np.ndarray
    policies: tuple[PolicyResult, ...]
    metrics: dict[str, dict[str, dict[str, float]]]
    horizon_error: dict[str, Any]
    trust: dict[str, Any]
    config: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("an Evaluation needs at least one policy")
        for p in self.policies:
            for name, values in p.episodes.items():
                if len(values) != len(self.start_seeds):
                    raise ValueError(f"policy '{p.name}' has {len(values)} values of {name} for "
                                     f"{len(self.start_seeds)} episodes")

    @property
    def episodes(self) -> int:
        """Paired episodes per policy."""
        return len(self.start_seeds)

    def policy(self, name: str) -> PolicyResult:
        """The result of the policy called ``name``."""
        for p in self.policies:
            if p.name == name:
                return p
        raise KeyError(f"no policy '{name}' in this evaluation: {[p.name for p in self.policies]}")


@dataclass(frozen=True)
class ChangeTest:
    """Relative change of the mean return, ``(candidate - baseline) / |baseline|``, its paired
    bootstrap interval, and whether it is a regression (``change < -tolerance`` and ``ci_high < 0``)."""

    change: float
    ci_low: float
    ci_high: float
    regressed: bool


@dataclass(frozen=True)
class SuccessTest:
    """A paired test of a drop in success rate (McNemar's exact test: under no change, an episode whose
    outcome flipped is as likely to have been lost as gained).

    Attributes:
        baseline_rate, candidate_rate: success rates over the same start states.
        lost, gained: episodes that succeeded in the baseline and fail now, and the reverse.
        p_value: one-sided exact binomial ``P(X >= lost)``, ``X ~ Bin(lost + gained, 1/2)``.
        tolerance: the drop in rate (absolute) that counts; regressed: the drop exceeds it and
            ``p_value < (1 - confidence) / 2``.
    """

    baseline_rate: float
    candidate_rate: float
    lost: int
    gained: int
    p_value: float
    tolerance: float
    regressed: bool

    @property
    def change(self) -> float:
        """Candidate minus baseline success rate."""
        return self.candidate_rate - self.baseline_rate


@dataclass(frozen=True)
class PolicyCheck:
    """One policy's verdict in the CI gate. ``true_*`` are filled by ``confirm=true`` for policies whose
    imagined return regressed.

    ``risk`` is the candidate's estimated probability that its imagined mean return is off by more than
    20% (``None`` when the model stores no coverage data or no risk model) and ``flagged`` is
    ``risk > 0.5``, both as :func:`wm_eval.evaluate` computes them from the candidate's imagined
    episodes. A flagged verdict is less trustworthy; it is information, never a failure.
    """

    name: str
    path: str
    file_changed: bool | None  # None: no file (module:callable)
    baseline: dict[str, float]
    candidate: dict[str, float]
    test: ChangeTest
    true_candidate: dict[str, float] | None = None
    true_test: ChangeTest | None = None
    success_test: SuccessTest | None = None
    risk: float | None = None
    flagged: bool = False

    @property
    def return_regressed(self) -> bool:
        """The world model's return verdict, overruled by MuJoCo when ``confirm`` had ground truth to compare."""
        return self.true_test.regressed if self.true_test is not None else self.test.regressed

    @property
    def regressed(self) -> bool:
        """A return regression, or a success-rate one (tasks with a success rule)."""
        return self.return_regressed or (self.success_test is not None and self.success_test.regressed)


@dataclass(frozen=True)
class RegressResult:
    """Everything a gate check found; the summaries only read this."""

    task: str
    model: str
    fingerprint: str
    baseline_fingerprint: str
    episodes: int
    horizon: int
    seed: int
    tolerance: float
    confidence: float
    checks: list[PolicyCheck]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[PolicyCheck]:
        """The policies that failed the gate."""
        return [c for c in self.checks if c.regressed]
