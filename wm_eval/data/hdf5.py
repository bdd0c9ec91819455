"""Datasets in the Minari on-disk layout: schema, an atomic writer and the reader.

A dataset is a folder that ``minari.MinariDataset(folder)`` opens as it is::

    <folder>/
      metadata.json              Minari metadata + a "wm_eval" block (task, seed, config, versions)
      main_data.hdf5             /episode_<i> -> ExternalLink("episodes/episode_<i:06d>.h5", "/episode_<i>")
      episodes/episode_000000.h5 /episode_0: the episode's data, see below
      episodes/episode_000001.h5 ...

Each episode group holds, in Minari's convention for ``T`` steps:
``observations [T+1, obs_dim]``, ``actions [T, act_dim]``, ``rewards [T]``,
``terminations [T]``, ``truncations [T]``, the attributes ``id``, ``total_steps``
and ``seed`` (the reset seed), and ``infos/``: ``sim_state [T+1, state_dim]``
(the full MuJoCo state, see :mod:`wm_eval.tasks`) plus one ``[T+1]`` array per
per-episode info (``policy``, ``noise_scale``), marked with the HDF5 attribute
``per_episode`` so that :func:`load_dataset` reads them back as scalars.

Atomicity: an HDF5 file that is open for writing when its process dies may be
unreadable as a whole, so no file is ever appended to. Every finished episode
goes to its own file, written under a temporary name and moved into place with
``os.replace``; then ``main_data.hdf5`` (links only, rewritten whole) and
``metadata.json`` are replaced the same way, in that order. A run killed at any
instant leaves a dataset whose ``metadata.json`` counts only episodes whose
files and links are complete: every finished episode stays readable. This
guards against the process dying (SIGKILL, out of memory), not against losing
power, since nothing is fsynced.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from wm_eval import __version__, minari_layout
from wm_eval.errors import DatasetError, SpaceMismatchError
from wm_eval.fileio import atomic_write as _atomic_write
from wm_eval.machine import library_versions
from wm_eval.tasks import get_task
from wm_eval.types import Trajectory

__all__ = ["FORMAT_VERSION", "Dataset", "DatasetWriter", "write_dataset", "load_dataset"]

FORMAT_VERSION = 1
_METADATA = minari_layout.METADATA
_MAIN = minari_layout.MAIN
_EPISODES = "episodes"


def _episode_file(index: int) -> str:
    return f"{_EPISODES}/episode_{index:06d}.h5"


def _info_array(value: Any, length: int) -> np.ndarray:
    """A per-episode info value repeated over the ``T + 1`` steps of the episode."""
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        return np.full(length, encoded, dtype=f"S{max(len(encoded), 1)}")
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return np.full(length, value)
    raise DatasetError(f"episode info value {value!r} is a {type(value).__name__}; infos may hold str, int, float or bool only")


def _write_episode(file: Path, index: int, traj: Trajectory, obs_dtype: np.dtype, act_dtype: np.dtype) -> None:
    with h5py.File(file, "w") as f:
        group = f.create_group(f"episode_{index}")
        group.attrs["id"] = index
        group.attrs["total_steps"] = len(traj)
        if traj.seed is not None:
            group.attrs["seed"] = int(traj.seed)
        group.create_dataset("observations", data=np.asarray(traj.observations, dtype=obs_dtype))
        group.create_dataset("actions", data=np.asarray(traj.actions, dtype=act_dtype))
        group.create_dataset("rewards", data=np.asarray(traj.rewards, dtype=np.float64))
        group.create_dataset("terminations", data=np.asarray(traj.terminations, dtype=bool))
        group.create_dataset("truncations", data=np.asarray(traj.truncations, dtype=bool))
        infos = group.create_group("infos")
        if traj.sim_states is not None:
            infos.create_dataset("sim_state", data=np.asarray(traj.sim_states, dtype=np.float64))
        for key, value in traj.infos.items():
            infos.create_dataset(key, data=_info_array(value, len(traj) + 1)).attrs["per_episode"] = True


class DatasetWriter:
    """Incremental, kill-safe writer of a dataset folder (see the module docstring for the layout).

    Entering the context prepares ``path`` (an empty dataset: refuses an existing one unless
    ``overwrite``); every :meth:`add` / :meth:`extend` is committed before it returns::

        with DatasetWriter(out, task="Hopper-v5", observation_space=env.observation_space,
                           action_space=env.action_space, config=cfg, seed=0) as writer:
            writer.add(trajectory)

    Args:
        path: the dataset folder.
        task: the task id the episodes come from.
        observation_space, action_space: the task's Box spaces (stored with Minari's serialisation).
        config: the resolved configuration to record (JSON-serialisable; other values become strings).
        seed: the seed the data was made with, recorded in the metadata.
        overwrite: replace an existing dataset at ``path``.

    The Minari ``dataset_id`` is ``wm_eval/<task>/<folder name>-v0``.
    """

    def __init__(self, path: str | os.PathLike[str], *, task: str, observation_space: gym.spaces.Box,
                 action_space: gym.spaces.Box, config: Mapping[str, Any] | None = None, seed: int | None = None,
                 overwrite: bool = False) -> None:
        get_task(task)
        self.path = Path(path)
        self.observation_space = observation_space
        self.action_space = action_space
        self.overwrite = overwrite
        slug = re.sub(r"[^-\w]+", "_", self.path.resolve().name) or "dataset"
        self._metadata = minari_layout.metadata(
            task=task, dataset_id=f"wm_eval/{task.lower()}/{slug}-v0", observation_space=observation_space,
            action_space=action_space, algorithm_name="wm_eval collect",
            extra={"format_version": FORMAT_VERSION, "version": __version__, "task": task, "seed": seed,
                   "config": dict(config or {}), "versions": library_versions()})
        self._links: list[str] = []
        self._total_steps = 0
        self._open = False

    @property
    def total_episodes(self) -> int:
        """Episodes committed so far."""
        return len(self._links)

    @property
    def total_steps(self) -> int:
        """Steps committed so far."""
        return self._total_steps

    def __enter__(self) -> DatasetWriter:
        try:
            _prepare(self.path, overwrite=self.overwrite)
            (self.path / _EPISODES).mkdir(parents=True)
            self._commit()
        except OSError as exc:
            raise DatasetError(f"cannot write a dataset at {self.path}: {exc.strerror or exc}; choose a writable out path") from None
        self._open = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._open = False

    def add(self, trajectory: Trajectory) -> None:
        """Write one finished episode and commit it."""
        self.extend([trajectory])

    def extend(self, trajectories: Iterable[Trajectory]) -> None:
        """Write finished episodes, each to its own file, then commit them all at once."""
        if not self._open:
            raise RuntimeError("DatasetWriter.extend called outside its `with` block")
        try:
            for traj in trajectories:
                self._check(traj)
                index = len(self._links)
                _atomic_write(self.path / _episode_file(index),
                              functools.partial(_write_episode, index=index, traj=traj,
                                                obs_dtype=self.observation_space.dtype,
                                                act_dtype=self.action_space.dtype))
                self._links.append(_episode_file(index))
                self._total_steps += len(traj)
        finally:  # episodes written before an error are kept
            self._commit()

    def _check(self, traj: Trajectory) -> None:
        for name, space, array in (("observations", self.observation_space, traj.observations),
                                   ("actions", self.action_space, traj.actions)):
            if np.shape(array)[1:] != space.shape:
                raise SpaceMismatchError(f"episode {name} have shape {np.shape(array)}; this dataset's "
                                         f"{name[:-1]} space has shape {space.shape}")

    def _commit(self) -> None:
        self._metadata.update(total_episodes=len(self._links), total_steps=self._total_steps)
        minari_layout.write_index(self.path, [(link, f"/episode_{i}") for i, link in enumerate(self._links)],
                                  self._metadata)


def _prepare(path: Path, *, overwrite: bool) -> None:
    """Make ``path`` ready for a new dataset: refuse or remove an existing one."""
    if not path.exists() and not path.is_symlink():
        return
    is_dataset = path.is_dir() and ((path / _METADATA).exists() or (path / _MAIN).exists())
    if is_dataset and overwrite:
        shutil.rmtree(path)
    elif is_dataset:
        raise DatasetError(f"dataset {path} exists; pass overwrite=true to replace it")
    elif not path.is_dir() or any(path.iterdir()):
        raise DatasetError(f"{path} exists and is not a dataset; choose another out path")


def write_dataset(path: str | os.PathLike[str], episodes: Iterable[Trajectory], *, task: str,
                  observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                  config: Mapping[str, Any] | None = None, seed: int | None = None, overwrite: bool = False) -> Path:
    """Write ``episodes`` as a dataset folder at ``path`` (see :class:`DatasetWriter`) and return the path."""
    with DatasetWriter(path, task=task, observation_space=observation_space, action_space=action_space,
                       config=config, seed=seed, overwrite=overwrite) as writer:
        writer.extend(episodes)
    return writer.path


@dataclass(frozen=True)
class Dataset:
    """A dataset read back into memory.

    Attributes:
        path: the dataset folder.
        task: the task id (from the ``wm_eval`` metadata, else from the Minari ``env_spec``).
        metadata: the raw ``metadata.json``.
        observation_space, action_space: the Gymnasium spaces rebuilt from the metadata.
        episodes: the episodes in id order; ``sim_states``, ``seed`` and ``infos``
            (``{"policy": name, "noise_scale": std}`` for collected data) as stored.
    """

    path: Path
    task: str
    metadata: dict[str, Any]
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    episodes: list[Trajectory]

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def total_steps(self) -> int:
        """Transitions over all episodes."""
        return sum(len(e) for e in self.episodes)


def _scalar(value: np.ndarray) -> Any:
    item = value[0].item() if value.ndim else value.item()
    return item.decode("utf-8") if isinstance(item, bytes) else item


def _read_episode(group: Any, *, sim_states: bool) -> Trajectory:
    if not isinstance(group, h5py.Group) or not isinstance(group.get("infos", {}), (dict, h5py.Group)):
        raise ValueError(f"{getattr(group, 'name', group)} is not an episode group")
    infos: dict[str, Any] = {}
    states = None
    for key, item in group.get("infos", {}).items():
        if key == "sim_state":
            states = item[()] if sim_states else None
        elif isinstance(item, h5py.Dataset):
            infos[key] = _scalar(item[()]) if item.attrs.get("per_episode", False) else item[()]
    seed = group.attrs.get("seed")
    return Trajectory(
        observations=group["observations"][()], actions=group["actions"][()], rewards=group["rewards"][()],
        terminations=group["terminations"][()], truncations=group["truncations"][()],
        sim_states=states, seed=None if seed is None else int(seed), infos=infos,
    )


def _corrupt(path: Path, reason: str) -> DatasetError:
    return DatasetError(f"dataset {path} is corrupt ({' '.join(reason.split())}); collect it again")


def _read_metadata(path: Path) -> tuple[dict[str, Any], str, gym.spaces.Space, gym.spaces.Space, int]:
    """``(metadata, task, observation_space, action_space, total_episodes)`` from ``metadata.json``.

    Every field is type-checked here, so that a foreign or damaged file is a :class:`DatasetError`
    and a ``TypeError``/``AttributeError`` below it is a bug in wm_eval, not bad input.
    """
    from minari.serialization import deserialize_space

    try:
        metadata = json.loads((path / _METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise _corrupt(path, f"{_METADATA}: {exc}") from None
    if not isinstance(metadata, dict):
        raise _corrupt(path, f"{_METADATA} is not a JSON object")
    if metadata.get("data_format", "hdf5") != "hdf5":
        raise DatasetError(f"dataset {path} is stored as {metadata['data_format']}; wm_eval reads hdf5 datasets only")
    block = metadata.get("wm_eval", {})
    task = block.get("task") if isinstance(block, dict) else None
    if not task:
        env_spec = metadata.get("env_spec")
        try:
            spec = json.loads(env_spec) if isinstance(env_spec, str) else None
        except ValueError:
            spec = None
        task = spec.get("id") if isinstance(spec, dict) else None
    if not isinstance(task, str) or not task:
        raise _corrupt(path, f"{_METADATA} names no task (no wm_eval.task or env_spec id)")
    found = []
    for key in ("observation_space", "action_space"):
        text = metadata.get(key)
        try:
            description = json.loads(text) if isinstance(text, str) else text
            if not isinstance(description, dict):
                raise ValueError("not a serialized space")
            known = getattr(deserialize_space, "registry", None)  # minari fails with a TypeError on other types
            if known is not None and description.get("type") not in known:
                raise ValueError(f"unknown space type {description.get('type')!r}")
            found.append(deserialize_space(description))
        except (KeyError, ValueError) as exc:
            raise _corrupt(path, f"{_METADATA} {key}: {type(exc).__name__}: {exc}") from None
    total = metadata.get("total_episodes")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise _corrupt(path, f"{_METADATA} total_episodes is {total!r}")
    return metadata, task, found[0], found[1], total


def load_dataset(path: str | os.PathLike[str], *, sim_states: bool = True) -> Dataset:
    """Read a dataset folder written by :class:`DatasetWriter` (or any Minari HDF5 dataset folder).

    Args:
        path: the folder holding ``metadata.json`` and ``main_data.hdf5``.
        sim_states: read the per-step simulator states (the largest arrays); ``False`` leaves them ``None``.

    Raises:
        DatasetError: the folder is missing, is not a dataset, or is corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist; check the path or run `wm-eval collect` first")
    if not (path / _METADATA).is_file():
        raise DatasetError(f"{path} is not a dataset (no {_METADATA}); pass a folder written by `wm-eval collect`")
    metadata, task, observation_space, action_space, total = _read_metadata(path)
    try:
        with h5py.File(path / _MAIN, "r") as f:
            episodes = [_read_episode(f[f"episode_{i}"], sim_states=sim_states) for i in range(total)]
    except (OSError, KeyError, ValueError) as exc:  # what h5py raises for missing, damaged or foreign content
        raise _corrupt(path, str(exc) or type(exc).__name__) from None
    return Dataset(path=path, task=task, metadata=metadata, observation_space=observation_space,
                   action_space=action_space, episodes=episodes)
