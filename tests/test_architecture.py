"""The core's shape, held by tests: no import cycles between its modules, no
module past the size a reader can take in, and bundled plugins that use only
the plugin API (``sluiceway.api``), so a third-party plugin can do what they do."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
PLUGIN_SOURCES = sorted(
    path for path in (ROOT / "plugins").glob("*/sluiceway_*/**/*.py")
    if ".egg-info" not in str(path)
)
# The plugin API, and the fixtures for plugin tests.
ALLOWED = {"sluiceway.api", "sluiceway.testing"}
# Past this a module is usually two.
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["sluiceway", *parts])


def _imports(path: Path, module: str) -> set[str]:
    """Every ``sluiceway`` module ``path`` imports when it runs, at the top or
    inside a function (what runs later still closes a cycle); ``if
    TYPE_CHECKING:`` blocks do not count, since they never run."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if not is_package:
                        base = base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    found.add(f"{target}.{alias.name}")
                    found.add(target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text()).body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            target for target in _imports(path, name)
            # A package's own __init__ runs first anyway: not an edge back.
            if target in modules and target != name and not name.startswith(target + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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
            connect(node)
    return found


def test_the_core_has_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_core_module_is_too_long_to_read() -> None:
    long = {
        str(path.relative_to(ROOT)): lines for path in CORE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_bundled_plugins_import_only_the_plugin_api() -> None:
    assert len(PLUGIN_SOURCES) > 30
    outside: list[str] = []
    for path in PLUGIN_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if (name == "sluiceway" or name.startswith("sluiceway.")) and name not in ALLOWED:
                    outside.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert outside == []
