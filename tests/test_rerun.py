"""The Rerun recording of paired episodes, read back from real ``.rrd`` files.

Fixtures are real MuJoCo rollouts with random actions; the "imagined" side is the same
observations plus noise from step 1 on (so both start from the same state) and a ramp of
uncertainty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wm_eval import tasks
from wm_eval.errors import ConfigError, MissingDependencyError
from wm_eval.reporting import rerun_log, rerun_web
from wm_eval.reporting.trajectories import PairedEpisode, TrajectoryFile
from wm_eval.types import Trajectory

rr = pytest.importorskip("rerun")
from rerun.chunk import RrdReader  # noqa: E402

RERUN_CLI = Path(sys.executable).with_name("rerun")


def _rollout(task: str, seed: int, *, steps: int = 30, noise: float = 0.02, policy: str = "random",
             episode: int = 0, reward_offset: float = 0.0, act=None) -> PairedEpisode:
    env = tasks.make_env(task)
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        observations, states, actions, rewards, terms, truncs = [obs], [tasks.get_state(env)], [], [], [], []
        for _ in range(steps):
            action = env.action_space.sample() if act is None else act(obs[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            states.append(tasks.get_state(env))
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            if terminated or truncated:
                break
    finally:
        env.close()
    rng = np.random.default_rng(seed)
    observations = np.asarray(observations)
    imagined_obs = observations.copy()
    imagined_obs[1:] += rng.normal(0.0, noise, imagined_obs[1:].shape)
    n = len(actions)
    true = Trajectory(observations, np.asarray(actions), np.asarray(rewards), np.asarray(terms),
                      np.asarray(truncs), np.asarray(states), seed)
    imagined = Trajectory(imagined_obs, np.asarray(actions), np.asarray(rewards) + reward_offset, np.asarray(terms),
                          np.asarray(truncs), None, seed, {"uncertainty": np.linspace(0.01, 0.1, n)})
    return PairedEpisode(policy=policy, policy_index=0, episode=episode, seed=seed, true=true, imagined=imagined)


def _read(path: Path) -> dict[str, dict]:
    """``{entity: {"static": {component: value}, "steps": {step: {component: value}}}}`` of a recording."""
    entities: dict[str, dict] = {}
    for chunk in RrdReader(path).stream().to_chunks():
        entry = entities.setdefault(chunk.entity_path, {"static": {}, "steps": {}, "timelines": set()})
        entry["timelines"].update(chunk.timeline_names)
        for row in chunk.to_record_batch().to_pylist():
            row.pop("rerun.controls.RowId")
            if chunk.is_static:
                entry["static"].update(row)
            else:
                entry["steps"].setdefault(row.pop("step"), {}).update(row)
    return entities


def _bodies(task: str) -> list[str]:
    env = tasks.make_env(task)
    try:
        model = env.unwrapped.model
        return sorted({model.body(int(model.geom_bodyid[g])).name for g in range(model.ngeom)} - {"world"})
    finally:
        env.close()


@pytest.fixture(scope="module", params=["Hopper-v5", "HalfCheetah-v5"])
def written(request, tmp_path_factory):
    task = request.param
    episodes = [_rollout(task, 1), _rollout(task, 2, noise=0.05, episode=1)]
    path = rerun_log.write_recording(tmp_path_factory.mktemp("rrd") / "v.rrd", episodes, task=task)
    return task, episodes, path, _read(path)


def test_recording_has_both_robots_and_the_series_of_each_episode(written):
    task, episodes, _, entities = written
    for ep in episodes:
        root = rerun_log.episode_path(ep)
        for side in ("true", "imagined"):
            for body in _bodies(task):
                assert f"{root}/{side}/robot/{body}" in entities
            for d in range(ep.true.observations.shape[1]):
                assert f"{root}/{side}/obs/{d}" in entities
            assert f"{root}/{side}/reward" in entities
        for name in ("error", "uncertainty", "summary", "scene/floor"):
            assert f"{root}/{name}" in entities
        torso = "torso"  # the root body of both walkers
        assert sorted(entities[f"{root}/true/robot/{torso}"]["steps"]) == list(range(len(ep.true) + 1))
        assert sorted(entities[f"{root}/imagined/robot/{torso}"]["steps"]) == list(range(len(ep.imagined) + 1))
        assert sorted(entities[f"{root}/uncertainty"]["steps"]) == list(range(1, len(ep.imagined) + 1))
        error = [entities[f"{root}/error"]["steps"][t]["Scalars:scalars"][0] for t in range(len(ep.true) + 1)]
        assert error[0] == 0.0 and all(e > 0 for e in error[1:])
        summary = entities[f"{root}/summary"]["static"]["TextDocument:text"][0]
        assert f"{ep.imagined.total_reward:.2f}" in summary
        uncertainty = ep.imagined.infos["uncertainty"]  # the trust score is its sum, as in report.json
        assert f"{np.sum(uncertainty):.4f}" in summary and f"{np.mean(uncertainty):.4f}" not in summary


def test_imagined_robot_starts_at_the_true_pose_then_leaves_it(written):
    task, episodes, _, entities = written
    env = tasks.make_env(task)
    try:
        for ep in episodes:
            root = rerun_log.episode_path(ep)
            tasks.set_state(env, ep.true.sim_states[0])
            data = env.unwrapped.data
            last = len(ep.imagined)
            for body in _bodies(task):
                true = entities[f"{root}/true/robot/{body}"]["steps"]
                ghost = entities[f"{root}/imagined/robot/{body}"]["steps"]
                assert ghost[0] == true[0]
                assert ghost[last] != true[last]
                np.testing.assert_allclose(true[0]["Transform3D:translation"][0], data.body(body).xpos, atol=1e-6)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["HalfCheetah-v5", "Pusher-v5", "WmEval/ArmPush-v0", "WmEval/ArmDrawer-v0"])
def test_drawn_geoms_sit_where_mujoco_puts_them(task, tmp_path):
    """Body pose x static geom pose x shape offset, as logged, equals MuJoCo's geom_xpos / geom_xmat."""
    ep = _rollout(task, 3, steps=15)
    entities = _read(rerun_log.write_recording(tmp_path / "g.rrd", [ep], task=task))
    root = rerun_log.episode_path(ep)
    env = tasks.make_env(task)
    try:
        model, data = env.unwrapped.model, env.unwrapped.data
        step = len(ep.true)
        tasks.set_state(env, ep.true.sim_states[step])
        checked = 0
        for g in range(model.ngeom):
            body = model.geom_bodyid[g]
            if body == 0:
                continue
            geom = model.geom(g).name or f"geom{g}"
            name = model.body(body).name
            pose = entities[f"{root}/true/robot/{name}"]["steps"][step]
            static = entities[f"{root}/true/robot/{name}/{geom}"]["static"]
            body_rot = Rotation.from_quat(pose["Transform3D:quaternion"][0])
            geom_rot = body_rot * Rotation.from_quat(static["Transform3D:quaternion"][0])
            centre = body_rot.apply(static["Transform3D:translation"][0]) + pose["Transform3D:translation"][0]
            np.testing.assert_allclose(geom_rot.as_matrix(), data.geom_xmat[g].reshape(3, 3), atol=1e-5)
            if "Capsules3D:lengths" in static:  # Rerun capsules start at their origin: shifted by -half length
                start = centre + geom_rot.apply(static["Capsules3D:translations"][0])
                end = start + geom_rot.apply([0.0, 0.0, static["Capsules3D:lengths"][0]])
                half = model.geom_size[g, 1] * data.geom_xmat[g].reshape(3, 3)[:, 2]
                np.testing.assert_allclose([start, end], [data.geom_xpos[g] - half, data.geom_xpos[g] + half],
                                           atol=1e-5)
            else:
                np.testing.assert_allclose(centre, data.geom_xpos[g], atol=1e-5)
            checked += 1
        assert checked >= (6 if task.startswith("WmEval/") else 8)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["WmEval/ArmPush-v0", "WmEval/ArmDrawer-v0"])
def test_imagined_scene_and_success_markers_of_the_arm_tasks(task, tmp_path):
    """Mocap bodies (goal, cabinet, target) of the imagined side come from its observations, and the first
    successful step of each side carries a success marker on the timeline."""
    from wm_eval.envs.experts import expert

    ep = _rollout(task, 4, steps=150, noise=0.0, act=expert(task, 1.0))
    first = int(np.flatnonzero(tasks.get_task(task).success(ep.true.observations[1:]))[0]) + 1  # as the statistic
    entities = _read(rerun_log.write_recording(tmp_path / "s.rrd", [ep], task=task))
    root = rerun_log.episode_path(ep)
    for side in ("true", "imagined"):
        assert sorted(entities[f"{root}/{side}/success"]["steps"]) == [first]
    env = tasks.make_env(task)
    try:
        model = env.unwrapped.model
        mocap = [model.body(b).name for b in range(model.nbody) if model.body_mocapid[b] >= 0]
    finally:
        env.close()
    assert mocap
    for body in mocap:  # noise 0: the imagined scene is drawn exactly where the true one is, step by step
        true, imagined = (entities[f"{root}/{side}/robot/{body}"]["steps"] for side in ("true", "imagined"))
        for step in (0, 75, 150):
            np.testing.assert_allclose(imagined[step]["Transform3D:translation"], true[step]["Transform3D:translation"],
                                       atol=1e-9)
    assert "| success | at step" in str(entities[f"{root}/summary"]["static"])


def test_recording_is_reproducible(tmp_path):
    episodes = [_rollout("Hopper-v5", 1)]
    a = rerun_log.write_recording(tmp_path / "a.rrd", episodes, task="Hopper-v5")
    b = rerun_log.write_recording(tmp_path / "b.rrd", episodes, task="Hopper-v5")
    c = rerun_log.write_recording(tmp_path / "c.rrd", [_rollout("Hopper-v5", 1, noise=0.021)], task="Hopper-v5")
    ids = [RrdReader(p).recordings()[0].recording_id for p in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]
    entities = _read(a)
    assert not any(path.startswith("/__properties") for path in entities)
    assert set().union(*(e["timelines"] for e in entities.values())) == {"step"}
    assert len(RrdReader(a).blueprints()) == 1
    if not RERUN_CLI.exists():
        pytest.skip("the rerun command-line tool is not installed next to this Python")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}  # no first-start notice, no network

    def compare(x: Path, y: Path) -> int:
        return subprocess.run([str(RERUN_CLI), "rrd", "compare", str(x), str(y)], env=env, capture_output=True,
                              timeout=60).returncode

    assert compare(a, b) == 0
    assert compare(a, c) != 0


def _file(gaps_by_policy: dict[str, list[float]]) -> TrajectoryFile:
    base = _rollout("Hopper-v5", 4, steps=5)
    episodes = []
    for p, (policy, gaps) in enumerate(gaps_by_policy.items()):
        for i, gap in enumerate(gaps):
            imagined = Trajectory(base.imagined.observations, base.imagined.actions,
                                  base.true.rewards + gap / len(base.true), base.imagined.terminations,
                                  base.imagined.truncations, None, base.seed, base.imagined.infos)
            episodes.append(PairedEpisode(policy, p, i, base.seed, base.true, imagined))
    return TrajectoryFile(path=Path("t.h5"), attrs={"task": "Hopper-v5"}, episodes=episodes)


def test_select_episodes_picks_the_largest_gap_and_a_typical_one():
    file = _file({"ppo": [0.5, -3.0, 1.0, 0.1, 2.0], "sac": [4.0]})
    chosen = [(ep.policy, ep.episode) for ep in rerun_log.select_episodes(file)]
    assert chosen == [("ppo", 1), ("ppo", 2), ("sac", 0)]  # largest |gap| 3.0, median 1.0
    assert [ep.episode for ep in rerun_log.select_episodes(file, policies=["ppo"], episodes=[3, 4])] == [3, 4]
    with pytest.raises(ConfigError, match="did you mean 'ppo'"):
        rerun_log.select_episodes(file, policies=["pp0"])
    with pytest.raises(ConfigError, match="no episode 9"):
        rerun_log.select_episodes(file, episodes=[9])


def test_trajectory_file_source_uses_its_task_and_selection(tmp_path):
    file = _file({"ppo": [0.5, -3.0, 1.0]})
    entities = _read(rerun_log.write_recording(tmp_path / "f.rrd", file))
    roots = {path.split("/")[3] for path in entities if path.startswith("/episodes/ppo/")}
    assert roots == {"ep1", "ep2"}


def test_missing_rerun_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "rerun", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rerun-sdk") as info:
        rerun_log.blueprint([])
    assert "\n" not in str(info.value)


def test_importing_the_module_does_not_import_rerun():
    code = "import sys, wm_eval.reporting.rerun_log; assert 'rerun' not in sys.modules and 'mujoco' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(root)})


def _other_local_address() -> str:
    """An address of this machine other than 127.0.0.1: a non-loopback IPv4 if there is one, else 127.0.0.2."""
    import socket

    psutil = pytest.importorskip("psutil")
    candidates = [socket.gethostbyname(socket.gethostname())]
    candidates += [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]
    return next((ip for ip in candidates if not ip.startswith("127.")), "127.0.0.2")


def test_web_viewer_binds_localhost_only_and_returns_the_url(tmp_path, monkeypatch):
    import socket
    import urllib.parse
    import urllib.request

    psutil = pytest.importorskip("psutil")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the rerun tool: no first-start notice
    viewer = rerun_web.serve_web([_rollout("Hopper-v5", 2, steps=5)], task="Hopper-v5", open_browser=False)
    try:
        url = urllib.parse.urlsplit(viewer.url)
        assert (url.scheme, url.hostname, url.port) == ("http", "127.0.0.1", viewer.web_port)
        assert urllib.parse.parse_qs(url.query) == {"url": [f"rerun+http://127.0.0.1:{viewer.grpc_port}/proxy"]}
        assert viewer.grpc_url == f"rerun+http://127.0.0.1:{viewer.grpc_port}/proxy" and viewer.host == "127.0.0.1"
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(viewer.url, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        ports = {viewer.web_port, viewer.grpc_port}
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}
        assert listening == {("127.0.0.1", port) for port in ports}
        other = _other_local_address()
        for port in ports:
            with pytest.raises(OSError):  # refused: nothing listens on the machine's other addresses
                socket.create_connection((other, port), timeout=2).close()
    finally:
        viewer.close()
    assert viewer.process.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", viewer.web_port), timeout=2).close()


def test_web_viewer_host_must_be_an_ip_address():
    with pytest.raises(ConfigError, match="host must be an IP address.*got 'example.com'"):
        rerun_web.serve_web([_rollout("Hopper-v5", 2, steps=3)], task="Hopper-v5", open_browser=False,
                            host="example.com")
