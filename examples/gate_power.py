"""How often does the ``wm-eval regress`` gate catch a real regression, and how often does it cry wolf?

Measures, over repeated fresh seeds, the gate's detection rate for a policy degraded by ``--drop``
(10%) in **true** MuJoCo return and its false-alarm rate for an unchanged policy re-evaluated from
fresh start states (issue 7, item 5: at least 95% and at most 5%)::

    python examples/gate_power.py --policy policies/HalfCheetah-v5/ppo_0600k.zip --trials 100
    python examples/gate_power.py --policy ... --model runs/model --episodes 8 --horizon 30 --trials 4  # seconds

The degradation is Gaussian action noise whose std is calibrated by bisection so that the true mean
return, over ``--calibration-episodes`` start states used nowhere else, drops by ``--drop``. Trial ``r``
then draws fresh start states: the baseline is the policy's imagined returns from them; *detection*
is the noisy policy, from the same states (common random numbers, as the gate runs), being flagged;
*false alarm* is the unchanged policy, from other fresh states, being flagged. (From the baseline's
own states an unchanged policy under a deterministic model returns identical numbers and cannot be
flagged at all.) Cost: up to 14 MuJoCo evaluations of the calibration episodes, then
``trials x 3 x episodes`` imagined episodes batched ``--rows-per-batch`` at a time: about 5 minutes
at the defaults (HalfCheetah, 32 episodes x 1000 steps, 100 trials, a 5-member 4x200 ensemble) on one
busy core of our 2-core machine, two thirds of it imagined rollouts.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from wm_eval.errors import WmEvalError
from wm_eval.evaluation.plan import start_seeds
from wm_eval.models.checkpoint import resolve_model
from wm_eval.policy import load_policies
from wm_eval.regress import DEFAULT_TOLERANCE, imagined_returns, paired_change, true_returns
from wm_eval.tasks import make_env, reset_states


class NoisyPolicy:
    """``policy`` with seeded Gaussian action noise of std ``std``: a policy degraded on purpose."""

    def __init__(self, policy: Any, std: float, seed: int) -> None:
        self.policy, self.std, self.name = policy, float(std), f"{policy.name}+noise{std:.3f}"
        self.action_space = policy.action_space
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's actions plus noise, clipped to the action bounds."""
        actions = self.policy.act(obs)
        noisy = actions + self.rng.normal(0.0, self.std, actions.shape)
        return np.clip(noisy, self.action_space.low, self.action_space.high).astype(np.float32)


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def start_states(task: str, episodes: int, seed: int) -> np.ndarray:
    """``[episodes, state_dim]`` simulator states of seeded resets, as ``wm_eval.evaluate`` draws them."""
    return reset_states(task, start_seeds(seed, episodes).tolist())[1]


def gate_power(*, task: str, policy: str, model: str | None = None, drop: float = 0.10,
               tolerance: float = DEFAULT_TOLERANCE, episodes: int = 32, horizon: int = 1000, trials: int = 100,
               seed: int = 0, calibration_episodes: int = 64, confidence: float = 0.95, device: str = "cpu",
               rows_per_batch: int = 1024) -> dict[str, Any]:
    """Detection and false-alarm rates of the gate (see the module docstring) as a JSON-able dict.

    Keys: ``noise_std`` (calibrated), ``true_drop`` (measured at it), ``detection_rate``,
    ``false_alarm_rate``, ``imagined_drop`` (mean relative drop the world model saw for the degraded
    policy), the settings, and ``seconds``.
    """
    start = time.perf_counter()
    env = make_env(task)
    world_model = resolve_model(model, task=task, device=device)
    (base,) = load_policies(policy, task=task, device=device, observation_space=env.observation_space,
                            action_space=env.action_space)
    env.close()
    calibration = start_states(task, calibration_episodes, _seed(seed, 1))
    true_base = true_returns(task, base, calibration, horizon).mean()

    def true_drop(std: float) -> float:
        noisy = NoisyPolicy(base, std, _seed(seed, 2))
        return float(1.0 - true_returns(task, noisy, calibration, horizon).mean() / true_base)

    low, high = 0.0, 2.0
    tried = {high: true_drop(high)}
    if tried[high] < drop:
        raise WmEvalError(f"action noise of std {high} does not degrade {base.name} by {drop:.0%} in true return")
    for _ in range(12):  # bisection on the noise std, to within a quarter percent of true return
        std = 0.5 * (low + high)
        tried[std] = true_drop(std)
        if abs(tried[std] - drop) < 0.0025:
            break
        low, high = (std, high) if tried[std] < drop else (low, std)
    std, measured = min(tried.items(), key=lambda item: abs(item[1] - drop))

    detected, alarms, imagined_drops = [], [], []
    per_batch = max(1, rows_per_batch // (3 * episodes))
    for first in range(0, trials, per_batch):
        batch = range(first, min(first + per_batch, trials))
        same = np.concatenate([start_states(task, episodes, _seed(seed, 3, r)) for r in batch])
        fresh = np.concatenate([start_states(task, episodes, _seed(seed, 4, r)) for r in batch])
        # The trials of a batch run as the episodes of one imagined batch: the policy and its noisy copy
        # (one noise stream for the batch) from the same states, the unchanged policy also from fresh ones.
        noisy = NoisyPolicy(base, std, _seed(seed, 5, first))
        model_seed = _seed(seed, 6, first)
        base_same, noisy_same = (v.reshape(len(batch), episodes) for v in imagined_returns(
            world_model, task, [base, noisy], same, horizon=horizon, seed=model_seed, device=device))
        (base_fresh,) = (v.reshape(len(batch), episodes) for v in imagined_returns(
            world_model, task, [base], fresh, horizon=horizon, seed=model_seed, device=device))
        for i, r in enumerate(batch):
            baseline = base_same[i]
            hit = paired_change(baseline, noisy_same[i], tolerance=tolerance, confidence=confidence,
                                seed=_seed(seed, 7, r))
            alarm = paired_change(baseline, base_fresh[i], tolerance=tolerance, confidence=confidence,
                                  seed=_seed(seed, 8, r))
            detected.append(hit.regressed)
            alarms.append(alarm.regressed)
            imagined_drops.append(-hit.change)
    return {"task": task, "policy": base.name, "model": model or f"embedded:{task}", "drop": drop,
            "noise_std": std, "true_drop": measured, "detection_rate": float(np.mean(detected)),
            "false_alarm_rate": float(np.mean(alarms)), "imagined_drop": float(np.mean(imagined_drops)),
            "trials": trials, "episodes": episodes, "horizon": horizon, "tolerance": tolerance, "seed": seed,
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="HalfCheetah-v5")
    parser.add_argument("--policy", default="zoo:HalfCheetah-v5#ppo_0600k", help="the policy to degrade")
    parser.add_argument("--model", default=None, help="world model (default: embedded)")
    parser.add_argument("--drop", type=float, default=0.10, help="true relative drop to detect")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--calibration-episodes", type=int, default=64)
    parser.add_argument("--rows-per-batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = gate_power(task=args.task, policy=args.policy, model=args.model, drop=args.drop,
                        tolerance=args.tolerance, episodes=args.episodes, horizon=args.horizon, trials=args.trials,
                        calibration_episodes=args.calibration_episodes, rows_per_batch=args.rows_per_batch,
                        seed=args.seed)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
