"""Self-describing world-model checkpoints: a directory with ``weights.pt``, ``spec.json`` and optionally
``coverage.npz``.

(Over 400 lines: the format, its two atomic writes (save, attach_coverage) and every check on load share
the spec and the folder swap; the coverage data itself lives in :mod:`wm_eval.models.coverage`, users'
own models in :mod:`wm_eval.models.user`.)

``weights.pt`` is a plain state_dict written with ``torch.save`` and read with
``torch.load(..., weights_only=True)``, so loading never runs code from the file.
``spec.json`` holds::

    format              "wm_eval.model/1"       format_version  1
    wm_eval_version     version that wrote it   task            "HalfCheetah-v5"
    observation_space   {"type": "Box", "shape": [...], "low": [...], "high": [...], "dtype": "float32"}
    action_space        the same for actions    model_class     "module:Class" from MODEL_CLASSES
    hyperparameters     model.spec()            data_fingerprint  of the training data
    metrics, config     dicts                   seed            int
    versions            wm_eval, Python and library versions (wm_eval.machine.library_versions)
    weights_sha256      sha256 of weights.pt, checked on load (catches bit rot and truncation)
    coverage_sha256     sha256 of coverage.npz (optional: what the training data covered, see
                        wm_eval.models.coverage); loaded as ``model.coverage`` (``None`` without it)

Infinite bounds are written as the strings ``"inf"`` and ``"-inf"``. Normalisation
statistics live in the state_dict. Classes listed in :data:`MODEL_CLASSES` load as they are; a
checkpoint naming any other ``module:Class`` (a user's own :class:`WorldModel` subclass) loads only
with ``allow_code=True``, because importing that module runs its code.

Users' own models: ``resolve_model("module:factory")`` imports ``module`` and calls ``factory`` with
the keyword arguments among ``task``, ``observation_space``, ``action_space`` and ``device`` that it
accepts; it must return a :class:`WorldModel` (see its docstring for the contract and shapes).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

import wm_eval
from wm_eval.errors import CheckpointError, SpaceMismatchError
from wm_eval.fileio import sha256
from wm_eval.machine import library_versions
from wm_eval.models.base import WorldModel
from wm_eval.models.coverage import COVERAGE_FILE, Coverage
from wm_eval.models.user import CODE_REF, code_fingerprint, factory_fingerprint, from_factory, import_ref

__all__ = [
    "DEFAULT_TASK",
    "attach_coverage",
    "EMBEDDED_TASKS",
    "FORMAT",
    "FORMAT_VERSION",
    "MODEL_CLASSES",
    "backup_path",
    "box_from_json",
    "box_to_json",
    "embedded_model_path",
    "load_checkpoint",
    "model_fingerprint",
    "model_identity",
    "read_spec",
    "resolve_model",
    "save_checkpoint",
]

FORMAT_VERSION = 1
FORMAT = f"wm_eval.model/{FORMAT_VERSION}"
MODEL_CLASSES = {"GaussianMLPEnsemble": "wm_eval.models.ensemble:GaussianMLPEnsemble"}
EMBEDDED_TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "WmEval/ArmPush-v0", "WmEval/ArmDrawer-v0")
DEFAULT_TASK = "HalfCheetah-v5"
WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "spec.json"
_REQUIRED_KEYS = ("task", "model_class", "hyperparameters", "observation_space", "action_space", "weights_sha256")


def box_to_json(space: spaces.Box) -> dict[str, Any]:
    """A JSON-able description of a ``Box`` (infinite bounds as ``"inf"``/``"-inf"``)."""
    if not isinstance(space, spaces.Box):
        raise SpaceMismatchError(f"only Box spaces can be saved with a world model, got {type(space).__name__}")

    def bounds(values: np.ndarray) -> list[float | str]:
        return [float(v) if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in values.ravel()]

    return {"type": "Box", "shape": list(space.shape), "low": bounds(space.low), "high": bounds(space.high), "dtype": str(space.dtype)}


def box_from_json(data: dict[str, Any]) -> spaces.Box:
    """The ``Box`` that :func:`box_to_json` described."""
    if data.get("type") != "Box":
        raise SpaceMismatchError(f"expected a Box space description, got type {data.get('type')!r}")
    shape = tuple(int(s) for s in data["shape"])
    dtype = np.dtype(data["dtype"])
    low = np.array([float(v) for v in data["low"]], dtype=dtype).reshape(shape)
    high = np.array([float(v) for v in data["high"]], dtype=dtype).reshape(shape)
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


def save_checkpoint(
    model: WorldModel,
    path: str | os.PathLike[str],
    *,
    observation_space: spaces.Box,
    action_space: spaces.Box,
    data_fingerprint: str,
    metrics: dict[str, Any],
    config: dict[str, Any],
    seed: int,
    coverage: Coverage | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory at ``path`` atomically and return the path.

    An existing checkpoint at ``path`` is replaced; any other existing file or non-empty
    directory there is an error (so a typo never deletes user data). The new checkpoint is
    written in full beside ``path`` first, then swapped in: the old folder is renamed to
    :func:`backup_path` (``.<name>.backup``), the new one renamed to ``path``, and the backup
    deleted. An exception at any step puts the old checkpoint back; a crash (the process
    killed) leaves the old or the new complete checkpoint at ``path``, or, between the two
    renames, none at ``path`` and the old one at the backup, which :func:`load_checkpoint`
    then names. A leftover backup is deleted by the next successful save. ``coverage`` (what the
    training data covered) is stored beside the weights when given.
    """
    path = Path(path)
    class_ref = _class_ref(type(model))
    if observation_space.shape != (model.obs_dim,) or action_space.shape != (model.act_dim,):
        raise SpaceMismatchError(
            f"spaces {observation_space.shape}/{action_space.shape} do not match the model's "
            f"({model.obs_dim},)/({model.act_dim},) observation/action sizes"
        )
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "wm_eval_version": wm_eval.__version__,
        "task": model.task,
        "observation_space": box_to_json(observation_space),
        "action_space": box_to_json(action_space),
        "model_class": class_ref,
        "hyperparameters": model.spec(),
        "data_fingerprint": data_fingerprint,
        "metrics": metrics,
        "config": config,
        "seed": int(seed),
        "versions": library_versions(),
    }
    json.dumps(spec, allow_nan=False)  # fail on unserialisable metrics or config before touching the disk
    backup = backup_path(path)
    for folder in (path, backup):
        if folder.exists() and not _is_checkpoint_folder(folder):
            raise CheckpointError(f"'{folder}' exists and is not a wm_eval checkpoint; choose another output path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        torch.save({key: value.detach().cpu().clone() for key, value in model.state_dict().items()}, tmp / WEIGHTS_FILE)
        spec["weights_sha256"] = sha256(tmp / WEIGHTS_FILE)
        if coverage is not None:
            spec["coverage_sha256"] = sha256(coverage.save(tmp))
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        _swap_in(tmp, path, backup)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def backup_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_checkpoint` keeps the previous checkpoint of ``path`` while swapping in a new one."""
    path = Path(path)
    return path.with_name(f".{path.name}.backup")


def _is_checkpoint_folder(folder: Path) -> bool:
    """A folder that :func:`save_checkpoint` may replace: a checkpoint (it has ``spec.json``) or empty."""
    return folder.is_dir() and ((folder / SPEC_FILE).is_file() or not any(folder.iterdir()))


def _swap_in(new: Path, path: Path, backup: Path) -> None:
    """Move the complete checkpoint ``new`` to ``path``; the old one at ``path`` goes through ``backup``."""
    if path.exists():
        if backup.exists():  # left by an earlier save that crashed after its swap: ``path`` is complete
            shutil.rmtree(backup)
        os.replace(path, backup)
        try:
            os.replace(new, path)
        except BaseException:
            os.replace(backup, path)  # put the old checkpoint back, then report the failure
            raise
    else:
        os.replace(new, path)
    if backup.exists():
        shutil.rmtree(backup)


def read_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``spec.json`` of the checkpoint at ``path``."""
    path = Path(path)
    spec_file = path / SPEC_FILE
    if not path.is_dir():
        backup = backup_path(path)
        if not path.exists() and (backup / SPEC_FILE).is_file():
            raise CheckpointError(f"no checkpoint directory at '{path}', but '{backup}' holds the checkpoint that was "
                                  f"there before a save was interrupted; move it back to '{path}' or save again")
        raise CheckpointError(f"no checkpoint directory at '{path}'; give a directory holding {SPEC_FILE} and {WEIGHTS_FILE}")
    if not spec_file.is_file():
        raise CheckpointError(f"checkpoint '{path}' has no {SPEC_FILE}; re-train or re-download it")
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{spec_file} is truncated or corrupt; re-train or re-download ({exc})") from None
    if not isinstance(spec, dict) or not str(spec.get("format", "")).startswith("wm_eval.model/"):
        raise CheckpointError(f"{spec_file} is not a wm_eval model spec (no 'format': 'wm_eval.model/N'); re-train or re-download")
    version = spec.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{spec_file} is truncated or corrupt (format_version is {version!r}); re-train or re-download")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version}, newer than wm_eval {wm_eval.__version__} "
            f"reads ({FORMAT_VERSION}); upgrade wm_eval"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in spec]
    if missing:
        raise CheckpointError(f"{spec_file} is truncated or corrupt (missing {', '.join(missing)}); re-train or re-download")
    return spec


def load_checkpoint(path: str | os.PathLike[str], *, task: str | None = None, device: str = "cpu",
                    observation_space: spaces.Box | None = None, action_space: spaces.Box | None = None,
                    allow_code: bool = False) -> WorldModel:
    """Load the checkpoint at ``path`` in eval mode on ``device``.

    Args:
        path: the checkpoint directory.
        task: if given, the task the checkpoint must have been trained for.
        device: torch device of the returned model.
        observation_space, action_space: if given, the live task's spaces; the spaces stored in
            ``spec.json`` must equal them (shape and bounds).
        allow_code: load a checkpoint whose ``model_class`` is not one of :data:`MODEL_CLASSES`
            (importing its module runs code; only for checkpoints you trust).

    Raises:
        CheckpointError: a missing, truncated, corrupt or foreign checkpoint, or one for another task.
        SpaceMismatchError: stored spaces that differ from ``observation_space``/``action_space``.
    """
    path = Path(path)
    spec = read_spec(path)
    if task is not None and spec["task"] != task:
        raise CheckpointError(f"checkpoint '{path}' was trained for {spec['task']}, not {task}; pass a {task} checkpoint")
    stored_obs, stored_act = _stored_spaces(spec, path)
    _check_live_spaces(path, (stored_obs, observation_space), (stored_act, action_space))
    model_class = _import_model_class(spec["model_class"], path, allow_code=allow_code)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"checkpoint '{path}' has no {WEIGHTS_FILE}; re-train or re-download it")
    if sha256(weights_file) != spec["weights_sha256"]:
        raise CheckpointError(f"{weights_file} is truncated or corrupt; re-train or re-download (its sha256 differs from spec.json)")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{weights_file} is truncated or corrupt; re-train or re-download ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights_file} is not a state_dict of tensors; re-train or re-download")
    try:
        model = model_class(**spec["hyperparameters"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path / SPEC_FILE} has hyperparameters that {spec['model_class']} does not accept ({exc})") from None
    _check_state(model, state, weights_file)
    if stored_obs.shape != (model.obs_dim,) or stored_act.shape != (model.act_dim,):
        raise CheckpointError(f"{path / SPEC_FILE} has observation shape {list(stored_obs.shape)} and action shape "
                              f"{list(stored_act.shape)} but a model of sizes {model.obs_dim} and {model.act_dim}; "
                              "re-train or re-download")
    model.load_state_dict(state)
    model.coverage = _load_coverage(path, spec)
    return model.to(device).eval()


def _load_coverage(path: Path, spec: dict[str, Any]) -> Coverage | None:
    """The checkpoint's :class:`Coverage`, or ``None`` for a checkpoint saved without one."""
    if "coverage_sha256" not in spec:
        return None
    file = path / COVERAGE_FILE
    if not file.is_file() or sha256(file) != spec["coverage_sha256"]:
        raise CheckpointError(f"{file} is missing or corrupt (its sha256 differs from spec.json); re-train or re-download")
    coverage = Coverage.load(file)
    obs_dim, act_dim = spec["observation_space"]["shape"][0], spec["action_space"]["shape"][0]
    if len(coverage.obs_low) != obs_dim or len(coverage.mean) != obs_dim + act_dim:
        raise CheckpointError(f"{file} describes {len(coverage.obs_low)} observation dimensions, the model has "
                              f"{obs_dim}; re-train or re-download")
    return coverage


def attach_coverage(path: str | os.PathLike[str], coverage: Coverage) -> Path:
    """Store ``coverage`` in the existing checkpoint at ``path`` (replacing any; every other file of the
    folder is kept), as atomically as a save."""
    path = Path(path)
    spec = read_spec(path)
    obs_dim, act_dim = spec["observation_space"]["shape"][0], spec["action_space"]["shape"][0]
    if len(coverage.obs_low) != obs_dim or len(coverage.mean) != obs_dim + act_dim:
        raise CheckpointError(f"the coverage data is for {len(coverage.obs_low)} observation dimensions, the "
                              f"checkpoint '{path}' has {obs_dim}; build it from this model's training data")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        shutil.copytree(path, tmp, dirs_exist_ok=True)
        spec["coverage_sha256"] = sha256(coverage.save(tmp))
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        _swap_in(tmp, path, backup_path(path))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def _stored_spaces(spec: dict[str, Any], path: Path) -> tuple[spaces.Box, spaces.Box]:
    """The observation and action spaces recorded in ``spec.json``."""
    boxes = []
    for key in ("observation_space", "action_space"):
        data = spec[key]
        try:
            if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("shape", "low", "high")):
                raise ValueError("not an object with shape, low and high lists")
            boxes.append(box_from_json(data))
        except (KeyError, TypeError, ValueError) as exc:  # a damaged or hand-edited description (float(None), ...)
            raise CheckpointError(f"{path / SPEC_FILE} has a corrupt {key} ({type(exc).__name__}: {exc}); "
                                  "re-train or re-download") from None
    return boxes[0], boxes[1]


def _same_box(a: spaces.Box, b: spaces.Box) -> bool:
    """Same shape and bounds (infinite bounds equal, float tolerance); dtypes are not compared."""
    if a.shape != b.shape:
        return False
    return all(np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-6, atol=1e-6, equal_nan=True)
               for x, y in ((a.low, b.low), (a.high, b.high)))


def _check_live_spaces(path: Path, *pairs: tuple[spaces.Box, spaces.Box | None]) -> None:
    """Raise naming both spaces when a stored space differs from the live task's (``None``: not checked)."""
    for kind, (stored, live) in zip(("observation", "action"), pairs):
        if live is not None and not _same_box(stored, live):
            raise SpaceMismatchError(f"checkpoint '{path}' was trained with {kind} space {stored}, but the task's "
                                     f"{kind} space is {live}; pass a checkpoint trained for this task")


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """Short sha256 hex digest of the checkpoint's ``weights.pt`` and ``spec.json`` bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, SPEC_FILE):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint '{path}' has no {name}; re-train or re-download it")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]



def model_identity(ref: str | os.PathLike[str] | None, model: WorldModel) -> tuple[Path | None, str, str]:
    """Where a model resolved from ``ref`` came from: its checkpoint folder (``None`` when embedded or
    ``module:factory``), a display name (the path, ``module:factory`` or ``embedded:<task>``) and its
    fingerprint: :func:`model_fingerprint`, combined with the source of a model class outside wm_eval."""
    path = Path(ref) if ref is not None and Path(ref).exists() else None
    if path is None and ref is not None and CODE_REF.fullmatch(str(ref)):  # module:factory
        return None, str(ref), factory_fingerprint(str(ref), model)
    name = str(ref) if path is not None else f"embedded:{model.task}"
    fingerprint = model_fingerprint(path if path is not None else embedded_model_path(model.task))
    cls = type(model)
    if f"{cls.__module__}:{cls.__qualname__}" not in MODEL_CLASSES.values():  # a user's class: its code counts
        fingerprint = hashlib.sha256((fingerprint + code_fingerprint(cls)).encode()).hexdigest()[:16]
    return path, name, fingerprint


def embedded_model_path(task: str) -> Path:
    """Directory of the default model of ``task`` shipped inside the package (it may not exist)."""
    return Path(str(importlib.resources.files("wm_eval") / "assets" / "models" / task))


def resolve_model(ref: str | os.PathLike[str] | None, *, task: str | None, device: str = "cpu",
                  observation_space: spaces.Box | None = None, action_space: spaces.Box | None = None,
                  allow_code: bool = False) -> WorldModel:
    """The model a user means by ``ref``.

    ``None`` or ``"default"``: the embedded model of ``task`` (of HalfCheetah-v5 if ``task``
    is ``None``); an existing path: that checkpoint (``allow_code`` as in :func:`load_checkpoint`);
    an embedded task name: its embedded model; ``"module:factory"``: the :class:`WorldModel` that
    ``factory`` returns (see the module docstring). The model must have been trained for ``task``
    when ``task`` is given, and its stored spaces must equal ``observation_space``/``action_space``
    when those are given (see :func:`load_checkpoint`).
    """
    live = {"observation_space": observation_space, "action_space": action_space}
    if ref is None or str(ref) == "default":
        return _load_embedded(task or DEFAULT_TASK, task=task, device=device, **live)
    if Path(ref).exists() or backup_path(ref).exists():  # the latter: load_checkpoint explains the interrupted save
        return load_checkpoint(ref, task=task, device=device, allow_code=allow_code, **live)
    if str(ref) in EMBEDDED_TASKS:
        return _load_embedded(str(ref), task=task, device=device, **live)
    if CODE_REF.fullmatch(str(ref)):
        return from_factory(str(ref), task=task, device=device, **live)
    choices = ", ".join(("default",) + EMBEDDED_TASKS)
    raise CheckpointError(f"no model at '{ref}': give a checkpoint directory, module:factory or one of {choices}")


def _load_embedded(name: str, *, task: str | None, device: str, observation_space: spaces.Box | None,
                   action_space: spaces.Box | None) -> WorldModel:
    if name not in EMBEDDED_TASKS:
        raise CheckpointError(
            f"there is no embedded model for {name} (only {', '.join(EMBEDDED_TASKS)}); pass a checkpoint directory as model"
        )
    path = embedded_model_path(name)
    if not (path / SPEC_FILE).is_file():
        raise CheckpointError(
            f"the embedded {name} model is missing from this install (not trained yet); "
            "train one with `wm-eval train` and pass its directory as model"
        )
    return load_checkpoint(path, task=task, device=device, observation_space=observation_space,
                           action_space=action_space)


def _class_ref(model_class: type) -> str:
    """``module:Class`` of a model class; it must be importable by name to be loaded again."""
    if model_class.__module__ == "__main__" or "<locals>" in model_class.__qualname__:
        raise CheckpointError(f"model class {model_class.__qualname__} is defined in a script or function: define it "
                              "in an importable module so that the checkpoint can name it")
    return f"{model_class.__module__}:{model_class.__qualname__}"


def _import_model_class(ref: Any, path: Path, *, allow_code: bool = False) -> type[WorldModel]:
    """The class a checkpoint names: one of :data:`MODEL_CLASSES`, or any ``module:Class`` with ``allow_code``."""
    if ref not in MODEL_CLASSES.values():
        if not isinstance(ref, str) or not CODE_REF.fullmatch(ref):
            raise CheckpointError(f"checkpoint '{path}' names model class {ref!r}, which is not module:Class")
        if not allow_code:
            known = ", ".join(MODEL_CLASSES.values())
            raise CheckpointError(f"checkpoint '{path}' names model class {ref}, which is not one of wm_eval's ({known}): "
                                  "loading it imports and runs that module; pass allow_code=true if you trust it")
    cls = import_ref(ref, what=f"checkpoint '{path}' model class")
    if not (isinstance(cls, type) and issubclass(cls, WorldModel)):
        raise CheckpointError(f"checkpoint '{path}' names {ref}, which is not a wm_eval.models.WorldModel subclass")
    return cls


def _check_state(model: WorldModel, state: dict[str, torch.Tensor], weights_file: Path) -> None:
    expected = model.state_dict()
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or extra:
        raise CheckpointError(
            f"{weights_file} does not match its spec.json (missing {missing or 'nothing'}, unexpected {extra or 'nothing'}); "
            "re-train or re-download"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{weights_file} does not match its spec.json: {key} has shape {list(state[key].shape)}, "
                f"the spec implies {list(tensor.shape)}; re-train or re-download"
            )
