"""The ``wm-eval bench`` table: the figures of ``bench.json`` as Markdown (printed and saved as bench.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["VECTOR_ENVS", "format_table", "number"]

#: Sub-environments of the Gymnasium SyncVectorEnv the bench measures (as in ANCHORS.md).
VECTOR_ENVS = 64


def number(value: float | None, digits: int = 0) -> str:
    """``value`` with thousands separators and ``digits`` decimals; ``n/a`` for a missing figure."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _pm(result: dict[str, Any], *path: str) -> str:
    """`` ±x%``: half the slowest-to-fastest window range of a figure, in % of its median ("" if unknown)."""
    value, spread = result, result.get("spread")
    for key in path:
        value = value[key] if isinstance(value, dict) else None
        spread = spread.get(key) if isinstance(spread, dict) else None
    if not isinstance(spread, list) or not value:
        return ""
    return f" ±{50 * (spread[1] - spread[0]) / value:.0f}%"


def format_table(result: dict[str, Any]) -> str:
    """The bench result as Markdown (what ``bench.md`` holds and the command prints)."""
    m, mr, layers, top = result["machine"], result["mujoco_rollout"], result["model_layers"], result["largest_batch"]
    modes = list(result["imagined_steps_per_s"])
    head, rule = " | ".join(modes), "|".join(["---:"] * len(modes))
    lines = [f"# wm-eval bench: {result['task']}", "",
             f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, device {m['device']}, load "
             f"average at start {m['load_average_at_start'][0]:.2f}; model {result['model']} ({layers['members']} "
             f"members, {'-'.join(map(str, layers['sizes']))}); medians of {result['repeats']} x "
             f"{result['seconds']} s, ± half the range from the slowest to the fastest window.",
             "", f"CPU flags: {', '.join(m.get('cpu_flags') or ['n/a'])}; "
             + ", ".join(f"{k} {v}" for k, v in (m.get("builds") or {}).items()) + ".",
             "", f"| env-steps per second | batch | {head} |", f"|---|---:|{rule}|"]
    for key, label in (("imagined_steps_per_s", "imagined, all members (uncertainty)"),
                       ("closed_loop_steps_per_s", f"closed loop, SB3 policy {result['closed_loop_policy']}")):
        lines += [f"| {label} | {b} | " + " | ".join(number(result[key][d][b]) + _pm(result, key, d, b) for d in modes)
                  + " |" for b in result[key]["float32"]]
    ground = [("gym_single_steps_per_s", "Gymnasium single env", 1),
              ("gym_vector_steps_per_s", "Gymnasium SyncVectorEnv", VECTOR_ENVS),
              ("mujoco_rollout_steps_per_s", f"mujoco.rollout, {mr['threads']} threads, one call per env step",
               mr["batch"]),
              ("mujoco_rollout_open_loop_steps_per_s", f"mujoco.rollout, {mr['threads']} threads, open loop", mr["batch"])]
    lines += [f"| {label} | {batch} | {number(result[key])}{_pm(result, key)} |" for key, label, batch in ground]
    lines += ["", f"| imagined at batch {top} over | {head} |", f"|---|{rule}|"]
    lines += [f"| {name} | " + " | ".join(f"{number(result['ratios'][d][name], 1)}x" for d in modes) + " |"
              for name in result["ratios"]["float32"]]
    lines += ["", f"| GFLOP/s at batch {top} | {head} |", f"|---|{rule}|"]
    for key, label in (("matmul_gflops", "plain products of the layer shapes (torch.bmm via MKL; fused: oneDNN)"),
                       ("model_gflops", f"model step ({result['flops_per_step'] / 1e6:.2f} MFLOP per env step)")):
        lines.append(f"| {label} | " + " | ".join(number(result[key][d], 1) + _pm(result, key, d) for d in modes) + " |")
    lines += ["", f"Peak RSS of the bench process: {result['peak_rss_mb']:,.0f} MB."]
    ev = result["evaluate_seconds"]
    if ev is not None:
        lines += ["", f"Default `wm-eval evaluate` ({ev['policies']} policies x {ev['episodes']} episodes x "
                  f"{ev['horizon']} steps): {ev['total']:.1f} s; model rollouts {number(ev['model_rollouts'], 1)} s, "
                  f"ground truth {number(ev['ground_truth_rollouts'], 1)} s, metrics {number(ev['metrics'], 1)} s, "
                  f"trajectories.h5 {number(ev['logging'], 1)} s, Rerun recording {number(ev['recording'], 1)} s; "
                  f"peak memory with workers {number(ev['peak_memory_mb'])} MB."]
    lines += ["", "| target (2-core reference machine) | measured | met |", "|---|---:|---|"]
    for name, row in result["targets"].items():
        value, met = row["measured"], {None: "n/a", True: "yes", False: "no"}[row["met"]]
        lines.append(f"| {name} {row['target']} | {number(value, 2 if value is not None and value < 100 else 0)} "
                     f"| {met} |")
    return "\n".join(lines) + "\n"
