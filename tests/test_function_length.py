"""No function of the package runs over 60 lines of code: past that, one idea has become several."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "miprun"
LIMIT = 60


def code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of a function's body that hold code: its docstring, blank lines and comments not counted."""
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                      str)
    start = first.end_lineno + 1 if docstring else first.lineno
    return sum(1 for line in lines[start - 1:node.end_lineno] if line.strip() and not line.strip().startswith("#"))


def long_functions(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node, lines) > LIMIT:
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({code_lines(node, lines)} lines)")
    return out


def test_no_function_is_longer_than_the_limit():
    assert PACKAGE.is_dir()
    assert long_functions(PACKAGE) == []


def test_the_count_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}  # a comment after code counts" for i in range(LIMIT + 1))
    (tmp_path / "m.py").write_text(f'def f():\n    """Doc."""\n\n    # only a comment\n{body}\n\n\ndef g():\n    return 1\n')
    assert long_functions(tmp_path) == [f"m.py:1 f ({LIMIT + 1} lines)"]
