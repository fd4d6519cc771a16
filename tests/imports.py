"""Every import of our packages, read with ``ast`` (never executed), and the walls of
issue 11 as findings, for ``tests/test_architecture.py``.

Sans-IO but for ``read_tree``: ``Tree.parse`` takes the sources (path → text) and each
rule takes a ``Tree`` and returns its findings, each a ``file:line: <statement>`` with,
for a wall crossed transitively, the imports that lead there. An import counts wherever
it is written: at module level, inside a function (run later, still a dependency) and
under ``if TYPE_CHECKING:`` (a dependency of the types: the next refactor makes it real).
"""

from __future__ import annotations

import ast
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

OURS = ("jointreview", "signaling", "media_server", "recording", "web_client", "bench")

MODULE, FUNCTION, TYPE_CHECKING = "module", "function", "type_checking"


@dataclass(frozen=True)
class Import:
    """One module imported by one statement (``import a, b`` makes two)."""

    importer: str  # the importing module, dotted
    path: str  # its file, relative to the root
    line: int
    text: str  # the statement, on one line
    target: str  # the module imported, absolute and dotted
    names: tuple[str, ...]  # the names a ``from`` import takes from ``target``
    scope: str  # MODULE, FUNCTION or TYPE_CHECKING

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


@dataclass(frozen=True)
class Finding:
    """One offence: where, what, and (for a transitive wall) the imports leading there."""

    path: str
    line: int
    text: str
    via: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"{self.path}:{self.line}: {self.text}"
        return "\n".join([head, *(f"    via {step}" for step in self.via)])

    @staticmethod
    def of(imp: Import, via: Iterable[Import] = ()) -> Finding:
        return Finding(imp.path, imp.line, imp.text, tuple(step.where for step in via))


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    is_package: bool
    source: str
    tree: ast.Module


def read_tree(root: Path, packages: Iterable[str] = OURS) -> dict[str, str]:
    """The source of every ``.py`` file under ``root/<package>``, by relative path."""
    sources = {}
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            sources[file.relative_to(root).as_posix()] = file.read_text(encoding="utf-8")
    return sources


def within(name: str, prefixes: Iterable[str]) -> bool:
    """``name`` is one of ``prefixes`` or a submodule of one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def top(name: str) -> str:
    return name.partition(".")[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class Tree:
    """Our modules, parsed, and every import they make."""

    def __init__(self, modules: Mapping[str, Module]) -> None:
        self.modules = dict(modules)
        self.imports = [imp for m in self.modules.values() for imp in _imports(m, self.modules)]
        self._by_importer: dict[str, list[Import]] = defaultdict(list)
        for imp in self.imports:
            self._by_importer[imp.importer].append(imp)

    @classmethod
    def parse(cls, sources: Mapping[str, str]) -> Tree:
        modules = {}
        for path, source in sources.items():
            parts = path.removesuffix(".py").split("/")
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package, source, ast.parse(source, path))
        return cls(modules)

    @property
    def packages(self) -> set[str]:
        return {top(name) for name in self.modules}

    def imports_of(self, module: str) -> list[Import]:
        return self._by_importer.get(module, [])

    def under(self, prefixes: Iterable[str]) -> list[str]:
        prefixes = tuple(prefixes)
        return sorted(name for name in self.modules if within(name, prefixes))

    def loaded_by(self, target: str) -> list[str]:
        """Our modules that importing ``target`` runs: it and every package above it."""
        parts = target.split(".")
        found = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
        return [name for name in found if name in self.modules]


def _imports(module: Module, modules: Mapping[str, Module]) -> Iterator[Import]:
    for node, scope in _walk(module.tree, MODULE):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _import(module, node, alias.name, (), scope)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.level, node.module)
            names = tuple(alias.name for alias in node.names)
            # ``from package import module`` imports that module; any other name comes
            # from ``base`` itself.
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            plain = tuple(n for n in names if f"{base}.{n}" not in modules)
            for sub in submodules:
                yield _import(module, node, sub, (), scope)
            if plain or not submodules:
                yield _import(module, node, base, plain, scope)
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            arg = node.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            yield _import(module, node, arg.value, (), scope)


def _dynamic_import(node: ast.Call) -> bool:
    """``importlib.import_module("x")`` or ``__import__("x")`` with a literal name."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    return (
        named
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _import(
    module: Module, node: ast.AST, target: str, names: tuple[str, ...], scope: str
) -> Import:
    line = getattr(node, "lineno", 0)
    return Import(module.name, module.path, line, ast.unparse(node), target, names, scope)


def _walk(node: ast.AST, scope: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node under ``node`` with the scope it runs in (a function wins over
    TYPE_CHECKING: both mean "not at import time", the function says more)."""
    for child in ast.iter_child_nodes(node):
        yield child, scope
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, FUNCTION)
        elif isinstance(child, ast.If) and scope == MODULE and _is_type_checking(child.test):
            yield child.test, scope
            for stmt in child.body:
                yield stmt, TYPE_CHECKING
                yield from _walk(stmt, TYPE_CHECKING)
            for stmt in child.orelse:
                yield stmt, scope
                yield from _walk(stmt, scope)
        else:
            yield from _walk(child, scope)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: Module, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


# -- walls -----------------------------------------------------------------------------


def reach(tree: Tree, start: Iterable[str], banned: Iterable[str]) -> list[Finding]:
    """Every import of a ``banned`` module (or a submodule of one) by a ``start`` module
    or by any module of ours they import, directly or not; each with the chain of
    imports from a start module to it."""
    banned = tuple(banned)
    via: dict[str, tuple[Import, ...]] = {name: () for name in sorted(start)}
    queue = deque(via)
    findings = []
    while queue:
        name = queue.popleft()
        for imp in tree.imports_of(name):
            if within(imp.target, banned):
                findings.append(Finding.of(imp, via[name]))
                continue
            for dep in tree.loaded_by(imp.target):
                if dep not in via:
                    via[dep] = (*via[name], imp)
                    queue.append(dep)
    return findings


def package_edges(tree: Tree) -> dict[tuple[str, str], list[Import]]:
    """Imports from one of our top-level packages into another, by (from, to)."""
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    ours = tree.packages
    for imp in tree.imports:
        edge = (top(imp.importer), top(imp.target))
        if edge[1] in ours and edge[0] != edge[1]:
            edges[edge].append(imp)
    return dict(sorted(edges.items()))


def cycles(tree: Tree) -> list[str]:
    """Every simple cycle between top-level packages, with one import per edge."""
    edges = package_edges(tree)
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        graph[a].append(b)
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in graph[path[-1]]:
            if nxt == path[0]:
                found.append(path)
            elif nxt > path[0] and nxt not in path:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    out = []
    for cycle in found:
        hops = list(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
        lines = [" -> ".join([*cycle, cycle[0]])]
        for a, b in hops:
            first = min(edges[a, b], key=lambda i: (i.path, i.line))
            lines.append(f"    {a} -> {b}: {first.where}")
        out.append("\n".join(lines))
    return out


def disallowed_edges(tree: Tree, allowed: Mapping[str, Iterable[str]]) -> list[Finding]:
    """Every import from one top-level package into another that ``allowed`` (package →
    the packages it may import) does not list; a package missing from it may import none."""
    return [
        Finding.of(imp)
        for (a, b), imps in package_edges(tree).items()
        if b not in set(allowed.get(a, ()))
        for imp in imps
    ]


def importers(
    tree: Tree, package: str, allowed: Iterable[str] = (), lazily: bool = True
) -> list[Finding]:
    """Imports of ``package`` from outside it, except by the ``allowed`` modules, and those
    only inside a function when ``lazily``."""
    allowed = set(allowed)
    return [
        Finding.of(imp)
        for imp in tree.imports
        if within(imp.target, (package,))
        and not within(imp.importer, (package,))
        and not (imp.importer in allowed and (imp.scope == FUNCTION or not lazily))
    ]


def private_registry(source: str, suffix: str = "PRIVATE_NAMES") -> list[tuple[str, str]]:
    """The (module, dotted attribute) pairs of the module-level tuples named ``*suffix``
    in ``source`` (the adapter's registries of the private names it touches, one per
    section: ``PRIVATE_NAMES``, ``BENCH_PRIVATE_NAMES``, ...); [] when there is none.
    Each is a literal: a tuple or list of pairs, or of calls with two string arguments
    (a NamedTuple), or a sum of those and earlier module-level tuples."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        try:
            seen[target.id] = _pairs(value, seen)
        except ValueError:
            if target.id.endswith(suffix):
                raise  # (another constant, not a registry, is none of our business)
    return [pair for name in sorted(seen) if name.endswith(suffix) for pair in seen[name]]


def _pairs(node: ast.expr, seen: Mapping[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _pairs(node.left, seen) + _pairs(node.right, seen)
    if isinstance(node, ast.Name) and node.id in seen:
        return list(seen[node.id])
    if isinstance(node, ast.Tuple | ast.List):
        pairs = []
        for item in node.elts:
            if isinstance(item, ast.Starred):
                pairs += _pairs(item.value, seen)
                continue
            args = item.elts if isinstance(item, ast.Tuple) else getattr(item, "args", [])
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            if len(values) != 2 or not all(isinstance(v, str) for v in values):
                raise ValueError(f"line {item.lineno}: not a (module, attribute) pair of strings")
            pairs.append((str(values[0]), str(values[1])))
        return pairs
    raise ValueError(f"line {node.lineno}: a private-name registry must be a literal tuple")


def private_access(
    tree: Tree,
    adapter: str,
    registry: Iterable[tuple[str, str]],
    submodules: Mapping[str, Iterable[str]],
) -> list[Finding]:
    """Outside the ``adapter`` module, any reach into the internals of the packages in
    ``submodules`` (package → its submodules' names, e.g. aiortc → rtp, codecs, ...):
    - an import of a submodule (``import aiortc.rtp``, ``from aiortc.rtp import X``,
      ``from aiortc import rtp``) or of a private name (``from aiortc import _x``);
    - an attribute of the package that is a submodule or private (``aioice.turn.X``);
    - an attribute, import or getattr/setattr/hasattr/delattr string of a private name
      that ``registry`` lists (the adapter's own record of what it touches)."""
    subs = {package: set(names) for package, names in submodules.items()}
    registered = _registered(registry)
    findings = []
    for imp in tree.imports:
        if imp.importer == adapter or top(imp.target) not in subs:
            continue
        package = top(imp.target)
        if imp.target != package or any(
            n in subs[package] or _private(n) or n in registered for n in imp.names
        ):
            findings.append(Finding.of(imp))
    for module in tree.modules.values():
        if module.name != adapter:
            findings += _private_attributes(module, subs, registered)
    return sorted(set(findings), key=lambda f: (f.path, f.line, f.text))


def _registered(registry: Iterable[tuple[str, str]]) -> set[str]:
    """The private names in the registry's dotted attributes, and, for ``Owner.__x``,
    the mangled ``_Owner__x`` that code outside the class has to write."""
    names = set()
    for _, dotted in registry:
        parts = dotted.split(".")
        for owner, part in zip(["", *parts], parts, strict=False):
            if _private(part):
                names.add(part)
                if part.startswith("__") and owner:
                    names.add(f"_{owner.lstrip('_')}{part}")
    return names


def _own_attributes(tree: ast.Module) -> set[str]:
    """Attributes the module's classes define: methods and ``self.x = ...`` targets.
    ``self._closing`` is then our own, whatever name aiortc also uses."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            own |= {
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                own.add(node.attr)
    return own


def _private_attributes(
    module: Module, subs: Mapping[str, set[str]], registered: set[str]
) -> list[Finding]:
    own = _own_attributes(module.tree)
    aliases: dict[str, str] = {}  # local name → the package it is bound to
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if top(alias.name) in subs:
                    local = alias.asname or top(alias.name)
                    aliases[local] = alias.name if alias.asname else top(alias.name)
    wrapped = set(aliases)  # local names of the wrapped packages and their classes
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and top(node.module or "") in subs:
            wrapped |= {alias.asname or alias.name for alias in node.names}
    lines = module.source.splitlines()
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ClassDef) and any(_root(b) in wrapped for b in node.bases):
            # A subclass of theirs overriding a private method of theirs.
            found += [
                Finding(module.path, n.lineno, lines[n.lineno - 1].strip())
                for n in node.body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name in registered
            ]
        if isinstance(node, ast.Attribute | ast.Call) and _reaches_in(
            node, aliases, subs, registered - own if _on_self(node) else registered
        ):
            found.append(Finding(module.path, node.lineno, lines[node.lineno - 1].strip()))
    return found


def _root(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _on_self(node: ast.Attribute | ast.Call) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("self", "cls")
    )


def _reaches_in(
    node: ast.Attribute | ast.Call,
    aliases: Mapping[str, str],
    subs: Mapping[str, set[str]],
    registered: set[str],
) -> bool:
    """``package.submodule`` or ``package._private`` on a name bound to a wrapped
    package; or a registered private name as an attribute or a getattr-like string."""
    if isinstance(node, ast.Attribute):
        if node.attr in registered:
            return True
        base = node.value
        package = aliases.get(base.id) if isinstance(base, ast.Name) else None
        if package is None or package not in subs:
            return False
        return node.attr in subs[package] or _private(node.attr)
    args = node.args
    return (
        isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(args) >= 2
        and isinstance(args[1], ast.Constant)
        and args[1].value in registered
    )


# -- sizes -----------------------------------------------------------------------------


def long_modules(tree: Tree, limit: int) -> list[Finding]:
    return [
        Finding(m.path, 1, f"{len(m.source.splitlines())} lines (at most {limit})")
        for m in sorted(tree.modules.values(), key=lambda m: m.path)
        if len(m.source.splitlines()) > limit
    ]


def long_functions(tree: Tree, prefixes: Iterable[str], limit: int) -> list[Finding]:
    prefixes = tuple(prefixes)
    found = []
    for name in tree.under(prefixes):
        module = tree.modules[name]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    text = f"def {node.name}: {length} lines (at most {limit})"
                    found.append(Finding(module.path, node.lineno, text))
    return sorted(found, key=lambda f: (f.path, f.line))
