"""The ``wm-eval`` command line: ``collect | train | evaluate | view | regress | bench``.

Every command takes ``--config FILE`` (repeatable), ``--preset debug`` and
``key=value`` overrides; ``wm-eval <command> --help`` lists the keys. Exit codes:
0 success, 1 a failed gate, 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from wm_eval.config import describe, load_config
from wm_eval.errors import WmEvalError

__all__ = ["main"]

#: command -> (one-line summary, "module:function" that runs it with the typed config).
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("roll out behaviour policies in MuJoCo and write a Minari-layout HDF5 dataset",
                "wm_eval.commands:collect"),
    "train": ("train a probabilistic ensemble world model on collected datasets", "wm_eval.commands:train"),
    "evaluate": ("roll policies out in the world model and in MuJoCo from the same states; report",
                 "wm_eval.commands:evaluate"),
    "view": ("show paired real and imagined rollouts in Rerun", "wm_eval.commands:view"),
    "regress": ("CI gate: fail when a policy is worse than its stored baseline", "wm_eval.commands:regress"),
    "bench": ("measure imagined vs simulated steps per second and evaluate wall time", "wm_eval.commands:bench"),
}

#: command-specific flags, mapped onto config keys.
FLAGS: dict[str, list[tuple[str, dict]]] = {
    "view": [("path", {"nargs": "?", "help": "evaluation folder or trajectories.h5"}),
             ("--save", {"metavar": "FILE.rrd", "help": "write a recording instead of opening the viewer"}),
             ("--web", {"action": "store_true", "help": "serve the web viewer on localhost"})],
    "regress": [("--baseline", {"metavar": "FILE", "help": "baseline file"}),
                ("--update-baseline", {"action": "store_true", "help": "record a new baseline"}),
                ("--junit", {"metavar": "FILE", "help": "write JUnit XML"}),
                ("--allow-model-change", {"action": "store_true", "help": "accept a changed world model"})],
    "bench": [("--json", {"metavar": "FILE", "help": "write the figures as JSON"})],
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wm-eval",
        description="Evaluate robot policies in a learned world model, scored against MuJoCo ground truth.",
    )
    from wm_eval import __version__

    parser.add_argument("--version", action="version", version=f"wm_eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=f"{summary}.\n\nkeys (key=value):\n{describe(name)}",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
        cmd.add_argument("--preset", choices=["debug"], help="debug: shrink every size to run in seconds")
        for flag, kwargs in FLAGS.get(name, []):
            cmd.add_argument(flag, **kwargs)
        cmd.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def _flag_overrides(command: str, args: argparse.Namespace) -> list[str]:
    """Turn the command-specific flags into ``key=value`` overrides."""
    out = []
    for flag, _ in FLAGS.get(command, []):
        key = flag.lstrip("-").replace("-", "_")
        value = getattr(args, key, None)
        if value not in (None, False):
            out.append(f"{key}={'true' if value is True else value}")
    return out


def _runner(command: str) -> Callable[..., int | None]:
    module, function = COMMANDS[command][1].split(":")
    return getattr(importlib.import_module(module), function)


TRACEBACK_ENV = "WM_EVAL_TRACEBACK"
"""Set to ``1`` to print the traceback of the user code (factory, policy, env) behind an error as well."""


def _raised_at(exc: WmEvalError) -> str:
    """`` (raised at FILE:LINE in FUNC)``: where the user code behind ``exc`` (its chained cause: a user's
    factory, policy or env that raised) failed, so that a bug in it is found without a traceback; else ``""``."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, WmEvalError) or cause.__traceback__ is None:
        return ""
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    return f" (raised at {frame.filename}:{frame.lineno} in {frame.name}; {TRACEBACK_ENV}=1 shows the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wm-eval``; returns the exit code."""
    parser = _parser()
    # key=value items after a flag (``--json F out=D``) are not taken by argparse's positional: collect them.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + extra
    try:
        positional = [item for item in args.overrides if "=" not in item]
        if positional and args.command == "view" and args.path is None:
            args.path, args.overrides = positional[0], [o for o in args.overrides if o != positional[0]]
        cfg = load_config(args.command, files=args.config, preset=args.preset,
                          overrides=args.overrides + _flag_overrides(args.command, args))
        code = _runner(args.command)(cfg)
    except WmEvalError as exc:
        where = _raised_at(exc)
        if where and os.environ.get(TRACEBACK_ENV):
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"wm-eval {args.command}: error: {exc}{where}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"wm-eval {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
