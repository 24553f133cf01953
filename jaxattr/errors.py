"""Errors a user can cause. The CLI prints them as one line; library callers can catch them."""


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
