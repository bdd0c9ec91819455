"""What each ``wm-eval`` command does with its typed config: the glue between config and library.

Library functions take plain typed arguments; only these functions read a config.
Each returns the process exit code.
"""

from __future__ import annotations

import datetime as _dt
import os
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
    from wm_eval.data.collect import collect as run

    path = run(task=cfg.task, episodes=cfg.episodes, max_steps=cfg.max_steps, seed=cfg.seed,
               behaviour=list(cfg.behaviour), noise_scales=list(cfg.noise_scales), out=cfg.out,
               overwrite=cfg.overwrite, config=to_dict(cfg))
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
    datasets = [load_dataset(p) for p in cfg.dataset]
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.task != first.task:
            raise DatasetError(f"datasets mix tasks: {first.path} is {first.task}, {ds.path} is {ds.task}")
    episodes = [ep for ds in datasets for ep in ds.episodes]
    hparams = EnsembleHParams(ensemble_size=cfg.ensemble_size, elites=cfg.elites, hidden=cfg.hidden,
                              layers=cfg.layers, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              batch_size=cfg.batch_size, epochs=cfg.epochs, patience=cfg.patience,
                              val_fraction=cfg.val_fraction, max_train_seconds=cfg.max_train_seconds)
    model, metrics = fit(episodes, task=first.task, hparams=hparams, seed=cfg.seed, device=cfg.device)
    save_checkpoint(model, out, observation_space=first.observation_space, action_space=first.action_space,
                    data_fingerprint=data_fingerprint(episodes), metrics=metrics, config=to_dict(cfg),
                    seed=cfg.seed)
    save_config(cfg, out)
    summary = {k: metrics[k] for k in ("nll", "reward_r2", "termination_f1", "open_loop_error") if k in metrics}
    print(f"trained {first.task} model on {len(episodes)} episodes -> {out}")
    print(json.dumps(summary, indent=2))
    return 0


def evaluate(cfg: Any) -> int:
    """``wm-eval evaluate``."""
    from wm_eval.errors import WmEvalError

    raise WmEvalError("evaluate is not implemented yet")


def view(cfg: Any) -> int:
    """``wm-eval view``."""
    from wm_eval.errors import WmEvalError

    raise WmEvalError("view is not implemented yet")


def regress(cfg: Any) -> int:
    """``wm-eval regress``."""
    from wm_eval.errors import WmEvalError

    raise WmEvalError("regress is not implemented yet")


def bench(cfg: Any) -> int:
    """``wm-eval bench``."""
    from wm_eval.errors import WmEvalError

    raise WmEvalError("bench is not implemented yet")


os.environ.setdefault("MUJOCO_GL", "egl")
