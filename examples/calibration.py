"""Do the true-value intervals hold? Coverage, width and budgeted selection of PPI++ vs real episodes only.

    python examples/calibration.py                                   # 3 tasks x zoo x 100 episodes x 1000 steps
    python examples/calibration.py --tasks Hopper-v5 --episodes 12 --horizon 30 --draws 5 --n 3 5   # quick

One fully paired evaluation per task (``--episodes`` per policy, imagined and MuJoCo from the same start
states). Its episodes are split in two halves: the second half's MuJoCo returns give each policy's
true mean (50 episodes at the default), the first half is where real episodes are drawn from. For each
``n`` real episodes per policy and each of ``--draws`` random draws, an interval at ``--confidence``
comes from

* PPI++ (``wm_eval``'s estimator, Student-t): the ``n`` drawn paired episodes plus the imagined returns
  of the rest of the first half, and
* real only: a Student-t interval on the ``n`` real returns,

and we count how often each contains the true mean (coverage) and how wide it is. Budgeted selection:
with ``K`` real episodes in total, spread uniformly over the policies (``K / policies`` each), pick the
policy with the best estimate (world model: imagined mean for ``K = 0``, PPI for ``K / policies = 1``
with ``lambda = 1``, PPI++ above; without: a uniformly random pick for ``K = 0``, the real mean above)
and report the regret (true mean of the best policy minus that of the pick), as a share of the true
best-worst spread, averaged over draws. Prints one JSON line per task, then Markdown tables.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import wm_eval
from wm_eval.evaluation.estimators import ppi_mean, real_mean


def _draws(task: str, ev, *, ns, draws: int, confidence: float, budgets, seed: int) -> dict:
    true_all = np.stack([p.episodes["true_return"] for p in ev.policies])  # [P, E]
    imag_all = np.stack([p.episodes["imagined_return"] for p in ev.policies])
    half = true_all.shape[1] // 2
    truth = true_all[:, half:].mean(axis=1)  # each policy's true mean, from the held-out half
    y_pool, f_pool = true_all[:, :half], imag_all[:, :half]
    rng = np.random.default_rng(seed)
    coverage = {}
    for n in ns:
        hit = {"ppi": 0, "real": 0}
        width = {"ppi": [], "real": []}
        for _ in range(draws):
            for p in range(len(truth)):
                chosen = rng.permutation(half)
                real_idx, rest = chosen[:n], chosen[n:]
                ppi = ppi_mean(y_pool[p, real_idx], f_pool[p, real_idx], f_pool[p, rest], confidence=confidence)
                only = real_mean(y_pool[p, real_idx], confidence=confidence)
                for name, est in (("ppi", ppi), ("real", only)):
                    hit[name] += est.ci_low <= truth[p] <= est.ci_high
                    width[name].append(est.ci_high - est.ci_low)
        intervals = draws * len(truth)
        coverage[n] = {"ppi": hit["ppi"] / intervals, "real_only": hit["real"] / intervals,
                       "width_ppi": float(np.median(width["ppi"])), "width_real_only": float(np.median(width["real"])),
                       "intervals": intervals}
    spread = float(truth.max() - truth.min()) or 1.0
    regret = {}
    for budget in budgets:
        k = budget // len(truth)
        with_model, without = [], []
        for _ in range(draws):
            picks_model, picks_real = [], []
            for p in range(len(truth)):
                chosen = rng.permutation(half)
                real_idx, rest = chosen[:k], chosen[k:]
                if k == 0:
                    picks_model.append(f_pool[p].mean())
                elif k == 1:  # PPI without power tuning (lambda = 1): one real episode corrects the mean
                    picks_model.append(f_pool[p, rest].mean() + (y_pool[p, real_idx] - f_pool[p, real_idx]).mean())
                else:
                    picks_model.append(ppi_mean(y_pool[p, real_idx], f_pool[p, real_idx], f_pool[p, rest]).mean)
                picks_real.append(y_pool[p, real_idx].mean() if k else rng.random())
            with_model.append(truth.max() - truth[int(np.argmax(picks_model))])
            without.append(truth.max() - truth[int(np.argmax(picks_real))])
        regret[budget] = {"with_model": float(np.mean(with_model)) / spread, "real_only": float(np.mean(without)) / spread,
                          "per_policy": k}
    return {"task": task, "policies": len(truth), "episodes": true_all.shape[1], "true_mean_episodes":
            true_all.shape[1] - half, "confidence": confidence, "draws": draws, "coverage": coverage,
            "regret": regret, "spearman": ev.metrics["return"]["spearman"]["value"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--n", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 12, 36, 120])
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks:
        ev = wm_eval.evaluate(task, ["zoo"], episodes=args.episodes, horizon=args.horizon, seed=args.seed,
                              bootstrap=200, progress=False)
        row = _draws(task, ev, ns=args.n, draws=args.draws, confidence=args.confidence, budgets=args.budgets,
                     seed=args.seed)
        print(json.dumps(row))
        rows.append(row)
    level = f"{100 * args.confidence:g}%"
    print(f"\n| task | n real / policy | coverage PPI++ ({level}) | coverage real only | median width PPI++ | "
          "median width real only |\n|---|---|---|---|---|---|")
    for r in rows:
        for n, c in r["coverage"].items():
            print(f"| {r['task']} | {n} | {c['ppi']:.3f} | {c['real_only']:.3f} | {c['width_ppi']:.4g} | "
                  f"{c['width_real_only']:.4g} |")
    print("\n| task | real budget K | regret@1 with the world model | regret@1 real episodes only |\n|---|---|---|---|")
    for r in rows:
        for budget, g in r["regret"].items():
            print(f"| {r['task']} | {budget} ({g['per_policy']} per policy) | {g['with_model']:.3f} | "
                  f"{g['real_only']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
