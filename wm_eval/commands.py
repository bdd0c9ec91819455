"""What each ``wm-eval`` command does with its typed config: the glue between config and library.

Library functions take plain typed arguments; only these functions read a config.
Each returns the process exit code.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from wm_eval.config import to_dict

__all__ = ["collect", "train", "evaluate", "view", "regress", "bench", "default_out"]


def default_out(kind: str) -> Path:
    """A new timestamped folder name under ``runs/`` (not created)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{kind}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{kind}-{stamp}-{n}"
    return path


def collect(cfg: Any) -> int:
    """``wm-eval collect``."""
    from wm_eval.config import save_config
    from wm_eval.data.collect import collect as run
    from wm_eval.data.collect import default_behaviour

    if cfg.behaviour is None:  # recorded resolved
        cfg.behaviour = default_behaviour(cfg.task)
    path = run(task=cfg.task, episodes=cfg.episodes, max_steps=cfg.max_steps, seed=cfg.seed,
               behaviour=list(cfg.behaviour), noise_scales=list(cfg.noise_scales), out=cfg.out,
               overwrite=cfg.overwrite, config=to_dict(cfg), policy_block=cfg.policy_block, executor=cfg.executor,
               ray_address=cfg.ray_address)
    save_config(cfg, path)
    print(f"wrote {cfg.episodes} episodes of {cfg.task} to {path}")
    return 0


def train(cfg: Any) -> int:
    """``wm-eval train``."""
    import json

    from wm_eval.config import save_config
    from wm_eval.data.hdf5 import load_dataset
    from wm_eval.errors import ConfigError, DatasetError
    from wm_eval.models.checkpoint import save_checkpoint
    from wm_eval.models.coverage import build_coverage, default_risk
    from wm_eval.training import EnsembleHParams, data_fingerprint, fit

    if not cfg.dataset:
        raise ConfigError("no dataset given: pass dataset=PATH (or dataset=[A,B]) from wm-eval collect")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ConfigError(f"{out} exists and is not empty; pass overwrite=true to replace it")
    datasets = [load_dataset(p, sim_states=False) for p in cfg.dataset]
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.task != first.task:
            raise DatasetError(f"datasets mix tasks: {first.path} is {first.task}, {ds.path} is {ds.task}")
    episodes = [ep for ds in datasets for ep in ds.episodes]
    common = dict(ensemble_size=cfg.ensemble_size, elites=cfg.elites, hidden=cfg.hidden, layers=cfg.layers, lr=cfg.lr,
                  weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, epochs=cfg.epochs, patience=cfg.patience,
                  val_fraction=cfg.val_fraction, max_train_seconds=cfg.max_train_seconds, bf16_autocast=cfg.bf16,
                  split=cfg.split, split_seed=cfg.split_seed)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if cfg.model_type == "multistep":
        from wm_eval.models.checkpoint import resolve_model
        from wm_eval.multistep import MultiStepHParams, fit_multistep

        hparams = MultiStepHParams(**common, rollout_steps=cfg.rollout_steps, finetune_lr=cfg.finetune_lr,
                                   finetune_epochs=cfg.finetune_epochs, finetune_patience=cfg.finetune_patience,
                                   init=cfg.init, average_epochs=cfg.average_epochs, fall_weight=cfg.fall_weight,
                                   fall_window=cfg.fall_window)
        init = None if cfg.init is None else resolve_model(cfg.init, task=first.task, device=cfg.device)
        if init is not None:
            _warn_if_split_differs(cfg, first.task)
        select = None
        if cfg.select_policies is not None:
            from wm_eval.evaluation.selection import ClosedLoopSelector

            select = ClosedLoopSelector(first.task, list(cfg.select_policies), episodes=cfg.select_episodes,
                                        seed=cfg.select_seed, metric=cfg.select_metric,
                                        statistic=cfg.select_statistic, horizon=cfg.select_horizon)
        model, metrics = fit_multistep(episodes, task=first.task, hparams=hparams, seed=cfg.seed, device=cfg.device,
                                       init=init, select=select, select_every=cfg.select_every)
        if select is not None:
            metrics["selection"].update(metric=cfg.select_metric, statistic=cfg.select_statistic,
                                        policies=select.names, per_epoch=select.history)
    else:
        hparams = EnsembleHParams(**common)
        model, metrics = fit(episodes, task=first.task, hparams=hparams, seed=cfg.seed, device=cfg.device)
    # the coverage probe: the run's held-out episodes (permutation: coverage's own seeded tenth, which is how
    # the published models' coverage was built)
    probe = None if hparams.split == "permutation" else hparams.held_out(episodes, cfg.seed)[1]
    coverage = build_coverage(model, episodes, seed=cfg.seed, risk=default_risk(), probe=probe)
    save_checkpoint(model, out, observation_space=first.observation_space, action_space=first.action_space,
                    data_fingerprint=data_fingerprint(episodes), metrics=metrics, config=to_dict(cfg),
                    seed=cfg.seed, coverage=coverage)
    save_config(cfg, out)
    summary = {k: metrics[k] for k in ("nll", "reward_r2", "termination_f1", "termination_f1_task_rule",
                                       "open_loop_error") if k in metrics}
    print(f"trained {first.task} model on {len(episodes)} episodes -> {out}")
    if "selection" in metrics:
        sel = metrics["selection"]
        kept = sel["per_epoch"][sel["epochs"].index(sel["chosen_epoch"])][sel["metric"]]
        print(f"kept epoch {sel['chosen_epoch']} of {metrics['finetune_epochs_run']} (0: the start) by closed-loop "
              f"{sel['metric']} on {len(sel['policies'])} policies: "
              + ("undefined (no epoch had a score)" if kept is None else f"{kept:.3f}"))
    print(json.dumps(summary, indent=2))
    return 0


def _warn_if_split_differs(cfg: Any, task: str) -> None:
    """Warn when fine-tuning from ``cfg.init`` may validate on episodes the start trained on: its split rule,
    split seed or held-out fraction differ from this run's (or ``permutation``, which moves with the data)."""
    import warnings

    from wm_eval.models.checkpoint import SPEC_FILE, embedded_model_path, read_spec
    from wm_eval.training import recorded_split

    folder = Path(cfg.init)
    if not folder.is_dir():
        folder = embedded_model_path(task if cfg.init == "default" else cfg.init)
    if not (folder / SPEC_FILE).is_file():  # a module:factory model: fit_multistep says what it needs
        return
    start = recorded_split(read_spec(folder))
    mine = (cfg.split, cfg.seed if cfg.split_seed is None else cfg.split_seed, float(cfg.val_fraction))
    if mine != start or mine[0] == "permutation":
        warnings.warn(f"init={cfg.init} held out (split, split seed, val_fraction) = {start}, this run {mine}: "
                      "its validation episodes may include ones the start trained on, which makes early stopping "
                      "and the held-out metrics optimistic; train the start and this run with split=episode_hash, "
                      "the same split_seed and val_fraction", UserWarning, stacklevel=2)


def _out_folder(cfg: Any, kind: str) -> Path:
    """The output folder of a run: ``cfg.out`` or a new ``runs/<kind>-<time>``; refuses to mix runs."""
    from wm_eval.errors import ConfigError

    out = Path(cfg.out) if cfg.out else default_out(kind)
    if out.exists() and any(out.iterdir()) and not getattr(cfg, "overwrite", False):
        raise ConfigError(f"{out} exists and is not empty; choose another out= or pass overwrite=true")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_evaluation(cfg: Any, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """``wm_eval.evaluate`` with the config's arguments, then ``wm_eval.report`` into ``out``."""
    from wm_eval.config import save_config
    from wm_eval.evaluation.api import evaluate as run
    from wm_eval.reporting.report import report

    ev = run(cfg.task, list(cfg.policies), model=cfg.model, episodes=cfg.episodes, horizon=cfg.horizon,
             seed=cfg.seed, mode=cfg.mode, propagation=cfg.propagation, sample=cfg.sample, device=cfg.device,
             gamma=cfg.gamma, chunk=cfg.chunk, workers=cfg.workers, out=out, resume=cfg.resume,
             trajectories=cfg.trajectories, bootstrap=cfg.bootstrap, max_batch=cfg.max_batch, precision=cfg.precision,
             executor=cfg.executor, ray_address=cfg.ray_address, ray_actors=cfg.ray_actors,
             real_episodes=cfg.real_episodes, real_budget=cfg.real_budget, confidence=cfg.confidence, allow_code=cfg.allow_code, progress=progress)
    cfg.horizon = ev.horizon  # recorded resolved (None: the task's time limit)
    save_config(cfg, out)
    result = report(ev, out, rerun=cfg.rerun, config=to_dict(cfg))
    _remove_units(out)
    return result


def _remove_units(out: Path) -> None:
    """Drop the finished units once the report that merges them is written."""
    import shutil

    shutil.rmtree(out / "units", ignore_errors=True)


def evaluate(cfg: Any) -> int:
    """``wm-eval evaluate``."""
    from wm_eval.reporting.report import summary_table

    out = Path(cfg.out) if cfg.out else default_out("evaluate")
    if cfg.overwrite:  # a fresh run: the units of an earlier one must not be resumed by accident
        _remove_units(out)
    if not (cfg.resume and (out / "units").is_dir()):
        out = _out_folder(cfg, "evaluate")
    report = run_evaluation(cfg, out)
    print(summary_table(report))
    print(f"report: {out / 'report.md'}")
    return 0


def view(cfg: Any) -> int:
    """``wm-eval view``: the native viewer, ``--web`` or ``--save FILE.rrd``."""
    from wm_eval.errors import ConfigError
    from wm_eval.reporting import rerun_log, rerun_web
    from wm_eval.reporting.trajectories import read_trajectories

    if cfg.path is None:
        raise ConfigError("give an evaluation folder or its trajectories.h5, e.g. wm-eval view runs/evaluate-...")
    source = read_trajectories(cfg.path)
    if cfg.allow_code:  # the recording's task may be a module:factory env, which drawing it runs
        from wm_eval.tasks import allow_any_task_code

        allow_any_task_code()
    choice = {"policies": list(cfg.policies) or None, "episodes": list(cfg.episodes) or None}
    if cfg.save:
        path = rerun_log.write_recording(cfg.save, source, **choice)
        print(f"wrote {path}")
    elif cfg.web:
        import signal
        import time

        viewer = rerun_web.serve_web(source, host=cfg.host, **choice)
        # Rerun's servers may install their own Ctrl-C handler from a background thread: take it back, so that
        # Ctrl-C always reaches the loop below and closes both servers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"serving the Rerun web viewer on {cfg.host}: open {viewer.url}  (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(1)
        finally:
            viewer.close()
    else:
        rerun_log.show(source, **choice)
    return 0


def regress(cfg: Any) -> int:
    """``wm-eval regress``: 0 no regression, 1 a regression, 2 bad input.

    With ``update_baseline`` it records the baseline (``task``, ``model``, ``policies``, ``episodes``,
    ``horizon``, ``seed``, ``tolerance``) and returns 0. Otherwise it checks it: the baseline defines the
    suite, episodes, horizon and seeds; ``model``, ``task`` and ``tolerance`` (when not ``None``) override
    or are checked against it. Prints a table, writes ``junit`` and appends the Markdown summary to
    ``$GITHUB_STEP_SUMMARY`` when set.
    """
    import os

    from wm_eval.errors import ConfigError
    from wm_eval.fileio import atomic_write_text
    from wm_eval.regress import DEFAULT_TASK, DEFAULT_TOLERANCE, check_baseline, record_baseline
    from wm_eval.reporting.gate import junit_xml, markdown_summary, text_table

    if not cfg.baseline:
        raise ConfigError("no baseline file: pass --baseline FILE (with --update-baseline to record one)")
    if cfg.update_baseline:
        baseline = record_baseline(
            cfg.baseline, task=cfg.task or DEFAULT_TASK, policies=list(cfg.policies), model=cfg.model,
            episodes=cfg.episodes, horizon=cfg.horizon, seed=cfg.seed,
            tolerance=DEFAULT_TOLERANCE if cfg.tolerance is None else cfg.tolerance, confirm=cfg.confirm,
            device=cfg.device, executor=cfg.executor, ray_address=cfg.ray_address, allow_code=cfg.allow_code,
        )  # fmt: skip
        for entry in baseline["policies"]:
            est = entry["imagined_return"]
            print(f"{entry['name']}: imagined return {est['mean']:.2f} [{est['ci_low']:.2f}, {est['ci_high']:.2f}]"
                  f" ({entry['path']})")
        print(f"recorded {len(baseline['policies'])} policies of {baseline['task']} in {cfg.baseline}")
        return 0
    result = check_baseline(cfg.baseline, model=cfg.model, task=cfg.task, tolerance=cfg.tolerance,
                            allow_model_change=cfg.allow_model_change, confirm=cfg.confirm, device=cfg.device,
                            allow_code=cfg.allow_code, executor=cfg.executor, ray_address=cfg.ray_address)
    print(text_table(result))
    if cfg.junit:
        Path(cfg.junit).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.junit, junit_xml(result))
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(markdown_summary(result))
    return 1 if result.regressions else 0


def bench(cfg: Any) -> int:
    """``wm-eval bench``: imagined vs simulated steps per second, GFLOP/s, evaluate wall time; writes
    ``bench.json`` and ``bench.md`` into ``out`` (default ``runs/bench-<time>``) and prints the table."""
    from wm_eval.bench import measure, write_bench

    out = Path(cfg.out) if cfg.out else default_out("bench")
    result = measure(task=cfg.task, out=out, model=cfg.model, batch_sizes=list(cfg.batch_sizes), seconds=cfg.seconds,
                     repeats=cfg.repeats, device=cfg.device, evaluate=cfg.evaluate, allow_code=cfg.allow_code)
    print(write_bench(result, out, json_path=cfg.json))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
