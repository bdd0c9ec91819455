"""``trajectories.h5``: the kept paired episodes of an evaluation in one HDF5 file, and its reader.

Layout (format ``wm_eval.trajectories/1``)::

    trajectories.h5
      attrs: format, wm_eval_version, task, model, model_fingerprint, seed, mode, horizon,
             propagation, obs_scale [obs_dim], policies (JSON list of names), policy_sources
             (JSON list), episodes_per_policy, episodes_kept, config (JSON)
      /episode_<k>          k = 0 .. episodes_kept - 1, by policy then episode (which episodes are
                            kept: ``trajectories=`` of wm_eval.evaluate); the MuJoCo (ground-truth) side
                            in Minari's layout: observations [T+1], actions [T], rewards [T],
                            terminations [T], truncations [T], infos/sim_state [T+1, state_dim];
                            attrs id, total_steps, seed (the start seed), policy, policy_index, episode
        imagined/           the world model's side from the same start state: observations [T'+1],
                            actions [T'], rewards, terminations, truncations, uncertainty [T'];
                            attrs trust_score, coverage (the episode's values in report.json) and
                            policy_risk (its policy's risk, when the model estimates one)
    minari/                 a Minari dataset of the ground-truth side, no data copied:
      main_data.hdf5        /episode_<k> -> ExternalLink("../trajectories.h5", "/episode_<k>")
      metadata.json         Minari metadata with the task's env_spec (+ a "wm_eval" block: task, seed)

``minari.MinariDataset(<folder>/minari)`` reads the ground truth (it ignores the ``imagined``
subgroup), and so does :func:`wm_eval.data.hdf5.load_dataset`. The imagined episode of a pair may
be shorter or longer than the true one (``T' != T``) when the model terminates at another step.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from wm_eval import __version__, minari_layout
from wm_eval.errors import DatasetError
from wm_eval.fileio import atomic_write as _atomic_write
from wm_eval.types import PairedEpisode, Trajectory

if TYPE_CHECKING:
    from wm_eval.types import Evaluation

__all__ = ["FORMAT", "FILE_NAME", "PairedEpisode", "TrajectoryFile", "write_trajectories", "read_trajectories"]

#: Chunked, shuffled, gzip level 1: about a third of the raw size at little CPU cost; any HDF5 reader opens it.
_PACKED = {"compression": "gzip", "compression_opts": 1, "shuffle": True}

FORMAT = "wm_eval.trajectories/1"
FILE_NAME = "trajectories.h5"
_FORMAT_RE = re.compile(r"wm_eval\.trajectories/(\d+)")
_SIDE = ("observations", "actions", "rewards", "terminations", "truncations")


@dataclass(frozen=True)
class TrajectoryFile:
    """A ``trajectories.h5`` read into memory.

    Attributes:
        path: the ``.h5`` file.
        attrs: the file attributes, decoded (``policies``, ``policy_sources`` and ``config`` parsed
            from JSON, ``obs_scale`` an array, numbers as Python numbers).
        episodes: every pair, ordered by policy, then episode.
    """

    path: Path
    attrs: dict[str, Any]
    episodes: list[PairedEpisode]


def _resolve(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path if path.suffix in (".h5", ".hdf5") else path / FILE_NAME


def _write_side(group: h5py.Group, traj: Trajectory) -> None:
    for name in _SIDE:
        group.create_dataset(name, data=getattr(traj, name), **_PACKED)


def _write_file(tmp: Path, ev: Evaluation, config: dict[str, Any]) -> None:
    with h5py.File(tmp, "w") as f:
        f.attrs.update({
            "format": FORMAT, "wm_eval_version": __version__, "task": ev.task, "model": ev.model,
            "model_fingerprint": ev.model_fingerprint, "seed": ev.seed, "mode": ev.mode, "horizon": ev.horizon,
            "propagation": ev.propagation, "obs_scale": np.asarray(ev.obs_scale, dtype=np.float64),
            "policies": json.dumps([p.name for p in ev.policies]),
            "policy_sources": json.dumps([p.source for p in ev.policies]),
            "episodes_per_policy": ev.episodes, "config": json.dumps(config, default=str),
        })
        k = 0
        for pr in ev.policies:
            for ep in pr.kept:
                group = f.create_group(f"episode_{k}")
                group.attrs.update({"id": k, "total_steps": len(ep.true), "seed": ep.seed, "policy": ep.policy,
                                    "policy_index": ep.policy_index, "episode": ep.episode})
                _write_side(group, ep.true)
                infos = group.create_group("infos")
                if ep.true.sim_states is not None:
                    infos.create_dataset("sim_state", data=ep.true.sim_states, **_PACKED)
                side = group.create_group("imagined")
                _write_side(side, ep.imagined)
                if "uncertainty" in ep.imagined.infos:
                    side.create_dataset("uncertainty", data=ep.imagined.infos["uncertainty"], **_PACKED)
                for name in ("trust_score", "coverage", "policy_risk"):  # the episode's (policy's) report.json values
                    if name in ep.imagined.infos:
                        side.attrs[name] = float(ep.imagined.infos[name])
                k += 1
        f.attrs["episodes_kept"] = k


def _write_minari(folder: Path, target: str, ev: Evaluation, total_steps: int) -> None:
    """``folder/main_data.hdf5`` linking every kept episode of ``target`` (relative to ``folder``) and
    ``folder/metadata.json`` in the form Minari reads."""
    from wm_eval.tasks import spaces

    episodes = sum(len(p.kept) for p in ev.policies)
    content = minari_layout.metadata(
        task=ev.task, dataset_id=f"wm_eval/{ev.task.lower()}/trajectories-v0", algorithm_name="wm_eval evaluate "
        "(ground truth)", total_episodes=episodes, total_steps=total_steps, **spaces(ev.task),
        extra={"format": FORMAT, "version": __version__, "task": ev.task, "seed": ev.seed, "source": target,
               "policies": [p.name for p in ev.policies]})
    minari_layout.write_index(folder, [(target, f"/episode_{k}") for k in range(episodes)], content)


def write_trajectories(path: str | os.PathLike[str], ev: Evaluation, *, config: dict[str, Any]) -> Path:
    """Write the kept paired episodes of ``ev`` to ``path`` (an ``.h5`` file, or a folder: ``<folder>/trajectories.h5``)
    and the Minari view of its ground truth to ``minari/`` beside it; both atomically. Returns the ``.h5`` path.

    Args:
        path: where to write.
        ev: the finished evaluation.
        config: the resolved configuration of the run, stored as JSON (other values become strings).
    """
    path = _resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: _write_file(tmp, ev, config))
    total_steps = int(sum(len(ep.true) for pr in ev.policies for ep in pr.kept))
    _write_minari(path.parent / "minari", f"../{path.name}", ev, total_steps)
    return path


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return value
    return value.item() if isinstance(value, np.generic) else value


def _read_side(group: h5py.Group, *, seed: int, sim_states: np.ndarray | None = None,
               infos: dict[str, Any] | None = None) -> Trajectory:
    return Trajectory(**{name: group[name][()] for name in _SIDE}, sim_states=sim_states, seed=seed,
                      infos=infos or {})


def _read_episode(group: h5py.Group) -> PairedEpisode:
    a = {key: _decode(value) for key, value in group.attrs.items()}
    seed = int(a["seed"])
    states = group["infos/sim_state"][()] if "infos/sim_state" in group else None
    side = group["imagined"]
    infos = {"uncertainty": side["uncertainty"][()]} if "uncertainty" in side else {}
    infos.update({name: float(side.attrs[name]) for name in ("trust_score", "coverage", "policy_risk")
                  if name in side.attrs})
    return PairedEpisode(policy=str(a["policy"]), policy_index=int(a["policy_index"]), episode=int(a["episode"]),
                         seed=seed, true=_read_side(group, seed=seed, sim_states=states),
                         imagined=_read_side(side, seed=seed, infos=infos))


def read_trajectories(path: str | os.PathLike[str]) -> TrajectoryFile:
    """Read a ``trajectories.h5`` (or the evaluation folder holding one) written by :func:`write_trajectories`.

    Raises:
        DatasetError: the file is missing, is not a wm_eval trajectories file, is corrupt or
            truncated, or was written in a newer format.
    """
    path = _resolve(path)
    if not path.is_file():
        raise DatasetError(f"trajectories file {path} does not exist; pass an evaluation folder written by "
                           "`wm-eval evaluate` or its trajectories.h5")
    try:
        with h5py.File(path, "r") as f:
            fmt = _decode(f.attrs.get("format", ""))
            match = _FORMAT_RE.fullmatch(str(fmt))
            if match is None:
                raise DatasetError(f"{path} is not a wm_eval trajectories file (format {fmt!r}); pass the "
                                   "trajectories.h5 of a `wm-eval evaluate` run")
            if int(match.group(1)) > 1:
                raise DatasetError(f"{path} has format {fmt}, newer than this wm_eval {__version__} reads "
                                   f"({FORMAT}); upgrade wm_eval")
            attrs = {key: _decode(value) for key, value in f.attrs.items()}
            for key in ("policies", "policy_sources", "config"):
                attrs[key] = json.loads(attrs[key])
            count = int(attrs.get("episodes_kept", len(attrs["policies"]) * int(attrs["episodes_per_policy"])))
            episodes = [_read_episode(f[f"episode_{k}"]) for k in range(count)]
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetError(f"trajectories file {path} is corrupt ({reason}); run the evaluation again") from None
    return TrajectoryFile(path=path, attrs=attrs, episodes=episodes)
