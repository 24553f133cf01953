"""CLI subcommands, one module each (see jaxattr/cli.py), and what several of them share."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def scoring_model(args: argparse.Namespace, methods: Sequence[str], command: str) -> Any:
    """The model `jaxattr evaluate` and `jaxattr degradation` score: loaded for `--task`, the target, entities and
    methods checked against it, in `--dtype`, read as `--long` says. Joins a multi-process run first (before any
    device is touched); `--long native` past the model's positions is refused in one line."""
    from jaxattr.errors import UserError
    from jaxattr.evaluation.inputs import check_entity_settings
    from jaxattr.models.loading import load_model, task_model
    from jaxattr.models.precision import with_dtype
    from jaxattr.models.windowed import with_long
    from jaxattr.sharding import initialize_distributed

    initialize_distributed()
    model = task_model(load_model(args.model), args.task, command)
    check_entity_settings(model, args.target, args.entities, methods)
    model = with_long(with_dtype(model, args.dtype), args.long, args.window, args.stride, args.window_pool)
    if args.long == "native" and args.max_length > model.cfg.max_positions:
        raise UserError(f"--long native: --max-length {args.max_length} is more than the model's "
                        f"{model.cfg.max_positions} positions; use --long window or a smaller --max-length")
    return model
