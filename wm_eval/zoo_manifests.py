"""Zoo manifests (format ``wm_eval.zoo/1``): the shipped policy zoos and any manifest a user names.

A manifest is JSON: ``{"format": "wm_eval.zoo/1", "task": ..., "policies": [...]}`` where each entry has a
unique ``name`` and either ``file`` (an SB3 zip beside the manifest, loaded without unpickling code) or
``scripted`` (the numeric knobs of the task's scripted expert in :mod:`wm_eval.envs.experts`, wm_eval's own
code, so a manifest never names code to run). Further keys (``true_return``, ``training_steps``, ...) are
kept as the policy's ``metadata``. The shipped zoos live in ``policies/<task>/`` (installed as package data
``wm_eval.zoo``; ids with ``/`` are written with ``_`` as folder names).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from wm_eval.errors import PolicyError, did_you_mean

__all__ = ["ZOO_FORMAT", "ManifestPolicy", "zoo_tasks", "zoo_manifest", "load_manifest"]

ZOO_FORMAT = "wm_eval.zoo/1"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def zoo_tasks() -> list[str]:
    """Tasks that have a zoo manifest (folder names are task ids with ``/`` written as ``_``)."""
    return sorted(_task_of_folder(p.parent.name) for p in _zoo_root().glob("*/manifest.json"))


def _task_of_folder(name: str) -> str:
    return name.replace("_", "/", 1) if name.startswith("WmEval_") else name


def zoo_manifest(task: str) -> Path:
    """Path of the shipped zoo manifest of ``task``; a :class:`PolicyError` lists the zoo tasks if none."""
    folder = task.replace("/", "_")
    path = _zoo_root() / folder / "manifest.json"
    if Path(folder).name != folder or not path.is_file():
        tasks = zoo_tasks()
        hint = did_you_mean(task, tasks)
        raise PolicyError(f"the policy zoo has no manifest for task '{task}'; {hint}zoo tasks: "
                          f"{', '.join(tasks) or 'none'} (python policies/train_zoo.py --task <task> builds one)")
    return path


def _zoo_root() -> Path:
    """The zoo folder: package data ``wm_eval.zoo`` once installed (pyproject maps the top-level
    ``policies/`` folder to it); in a source checkout used through ``PYTHONPATH`` there is no such
    package, so the ``policies/`` folder next to ``wm_eval/`` is used directly."""
    try:
        return Path(str(importlib.resources.files("wm_eval.zoo")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "policies"


class ManifestPolicy(NamedTuple):
    """One loaded manifest entry (:func:`wm_eval.policy.load_policies` makes it a ``LoadedPolicy``)."""

    name: str
    source: str
    actor: Callable[[np.ndarray], Any]
    algorithm: str | None
    metadata: Mapping[str, Any]


def load_manifest(path: Path, select: str | None, task: str | None, device: str,
                  spaces_: dict[str, spaces.Box]) -> list[ManifestPolicy]:
    """The policies of the manifest at ``path`` (only ``select`` when given), checked against ``task``."""
    from wm_eval.sb3_loading import load_sb3_zip

    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"zoo manifest '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"cannot read zoo manifest '{path}': {_first_line(e)}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != ZOO_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise PolicyError(f"'{path}' is not a wm_eval zoo manifest (format {found!r}, expected '{ZOO_FORMAT}')")
    if task is not None and manifest.get("task") != task:
        raise PolicyError(f"zoo manifest '{path}' is for task {manifest.get('task')!r}, not '{task}'")
    entries = manifest.get("policies")
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str)
            and (isinstance(e.get("file"), str) != ("scripted" in e))
            and ("scripted" not in e or _knobs(e["scripted"])) for e in entries):
        raise PolicyError(f"zoo manifest '{path}': 'policies' must be a list of objects with 'name' and either "
                          "'file' (an SB3 zip) or 'scripted' (the task's scripted expert's finite numeric knobs), not both")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise PolicyError(f"zoo manifest '{path}' names a policy twice; names must be unique")
    if select is not None:
        if select not in names:
            hint = did_you_mean(select, names)
            raise PolicyError(f"zoo manifest '{path}' has no policy '{select}'; {hint}it has {', '.join(names)}")
        entries = [entries[names.index(select)]]
    policies = []
    for entry in entries:
        name = entry["name"]
        source, metadata = f"{path.resolve()}#{name}", MappingProxyType(dict(entry))
        if "file" not in entry:
            policies.append(ManifestPolicy(name, source, _scripted(manifest["task"], entry), None, metadata))
            continue
        actor = load_sb3_zip(path.parent / entry["file"], name=name, device=device, **spaces_)
        if entry.get("algorithm", actor.algorithm) != actor.algorithm:
            raise PolicyError(f"zoo manifest '{path}' says policy '{name}' is {entry['algorithm']}, but its file "
                              f"holds a {actor.algorithm} model")
        policies.append(ManifestPolicy(name, source, actor, actor.algorithm, metadata))
    return policies


def _knobs(knobs: Any) -> bool:
    """Scripted-expert knobs: a dict of finite numbers (not booleans)."""
    return isinstance(knobs, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
        for k, v in knobs.items())


def _scripted(task: Any, entry: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted expert of a manifest entry ``{"scripted": {"skill": ..., ...}}``: wm_eval's own code
    (:mod:`wm_eval.envs.experts`), configured by numbers only, so a manifest cannot name code to run."""
    from wm_eval.envs.experts import expert

    try:
        return expert(task, **entry["scripted"])
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyError(f"zoo manifest policy '{entry['name']}': {_first_line(e)}") from None
