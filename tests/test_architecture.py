"""The dependency direction of DESIGN.md: agents -> demos, envs, rlkit; demos -> envs, rlkit;
envs -> rlkit; rlkit -> nothing of ours (it reaches the rest through entry points)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "rlkit": {"rlkit"},
    "envs": {"envs", "rlkit"},
    "demos": {"demos", "envs", "rlkit"},
    "agents": {"agents", "demos", "envs", "rlkit"},
}
OURS = set(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):  # every import, including lazy ones inside functions
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{package} must not import {offenders}"


# ---------------------------------------------------------------------------------------------
# No import cycles inside the project, lazy (function-level) imports included
# ---------------------------------------------------------------------------------------------

PACKAGE_DIRS = {"rlkit": ROOT / "rlkit", "rlkit.agents": ROOT / "agents", "rlkit.envs": ROOT / "envs",
                "rlkit.demos": ROOT / "demos"}


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of rlkit, rlkit.agents, rlkit.envs and rlkit.demos."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def import_targets(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body.

    ``from a.b import c`` names the module ``a.b.c`` when there is one, else ``a.b``. A parent
    package is not counted as imported by its submodules: Python finds it half-initialised in
    ``sys.modules`` and goes on, so a package that re-exports its submodules is not a cycle.
    """
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: use absolute imports (rlkit.demos.x), not relative ones")
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    targets.add(full)
                elif node.module in modules:
                    targets.add(node.module)
    return targets


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: import_targets(path, modules) - {name} for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_cycle_finder_on_hand_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert sorted(find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == [["a", "b"], ["c", "d"]]


def test_import_graph_counts_lazy_and_from_imports(tmp_path):
    modules = {"rlkit.demos.a": tmp_path / "a.py", "rlkit.demos.b": tmp_path / "b.py", "rlkit.demos": tmp_path / "i.py"}
    modules["rlkit.demos.a"].write_text("def f():\n    from rlkit.demos.b import thing\n")
    modules["rlkit.demos.b"].write_text("from rlkit.demos import a\n")
    modules["rlkit.demos"].write_text("")
    graph = import_graph(modules)
    assert graph["rlkit.demos.a"] == {"rlkit.demos.b"} and graph["rlkit.demos.b"] == {"rlkit.demos.a"}
    assert find_cycles(graph) == [["rlkit.demos.a", "rlkit.demos.b"]]


def test_no_import_cycles_in_the_project():
    modules = project_modules()
    assert {"rlkit.demos.record", "rlkit.agents.dagger", "rlkit.envs.factory", "rlkit.cli"} <= set(modules)
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles (break them with a small shared module): " + "; ".join(
        " <-> ".join(c) for c in cycles)
