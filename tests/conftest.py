"""Shared fixtures: the real MiniLM (loaded once) and tiny random encoders of each family."""

from __future__ import annotations

import logging

import jax
import pytest

from jaxattr.models import Model, init_params, load_minilm, tiny_config

logging.getLogger("jaxattr").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def minilm() -> Model:
    """The real all-MiniLM-L6-v2 with a seeded 2-class head (untrained head, real encoder)."""
    return load_minilm(num_labels=2, seed=0)


@pytest.fixture(scope="session")
def tiny_bert():
    """(cfg, params) of a 2-layer hidden-32 random BERT."""
    cfg = tiny_config("bert")
    return cfg, init_params(cfg, jax.random.key(0))
