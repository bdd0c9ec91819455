"""Ray clusters outside the test process: a node of a simulated 2-node cluster removed mid-run (the
evaluation finishes with an undisturbed run's numbers: lost units are retried elsewhere), and a
cluster started with ``ray start``, found without an address as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import wm_eval

pytestmark = pytest.mark.ray

TASK = "HalfCheetah-v5"
POLICIES = ["zoo:HalfCheetah-v5#ppo_0000k", "zoo:HalfCheetah-v5#ppo_0300k", "zoo:HalfCheetah-v5#a2c_0300k"]


def test_no_cluster_is_a_clear_error(tmp_path: Path) -> None:
    """Without ray_address or RAY_ADDRESS and with no Ray running on this machine (Ray's "auto" also
    finds one by its processes, so this runs before this module starts any), one line and exit 2."""
    import psutil

    deadline = time.monotonic() + 60  # a Ray shut down by an earlier test module may take a moment to exit
    while any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"])) and time.monotonic() < deadline:
        time.sleep(0.5)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MUJOCO_GL": "egl"}
    run = subprocess.run([str(Path(sys.executable).parent / "wm-eval"), "evaluate", "executor=ray",
                          f"out={tmp_path / 'out'}"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr[-1500:]
    assert "no Ray cluster at ray_address=auto" in run.stderr and "ray start --head" in run.stderr
    assert not any((tmp_path / "out").glob("*"))


def test_node_removed_mid_run_changes_nothing(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    kw = dict(episodes=8, horizon=150, seed=5, chunk=1, max_batch=2, bootstrap=100, progress=False)
    undisturbed = wm_eval.evaluate(TASK, POLICIES, workers=1, **kw)
    # Head: 2 CPUs (the model actor and one ground-truth task); the extra node: 1 CPU of ground truth.
    fast_failure = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                    "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "_system_config": fast_failure})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        result: dict = {}

        def run() -> None:
            try:
                result["ev"] = wm_eval.evaluate(TASK, POLICIES, executor="ray", out=tmp_path, **kw)
            except BaseException as e:  # re-raised in the test thread below
                result["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "units").glob("*.npz"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        finished_before = len(list((tmp_path / "units").glob("*.npz")))
        cluster.remove_node(node)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the run did not finish after the node was removed"
        if "error" in result:
            raise result["error"]
        assert 3 <= finished_before < len(POLICIES) * kw["episodes"]  # removed mid-run
        assert len([n for n in ray.nodes() if n["Alive"]]) == 1
        disturbed = result["ev"]
        from ray.util.state import list_tasks

        # ground-truth units or the model actor (then restarted on the head) ran on the removed node
        ran = list_tasks(limit=10_000, raise_on_missing_output=False)
        assert any(t.node_id == node.node_id and t.name in ("_ground_truth", "_ModelActor.imagine") for t in ran), \
            "the removed node ran nothing: nothing was tested"
    finally:
        ray.shutdown()
        cluster.shutdown()
    for a, b in zip(undisturbed.policies, disturbed.policies):
        for key in a.episodes:
            np.testing.assert_array_equal(a.episodes[key], b.episodes[key], err_msg=f"{a.name} {key}")
    np.testing.assert_equal(undisturbed.metrics, disturbed.metrics)


def test_cluster_started_with_ray_start_is_found(tmp_path: Path) -> None:
    """README: ``ray start --head --port=6379``, then ``executor=ray`` without ``ray_address`` (and with
    ``RAY_ADDRESS``) connects to it, leaves it running, and gives the local executor's numbers."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MUJOCO_GL": "egl"}
    small = ["episodes=2", "horizon=30", "rerun=false", "bootstrap=50",
             "policies=[zoo:HalfCheetah-v5#ppo_0000k,zoo:HalfCheetah-v5#ppo_0300k]"]
    start = subprocess.run([str(bin_dir / "ray"), "start", "--head", "--port=6379", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        runs = {}
        for name, extra in (("auto", {}), ("address", {"RAY_ADDRESS": "127.0.0.1:6379"}), ("local", None)):
            args = [str(bin_dir / "wm-eval"), "evaluate", *small, f"out={tmp_path / name}"]
            args += ["executor=local", "workers=1"] if extra is None else ["executor=ray"]
            run = subprocess.run(args, env=env | (extra or {}), capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, (name, run.stderr[-2000:])
            runs[name] = json.loads((tmp_path / name / "report.json").read_text())["policies"]
        assert runs["auto"] == runs["address"] == runs["local"]
        status = subprocess.run([str(bin_dir / "ray"), "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, "the evaluation stopped the user's cluster"
    finally:
        subprocess.run([str(bin_dir / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
