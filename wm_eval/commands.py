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

    path = run(task=cfg.task, episodes=cfg.episodes, max_steps=cfg.max_steps, seed=cfg.seed,
               behaviour=list(cfg.behaviour), noise_scales=list(cfg.noise_scales), out=cfg.out,
               overwrite=cfg.overwrite, config=to_dict(cfg))
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
    hparams = EnsembleHParams(ensemble_size=cfg.ensemble_size, elites=cfg.elites, hidden=cfg.hidden,
                              layers=cfg.layers, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              batch_size=cfg.batch_size, epochs=cfg.epochs, patience=cfg.patience,
                              val_fraction=cfg.val_fraction, max_train_seconds=cfg.max_train_seconds,
                              bf16_autocast=cfg.bf16)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    model, metrics = fit(episodes, task=first.task, hparams=hparams, seed=cfg.seed, device=cfg.device)
    save_checkpoint(model, out, observation_space=first.observation_space, action_space=first.action_space,
                    data_fingerprint=data_fingerprint(episodes), metrics=metrics, config=to_dict(cfg),
                    seed=cfg.seed)
    save_config(cfg, out)
    summary = {k: metrics[k] for k in ("nll", "reward_r2", "termination_f1", "termination_f1_task_rule",
                                       "open_loop_error") if k in metrics}
    print(f"trained {first.task} model on {len(episodes)} episodes -> {out}")
    print(json.dumps(summary, indent=2))
    return 0


def _out_folder(cfg: Any, kind: str) -> Path:
    """The output folder of a run: ``cfg.out`` or a new ``runs/<kind>-<time>``; refuses to mix runs."""
    from wm_eval.errors import ConfigError

    out = Path(cfg.out) if cfg.out else default_out(kind)
    if out.exists() and any(out.iterdir()) and not getattr(cfg, "overwrite", False):
        raise ConfigError(f"{out} exists and is not empty; choose another out= or pass overwrite=true")
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_model(ref: str | None, *, task: str, device: str) -> tuple[Any, str, str]:
    """The world model of ``ref`` (default: embedded for ``task``), its display name and fingerprint."""
    from wm_eval.models.checkpoint import model_identity, resolve_model

    model = resolve_model(ref, task=task, device=device)
    _, name, fingerprint = model_identity(ref, model)
    return model, name, fingerprint


def load_policy_list(specs: list[str], *, task: str, device: str) -> list[Any]:
    """Every policy named by ``specs`` (``zoo`` is the task's zoo), checked against the task's spaces."""
    from wm_eval.policy import load_policies
    from wm_eval.tasks import make_env

    env = make_env(task)
    policies = []
    for spec in specs:
        policies += load_policies(f"zoo:{task}" if spec == "zoo" else spec, observation_space=env.observation_space,
                                  action_space=env.action_space, task=task, device=device)
    env.close()
    return policies


def run_evaluation(cfg: Any, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate, then write the trajectories, plots, recording and report into ``out``; returns the report.

    ``report.json`` is written last, so a folder without it holds no finished evaluation.
    """
    import time

    from wm_eval.config import save_config
    from wm_eval.evaluation.paired import evaluate_policies
    from wm_eval.evaluation.summary import summarize
    from wm_eval.reporting.plots import write_plots
    from wm_eval.reporting.report import build_report, write_report
    from wm_eval.reporting.trajectories import write_trajectories
    from wm_eval.tasks import get_task

    get_task(cfg.task)
    model, name, fingerprint = load_model(cfg.model, task=cfg.task, device=cfg.device)
    policies = load_policy_list(list(cfg.policies), task=cfg.task, device=cfg.device)
    save_config(cfg, out)
    ev = evaluate_policies(task=cfg.task, model=model, model_name=name, model_fingerprint=fingerprint,
                           policies=policies, episodes=cfg.episodes, horizon=cfg.horizon, seed=cfg.seed,
                           mode=cfg.mode, propagation=cfg.propagation, device=cfg.device, workers=cfg.workers,
                           progress=progress)
    t0 = time.perf_counter()
    summary = summarize(ev, gamma=cfg.gamma, n_resamples=cfg.bootstrap)
    ev.timings["metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trajectories = write_trajectories(out / "trajectories.h5", ev, config=to_dict(cfg))
    ev.timings["logging"] = time.perf_counter() - t0
    if cfg.rerun:
        from wm_eval.reporting.rerun_log import write_recording
        from wm_eval.reporting.trajectories import read_trajectories

        t0 = time.perf_counter()
        write_recording(out / "rollouts.rrd", read_trajectories(trajectories))
        ev.timings["recording"] = time.perf_counter() - t0
    report = build_report(ev, summary, config=to_dict(cfg))
    write_plots(out, report)
    write_report(out, report)
    return report


def evaluate(cfg: Any) -> int:
    """``wm-eval evaluate``."""
    from wm_eval.reporting.report import summary_table

    out = _out_folder(cfg, "evaluate")
    report = run_evaluation(cfg, out)
    print(summary_table(report))
    print(f"report: {out / 'report.md'}")
    return 0


def view(cfg: Any) -> int:
    """``wm-eval view``: the native viewer, ``--web`` or ``--save FILE.rrd``."""
    from wm_eval.errors import ConfigError
    from wm_eval.reporting import rerun_log
    from wm_eval.reporting.trajectories import read_trajectories

    if cfg.path is None:
        raise ConfigError("give an evaluation folder or its trajectories.h5, e.g. wm-eval view runs/evaluate-...")
    source = read_trajectories(cfg.path)
    choice = {"policies": list(cfg.policies) or None, "episodes": list(cfg.episodes) or None}
    if cfg.save:
        path = rerun_log.write_recording(cfg.save, source, **choice)
        print(f"wrote {path}")
    elif cfg.web:
        import time

        stream = rerun_log.serve_web(source, **choice)
        print("serving the Rerun web viewer on localhost; press Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        finally:
            stream.disconnect()
    else:
        rerun_log.show(source, **choice)
    return 0


def regress(cfg: Any) -> int:
    """``wm-eval regress``: 0 no regression, 1 a regression, 2 bad input."""
    from wm_eval.regress import run_regress

    return run_regress(cfg)


def bench(cfg: Any) -> int:
    """``wm-eval bench``: imagined vs simulated steps per second, GFLOP/s, evaluate wall time."""
    from wm_eval.bench import run_bench

    return run_bench(cfg)
