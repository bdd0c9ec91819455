"""``wm-eval bench``: imagined against simulated env-steps per second, measured in one process and one run.

Every figure is the median over ``repeats`` timed windows of at least ``seconds``
each, after a warm-up call. Measured, in this order:

- ``imagined_steps_per_s``: :class:`~wm_eval.world_model_env.WorldModelVectorEnv`
  stepped with fixed random actions, all ensemble members evaluated at every step (so
  ``info["uncertainty"]`` is there), per batch size and inference mode (:data:`MODES`:
  ``float32`` and ``bfloat16``, and on CPUs with oneDNN their ``_fused`` variants);
- ``closed_loop_steps_per_s``: the same with the zoo's most trained SB3 MLP policy
  acting on the whole batch at every step (``LoadedPolicy.act``);
- ground truth: Gymnasium's single MuJoCo env (random actions, reset when an episode
  ends), Gymnasium's ``SyncVectorEnv`` of 64 envs, and ``mujoco.rollout`` with one
  ``MjData`` per core on as many episodes as the largest batch, both with one call per
  env step (each action repeated ``frame_skip`` times; what a closed-loop policy needs)
  and open loop (all steps in one call). ``mujoco.rollout`` returns raw simulator
  states only: no observations or rewards are computed, so it is an upper bound;
- ``matmul_gflops``: plain products of the model's layer shapes at the largest batch
  (``torch.bmm``; for fused modes the same grouped oneDNN convolution without activation),
  against ``model_gflops``, the model's layer FLOPs per env step times the imagined steps
  per second at that batch;
- ``evaluate_seconds``: one default ``wm-eval evaluate`` (unless ``evaluate=false``).

The model runs on all usable cores (``torch.set_num_threads``); its inference reuses
preallocated buffers, so no ``MALLOC_MMAP_THRESHOLD_`` tuning is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_eval.machine import cpu_flags, library_versions, machine, peak_rss_mb, torch_builds
from wm_eval.reporting.bench_table import VECTOR_ENVS, format_table, number
from wm_eval.timing import Rate, measure_rate, spreads

__all__ = ["FORMAT", "MODES", "TARGETS", "VECTOR_ENVS", "Rate", "spreads", "inference_modes", "measure",
           "measure_rate", "write_bench"]

FORMAT = "wm_eval.bench/1"
#: the figures whose run-to-run spread ``bench.json`` records under ``spread`` (as ``[slowest, fastest]``)
SPREAD_KEYS = ("imagined_steps_per_s", "closed_loop_steps_per_s", "gym_single_steps_per_s", "gym_vector_steps_per_s",
               "mujoco_rollout_steps_per_s", "mujoco_rollout_open_loop_steps_per_s", "matmul_gflops", "model_gflops")
#: inference modes of the model: name -> (dtype, fused); see ``GaussianMLPEnsemble.set_inference_dtype``.
MODES = {"float32": (torch.float32, False), "bfloat16": (torch.bfloat16, False),
         "float32_fused": (torch.float32, True), "bfloat16_fused": (torch.bfloat16, True)}
#: issue 8's targets on the 2-core reference machine (see README).
TARGETS = {"imagined_fp32_min": 100_000, "target_batch": 4096, "vs_gym_single": 15.0, "vs_mujoco_rollout": 3.0,
           "bf16_speedup": 2.0, "evaluate_seconds": 120.0, "peak_memory_mb": 2048.0}


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _imagined(model: Any, task: str, batch: int, *, modes: list[str], device: str, policy: Any, seconds: float,
              repeats: int) -> dict[str, tuple[float, float | None]]:
    """``{mode: (open-loop steps/s, closed-loop steps/s or None)}`` of the vector env at ``batch``."""
    from wm_eval.world_model_env import WorldModelVectorEnv

    # one model call per step, as before fixed row blocks existed: the model's own throughput (the evaluation's
    # 128-row blocks cost ~9% at large batches; README)
    env = WorldModelVectorEnv(batch, task=task, model=model, device=device, block_rows=batch)
    obs, _ = env.reset(seed=0)
    space = env.single_action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, (batch, *space.shape)).astype(np.float32)
    current = [obs]

    def closed_loop() -> None:
        current[0] = env.step(policy.act(current[0]))[0]

    out = {}
    try:
        for name in modes:
            dtype, fused = MODES[name]
            model.set_inference_dtype(dtype, fused=fused)
            open_rate = measure_rate(lambda: env.step(actions), items=batch, seconds=seconds, repeats=repeats)
            closed_rate = (None if policy is None else
                           measure_rate(closed_loop, items=batch, seconds=seconds, repeats=repeats))
            out[name] = (open_rate, closed_rate)
    finally:
        model.set_inference_dtype(torch.float32)
        env.close()
    return out


def _gym_single(task: str, *, seconds: float, repeats: int, chunk: int = 100) -> float:
    from wm_eval import tasks

    env = tasks.make_env(task)
    env.reset(seed=0)
    space = env.action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, (chunk, *space.shape)).astype(np.float32)

    def steps() -> None:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    try:
        return measure_rate(steps, items=chunk, seconds=seconds, repeats=repeats)
    finally:
        env.close()


def _gym_vector(task: str, *, seconds: float, repeats: int) -> float:
    from functools import partial

    from gymnasium.vector import SyncVectorEnv

    from wm_eval import tasks

    env = SyncVectorEnv([partial(tasks.make_env, task)] * VECTOR_ENVS)
    env.reset(seed=0)
    space = env.action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, space.shape).astype(np.float32)
    try:
        return measure_rate(lambda: env.step(actions), items=VECTOR_ENVS, seconds=seconds, repeats=repeats)
    finally:
        env.close()


def _mujoco_rollout(task: str, batch: int, *, threads: int, seconds: float, repeats: int) -> tuple[float, float]:
    """(one call per env step, open loop) env-steps/s of ``mujoco.rollout`` on ``batch`` episodes."""
    import mujoco
    from mujoco import rollout

    from wm_eval import tasks

    env = tasks.make_env(task).unwrapped
    model, frame_skip = env.model, int(env.frame_skip)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    starts = np.empty((batch, mujoco.mj_stateSize(model, spec)))
    for i in range(batch):
        env.reset(seed=i)
        mujoco.mj_getState(model, env.data, starts[i], spec)
    env.close()
    low, high = model.actuator_ctrlrange.T
    action = np.random.default_rng(0).uniform(low, high, (batch, 1, model.nu))
    per_step = np.ascontiguousarray(np.repeat(action, frame_skip, axis=1))
    models, datas = [model] * batch, [mujoco.MjData(model) for _ in range(threads)]  # skip_checks: one model per row
    state = starts.copy()
    out = np.empty((batch, frame_skip, starts.shape[1]))
    runner = rollout.Rollout(nthread=threads)
    try:
        def one_env_step() -> None:
            runner.rollout(models, datas, state, per_step, nstep=frame_skip, state=out, skip_checks=True)
            state[:] = out[:, -1]

        step_rate = measure_rate(one_env_step, items=batch, seconds=seconds, repeats=repeats)
        horizon = max(1, round(seconds * step_rate / batch))  # one open-loop call takes about `seconds`
        controls = np.ascontiguousarray(np.repeat(action, frame_skip * horizon, axis=1))
        long_out = np.empty((batch, frame_skip * horizon, starts.shape[1]))
        open_rate = measure_rate(
            lambda: runner.rollout(models, datas, starts, controls, nstep=frame_skip * horizon, state=long_out,
                                   skip_checks=True),
            items=batch * horizon, seconds=seconds, repeats=repeats)
    finally:
        runner.close()
    return step_rate, open_rate


def _layer_shapes(model: Any) -> list[tuple[int, int, int]]:
    """``(members, in, out)`` of each layer of an ensemble model."""
    return [tuple(int(s) for s in w.shape) for w in model.weights]


def _matmul_gflops(shapes: list[tuple[int, int, int]], batch: int, mode: str, *, device: torch.device,
                   seconds: float, repeats: int) -> float:
    """GFLOP/s of plain products over the layer shapes at ``batch`` rows: ``torch.bmm`` with
    preallocated outputs, or for fused modes the grouped 1x1 oneDNN convolution without activation."""
    dtype, fused = MODES[mode]
    gen = torch.Generator(device=device).manual_seed(0)
    flops = sum(2 * e * batch * n_in * n_out for e, n_in, n_out in shapes)
    operands = [(torch.randn(e, batch, n_in, generator=gen, device=device).to(dtype),
                 torch.randn(e, n_in, n_out, generator=gen, device=device).to(dtype),
                 torch.empty(e, batch, n_out, dtype=dtype, device=device)) for e, n_in, n_out in shapes]
    if fused:  # rows as channels-last pixels, member e = group e (as GaussianMLPEnsemble._infer_fused)
        operands = [(x.permute(1, 0, 2).reshape(1, batch, 1, -1).permute(0, 3, 1, 2),
                     w.transpose(1, 2).reshape(-1, w.shape[1], 1, 1).contiguous(), out) for x, w, out in operands]

    def products() -> None:
        for x, w, out in operands:
            if fused:
                torch.ops.mkldnn._convolution_pointwise(x, w, None, [0, 0], [1, 1], [1, 1], len(out), "none", [], "")
            else:
                torch.bmm(x, w, out=out)

    with torch.inference_mode():
        return measure_rate(products, items=flops, seconds=seconds, repeats=repeats, sync=_sync(device)).scaled(1e-9)


def inference_modes(device: torch.device) -> list[str]:
    """The :data:`MODES` the bench measures on ``device`` (fused ones only on CPUs with oneDNN)."""
    from wm_eval.models.ensemble import fused_inference_available

    fused = device.type == "cpu" and fused_inference_available()
    return [name for name, (_, is_fused) in MODES.items() if fused or not is_fused]


def _zoo_policy(task: str, device: str) -> Any:
    """The zoo's most trained unperturbed policy of ``task``, or ``None`` when the task has no zoo."""
    from wm_eval import tasks
    from wm_eval.errors import PolicyError
    from wm_eval.policy import load_policies, zoo_manifest

    try:
        manifest = json.loads(zoo_manifest(task).read_text(encoding="utf-8"))
    except PolicyError:
        return None
    entries = [e for e in manifest["policies"] if not e.get("perturbation")] or manifest["policies"]
    best = max(entries, key=lambda e: e.get("training_steps", 0))
    env = tasks.make_env(task)
    (policy,) = load_policies(f"zoo:{task}#{best['name']}", observation_space=env.observation_space,
                              action_space=env.action_space, task=task, device=device)
    env.close()
    return policy


_EVALUATE = """
import json, sys, time
from wm_eval.machine import PeakMemory
with PeakMemory() as memory:
    start = time.perf_counter()
    import wm_eval
    ev = wm_eval.evaluate(sys.argv[1], ["zoo"], model=sys.argv[3] or None, device=sys.argv[2], progress=False)
    timings = wm_eval.report(ev, sys.argv[4])["timings"]
    total = time.perf_counter() - start
print(json.dumps({"total": total, "timings": timings, "peak": memory.peak, "episodes": ev.episodes,
                  "policies": len(ev.policies), "horizon": ev.horizon}))
"""


def _evaluate_seconds(task: str, device: str, model: str | None, out: Path) -> dict[str, Any]:
    """Wall time and peak memory of the default evaluation (``wm_eval.evaluate`` then ``wm_eval.report``
    into ``out``, as ``wm-eval evaluate`` runs them) in a fresh Python process, so that neither the
    bench's own buffers nor its imports count; split as the report's timings."""
    import subprocess
    import sys

    from wm_eval.errors import WmEvalError

    run = subprocess.run([sys.executable, "-c", _EVALUATE, task, device, model or "", str(out)], capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise WmEvalError(f"the timed evaluation failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    timings = measured["timings"]
    parts = ("model_rollouts", "ground_truth_rollouts", "metrics", "logging", "recording")
    return {"total": measured["total"], **{k: timings.get(k) for k in parts}, "episodes": measured["episodes"],
            "policies": measured["policies"], "horizon": measured["horizon"],
            "peak_memory_mb": measured["peak"] or None,  # None without /proc
            "note": "in a fresh process; ground-truth workers run alongside the model rollouts, so the parts may add "
                    "up to more than total; total covers importing, loading, plots and the report; peak_memory_mb "
                    "sums the resident memory of that process and its workers"}


def _machine(device: torch.device, threads: int) -> dict[str, Any]:
    here = machine()
    return {**here, "load_average_at_start": here["load_average"], "torch_threads": threads, "device": str(device),
            "cpu_flags": cpu_flags(), "builds": torch_builds(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 8's targets, each with the measured value and whether it was met (``None``: not measured)."""
    imagined, top, evaluate = result["imagined_steps_per_s"], str(result["largest_batch"]), result["evaluate_seconds"]
    big = int(top) >= TARGETS["target_batch"]
    rows: dict[str, tuple[float | None, str, float]] = {}
    for mode in ("float32", "float32_fused"):
        if mode in imagined:
            ratios = result["ratios"][mode]
            rows |= {f"imagined_{mode}_steps_per_s_at_4096_plus": (imagined[mode][top] if big else None, ">=",
                                                                   TARGETS["imagined_fp32_min"]),
                     f"{mode}_over_gym_single": (ratios["gym_single"] if big else None, ">=", TARGETS["vs_gym_single"]),
                     f"{mode}_over_mujoco_rollout": (ratios["mujoco_rollout"] if big else None, ">=",
                                                     TARGETS["vs_mujoco_rollout"])}
    rows["bfloat16_over_float32"] = (imagined["bfloat16"][top] / imagined["float32"][top], ">=",
                                     TARGETS["bf16_speedup"])
    rows["evaluate_seconds"] = (None if evaluate is None else evaluate["total"], "<", TARGETS["evaluate_seconds"])
    recording = None if evaluate is None or evaluate.get("recording") is None else evaluate["recording"] / evaluate["total"]
    rows["recording_share_of_evaluate"] = (recording, "<=", 0.10)
    rows["evaluate_peak_memory_mb"] = ((evaluate or {}).get("peak_memory_mb"), "<", TARGETS["peak_memory_mb"])
    return {name: {"measured": value, "target": f"{op} {bound:g}",
                   "met": None if value is None else {">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]}
            for name, (value, op, bound) in rows.items()}


def measure(*, task: str, out: Path, model: str | None = None, batch_sizes: list[int] | tuple[int, ...] = (1, 64, 1024, 8192),
            seconds: float = 1.0, repeats: int = 3, device: str = "cpu", evaluate: bool = True,
            allow_code: bool = False) -> dict[str, Any]:
    """Every figure of the bench (see the module docstring), as the dict written to ``bench.json``.

    Args:
        task: ground-truth task id; model: checkpoint folder or embedded task name (default: embedded).
        out: folder of the timed evaluation's report (``out/evaluate``).
        batch_sizes: vector env batch sizes; seconds, repeats: measurement per figure (median reported).
        device: torch device; evaluate: also time the default evaluation.
        allow_code: ``model`` may be a checkpoint naming a model class outside wm_eval (runs its code).

    Torch uses all usable cores for the speed figures; the evaluation runs with the caller's
    thread count, as ``wm-eval evaluate`` would.
    """
    from wm_eval import tasks
    from wm_eval.errors import ConfigError
    from wm_eval.models.checkpoint import model_identity, resolve_model

    batch_sizes = sorted({int(b) for b in batch_sizes})
    if not batch_sizes or batch_sizes[0] < 1 or seconds <= 0 or repeats < 1:
        raise ConfigError("bench needs batch_sizes >= 1, seconds > 0 and repeats >= 1")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but torch sees no CUDA device here; use device=cpu")
    torch_device, largest, run = torch.device(device), batch_sizes[-1], {"seconds": seconds, "repeats": repeats}
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        machine = _machine(torch_device, threads)
        tasks.allow_task_code(task)  # the caller named it
        world_model = resolve_model(model, task=task, device=device, allow_code=allow_code, **tasks.spaces(task))
        name = model_identity(model, world_model)[1]
        policy = _zoo_policy(task, device)
        modes = inference_modes(torch_device)
        imagined: dict[str, dict[str, float]] = {d: {} for d in modes}
        closed: dict[str, dict[str, float | None]] = {d: {} for d in modes}
        for batch in batch_sizes:
            rates = _imagined(world_model, task, batch, modes=modes, device=device, policy=policy, **run)
            for mode, (open_rate, closed_rate) in rates.items():
                imagined[mode][str(batch)], closed[mode][str(batch)] = open_rate, closed_rate
                print(f"imagined {mode} batch {batch}: {open_rate:,.0f} env-steps/s, closed loop "
                      f"{number(closed_rate)}", flush=True)
        ground = {"gym_single": _gym_single(task, **run), "gym_vector": _gym_vector(task, **run)}
        ground["mujoco_rollout"], open_loop = _mujoco_rollout(task, largest, threads=threads, **run)
        print("ground truth: " + ", ".join(f"{k} {v:,.0f}" for k, v in ground.items()) + " env-steps/s", flush=True)
        shapes = _layer_shapes(world_model)
        matmul = {d: _matmul_gflops(shapes, largest, d, device=torch_device, **run) for d in modes}
        del world_model  # frees its inference buffers before the evaluation
    finally:
        torch.set_num_threads(previous_threads)
    # with the caller's thread count, as ``wm-eval evaluate`` itself would run
    evaluate = _evaluate_seconds(task, device, model, out / "evaluate") if evaluate else None
    flops, top = sum(2 * e * n_in * n_out for e, n_in, n_out in shapes), str(largest)
    result = {
        "format": FORMAT, "task": task, "model": name, "device": str(torch_device),
        "model_layers": {"members": shapes[0][0], "sizes": [shapes[0][1]] + [n_out for _, _, n_out in shapes]},
        "batch_sizes": batch_sizes, "largest_batch": largest, **run,
        "imagined_steps_per_s": imagined, "closed_loop_steps_per_s": closed,
        "closed_loop_policy": None if policy is None else policy.name,
        "gym_single_steps_per_s": ground["gym_single"], "gym_vector_steps_per_s": ground["gym_vector"],
        "mujoco_rollout_steps_per_s": ground["mujoco_rollout"], "mujoco_rollout_open_loop_steps_per_s": open_loop,
        "mujoco_rollout": {"threads": threads, "batch": largest, "mode": "one call per env step",
                           "note": "raw simulator states only: no observations or rewards computed"},
        "ratios": {d: {k: imagined[d][top] / v for k, v in ground.items()} for d in modes},
        "flops_per_step": flops, "matmul_gflops": matmul,
        "model_gflops": {d: imagined[d][top].scaled(flops / 1e9) for d in modes},
        "default_precision": "float32",  # what evaluate and gym.make use (README: bfloat16 changes verdicts)
        "peak_rss_mb": peak_rss_mb(), "evaluate_seconds": evaluate,
        "versions": library_versions(), "machine": machine,
    }
    result["spread"] = spreads({k: result[k] for k in SPREAD_KEYS})
    result["targets"] = _targets(result)
    return result


def write_bench(result: dict[str, Any], out: Path, *, json_path: str | None = None) -> str:
    """Write ``bench.json`` and ``bench.md`` into ``out`` (and the JSON also to ``json_path``); returns the table."""
    from wm_eval.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    text, table = json.dumps(result, indent=2) + "\n", format_table(result)
    atomic_write_text(out / "bench.json", text)
    atomic_write_text(out / "bench.md", table)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, text)
    return table
