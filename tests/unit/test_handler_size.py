"""Handlers stay thin (DESIGN.md; issue 10): a Kopf handler reads its arguments, calls the phases of a cycle
and writes the patch. A function in ``pve_operator/handlers`` that grows past the limit is a decision or a side
effect that belongs in ``planning`` or ``execution``, or a phase to name."""

from __future__ import annotations

import ast
from pathlib import Path

HANDLERS = Path(__file__).resolve().parents[2] / "operator" / "pve_operator" / "handlers"
#: Lines of one function, signature and docstring included (keyword-only Kopf signatures take ~12).
LIMIT = 45


def test_no_handler_function_is_longer_than_the_limit() -> None:
    too_long = []
    for path in sorted(HANDLERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT:
                    too_long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert HANDLERS.is_dir() and list(HANDLERS.glob("*.py"))
    assert not too_long, f"handler functions over {LIMIT} lines: {too_long}"
