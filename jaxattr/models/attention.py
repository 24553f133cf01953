"""Scaled dot-product attention without the probabilities, fast on every backend.

On GPU/TPU this is `jax.nn.dot_product_attention` (cuDNN flash attention where available). On CPU,
XLA's batched attention materialises the full [B, heads, T, T] scores, softmax and their gradients
in main memory and runs at a fraction of the matmul rate; here the (batch, head) pairs are instead
walked in small blocks under `lax.map`, so each block's scores stay in cache, and a custom VJP
recomputes the block's probabilities from the saved log-sum-exp in the backward pass (the
flash-attention recipe) rather than storing them. The backward pass keeps its [T, T] matrices
keys-major, which spares XLA:CPU two transposing copies of them. Both give the same values to
float32 rounding (tests/test_attention.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxattr.types import Array

# Up to this many tokens XLA's own attention is faster on CPU than the blocked kernel, whose loop and
# transposes then cost more than the [T, T] passes it saves (gradient per layer, 100 x 28 tokens:
# 17 ms vs 31 ms; at 40-64 tokens the kernel is ahead: 43 vs 47 ms, 44 vs 55 ms).
SHORT_LENGTH = 32

# Names of the CPU kernel's own residuals, kept by `cpu_gradient_policy`: recomputing them would
# rerun the whole attention forward.
RESIDUAL_NAMES = ("cpu_attention_out", "cpu_attention_lse")

# Scores of one block ((batch, head) pairs x T x T float32) are kept near this size: small enough to
# stay in a CPU's L2/L3 cache, large enough that the per-block matmuls and the loop overhead pay off
# (measured on a 2-core EPYC: 2 MiB is 10-15% faster than 6 MiB at 512 tokens, the same at 128-256).
_BLOCK_BYTES = 2 * 2**20


def block_rows(pairs: int, length: int) -> int:
    """(batch, head) pairs per CPU attention block: the largest divisor of `pairs` whose scores fit
    `_BLOCK_BYTES`."""
    limit = max(1, _BLOCK_BYTES // (length * length * 4))
    return max(d for d in range(1, min(pairs, limit) + 1) if pairs % d == 0)


def _blocks(x: Array, rows: int) -> Array:
    return x.reshape(x.shape[0] // rows, rows, *x.shape[1:])


def _heads_first(x: Array) -> Array:  # [b, T, h, d] <-> [b, h, T, d]
    return x.transpose(0, 2, 1, 3)


def _block_forward(q: Array, k: Array, v: Array, bias: Array) -> tuple[Array, Array]:
    s = jnp.matmul(q * (1 / math.sqrt(q.shape[-1])), k.swapaxes(-1, -2)) + bias
    m = jax.lax.stop_gradient(s.max(-1, keepdims=True))
    e = jnp.exp(s - m)
    total = e.sum(-1, keepdims=True)
    out = jnp.matmul(e, v) / total
    return out, (m + jnp.log(total))[..., 0]


def _block_backward(q: Array, k: Array, v: Array, bias: Array, out: Array, lse: Array, d_out: Array
                    ) -> tuple[Array, Array, Array, Array]:
    # Everything [T, T] is computed transposed (keys x queries): XLA:CPU contracts only the rows of a
    # matmul's right-hand side in place and copies any other operand layout, so in this orientation
    # d_v = p^T d_out and d_k = d_s^T q read p^T and d_s^T as they are; only d_q needs the transpose.
    scale = 1 / math.sqrt(q.shape[-1])
    t = lambda x: x.swapaxes(-1, -2)
    p_t = jnp.exp(jnp.matmul(k, t(q * scale)) + t(bias) - lse[..., None, :])
    d_p_t = jnp.matmul(v, t(d_out))
    d_s_t = p_t * (d_p_t - (d_out * out).sum(-1)[..., None, :])
    d_v = jnp.matmul(p_t, d_out)
    d_k = jnp.matmul(d_s_t, q) * scale
    d_q = t(jnp.matmul(t(k), d_s_t)) * scale
    d_bias = t(d_s_t).sum(axis=tuple(i for i in range(1, 4) if bias.shape[i] == 1), keepdims=True)
    return d_q, d_k, d_v, d_bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _cpu_attention(q: Array, k: Array, v: Array, bias: Array, rows: int) -> Array:
    return _cpu_forward(q, k, v, bias, rows)[0]


def _cpu_forward(q: Array, k: Array, v: Array, bias: Array, rows: int):
    out, lse = jax.lax.map(lambda a: _block_forward(*a), tuple(_blocks(x, rows) for x in (q, k, v, bias)))
    out = checkpoint_name(out.reshape(q.shape), RESIDUAL_NAMES[0])
    lse = checkpoint_name(lse.reshape(q.shape[0], *lse.shape[2:]), RESIDUAL_NAMES[1])
    return out, (q, k, v, bias, out, lse)


def _cpu_backward(rows: int, residuals, d_out: Array):
    q, k, v, bias, out, lse = residuals
    grads = jax.lax.map(lambda a: _block_backward(*a), tuple(_blocks(x, rows) for x in (*residuals, d_out)))
    return tuple(g.reshape(x.shape) for g, x in zip(grads, (q, k, v, bias)))


_cpu_attention.defvjp(_cpu_forward, _cpu_backward)


def cpu_attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    """Blocked attention with a recomputing VJP. q, k, v: [B, T, heads, d]; bias: [B, 1|heads, 1|T, T]."""
    b, t, h, _ = q.shape
    dtype = q.dtype
    # (batch, head) pairs are the blocked axis, so a block can be a few heads of one long sequence
    bias = jnp.broadcast_to(bias, (b, h) + bias.shape[2:]).astype(jnp.float32).reshape(b * h, 1, *bias.shape[2:])
    q, k, v = (_heads_first(x.astype(jnp.float32)).reshape(b * h, 1, t, -1) for x in (q, k, v))
    out = _cpu_attention(q, k, v, bias, block_rows(b * h, t))
    return _heads_first(out.reshape(b, h, t, -1)).astype(dtype)


def _xla_attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype))


def attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    """softmax(q k^T / sqrt(d) + bias) v, [B, T, heads, d]: XLA's fused attention, except on CPU for
    sequences longer than `SHORT_LENGTH`, which get the blocked kernel."""
    if q.shape[1] <= SHORT_LENGTH:
        return _xla_attention(q, k, v, bias)
    return jax.lax.platform_dependent(q, k, v, bias, cpu=cpu_attention, default=_xla_attention)


def cpu_gradient_policy(length: int) -> Callable[..., bool] | None:
    """A `jax.checkpoint` policy for differentiating blocks that use the CPU kernel, else None.

    It keeps the dense layers' outputs and the kernel's residuals and recomputes LayerNorm, GELU and
    the rest: XLA:CPU maps a fresh temporary buffer per call, and every stored byte is a page fault,
    so storing half as much is ~10% faster at 256 tokens and the same at 512 (benchmarks/RESULTS.md).
    """
    if length <= SHORT_LENGTH or jax.default_backend() != "cpu":
        return None
    policies = jax.checkpoint_policies
    return policies.save_from_both_policies(policies.dots_with_no_batch_dims_saveable,
                                            policies.save_only_these_names(*RESIDUAL_NAMES))
