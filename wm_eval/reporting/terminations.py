"""Terminations in the report: the share of episodes that end by termination (a fall, for locomotion).

On tasks that terminate, a wrong imagined return is most often a wrong fall: the model keeps a walker up
that falls in MuJoCo, or drops one that stays up. Each policy's ``terminated`` entry (``report.json``)
holds the imagined and true shares with 95% Wilson intervals; ``report.md`` shows them as a column of the
policies' table (only when some episode terminated) and names the policies whose shares differ most.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DISAGREE", "has_terminations", "terminated_cell", "termination_verdict"]

DISAGREE = 0.25
"""A policy's imagined and true shares of terminated episodes differing by at least this much are named."""
_NAMED = 3
"""At most this many policies are named in the verdict (the largest differences)."""


def _share(policy: dict[str, Any], side: str) -> float | None:
    return ((policy.get("terminated") or {}).get(side) or {}).get("mean")


def has_terminations(report: dict[str, Any]) -> bool:
    """Whether some episode of some policy, imagined or true, ended by termination (not the time limit)."""
    return any((_share(p, side) or 0.0) > 0 for p in report["policies"] for side in ("imagined", "true"))


def terminated_cell(policy: dict[str, Any]) -> str:
    """Markdown cell ``imagined / true`` share of terminated episodes, e.g. ``12% / 72%``."""
    return " / ".join("n/a" if v is None else f"{100 * v:.0f}%" for v in (_share(policy, "imagined"),
                                                                            _share(policy, "true")))


def termination_verdict(report: dict[str, Any]) -> str | None:
    """One line naming the policies whose imagined and true shares of terminated episodes differ by at
    least :data:`DISAGREE` (``None`` when none does or nothing ran in MuJoCo)."""
    gaps = []
    for p in report["policies"]:
        imagined, true = _share(p, "imagined"), _share(p, "true")
        if imagined is not None and true is not None and abs(imagined - true) >= DISAGREE - 1e-9:  # 0.35 - 0.1
            gaps.append((abs(imagined - true), p["name"], imagined, true))
    if not gaps:
        return None
    gaps.sort(key=lambda g: (-g[0], g[1]))
    named = ", ".join(f"{name} ({100 * i:.0f}% imagined, {100 * t:.0f}% true)" for _, name, i, t in gaps[:_NAMED])
    more = f" and {len(gaps) - _NAMED} more" if len(gaps) > _NAMED else ""
    return (f"Terminations (falls) are mispredicted for {len(gaps)} of {len(report['policies'])} policies, by "
            f"{100 * DISAGREE:.0f} points of their episodes or more: {named}{more}. Their imagined returns "
            "are the ones to doubt.")
