"""Write the policy zoos of wm_eval's own arm tasks (``envs/``): ladders of the scripted expert.

Usage (from the repository root, after the quick-start set-up)::

    python policies/scripted_zoo.py --task WmEval/ArmPush-v0 [--eval-episodes 50]

Writes ``policies/<task with / as _>/manifest.json``: twelve entries ``{"scripted": {"skill", "bias_angle"}}``
of :func:`wm_eval.envs.experts.expert` (skill from 0 to 1, so success rates spread from 0 to 1), each with
its measured true return (mean undiscounted return) and success rate over ``--eval-episodes`` MuJoCo
episodes seeded from ``--eval-seed``. No training: a manifest of numbers, built in about a minute here.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import wm_eval  # noqa: F401  (registers the envs/ tasks)
from wm_eval.envs.experts import expert
from wm_eval.tasks import quiet_mujoco

os.environ.setdefault("MUJOCO_GL", "egl")
HERE = Path(__file__).resolve().parent
SKILLS = {  # dense where the success rate climbs, so the ladder spreads from 0 to 1
    "WmEval/ArmPush-v0": (0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0),
    "WmEval/ArmDrawer-v0": (0.0, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 1.0),
}


def measure(task: str, policy: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> tuple[float, float]:
    """Mean undiscounted return and success rate of ``policy`` (batched ``obs -> actions``) over seeded episodes."""
    env = gym.vector.SyncVectorEnv([lambda: gym.make(task)] * episodes)
    obs, _ = env.reset(seed=[seed + i for i in range(episodes)])
    returns, success = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    for _ in range(env.envs[0].spec.max_episode_steps):
        obs, reward, _, _, info = env.step(policy(obs))
        returns += reward
        success |= info["is_success"]
    env.close()
    return float(returns.mean()), float(success.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(SKILLS))
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=10_000)
    args = parser.parse_args()
    quiet_mujoco()
    entries = []
    for i, skill in enumerate(SKILLS[args.task]):
        knobs = {"skill": skill, "bias_angle": round(0.7 * i, 2)}
        ret, rate = measure(args.task, expert(args.task, **knobs), args.eval_episodes, args.eval_seed)
        entries.append({"name": f"expert_s{skill:.2f}", "scripted": knobs, "true_return": ret, "true_success": rate})
        print(f"{entries[-1]['name']}: return {ret:8.2f}  success {rate:.2f}", flush=True)
    out = HERE / args.task.replace("/", "_") / "manifest.json"
    out.parent.mkdir(exist_ok=True)
    manifest = {"format": "wm_eval.zoo/1", "task": args.task, "eval_episodes": args.eval_episodes,
                "eval_seed": args.eval_seed,
                "recipe": f"python policies/scripted_zoo.py --task {args.task} --eval-episodes {args.eval_episodes}",
                "policies": entries}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)


if __name__ == "__main__":
    main()
