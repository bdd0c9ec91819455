"""The ``ray`` executor on a private local Ray (2 CPUs): the same numbers as ``local``, bit for bit.

Ray is a real dependency here (installed by ``.ci/setup`` with the ``ray`` extra); one Ray instance
serves the whole module. The node-failure test lives in ``test_ray_faults.py`` (its own cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import wm_eval
from wm_eval.errors import WmEvalError

pytestmark = pytest.mark.ray

TASK = "HalfCheetah-v5"
POLICIES = ["zoo:HalfCheetah-v5#ppo_0000k", "zoo:HalfCheetah-v5#ppo_0300k", "zoo:HalfCheetah-v5#a2c_0300k"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _same(a: wm_eval.types.Evaluation, b: wm_eval.types.Evaluation) -> None:
    assert [p.name for p in a.policies] == [p.name for p in b.policies]
    for pa, pb in zip(a.policies, b.policies):
        assert pa.episodes.keys() == pb.episodes.keys()
        for key in pa.episodes:
            np.testing.assert_array_equal(pa.episodes[key], pb.episodes[key], err_msg=f"{pa.name} {key}")
        np.testing.assert_equal(pa.statistics, pb.statistics)
    np.testing.assert_equal(a.metrics, b.metrics)
    np.testing.assert_equal(a.horizon_error, b.horizon_error)
    np.testing.assert_equal(a.trust, b.trust)


@pytest.mark.parametrize("mode,propagation,sample", [("closed_loop", "mean", False), ("open_loop", "mean", False),
                                                      ("closed_loop", "ts_inf", True)])
def test_ray_equals_local(ray_local, mode: str, propagation: str, sample: bool) -> None:
    kw = dict(episodes=5, horizon=60, seed=3, chunk=2, mode=mode, propagation=propagation, sample=sample,
              bootstrap=200, progress=False)
    local = wm_eval.evaluate(TASK, POLICIES, workers=1, **kw)
    # max_batch=2: one unit per actor call, so the grouping differs from local's
    remote = wm_eval.evaluate(TASK, POLICIES, executor="ray", ray_actors=1, max_batch=2, **kw)
    _same(local, remote)
    assert remote.config["executor"] == "ray" and local.config["executor"] == "local"
    assert remote.timings["model_rollouts"] > 0 and remote.timings["ground_truth_rollouts"] > 0
    assert ray_local.is_initialized()  # an existing connection is used and left open


def test_ray_two_actors_and_units_in_any_order(ray_local) -> None:
    from wm_eval.evaluation.api import load_policy_list
    from wm_eval.evaluation.executor import Job
    from wm_eval.evaluation.plan import plan, start_seeds
    from wm_eval.evaluation.ray_executor import RayExecutor
    from wm_eval.models.checkpoint import resolve_model
    from wm_eval.tasks import reset_states, spaces

    policies = load_policy_list(POLICIES[:2], task=TASK)
    model = resolve_model(None, task=TASK, **spaces(TASK))
    states = reset_states(TASK, start_seeds(0, 4).tolist())[1]
    job = Job(task=TASK, model=model, policies=policies, real_policies=policies, states=states, horizon=40, seed=0,
              mode="closed_loop", propagation="ts1", sample=False, device="cpu")
    units = plan([p.name for p in policies], episodes=4, chunk=1)
    runs = []
    for order, actors in ((units, 1), (units[::-1], 2)):  # reversed order, two actors sharing a CPU
        got: dict[str, tuple] = {}
        executor = RayExecutor(actors=actors, actor_cpus=0.5, max_rows=1)
        executor.run(job, order, lambda u, t, i: got.__setitem__(u.id, (t.rewards, i.rewards)))
        assert sum(executor.units_by_node.values()) == len(units)
        runs.append(got)
    for uid in runs[0]:
        for x, y in zip(runs[0][uid], runs[1][uid]):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(WmEvalError, match="do not fit"):  # 2 actors + 1 CPU > 2 CPUs
        RayExecutor(actors=2).run(job, units, lambda *a: None)


def test_cuda_on_a_cluster_without_gpus_is_a_clear_error(ray_local) -> None:
    """The driver needs no GPU (the actors would hold the model there); the cluster's GPUs are checked."""
    with pytest.raises(WmEvalError, match="the Ray cluster has 0 GPUs for 1 model actor"):
        wm_eval.evaluate(TASK, POLICIES[:1], executor="ray", device="cuda", episodes=2, horizon=5, progress=False)


class _Cluster:
    """What :meth:`RayExecutor._check_cluster` asks Ray: totals and the alive nodes' resources."""

    def __init__(self, *nodes: dict[str, float]) -> None:
        self._nodes = [{"Alive": True, "Resources": r} for r in nodes] + [{"Alive": False, "Resources": {"CPU": 64.0}}]

    def cluster_resources(self) -> dict[str, float]:
        return {k: sum(n["Resources"].get(k, 0.0) for n in self._nodes if n["Alive"]) for k in ("CPU", "GPU")}

    def nodes(self) -> list[dict]:
        return self._nodes


def test_an_actor_no_single_node_can_hold_is_a_clear_error() -> None:
    """Enough CPUs in total but no node with an actor's share (or no GPU node with a CPU to spare) would
    leave the actor pending forever: refused up front; a node that fits passes (dead nodes never count)."""
    from wm_eval.evaluation.ray_executor import RayExecutor

    three = _Cluster({"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0})
    with pytest.raises(WmEvalError, match=r"no Ray node has 1.5 CPU for a model actor \(the largest has 1 CPUs\)"):
        RayExecutor(actor_cpus=1.5)._check_cluster(three, "cpu")
    RayExecutor(actor_cpus=1.0)._check_cluster(three, "cpu")
    split = _Cluster({"CPU": 4.0}, {"CPU": 0.0, "GPU": 1.0})  # the GPU sits on a node without a CPU for the actor
    with pytest.raises(WmEvalError, match="no Ray node has 1 CPU and 1 GPU"):
        RayExecutor()._check_cluster(split, "cuda")
    RayExecutor()._check_cluster(_Cluster({"CPU": 4.0}, {"CPU": 1.0, "GPU": 1.0}), "cuda")


def test_ray_resume_after_local_interruption(ray_local, tmp_path: Path) -> None:
    """Units finished by one executor are resumed by the other: the identity does not name the executor."""
    kw = dict(episodes=4, horizon=40, seed=1, chunk=2, bootstrap=100, progress=False, out=tmp_path)
    whole = wm_eval.evaluate(TASK, POLICIES[:2], workers=1, **kw)
    for extra in sorted((tmp_path / "units").glob("*.npz"))[2:]:
        extra.unlink()  # as if killed after two of its four units
    resumed = wm_eval.evaluate(TASK, POLICIES[:2], executor="ray", resume=True, **kw)
    assert resumed.timings["resumed_units"] == 2.0
    _same(whole, resumed)


def test_regress_and_collect_on_ray_equal_local(ray_local, tmp_path: Path) -> None:
    from wm_eval.data.collect import collect
    from wm_eval.data.hdf5 import load_dataset
    from wm_eval.regress import check_baseline, record_baseline

    rec = dict(task=TASK, policies=POLICIES[:2], episodes=4, horizon=40, confirm=True)
    local = record_baseline(tmp_path / "local.json", **rec)
    remote = record_baseline(tmp_path / "ray.json", executor="ray", **rec)
    for a, b in zip(local["policies"], remote["policies"]):
        assert a["episode_returns"] == b["episode_returns"] and a["true_episode_returns"] == b["true_episode_returns"]
    checked = check_baseline(tmp_path / "local.json", executor="ray")
    assert not checked.regressions and all(c.candidate == c.baseline for c in checked.checks)

    kw = dict(task="Hopper-v5", episodes=7, max_steps=40, seed=2, behaviour=["random", "zoo"], noise_scales=[0.0, 0.2],
              batch_size=1, progress=False)
    a = load_dataset(collect(out=tmp_path / "collect-local", **kw))
    b = load_dataset(collect(out=tmp_path / "collect-ray", executor="ray", **kw))
    assert len(a.episodes) == len(b.episodes) == 7
    for x, y in zip(a.episodes, b.episodes):
        for field in ("observations", "actions", "rewards", "sim_states"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wm_eval.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "MUJOCO_GL": "egl", **(env or {})}, cwd=cwd, timeout=600)


def _comparable(path: Path) -> dict:
    report = json.loads((path / "report.json").read_text())
    return {"policies": report["policies"], "metrics": report["metrics"], "trust": report["trust"],
            "horizon_error": report["horizon_error"]}


def test_cli_ray_local_equals_local(tmp_path: Path) -> None:
    """The README's command: ``executor=ray ray_address=local`` (a private Ray started and stopped by
    the command) gives the per-episode numbers of ``executor=local``."""
    args = ["evaluate", "episodes=4", "horizon=100", "rerun=false"]
    ray_run = _cli(*args, "executor=ray", "ray_address=local", f"out={tmp_path / 'ray'}")
    assert ray_run.returncode == 0, ray_run.stderr[-2000:]
    local_run = _cli(*args, f"out={tmp_path / 'local'}")
    assert local_run.returncode == 0, local_run.stderr[-2000:]
    assert _comparable(tmp_path / "ray") == _comparable(tmp_path / "local")
    assert json.loads((tmp_path / "ray" / "report.json").read_text())["config"]["executor"] == "ray"


def test_ray_missing_or_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    for command in (["evaluate", "executor=ray"], ["regress", "--baseline", "tests/baselines/HalfCheetah-v5.json",
                                                   "executor=ray"], ["collect", "executor=ray", "episodes=1"]):
        run = _cli(*command, f"out={tmp_path / 'out'}" if command[0] != "regress" else "junit=",
                   env={"PYTHONPATH": str(shim)}, cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 2, (command, run.stderr[-1500:])
        assert run.stderr.strip().splitlines() == [f'wm-eval {command[0]}: error: executor=ray needs Ray, an optional '
                                                   'extra: pip install "wm_eval[ray]"'], run.stderr
        assert not any((tmp_path / "out").glob("*"))  # nothing written
    # nothing listening there (without address, see test_ray_faults.py: this module's own Ray would be found)
    run = _cli("evaluate", "executor=ray", f"out={tmp_path / 'out'}", "ray_address=127.0.0.1:1")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr[-1500:]
    assert "no Ray cluster at ray_address=127.0.0.1:1" in run.stderr and not any((tmp_path / "out").glob("*"))
