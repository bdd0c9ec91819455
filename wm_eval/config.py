"""Structured configs of the ``wm-eval`` commands: dataclass schemas, YAML files, ``key=value`` overrides.

Only the CLI reads configs; library functions take plain typed arguments. A
config is built in one place, in this order: the schema's defaults, the
``debug`` preset when asked, each ``--config FILE`` in turn, then the
``key=value`` overrides. Unknown keys, wrong types and missing files raise
:class:`~wm_eval.errors.ConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wm_eval.errors import ConfigError

__all__ = [
    "CollectConfig",
    "TrainConfig",
    "MultiStepTrainConfig",
    "TRAIN_SCHEMAS",
    "EvaluateConfig",
    "ViewConfig",
    "RegressConfig",
    "BenchConfig",
    "SCHEMAS",
    "PRESETS",
    "load_config",
    "save_config",
    "to_dict",
    "describe",
]

T = TypeVar("T")


def _doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose help text is shown by ``wm-eval <command> --help``."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class CollectConfig:
    """``wm-eval collect``: roll out behaviour policies in a MuJoCo task and write a Minari-layout dataset."""

    task: str = _doc("ground-truth task id", "HalfCheetah-v5")
    episodes: int = _doc("number of episodes", 100)
    max_steps: int = _doc("steps per episode at most", 1000)
    seed: int = _doc("seed of the resets, behaviour mix and action noise", 0)
    out: str = _doc("output dataset folder", "datasets/data/${task}-seed${seed}")
    behaviour: list[str] | None = _doc("behaviour policies: random, zoo, an SB3 zip, a manifest or module:callable "
                                       "(default: random plus the task's zoo where it has one)", None)
    noise_scales: list[float] = _doc("Gaussian action-noise std levels mixed over episodes",
                                     factory=lambda: [0.0, 0.1, 0.3])
    policy_block: int | None = _doc("rows per behaviour-policy call, so an episode's data does not depend on the "
                                    "episodes beside it; null: the whole lockstep batch (older recipes)", 64)
    executor: str = _doc("where rollouts run: local (this machine) or ray (a Ray cluster; same numbers)", "local")
    ray_address: str | None = _doc("Ray cluster with executor=ray: an address, local (a private Ray here) or "
                                   "unset (RAY_ADDRESS, else a cluster started with ray start)", None)
    overwrite: bool = _doc("replace an existing dataset at out", False)


@dataclass
class TrainConfig:
    """``wm-eval train``: fit a probabilistic ensemble world model on collected datasets."""

    dataset: list[str] = _doc("dataset folders written by wm-eval collect (one or more)", factory=list)
    out: str = _doc("output checkpoint folder", "runs/model")
    epochs: int = _doc("maximum training epochs", 100)
    seed: int = _doc("seed of the bootstraps, initialisation and batches, and of the split unless split_seed", 0)
    device: str = _doc("torch device: cpu, cuda, cuda:1, ...", "cpu")
    ensemble_size: int = _doc("ensemble members trained", 7)
    elites: int = _doc("members kept, chosen on validation loss", 5)
    hidden: int = _doc("hidden units per layer", 200)
    layers: int = _doc("hidden layers", 4)
    lr: float = _doc("Adam learning rate", 1e-3)
    weight_decay: float = _doc("Adam weight decay", 5e-5)
    batch_size: int = _doc("minibatch size", 256)
    patience: int = _doc("epochs without validation improvement before stopping", 8)
    val_fraction: float = _doc("fraction of episodes held out", 0.1)
    split: str = _doc("how episodes are held out: episode_hash (each by a hash of its own data and split_seed, so a "
                      "grown dataset keeps its held-out episodes) or permutation (a seeded permutation of the "
                      "indices, the rule before episode_hash)", "episode_hash")
    split_seed: int | None = _doc("seed of the held-out split (default: seed); keep it when you vary seed", None)
    max_train_seconds: float | None = _doc("stop training after this many seconds", None)
    bf16: bool = _doc("bf16 autocast for the training matmuls (about 2.5x faster on CPUs with AMX)", False)
    threads: int = _doc("torch CPU threads (0: torch's default)", 0)
    overwrite: bool = _doc("replace an existing checkpoint at out", False)
    model_type: str = _doc("model family: ensemble (one-step loss) or multistep (k-step rollout loss; adds the "
                           "keys rollout_steps, finetune_lr, finetune_epochs, finetune_patience, init, "
                           "average_epochs, fall_weight, fall_window, select_*)", "ensemble")


@dataclass
class MultiStepTrainConfig(TrainConfig):
    """``wm-eval train model_type=multistep``: the ensemble fine-tuned with a k-step rollout loss."""

    rollout_steps: int = _doc("k: steps each member rolls its own predictions in the loss", 5)
    finetune_lr: float = _doc("Adam learning rate of the multi-step fine-tuning", 2e-4)
    finetune_epochs: int = _doc("maximum multi-step epochs", 30)
    finetune_patience: int = _doc("multi-step epochs without validation improvement before stopping", 5)
    init: str | None = _doc("one-step checkpoint to start from (embedded task name or folder; default: train one "
                            "first, with epochs, lr and patience, which are unused when init is set)", None)
    average_epochs: int = _doc("keep the average of the weights after each of the last N epochs (stochastic weight "
                               "averaging) instead of each member's best epoch; 0: off; not with select_policies", 0)
    fall_weight: float = _doc("draw the k-step windows that end within fall_window steps of a termination (a fall) "
                              "this many times as often; 1: every window alike", 1.0)
    fall_window: int = _doc("steps before a termination whose windows fall_weight favours", 50)
    select_policies: list[str] | None = _doc("policies (zoo, zips, manifests) whose closed-loop ranking against "
                                             "MuJoCo chooses the epoch kept; default: each member's best epoch by "
                                             "validation loss", None)
    select_episodes: int = _doc("paired episodes per policy for select_policies", 10)
    select_seed: int = _doc("seed of select_policies' episodes (not the one you will evaluate with)", 1)
    select_metric: str = _doc("what select_policies maximises: spearman, kendall, pearson, or minimises: "
                              "mmrv_normalized, regret_at_1, normalized_abs_error", "spearman")
    select_statistic: str = _doc("per-episode value ranked: discounted_return, return, success", "discounted_return")
    select_horizon: int | None = _doc("steps per select_policies episode (default: the task's time limit)", None)
    select_every: int = _doc("epochs between closed-loop scores (the start and the last epoch are always scored)", 1)


TRAIN_SCHEMAS: dict[str, type] = {"ensemble": TrainConfig, "multistep": MultiStepTrainConfig}
"""The model families of ``wm-eval train``, each with its own keys (``model_type=``)."""


@dataclass
class EvaluateConfig:
    """``wm-eval evaluate``: paired imagined and MuJoCo rollouts of policies, metrics and report."""

    task: str = _doc("ground-truth task id", "HalfCheetah-v5")
    model: str | None = _doc("world model: checkpoint folder, embedded task name or module:factory (default: "
                             "embedded)", None)
    policies: list[str] = _doc("SB3 zips, zoo manifests (zoo = the task's zoo) or module:callable",
                               factory=lambda: ["zoo"])
    episodes: int = _doc("paired episodes per policy", 10)
    horizon: int | None = _doc("steps per episode at most (default: the task's time limit, else 1000)", None)
    seed: int = _doc("seed of the start states and model sampling", 0)
    out: str | None = _doc("output folder (default: runs/evaluate-<time>)", None)
    mode: str = _doc("closed_loop (policy acts in the model) or open_loop (replay true actions)", "closed_loop")
    propagation: str = _doc("ensemble propagation: mean, ts1 or ts_inf", "mean")
    sample: bool = _doc("sample next states from the members' Gaussians (per-episode random streams)", False)
    device: str = _doc("torch device for the model and policies", "cpu")
    gamma: float = _doc("discount of the discounted returns", 0.995)
    bootstrap: int = _doc("bootstrap resamples for the intervals", 1000)
    workers: int = _doc("processes for ground-truth rollouts (0 = all cores)", 0)
    rerun: bool = _doc("write rollouts.rrd for the selected episodes", True)
    overwrite: bool = _doc("write into an existing out folder", False)
    chunk: int = _doc("episodes per work unit; results do not depend on it", 10)
    resume: bool = _doc("skip work units already finished in out/ by an interrupted run", False)
    trajectories: str = _doc("which episodes trajectories.h5 keeps: all, selected (per policy the worst and a "
                             "typical episode), summary (none), or auto (all up to 400k paired steps, else "
                             "selected)", "auto")
    max_batch: int = _doc("episodes imagined at once (bounds memory; results do not depend on it)", 512)
    precision: str = _doc("world model arithmetic: float32, or bfloat16 (faster on CPUs with AVX512-BF16)",
                          "float32")
    executor: str = _doc("where rollouts run: local (this machine) or ray (a Ray cluster; same numbers)", "local")
    ray_address: str | None = _doc("Ray cluster with executor=ray: an address, local (a private Ray here) or "
                                   "unset (RAY_ADDRESS, else a cluster started with ray start)", None)
    ray_actors: int = _doc("world-model actors with executor=ray (each holds the model, 1 CPU or GPU)", 1)
    real_episodes: int | None = _doc("run only this many episodes per policy in MuJoCo too (>= 2; the rest imagined "
                                     "only); true values are then PPI++ estimates (default: all episodes)", None)
    real_budget: int | None = _doc("instead of real_episodes: real episodes in total, placed by wm_eval (2 per policy, "
                                   "the rest to the contenders for first place)", None)
    confidence: float = _doc("level of the intervals for the policies' true values", 0.95)
    allow_code: bool = _doc("load a model checkpoint that names a model class outside wm_eval (runs its code)",
                            False)


@dataclass
class ViewConfig:
    """``wm-eval view``: show paired rollouts in Rerun."""

    path: str | None = _doc("an evaluation folder or its trajectories.h5", None)
    save: str | None = _doc("write a .rrd file instead of opening the viewer", None)
    web: bool = _doc("serve the web viewer on localhost", False)
    host: str = _doc("address the web viewer binds to; 0.0.0.0 exposes the recording to the network", "127.0.0.1")
    policies: list[str] = _doc("policy names to show (default: all)", factory=list)
    episodes: list[int] = _doc("episode indices to show (default: worst and a typical one)", factory=list)
    allow_code: bool = _doc("draw a recording whose task is a module:factory env (runs its code)", False)


@dataclass
class RegressConfig:
    """``wm-eval regress``: fail CI when a policy got worse than its stored baseline."""

    baseline: str | None = _doc("baseline file (JSON)", None)
    update_baseline: bool = _doc("record a new baseline instead of checking", False)
    task: str | None = _doc("ground-truth task id (default: the baseline's; HalfCheetah-v5 when recording)", None)
    model: str | None = _doc("world model (default: embedded)", None)
    policies: list[str] = _doc("policy files of the suite (with update_baseline)", factory=list)
    episodes: int = _doc("episodes per policy", 32)
    horizon: int | None = _doc("steps per episode at most (default: the task's time limit, else 1000)", None)
    seed: int = _doc("seed of the common random numbers", 0)
    tolerance: float | None = _doc("relative drop that counts as a regression (default: the baseline's, or 0.05)",
                                   None)
    allow_model_change: bool = _doc("accept a world model that differs from the baseline's", False)
    confirm: bool = _doc("re-run flagged policies in MuJoCo", False)
    junit: str | None = _doc("write JUnit XML here", None)
    device: str = _doc("torch device", "cpu")
    allow_code: bool = _doc("allow module:callable policies and models named in a baseline or config to run code",
                            False)
    executor: str = _doc("where rollouts run: local (this machine) or ray (a Ray cluster; same numbers)", "local")
    ray_address: str | None = _doc("Ray cluster with executor=ray: an address, local (a private Ray here) or "
                                   "unset (RAY_ADDRESS, else a cluster started with ray start)", None)


@dataclass
class BenchConfig:
    """``wm-eval bench``: imagined vs simulated steps per second, model GFLOP/s, evaluate wall time."""

    task: str = _doc("ground-truth task id", "HalfCheetah-v5")
    model: str | None = _doc("world model: checkpoint folder or embedded task name (default: embedded)", None)
    batch_sizes: list[int] = _doc("vector env batch sizes", factory=lambda: [1, 64, 1024, 8192])
    seconds: float = _doc("seconds of measurement per figure", 1.0)
    repeats: int = _doc("repeats per figure (the median is reported)", 3)
    out: str | None = _doc("folder for the JSON and table (default: runs/bench-<time>)", None)
    json: str | None = _doc("also write the JSON here", None)
    device: str = _doc("torch device", "cpu")
    evaluate: bool = _doc("also time the default wm-eval evaluate", True)
    allow_code: bool = _doc("load a model checkpoint that names a model class outside wm_eval (runs its code)",
                            False)


SCHEMAS: dict[str, type] = {
    "collect": CollectConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "view": ViewConfig,
    "regress": RegressConfig,
    "bench": BenchConfig,
}

#: ``--preset debug`` shrinks every size so the whole pipeline runs in seconds.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "debug": {
        "collect": {"episodes": 4, "max_steps": 50, "behaviour": ["random"], "noise_scales": [0.0]},
        "train": {"epochs": 3, "ensemble_size": 3, "elites": 2, "hidden": 32, "layers": 2, "batch_size": 64},
        "evaluate": {"episodes": 3, "horizon": 30, "bootstrap": 100, "workers": 1},
        "view": {},
        "regress": {"episodes": 8, "horizon": 30},
        "bench": {"batch_sizes": [1, 64], "seconds": 0.05, "repeats": 1, "evaluate": False},
    }
}


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split("\n")[0].split())


@functools.cache
def _list_keys(schema: type) -> frozenset[str]:
    """The keys of ``schema`` typed ``list[...]`` (or ``list[...] | None``)."""
    keys = set()
    for name, hint in typing.get_type_hints(schema).items():
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        options = typing.get_args(hint) if union else (hint,)
        if any(typing.get_origin(option) is list for option in options):
            keys.add(name)
    return frozenset(keys)


def _as_lists(values: Any, schema: type) -> Any:
    """``values`` (a mapping from a file, preset or overrides) with a single value of a list key made a
    one-element list: ``dataset=path`` means ``dataset=[path]``; an empty value an empty list; ``null``
    stays ``null``."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(values, (dict, DictConfig)):
        return values
    lists = _list_keys(schema)
    single = [key for key in values if key in lists and not isinstance(values[key], (list, tuple, ListConfig))
              and not (OmegaConf.is_missing(values, key) if isinstance(values, DictConfig) else False)]
    if not single:
        return values
    plain = OmegaConf.to_container(values, resolve=False) if isinstance(values, DictConfig) else dict(values)
    for key in single:
        if plain[key] == "":
            plain[key] = []  # ``policies=`` on the command line: an empty list
        elif plain[key] is not None:
            plain[key] = [plain[key]]
    return OmegaConf.create(plain)


def load_config(command: str, *, files: list[str] | None = None, overrides: list[str] | None = None,
                preset: str | None = None) -> Any:
    """Build the typed config of ``command`` (a dataclass instance) from defaults, preset, files and overrides.

    A list-typed key also takes a single value, in a file (``behaviour: zoo``) as on the command
    line (``dataset=path``): it becomes a one-element list.

    Raises:
        ConfigError: an unknown key, a wrong type, an unreadable or malformed file, a bad override.
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = SCHEMAS[command]
    try:
        if command == "train":
            schema = _train_schema(files, overrides)
        cfg = OmegaConf.structured(schema)
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset '{preset}': known presets are {', '.join(PRESETS)}")
            cfg = OmegaConf.merge(cfg, _as_lists(PRESETS[preset][command], schema))
        for path in files or []:
            if not Path(path).is_file():
                raise ConfigError(f"config file '{path}' does not exist")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, type(cfg)) and loaded is not None and not OmegaConf.is_dict(loaded):
                raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
            cfg = OmegaConf.merge(cfg, _as_lists(loaded or {}, schema))
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"'{item}' is not a key=value override (for example episodes=20)")
        cfg = OmegaConf.merge(cfg, _as_lists(OmegaConf.from_dotlist(list(overrides or [])), schema))
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
        known = ", ".join(f.name for f in dataclasses.fields(schema))
        message = _one_line(exc)
        if "not in struct" in message or "Key '" in message and "not in" in message:
            family = "".join(f" model_type={name}" for name, cls in TRAIN_SCHEMAS.items() if cls is schema and
                             command == "train")
            raise ConfigError(f"unknown key '{key}' for {command}{family}: known keys are {known}") from None
        raise ConfigError(f"bad value for '{key}' in {command} config: {message}") from None
    except (yaml.YAMLError, ValueError, OSError) as exc:  # YAML syntax, undecodable bytes, unreadable files
        raise ConfigError(f"could not read the {command} config: {_one_line(exc)}") from None


def _train_schema(files: list[str] | None, overrides: list[str] | None) -> type:
    """The schema of the ``model_type`` that the files and overrides ask for (the last one wins)."""
    from omegaconf import OmegaConf

    model_type = "ensemble"
    for path in files or []:
        if Path(path).is_file():
            loaded = OmegaConf.load(path)
            if OmegaConf.is_dict(loaded) and "model_type" in loaded:
                model_type = str(loaded["model_type"])
    for item in overrides or []:
        if item.startswith("model_type="):
            model_type = item.split("=", 1)[1]
    if model_type not in TRAIN_SCHEMAS:
        raise ConfigError(f"unknown model_type '{model_type}': use one of {', '.join(TRAIN_SCHEMAS)}")
    return TRAIN_SCHEMAS[model_type]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (paths kept as strings)."""
    return {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, folder: str | os.PathLike[str], name: str = "config.yaml") -> Path:
    """Write the resolved config as YAML into ``folder`` (atomically) and return the file."""
    from omegaconf import OmegaConf

    from wm_eval.fileio import atomic_write_text

    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))


def describe(command: str) -> str:
    """The keys of ``command`` with defaults and help, for ``--help`` (``train``: then each other model
    family's own keys, under its ``model_type``)."""

    def keys(fields: list[dataclasses.Field]) -> list[str]:
        out = []
        for f in fields:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append(f"  {f'{f.name}={default!s}':<36} {f.metadata.get('help', '')}")
        return out

    base = dataclasses.fields(SCHEMAS[command])
    lines = keys(list(base))
    if command == "train":
        names = {f.name for f in base}
        for family, schema in TRAIN_SCHEMAS.items():
            own = [f for f in dataclasses.fields(schema) if f.name not in names]
            if own:
                lines += ["", f"keys of model_type={family} only:", *keys(own)]
    return "\n".join(lines)
