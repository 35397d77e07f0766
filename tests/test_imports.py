"""Which way the modules of nas/ depend (../shared/DESIGN.md): every import counts, those inside
functions included, and the graph they make has no cycle; only the command line imports the
terminal layer (rich and nas's display, views, options); the config schema loads neither torch nor
Optuna, and the trainer never Optuna."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "nas"
TERMINAL = {"nas.cli", "nas.options", "nas.views", "nas.display", "nas.__main__"}


def module_name(path: Path) -> str:
    return "nas" if path.stem == "__init__" else f"nas.{path.stem}"


def loaded(tree: ast.AST):
    """Every node that runs, at some time: all but the body of `if TYPE_CHECKING:` (annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from loaded(node)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function: "nas.search", "torch", "rich"..."""
    found = set()
    for node in loaded(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "nas":  # `from nas import search`: the submodule, where there is one
                found |= {f"nas.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
    return found


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.glob("*.py"))}


def internal(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m in GRAPH and m != name}


def cycle() -> list[str] | None:
    """One cycle of the import graph as the modules along it, or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = "open"
        path.append(m)
        for n in sorted(internal(m)):
            if state.get(n) == "open":
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        path.pop()
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_is_read_whole():
    """The graph holds the modules it should, with the edges that matter to the rules below."""
    assert {"nas", "nas.cli", "nas.search", "nas.study", "nas.objective", "nas.store", "nas.events"} <= set(GRAPH)
    assert "nas.study" in internal("nas.objective") and "nas.objective" in internal("nas.search")
    assert "nas.frontier" in internal("nas.cli")  # an import inside a function counts
    assert "torch" in GRAPH["nas.files"]  # provenance's, inside a function


def test_the_imports_of_nas_form_no_cycle():
    assert cycle() is None, " -> ".join(cycle())


def test_a_cycle_is_found_where_there_is_one(monkeypatch):
    """The check itself can fail: with one edge back up the graph it names the cycle."""
    monkeypatch.setitem(GRAPH, "nas.spec", GRAPH["nas.spec"] | {"nas.search"})
    found = cycle()
    assert found is not None and found[0] == found[-1] and {"nas.spec", "nas.search"} <= set(found)


@pytest.mark.parametrize("name", sorted(set(GRAPH) - TERMINAL))
def test_only_the_command_line_imports_the_terminal_layer(name):
    terminal = {m for m in GRAPH[name] if m.split(".")[0] == "rich" or m in TERMINAL}
    assert not terminal, f"{name} imports {sorted(terminal)}"


@pytest.mark.parametrize("name", ["nas", "nas.spec", "nas.verdict", "nas.space", "nas.events"])
def test_the_schema_loads_neither_torch_nor_optuna(name):
    heavy = {m for m in GRAPH[name] if m.split(".")[0] in ("torch", "optuna", "rich")}
    assert not heavy, f"{name} imports {sorted(heavy)}"


def test_the_trainer_never_imports_optuna():
    for name in ("nas.train", "nas.data", "nas.model", "nas.graphs", "nas.fused"):
        assert not {m for m in GRAPH[name] if m.split(".")[0] == "optuna"}, name
