"""The train state (a pytree) and the optimizer: AdamW without decay on biases and LayerNorm,
linear warm-up then linear decay, optional global-norm clipping.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Params = Any


class TrainState(NamedTuple):
    """Everything that changes during training: a plain pytree, so it jits, shards and checkpoints as is.

    `rng` is a raw uint32[2] key (`jax.random.PRNGKey`) so it checkpoints like any other array.
    """

    params: Params
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer updates done
    rng: jax.Array


def decay_mask(params: Params) -> Params:
    """True where weight decay applies: every leaf except biases and LayerNorm scales/biases."""

    def keep(path: tuple[Any, ...], _leaf: Any) -> bool:
        names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
        if names and names[-1] in ("bias", "scale"):
            return False
        return not any("norm" in n or n == "ln" or n.startswith("layernorm") for n in names)

    return jax.tree_util.tree_map_with_path(keep, params)


def lr_schedule(learning_rate: float, total_steps: int, warmup_steps: int, kind: str = "linear") -> optax.Schedule:
    """0 -> learning_rate over `warmup_steps`, then linearly to 0 at `total_steps` (`linear`), or held at
    learning_rate (`constant`: the AD-DROP reference code's schedule)."""
    warmup_steps = max(0, min(warmup_steps, total_steps))
    if kind == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(learning_rate)
        return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps),
                                     optax.constant_schedule(learning_rate)], [warmup_steps])
    decay = optax.linear_schedule(learning_rate, 0.0, max(1, total_steps - warmup_steps))
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), decay], [warmup_steps])


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.01,
                   max_grad_norm: float | None = 1.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, schedule: str = "linear") -> optax.GradientTransformation:
    """AdamW (decoupled weight decay, none on bias/LayerNorm) with warm-up + linear decay (or constant)."""
    tx = optax.adamw(lr_schedule(learning_rate, total_steps, warmup_steps, schedule), b1=b1, b2=b2, eps=eps,
                     weight_decay=weight_decay, mask=decay_mask)
    if max_grad_norm:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx


def init_state(params: Params, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state at step 0 (params are copied into float32)."""
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.PRNGKey(seed))
