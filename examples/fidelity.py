"""Fidelity benchmark: how well the embedded world models rank the policy zoo against MuJoCo.

For each task, ``wm-eval evaluate`` on the whole zoo (12 policies) with ``--episodes`` paired episodes
per policy; prints a Markdown table of the ranking metrics with their bootstrap intervals (the table
in the README) and writes every report under ``--out``::

    python examples/fidelity.py --episodes 50 --out runs/fidelity
    python examples/fidelity.py --episodes 2 --horizon 20 --tasks Hopper-v5   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wm_eval.commands import run_evaluation
from wm_eval.config import load_config

METRICS = ("spearman", "kendall", "pearson", "mmrv", "regret_at_1", "normalized_abs_error")


def fidelity(tasks: list[str], *, episodes: int, horizon: int, seed: int, out: Path) -> list[dict]:
    """Evaluate each task's zoo in its embedded model; returns one row of metrics per task."""
    rows = []
    for task in tasks:
        cfg = load_config("evaluate", overrides=[f"task={task}", f"episodes={episodes}", f"horizon={horizon}",
                                                 f"seed={seed}", "rerun=false", "overwrite=true"])
        report = run_evaluation(cfg, out / task)
        rows.append({"task": task, "policies": len(report["policies"]), "episodes": episodes,
                     "trust_auroc": report["trust"]["auroc"], **report["metrics_ci"]})
    return rows


def markdown(rows: list[dict]) -> str:
    """The README table: value [95% interval] per metric and task."""
    def cell(m: dict) -> str:
        return "n/a" if m["value"] is None else f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"

    head = "| task | policies × episodes | " + " | ".join(METRICS) + " | trust AUROC |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    for r in rows:
        auroc = "n/a" if r["trust_auroc"] is None else f"{r['trust_auroc']:.2f}"
        lines.append(f"| {r['task']} | {r['policies']} × {r['episodes']} | "
                     + " | ".join(cell(r[m]) for m in METRICS) + f" | {auroc} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    args = parser.parse_args()
    rows = fidelity(args.tasks, episodes=args.episodes, horizon=args.horizon, seed=args.seed, out=args.out)
    table = markdown(rows)
    (args.out / "fidelity.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "fidelity.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
