"""The ``wm-eval regress`` gate inside a team's own pytest suite.

::

    # tests/test_policies.py
    from wm_eval.testing import assert_no_regression

    def test_no_policy_regressed():
        assert_no_regression("tests/baselines/gate.json")

A regression fails the test with the gate's Markdown summary as the message; bad input (a missing
baseline or policy file, a changed world model) raises a :class:`~wm_eval.errors.WmEvalError`, so pytest
reports an error rather than a failure.
"""

from __future__ import annotations

import os
from typing import Any

from wm_eval.regress import check_baseline
from wm_eval.reporting.gate import markdown_summary
from wm_eval.types import RegressResult

__all__ = ["assert_no_regression"]


def assert_no_regression(baseline: str | os.PathLike[str], **overrides: Any) -> RegressResult:
    """Check ``baseline`` like ``wm-eval regress --baseline FILE`` and return the result.

    Args:
        baseline: the baseline file (recorded with ``wm-eval regress --update-baseline``).
        **overrides: keyword arguments of :func:`wm_eval.regress.check_baseline`: ``model``,
            ``task``, ``tolerance``, ``confidence``, ``allow_model_change``, ``confirm``, ``device``,
            ``allow_code`` (needed when the baseline names ``module:callable`` policies).

    Raises:
        AssertionError: a policy regressed; the message is the gate's summary.
    """
    result = check_baseline(baseline, **overrides)
    if result.regressions:
        raise AssertionError(markdown_summary(result))
    return result
