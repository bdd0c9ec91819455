"""Imports flow one way (DESIGN.md): data -> models -> env -> evaluation -> reporting -> CLI.

Read from the source with ``ast`` (function-level imports included), so a lazy import that goes
backwards is caught too, not only import-time side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wm_eval"
LEAVES = {"wm_eval", "wm_eval.errors", "wm_eval.types", "wm_eval.fileio", "wm_eval.streams", "wm_eval.machine",
          "wm_eval.minari_layout", "wm_eval.ray_cluster"}
GLUE = ("wm_eval.cli", "wm_eval.commands", "wm_eval.config")

#: module prefix -> prefixes it must never import
FORBIDDEN = {
    "wm_eval.types": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.models", *GLUE),
    "wm_eval.streams": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.models", *GLUE),
    "wm_eval.ray_cluster": ("wm_eval.data", "wm_eval.models", "wm_eval.world_model_env", "wm_eval.evaluation",
                            "wm_eval.reporting", "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.data": ("wm_eval.models", "wm_eval.evaluation", "wm_eval.reporting", "wm_eval.world_model_env",
                     "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.models": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.world_model_env", "wm_eval.regress",
                       "wm_eval.bench", *GLUE),
    "wm_eval.world_model_env": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.evaluation": ("wm_eval.reporting", "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.reporting": ("wm_eval.evaluation", "wm_eval.models", "wm_eval.world_model_env", "wm_eval.regress",
                          "wm_eval.bench", "wm_eval.data", *GLUE),
    "wm_eval.training": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.multistep": ("wm_eval.evaluation", "wm_eval.reporting", "wm_eval.regress", "wm_eval.bench", *GLUE),
    "wm_eval.regress": ("wm_eval.bench", *GLUE),
    "wm_eval.bench": ("wm_eval.regress", *GLUE),
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wm_eval")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wm_eval"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # "from wm_eval import tasks"
    return found


ENVS = PACKAGE.parent / "envs"  # installed as wm_eval.envs (pyproject's package-dir)
GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}
GRAPH |= {"wm_eval." + _module(p): _imports(p) for p in ENVS.rglob("*.py")}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_backward_imports(layer: str) -> None:
    bad = sorted(f"{mod} imports {imp}" for mod, imps in GRAPH.items() if _matches(mod, layer)
                 for imp in imps for banned in FORBIDDEN[layer] if _matches(imp, banned))
    assert not bad, bad


def test_reporting_reads_only_records() -> None:
    """Reporting sees results only through ``types`` (plus leaf helpers and the task registry for drawing)."""
    allowed = LEAVES | {"wm_eval.tasks"}
    bad = sorted(f"{mod} imports {imp}" for mod, imps in GRAPH.items() if _matches(mod, "wm_eval.reporting")
                 for imp in imps if not _matches(imp, "wm_eval.reporting") and not any(_matches(imp, a) for a in allowed)
                 and imp.rsplit(".", 1)[0] not in allowed - {"wm_eval"})
    assert not bad, bad


def test_no_import_cycles_between_top_level_modules() -> None:
    def top(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else name

    edges: dict[str, set[str]] = {}
    for mod, imps in GRAPH.items():
        src = top(mod)
        for imp in imps:
            dst = top(imp)
            if dst in {top(m) for m in GRAPH} and dst != src and dst not in LEAVES and src != "wm_eval":
                edges.setdefault(src, set()).add(dst)
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in edges.get(node, ()):
            assert seen.get(nxt) != 1, f"import cycle: {' -> '.join(stack + [node, nxt])}"
            if nxt not in seen:
                visit(nxt, stack + [node])
        seen[node] = 2

    for node in list(edges):
        if node not in seen:
            visit(node, [])


def test_the_checker_sees_lazy_imports() -> None:
    """The graph includes imports inside functions (commands imports evaluation lazily)."""
    assert any(_matches(i, "wm_eval.evaluation") for i in GRAPH["wm_eval.commands"])


def test_envs_import_only_themselves() -> None:
    """``envs/`` (``wm_eval.envs``) sits below the task registry: it imports no other wm_eval module."""
    envs = [m for m in GRAPH if _matches(m, "wm_eval.envs")]
    assert "wm_eval.envs.arm_tasks" in envs
    bad = sorted(f"{m} imports {i}" for m in envs for i in GRAPH[m] if not _matches(i, "wm_eval.envs"))
    assert not bad, bad
