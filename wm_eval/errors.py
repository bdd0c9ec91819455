"""The exceptions wm_eval raises for problems a user can fix.

Every message is one line that says what is wrong and what to do; the CLI prints
it as ``wm-eval: error: <message>`` and exits with :attr:`WmEvalError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "did_you_mean",
    "WmEvalError",
    "ConfigError",
    "TaskError",
    "DatasetError",
    "CheckpointError",
    "SpaceMismatchError",
    "PolicyError",
    "MissingDependencyError",
    "InvalidActionError",
]


class WmEvalError(Exception):
    """Base class: bad input or a broken artifact. The CLI exits with ``exit_code``."""

    exit_code: int = 2


class ConfigError(WmEvalError):
    """An unknown key, a wrong type or a missing config file."""


class TaskError(WmEvalError, KeyError):
    """An unknown task id, or a task that lacks what was asked of it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(WmEvalError):
    """A dataset file that is missing, corrupt, or not what the caller expects."""


class CheckpointError(WmEvalError):
    """A world-model checkpoint that is missing, truncated, too new or for another task."""


class SpaceMismatchError(WmEvalError, ValueError):
    """Observation or action spaces (or array shapes) that do not match."""


class PolicyError(WmEvalError):
    """A policy that cannot be loaded or returns invalid actions."""


class MissingDependencyError(WmEvalError, ImportError):
    """An optional dependency that is not installed; the message says how to install it."""


class InvalidActionError(WmEvalError, ValueError):
    """An action batch with NaN or infinite entries."""


def did_you_mean(value: object, choices: object, *, cutoff: float = 0.6) -> str:
    """``"did you mean 'x'? "`` for the closest of ``choices`` to ``value``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=cutoff)  # type: ignore[attr-defined]
    return f"did you mean '{close[0]}'? " if close else ""
