"""The server's modules import each other without a cycle, reads never import writes, and tasks are enqueued
by reference. Read from the source with `ast`: an import inside a function body counts as much as one at the
top (moving an import into a function hides a cycle from Python, not from the next reader)."""
import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aggregation", "nodes_app", "fedsite", "fedsite_node")


def modules_of(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, migrations left out (Django loads them, nothing imports them)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:`, which never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        # `from pkg import name` imports pkg.name when that is a module, else it reads name from pkg.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    targets = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: they are imported too (not the importer's own).
        while name:
            if name in known and name != module and not module.startswith(name + "."):
                targets.append(name)
            name = name.rpartition(".")[0]
    return targets


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, dict[str, int]]:
    """Module -> {imported module: line of the first such import}, within `packages`."""
    known = modules_of(root, packages)
    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree)
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped:
                for target in _targets(module, path.name == "__init__.py", node, known):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _described(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    return "; ".join(f"{a}:{line} imports {b}" for a in component for b, line in graph[a].items() if b in component)


def test_the_server_packages_have_no_import_cycle():
    graph = import_graph(REPO_ROOT, PACKAGES)

    found = cycles(graph)

    assert len(graph) > 100  # the walk really read the packages
    assert found == [], "\n".join(_described(graph, component) for component in found)


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function_body(tmp_path):
    package = tmp_path / "pkg"
    (package / "services").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "services" / "__init__.py").write_text("")
    (package / "services" / "rounds.py").write_text("from pkg.services.experiments import spec\n")
    (package / "services" / "experiments.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import other\n\n"
        "def create():\n    from .rounds import round_open\n")
    (package / "other.py").write_text("from pkg.services import experiments\n")

    found = cycles(import_graph(tmp_path, ["pkg"]))

    assert found == [["pkg.services.experiments", "pkg.services.rounds"]]


def test_the_cycle_check_counts_a_package_init_that_imports_its_modules(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("from pkg.services.rounds import aggregate\n")
    (package / "services").mkdir()
    (package / "services" / "__init__.py").write_text("from pkg.services.handover import claim\n")
    (package / "services" / "rounds.py").write_text("")
    (package / "services" / "handover.py").write_text("from pkg import tasks\n")

    found = cycles(import_graph(tmp_path, ["pkg"]))

    assert found == [["pkg.services", "pkg.services.handover", "pkg.tasks"]]


@pytest.mark.parametrize("selectors", ["aggregation.selectors", "nodes_app.selectors", "aggregation.longpoll"])
def test_reads_import_no_service_and_no_task(selectors):
    graph = import_graph(REPO_ROOT, PACKAGES)

    # `aggregation.services` alone is the package: it only re-exports a selector.
    writes = [m for m in graph[selectors] if m.startswith(("aggregation.services.", "nodes_app.services",
                                                           "nodes_app.discovery_services", "aggregation.tasks"))]

    assert writes == []


def test_no_task_is_looked_up_by_its_dotted_name():
    offenders = [str(path.relative_to(REPO_ROOT)) for path in modules_of(REPO_ROOT, ["aggregation"]).values()
                 if "import_module(" in path.read_text()]

    assert offenders == []
