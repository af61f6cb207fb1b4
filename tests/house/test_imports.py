"""The package's import graph has no cycles, and no package imports one above it.

Imports inside functions and under TYPE_CHECKING count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "unisub_hub"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module of the package that ``path`` imports, wherever the import statement stands."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        # A module's own parent packages are imported before it anyway: no edge to them.
        found |= {
            target for target in targets if target in modules and target != name and not name.startswith(target + ".")
        }
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) for path in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (ignoring a package's import of its own submodules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if target.startswith(node + "."):  # a package re-exporting its submodules is no cycle
                continue
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if state.get(target) is None and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": {"q"}, "q": set()}) is None


LAYERS = [
    ["cli"],
    ["examples"],
    ["web"],
    ["serve"],
    ["pipeline"],
    ["adapt"],
    ["hub"],
    ["registry", "io"],
    ["format"],
    ["merge"],
    ["engine"],
    ["testing"],
    ["hf", "extras"],
    ["errors", "constants"],
]
"""The house, top floor first: a package imports only packages on lower floors (and itself).
``__init__`` and ``__main__`` stand above everything."""


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _floor(package: str) -> int:
    for number, floor in enumerate(LAYERS):
        if package in floor:
            return number
    raise AssertionError(f"package {package!r} is on no floor of LAYERS: add it where it belongs")


def test_no_package_imports_a_package_above_it():
    upward = []
    for module, targets in _graph().items():
        source = _package(module)
        if source in (None, "__main__"):
            continue
        for target in targets:
            destination = _package(target)
            if destination is None or destination == source:
                continue
            if _floor(destination) <= _floor(source):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(upward))


def test_the_format_layer_reads_and_writes_artifacts_only():
    """No file of the format layer touches the registry home (the verified-id memory is the registry's)."""
    touching = [p.name for p in (PACKAGE / "format").rglob("*.py") if "unisub_home" in p.read_text()]
    assert touching == []
