"""What the evaluation's fixed row blocks cost: imagined env-steps/s of ``WorldModel-v0`` at one batch
size with 128-row blocks (the evaluation's) against 256-row blocks and one model call per step.

    python examples/block_speed.py                  # batch 8192, 3 windows of 1 s each
    python examples/block_speed.py --batch 64 --seconds 0.05

Prints one JSON line: per block size, the median rate and the slowest and fastest window.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from wm_eval.timing import measure_rate
from wm_eval.world_model_env import WorldModelVectorEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates = {}
    for label, block in (("128", 128), ("256", 256), ("one call", args.batch)):
        env = WorldModelVectorEnv(args.batch, task="HalfCheetah-v5", block_rows=block)
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (args.batch, 6)).astype(np.float32)
        rate = measure_rate(lambda: env.step(actions), items=args.batch, seconds=args.seconds, repeats=args.repeats)
        rates[label] = {"median": round(rate), "low": round(rate.low), "high": round(rate.high)}
        env.close()
    print(json.dumps({"batch": args.batch, "env_steps_per_s": rates}))


if __name__ == "__main__":
    main()
