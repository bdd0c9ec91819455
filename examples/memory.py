"""Peak memory of an evaluation as the episodes grow: it is bounded by ``max_batch``, not by ``episodes``.

    python examples/memory.py 200          # episodes per policy (HalfCheetah zoo, horizon 1000)
    python examples/memory.py 1000
    python examples/memory.py 2 50         # a quick run: episodes, horizon

Prints one JSON line: wall seconds, peak resident memory of this process and its ground-truth workers
(sampled every 50 ms), and the size of the written ``trajectories.h5``.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import wm_eval
from wm_eval.machine import PeakMemory


def main(episodes: int = 200, horizon: int = 1000) -> dict:
    import wm_eval.reporting.report  # noqa: F401  (imported before timing, like the CLI does)

    with tempfile.TemporaryDirectory() as tmp, PeakMemory() as memory:
        start = time.perf_counter()
        ev = wm_eval.evaluate("HalfCheetah-v5", ["zoo"], episodes=episodes, horizon=horizon, progress=False)
        wm_eval.report(ev, tmp)
        seconds = time.perf_counter() - start
        size = (Path(tmp) / "trajectories.h5").stat().st_size
    result = {"episodes": episodes, "horizon": horizon, "policies": len(ev.policies), "seconds": round(seconds, 1),
              "peak_memory_mb": round(memory.peak), "trajectories_h5_mb": round(size / 2**20, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
