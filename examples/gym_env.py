"""Use a learned world model anywhere a Gymnasium env goes: your loop, SB3's evaluate_policy, wrappers.

    python examples/gym_env.py                       # HalfCheetah-v5, the embedded model
    python examples/gym_env.py --task Hopper-v5 --steps 200
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy

import wm_eval  # noqa: F401  (registers WorldModel-v0)
from wm_eval.policy import load_policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=1000, help="episode length in imagination")
    parser.add_argument("--num-envs", type=int, default=1024)
    args = parser.parse_args()

    # One imagined episode with the task's strongest zoo policy, step by step.
    env = gym.make("WorldModel-v0", task=args.task, max_episode_steps=args.steps)
    (policy,) = load_policies(f"zoo:{args.task}#ppo_0600k", observation_space=env.observation_space,
                              action_space=env.action_space)
    obs, _ = env.reset(seed=0)
    total, uncertainty, done = 0.0, [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs[None])[0])
        total += reward
        uncertainty.append(info["uncertainty"])
        done = terminated or truncated
    print(f"imagined return {total:.1f} over {len(uncertainty)} steps, mean uncertainty {np.mean(uncertainty):.4f}")

    # SB3's own evaluation loop runs on it unchanged (LoadedPolicy has SB3's predict()).
    mean, std = evaluate_policy(policy, env, n_eval_episodes=2, deterministic=True)
    print(f"evaluate_policy: {mean:.1f} +- {std:.1f}")
    env.close()

    # The batched VectorEnv: every env in one model call per step. It resets an env on the step after
    # its episode ended (Gymnasium's next-step autoreset), so only each env's first episode is counted.
    venv = gym.make_vec("WorldModel-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                        task=args.task, max_episode_steps=args.steps)
    obs, _ = venv.reset(seed=0)
    returns, running, lengths = np.zeros(args.num_envs), np.ones(args.num_envs, dtype=bool), np.zeros(args.num_envs)
    while running.any():
        obs, reward, terminated, truncated, info = venv.step(policy.act(obs))
        returns += np.where(running, reward, 0.0)
        lengths += running
        running &= ~(terminated | truncated)
    venv.close()
    print(f"{args.num_envs} imagined episodes: mean return {returns.mean():.1f}, mean length {lengths.mean():.1f}")


if __name__ == "__main__":
    main()
