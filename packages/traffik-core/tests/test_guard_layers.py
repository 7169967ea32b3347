"""The failure guard's imports run one way (an import-linter contract, written over ``ast``).

The guard lives in ``traffik._guard``; ``traffik.failures`` is its public face.
Read from the source, not from ``sys.modules``: an import inside a function or
under ``if TYPE_CHECKING`` counts too, where this file says so.
"""

from __future__ import annotations

import ast
import pathlib
import typing

import traffik

SRC = pathlib.Path(traffik.__file__).parent

#: The guard's modules, bottom first: each imports only modules before it.
GUARD_LAYERS = [
    "traffik._guard.types",
    "traffik._guard.circuit",
    "traffik._guard.policy",
    "traffik._guard.blockcache",
    "traffik._guard.inflight",
    "traffik._guard.watch",
    "traffik._guard.emit",
    "traffik._guard.answer",
    "traffik._guard.guard",
    "traffik._guard.registry",
]
#: What the guard may import from the rest of traffik (the modules below it).
GUARD_BELOW = {
    "traffik",
    "traffik.decisions",
    "traffik.events",
    "traffik.exceptions",
    "traffik.rates",
    "traffik.strategies._base",  # for annotations only (checked below)
}
#: Who may import the guard's modules directly.
GUARD_USERS = {
    "traffik.failures",
    "traffik.backends.base",
    "traffik.backends.inmemory",
    # The adjustment path (refunds, charge_when, settlements) reports to the same
    # breakers and emits through the same helpers as decisions.
    "traffik._charges",
}
#: Modules on the per-request path: no imports inside their functions.
REQUEST_PATH = [
    "traffik.failures",
    "traffik.backends.base",
    "traffik.backends.inmemory",
    "traffik.backends._context",
    *GUARD_LAYERS,
]

Kind = typing.Literal["runtime", "local", "typing"]


def module_name(path: pathlib.Path) -> str:
    parts = ["traffik", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> list[tuple[str, Kind]]:
    """The traffik modules ``name`` imports, and how."""
    tree = ast.parse(MODULES[name].read_text())
    found: list[tuple[str, Kind]] = []

    def target(module: str, alias: str | None) -> str:
        if alias is not None and f"{module}.{alias}" in MODULES:
            return f"{module}.{alias}"  # from traffik import events
        return module

    def visit(node: ast.AST, kind: Kind) -> None:
        for child in ast.iter_child_nodes(node):
            inner = kind
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "typing")
                for stmt in child.orelse:
                    visit_stmt(stmt, kind)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "local" if kind == "runtime" else kind
            visit_stmt(child, inner)

    def visit_stmt(node: ast.AST, kind: Kind) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "traffik":
                    found.append((alias.name, kind))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "traffik"
        ):
            for alias in node.names:
                found.append((target(node.module, alias.name), kind))
        visit(node, kind)

    visit(tree, "runtime")
    return found


def test_the_guard_is_one_package_importing_only_downwards() -> None:
    assert {m for m in MODULES if m.startswith("traffik._guard.")} == set(GUARD_LAYERS)
    for i, name in enumerate(GUARD_LAYERS):
        allowed = GUARD_BELOW | set(GUARD_LAYERS[:i])
        for module, kind in imports_of(name):
            assert module in allowed, f"{name} imports {module} ({kind}): not below it"
            if module == "traffik.strategies._base":
                assert kind == "typing", f"{name} imports {module} at run time"


def test_only_the_public_face_and_the_backend_contract_use_the_guard() -> None:
    for name in MODULES:
        if name.startswith("traffik._guard"):
            continue
        for module, kind in imports_of(name):
            if module.startswith("traffik._guard"):
                assert name in GUARD_USERS, f"{name} imports {module} ({kind})"


def test_the_request_path_imports_nothing_inside_its_functions() -> None:
    for name in REQUEST_PATH:
        local = [module for module, kind in imports_of(name) if kind == "local"]
        assert not local, f"{name} imports {local} inside a function"


def test_what_the_guard_pulls_in_has_no_import_cycle_at_run_time() -> None:
    graph = {
        name: {m for m, kind in imports_of(name) if kind != "typing" and m in MODULES}
        for name in MODULES
    }
    # Every module traffik.failures imports at run time, directly or not: the backends,
    # the strategies, the guard and what they import. (The former circle ran through
    # backends.base, failures, the guard, strategies and the in-memory backend.)
    reach: set[str] = set()
    todo = ["traffik.failures"]
    while todo:
        name = todo.pop()
        if name not in reach:
            reach.add(name)
            todo.extend(graph[name])
    assert {"traffik.backends.base", "traffik.backends.inmemory"} <= reach
    assert "traffik.strategies.fixed_window" in reach
    done: set[str] = set()
    path: list[str] = []

    def walk(name: str) -> None:
        if name in done:
            return
        assert name not in path, "import cycle: " + " -> ".join([*path[path.index(name) :], name])
        path.append(name)
        for module in sorted(graph[name]):
            walk(module)
        path.pop()
        done.add(name)

    for name in sorted(reach):
        walk(name)


def test_the_layer_check_sees_imports_of_every_kind() -> None:
    # failures imports the guard at run time and the backend contract for annotations.
    kinds = dict(imports_of("traffik.failures"))
    assert kinds["traffik._guard.guard"] == "runtime"
    assert kinds["traffik.backends.base"] == "typing"
    assert ("traffik.backends.base", "typing") in imports_of("traffik.strategies._base")
