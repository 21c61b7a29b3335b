"""The layout's promises, read from the source: dependencies point one way, and nothing cycles.

Layers, bottom up: the error tree and pure helpers; infrastructure (configuration,
connections, pools, state, readers, the local compute); the session; the views
(``ui/``), the pytest plugin, the demo and the package facade. A module imports
its own layer or lower, with two named exceptions: the session's lazy view hooks.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import neon_notebook

ROOT = pathlib.Path(neon_notebook.__file__).parent
PACKAGE = ROOT.name

# The only upward imports: Session.widget() and Session._repr_mimebundle_ draw the model
# with a view, imported when a notebook asks for it; and session._progress draws a read's
# progress bar (``progress="auto"`` is the reads' default, so no caller above can choose it).
ALLOWED_UPWARD = {
    ("neon_notebook.session", "neon_notebook.ui.widgets"),
    ("neon_notebook.session", "neon_notebook.ui.progress"),
}


def _name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> int:
    rest = module.split(".")[1:]
    if rest in ([], ["__main__"], ["demo"]) or rest[0] in ("ui", "testing"):
        return 3
    if rest[0] in ("session", "default", "_connect", "_http_session"):
        return 2
    if rest[0] in ("errors", "_durations", "_sqltext"):
        return 0
    return 1


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, at its top or inside functions."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = {id(n) for top in ast.walk(tree) if _type_checking_only(top) for n in ast.walk(top)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif (node.module or "").split(".")[0] == PACKAGE:
                base = node.module.split(".")
            else:
                continue
            for alias in node.names:
                child = ".".join([*base, alias.name])
                found.add(child if child in MODULES else ".".join(base))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    found.discard(module)
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_graph_is_read():
    assert "neon_notebook._config" in GRAPH["neon_notebook.session"]
    assert len(MODULES) > 30


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module]
                    if _layer(t) > _layer(module) and (module, t) not in ALLOWED_UPWARD)
    assert not upward, f"{module} (layer {_layer(module)}) imports a higher layer: {upward}"


def test_no_import_cycle():
    """Depth-first search over every import, lazy ones included, but the allowed upward hooks."""
    edges = {m: GRAPH[m] - {t for (f, t) in ALLOWED_UPWARD if f == m} for m in GRAPH}
    # The package facade imports everything lazily by design; modules below it must not
    # need it, so an edge into it counts, one out of it does not.
    edges[PACKAGE] = set()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_does_two_jobs_by_size():
    """A module past ~500 lines is a smell; the ones allowed past it say why here."""
    allowed = {}
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text().splitlines())) > 500 and m not in allowed}
    assert not long, f"modules past 500 lines: {long}"
