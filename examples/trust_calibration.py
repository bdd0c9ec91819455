"""Does the trust signal know when the model is wrong? Coverage data, risk calibration and its AUROCs.

    python examples/trust_calibration.py attach --task Hopper-v5 --dataset datasets/data/Hopper-v5-seed0
    python examples/trust_calibration.py measure --task Hopper-v5 --episodes 20 --out runs/trust
    python examples/trust_calibration.py fit --out runs/trust --write
    python examples/trust_calibration.py score --out runs/trust   # the shipped risk models on the records
    python examples/trust_calibration.py overhead --task HalfCheetah-v5   # cost of the coverage signal

``attach`` stores the coverage of a model's training data (:mod:`wm_eval.models.coverage`) in its
checkpoint (default: the task's embedded model); the dataset must be the one the model was trained on
(same data fingerprint). ``wm-eval train`` does this itself for new models, with the default risk model;
``--risk-from Hopper-v5`` gives a new model of a task the risk model fitted for that task (on the other tasks).

``measure`` evaluates, fully paired (imagined and MuJoCo from the same start states), the task's zoo
and every policy the model never saw (:func:`unseen`: ``policies/unseen/<task>``, the arm tasks' PPO runs,
and ``policies/experts/<task>`` while those experts have not joined the zoo), and writes per policy its imagined-side risk
features and whether its imagined mean return is off by more than 20% and 25% (of
``max(|true|, 10% of the task's largest |true|)``), plus per episode the trust score, the imagined
length and whether the episode's return is off by more than 20%.

``fit`` fits the per-policy risk model (a logistic regression on the features of
:data:`wm_eval.evaluation.trust_signal.FEATURES`, label: off by more than 20%) leaving one task out,
within a family (locomotion: HalfCheetah, Hopper, Walker2d; manipulation: our arm tasks): each task's
model gets the coefficients fitted on the other tasks' policies only, so the AUROCs it prints for a task
are on policies whose task never took part in the fit. With the coefficients it stores the calibrated
model error (:func:`error_quantiles`) that widens intervals from the model alone (``real_episodes=0``),
and prints how often the 90% one covers the true mean. With ``--write`` it stores them in the embedded
models, and the fit on every task as the default for models that ``wm-eval train`` makes
(``wm_eval/assets/risk.json``). Prints one JSON line per task and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.optimize import minimize

import wm_eval
from wm_eval.data.hdf5 import load_dataset
from wm_eval.evaluation import metrics as M
from wm_eval.evaluation.estimators import error_quantiles_at
from wm_eval.evaluation.trust_signal import FEATURES, RISK_FLAG, policy_features, policy_risk
from wm_eval.fileio import atomic_write_text
from wm_eval.models.checkpoint import attach_coverage, embedded_model_path, load_checkpoint, read_spec, resolve_model
from wm_eval.models.coverage import build_coverage
from wm_eval.training import data_fingerprint, recorded_split, split_episodes

ROOT = Path(__file__).resolve().parent.parent
L2 = 0.1  # ridge penalty of the logistic fit: few policies per task
LEVELS = (0.5, 0.8, 0.9, 0.95)


def attach(args: argparse.Namespace) -> None:
    """Store the coverage of ``--dataset`` in the model (checks the data fingerprint)."""
    path = Path(args.model) if args.model else embedded_model_path(args.task)
    episodes = [ep for d in args.dataset for ep in load_dataset(d, sim_states=False).episodes]
    spec = read_spec(path)
    if data_fingerprint(episodes) != spec["data_fingerprint"]:
        raise SystemExit(f"{args.dataset} is not the data {path} was trained on (data fingerprint differs)")
    model = load_checkpoint(path)
    donor = resolve_model(args.risk_from, task=None) if args.risk_from else model  # a folder or an embedded task
    risk = donor.coverage.risk if donor.coverage else None
    rule, seed, fraction = recorded_split(spec)  # probe: its held-out episodes, as wm-eval train does
    probe = split_episodes(episodes, fraction, seed, rule)[1] if rule != "permutation" else None
    attach_coverage(path, build_coverage(model, episodes, seed=spec["seed"], risk=risk, probe=probe))
    print(f"stored the coverage of {len(episodes)} episodes in {path}")


def unseen(task: str) -> list[str]:
    """Manifests of the policies in neither the zoo nor the training data: the held-out checkpoints
    (``policies/unseen``), the arm tasks' PPO runs, and the experts while they have not joined the zoo."""
    folder = task.replace("/", "_")
    policies = ROOT / "policies"
    zoo = json.loads((policies / folder / "manifest.json").read_text(encoding="utf-8"))
    in_zoo = any(e.get("file", "").startswith("../experts/") for e in zoo["policies"])
    found = [policies / "unseen" / folder / "manifest.json", policies / folder / "ppo" / "manifest.json"]
    if not in_zoo:
        found.insert(0, policies / "experts" / folder / "manifest.json")
    return [str(p) for p in found if p.is_file()]


def measure(args: argparse.Namespace) -> None:
    """Evaluate zoo + unseen policies of ``--task`` and write their trust records."""
    extra = unseen(args.task)
    model = resolve_model(args.model, task=args.task)  # checked before minutes of evaluation
    coverage = model.coverage
    if coverage is None:
        raise SystemExit(f"the {args.task} model stores no coverage data: attach it first (the attach subcommand)")
    ev = wm_eval.evaluate(args.task, ["zoo", *extra], episodes=args.episodes, horizon=args.horizon, seed=args.seed,
                          bootstrap=200, progress=True, model=model)
    true = np.array([p.summary["true_return"]["mean"] for p in ev.policies])
    imagined = np.array([p.summary["imagined_return"]["mean"] for p in ev.policies])
    off = {t: M.return_is_off(imagined_return=imagined, true_return=true, threshold=t) for t in (0.2, 0.25)}
    policies = []
    for i, (p, t, f) in enumerate(zip(ev.policies, true, imagined)):
        se = float(np.std(p.episodes["imagined_return"], ddof=1) / math.sqrt(args.episodes))
        row = {"name": p.name, "source": p.source, "true": float(t), "imagined": float(f), "imagined_se": se,
               "unseen": p.source is not None and any(p.source.startswith(str(Path(e).parent)) for e in extra),
               "off20": bool(off[0.2][i]), "off25": bool(off[0.25][i])}
        row["features"] = policy_features(p.episodes, coverage, ev.horizon)
        row["floor"] = coverage.return_floor(ev.horizon)
        row["risk"] = p.summary.get("risk")
        policies.append(row)
    episodes = {k: np.concatenate([p.episodes[f"imagined_{k}"] for p in ev.policies]).tolist()
                for k in ("trust_score", "length", "return", "uncertainty", "coverage")}
    episodes["policy"] = [i for i, p in enumerate(ev.policies) for _ in p.episodes["true_return"]]
    episodes["true_return"] = np.concatenate([p.episodes["true_return"] for p in ev.policies]).tolist()
    out = Path(args.out) / f"{args.task.replace('/', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({"task": args.task, "episodes": args.episodes, "seed": args.seed,
                                       "horizon": ev.horizon, "model": args.model or "embedded",
                                       "policies": policies, "episode_values": episodes},
                                      indent=1))
    print(json.dumps(summarise(args.task, policies, episodes)))


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
    """Ridge-penalised logistic regression with non-negative weights (features standardised inside,
    coefficients returned raw). Risk may only grow with disagreement, distance to the data and excess
    return: a model confidently wrong inside its data must not teach that confidence means danger."""
    mu, sd = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    z = (x - mu) / sd

    def loss(w: np.ndarray) -> float:
        s = w[0] + z @ w[1:]
        return float(np.sum(np.logaddexp(0.0, s) - y * s) + L2 * np.sum(w[1:] ** 2))

    bounds = [(None, None)] + [(0.0, None)] * x.shape[1]
    w = minimize(loss, np.zeros(x.shape[1] + 1), method="L-BFGS-B", bounds=bounds).x
    weights = w[1:] / sd
    return weights, float(w[0] - np.sum(weights * mu))


def family(task: str) -> str:
    """Risk models are fitted within a family of tasks: our manipulation tasks, or the locomotion ones."""
    return "manipulation" if task.startswith("WmEval/") else "locomotion"


def error_quantiles(policies: list[dict], risk: dict) -> dict:
    """Per level of :data:`LEVELS`, the relative error of the imagined mean (``|imagined - true| /
    max(|imagined|, 10% of the task's largest |imagined|)``) that the ``policies`` stayed within, for the
    flagged and the unflagged ones under ``risk`` (a group of fewer than 5 policies takes the larger of
    its largest error and the quantile over all policies)."""
    rel, flags = [], []
    for p in policies:
        rel.append(abs(p["imagined"] - p["true"]) / max(abs(p["imagined"]), p["floor"]))
        flags.append(policy_risk(p["features"], risk) > RISK_FLAG)
    rel, flags = np.array(rel), np.array(flags)
    out: dict = {"levels": list(LEVELS)}
    for name, group in (("flagged", rel[flags]), ("unflagged", rel[~flags])):
        pooled = [float(np.quantile(rel, q, method="higher")) for q in LEVELS]
        if len(group) >= 5:
            out[name] = [float(np.quantile(group, q, method="higher")) for q in LEVELS]
        else:
            out[name] = [max(float(np.max(group, initial=0.0)), a) for a in pooled]
    return out


def _records(folder: str) -> dict[str, dict]:
    """The trust records ``measure`` wrote to ``folder``, by task (each policy also names its task)."""
    records = {}
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        for p in record["policies"]:
            p["task"] = record["task"]
        records[record["task"]] = record
    return records


def _covered90(policy: dict, risk: float, quantiles: dict | None, episodes: int) -> bool | None:
    """Whether the model-only 90% interval (t quantile as in reports, widened by the calibrated error
    ``quantiles`` of the policy's flag) covers its true mean; None without quantiles."""
    if quantiles is None:
        return None
    e = quantiles["flagged" if risk > RISK_FLAG else "unflagged"][LEVELS.index(0.9)]
    half = stats.t.ppf(0.95, episodes - 1) * policy["imagined_se"] + e * max(abs(policy["imagined"]), policy["floor"])
    return bool(abs(policy["true"] - policy["imagined"]) <= half)


def score(args: argparse.Namespace) -> None:
    """The shipped risk models on the records: each record's stored ``risk`` (the model it was measured
    with) and the error quantiles of the task's embedded checkpoint; no fitting. Prints per task the
    risk AUROCs and the model-only coverage, then the pooled AUROCs (over the records with risk)."""
    scored = []
    for task, record in _records(args.out).items():
        ps = [p for p in record["policies"] if p.get("risk") is not None]
        if not ps or record.get("model", "embedded") != "embedded":
            why = "its record stores no risk (measured without a risk model)" if not ps else \
                f"measured with {record['model']}, not the embedded model whose error quantiles score it"
            print(json.dumps({"task": task, "skipped": why}))
            continue
        model = load_checkpoint(embedded_model_path(task))
        risk = model.coverage.risk if model.coverage else None
        quantiles = error_quantiles_at(risk, record["horizon"])
        covered = [_covered90(p, p["risk"], quantiles, record["episodes"]) for p in ps]
        print(json.dumps({"task": task, "policies": len(ps), "off25": sum(p["off25"] for p in ps),
                          "policy_auroc": _auroc(ps), "policy_auroc_unseen": _auroc([p for p in ps if p["unseen"]]),
                          "model_only_coverage90": float(np.mean(covered)) if quantiles else math.nan}))
        scored += ps
    print(json.dumps({"pooled_policies": len(scored), "pooled_off25": sum(p["off25"] for p in scored),
                      "pooled_policy_auroc": _auroc(scored),
                      "pooled_policy_auroc_unseen": _auroc([p for p in scored if p["unseen"]])}))


def fit(args: argparse.Namespace) -> None:
    """Leave-one-task-out risk models within each family; prints and (``--write``) stores them."""
    records = _records(args.out)

    def fitted(tasks: list[str]) -> dict:
        ps = [p for t in tasks for p in records[t]["policies"]]
        x = np.array([[p["features"][f] for f in FEATURES] for p in ps])
        weights, bias = _logistic(x, np.array([p["off20"] for p in ps], float))
        horizons = {records[t]["horizon"] for t in tasks}
        risk = {"features": list(FEATURES), "weights": weights.tolist(), "bias": bias,
                "fitted_on": "policies of " + ", ".join(tasks),
                "horizon": horizons.pop() if len(horizons) == 1 else None}
        risk["error_quantiles"] = error_quantiles(ps, risk) if risk["horizon"] is not None else None
        return risk

    scored, table = [], []
    for task in records:
        others = [t for t in records if t != task and family(t) == family(task)]
        if not others:
            print(json.dumps({"task": task, "skipped": f"no other {family(task)} task measured to fit its risk on"}))
            continue
        risk = fitted(others)
        risk["fitted_on"] += " (leave this task out)"
        ps = records[task]["policies"]
        best_seen = max(p["true"] for p in ps if not p["unseen"])
        quantiles = error_quantiles_at(risk, records[task]["horizon"])  # intervals apply at their own horizon
        for p in ps:
            r = policy_risk(p["features"], risk)
            covered = _covered90(p, r, quantiles, records[task]["episodes"])
            scored.append({**p, "risk": r, "covered90": covered, "stronger": p["true"] > best_seen})
        mine = scored[-len(ps):]
        episodes = summarise(task, ps, records[task]["episode_values"])
        line = {"task": task, "fitted_on": risk["fitted_on"], "policies": len(ps),
                "episode_auroc": episodes["episode_auroc"],
                "episode_control": max(episodes["length_control"], 1 - episodes["length_control"]),
                "unseen": sum(p["unseen"] for p in mine), "off25": sum(p["off25"] for p in mine),
                "policy_auroc": _auroc(mine), "policy_auroc_unseen": _auroc([p for p in mine if p["unseen"]]),
                "flagged": [p["name"] for p in mine if p["risk"] > RISK_FLAG],
                "stronger": [p["name"] for p in mine if p["stronger"]],
                "stronger_flagged": sum(p["stronger"] and p["risk"] > RISK_FLAG for p in mine),
                "model_only_coverage90": float(np.mean([p["covered90"] for p in mine if p["covered90"] is not None]
                                                       or [math.nan]))}
        print(json.dumps(line))
        table.append(line)
        if args.write:
            path = embedded_model_path(task)
            attach_coverage(path, load_checkpoint(path).coverage.with_risk(risk))
    pooled = {"pooled_policy_auroc": _auroc(scored), "pooled_policy_auroc_unseen": _auroc([p for p in scored if p["unseen"]]),
              "pooled_locomotion_unseen": _auroc([p for p in scored if p["unseen"] and family(p["task"]) == "locomotion"])}
    print(json.dumps(pooled))
    if args.write:
        atomic_write_text(ROOT / "wm_eval" / "assets" / "risk.json", json.dumps(fitted(list(records)), indent=1) + "\n")
    print("| task | policies (unseen) | episode trust AUROC (length control) | off by >25% | risk AUROC all / unseen "
          "| flagged | stronger than the zoo flagged | model-only 90% interval covers |")
    print("|---|---|---|---|---|---|---|---|")
    for line in table:
        print(f"| {line['task']} | {line['policies']} ({line['unseen']}) | {_fmt(line['episode_auroc'])} "
              f"({_fmt(line['episode_control'])}) | {line['off25']} | "
              f"{_fmt(line['policy_auroc'])} / {_fmt(line['policy_auroc_unseen'])} | {len(line['flagged'])} | "
              f"{line['stronger_flagged']} of {len(line['stronger'])} | {line['model_only_coverage90']:.2f} |")


def _auroc(policies: list[dict]) -> float:
    """AUROC of risk for policies off by more than 25% (nan without both kinds)."""
    return M.auroc(scores=np.array([p["risk"] for p in policies]), labels=np.array([p["off25"] for p in policies]))


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def overhead(args: argparse.Namespace) -> None:
    """Seconds to imagine ``--episodes`` episodes of the zoo's ``--policy`` (one thread) and to compute their
    coverage and trust score, ``--repeats`` times; prints the overhead in percent."""
    import time

    import torch

    from wm_eval import tasks
    from wm_eval.evaluation.api import load_policy_list
    from wm_eval.evaluation.rollout import imagined_env, run_episodes
    from wm_eval.evaluation.trust_signal import episode_signals

    torch.set_num_threads(1)
    model = load_checkpoint(embedded_model_path(args.task))
    if model.coverage is None:
        raise SystemExit(f"the {args.task} model stores no coverage data: attach it first (the attach subcommand)")
    policy = load_policy_list([f"zoo#{args.policy}"], task=args.task)[0]
    states = tasks.reset_states(args.task, list(range(args.episodes)))[1]
    env = imagined_env(model, args.episodes, horizon=args.horizon)
    shares = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        rollout = run_episodes(env, states, args.horizon, policies=[(policy, slice(0, args.episodes))],
                               episode_seeds=np.arange(args.episodes))
        middle = time.perf_counter()
        episode_signals(rollout, model.coverage)
        shares.append(100 * (time.perf_counter() - middle) / (middle - start))
    print(json.dumps({"task": args.task, "steps": int(rollout.lengths.sum()), "overhead_percent": shares,
                      "median": float(np.median(shares))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attach")
    a.add_argument("--task", required=True)
    a.add_argument("--dataset", nargs="+", required=True)
    a.add_argument("--model", default=None, help="checkpoint folder (default: the task's embedded model)")
    a.add_argument("--risk-from", default=None, help="keep the risk model of this checkpoint (folder or task "
                   "name; default: the model's own), e.g. the leave-one-task-out fit of the model it replaces")
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
    c = sub.add_parser("score")
    c.add_argument("--out", default="runs/trust")
    o = sub.add_parser("overhead")
    o.add_argument("--task", default="HalfCheetah-v5")
    o.add_argument("--policy", default="ppo_0400k")
    o.add_argument("--episodes", type=int, default=64)
    o.add_argument("--horizon", type=int, default=1000)
    o.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    {"attach": attach, "measure": measure, "fit": fit, "score": score, "overhead": overhead}[args.command](args)


if __name__ == "__main__":
    main()
