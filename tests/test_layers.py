"""The layers import downwards only: meshcore imports none of the others; loadgen, meshsim and
analysis never import meshload (the CLI); analysis never imports loadgen or meshsim.

Read from the source (every import statement, at the top or inside a function), so an import
that only runs on some path is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "meshcore": {"meshload", "loadgen", "meshsim", "analysis"},
    "loadgen": {"meshload"},
    "meshsim": {"meshload", "loadgen", "analysis"},
    "analysis": {"meshload", "loadgen", "meshsim"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_below_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    wrong = {
        f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) & FORBIDDEN[package])}"
        for path in files
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert not wrong


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from meshload.cli import main\n    import loadgen.plan\n")
    assert imported_packages(module) == {"meshload", "loadgen"}
