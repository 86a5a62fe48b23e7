"""The package's import graph: arrows run one way (cli -> jobs -> core -> nothing), with no circle.

Imports inside functions count as arrows too: a lazy import still ties the two modules together.
Imports under ``if TYPE_CHECKING:`` do not: they name a type for the reader and never run."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "eeg2fmri"
# the core: networks, diffusion math, metrics and the data layer, plus two leaves they share
CORE = ("eeg2fmri.nn", "eeg2fmri.diffusion", "eeg2fmri.metrics", "eeg2fmri.data")
LEAVES = ("eeg2fmri.errors", "eeg2fmri.seed")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its body)."""
    names = {module_name(p) for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for p in PKG.rglob("*.py"):
        me = module_name(p)
        out = set()
        tree = ast.parse(p.read_text())
        for guard in [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]:
            guard.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eeg2fmri"):
                for a in node.names:  # `from eeg2fmri import diffusion` names a module
                    out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("eeg2fmri")}
        graph[me] = {m for m in out if m in names and m != me and m != "eeg2fmri"}
    return graph


def in_group(module: str, group: tuple[str, ...]) -> bool:
    return any(module == g or module.startswith(g + ".") for g in group)


def test_the_core_imports_nothing_above_it():
    bad = {
        (m, t)
        for m, targets in imports().items()
        if in_group(m, CORE)
        for t in targets
        if not in_group(t, CORE + LEAVES)
    }
    assert not bad, f"core modules import from above the core: {sorted(bad)}"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` (module -> modules it imports) as a path, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (found := visit(t, [*path, t])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_the_import_graph_has_no_circle():
    circle = find_circle(imports())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_a_circle_is_found():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
