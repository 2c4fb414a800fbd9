"""The architecture: import-linter's contracts (pyproject.toml [tool.importlinter]) hold, and they bite;
no import cycles inside the project."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = ROOT / ".ci" / "lint-imports"


# ---------------------------------------------------------------------------------------------
# The layers: import-linter's contracts in pyproject.toml, on full dotted names
# ---------------------------------------------------------------------------------------------

def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LINT_IMPORTS": str(Path(sys.executable).parent / "lint-imports")}
    return subprocess.run(["bash", str(LINT_IMPORTS), str(source_root)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_the_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def copy_of_the_tree(tmp_path: Path) -> Path:
    for folder in ("rlkit", "agents", "envs", "demos"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("file, probe, broken", [
    ("rlkit/config.py", "import rlkit.agents.dqn", "rlkit.config -> rlkit.agents.dqn"),          # core -> learner
    ("rlkit/nets.py", "from rlkit.apps import cli", "rlkit.nets -> rlkit.apps.cli"),             # nn -> application
    ("rlkit/buffers.py", "from rlkit.envs import make_env", "rlkit.buffers -> rlkit.envs"),     # data -> envs
    ("agents/sac.py", "from rlkit.agents.ddpg import td_target", "rlkit.agents.sac -> rlkit.agents.ddpg"),  # learners
    ("agents/dqn.py", "from rlkit.apps.cli import main", "rlkit.agents.dqn -> rlkit.apps.cli"),  # learner -> app
    ("demos/record.py", "import rlkit.agents.bc", "rlkit.demos.record -> rlkit.agents.bc"),     # demos -> learner
    ("envs/factory.py", "from rlkit.apps import doctor", "rlkit.envs.factory -> rlkit.apps.doctor"),  # envs -> app
    ("rlkit/engine/off_policy.py", "import rlkit.agents.dqn", "rlkit.engine.off_policy -> rlkit.agents.dqn"),  # engine
    ("rlkit/fast/presample.py", "from rlkit.engine import common", "rlkit.fast.presample -> rlkit.engine.common"),
    ("envs/vector.py", "from rlkit.engine import common", "rlkit.envs.vector -> rlkit.engine.common"),  # envs -> engine
])
def test_the_contracts_bite(tmp_path, file, probe, broken):
    tree = copy_of_the_tree(tmp_path)
    path = tree / file
    path.write_text(path.read_text() + f"\n\ndef _probe():\n    {probe}\n")  # a lazy import counts too
    proc = lint_imports(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert broken in proc.stdout and "0 broken" not in proc.stdout, proc.stdout


def test_every_core_module_is_under_a_contract():
    """A new module directly in rlkit/ is core, nn or data: it must join the "core" contract's list,
    and a new folder in rlkit/ must join the layers."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    listed = set(contracts["core"]["source_modules"])
    flat = {f"rlkit.{p.stem}" for p in (ROOT / "rlkit").glob("*.py") if p.stem != "__init__"}
    flat.add("rlkit.fast")  # the speed paths: a package below the engine, under the same contract as the core
    assert flat == listed, f"not in the core contract: {sorted(flat - listed)}; gone: {sorted(listed - flat)}"
    folders = {p.name for p in (ROOT / "rlkit").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    layered = {"apps", "engine", "fast"}
    assert folders == layered, f"place the new package in a layer of pyproject.toml: {sorted(folders - layered)}"
    assert contracts["layers"]["layers"][:3] == ["rlkit.apps", "rlkit.agents", "rlkit.engine"]


# ---------------------------------------------------------------------------------------------
# Short functions where the algorithms and the engine are read
# ---------------------------------------------------------------------------------------------

LONGEST_FUNCTION = 60  # lines, def to last line


def long_functions(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_long_functions_in_the_agents_core_and_engine():
    """Agents, the core/nn/data modules, the engine and the fast paths: no function over 60 lines."""
    paths = [*(ROOT / "agents").glob("*.py"), *(ROOT / "rlkit").glob("*.py"), *(ROOT / "rlkit" / "engine").glob("*.py"),
             *(ROOT / "rlkit" / "fast").glob("*.py")]
    assert len(paths) > 30
    assert long_functions(paths) == []


def env_steps_in(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Calls ``<name>.step(...)`` or ``<name>.reset(...)`` on anything named like an env (env, envs, venv, ...)."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("step", "reset"):
                receiver = ast.unparse(node.func.value)
                if "env" in receiver.split(".")[-1].lower():
                    found.append(f"{path.relative_to(root)}:{node.lineno} {ast.unparse(node.func)}")
    return found


def test_no_agent_steps_an_env():
    """The loops over env steps live in the engine (rlkit/engine); an agent declares what its loop needs."""
    assert env_steps_in(sorted((ROOT / "agents").glob("*.py"))) == []
    assert env_steps_in(sorted((ROOT / "rlkit" / "engine").glob("*.py")))  # the check sees the engine's


def test_the_env_step_check_finds_one(tmp_path):
    (tmp_path / "agent.py").write_text("def loop(envs, optimizer):\n    optimizer.step()\n    envs.step(0)\n")
    assert env_steps_in([tmp_path / "agent.py"], root=tmp_path) == ["agent.py:3 envs.step"]


def test_the_length_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST_FUNCTION))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions([tmp_path / "long.py"], root=tmp_path) == ["long.py:5 long (61 lines)"]


# ---------------------------------------------------------------------------------------------
# No import cycles inside the project, lazy (function-level) imports included
# ---------------------------------------------------------------------------------------------

PACKAGE_DIRS = {"rlkit": ROOT / "rlkit", "rlkit.apps": ROOT / "rlkit" / "apps",
                "rlkit.engine": ROOT / "rlkit" / "engine", "rlkit.fast": ROOT / "rlkit" / "fast",
                "rlkit.agents": ROOT / "agents",
                "rlkit.envs": ROOT / "envs", "rlkit.demos": ROOT / "demos"}


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
    assert {"rlkit.demos.record", "rlkit.agents.dagger", "rlkit.envs.factory", "rlkit.apps.cli"} <= set(modules)
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles (break them with a small shared module): " + "; ".join(
        " <-> ".join(c) for c in cycles)
