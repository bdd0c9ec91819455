"""Run-to-run spread of a training recipe: the same recipe trained with several seeds, each ranking the same policies.

A model choice that rests on one training run can be the seed's doing: on Hopper, three seeds of one recipe
rank its zoo with MMRV 0.024 to 0.054 (README, "Unseen policies"). This trains ``--config`` once per
``--seeds`` entry, all on one held-out split (``split_seed``: ``--split-seed``, by default the recipe's own, so
every run validates on the episodes the recipe's run does, and on none its ``init`` trained on when the
init was trained on that split), ranks the task's zoo (or ``--set
unseen``/``all``) in each model against MuJoCo with ``examples/fidelity.py``, and prints per seed and over
the seeds (mean, sample standard deviation, range) Spearman, normalised MMRV, regret@1 and normalised
absolute error::

    python examples/seed_spread.py --config configs/train/Hopper-v5-sac-td3-ppo23-multistep-k10.yaml --seeds 0 1 2
    python examples/seed_spread.py --config configs/train/Hopper-v5-sac-td3-ppo23-multistep-k10.yaml --seeds 0 1 2 \\
        --set unseen --episodes 20 --out runs/spread-hopper-unseen

``key=value`` items after ``--`` override the recipe for every seed (``-- finetune_epochs=5``). A seed whose
checkpoint ``<out>/seed<S>/model`` exists is not trained again and a seed whose ranking was already
measured with the same settings is not evaluated again, so a killed run resumes where it stopped.
``<out>/spread.json`` records the recipe, seeds, settings, every run's metrics with their bootstrap
intervals, the summary, the library versions and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from wm_eval.cli import main as wm_eval_main
from wm_eval.config import load_config
from wm_eval.errors import WmEvalError
from wm_eval.fileio import atomic_write_text
from wm_eval.machine import library_versions, machine
from wm_eval.models.checkpoint import SPEC_FILE, read_spec

from fidelity import fidelity  # noqa: E402  (examples/ is this script's folder)

SHOWN = ("spearman", "mmrv_normalized", "regret_at_1", "normalized_abs_error")


def train(config: str, seed: int, split_seed: int, out: Path, overrides: list[str]) -> None:
    """``wm-eval train --config config seed=seed split_seed=split_seed out=out`` unless ``out`` holds a checkpoint."""
    if (out / SPEC_FILE).is_file():
        print(f"seed {seed}: {out} exists, not trained again")
        return
    code = wm_eval_main(["train", "--config", config, *overrides, f"seed={seed}", f"split_seed={split_seed}",
                         f"out={out}"])
    if code != 0:
        raise SystemExit(code)


def summarise(runs: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per metric over the runs: mean, sample sd (None for one run), min and max of the point values."""
    summary = {}
    for name in SHOWN:
        values = np.array([r["metrics"][name]["value"] for r in runs if r["metrics"][name]["value"] is not None])
        summary[name] = {"mean": float(values.mean()) if len(values) else None,
                         "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                         "min": float(values.min()) if len(values) else None,
                         "max": float(values.max()) if len(values) else None}
    return summary


def markdown(runs: list[dict], summary: dict) -> str:
    """Per seed: each metric with its 95% interval; then mean ± sd and the range over the seeds."""
    def cell(m: dict) -> str:
        return "n/a" if m["value"] is None else f"{m['value']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"

    def fmt(x: float | None) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"

    lines = ["| seed | " + " | ".join(SHOWN) + " |", "|" + "---|" * (len(SHOWN) + 1)]
    lines += [f"| {r['seed']} | " + " | ".join(cell(r["metrics"][n]) for n in SHOWN) + " |" for r in runs]
    lines.append("| mean ± sd | " + " | ".join(f"{fmt(summary[n]['mean'])} ± {fmt(summary[n]['sd'])}" for n in SHOWN)
                 + " |")
    lines.append("| range | " + " | ".join(f"{fmt(summary[n]['min'])}–{fmt(summary[n]['max'])}" for n in SHOWN)
                 + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a wm-eval train recipe (configs/train/*.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, one run each")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="seed of the held-out split every run shares (default: the recipe's split_seed, else seed)")
    parser.add_argument("--set", dest="policy_set", choices=("zoo", "unseen", "all"), default="zoo")
    parser.add_argument("--episodes", type=int, default=50, help="paired episodes per policy")
    parser.add_argument("--horizon", type=int, default=None, help="steps per episode (default: the task's limit)")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation's start states")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/spread-<recipe name>")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, after --")
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    bad = [item for item in args.overrides if "=" not in item or item.split("=", 1)[0] in ("seed", "split_seed", "out")]
    if bad:
        parser.error(f"overrides must be key=value and not seed, split_seed or out (this script sets them): {bad}")
    try:
        recipe = load_config("train", files=[args.config], overrides=args.overrides)
    except WmEvalError as exc:
        parser.error(f"--config {args.config}: {exc}")
    if args.split_seed is None:
        args.split_seed = recipe.seed if recipe.split_seed is None else recipe.split_seed
    out = args.out or Path("runs") / f"spread-{Path(args.config).stem}"
    settings = {"set": args.policy_set, "episodes": args.episodes, "horizon": args.horizon, "eval_seed": args.eval_seed}
    runs = []
    for seed in args.seeds:
        folder = out / f"seed{seed}"
        train(args.config, seed, args.split_seed, folder / "model", args.overrides)
        task = read_spec(folder / "model")["task"]
        cached = folder / "ranking.json"
        if cached.is_file() and json.loads(cached.read_text())["settings"] == settings:
            row = json.loads(cached.read_text())["row"]
            print(f"seed {seed}: ranking measured before with these settings, not evaluated again")
        else:
            row = fidelity([task], episodes=args.episodes, horizon=args.horizon, seed=args.eval_seed,
                           out=folder / "fidelity", models={task: str(folder / "model")}, policy_set=args.policy_set)[0]
            atomic_write_text(cached, json.dumps({"settings": settings, "row": row}, indent=1) + "\n")
        runs.append({"seed": seed, "task": task, "model": str(folder / "model"), "policies": row["policies"],
                     "metrics": {name: row[name] for name in SHOWN}})
    summary = summarise(runs)
    table = markdown(runs, summary)
    atomic_write_text(out / "spread.json", json.dumps(
        {"config": args.config, "overrides": args.overrides, "seeds": args.seeds, "split_seed": args.split_seed,
         **settings, "runs": runs, "summary": summary, "versions": library_versions(), "machine": machine()},
        indent=1) + "\n")
    print(f"{runs[0]['task']}, {args.policy_set}: {runs[0]['policies']} policies × {args.episodes} episodes, "
          f"{len(runs)} seeds of {args.config} (split seed {args.split_seed})")
    print(table)


if __name__ == "__main__":
    main()
