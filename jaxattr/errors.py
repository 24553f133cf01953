"""Errors a user can cause. The CLI prints them as one line; library callers can catch them."""

import os


class UserError(ValueError):
    """Bad input, config, file or checkpoint: the message says what is wrong and what to do."""


def require(package: str, purpose: str) -> object:
    """Import an optional package where it is used (accelerator images often ship only the JAX stack and
    transformers), or fail in one line that names it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        pip = {"sklearn": "scikit-learn"}.get(package, package)
        raise UserError(f"{purpose} needs the package {package!r}, which is not installed: pip install {pip}") from None


class LazyModule:
    """A module imported on first attribute access through `require` (so `isinstance(x, mod.Class)` works)."""

    def __init__(self, package: str, purpose: str) -> None:
        self._package, self._purpose = package, purpose

    def __getattr__(self, name: str) -> object:
        return getattr(require(self._package, self._purpose), name)


def check_output(path: str | os.PathLike[str], what: str, *, directory: bool = False) -> None:
    """Fail in one line, before any work, when `path` cannot be written: a missing or read-only parent
    directory, a directory where a file goes (or the reverse). `directory`: `path` is a directory that
    may not exist yet (its nearest existing ancestor must be writable; it is created later)."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise UserError(f"{what} {path} is {'not ' if directory else ''}a directory")
    if directory:
        parent = path if path.exists() else next(p for p in path.parents if p.exists())
    else:
        parent = path.parent
        if not parent.is_dir():
            raise UserError(f"{what} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is not a directory")
    try:
        tempfile.TemporaryFile(dir=parent).close()
        if path.exists() and not directory:
            open(path, "ab").close()
    except OSError as e:
        raise UserError(f"{what} {path} cannot be written ({e.strerror or type(e).__name__})") from None
