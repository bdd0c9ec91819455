"""The typed Python API: evaluate two zoo policies, read the numbers, write the report folder.

    python examples/python_api.py            # the README's example (10 episodes x 1000 steps)
    python examples/python_api.py 2 50       # episodes, horizon: a quick run
"""

import sys

import wm_eval


def main(episodes: int = 10, horizon: int = 1000) -> None:
    ev = wm_eval.evaluate("HalfCheetah-v5", ["zoo:HalfCheetah-v5#ppo_0200k", "zoo:HalfCheetah-v5#ppo_0600k"],
                          episodes=episodes, horizon=horizon, seed=0, propagation="ts_inf")
    for p in ev.policies:
        imagined, true = p.statistics["return"]["imagined"], p.statistics["return"]["true"]
        print(f"{p.name}: imagined {imagined['mean']:.0f} [{imagined['ci_low']:.0f}, {imagined['ci_high']:.0f}], "
              f"true {true['mean']:.0f} [{true['ci_low']:.0f}, {true['ci_high']:.0f}]")
    print("per-episode imagined returns:", ev.policies[0].episodes["imagined_return"].round(1))
    print("Spearman:", ev.metrics["discounted_return"]["spearman"]["value"])
    wm_eval.report(ev, "runs/python-api")  # report.json/.md, plots, trajectories.h5, rollouts.rrd


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
