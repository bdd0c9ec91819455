"""Does bfloat16 world-model arithmetic change any verdict? float32 and bfloat16 evaluations of each zoo.

    python examples/precision.py                        # the three zoos, 10 episodes x 1000 steps
    python examples/precision.py --tasks Hopper-v5 --episodes 2 --horizon 20

Per task: how many policies' bfloat16 imagined mean return lies outside the float32 one's 95% interval,
the largest such shift in units of that interval's half-width, and each ranking metric under both
precisions. Same seeds, so the two runs start from identical states and draw identical random numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import wm_eval


def compare(task: str, *, episodes: int, horizon: int) -> dict:
    runs, seconds = {}, {}
    for precision in ("float32", "bfloat16"):
        start = time.perf_counter()
        runs[precision] = wm_eval.evaluate(task, ["zoo"], episodes=episodes, horizon=horizon, precision=precision,
                                           trajectories="summary", progress=False)
        seconds[precision] = round(time.perf_counter() - start, 1)
    shifts = []
    for p32, p16 in zip(runs["float32"].policies, runs["bfloat16"].policies):
        ci = p32.statistics["return"]["imagined"]
        half = max((ci["ci_high"] - ci["ci_low"]) / 2, 1e-9)
        shifts.append(abs(p16.statistics["return"]["imagined"]["mean"] - ci["mean"]) / half)
    metrics = {name: [round(runs[p].metrics["discounted_return"][name]["value"], 3) for p in runs]
               for name in ("spearman", "kendall", "pearson", "mmrv_normalized", "regret_at_1")}
    return {"task": task, "policies": len(shifts), "outside_interval": sum(s > 1 for s in shifts),
            "largest_shift_in_half_widths": round(max(shifts), 2), "metrics_float32_bfloat16": metrics,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--horizon", type=int, default=1000)
    args = parser.parse_args()
    for task in args.tasks:
        print(json.dumps(compare(task, episodes=args.episodes, horizon=args.horizon)))


if __name__ == "__main__":
    main()
