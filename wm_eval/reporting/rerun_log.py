"""Rerun recordings of paired episodes: the real robot, its imagined ghost, errors and uncertainty.

(Slightly over 400 lines: episode selection, the per-episode layout and the viewer launch share the
entity layout documented here; geometry is in :mod:`wm_eval.reporting.mjgeom`.)

This module only reads finished results (:class:`~wm_eval.reporting.trajectories.PairedEpisode`
records) and writes to a recording stream it is given; the layout is built apart, by
:func:`blueprint`. Rerun is imported inside the functions so that ``import wm_eval`` stays light.

Entity layout, per episode, under ``/episodes/<policy>/ep<episode>`` (timeline ``step``, where
step ``t`` is observation ``t``; the reward, termination and uncertainty of transition
``t -> t + 1`` are logged at step ``t + 1``)::

    summary                       TextDocument: policy, returns, trust score, policy risk (static)
    follow                        Transform3D per step: the true robot's root at floor level, origin of the 3D views
    scene/<geom>[/grid]           the world body's geoms, e.g. the floor as a flat box with a 1 m grid (static)
    true/robot/<body>             Transform3D per step (MuJoCo forward kinematics of the true state)
    true/robot/<body>/<geom>      geom pose in the body frame and its shape (static)
    imagined/robot/<body>[/<geom>]  the same for the imagined observations, in a translucent ghost colour
    true/obs/<d>, imagined/obs/<d>  observation dimension ``d``
    true/reward, imagined/reward
    true/terminated, imagined/terminated   a marker on the reward line where the episode terminated
    error                         normalised state error: RMS over dimensions of (imagined - true) / obs_scale
    uncertainty                   the model's per-step uncertainty (ensemble disagreement)

The model gives one uncertainty number per step, so it is drawn as a line beside the state error
(same view); summed over the episode, each step weighted by its distance to the model's training data, it is
the *trust score* shown in the summary (lower is more trustworthy; :mod:`wm_eval.evaluation.trust_signal`).
"""

from __future__ import annotations

import colorsys
import hashlib
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wm_eval.errors import ConfigError, MissingDependencyError, did_you_mean
from wm_eval.reporting import mjgeom

__all__ = ["APPLICATION_ID", "episode_path", "select_episodes", "log_episodes", "blueprint", "recording_id",
           "write_recording", "show"]

APPLICATION_ID = "wm_eval"
GHOST_RGBA = np.array([0.35, 0.65, 1.0, 0.45])
_ERROR_COLOR, _UNCERTAINTY_COLOR = [230, 80, 60], [90, 160, 255]
_TRUE_COLOR, _IMAGINED_COLOR = [230, 230, 230], [90, 160, 255]
_EYE, _LOOK_AT = (0.5, -3.5, 1.2), (0.0, 0.0, 0.5)  # side view of the robot, in the follow frame (metres)


def _rerun() -> tuple[Any, Any]:
    try:
        import rerun as rr
        import rerun.blueprint as rrb
    except ImportError as exc:
        raise MissingDependencyError(f"the Rerun viewer needs rerun-sdk ({exc}): "
                                     "pip install 'rerun-sdk>=0.41'") from None
    return rr, rrb


def episode_path(episode: Any) -> str:
    """The entity path of one paired episode: ``/episodes/<policy>/ep<episode>``."""
    return f"/episodes/{mjgeom.entity_name(str(episode.policy), 'policy')}/ep{int(episode.episode)}"


def _gap(episode: Any) -> float:
    return abs(episode.imagined.total_reward - episode.true.total_reward)


def _trust(episode: Any) -> float | None:
    """The episode's trust score as in report.json (stored with the episode; in files written before it was,
    the ensemble disagreement summed over the imagined steps, its definition then)."""
    if "trust_score" in episode.imagined.infos:
        return float(episode.imagined.infos["trust_score"])
    uncertainty = episode.imagined.infos.get("uncertainty")
    return float(np.sum(uncertainty)) if uncertainty is not None and len(uncertainty) else None


def select_episodes(file: Any, *, policies: Sequence[str] | None = None,
                    episodes: Sequence[int] | None = None) -> list[Any]:
    """The episodes worth looking at in a trajectories file (anything with ``.episodes``).

    By default, for each policy: the episode with the largest ``|imagined return - true return|``
    (undiscounted) and a typical one, the episode with the (lower) median gap. ``policies`` keeps
    only those policy names; ``episodes`` picks those episode indices of every kept policy instead.
    Unknown names or indices raise :class:`~wm_eval.errors.ConfigError`.
    """
    by_policy: dict[str, list[Any]] = {}
    for ep in file.episodes:
        by_policy.setdefault(ep.policy, []).append(ep)
    for name in policies or ():
        if name not in by_policy:
            hint = did_you_mean(name, by_policy, cutoff=0.5)
            raise ConfigError(f"no policy '{name}' in the trajectories file: {hint}it has {', '.join(by_policy)}")
    chosen = []
    for name, eps in by_policy.items():
        if policies is not None and name not in policies:
            continue
        if episodes is not None:
            index = {ep.episode: ep for ep in eps}
            missing = sorted(set(episodes) - set(index))
            if missing:
                raise ConfigError(f"policy '{name}' has no episode {missing[0]}: it has episodes "
                                  f"{min(index)}..{max(index)}")
            chosen += [index[i] for i in episodes]
            continue
        ranked = sorted(eps, key=_gap)
        picks = [ranked[-1], ranked[(len(ranked) - 1) // 2]]
        chosen += [ep for i, ep in enumerate(picks) if ep not in picks[:i]]
    return chosen


def _first_success(traj: Any, success: Any) -> int | None:
    """The first step (from 1, as the success statistic counts) whose observation satisfies the task's success
    rule, or ``None``."""
    if success is None:
        return None
    hits = np.flatnonzero(success(np.asarray(traj.observations[1:], dtype=np.float64)))
    return int(hits[0]) + 1 if len(hits) else None


def _summary(episode: Any, *, task: str, title: str) -> str:
    true, imagined = episode.true, episode.imagined
    from wm_eval import tasks

    trust = _trust(episode)
    success = tasks.get_task(task).success

    def ended(traj: Any) -> str:
        done = np.flatnonzero(traj.terminations)
        return f"at step {done[0] + 1}" if len(done) else "no"

    def succeeded(traj: Any) -> str:
        first = _first_success(traj, success)
        return "no" if first is None else f"at step {first}"

    return "\n".join([
        f"## {title}",
        f"{task} · episode {episode.episode} · reset seed {episode.seed}",
        "",
        "| | imagined | true |",
        "|---|---:|---:|",
        f"| return | {imagined.total_reward:.2f} | {true.total_reward:.2f} |",
        f"| steps | {len(imagined)} | {len(true)} |",
        f"| terminated | {ended(imagined)} | {ended(true)} |",
        *([f"| success | {succeeded(imagined)} | {succeeded(true)} |"] if success is not None else []),
        "",
        f"**Return gap** |imagined − true|: {_gap(episode):.2f}",
        "",
        "**Trust score** (model uncertainty summed over the imagined steps, weighted by distance to the "
        "training data; lower is better): "
        + ("n/a (no uncertainty recorded)" if trust is None else f"{trust:.4f}"),
        *_risk_lines(episode.imagined.infos.get("policy_risk")),
    ])


def _risk_lines(risk: float | None) -> list[str]:
    """The policy's risk in the summary, with the flag when it is above 0.5 (nothing when not estimated)."""
    if risk is None:
        return []
    flag = " ⚑ **flagged**: its imagined mean return is likely off by more than 20%" if risk > 0.5 else ""
    return ["", f"**Policy risk** (probability that the imagined mean return is off by more than 20%): {risk:.2f}{flag}"]


def _robot(rr: Any, stream: Any, path: str, shapes: list[mjgeom.GeomShape], xpos: np.ndarray, xquat: np.ndarray,
           *, rgba: np.ndarray | None) -> None:
    """One robot: static geoms under their body, then every body's pose per step with ``send_columns``."""
    steps = [rr.TimeColumn("step", sequence=np.arange(len(xpos)))]
    bodies = {}
    for shape in shapes:
        bodies[shape.body] = shape.body_name
        stream.log(f"{path}/{shape.body_name}/{shape.name}", *mjgeom.geom_archetypes(shape, rgba=rgba), static=True)
    for body, name in bodies.items():
        stream.send_columns(f"{path}/{name}", indexes=steps,
                            columns=rr.Transform3D.columns(translation=xpos[:, body], quaternion=xquat[:, body]))


def _series(rr: Any, stream: Any, path: str, values: np.ndarray, *, start: int = 0) -> None:
    steps = [rr.TimeColumn("step", sequence=np.arange(start, start + len(values)))]
    stream.send_columns(path, indexes=steps, columns=rr.Scalars.columns(scalars=np.asarray(values, dtype=np.float64)))


def _log_side(rr: Any, stream: Any, root: str, side: str, traj: Any, *, color: list[int], light: bool,
              success: Any = None) -> None:
    """Observation, reward, termination and (with a task ``success`` rule) success series of one side
    (``true`` or ``imagined``): the success marker sits on the first step whose observation succeeds."""
    dims = traj.observations.shape[1]
    for d in range(dims):
        hue_rgb = colorsys.hsv_to_rgb(d / dims, 0.3 if light else 0.75, 1.0 if light else 0.85)
        stream.log(f"{root}/{side}/obs/{d}", rr.SeriesLines(names=f"{side}[{d}]", widths=1.0 if light else 2.0,
                                                            colors=[round(255 * c) for c in hue_rgb]), static=True)
        _series(rr, stream, f"{root}/{side}/obs/{d}", traj.observations[:, d])
    stream.log(f"{root}/{side}/reward", rr.SeriesLines(names=f"{side} reward", colors=color), static=True)
    _series(rr, stream, f"{root}/{side}/reward", traj.rewards, start=1)
    done = np.flatnonzero(traj.terminations)
    if len(done):
        stream.log(f"{root}/{side}/terminated", rr.SeriesPoints(names=f"{side} terminated", colors=color,
                                                                markers="cross", marker_sizes=8.0), static=True)
        stream.send_columns(f"{root}/{side}/terminated", indexes=[rr.TimeColumn("step", sequence=done + 1)],
                            columns=rr.Scalars.columns(scalars=np.asarray(traj.rewards, dtype=np.float64)[done]))
    first = _first_success(traj, success)
    if first is not None:
        stream.log(f"{root}/{side}/success", rr.SeriesPoints(names=f"{side} success", colors=color,
                                                             markers="diamond", marker_sizes=10.0), static=True)
        stream.send_columns(f"{root}/{side}/success", indexes=[rr.TimeColumn("step", sequence=[first])],
                            columns=rr.Scalars.columns(scalars=[float(traj.rewards[max(first - 1, 0)])]))


def _log_episode(rr: Any, stream: Any, episode: Any, *, task: str, env: Any, shapes: list[mjgeom.GeomShape],
                 obs_scale: np.ndarray | None, title: str) -> None:
    from wm_eval import tasks

    root = episode_path(episode)
    true, imagined = episode.true, episode.imagined
    model = env.unwrapped.model
    if true.sim_states is not None:
        true_qpos = tasks.qpos_from_states(env, true.sim_states)
        true_mocap = tasks.mocap_from_states(env, true.sim_states)
    else:
        true_qpos = tasks.qpos_from_observations(task, env, true.observations)
        true_mocap = tasks.mocap_from_observations(task, env, true.observations)
    # Walkers' qpos[0] is the root x, which they do not observe; fixed-base tasks ignore root_x0. A task
    # whose observations do not hold qpos (pose_drawable False) gets no imagined robot in 3D.
    imagined_qpos = tasks.qpos_from_observations(task, env, imagined.observations, root_x0=float(true_qpos[0, 0]))
    imagined_mocap = tasks.mocap_from_observations(task, env, imagined.observations)
    true_pose = mjgeom.body_poses(model, true_qpos, true_mocap)
    imagined_pose = mjgeom.body_poses(model, imagined_qpos, imagined_mocap)
    if not tasks.get_task(task).pose_drawable:
        imagined_pose = (true_pose[0][:0], true_pose[1][:0])

    stream.log(root, rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    stream.log(f"{root}/summary", rr.TextDocument(_summary(episode, task=task, title=title),
                                                  media_type=rr.MediaType.MARKDOWN), static=True)
    reach = np.concatenate([true_pose[0][:, 1:].reshape(-1, 3), imagined_pose[0][:, 1:].reshape(-1, 3)])
    for shape in (s for s in shapes if s.body == 0):
        if shape.kind == "plane":
            shape = mjgeom.with_plane_extent(shape, reach)
            stream.log(f"{root}/scene/{shape.name}/grid", mjgeom.plane_lines(shape), static=True)
        stream.log(f"{root}/scene/{shape.name}", *mjgeom.geom_archetypes(shape), static=True)
    robot = [s for s in shapes if s.body != 0]
    # The 3D views' frame: the true root body's ground position (x, y; z = 0), no rotation.
    stream.send_columns(f"{root}/follow", indexes=[rr.TimeColumn("step", sequence=np.arange(len(true_qpos)))],
                        columns=rr.Transform3D.columns(translation=true_pose[0][:, 1] * [1.0, 1.0, 0.0]))
    _robot(rr, stream, f"{root}/true/robot", robot, *true_pose, rgba=None)
    if len(imagined_pose[0]):
        _robot(rr, stream, f"{root}/imagined/robot", robot, *imagined_pose, rgba=GHOST_RGBA)

    success = tasks.get_task(task).success
    _log_side(rr, stream, root, "true", true, color=_TRUE_COLOR, light=False, success=success)
    _log_side(rr, stream, root, "imagined", imagined, color=_IMAGINED_COLOR, light=True, success=success)
    common = min(len(true), len(imagined)) + 1
    scale = np.ones(true.observations.shape[1]) if obs_scale is None else np.maximum(np.asarray(obs_scale), 1e-8)
    error = np.sqrt(np.mean(((imagined.observations[:common] - true.observations[:common]) / scale) ** 2, axis=-1))
    stream.log(f"{root}/error", rr.SeriesLines(names="state error (normalised)", colors=_ERROR_COLOR), static=True)
    _series(rr, stream, f"{root}/error", error)
    uncertainty = imagined.infos.get("uncertainty")
    if uncertainty is not None:
        stream.log(f"{root}/uncertainty", rr.SeriesLines(names="model uncertainty", colors=_UNCERTAINTY_COLOR),
                   static=True)
        _series(rr, stream, f"{root}/uncertainty", uncertainty, start=1)


def _title(episode: Any, titles: Mapping[str, str] | None) -> str:
    return (titles or {}).get(episode.policy, str(episode.policy))


def log_episodes(stream: Any, episodes: Sequence[Any], *, task: str, obs_scale: np.ndarray | None = None,
                 titles: Mapping[str, str] | None = None) -> None:
    """Log paired episodes of ``task`` to the Rerun recording ``stream`` (see the module doc for the layout).

    Args:
        stream: a ``rerun.RecordingStream``; the global recording is never used.
        episodes: paired-episode records (``policy``, ``episode``, ``seed``, ``true`` and
            ``imagined`` :class:`~wm_eval.types.Trajectory`, the imagined one with
            ``infos["uncertainty"]``), e.g. from :func:`select_episodes`.
        task: the task id the episodes were rolled out in (its MuJoCo model draws the robot).
        obs_scale: ``[obs_dim]`` per-dimension scale of the state error (the model's observation
            std); ``None`` gives the raw RMS error.
        titles: display names by policy name (default: the policy name).
    """
    rr, _ = _rerun()
    from wm_eval import tasks

    env = tasks.make_env(task)
    try:
        shapes = mjgeom.model_geoms(env.unwrapped.model)
        for episode in episodes:
            _log_episode(rr, stream, episode, task=task, env=env, shapes=shapes, obs_scale=obs_scale,
                         title=_title(episode, titles))
    finally:
        env.close()


def blueprint(episodes: Sequence[Any], *, titles: Mapping[str, str] | None = None) -> Any:
    """The viewer layout: one tab per episode, 3D views on top, time series below.

    Top row: the ground-truth robot | the imagined ghost over the ground truth | the summary text.
    Bottom row: state error with uncertainty | rewards and terminations | observations.
    The 3D views look from the side at the ``follow`` frame, so a walker stays in view as it runs.
    """
    _, rrb = _rerun()
    tabs = []
    for episode in episodes:
        root = episode_path(episode)
        scene, true_robot = f"{root}/scene/**", f"{root}/true/robot/**"
        view3d = {"origin": f"{root}/follow", "eye_controls": rrb.EyeControls3D(position=_EYE, look_target=_LOOK_AT),
                  "line_grid": rrb.LineGrid3D(visible=False)}  # the view's grid would move with the robot
        tabs.append(rrb.Vertical(
            rrb.Horizontal(
                rrb.Spatial3DView(name="ground truth", contents=[scene, true_robot], **view3d),
                rrb.Spatial3DView(name="imagined (blue) over ground truth",
                                  contents=[scene, true_robot, f"{root}/imagined/robot/**"], **view3d),
                rrb.TextDocumentView(name="summary", origin=f"{root}/summary"),
                column_shares=[2, 2, 1],
            ),
            rrb.Horizontal(
                rrb.TimeSeriesView(name="state error and uncertainty", origin=root,
                                   contents=[f"{root}/error", f"{root}/uncertainty"]),
                rrb.TimeSeriesView(name="reward and terminations", origin=root,
                                   contents=[f"{root}/true/reward", f"{root}/imagined/reward",
                                             f"{root}/true/terminated", f"{root}/imagined/terminated"]),
                rrb.TimeSeriesView(name="observations (true bold, imagined light)", origin=root,
                                   contents=[f"{root}/true/obs/**", f"{root}/imagined/obs/**"]),
            ),
            row_shares=[3, 2],
            name=f"{_title(episode, titles)} · ep{episode.episode}",
        ))
    return rrb.Blueprint(
        rrb.Tabs(*tabs),
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.TimePanel(state="expanded", timeline="step"),
    )


def recording_id(task: str, episodes: Sequence[Any], *, model: str = "", seed: Any = None) -> str:
    """A recording id derived from the content (task, model, seed and the episodes' data), as a UUID string."""
    digest = hashlib.sha256(f"{task}|{model}|{seed}".encode())
    for ep in episodes:
        digest.update(f"|{ep.policy}|{ep.episode}|{ep.seed}".encode())
        for traj in (ep.true, ep.imagined):
            digest.update(np.ascontiguousarray(traj.observations, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(traj.rewards, dtype=np.float64).tobytes())
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))


def _prepare(source: Any, *, task: str | None, obs_scale: np.ndarray | None, policies: Sequence[str] | None,
             episodes: Sequence[int] | None) -> tuple[list[Any], str, np.ndarray | None, dict[str, Any]]:
    """Episodes, task, obs_scale and file attributes from a trajectories file or a list of episodes."""
    if hasattr(source, "episodes"):
        attrs = dict(source.attrs)
        chosen = select_episodes(source, policies=policies, episodes=episodes)
        task = task or attrs.get("task")
        obs_scale = attrs.get("obs_scale") if obs_scale is None else obs_scale
    else:
        attrs, chosen = {}, list(source)
    if not task:
        raise ConfigError("no task given for the Rerun recording: pass task=... (e.g. 'Hopper-v5')")
    return chosen, str(task), obs_scale, attrs


def _stream(source: Any, *, task: str | None, obs_scale: np.ndarray | None, policies: Sequence[str] | None,
            episodes: Sequence[int] | None, titles: Mapping[str, str] | None) -> tuple[Any, Any, list[Any], str,
                                                                                    np.ndarray | None]:
    rr, _ = _rerun()
    chosen, task, obs_scale, attrs = _prepare(source, task=task, obs_scale=obs_scale, policies=policies,
                                              episodes=episodes)
    rid = recording_id(task, chosen, model=str(attrs.get("model", "")), seed=attrs.get("seed"))
    stream = rr.RecordingStream(APPLICATION_ID, recording_id=rid, send_properties=False)
    stream.set_log_time_enabled(False)
    stream.set_log_tick_enabled(False)
    return stream, blueprint(chosen, titles=titles), chosen, task, obs_scale


def write_recording(path: str | Path, source: Any, *, task: str | None = None, obs_scale: np.ndarray | None = None,
                    policies: Sequence[str] | None = None, episodes: Sequence[int] | None = None,
                    titles: Mapping[str, str] | None = None) -> Path:
    """Write a reproducible ``.rrd`` file with the blueprint and the chosen episodes; returns the path.

    ``source`` is a trajectories file (``attrs`` with ``task``, ``model``, ``seed``, ``obs_scale``;
    episodes picked by :func:`select_episodes` with ``policies`` and ``episodes``) or a list of
    paired episodes (then ``task`` is required). The recording id is derived from the content and
    neither wall-clock time nor recording properties are written, so the same input gives a file
    that ``rerun rrd compare`` finds equal.
    """
    stream, layout, chosen, task, obs_scale = _stream(source, task=task, obs_scale=obs_scale, policies=policies,
                                                      episodes=episodes, titles=titles)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream.save(path, default_blueprint=layout)
    log_episodes(stream, chosen, task=task, obs_scale=obs_scale, titles=titles)
    stream.disconnect()
    return path


def _rerun_cli() -> str:
    """The ``rerun`` executable of rerun-sdk (``RERUN_CLI_PATH`` overrides it, as for ``python -m rerun_cli``)."""
    if os.environ.get("RERUN_CLI_PATH"):
        return os.environ["RERUN_CLI_PATH"]
    try:
        import rerun_cli
    except ImportError:
        rerun_cli = None
    if rerun_cli is not None:
        folder = Path(rerun_cli.__file__).parent
        for candidate in (folder / "rerun", folder / "rerun.exe", folder / "Rerun.app/Contents/MacOS/Rerun"):
            if candidate.is_file():
                return str(candidate)
    raise MissingDependencyError("the Rerun viewer needs the rerun command-line tool that rerun-sdk installs "
                                 "(module rerun_cli): pip install --force-reinstall 'rerun-sdk>=0.41'")


def show(source: Any, *, task: str | None = None, obs_scale: np.ndarray | None = None,
         policies: Sequence[str] | None = None, episodes: Sequence[int] | None = None,
         titles: Mapping[str, str] | None = None) -> None:
    """Spawn the native Rerun viewer and stream the chosen episodes to it (arguments as :func:`write_recording`).

    The viewer is rerun-sdk's own ``rerun`` executable, found even when the environment's ``bin`` is not
    on ``PATH``; if it cannot start (no display, say), a :class:`ConfigError` suggests ``--save`` or ``--web``.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("no display to open the Rerun viewer on (DISPLAY and WAYLAND_DISPLAY are unset): write a "
                          "file with --save FILE.rrd, or serve the web viewer with --web")
    stream, layout, chosen, task, obs_scale = _stream(source, task=task, obs_scale=obs_scale, policies=policies,
                                                      episodes=episodes, titles=titles)
    folder = str(Path(_rerun_cli()).parent)
    if folder not in os.environ.get("PATH", "").split(os.pathsep):  # rerun's spawn looks only on PATH
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    try:
        stream.spawn(default_blueprint=layout)
    except RuntimeError as e:  # raised by rerun's spawn only: the viewer process could not be started
        raise ConfigError(f"cannot start the Rerun viewer ({str(e).strip().splitlines()[0]}): write a file with "
                          "--save FILE.rrd or serve it with --web") from None
    log_episodes(stream, chosen, task=task, obs_scale=obs_scale, titles=titles)
    stream.flush()
