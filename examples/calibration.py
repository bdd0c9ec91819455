"""Do the true-value intervals hold? Coverage, width and budgeted selection of PPI++ vs real episodes only.

    python examples/calibration.py                                   # 3 tasks x zoo x 200 episodes x 1000 steps
    python examples/calibration.py --tasks Hopper-v5 --episodes 12 --horizon 30 --draws 5 --n 3 5   # quick

One fully paired evaluation per task (``--episodes`` per policy, imagined and MuJoCo from the same start
states) of the zoo plus the policies the model never saw (``examples/trust_calibration.py``'s list:
held-out checkpoints of other seeds and algorithms; ``--no-unseen`` leaves them out). Each draw splits every policy's episodes at random: ``n`` real (paired) episodes, ``--pool - n``
imagined-only ones, and the rest (150 at the defaults), whose MuJoCo mean is the policy's true mean.
For each ``n`` and each of ``--draws`` draws, an interval at ``--confidence`` comes from

* PPI++ as wm_eval's reports compute it (one lambda pooled over the policies, Student-t), and
* real only: a Student-t interval on the ``n`` real returns,

and we count how often each contains the true mean (coverage) and how wide it is. The true mean is
itself an estimate, and its noise lowers even an exact interval's hit rate; the column "an exact
interval" shows by how much (normal approximation). Budgeted selection:
with ``K`` real episodes in total, spread as evenly as they go (``K // policies`` each, one more for
``K % policies`` random policies), pick the policy with the best estimate (world model: the imagined
mean for a policy with no real episode, PPI for one (the pooled ``lambda`` of the policies with 2 or more,
else :func:`single_episode_lambda`), PPI++ above; without: a
uniformly random pick for ``K = 0``, else the best real mean among the policies that got episodes)
and report the regret (true mean of the best policy minus that of the pick), as a share of the true
best-worst spread, averaged over draws. Prints one JSON line per task, then Markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

import wm_eval
from scipy import stats

from wm_eval.evaluation.estimators import pooled_lambda, ppi_mean, real_mean
from wm_eval.models.checkpoint import embedded_model_path

from trust_calibration import ROOT, unseen  # noqa: E402  (examples/ is this script's folder)


def _returns(task: str, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """``true``, ``imagined`` ``[policies, episodes]`` returns and the evaluation's Spearman (cached)."""
    extra = unseen(task) if args.unseen else []
    cache = None
    if args.cache:  # keyed by the embedded model and the policy manifests too: a new model or zoo re-measures
        folder = task.replace("/", "_")
        key = hashlib.sha256((embedded_model_path(task) / "spec.json").read_bytes())
        for manifest in [str(ROOT / "policies" / folder / "manifest.json"), *extra]:
            key.update(Path(manifest).read_bytes())
        cache = Path(args.cache) / (f"{folder}-{args.episodes}x{args.horizon}-seed{args.seed}"
                                    f"{'-unseen' if extra else ''}-{key.hexdigest()[:10]}.npz")
        if cache.is_file():
            with np.load(cache) as data:
                return {k: data[k] for k in data.files}
    ev = wm_eval.evaluate(task, ["zoo", *extra], episodes=args.episodes, horizon=args.horizon, seed=args.seed,
                          bootstrap=200, progress=False)
    out = {"true": np.stack([p.episodes["true_return"] for p in ev.policies]),
           "imagined": np.stack([p.episodes["imagined_return"] for p in ev.policies]),
           "spearman": np.array(ev.metrics["return"]["spearman"]["value"])}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **out)
    return out


def single_episode_lambda(ys: list[np.ndarray], fs: list[np.ndarray], f_us: list[np.ndarray]) -> float:
    """A PPI ``lambda`` that policies with a single real episode can tune, clipped to ``[0, 1]``.

    One episode has no covariance of its own, so each paired episode is centred on its policy's
    imagined-only mean instead: ``sum (y - mean f_u)(f - mean f_u) / sum n (1 + n/N) var(f_u)``. The
    policies' model biases cancel in expectation but not in noise: the estimate is the noisier the more
    the biases spread; ``var(f_u) / N`` biases the numerator up slightly.
    """
    num = den = 0.0
    for y, f, f_u in zip(ys, fs, f_us):
        if len(y) == 0 or len(f_u) < 2:
            continue
        centre = f_u.mean()
        num += float(np.sum((y - centre) * (f - centre)))
        den += len(y) * (1 + len(y) / len(f_u)) * float(np.var(f_u, ddof=1))
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0


def _draws(task: str, returns: dict[str, np.ndarray], *, ns, draws: int, confidence: float, budgets,
           seed: int, pool: int) -> dict:
    true_all, imag_all = returns["true"], returns["imagined"]  # [P, E]
    policies, episodes = true_all.shape
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per policy, a random split of its episodes: n real (paired), pool - n imagined only, the rest truth."""
        order = np.stack([rng.permutation(episodes) for _ in range(policies)])
        return order[:, :n], order[:, n:pool], order[:, pool:]

    def pick(a: np.ndarray, idx: np.ndarray) -> list[np.ndarray]:
        return [a[p, i] for p, i in enumerate(idx)]

    coverage: dict[int, dict[str, float]] = {}
    for n in ns:
        hit = {"ppi": 0, "real": 0}
        width: dict[str, list[float]] = {"ppi": [], "real": []}
        lams = []
        for _ in range(draws):
            real_idx, rest, truth_idx = split(n)
            ys, fs, f_us = pick(true_all, real_idx), pick(imag_all, real_idx), pick(imag_all, rest)
            lam = pooled_lambda(ys, fs, f_us)  # as wm_eval's reports do: one lambda for the evaluation
            lams.append(lam)
            truth = [t.mean() for t in pick(true_all, truth_idx)]
            for y, f, f_u, target in zip(ys, fs, f_us, truth):
                for name, est in (("ppi", ppi_mean(y, f, f_u, confidence=confidence, lam=lam)),
                                  ("real", real_mean(y, confidence=confidence))):
                    hit[name] += est.ci_low <= target <= est.ci_high
                    width[name].append(est.ci_high - est.ci_low)
        intervals = draws * policies
        # the true means come from episodes - pool episodes: their own noise lowers even an exact interval's hit rate
        exact = 2 * stats.norm.cdf(stats.norm.ppf(0.5 + confidence / 2) / np.sqrt(1 + n / (episodes - pool))) - 1
        coverage[n] = {"ppi": hit["ppi"] / intervals, "real_only": hit["real"] / intervals,
                       "exact_interval_would_show": float(exact), "lambda_median": float(np.median(lams)),
                       "width_ppi": float(np.median(width["ppi"])), "width_real_only": float(np.median(width["real"])),
                       "intervals": intervals}
    truth_all = true_all.mean(axis=1)
    spread = float(truth_all.max() - truth_all.min()) or 1.0
    regret = {}
    for budget in budgets:
        with_model, without = [], []
        for _ in range(draws):
            # K episodes spread as evenly as they go: K // P each, one more for K % P random policies
            n = np.full(policies, budget // policies)
            n[rng.permutation(policies)[: budget % policies]] += 1
            order = np.stack([rng.permutation(episodes) for _ in range(policies)])
            ys = [true_all[p, order[p, :n[p]]] for p in range(policies)]
            fs = [imag_all[p, order[p, :n[p]]] for p in range(policies)]
            f_us = [imag_all[p, order[p, n[p]:pool]] for p in range(policies)]
            many = [p for p in range(policies) if n[p] >= 2]
            lam = pooled_lambda([ys[p] for p in many], [fs[p] for p in many], [f_us[p] for p in many])
            # one real episode: the pooled lambda when some policy has 2 or more, else one tuned from single episodes
            lam_one = lam if many else single_episode_lambda(ys, fs, f_us)
            scores = []
            for y, f, f_u, k in zip(ys, fs, f_us, n):
                if k == 0:  # the imagined mean alone
                    scores.append(f_u.mean())
                elif k == 1:  # PPI with a lambda that single episodes can tune (below)
                    scores.append(lam_one * f_u.mean() + (y - lam_one * f).mean())
                else:
                    scores.append(ppi_mean(y, f, f_u, lam=lam).mean)
            plain = [y.mean() if len(y) else -np.inf for y in ys] if budget else list(rng.random(policies))
            with_model.append(truth_all.max() - truth_all[int(np.argmax(scores))])
            without.append(truth_all.max() - truth_all[int(np.argmax(plain))])
        regret[budget] = {"with_model": float(np.mean(with_model)) / spread, "real_only": float(np.mean(without)) / spread,
                          "per_policy": budget / policies}
    return {"task": task, "policies": policies, "episodes": episodes, "pool": pool,
            "true_mean_episodes": episodes - pool, "confidence": confidence, "draws": draws, "coverage": coverage,
            "regret": regret, "spearman": float(returns["spearman"])}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--pool", type=int, default=50, help="episodes real ones are drawn from (the rest give the "
                        "true means; 0: half)")
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--n", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 12, 36, 120])
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="folder keeping each task's per-episode returns, reused when present")
    parser.add_argument("--no-unseen", dest="unseen", action="store_false",
                        help="the zoo only, without the policies the model never saw (policies/experts, PPO of other seeds)")
    args = parser.parse_args(argv)
    rows = []
    for task in args.tasks:
        returns = _returns(task, args)
        pool = args.pool or args.episodes // 2
        if args.n and min(args.n) < 2:
            parser.error("--n: intervals need at least 2 real episodes")
        per_policy = [-(-b // len(returns["true"])) for b in args.budgets]  # the most one policy gets
        if not max([*args.n, *per_policy]) < pool < args.episodes:
            parser.error(f"--pool {pool} must exceed every n and leave episodes for the true means")
        row = _draws(task, returns, ns=args.n, draws=args.draws, confidence=args.confidence, budgets=args.budgets,
                     seed=args.seed, pool=pool)
        print(json.dumps(row))
        rows.append(row)
    level = f"{100 * args.confidence:g}%"
    print(f"\n| task | n real / policy | coverage PPI++ ({level}) | coverage real only | an exact interval | "
          "median λ | median width PPI++ | median width real only |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        for n, c in r["coverage"].items():
            print(f"| {r['task']} | {n} | {c['ppi']:.3f} | {c['real_only']:.3f} | {c['exact_interval_would_show']:.3f} | "
                  f"{c['lambda_median']:.2f} | {c['width_ppi']:.4g} | {c['width_real_only']:.4g} |")
    print("\n| task | real budget K | regret@1 with the world model | regret@1 real episodes only |\n|---|---|---|---|")
    for r in rows:
        for budget, g in r["regret"].items():
            print(f"| {r['task']} | {budget} ({g['per_policy']:.2g} per policy) | {g['with_model']:.3f} | "
                  f"{g['real_only']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
