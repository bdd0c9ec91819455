"""Fidelity benchmark: how well the embedded world models rank the policy zoo against MuJoCo.

For each task, ``wm_eval.evaluate`` on the whole zoo (12 policies) with ``--episodes`` paired episodes
per policy, then ``wm_eval.report`` into ``--out/<task>``; prints a Markdown table of the ranking
metrics on discounted returns with their bootstrap intervals (the table in the README), and for tasks
with a success rule a second table on success rates. ``mmrv`` is SIMPLER's, in return (or success-rate)
units; ``mmrv_normalized`` divides it by the true best - worst spread::

    python examples/fidelity.py --episodes 50 --out runs/fidelity
    python examples/fidelity.py --episodes 50 --tasks WmEval/ArmPush-v0 WmEval/ArmDrawer-v0   # horizon: their 150
    python examples/fidelity.py --episodes 2 --horizon 20 --tasks Hopper-v5   # a quick smoke run
    python examples/fidelity.py --tasks Hopper-v5 --model Hopper-v5=runs/models/Hopper-v5-multistep --set unseen
    python examples/fidelity.py --tasks Walker2d-v5 --propagation ts1   # a random member per step

``--model TASK=PATH`` evaluates another checkpoint for a task (default: the embedded model); ``--set unseen``
evaluates the policies the model never saw instead of the zoo (held-out checkpoints of other seeds and
algorithms, as listed by ``unseen`` in ``examples/trust_calibration.py``), ``--set all`` both;
``--propagation`` and ``--sample`` are those of ``wm_eval.evaluate`` (default: the ensemble mean).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import wm_eval
from wm_eval.models.base import PROPAGATIONS

from trust_calibration import unseen  # noqa: E402  (examples/ is this script's folder)

METRICS = ("spearman", "kendall", "pearson", "mmrv", "mmrv_normalized", "regret_at_1", "normalized_abs_error")
SUCCESS_METRICS = ("spearman", "pearson", "mmrv", "regret_at_1")


def fidelity(tasks: list[str], *, episodes: int, horizon: int | None, seed: int, out: Path,
             progress: bool = True, models: dict[str, str] | None = None, policy_set: str = "zoo",
             propagation: str = "mean", sample: bool = False) -> list[dict]:
    """Evaluate each task's policies (``policy_set``: zoo, unseen or all) in its embedded model (or
    ``models[task]``) with ``propagation`` and ``sample``; returns one row of metrics per task."""
    rows = []
    for task in tasks:
        policies = {"zoo": ["zoo"], "unseen": unseen(task), "all": ["zoo", *unseen(task)]}[policy_set]
        if not policies:
            print(f"{task}: no unseen policies (train some with policies/train_experts.py); skipped")
            continue
        model = (models or {}).get(task)
        evaluation = wm_eval.evaluate(task, policies, model=model, episodes=episodes, horizon=horizon, seed=seed,
                                      propagation=propagation, sample=sample, progress=progress)
        report = wm_eval.report(evaluation, out / task, rerun=False)
        rows.append({"task": task, "model": model or "embedded", "set": policy_set, "propagation": propagation,
                     "sample": sample,
                     "policies": len(report["policies"]), "episodes": episodes,
                     "trust_auroc": report["trust"]["auroc"], **report["metrics_ci"],
                     "success": report["metrics_by_statistic"].get("success")})
    return rows


def markdown(rows: list[dict]) -> str:
    """The README table: value [95% interval] per metric and task."""
    def cell(m: dict) -> str:
        return "n/a" if m["value"] is None else f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"

    head = "| task | policies × episodes | " + " | ".join(METRICS) + " | trust AUROC |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    if rows and (rows[0]["propagation"] != "mean" or rows[0]["sample"]):  # not the default imagination
        lines = [f"Propagation `{rows[0]['propagation']}`, sample {str(rows[0]['sample']).lower()}:", ""] + lines
    for r in rows:
        auroc = "n/a" if r["trust_auroc"] is None else f"{r['trust_auroc']:.2f}"
        lines.append(f"| {r['task']} | {r['policies']} × {r['episodes']} | "
                     + " | ".join(cell(r[m]) for m in METRICS) + f" | {auroc} |")
    with_success = [r for r in rows if r.get("success")]
    if with_success:  # tasks with a success rule: the same metrics on success rates (MMRV in rate units)
        lines += ["", "Success rates:", "", "| task | policies × episodes | " + " | ".join(SUCCESS_METRICS) + " |",
                  "|" + "---|" * (len(SUCCESS_METRICS) + 2)]
        lines += [f"| {r['task']} | {r['policies']} × {r['episodes']} | "
                  + " | ".join(cell(r["success"][m]) for m in SUCCESS_METRICS) + " |" for r in with_success]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the task's time limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    parser.add_argument("--model", nargs="*", default=[], metavar="TASK=PATH", help="another checkpoint for a task")
    parser.add_argument("--set", dest="policy_set", choices=("zoo", "unseen", "all"), default="zoo")
    parser.add_argument("--propagation", choices=PROPAGATIONS, default="mean",
                        help="mean: the ensemble mean; ts1: a random member per step; ts_inf: one member per episode")
    parser.add_argument("--sample", action="store_true", help="sample next states from the members' Gaussians")
    args = parser.parse_args()
    if any("=" not in item for item in args.model):
        parser.error("--model takes TASK=PATH items, e.g. Hopper-v5=runs/models/Hopper-v5-multistep")
    models = dict(item.split("=", 1) for item in args.model)
    rows = fidelity(args.tasks, episodes=args.episodes, horizon=args.horizon, seed=args.seed, out=args.out,
                    models=models, policy_set=args.policy_set, propagation=args.propagation, sample=args.sample)
    table = markdown(rows)
    (args.out / "fidelity.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "fidelity.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
