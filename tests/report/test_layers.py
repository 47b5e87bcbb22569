"""The report package's imports point down only: no circle (report.py and report_html.py imported each other), no
renderer importing another or the schema at run time, nothing imported from the layers above (evaluate, cli...)."""

from __future__ import annotations

import ast
from pathlib import Path

import hardenctl.report

PACKAGE = Path(hardenctl.report.__file__).parent
RENDERERS = {"markdown", "html", "junit", "console", "pictures", "plot"}


def run_time_imports(path: Path) -> set[str]:
    """Modules of hardenctl a module imports at run time (in functions too; not under ``if TYPE_CHECKING``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(f"report.{node.module}" if node.module else "report")
            elif node.level == 2:
                found.add(node.module or "")
            elif (node.module or "").startswith("hardenctl."):
                found.add(node.module.removeprefix("hardenctl."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_imports_point_down_without_a_circle():
    graph = {f"report.{p.stem}": run_time_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for name, imports in graph.items():
        assert not any(
            i.split(".")[0] in {"evaluate", "cli", "harden", "gates", "api", "attacks", "recipes"} for i in imports
        ), (name, imports)
        if name.split(".")[1] in RENDERERS:
            assert not {i for i in imports if i.startswith("report.")} & (
                {f"report.{r}" for r in RENDERERS} | {"report.schema"}
            ), (name, imports)

    def reaches(start: str, seen: tuple[str, ...]) -> None:
        for target in graph.get(start, ()):
            assert target not in seen, " -> ".join((*seen, target))
            reaches(target, (*seen, target))

    for module in graph:
        reaches(module, (module,))
