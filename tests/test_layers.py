"""The package's layer order (docs/ARCHITECTURE.md, "Layers"): a module imports only from its own package or
from layers before its own, checked on every import statement, lazy ones inside functions included; no two
modules import each other, directly or around a circle (inside a package too), and no module imports another
module's private (`_name`) names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxattr"
LAYERS: dict[str, int] = {"errors": 0, "sharding": 0, "types": 0, "_xla_flags": 0, "models": 1, "data": 1,
                          "attribution": 2, "viz": 2, "evaluation": 3, "training": 3, "ray": 3, "commands": 4,
                          "demo": 4, "cli": 5, "__init__": 5}


def _part(module: str) -> str:
    """jaxattr.models.hf -> models; jaxattr -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    pkg = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        pkg = pkg.rsplit(".", 1)[0] + ".__init__"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "jaxattr"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:-node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "jaxattr":
                out += [(node.lineno, mod if mod != "jaxattr" else f"jaxattr.{a.name}") for a in node.names]
    return out


def violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent)
        own = _part(".".join(rel.with_suffix("").parts)) if len(rel.parts) > 1 else "__init__"
        if own not in LAYERS:
            bad.append(f"{rel}: package {own!r} has no layer in tests/test_layers.py")
            continue
        for line, mod in _imports(path):
            target = _part(mod)
            if target == own:
                continue
            if target not in LAYERS:
                bad.append(f"{rel}:{line} imports {mod}, which has no layer")
            elif LAYERS[target] >= LAYERS[own]:
                bad.append(f"{rel}:{line} ({own}, layer {LAYERS[own]}) imports {mod} (layer {LAYERS[target]})")
    return bad


def test_every_import_follows_the_layer_order():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    src = "def f():\n    from jaxattr.training import trainer\n    import jaxattr.cli\n"
    path = ROOT / "models" / "_layer_probe.py"
    path.write_text(src)
    try:
        found = [v for v in violations() if "_layer_probe" in v]
    finally:
        path.unlink()
    assert len(found) == 2 and "jaxattr.training" in found[0] and "jaxattr.cli" in found[1]


# ----------------------------------------------------------------------------------------------
# Import cycles and private names, on the module graph: every `import`/`from ... import` statement of every
# module under jaxattr/ (module level and inside functions alike), `from P import m` counted as an import of
# the submodule P.m when there is one. The parent packages Python runs first are not edges.


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """Dotted module name -> source of every module under `root` (a package under its own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.read_text()
    return out


def module_imports(sources: dict[str, str]) -> dict[str, list[tuple[int, str, str | None]]]:
    """Module -> (line, imported module, name taken from it or None) for each of its imports of `sources`'
    modules (ones of other packages left out): `from P import m` of a submodule is (line, "P.m", None)."""
    top = {name.split(".")[0] for name in sources}
    out: dict[str, list[tuple[int, str, str | None]]] = {}
    for name, src in sources.items():
        pkg = name if _is_package(sources, name) else name.rpartition(".")[0]  # where `.` points
        found: list[tuple[int, str, str | None]] = []
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    mod = alias.name
                    while mod and mod not in sources:  # `import a.b.c` of a name inside a.b: a.b
                        mod = mod.rpartition(".")[0]
                    if mod:
                        found.append((node.lineno, mod, None))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                if mod.split(".")[0] not in top:
                    continue
                for alias in node.names:
                    if f"{mod}.{alias.name}" in sources:
                        found.append((node.lineno, f"{mod}.{alias.name}", None))
                    elif mod in sources:
                        found.append((node.lineno, mod, alias.name))
        out[name] = found
    return out


def _is_package(sources: dict[str, str], name: str) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def import_cycles(sources: dict[str, str] | None = None) -> list[str]:
    """One line per circle of imports: `a:LINE -> b:LINE -> ... -> a`, the shortest through each strongly
    connected group's first module (Tarjan's algorithm), lazy imports inside functions included."""
    imports = module_imports(module_sources() if sources is None else sources)
    edges = {a: {} for a in imports}
    for a, found in imports.items():
        for line, b, _ in found:
            if b != a:
                edges[a].setdefault(b, line)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    cycles = []
    for group in sorted(groups):
        start, members = group[0], set(group)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first: the shortest way back to `start` inside the group
            v = queue.pop(0)
            for w in sorted(edges[v]):
                if w == start:
                    path = paths[v] + [start]
                    hops = [f"{a}:{edges[a][b]}" for a, b in zip(path, path[1:])]
                    cycles.append(" -> ".join(hops + [start]))
                    queue = []
                    break
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def private_imports(sources: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(importing module, "module.name") for each private name (`_x`, not a dunder, not a submodule) that a
    module imports from another."""
    imports = module_imports(module_sources() if sources is None else sources)
    return sorted({(a, f"{b}.{n}") for a, found in imports.items() for _, b, n in found
                   if n and n.startswith("_") and not n.startswith("__") and b != a})


# Private names imported across modules: none. (The check fails on any, and on an entry here that no longer
# occurs: keep this set for a deliberate, commented exception.)
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str]] = set()


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_another_modules_private_names():
    found = set(private_imports())
    new, gone = sorted(found - KNOWN_PRIVATE_IMPORTS), sorted(KNOWN_PRIVATE_IMPORTS - found)
    assert not new, "private names imported from another module:\n" + "\n".join(f"{a}: {n}" for a, n in new)
    assert not gone, "no longer imported: remove from KNOWN_PRIVATE_IMPORTS:\n" + "\n".join(
        f"{a}: {n}" for a, n in gone)


def test_the_shared_modules_import_none_built_on_them():
    """The training config knows no method (they register their sections); ModernBERT's modules take what
    they share with the BERT layout from primitives.py/attention.py, not from encoder.py, which picks them."""
    imports = module_imports(module_sources())
    assert [m for _, m, _ in imports["jaxattr.training.config"] if m.startswith("jaxattr.training")] == []
    assert [m for _, m, _ in imports["jaxattr.models.modernbert"] if m == "jaxattr.models.encoder"] == []
    families = {f"jaxattr.models.{m}" for m in ("encoder", "modernbert", "deberta")}
    low = ("jaxattr.models.primitives", "jaxattr.models.attention")
    assert [m for name in low for _, m, _ in imports[name] if m in families] == []


def test_the_cycle_and_private_checks_see_lazy_and_relative_imports():
    sources = {
        "pkg": "from pkg.a import f\n",
        "pkg.a": "from pkg import b\n\ndef f():\n    return b.g()\n",
        "pkg.b": "def g():\n    from .a import f\n    return f\n",  # lazy and relative: still a circle
        "pkg.c": "import pkg.a\nfrom pkg.b import _h\n",  # imports into the circle; a private name
        "pkg.sub": "from pkg.sub import d\n",
        "pkg.sub.d": "def x():\n    from .. import c\n",  # `..` of a subpackage's module
        "other": "from pkg.c import pkg\n",
    }
    assert import_cycles(sources) == ["pkg.a:1 -> pkg.b:2 -> pkg.a"]
    assert private_imports(sources) == [("pkg.c", "pkg.b._h")]
    sources["pkg.c"] += "def y():\n    from pkg.sub.d import x\n"
    assert import_cycles(sources) == ["pkg.a:1 -> pkg.b:2 -> pkg.a", "pkg.c:4 -> pkg.sub.d:2 -> pkg.c"]


TESTS = Path(__file__).resolve().parent
# `import test_x` / `from test_x import ...` as a statement or in a subprocess worker's source string
TEST_IMPORT = re.compile(r"^\s*(?:from|import)\s+(test_\w+)", re.M)


def other_test_imports(path: Path) -> list[str]:
    """The other tests/test_*.py modules that `path` imports (shared helpers belong in helpers.py/conftest.py)."""
    names = {p.stem for p in TESTS.glob("test_*.py")} - {path.stem}
    src = path.read_text()
    line = lambda m: src.count("\n", 0, m.start()) + 1
    return [f"{path.name}:{line(m)} imports {m.group(1)}" for m in TEST_IMPORT.finditer(src) if m.group(1) in names]


def test_no_test_module_imports_another(tmp_path):
    bad = [v for path in sorted(TESTS.glob("test_*.py")) for v in other_test_imports(path)]
    assert not bad, "\n".join(bad)
    probe = tmp_path / "test_probe.py"
    probe.write_text('import os\nfrom test_gradients import x\nW = """\n    import test_layers\n"""\n')
    assert [v.split(" ", 1)[0] for v in other_test_imports(probe)] == ["test_probe.py:2", "test_probe.py:4"]


def test_scripts_import_only_public_names():
    """eval/, train/ and scripts/ use the library as a user would: no `_name` from jaxattr."""
    found, repo = [], ROOT.parent
    folders = [repo / f for f in ("eval", "train", "scripts")]
    assert all(f.is_dir() for f in folders)
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jaxattr":
                    found += [f"{path.relative_to(repo)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not found, found
