"""jaxattr: attribution (IBA, SIG, IG, ...) and attribution-driven training (AD-DROP, DACT) for
BERT-family encoders, as pure JAX functions."""

__version__ = "0.1.0"
