"""Timing a piece of work: the median rate over repeated windows, with its run-to-run spread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Rate", "spreads", "measure_rate"]


class Rate(float):
    """A measured rate: the median window (it *is* that float) with the slowest and fastest window
    as ``low`` and ``high``, so every figure carries its run-to-run spread."""

    low: float
    high: float

    def __new__(cls, median: float, low: float, high: float) -> Rate:
        rate = super().__new__(cls, median)
        rate.low, rate.high = float(low), float(high)
        return rate

    def scaled(self, factor: float) -> Rate:
        """The same rate in other units."""
        return Rate(self * factor, self.low * factor, self.high * factor)


def spreads(value: Any) -> Any:
    """``value`` (nested dicts, lists and tuples of figures) with each :class:`Rate` replaced by its
    ``[low, high]``, other numbers by ``None``: the run-to-run spread of every figure."""
    if isinstance(value, Rate):
        return [value.low, value.high]
    if isinstance(value, dict):
        return {k: spreads(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [spreads(v) for v in value]
    return None


def measure_rate(step: Callable[[], Any], *, items: int, seconds: float, repeats: int,
                 sync: Callable[[], None] | None = None) -> Rate:
    """Median over ``repeats`` windows of ``items`` per second (with the slowest and fastest window),
    each window calling ``step`` (which does ``items`` units of work) for at least ``seconds`` and at
    least twice, after one warm-up call. ``sync`` waits for asynchronous work (CUDA) before a clock is read."""
    sync = sync or (lambda: None)
    step()
    sync()
    rates = []
    for _ in range(max(1, repeats)):
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:
            step()
            calls += 1
        sync()
        rates.append(items * calls / (time.perf_counter() - start))
    return Rate(float(np.median(rates)), min(rates), max(rates))
