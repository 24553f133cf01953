"""Scaled dot-product attention without the probabilities, fast on every backend.

On GPU/TPU this is `jax.nn.dot_product_attention` (cuDNN flash attention where available). On CPU,
XLA's batched attention materialises the full [B, heads, T, T] scores, softmax and their gradients
in main memory and runs at a fraction of the matmul rate; here the batch is instead walked in small
blocks under `lax.map`, so each block's scores stay in cache, and a custom VJP recomputes the block's
probabilities from the saved log-sum-exp in the backward pass (the flash-attention recipe) rather
than storing them. Both give the same values to float32 rounding (see tests/test_encoder.py).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array

# Scores of one block (rows x heads x T x T float32) are kept near this size: small enough to stay
# in a CPU's L2/L3 cache, large enough that the per-block matmuls are efficient.
_BLOCK_BYTES = 6 * 2**20


def block_rows(batch: int, heads: int, length: int) -> int:
    """Rows per CPU attention block: the largest divisor of `batch` whose scores fit `_BLOCK_BYTES`."""
    limit = max(1, _BLOCK_BYTES // (heads * length * length * 4))
    return max(d for d in range(1, min(batch, limit) + 1) if batch % d == 0)


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
    scale = 1 / math.sqrt(q.shape[-1])
    p = jnp.exp(jnp.matmul(q * scale, k.swapaxes(-1, -2)) + bias - lse[..., None])
    d_v = jnp.matmul(p.swapaxes(-1, -2), d_out)
    d_p = jnp.matmul(d_out, v.swapaxes(-1, -2))
    d_s = p * (d_p - (d_out * out).sum(-1, keepdims=True))
    d_q = jnp.matmul(d_s, k) * scale
    d_k = jnp.matmul(d_s.swapaxes(-1, -2), q) * scale
    d_bias = d_s.sum(axis=tuple(i for i in range(1, 4) if bias.shape[i] == 1), keepdims=True)
    return d_q, d_k, d_v, d_bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _cpu_attention(q: Array, k: Array, v: Array, bias: Array, rows: int) -> Array:
    return _cpu_forward(q, k, v, bias, rows)[0]


def _cpu_forward(q: Array, k: Array, v: Array, bias: Array, rows: int):
    out, lse = jax.lax.map(lambda a: _block_forward(*a), tuple(_blocks(x, rows) for x in (q, k, v, bias)))
    out = out.reshape(q.shape)
    return out, (q, k, v, bias, out, lse.reshape(q.shape[0], *lse.shape[2:]))


def _cpu_backward(rows: int, residuals, d_out: Array):
    q, k, v, bias, out, lse = residuals
    grads = jax.lax.map(lambda a: _block_backward(*a), tuple(_blocks(x, rows) for x in (*residuals, d_out)))
    return tuple(g.reshape(x.shape) for g, x in zip(grads, (q, k, v, bias)))


_cpu_attention.defvjp(_cpu_forward, _cpu_backward)


def cpu_attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    """Blocked attention with a recomputing VJP. q, k, v: [B, T, heads, d]; bias: [B, 1|heads, 1|T, T]."""
    b, t, h, _ = q.shape
    dtype = q.dtype
    bias = jnp.broadcast_to(bias, (b,) + bias.shape[1:]).astype(jnp.float32)
    q, k, v = (_heads_first(x.astype(jnp.float32)) for x in (q, k, v))  # once, outside the block loop
    out = _cpu_attention(q, k, v, bias, block_rows(b, h, t))
    return _heads_first(out).astype(dtype)


def attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    """softmax(q k^T / sqrt(d) + bias) v, [B, T, heads, d]; the CPU kernel on CPU, XLA's fused one elsewhere."""
    return jax.lax.platform_dependent(
        q, k, v, bias,
        cpu=cpu_attention,
        default=lambda q, k, v, bias: jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype)))
