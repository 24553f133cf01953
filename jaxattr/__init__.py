"""jaxattr: attribution (IBA, SIG, IG, ...) and attribution-driven training (AD-DROP, DACT) for
BERT-family encoders, as pure JAX functions."""

from jaxattr import _xla_flags  # noqa: F401  (must run before JAX initialises its CPU backend)

__version__ = "0.1.0"
