"""The five distributions touch each other, and third-party libraries, only through public names.

The distributions are released apart (a sibling pins ``traffik-core~=X.Y.Z``), so a
sibling that imports a private module of core breaks on a core patch release. And a
private attribute of redis-py, Starlette or FastAPI can vanish in any of their
releases. This test walks the sources of all five (their ``ast``) and fails on:

- **imports**: a module path or an imported name that is private (``_name``, dunders
  excepted) and belongs to another distribution or a third-party library; and a name
  imported from another traffik distribution that its module does not list in
  ``__all__`` (the public surface is what ``__all__`` says);
- **attributes**: ``obj._name`` on anything but ``self``/``cls`` when ``_name`` is not
  defined in the same distribution (as a function, class, assignment target, slot or
  parameter). That is the practical form of "no reaching into someone else's
  privates": an underscore attribute a distribution did not define itself belongs to
  another distribution or to a library. ``getattr(obj, "_name")`` (and ``setattr``,
  ``hasattr``, ``delattr``) on anything but ``self``/``cls`` is always reported: a
  private attribute looked up by name is someone else's, whatever names the
  distribution uses itself (core's own ``_state`` must not excuse reading Starlette's
  ``State._state``).

The checker itself is tested on small bad and good snippets, so it can fail.
"""

from __future__ import annotations

import ast
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Distribution -> the package directory it ships (its sources).
DISTRIBUTIONS: dict[str, Path] = {
    "traffik-core": ROOT / "packages/traffik-core/src/traffik",
    "traffik-redis": ROOT / "packages/traffik-redis/src/traffik/redis",
    "traffik-memcached": ROOT / "packages/traffik-memcached/src/traffik/memcached",
    "traffik-fastapi": ROOT / "packages/traffik-fastapi/src/traffik/fastapi",
    "traffik-starlette": ROOT / "packages/traffik-starlette/src/traffik/starlette",
}
SIBLINGS = ("redis", "memcached", "fastapi", "starlette")

#: Underscore names that are public API by convention (namedtuple's methods).
PUBLIC_UNDERSCORE = frozenset({"_asdict", "_field_defaults", "_fields", "_make", "_replace"})

#: Known violations being removed: (distribution, file name, name). Empty: keep it so.
#: (``test_no_stale_allowance`` fails when an entry outlives its violation.)
ALLOWED: frozenset[tuple[str, str, str]] = frozenset()

_ATTR_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True)
class Violation:
    """One boundary crossing: where, the private name, and what it is."""

    file: str
    line: int
    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


def is_private(name: str) -> bool:
    """``_name`` is private; ``__dunder__`` names are protocol, not private."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def owner(module: str) -> str:
    """The distribution a module belongs to, or the top-level name of a third-party one."""
    parts = module.split(".")
    if parts[0] != "traffik":
        return parts[0]
    if len(parts) > 1 and parts[1] in SIBLINGS:
        return f"traffik-{parts[1]}"
    return "traffik-core"


def module_name(dist: str, path: Path) -> str:
    """The dotted name of the module at ``path`` in ``dist``."""
    root = DISTRIBUTIONS[dist]
    base = ["traffik"] if dist == "traffik-core" else ["traffik", dist.removeprefix("traffik-")]
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(base + parts)


def module_file(module: str) -> Path | None:
    """The source file of a traffik module (``__init__.py`` for a package), if it exists."""
    dist = owner(module)
    if dist not in DISTRIBUTIONS:
        return None
    skip = 1 if dist == "traffik-core" else 2
    base = DISTRIBUTIONS[dist].joinpath(*module.split(".")[skip:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def exported(module: str) -> frozenset[str] | None:
    """The names listed in the ``__all__`` of a traffik module (None if it has none)."""
    path = module_file(module)
    if path is None:
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                value = node.value
                if isinstance(value, (ast.List, ast.Tuple)):
                    return frozenset(
                        e.value
                        for e in value.elts
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    )
    return None


def defined_names(trees: typing.Iterable[ast.AST]) -> frozenset[str]:
    """Every underscore name a distribution defines itself."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(_strings(node.value))
            elif isinstance(node, ast.Call) and _sets_own_attribute(node):
                names.update(_strings(node.args[1]))
    return frozenset(name for name in names if is_private(name))


def _strings(node: ast.expr) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _sets_own_attribute(node: ast.Call) -> bool:
    """``setattr(self, "_x", v)`` or ``object.__setattr__(self, "_x", v)`` (frozen classes)."""
    func = node.func
    named = (isinstance(func, ast.Name) and func.id == "setattr") or (
        isinstance(func, ast.Attribute) and func.attr == "__setattr__"
    )
    return named and len(node.args) >= 2 and _on_self(node.args[0])


def _resolve(module: str | None, level: int, here: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    parts = here.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([module] if module else []))


def _on_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def check_source(
    source: str,
    *,
    dist: str,
    here: str,
    defined: frozenset[str],
    file: str = "<snippet>",
    is_package: bool = False,
) -> list[Violation]:
    """The boundary violations of one module's ``source`` in distribution ``dist``."""
    found: list[Violation] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if owner(alias.name) != dist and any(map(is_private, alias.name.split("."))):
                    found.append(
                        Violation(
                            file, node.lineno, alias.name, f"imports private module {alias.name}"
                        )
                    )
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, here, is_package)
            if owner(module) == dist:
                continue
            if any(map(is_private, module.split("."))):
                found.append(
                    Violation(file, node.lineno, module, f"imports from private module {module}")
                )
                continue
            public = exported(module)
            for alias in node.names:
                if is_private(alias.name):
                    found.append(
                        Violation(
                            file,
                            node.lineno,
                            alias.name,
                            f"imports private name {alias.name} from {module}",
                        )
                    )
                elif (
                    public is not None
                    and alias.name not in public
                    and module_file(f"{module}.{alias.name}") is None
                ):
                    found.append(
                        Violation(
                            file,
                            node.lineno,
                            alias.name,
                            f"imports {alias.name} from {module}, which does not export it "
                            f"(not in its __all__)",
                        )
                    )
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if (
                is_private(name)
                and name not in defined
                and name not in PUBLIC_UNDERSCORE
                and not _on_self(node.value)
            ):
                found.append(
                    Violation(
                        file,
                        node.lineno,
                        name,
                        f"uses .{name}, an attribute {dist} does not define (another "
                        f"distribution's or a library's private)",
                    )
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTR_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            # Stricter than obj._name: a private attribute looked up by name on another
            # object is reaching into someone's internals even when the distribution
            # happens to use the same name itself (core has its own ``_state``).
            name = node.args[1].value
            if is_private(name) and not _on_self(node.args[0]):
                found.append(
                    Violation(
                        file,
                        node.lineno,
                        name,
                        f'{node.func.id}(..., "{name}"): looks up a private attribute of '
                        f"another object (another distribution's or a library's)",
                    )
                )
    return found


def _sources(dist: str) -> list[Path]:
    root = DISTRIBUTIONS[dist]
    files = sorted(root.rglob("*.py"))
    if dist == "traffik-core":
        # Core's tree is the namespace root; sibling checkouts never live under it,
        # but be explicit that only core's own files are walked.
        files = [f for f in files if f.relative_to(root).parts[0] not in SIBLINGS]
    return files


def check_distribution(dist: str) -> list[Violation]:
    """Every boundary violation in the sources of ``dist``."""
    files = _sources(dist)
    texts = {path: path.read_text() for path in files}
    defined = defined_names(ast.parse(text) for text in texts.values())
    found: list[Violation] = []
    for path, text in texts.items():
        found += check_source(
            text,
            dist=dist,
            here=module_name(dist, path),
            defined=defined,
            file=str(path.relative_to(ROOT)),
            is_package=path.name == "__init__.py",
        )
    return found


def _allowed(dist: str, violation: Violation) -> bool:
    return (dist, Path(violation.file).name, violation.name) in ALLOWED


# -- the distributions ---------------------------------------------------------------------


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_distribution_uses_only_public_names_of_others(dist: str) -> None:
    assert _sources(dist), f"no sources found for {dist} under {DISTRIBUTIONS[dist]}"
    found = [v for v in check_distribution(dist) if not _allowed(dist, v)]
    assert not found, f"{dist} crosses a boundary:\n" + "\n".join(map(str, found))


def test_no_stale_allowance() -> None:
    for dist, file_name, name in ALLOWED:
        hits = [
            v for v in check_distribution(dist) if Path(v.file).name == file_name and v.name == name
        ]
        assert hits, (
            f"ALLOWED lists {name} in {dist}'s {file_name}, which no longer uses it: "
            f"remove the entry."
        )


# -- the checker can fail ------------------------------------------------------------------


def _check(source: str, dist: str = "traffik-starlette", defined: str = "") -> list[str]:
    here = "traffik" if dist == "traffik-core" else f"traffik.{dist.removeprefix('traffik-')}.mod"
    names = frozenset(defined.split()) if defined else frozenset()
    return [v.name for v in check_source(source, dist=dist, here=here, defined=names)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from traffik._keys import ROUTE_KEY_SCOPE", ["traffik._keys"]),
        ("from traffik.strategies._base import Strategy", ["traffik.strategies._base"]),
        ("import traffik.backends._context", ["traffik.backends._context"]),
        ("from traffik.backends._context import initialize_by_policy as init", None),
        ("from traffik.strategies import _meter", ["_meter"]),
        ("from traffik.redis._scripts import LuaScript", ["traffik.redis._scripts"]),
        ("from starlette._utils import is_async_callable", ["starlette._utils"]),
        ("from traffik.throttles import BaseThrottle, BUCKET_STUFF", ["BUCKET_STUFF"]),
        ("state._state.get('x')", ["_state"]),
        ("websocket._send", ["_send"]),
        ("strategy._check_exact(rate, 1)", ["_check_exact"]),
        ("getattr(conn, '_writer', None)", ["_writer"]),
        ("hasattr(conn, '_reader')", ["_reader"]),
        ("getattr(app.state, '_state', None)", ["_state"]),
        ("request.scope._x.y", ["_x"]),
    ],
)
def test_checker_catches(source: str, expected: list[str] | None) -> None:
    found = _check(source)
    if expected is None:
        assert found, f"the checker missed a private import in {source!r}"
    else:
        assert found == expected, f"{source!r}: expected {expected}, got {found}"


@pytest.mark.parametrize(
    ("source", "dist", "defined"),
    [
        ("from traffik.strategies import Strategy, decode_state", "traffik-redis", ""),
        ("from traffik.keys import ROUTE_KEY_SCOPE", "traffik-starlette", ""),
        ("from traffik import strategies", "traffik-fastapi", ""),
        ("from traffik.starlette._responses import handle_exception", "traffik-starlette", ""),
        ("from . import _responses", "traffik-starlette", ""),
        ("from traffik._keys import digest", "traffik-core", ""),
        ("self._send(message)", "traffik-starlette", ""),
        ("cls._cache.clear()", "traffik-core", ""),
        ("backend._turns.get(key)", "traffik-memcached", "_turns"),
        ("getattr(obj, '__name__', None)", "traffik-core", ""),
        ("decision._replace(allowed=False)", "traffik-core", ""),
        ("import redis.asyncio", "traffik-redis", ""),
    ],
)
def test_checker_allows(source: str, dist: str, defined: str) -> None:
    assert _check(source, dist, defined) == []


def test_a_private_attribute_looked_up_by_name_is_reported_even_if_defined_here() -> None:
    """Core has its own ``_state``; reading Starlette's ``State._state`` is still reported."""
    assert _check("getattr(app.state, '_state', None)", "traffik-core", "_state") == ["_state"]
    assert _check("app.state._state", "traffik-core", "_state") == []  # the practical limit


def test_defined_names_collects_what_a_distribution_defines() -> None:
    tree = ast.parse(
        "class _A:\n"
        "    __slots__ = ('_slot',)\n"
        "    def _m(self, _arg):\n"
        "        self._attr = 1\n"
        "_module_level = 2\n"
        "import x as _alias\n"
        "object.__setattr__(self, '_frozen', 1)\n"
        "getattr(conn, '_writer', None)\n"
    )
    assert defined_names([tree]) >= {"_A", "_slot", "_m", "_arg", "_attr", "_module_level"}
    assert {"_alias", "_frozen"} <= defined_names([tree])
    assert "_writer" not in defined_names([tree]), "reading an attribute does not define it"
