"""Scale-out: the ``ray`` executor on a simulated multi-node cluster vs the ``local`` executor.

    python examples/scale_out.py                 # HalfCheetah zoo x 40 episodes x 1000 steps; 2 and 4 nodes
    python examples/scale_out.py 2 50 2          # a quick run: episodes, horizon, node counts...

Each simulated node (``ray.cluster_utils.Cluster``) has 1 CPU; this machine has as many cores as it
has, so nodes beyond the core count share them. Per configuration: wall seconds of
``wm_eval.evaluate`` (Ray already started, as on a running cluster), paired env-steps per second,
speed-up over ``local``, the overhead per unit (the same evaluation at ``horizon=1``, whose cost is
almost all scheduling and shipping, divided by its units), how many nodes ran ground-truth units
and the largest share on one node. Every Ray run is checked to give the local run's per-episode
numbers bit for bit. Prints one JSON line per configuration, then a Markdown table.
"""

import argparse
import json
import os
import time

import numpy as np

import wm_eval

TASK = "HalfCheetah-v5"


def _timed(**kw):
    start = time.perf_counter()
    ev = wm_eval.evaluate(TASK, ["zoo"], progress=False, bootstrap=200, **kw)
    return ev, time.perf_counter() - start


def _same(a, b) -> None:
    for pa, pb in zip(a.policies, b.policies):
        for key in pa.episodes:
            np.testing.assert_array_equal(pa.episodes[key], pb.episodes[key], err_msg=f"{pa.name} {key}")


def main(episodes: int = 40, horizon: int = 1000, nodes: tuple[int, ...] = (2, 4)) -> list[dict]:
    import ray
    from ray.cluster_utils import Cluster

    kw = dict(episodes=episodes, horizon=horizon, chunk=10, seed=0)
    local, local_s = _timed(**kw)
    steps = sum(int(p.episodes["true_length"].sum() + p.episodes["imagined_length"].sum()) for p in local.policies)
    units = len(local.units)
    rows = [{"executor": "local", "nodes": 1, "cpus": os.cpu_count(), "units": units, "seconds": round(local_s, 1),
             "paired_steps_per_s": round(steps / local_s), "speedup": 1.0}]
    for n in nodes:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(n - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        try:
            _timed(executor="ray", episodes=1, horizon=1)  # warm the workers' imports, as on a running cluster
            ev, seconds = _timed(executor="ray", **kw)
            _, tiny = _timed(executor="ray", **{**kw, "horizon": 1})
        finally:
            ray.shutdown()
            cluster.shutdown()
        _same(local, ev)
        rows.append({"executor": "ray", "nodes": n, "cpus": 1, "units": units, "seconds": round(seconds, 1),
                     "paired_steps_per_s": round(steps / seconds), "speedup": round(local_s / seconds, 2),
                     "overhead_ms_per_unit": round(1000 * tiny / units, 1),
                     "nodes_used": int(ev.timings["ray_nodes"]),
                     "largest_node_share": round(ev.timings["ray_largest_node_share"], 2), "identical": True})
    for row in rows:
        print(json.dumps(row))
    print("\n| executor | nodes × CPUs | wall s | paired env-steps/s | speed-up | overhead per unit | nodes used "
          "(largest share) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        extra = (f"{r['overhead_ms_per_unit']} ms | {r['nodes_used']} ({r['largest_node_share']:.0%})"
                 if r["executor"] == "ray" else "– | –")
        print(f"| {r['executor']} | {r['nodes']} × {r['cpus']} | "
              f"{r['seconds']} | {r['paired_steps_per_s']:,} | {r['speedup']}× | {extra} |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("episodes", type=int, nargs="?", default=40, help="paired episodes per policy")
    parser.add_argument("horizon", type=int, nargs="?", default=1000, help="steps per episode")
    parser.add_argument("nodes", type=int, nargs="*", default=[2, 4], help="simulated node counts to compare")
    args = parser.parse_args()
    main(args.episodes, args.horizon, tuple(args.nodes))
