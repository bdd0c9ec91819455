"""Per-policy risk in the report: the ``report.md`` trust section, the risk cells and the flagged notes.

Reads ``report.json`` content only. Per policy, ``risk`` is the estimated probability that the policy's
imagined mean return is off by more than 20% and ``flagged`` is ``risk > trust.risk_threshold`` (0.5);
``risk`` is ``None`` (JSON null) when the model stores no coverage data or no risk model, and then
reads ``n/a``. ``trust.signal`` says which signal is in use; ``trust.policy_auroc`` is the AUROC of
``risk`` for the policies whose imagined mean return is off by more than 25% (``None``: not computable).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLAG", "TERMINAL_FLAG", "flagged_policies", "risk_cell", "terminal_risk_cell", "risk_threshold",
           "trust_verdict", "trust_section", "flagged_note"]

FLAG = "⚑"
"""The marker of a flagged policy in ``report.md``."""
TERMINAL_FLAG = "FLAGGED"
"""The marker of a flagged policy in terminal tables (plain ASCII for any console encoding)."""


def risk_threshold(report: dict[str, Any]) -> float:
    """The risk above which a policy is flagged (``trust.risk_threshold``; 0.5 in reports that predate it)."""
    threshold = (report.get("trust") or {}).get("risk_threshold")
    return 0.5 if threshold is None else float(threshold)


def flagged_policies(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The flagged policies' entries, in the report's order."""
    return [p for p in report["policies"] if p.get("flagged")]


def risk_cell(policy: dict[str, Any], *, marker: str = FLAG) -> str:
    """``"0.83 ⚑"`` for a flagged policy, ``"0.12"`` for another one, ``"n/a"`` when risk is not estimated."""
    risk = policy.get("risk")
    if risk is None:
        return "n/a"
    return f"{risk:.2f} {marker}" if policy.get("flagged") else f"{risk:.2f}"


def terminal_risk_cell(policy: dict[str, Any]) -> str:
    """:func:`risk_cell` for the terminal, 13 characters with the numbers aligned: ``" 0.83 FLAGGED"``."""
    number, _, marker = risk_cell(policy, marker=TERMINAL_FLAG).partition(" ")
    return f"{number:>5} {marker:<{len(TERMINAL_FLAG)}}"


def _named(policies: list[dict[str, Any]]) -> str:
    """``"push (risk 0.89), wobble (risk 0.99)"``."""
    return ", ".join(f"{p['name']} (risk {p['risk']:.2f})" for p in policies)


def trust_verdict(report: dict[str, Any]) -> str | None:
    """The verdict line warning about flagged policies, or ``None`` when none is flagged."""
    flagged = flagged_policies(report)
    if not flagged:
        return None
    return (f"**Warning:** {FLAG} flagged (risk > {risk_threshold(report):g}): {_named(flagged)}: their imagined "
            "mean returns are likely off by more than 20%; check them in MuJoCo before acting on them.")


def trust_section(report: dict[str, Any]) -> list[str]:
    """Markdown lines of the "Trust" section: the signal in use, the episode trust AUROC with its length
    control, the policy risk AUROC (when computable) and the flagged policies."""
    trust = report.get("trust") or {}
    threshold = risk_threshold(report)

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = ["", "## Trust", "", f"- Signal: {trust.get('signal') or 'disagreement only'}."]
    if trust.get("episodes") == 0:
        lines.append("- Episodes: trust AUROC n/a: no episode ran in MuJoCo (real_episodes=0), so no imagined return "
                     "is checked.")
    else:
        control = num(trust.get("auroc_length_control", trust.get("length_auroc")))
        lines.append(f"- Episodes: trust AUROC {num(trust.get('auroc'))} for flagging episodes whose imagined return "
                     f"is off by more than {100 * trust.get('threshold', 0.2):.0f}% (control: the imagined length "
                     f"alone, in whichever direction scores higher, {control}; a useful trust score beats it).")
    if trust.get("policy_auroc") is not None:
        off = trust.get("policies_off")
        lines.append(f"- Policies: risk AUROC {trust['policy_auroc']:.2f} for flagging the policies whose imagined "
                     f"mean return is off by more than 25% ({'?' if off is None else off} of "
                     f"{len(report['policies'])}).")
    flagged = flagged_policies(report)
    if flagged:
        lines.append(f"- Flagged (risk > {threshold:g}): {_named(flagged)}.")
    elif all(p.get("risk") is None for p in report["policies"]):
        lines.append("- Flagged: no policy flagged (risk is not estimated for this model: n/a).")
    else:
        lines.append(f"- Flagged: no policy flagged (every risk is at most {threshold:g}).")
    return lines


def flagged_note(report: dict[str, Any]) -> str | None:
    """The terminal line under the table naming the flagged policies, or ``None`` when none is flagged."""
    flagged = flagged_policies(report)
    if not flagged:
        return None
    return (f"{TERMINAL_FLAG} (risk > {risk_threshold(report):g}): {_named(flagged)}: imagined returns likely off "
            "by more than 20%; check them in MuJoCo.")
