"""Does the trust signal know when the model is wrong? Coverage data, risk calibration and its AUROCs.

    python examples/trust_calibration.py attach --task Hopper-v5 --dataset datasets/data/Hopper-v5-seed0
    python examples/trust_calibration.py measure --task Hopper-v5 --episodes 20 --out runs/trust
    python examples/trust_calibration.py fit --out runs/trust --write

``attach`` stores the coverage of a model's training data (:mod:`wm_eval.models.coverage`) in its
checkpoint (default: the task's embedded model); the dataset must be the one the model was trained on
(same data fingerprint). ``wm-eval train`` does this itself for new models.

``measure`` evaluates, fully paired (imagined and MuJoCo from the same start states), the task's zoo
and every policy the model never saw (``policies/experts/<task>/manifest.json`` and
``policies/<task>/ppo/manifest.json`` where they exist), and writes per policy its imagined-side risk
features and whether its imagined mean return is off by more than 20% and 25% (of
``max(|true|, 10% of the task's largest |true|)``), plus per episode the trust score, the imagined
length and whether the episode's return is off by more than 20%.

``fit`` fits the per-policy risk model (a logistic regression on the features of
:data:`wm_eval.evaluation.trust_signal.FEATURES`, label: off by more than 20%) leaving one task out:
each task's model gets the coefficients fitted on the other tasks' policies only, so the AUROCs it
prints for a task are on policies whose task never took part in the fit. With ``--write`` it stores
them in the embedded models, and the fit on every task as the default for models that ``wm-eval
train`` makes (``wm_eval/assets/risk.json``). Prints one JSON line per task and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import wm_eval
from wm_eval.data.hdf5 import load_dataset
from wm_eval.evaluation import metrics as M
from wm_eval.evaluation.trust_signal import FEATURES, RISK_FLAG, policy_features, policy_risk
from wm_eval.models.checkpoint import attach_coverage, embedded_model_path, load_checkpoint, read_spec
from wm_eval.models.coverage import build_coverage
from wm_eval.training import data_fingerprint

ROOT = Path(__file__).resolve().parent.parent
L2 = 0.1  # ridge penalty of the logistic fit: few policies per task


def attach(args: argparse.Namespace) -> None:
    """Store the coverage of ``--dataset`` in the model (checks the data fingerprint)."""
    path = Path(args.model) if args.model else embedded_model_path(args.task)
    episodes = [ep for d in args.dataset for ep in load_dataset(d, sim_states=False).episodes]
    spec = read_spec(path)
    if data_fingerprint(episodes) != spec["data_fingerprint"]:
        raise SystemExit(f"{args.dataset} is not the data {path} was trained on (data fingerprint differs)")
    model = load_checkpoint(path)
    old = model.coverage
    attach_coverage(path, build_coverage(model, episodes, seed=spec["seed"], risk=old.risk if old else None))
    print(f"stored the coverage of {len(episodes)} episodes in {path}")


def unseen(task: str) -> list[str]:
    """Manifests of the policies in neither the zoo nor the training data."""
    folder = task.replace("/", "_")
    found = [ROOT / "policies" / "experts" / folder / "manifest.json", ROOT / "policies" / folder / "ppo" / "manifest.json"]
    return [str(p) for p in found if p.is_file()]


def measure(args: argparse.Namespace) -> None:
    """Evaluate zoo + unseen policies of ``--task`` and write their trust records."""
    extra = unseen(args.task)
    ev = wm_eval.evaluate(args.task, ["zoo", *extra], episodes=args.episodes, horizon=args.horizon, seed=args.seed,
                          bootstrap=200, progress=True, model=args.model)
    coverage = ev_model_coverage(args)
    true = np.array([p.summary["true_return"]["mean"] for p in ev.policies])
    imagined = np.array([p.summary["imagined_return"]["mean"] for p in ev.policies])
    policies = []
    for p, t, f in zip(ev.policies, true, imagined):
        row = {"name": p.name, "source": p.source, "true": float(t), "imagined": float(f),
               "unseen": p.source is not None and any(p.source.startswith(str(Path(e).parent)) for e in extra)}
        for threshold in (0.2, 0.25):
            scale = max(abs(t), 0.1 * float(np.abs(true).max()))
            row[f"off{int(threshold * 100)}"] = bool(abs(f - t) > threshold * scale)
        row["features"] = policy_features(p.episodes, coverage) if coverage is not None else None
        row["risk"] = p.summary.get("risk")
        policies.append(row)
    episodes = {k: np.concatenate([p.episodes[f"imagined_{k}"] for p in ev.policies]).tolist()
                for k in ("trust_score", "length", "return", "uncertainty", "coverage")}
    episodes["policy"] = [i for i, p in enumerate(ev.policies) for _ in p.episodes["true_return"]]
    episodes["true_return"] = np.concatenate([p.episodes["true_return"] for p in ev.policies]).tolist()
    out = Path(args.out) / f"{args.task.replace('/', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": args.task, "episodes": args.episodes, "seed": args.seed,
                               "policies": policies, "episode_values": episodes}, indent=1))
    print(json.dumps(summarise(args.task, policies, episodes)))


def ev_model_coverage(args: argparse.Namespace):
    path = Path(args.model) if args.model else embedded_model_path(args.task)
    return load_checkpoint(path).coverage


def summarise(task: str, policies: list[dict], episodes: dict) -> dict:
    """Per-episode and per-policy AUROCs of one task."""
    imagined, true = np.array(episodes["return"]), np.array(episodes["true_return"])
    off = M.return_is_off(imagined_return=imagined, true_return=true)
    length = np.array(episodes["length"], dtype=float)
    out = {"task": task, "policies": len(policies), "off25": sum(p["off25"] for p in policies),
           "episode_auroc": M.auroc(scores=np.array(episodes["trust_score"]), labels=off),
           "episode_auroc_disagreement": M.auroc(scores=np.array(episodes["uncertainty"]) * length, labels=off),
           "length_control": M.auroc(scores=-length, labels=off), "off_episodes": float(off.mean())}
    if all(p.get("risk") is not None for p in policies):
        labels = np.array([p["off25"] for p in policies])
        out["policy_auroc"] = M.auroc(scores=np.array([p["risk"] for p in policies]), labels=labels)
        out["flagged"] = [p["name"] for p in policies if p["risk"] > RISK_FLAG]
    return out


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge-penalised logistic regression (features standardised inside, coefficients returned raw)."""
    mu, sd = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    z = (x - mu) / sd

    def loss(w: np.ndarray) -> float:
        s = w[0] + z @ w[1:]
        return float(np.sum(np.logaddexp(0.0, s) - y * s) + L2 * np.sum(w[1:] ** 2))

    w = minimize(loss, np.zeros(x.shape[1] + 1), method="BFGS").x
    weights = w[1:] / sd
    return weights, float(w[0] - np.sum(weights * mu))


def fit(args: argparse.Namespace) -> None:
    """Leave-one-task-out risk models; prints and (``--write``) stores them."""
    records = {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in sorted(Path(args.out).glob("*.json"))}

    def rows(tasks: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ps = [p for t in tasks for p in records[t]["policies"]]
        return np.array([[p["features"][f] for f in FEATURES] for p in ps]), np.array([p["off20"] for p in ps], float)

    pooled_scores, pooled_labels, table = [], [], []
    for task in records:
        others = [t for t in records if t != task]
        weights, bias = _logistic(*rows(others))
        risk = {"features": list(FEATURES), "weights": weights.tolist(), "bias": bias,
                "fitted_on": "policies of " + ", ".join(others) + " (leave this task out)"}
        ps = records[task]["policies"]
        scores = np.array([policy_risk(p["features"], risk) for p in ps])
        labels = np.array([p["off25"] for p in ps])
        pooled_scores.append(scores)
        pooled_labels.append(labels)
        best_train = max(p["true"] for p in ps if not p["unseen"])
        stronger = [p["name"] for p in ps if p["true"] > best_train]
        line = {"task": task, "policy_auroc": M.auroc(scores=scores, labels=labels), "off25": int(labels.sum()),
                "policies": len(ps), "flagged": [p["name"] for p, s in zip(ps, scores) if s > RISK_FLAG],
                "stronger_than_zoo": stronger,
                "stronger_flagged": sum(1 for p, s in zip(ps, scores) if p["name"] in stronger and s > RISK_FLAG)}
        print(json.dumps(line))
        table.append(line)
        if args.write:
            path = embedded_model_path(task)
            attach_coverage(path, load_checkpoint(path).coverage.with_risk(risk))
    pooled = M.auroc(scores=np.concatenate(pooled_scores), labels=np.concatenate(pooled_labels))
    print(json.dumps({"pooled_policy_auroc": pooled}))
    weights, bias = _logistic(*rows(list(records)))
    default = {"features": list(FEATURES), "weights": weights.tolist(), "bias": bias,
               "fitted_on": "policies of " + ", ".join(records)}
    if args.write:
        (ROOT / "wm_eval" / "assets" / "risk.json").write_text(json.dumps(default, indent=1) + "\n")
    print("| task | policies | off by >25% | risk AUROC | flagged | stronger than zoo flagged |")
    print("|---|---|---|---|---|---|")
    for line in table:
        auroc = "n/a" if math.isnan(line["policy_auroc"]) else f"{line['policy_auroc']:.2f}"
        print(f"| {line['task']} | {line['policies']} | {line['off25']} | {auroc} | {len(line['flagged'])} | "
              f"{line['stronger_flagged']} of {len(line['stronger_than_zoo'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attach")
    a.add_argument("--task", required=True)
    a.add_argument("--dataset", nargs="+", required=True)
    a.add_argument("--model", default=None, help="checkpoint folder (default: the task's embedded model)")
    m = sub.add_parser("measure")
    m.add_argument("--task", required=True)
    m.add_argument("--model", default=None)
    m.add_argument("--episodes", type=int, default=20)
    m.add_argument("--horizon", type=int, default=None)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--out", default="runs/trust")
    f = sub.add_parser("fit")
    f.add_argument("--out", default="runs/trust")
    f.add_argument("--write", action="store_true", help="store the risk models in the embedded models")
    args = parser.parse_args()
    {"attach": attach, "measure": measure, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
