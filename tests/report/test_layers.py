"""The report package's imports point down only: no circle (report.py and report_html.py imported each other), no
renderer importing another or the schema at run time, the content (document blocks) importing no renderer, nothing
imported from the layers above (evaluate, cli...)."""

from __future__ import annotations

import ast
from pathlib import Path

import hardenctl.report

PACKAGE = Path(hardenctl.report.__file__).parent
# one module per output; each renders a Report, a Comparison or a report's dict (card, robustbench)
RENDERERS = {"markdown", "html", "junit", "console", "pictures", "plot", "card", "robustbench", "github"}
# what a report or a comparison says, as document blocks: built once, spelled by the renderers
CONTENT = {"blocks", "document", "verdict", "sequential_section", "paired_section", "comparison"}
# below the content: the schema, its reader, and what every layer shares
BELOW = {"schema", "reader", "fields", "eval_fields", "gallery", "fonts", "card_inputs", "common", "text"}
ABOVE = {"outputs"}  # writes a report's files with the renderers


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


def report_imports(path: Path) -> set[str]:
    """The report modules ``path`` imports at run time, by their short names (``markdown``, ``common``...)."""
    return {i.split(".", 1)[1] for i in run_time_imports(path) if i.startswith("report.")}


def modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_every_module_has_its_layer():
    """A new module must be placed in a layer, so the checks below cover it (a new renderer is not missed)."""
    placed = RENDERERS | CONTENT | BELOW | ABOVE
    assert set(modules()) - placed == set(), "add the new module to a layer in this test"
    assert placed - set(modules()) == set(), "a module listed here no longer exists"


def test_no_renderer_imports_another_renderer_or_the_schema():
    for name in sorted(RENDERERS):
        imports = report_imports(modules()[name])
        assert not imports & (RENDERERS | {"schema"}), (name, sorted(imports & (RENDERERS | {"schema"})))


def test_the_content_imports_no_renderer_and_nothing_above_it():
    for name in sorted(CONTENT):
        imports = report_imports(modules()[name])
        assert not imports & (RENDERERS | ABOVE | {"schema"}), (name, sorted(imports & (RENDERERS | ABOVE)))


def test_the_layers_below_import_no_content_and_no_renderer():
    for name in sorted(BELOW):
        imports = report_imports(modules()[name])
        assert not imports & (RENDERERS | CONTENT | ABOVE), (name, sorted(imports & (RENDERERS | CONTENT | ABOVE)))


def test_imports_point_down_without_a_circle():
    graph = {f"report.{name}": run_time_imports(path) for name, path in modules().items()}
    for name, imports in graph.items():
        assert not any(
            i.split(".")[0] in {"evaluate", "cli", "harden", "gates", "api", "attacks", "recipes"} for i in imports
        ), (name, imports)

    def reaches(start: str, seen: tuple[str, ...]) -> None:
        for target in graph.get(start, ()):
            assert target not in seen, " -> ".join((*seen, target))
            reaches(target, (*seen, target))

    for module in graph:
        reaches(module, (module,))
