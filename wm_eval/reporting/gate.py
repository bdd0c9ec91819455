"""Reports of the policy CI gate: terminal table, Markdown summary and JUnit XML.

They only read a finished :class:`~wm_eval.regress.RegressResult`. Each shows the candidates' ``risk``
(``n/a``: not estimated) and says when a candidate is flagged: its verdict then rests on an imagined return
the model likely gets wrong. Flagged is information; it never fails the gate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from wm_eval.reporting.trust import FLAG, TERMINAL_FLAG

if TYPE_CHECKING:
    from wm_eval.types import PolicyCheck, RegressResult

__all__ = ["text_table", "markdown_summary", "junit_xml"]


def _pct(x: float) -> str:
    return f"{x:+.1%}" if math.isfinite(x) else str(x)


def _verdict(check: PolicyCheck) -> str:
    success = check.success_test is not None and check.success_test.regressed
    if check.true_test is not None and check.return_regressed:
        return "REGRESSION (confirmed in MuJoCo)" + (" and success rate" if success else "")
    if check.true_test is not None:
        return "REGRESSION (success rate; MuJoCo overrules the return)" if success else "pass (MuJoCo overrules the model)"
    if check.return_regressed:
        return "REGRESSION" + (" (return and success rate)" if success else "")
    return "REGRESSION (success rate)" if success else "pass"


def _risk(check: PolicyCheck) -> str:
    """``"0.83 FLAGGED"``, ``"0.12"`` or ``"n/a"`` (risk not estimated)."""
    if check.risk is None:
        return "n/a"
    return f"{check.risk:.2f}" + (f" {TERMINAL_FLAG}" if check.flagged else "")


def _flag_note(check: PolicyCheck) -> str:
    """The one-line warning for a flagged candidate (also its JUnit ``system-out``)."""
    return (f"{check.name}: risk {check.risk:.2f} that its imagined mean return is off by more than 20%, so its "
            f"verdict ({_verdict(check)}) is less trustworthy; check it in MuJoCo (confirm=true re-runs regressions)")


def _rows(result: RegressResult) -> list[list[str]]:
    level = f"{result.confidence:.0%} CI"
    success = any(c.success_test is not None for c in result.checks)
    rows = [["policy", "file", "baseline", "now", "change", level] + ["success (McNemar p)"] * success
            + ["risk", "verdict"]]
    for c in result.checks:
        file = {None: "-", True: "changed", False: "same"}[c.file_changed]
        s = c.success_test
        rate = [] if not success else ["-" if s is None else
                                       f"{s.baseline_rate:.2f} -> {s.candidate_rate:.2f} (p {s.p_value:.3f})"]
        rows.append([c.name, file, f"{c.baseline['mean']:.2f}", f"{c.candidate['mean']:.2f}", _pct(c.test.change),
                     f"[{_pct(c.test.ci_low)}, {_pct(c.test.ci_high)}]", *rate, _risk(c), _verdict(c)])
    return rows


def _message(check: PolicyCheck, result: RegressResult) -> str:
    """The one-line explanation of a regression (also the JUnit failure message)."""
    s = check.success_test
    success = "" if s is None or not s.regressed else (
        f"imagined success rate {s.baseline_rate:.2f} -> {s.candidate_rate:.2f} ({s.lost} episodes lost, {s.gained} "
        f"gained; McNemar exact p = {s.p_value:.4f}), a drop beyond the tolerance of {s.tolerance:.2f}")
    if not check.return_regressed:
        return f"{check.name}: {success} ({check.path})"
    t = check.true_test or check.test
    where = "true (MuJoCo)" if check.true_test is not None else "imagined"
    return (f"{check.name}: {where} return changed by {_pct(t.change)} ({result.confidence:.0%} CI "
            f"{_pct(t.ci_low)} to {_pct(t.ci_high)}), beyond the -{result.tolerance:.0%} tolerance; "
            f"imagined return {check.baseline['mean']:.2f} -> {check.candidate['mean']:.2f}"
            + (f"; and {success}" if success else "") + f" ({check.path})")


def _header(result: RegressResult) -> str:
    return (f"model {result.model} ({result.fingerprint}), {result.episodes} episodes x {result.horizon} steps, "
            f"seed {result.seed}, tolerance {result.tolerance:.0%}, paired bootstrap {result.confidence:.0%}")


def text_table(result: RegressResult) -> str:
    """A fixed-width table for the terminal, with one line per regression under it."""
    rows = _rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"wm-eval regress {result.task}: {_header(result)}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"regression: {_message(c, result)}" for c in result.regressions]
    lines += [f"{TERMINAL_FLAG.lower()}: {_flag_note(c)}" for c in result.checks if c.flagged] + result.notes
    return "\n".join(lines)


def markdown_summary(result: RegressResult) -> str:
    """The Markdown summary (what goes into ``$GITHUB_STEP_SUMMARY``)."""
    n = len(result.regressions)
    status = f"{n} regression{'s' * (n != 1)}" if n else "no regression"
    flagged = sum(c.flagged for c in result.checks)
    status += f", {flagged} flagged {FLAG}" if flagged else ""
    rows = _rows(result)
    lines = [f"## wm-eval regress: {result.task}, {status}", "", _header(result) + ".", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(f"**{c}**" if c.startswith("REGRESSION") else c for c in row) + " |"
              for row in rows[1:]]
    extra = [f"- {_message(c, result)}" for c in result.regressions]
    extra += [f"- {FLAG} flagged: {_flag_note(c)}" for c in result.checks if c.flagged]
    extra += [f"- {note}" for note in result.notes]
    return "\n".join(lines + ([""] + extra if extra else [])) + "\n"


def junit_xml(result: RegressResult) -> str:
    """JUnit XML: one ``<testcase>`` per policy, ``<failure>`` on a regression."""
    failures = len(result.regressions)
    suites = ET.Element("testsuites", name="wm-eval regress", tests=str(len(result.checks)),
                        failures=str(failures), errors="0", time=f"{result.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"wm-eval regress {result.task}", tests=str(len(result.checks)),
                          failures=str(failures), errors="0", skipped="0", time=f"{result.seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for key in ("task", "model", "fingerprint", "episodes", "horizon", "seed", "tolerance", "confidence"):
        ET.SubElement(props, "property", name=key, value=str(getattr(result, key)))
    per_case = result.seconds / max(len(result.checks), 1)
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"wm_eval.regress.{result.task}", name=c.name,
                             file=c.path, time=f"{per_case:.3f}")
        trust = ET.SubElement(case, "properties")
        ET.SubElement(trust, "property", name="risk", value="n/a" if c.risk is None else f"{c.risk:.4f}")
        ET.SubElement(trust, "property", name="flagged", value=str(c.flagged).lower())
        if c.regressed:
            failure = ET.SubElement(case, "failure", message=_message(c, result)
                                    + (f" [{TERMINAL_FLAG}: {_flag_note(c)}]" if c.flagged else ""), type="regression")
            details = {"baseline": c.baseline, "candidate": c.candidate, "change": dataclasses.asdict(c.test),
                       "true_candidate": c.true_candidate,
                       "true_change": None if c.true_test is None else dataclasses.asdict(c.true_test),
                       "success": None if c.success_test is None else dataclasses.asdict(c.success_test),
                       "risk": c.risk, "flagged": c.flagged}
            failure.text = json.dumps(details, indent=2, sort_keys=True)
        ET.SubElement(case, "system-out").text = (f"imagined return {c.baseline['mean']:.4f} -> "
                                                  f"{c.candidate['mean']:.4f}, change {_pct(c.test.change)} "
                                                  f"[{_pct(c.test.ci_low)}, {_pct(c.test.ci_high)}]"
                                                  + (f"\n{TERMINAL_FLAG}: {_flag_note(c)}" if c.flagged else ""))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
