"""jaxattr: attribution (IBA, SIG, IG, ...) and attribution-driven training (AD-DROP, DACT) for
BERT-family encoders, as pure JAX functions."""

import os

from jaxattr import _xla_flags  # noqa: F401  (must run before JAX initialises its CPU backend)

# transformers' "PyTorch was not found" advisory (jaxattr needs only its tokenizers) would come first on
# stderr before every one-line error; a user who wants advisories sets the variable to 0
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
