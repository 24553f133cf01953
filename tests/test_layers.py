"""The package's layer order (docs/ARCHITECTURE.md, "Layers"): a module imports only from its own package or
from layers before its own, checked on every import statement, lazy ones inside functions included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "jaxattr"
LAYERS: dict[str, int] = {"errors": 0, "sharding": 0, "types": 0, "_xla_flags": 0, "models": 1, "data": 1,
                          "attribution": 2, "viz": 2, "evaluation": 3, "training": 3, "commands": 4, "demo": 4,
                          "cli": 5, "__init__": 5}


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
