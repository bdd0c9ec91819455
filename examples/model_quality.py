"""Model-quality benchmark: held-out accuracy of the embedded world models (the README's table).

For each task it loads the dataset the embedded model was trained on (the one its spec names; regenerate
it with the task's recipe in ``configs/collect``, see ``datasets/<task>.md``), takes the same held-out episodes as
training did (the split its spec records), and reports reward R^2, termination F1 (learned head, and the
task's rule applied to predicted next states) and the open-loop k-step normalised state error::

    python examples/model_quality.py
    python examples/model_quality.py --tasks Hopper-v5 --dataset Hopper-v5=datasets/data/Hopper-v5-seed0
    python examples/model_quality.py --tasks Hopper-v5 --model Hopper-v5=runs/models/Hopper-v5-multistep

``--model TASK=PATH`` measures another checkpoint (another family, or one trained on other data) on the
held-out episodes its own recorded split (rule, seed and validation fraction) selects from ``--dataset``: two
models with the same split, given the same dataset, are scored on the same episodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wm_eval.data import load_dataset
from wm_eval.models.checkpoint import embedded_model_path, load_checkpoint, read_spec
from wm_eval.training import data_fingerprint, evaluate_model, recorded_split, split_episodes


def trained_on(task: str, model: Path) -> Path:
    """The dataset folder the checkpoint's spec names (as its recipe in ``configs/train`` does), else the
    default output of ``configs/collect/<task>.yaml`` (``datasets/data/<task, / as _>-seed0``)."""
    named = [Path(d) for d in read_spec(model).get("config", {}).get("dataset") or []]
    if len(named) == 1 and named[0].is_dir():
        return named[0]
    return Path(f"datasets/data/{task.replace('/', '_')}-seed0")


def quality(task: str, dataset: Path, path: Path) -> dict:
    """Held-out metrics of the checkpoint at ``path`` on ``dataset``."""
    spec = read_spec(path)
    episodes = load_dataset(dataset, sim_states=False).episodes
    if data_fingerprint(episodes) != spec["data_fingerprint"]:
        print(f"note: {dataset} is not the data {path} was trained on: its held-out episodes are chosen by the "
              "model's split from this dataset, and may overlap the model's training data")
    rule, seed, fraction = recorded_split(spec)
    val = split_episodes(episodes, fraction, seed, rule)[1]
    metrics = evaluate_model(load_checkpoint(path, task=task), val)
    # a multi-step model records its fine-tuning time (its one-step start is another checkpoint's training)
    seconds, finetune = spec["metrics"].get("train_seconds"), spec["metrics"].get("finetune_seconds")
    return {"task": task, "model": str(path), "held_out_episodes": len(val), "train_seconds": seconds,
            "finetune_seconds": finetune,
            **{k: metrics[k] for k in ("reward_r2", "termination_f1", "termination_f1_task_rule",
                                       "open_loop_error")}}


def _minutes(row: dict) -> str:
    if row["train_seconds"] is not None:
        return f"{row['train_seconds'] / 60:.1f} min"
    return f"+ {row['finetune_seconds'] / 60:.1f} min (fine-tuning)" if row["finetune_seconds"] is not None else "n/a"


def markdown(rows: list[dict]) -> str:
    """The README table."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = ["| task | held-out episodes | reward R² | termination F1 (learned / task rule on predictions) "
             "| open-loop error k=1 / 10 / 50 / 100 | training time |", "|---|---|---|---|---|---|"]
    for r in rows:
        errors = " / ".join(num(r["open_loop_error"][k]) for k in ("1", "10", "50", "100"))
        lines.append(f"| {r['task']} | {r['held_out_episodes']} | {num(r['reward_r2'])} | "
                     f"{num(r['termination_f1'])} / {num(r['termination_f1_task_rule'])} | {errors} | "
                     f"{_minutes(r)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
    parser.add_argument("--dataset", nargs="*", default=[], metavar="TASK=PATH",
                        help="dataset per task (default: the one the model's spec names, as configs/collect writes it)")
    parser.add_argument("--model", nargs="*", default=[], metavar="TASK=PATH",
                        help="checkpoint per task (default: the embedded model)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    models = {task: Path(path) for task, path in (item.split("=", 1) for item in args.model)}
    models = {task: models.get(task) or embedded_model_path(task) for task in args.tasks}
    paths = dict(item.split("=", 1) for item in args.dataset)
    rows = [quality(task, Path(paths.get(task) or trained_on(task, models[task])), models[task]) for task in args.tasks]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
