"""``real_budget=K``: wm_eval decides where K real (MuJoCo) episodes go.

Every policy first gets 2 paired episodes (the least an interval needs), then the rest of the budget
goes out in rounds (a third of it per round). Each round estimates every policy's true mean return
(PPI++, :mod:`~wm_eval.evaluation.estimators`) and hands episodes one at a time to the *contenders for
first place* (policies whose interval reaches above the best lower bound), each time to the one whose
interval would shrink most (largest standard error, scaled by ``sqrt(n / (n + 1))``). When a single
contender is left the verdict is clear, and the remaining episodes tighten every policy's interval the
same way. A policy's real episodes are always its first ``n_i`` episodes, so they are paired with the
imagined ones from the same start states, and the allocation follows from the seed alone (a resumed
run makes the same choices).

Flagged policies (the trust signal's ``risk > 0.5``, :mod:`~wm_eval.evaluation.trust_signal`) are in every
round's pool whether or not they contend: their imagined returns are the least trustworthy, so real episodes
buy most there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wm_eval.errors import WmEvalError
from wm_eval.evaluation import summary as S
from wm_eval.evaluation.executor import Job
from wm_eval.evaluation.plan import Unit, paired_units
from wm_eval.evaluation.statistics import statistics_for
from wm_eval.evaluation.units import UnitResult, load_unit

__all__ = ["FIRST", "check_budget", "next_allocation", "spend", "add_timings"]

FIRST = 2
"""Real episodes every policy gets before any allocation (an interval needs 2)."""


def check_budget(budget: int, *, names: Sequence[str], episodes: int, mode: str) -> None:
    """One-line errors for a budget that cannot be spent as asked."""
    if episodes < FIRST:
        raise WmEvalError(f"real_budget needs episodes >= {FIRST} (an interval needs {FIRST} real episodes per policy)")
    if budget < FIRST * len(names):
        short = list(names)[budget // FIRST:]
        shown = ", ".join(short[:3]) + (f" and {len(short) - 3} more" if len(short) > 3 else "")
        raise WmEvalError(f"real_budget={budget} leaves {shown} without the {FIRST} real episodes an interval needs: "
                          f"use real_budget >= {FIRST * len(names)} ({FIRST} per policy)")
    if budget > episodes * len(names):
        raise WmEvalError(f"real_budget={budget} exceeds episodes x policies = {episodes * len(names)}: raise episodes "
                          "or lower the budget")
    if mode != "closed_loop":
        raise WmEvalError("real_budget needs mode=closed_loop: open loop replays every episode's real actions")


def next_allocation(estimates: Sequence[dict], n: Sequence[int], *, give: int, episodes: int,
                    flagged: Sequence[bool] | None = None) -> list[int]:
    """The real episodes per policy after handing out ``give`` more (see the module docstring).

    Args:
        estimates: per policy the current true-return estimate (``ci_low``, ``ci_high``, ``se``).
        n: real episodes per policy so far; episodes: the most a policy can have.
        flagged: per policy, whether the trust signal flags it (default: none).
    """
    lows = [e["ci_low"] for e in estimates]
    best_low = max(lows)
    open_ = [i for i in range(len(n)) if n[i] < episodes]
    contenders = [i for i in open_ if estimates[i]["ci_high"] >= best_low]
    flagged_open = [i for i in open_ if flagged is not None and flagged[i]]
    pool = sorted(set(contenders) | set(flagged_open)) if len(contenders) > 1 or flagged_open else open_
    new = list(n)
    for _ in range(give):
        candidates = [i for i in pool if new[i] < episodes]
        if not candidates:
            break
        se = {i: estimates[i]["se"] * math.sqrt(n[i] / new[i]) if math.isfinite(estimates[i]["se"]) else math.inf
              for i in candidates}
        new[max(candidates, key=lambda i: (se[i], -i))] += 1
    return new


def spend(job: Job, runner: Any, done: Any, units: list[Unit], results: dict[str, UnitResult], store: Path | None,
           bar: Any, timings: dict[str, float], *, budget: int, chunk: int, episodes: int, confidence: float,
           flagged: Sequence[bool]) -> tuple[list[int], int]:
    """Hand out ``budget`` real episodes in rounds (:mod:`~wm_eval.evaluation.budget`), running each
    round's new paired units; returns the real episodes per policy and how many of the new units were
    resumed from ``store``. ``units`` grows with them. ``flagged``: per policy, whether the trust signal
    (computed from the imagined episodes, which are all done before the first round) flags it."""
    names = [p.name for p in job.policies]
    n = [min(FIRST, episodes)] * len(names)
    round_size = max(1, -(-(budget - sum(n)) // 3))
    loaded = 0
    while sum(n) < budget:
        values = S.policy_values(units, results, len(names), episodes)
        estimates = S.true_estimates(values, statistics_for(None)[:1], real=n, confidence=confidence)
        new = next_allocation([e["return"] for e in estimates], n, give=min(round_size, budget - sum(n)),
                              episodes=episodes, flagged=flagged)
        if new == n:
            break
        extra = [u for i, name in enumerate(names) for u in paired_units(i, name, n[i], new[i], chunk)]
        for unit in extra:
            if store is not None and unit.id not in results and (store / f"{unit.id}.npz").exists():
                results[unit.id] = load_unit(store / f"{unit.id}.npz")
                loaded += 1
        todo = [u for u in extra if u.id not in results]
        bar.total += sum(u.size for u in todo)
        bar.refresh()
        add_timings(timings, runner.run(job, todo, done))
        units.extend(extra)
        n = new
    return n, loaded


def add_timings(timings: dict[str, float], more: dict[str, float]) -> None:
    """Add an executor run's seconds to ``timings`` (in place)."""
    for key, value in more.items():
        timings[key] = timings.get(key, 0.0) + value
