"""The Minari dataset layout, written in one place: ``main_data.hdf5`` (one group per episode, here
an HDF5 external link to where the episode lives) and ``metadata.json`` (what ``minari.MinariDataset``
reads). Used by dataset collection (:mod:`wm_eval.data.hdf5`) and by the ground-truth view of an
evaluation's ``trajectories.h5`` (:mod:`wm_eval.reporting.trajectories`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wm_eval.fileio import atomic_write

__all__ = ["MAIN", "METADATA", "env_spec_json", "metadata", "write_index"]

MAIN = "main_data.hdf5"
METADATA = "metadata.json"


def env_spec_json(task: str) -> str | None:
    """The Gymnasium ``EnvSpec`` of ``task`` as JSON (what ``MinariDataset.recover_environment`` makes);
    ``None`` when it has no JSON form (unregistered, or a callable entry point)."""
    import gymnasium as gym

    from wm_eval.tasks import get_task

    spec = get_task(task)
    try:
        env_spec = gym.spec(spec.gym_id)
        if spec.make_kwargs:
            env_spec = dataclasses.replace(env_spec, kwargs={**env_spec.kwargs, **spec.make_kwargs})
        return env_spec.to_json()
    except (gym.error.Error, TypeError, ValueError):
        return None


def metadata(*, task: str, dataset_id: str, observation_space: Any, action_space: Any, algorithm_name: str,
             total_episodes: int = 0, total_steps: int = 0, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``metadata.json`` for a dataset of ``task``; ``extra`` goes under ``"wm_eval"``."""
    from minari import __version__ as minari_version
    from minari.serialization import serialize_space

    content: dict[str, Any] = {
        "dataset_id": dataset_id,
        "total_episodes": total_episodes,
        "total_steps": total_steps,
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "observation_space": serialize_space(observation_space),
        "action_space": serialize_space(action_space),
        "minari_version": minari_version,
        "algorithm_name": algorithm_name,
    }
    env_spec = env_spec_json(task)
    if env_spec is not None:
        content["env_spec"] = env_spec
    content["wm_eval"] = dict(extra or {})
    return content


def write_index(folder: str | Path, links: Sequence[tuple[str, str]], content: dict[str, Any]) -> None:
    """Write ``folder/main_data.hdf5`` (group ``episode_<i>`` linking ``links[i] = (file, group path)``,
    files relative to ``folder``) and ``folder/metadata.json`` with ``content``, each atomically."""
    import h5py

    folder = Path(folder)

    def write_main(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for index, (file, group) in enumerate(links):
                f[f"episode_{index}"] = h5py.ExternalLink(file, group)

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / MAIN, write_main)
    atomic_write(folder / METADATA, lambda tmp: tmp.write_text(json.dumps(content, indent=2, default=str) + "\n"))
