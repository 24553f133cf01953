"""Reduced precision for attribution and evaluation: the compute dtype (parameters, accumulations, IBA's α
and its Adam state stay float32) and JAX's matmul precision, the same flags on every command.

On GPUs JAX's `default` matmul precision uses TF32 for float32 matmuls (a 10-bit mantissa) and on TPUs
bfloat16 passes; `highest` forces full float32 — what completeness checks against Captum assume.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
MATMUL_PRECISIONS: tuple[str, ...] = ("default", "high", "highest")


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dtype` and `--matmul-precision` for a command that runs a model."""
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="compute dtype (parameters and accumulations stay float32)")
    parser.add_argument("--matmul-precision", default="default", choices=MATMUL_PRECISIONS,
                        help="JAX matmul precision: default (TF32 on GPU, bf16 passes on TPU), high, highest")


def with_dtype(model: Any, dtype: str) -> Any:
    """The same `Model` computing in `dtype` (its float32 parameters are untouched)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    return dataclasses.replace(model, cfg=model.cfg.replace(dtype=dtype))


@contextlib.contextmanager
def matmul_precision(name: str = "default") -> Iterator[None]:
    """`jax.default_matmul_precision` for the block (`default` leaves JAX's choice)."""
    import jax

    if name not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision must be one of {MATMUL_PRECISIONS}, not {name!r}")
    if name == "default":
        yield
        return
    with jax.default_matmul_precision(name):
        yield
