"""The layout's rules, read from the source with `ast`: no import circle, Dagster-free core, small files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "synid_assets"
CORE_SUBPACKAGES = {"spec", "config", "generation", "analysis", "filtering", "dataset", "batch", "quality"}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports(path: Path, module: str, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported synid_assets module, names taken from it, line) for every import, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("synid_assets")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("synid_assets"):
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in known]
            found += [(sub, [], node.lineno) for sub in submodules]
            plain = [name for name in names if f"{target}.{name}" not in known]
            if plain or not submodules:
                found.append((target, plain, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _names, _line in _imports(path, name, known):
            if target not in known:
                continue
            graph[name].add(target)
            # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer already lives there.
            parts = target.split(".")
            for depth in range(1, len(parts)):
                ancestor = ".".join(parts[:depth])
                if ancestor in known and not name.startswith(ancestor + ".") and name != ancestor:
                    graph[name].add(ancestor)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_graph_has_no_circle() -> None:
    graph = _graph()
    assert sum(len(targets) for targets in graph.values()) > 50, "the graph reader found too few imports"
    cycle = _find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_is_split_by_concept_and_dagster_free() -> None:
    core = PACKAGE_DIR / "core"
    subpackages = {p.name for p in core.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages >= CORE_SUBPACKAGES
    known = _modules()
    for name, path in known.items():
        if not name.startswith("synid_assets.core"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            for module in modules:
                assert not module.startswith("dagster"), f"{path}:{node.lineno}: core/ must not import dagster"
                assert not module.startswith("synid_assets.defs"), f"{path}:{node.lineno}: core/ imports defs/"


def test_no_module_imports_another_modules_private_names() -> None:
    known = _modules()
    offenders = []
    for name, path in known.items():
        for target, names, line in _imports(path, name, known):
            if target == name:
                continue
            offenders += [f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {target}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_file_is_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE_DIR.parent)} has {lines} lines (limit {MAX_LINES})"
