"""Scaled dot-product attention without the probabilities, fast on every backend.

`attention(q, k, v, bias=None, *, key_mask=None, local_window=None)` takes the padding as a [B, Tk] key
mask apart from any further additive bias, and a local window (query i sees key j where |i - j| <= w:
ModernBERT's local blocks) as the int w, built from positions (iota) where it is used, never as a [T, T]
constant; `attention_implementation` decides at trace time, for the default backend (`current_backend()`:
`jax.default_backend()`, CUDA told from ROCm), what runs:

  * "cudnn": CUDA, a padding-only call (`bias=None`, no window), fp16/bf16 inputs, compute capability 8.0 or
    later, head dim a multiple of 8 and at most 128 (256 from 9.0). cuDNN's flash attention,
    `jax.nn.dot_product_attention(implementation="cudnn")`, with the padding given as key lengths
    (`padded_attention` moves each row's attended keys to the front, so any mask is a prefix): no
    [T, T] array is built. The call is wrapped so that it batches under `vmap` (JAX's cuDNN attention
    does not by itself) and its backward pass recomputes the forward. Should cuDNN still refuse the
    call at trace time, XLA's runs instead (logged at debug level).
  * "xla": short calls cuDNN does not take: float32 inputs on CUDA (cuDNN takes fp16/bf16 only), a call
    with an additive bias (DeBERTa's relative-position terms, AD-DROP's `attn_bias`) or a local window
    (ModernBERT's blocks: this JAX's cuDNN attention refuses a two-sided window without a causal mask),
    ROCm and TPU, up to `ACCELERATOR_SHORT_LENGTH` tokens; CPU up to `SHORT_LENGTH`.
    `jax.nn.dot_product_attention` with the padding (and the window, from iota) folded into one additive
    bias, the default implementation, which builds the float32 [B, heads, T, T] scores.
  * "blocked": every longer call, on CPU past `SHORT_LENGTH` tokens, on accelerators (when cuDNN does not
    take it) past `ACCELERATOR_SHORT_LENGTH`. XLA's batched attention materialises the full
    [B, heads, T, T] scores, softmax and their gradients, memory that grows with the square of the input
    whatever `--tokens-per-batch` says; here the (batch, head) pairs are instead walked in blocks under
    `lax.map`, and a custom VJP recomputes the block's probabilities from the saved log-sum-exp in the
    backward pass (the flash-attention recipe) rather than storing them. Once one pair's [T, T] scores
    outgrow the block budget, a block is one pair's queries in chunks (the backward pass sums d_k, d_v over
    them), so no block grows with the input; under a local window each chunk's keys are its window's
    alone, and the window's mask is built per chunk from iota, in the forward and in the recomputing
    backward. The padding stays a [B*heads, 1, 1, T] bias. The budget is the backend's: on CPU
    (`block_plan`) blocks stay in cache (2 MiB), and the backward pass keeps its [T, T] matrices keys-major,
    which spares XLA:CPU two transposing copies of them; on accelerators (`accelerator_plan`) blocks are as
    large as `_ACCELERATOR_BLOCK_BYTES` (256 MiB) for large matmuls, and a windowed call always goes in
    query chunks, so a local block costs T * (rows + 2w), not T^2. (On CPU `lax.platform_dependent` still
    picks XLA's attention should this be lowered for another platform.)

All give the same values up to rounding (tests/test_attention.py; the key-lengths form against the
additive bias in tests/test_attention_impl.py, through XLA, since cuDNN needs a GPU; the accelerator plan,
run on CPU, in tests/test_local_attention.py). cuDNN and the accelerator plan have not been timed on a GPU.

`attend`, what every family's block calls (encoder.py's BERT-layout block, DeBERTa's through it,
ModernBERT's), comes here only when nobody needs the probabilities; when someone does
(`return_attention`, `attn_perturb`, attention dropout, `cls_only`) it computes them explicitly.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxattr.models.config import EncoderConfig
from jaxattr.models.primitives import mask_value
from jaxattr.types import Array

Planner = Callable[..., tuple[int, int, int, int | None]]  # block_plan's signature

log = logging.getLogger(__name__)

# Up to this many tokens XLA's own attention is faster on CPU than the blocked kernel, whose loop and
# transposes then cost more than the [T, T] passes it saves (gradient per layer, 100 x 28 tokens:
# 17 ms vs 31 ms; at 40-64 tokens the kernel is ahead: 43 vs 47 ms, 44 vs 55 ms).
SHORT_LENGTH = 32

# Off CPU, XLA's attention up to this many tokens, the blocked kernel beyond: at 1,024 tokens a 12-head
# sequence's float32 scores are 48 MiB a layer (and 4x that at 2,048), held once more for the backward pass.
ACCELERATOR_SHORT_LENGTH = 1024

# Names of the blocked kernel's own residuals, kept by `cpu_gradient_policy`: recomputing them would
# rerun the whole attention forward.
RESIDUAL_NAMES = ("blocked_attention_out", "blocked_attention_lse")

# Scores of one block ((batch, head) pairs x T x T float32) are kept near this size: small enough to
# stay in a CPU's L2/L3 cache, large enough that the per-block matmuls and the loop overhead pay off
# (measured on a 2-core EPYC: 2 MiB is 10-15% faster than 6 MiB at 512 tokens, the same at 128-256).
_BLOCK_BYTES = 2 * 2**20
# Accelerators: a block's scores up to this size (large matmuls; the bound on the kernel's memory), and the
# query rows of one chunk under a local window.
_ACCELERATOR_BLOCK_BYTES = 256 * 2**20
_WINDOW_ROWS = 512


def block_rows(pairs: int, length: int) -> int:
    """(batch, head) pairs per CPU attention block: the largest divisor of `pairs` whose scores fit
    `_BLOCK_BYTES`."""
    limit = max(1, _BLOCK_BYTES // (length * length * 4))
    return max(d for d in range(1, min(pairs, limit) + 1) if pairs % d == 0)


def block_plan(pairs: int, length: int, window: int | None = None, query_bias: bool = False
               ) -> tuple[int, int, int, int | None]:
    """How the CPU kernel walks one call: (pairs per block, query rows per chunk, keys per chunk, window).

    While one pair's [T, T] scores fit `_BLOCK_BYTES`, a block is `block_rows` whole pairs (one chunk of all
    T queries and keys). Beyond, a block is one pair cut into chunks of queries whose scores fit the budget,
    so no block's scores grow with the input: all T keys per chunk, or, under a local `window` (and a key-only
    bias), the chunk's rows plus `window` keys either side."""
    if window is not None and window >= length - 1:
        window = None  # the window covers every key
    if length * length * 4 <= _BLOCK_BYTES:
        return block_rows(pairs, length), length, length, window
    span = lambda rows: length if window is None or query_bias else min(length, rows + 2 * window)
    rows = max(1, _BLOCK_BYTES // (4 * length))
    while rows < length and (rows + 1) * span(rows + 1) * 4 <= _BLOCK_BYTES:
        rows += 1  # only under a window: its keys are fewer than T
    n = -(-length // rows)
    rows = -(-length // n)  # the same number of chunks, as even as they go
    return 1, rows, span(rows), window


def accelerator_plan(pairs: int, length: int, window: int | None = None, query_bias: bool = False
                     ) -> tuple[int, int, int, int | None]:
    """`block_plan` for accelerators: (pairs per block, query rows per chunk, keys per chunk, window) with
    blocks up to `_ACCELERATOR_BLOCK_BYTES`. Under a window (and a key-only bias) queries go in chunks of
    about `_WINDOW_ROWS` rows, each over its rows plus `window` keys either side; else all T keys, in query
    chunks only once one pair's [T, T] scores outgrow the budget. A block holds as many pairs as fit."""
    budget = _ACCELERATOR_BLOCK_BYTES
    if window is not None and window >= length - 1:
        window = None  # the window covers every key
    if window is not None and not query_bias and _WINDOW_ROWS + 2 * window < length:
        rows = _WINDOW_ROWS
    elif length * length * 4 <= budget:
        rows = length
    else:
        rows = max(1, budget // (4 * length))
    n = -(-length // rows)
    rows = -(-length // n)  # the same number of chunks, as even as they go
    span = length if window is None or query_bias or rows == length else min(length, rows + 2 * window)
    fit = max(1, budget // (rows * span * 4))
    return max(d for d in range(1, min(pairs, fit) + 1) if pairs % d == 0), rows, span, window


def _blocks(x: Array, rows: int) -> Array:
    return x.reshape(x.shape[0] // rows, rows, *x.shape[1:])


def _heads_first(x: Array) -> Array:  # [b, T, h, d] <-> [b, h, T, d]
    return x.transpose(0, 2, 1, 3)


def window_mask(queries: int, keys: int, window: int | Array, q0: int | Array = 0, k0: int | Array = 0) -> Array:
    """[queries, keys] bool, true where |i - j| <= window for query positions q0.. and key positions k0..:
    built from iota inside the traced function, never a [T, T] constant."""
    i = q0 + jax.lax.broadcasted_iota(jnp.int32, (queries, keys), 0)
    j = k0 + jax.lax.broadcasted_iota(jnp.int32, (queries, keys), 1)
    return jnp.abs(i - j) <= window


def apply_window(bias: Array, inside: Array) -> Array:
    """`bias` where `inside`, else at most `mask_value`: the window masks like the padding (combined by min,
    as HF's ModernBERT does, so a further bias added to the padding cannot overflow)."""
    return jnp.where(inside, bias, jnp.minimum(bias, mask_value(jnp.float32)))


def _block_forward(q: Array, k: Array, v: Array, bias: Array) -> tuple[Array, Array]:
    s = jnp.matmul(q * (1 / math.sqrt(q.shape[-1])), k.swapaxes(-1, -2)) + bias
    m = jax.lax.stop_gradient(s.max(-1, keepdims=True))
    e = jnp.exp(s - m)
    total = e.sum(-1, keepdims=True)
    out = jnp.matmul(e, v) / total
    return out, (m + jnp.log(total))[..., 0]


def _block_backward(q: Array, k: Array, v: Array, bias: Array, out: Array, lse: Array, d_out: Array,
                    bias_shape: tuple[int, ...] | None = None) -> tuple[Array, Array, Array, Array]:
    # Everything [T, T] is computed transposed (keys x queries): XLA:CPU contracts only the rows of a
    # matmul's right-hand side in place and copies any other operand layout, so in this orientation
    # d_v = p^T d_out and d_k = d_s^T q read p^T and d_s^T as they are; only d_q needs the transpose.
    # `bias_shape`: the shape d_bias reduces to (default: the bias's own, before any window broadcast it).
    scale = 1 / math.sqrt(q.shape[-1])
    t = lambda x: x.swapaxes(-1, -2)
    p_t = jnp.exp(jnp.matmul(k, t(q * scale)) + t(bias) - lse[..., None, :])
    d_p_t = jnp.matmul(v, t(d_out))
    d_s_t = p_t * (d_p_t - (d_out * out).sum(-1)[..., None, :])
    d_v = jnp.matmul(p_t, d_out)
    d_k = jnp.matmul(d_s_t, q) * scale
    d_q = t(jnp.matmul(t(k), d_s_t)) * scale
    shape = bias.shape if bias_shape is None else bias_shape
    d_bias = t(d_s_t).sum(axis=tuple(i for i in range(1, 4) if shape[i] == 1), keepdims=True)
    return d_q, d_k, d_v, d_bias


def _chunk(plan: tuple[int, int, int, int | None], length: int, i: Array | int, q: Array, bias: Array):
    """Chunk i of a block: (first query, first key, its queries, its keys' bias with the window applied, the
    bias's own shape). `q` and `bias` (when it has a query axis) are padded to whole chunks."""
    _, rows, span, window = plan
    q0 = i * rows
    k0 = 0 if span == length else jnp.clip(q0 - window, 0, length - span)
    qc = jax.lax.dynamic_slice_in_dim(q, q0, rows, axis=2)
    bc = bias if bias.shape[2] == 1 else jax.lax.dynamic_slice_in_dim(bias, q0, rows, axis=2)
    bc = jax.lax.dynamic_slice_in_dim(bc, k0, span, axis=3)
    shape = bc.shape
    if window is not None:
        bc = apply_window(bc, window_mask(rows, span, window, q0, k0))
    return q0, k0, qc, bc, shape


def _pad_queries(x: Array, padded: int, axis: int = 2) -> Array:
    extra = padded - x.shape[axis]
    return x if extra == 0 else jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])


def _pair_forward(plan, q: Array, k: Array, v: Array, bias: Array) -> tuple[Array, Array]:
    """One block ([rows, 1, T, d] ...): its query chunks in turn."""
    length, rows, span = q.shape[2], plan[1], plan[2]
    if rows == length and span == length:  # one chunk: the whole block
        return _block_forward(q, k, v, bias if plan[3] is None else _chunk(plan, length, 0, q, bias)[3])
    n = -(-length // rows)
    q, bias = _pad_queries(q, n * rows), (bias if bias.shape[2] == 1 else _pad_queries(bias, n * rows))

    def one(i):
        _, k0, qc, bc, _ = _chunk(plan, length, i, q, bias)
        kc, vc = (jax.lax.dynamic_slice_in_dim(x, k0, span, axis=2) for x in (k, v))
        return _block_forward(qc, kc, vc, bc)

    out, lse = jax.lax.map(one, jnp.arange(n))  # [n, rows_pairs, 1, chunk, d], [n, rows_pairs, 1, chunk]
    out = jnp.moveaxis(out, 0, 2).reshape(*out.shape[1:3], n * rows, -1)[:, :, :length]
    lse = jnp.moveaxis(lse, 0, 2).reshape(*lse.shape[1:3], n * rows)[:, :, :length]
    return out, lse


def _pair_backward(plan, q: Array, k: Array, v: Array, bias: Array, out: Array, lse: Array, d_out: Array):
    """One block's gradients, chunk by chunk: d_q per chunk, d_k and d_v (and a key-only d_bias) summed."""
    length, rows, span = q.shape[2], plan[1], plan[2]
    if rows == length and span == length:
        bc = bias if plan[3] is None else _chunk(plan, length, 0, q, bias)[3]
        return _block_backward(q, k, v, bc, out, lse, d_out, bias.shape)
    n = -(-length // rows)
    pad = lambda x, axis=2: _pad_queries(x, n * rows, axis)
    q, out, d_out, lse = pad(q), pad(out), pad(d_out), pad(lse)
    key_bias = bias.shape[2] == 1
    bias = bias if key_bias else pad(bias)

    def one(carry, i):
        d_k, d_v, d_b = carry
        q0, k0, qc, bc, shape = _chunk(plan, length, i, q, bias)
        kc, vc = (jax.lax.dynamic_slice_in_dim(x, k0, span, axis=2) for x in (k, v))
        oc, dc = (jax.lax.dynamic_slice_in_dim(x, q0, rows, axis=2) for x in (out, d_out))
        lc = jax.lax.dynamic_slice_in_dim(lse, q0, rows, axis=2)
        g_q, g_k, g_v, g_b = _block_backward(qc, kc, vc, bc, oc, lc, dc, shape)
        d_k = jax.lax.dynamic_update_slice_in_dim(d_k, jax.lax.dynamic_slice_in_dim(d_k, k0, span, 2) + g_k, k0, 2)
        d_v = jax.lax.dynamic_update_slice_in_dim(d_v, jax.lax.dynamic_slice_in_dim(d_v, k0, span, 2) + g_v, k0, 2)
        if key_bias:
            d_b = jax.lax.dynamic_update_slice_in_dim(d_b, jax.lax.dynamic_slice_in_dim(d_b, k0, span, 3) + g_b,
                                                      k0, 3)
            g_b = None
        return (d_k, d_v, d_b), (g_q, g_b)

    zeros = lambda x: jnp.zeros(x.shape, x.dtype)
    (d_k, d_v, d_b), (d_q, d_b_rows) = jax.lax.scan(
        one, (zeros(k), zeros(v), zeros(bias) if key_bias else None), jnp.arange(n))
    unchunk = lambda x: jnp.moveaxis(x, 0, 2).reshape(*x.shape[1:3], n * rows, -1)[:, :, :length]
    return unchunk(d_q), d_k, d_v, d_b if key_bias else unchunk(d_b_rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked_attention(q: Array, k: Array, v: Array, bias: Array, plan: tuple[int, int, int, int | None]) -> Array:
    return _blocked_forward(q, k, v, bias, plan)[0]


def _blocked_forward(q: Array, k: Array, v: Array, bias: Array, plan: tuple[int, int, int, int | None]):
    rows = plan[0]
    out, lse = jax.lax.map(lambda a: _pair_forward(plan, *a), tuple(_blocks(x, rows) for x in (q, k, v, bias)))
    out = checkpoint_name(out.reshape(q.shape), RESIDUAL_NAMES[0])
    lse = checkpoint_name(lse.reshape(q.shape[0], *lse.shape[2:]), RESIDUAL_NAMES[1])
    return out, (q, k, v, bias, out, lse)


def _blocked_backward(plan: tuple[int, int, int, int | None], residuals, d_out: Array):
    q, k, v, bias, out, lse = residuals
    rows = plan[0]
    grads = jax.lax.map(lambda a: _pair_backward(plan, *a), tuple(_blocks(x, rows) for x in (*residuals, d_out)))
    return tuple(g.reshape(x.shape) for g, x in zip(grads, (q, k, v, bias)))


_blocked_attention.defvjp(_blocked_forward, _blocked_backward)


def blocked_attention(q: Array, k: Array, v: Array, bias: Array, local_window: int | None = None,
                      local_active: bool | Array = True, *, planner: Planner | None = None) -> Array:
    """Blocked attention with a recomputing VJP. q, k, v: [B, T, heads, d]; bias: [B, 1|heads, 1|T, T].

    `local_window`: w, query i sees key j only where |i - j| <= w (None: every key), while `local_active`
    (a traced bool picks at run time, `lax.cond`). The window is built per chunk from iota, so nothing [T, T]
    exists outside one block; with a key-only bias ([B, 1|heads, 1, T]: the padding) a chunk's keys are its
    window's alone once T is long enough to be chunked. `planner`: `block_plan` (CPU, the default) or
    `accelerator_plan`."""
    b, t, h, _ = q.shape
    dtype = q.dtype
    # (batch, head) pairs are the blocked axis, so a block can be a few heads of one long sequence
    bias = jnp.broadcast_to(bias, (b, h) + bias.shape[2:]).astype(jnp.float32).reshape(b * h, 1, *bias.shape[2:])
    q, k, v = (_heads_first(x.astype(jnp.float32)).reshape(b * h, 1, t, -1) for x in (q, k, v))
    plan = lambda window: (planner or block_plan)(b * h, t, window, query_bias=bias.shape[2] != 1)
    run = lambda window: _blocked_attention(q, k, v, bias, plan(window))
    if local_window is None or local_active is False:
        out = run(None)
    elif local_active is True:
        out = run(local_window)
    else:
        out = jax.lax.cond(local_active, lambda: run(local_window), lambda: run(None))
    return _heads_first(out.reshape(b, h, t, -1)).astype(dtype)


def _xla_attention(q: Array, k: Array, v: Array, bias: Array) -> Array:
    return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype))


def padding_bias(key_mask: Array) -> Array:
    """[B, 1, 1, Tk] additive bias of a [B, Tk] key mask: 0 where attended, `mask_value` where not."""
    return jnp.where(key_mask.astype(bool), 0.0, mask_value(jnp.float32))[:, None, None, :]


def full_bias(bias: Array | None, key_mask: Array | None, keys: int) -> Array:
    """The one additive bias of `attention(q, k, v, bias, key_mask=...)`: padding plus extra terms."""
    if key_mask is None:
        return jnp.zeros((1, 1, 1, keys), jnp.float32) if bias is None else bias
    return padding_bias(key_mask) if bias is None else padding_bias(key_mask) + bias


_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def attention_implementation(dtype: Any, backend: str, *, has_bias: bool, length: int, head_dim: int,
                             capability: tuple[int, int] | None = None) -> str:
    """Which attention runs: "cudnn", "xla" or "blocked" (see the module docstring).

    `backend`: "cpu", "cuda" (or "gpu", as `jax.default_backend()` names it), "rocm", "tpu", ...;
    `has_bias`: an additive bias beyond the padding (cuDNN is only given the padding, as lengths);
    `length`: the query length; `capability`: the CUDA compute capability, (major, minor).
    cuDNN's flash attention needs fp16/bf16, sm80 or later and a head dim that is a multiple of 8,
    at most 128 (256 from sm90), the limits `jax.nn.dot_product_attention` checks."""
    if (backend in ("cuda", "gpu") and not has_bias and jnp.dtype(dtype) in _HALF and capability is not None
            and capability >= (8, 0) and head_dim % 8 == 0 and head_dim <= (256 if capability >= (9, 0) else 128)):
        return "cudnn"
    return "blocked" if length > (SHORT_LENGTH if backend == "cpu" else ACCELERATOR_SHORT_LENGTH) else "xla"


def current_backend() -> tuple[str, tuple[int, int] | None]:
    """(backend, CUDA compute capability or None) of the default device, as the selector takes them."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend, None
    if "rocm" in jax.extend.backend.get_backend().platform_version.lower():
        return "rocm", None
    version = getattr(jax.devices()[0], "compute_capability", None)
    try:
        return "cuda", tuple(int(x) for x in str(version).split(".")[:2])
    except ValueError:
        return "cuda", None


def _flat_batch_rule(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A `custom_vmap` rule that folds the mapped axis into the batch axis of every argument and output
    (unmapped arguments are broadcast), so `fn` sees one plain [B, ...] batch however it is vmapped:
    JAX's cuDNN attention batches only when every operand, its own default query lengths included,
    is mapped on axis 0."""
    def rule(axis_size: int, in_batched: list[bool], *args: Array):
        args = [x if b else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, b in zip(args, in_batched)]
        out = fn(*(x.reshape(-1, *x.shape[2:]) for x in args))
        unfold = lambda y: y.reshape(axis_size, -1, *y.shape[1:])
        return jax.tree.map(unfold, out), jax.tree.map(lambda _: True, out)
    return rule


@functools.cache
def _length_attention(implementation: str) -> Callable[[Array, Array, Array, Array], Array]:
    """`jax.nn.dot_product_attention` over keys [0, lengths) of each row, by `implementation`, wrapped to
    batch under `vmap` (`_flat_batch_rule`) and to differentiate under it: the backward pass recomputes
    the forward inside `jax.vjp` (cuDNN's own VJP keeps no residuals we could carry across the wrapper)."""
    def call(q: Array, k: Array, v: Array, lengths: Array) -> Array:
        q_lengths = jnp.full(q.shape[:1], q.shape[1], jnp.int32)
        return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=q_lengths, key_value_seq_lengths=lengths,
                                            implementation=implementation)

    def grads(q: Array, k: Array, v: Array, lengths: Array, d_out: Array) -> tuple[Array, Array, Array]:
        return jax.vjp(lambda *a: call(*a, lengths), q, k, v)[1](d_out)

    forward = jax.custom_batching.custom_vmap(call)
    forward.def_vmap(_flat_batch_rule(forward))
    backward = jax.custom_batching.custom_vmap(grads)
    backward.def_vmap(_flat_batch_rule(backward))
    fn = jax.custom_vjp(lambda q, k, v, lengths: forward(q, k, v, lengths))
    fn.defvjp(lambda q, k, v, lengths: (forward(q, k, v, lengths), (q, k, v, lengths)),
              lambda res, d_out: (*backward(*res, d_out), None))
    return fn


def padded_attention(q: Array, k: Array, v: Array, key_mask: Array | None, implementation: str) -> Array:
    """Attention with only a [B, Tk] key mask, given to `jax.nn.dot_product_attention` as key lengths
    (what cuDNN takes without a [T, T] bias): the attended keys are moved to the front in their order,
    which changes nothing (no score here depends on a key's position), so any mask is a prefix. A row
    with no key attended averages every value, as the additive bias gives it."""
    b, tk = k.shape[:2]
    if key_mask is None:
        return _length_attention(implementation)(q, k, v, jnp.full((b,), tk, jnp.int32))
    key_mask = key_mask.astype(bool)
    order = jnp.argsort(~key_mask, axis=-1, stable=True)[:, :, None, None]
    k_sorted, v_sorted = (jnp.take_along_axis(x, order, axis=1) for x in (k, v))
    n = key_mask.sum(-1, dtype=jnp.int32)
    out = _length_attention(implementation)(q, k_sorted, v_sorted, jnp.maximum(n, 1))
    return jnp.where((n == 0)[:, None, None, None], v.mean(1, keepdims=True).astype(out.dtype), out)


def attention(q: Array, k: Array, v: Array, bias: Array | None = None, *, key_mask: Array | None = None,
              local_window: int | None = None, local_active: bool | Array = True) -> Array:
    """softmax(q k^T / sqrt(d) + bias + padding) v, [B, T, heads, d].

    `key_mask`: [B, Tk], true where a key is attended (None: all are); `bias`: any further additive
    bias, broadcastable to [B, heads, Tq, Tk] (without `key_mask` it carries the padding itself, the old
    single-bias form). `local_window`: an int w, query i attending key j only where |i - j| <= w (ModernBERT's
    local blocks), given instead of a [T, T] bias and built from positions where it is used; `local_active`
    (a bool, or traced: ModernBERT's block type follows its traced index) says whether it applies. What runs
    is `attention_implementation`'s choice for the default backend: cuDNN for a padding-only call in
    fp16/bf16 on CUDA, else XLA's fused attention for short inputs and the blocked kernel for long ones. A
    windowed call counts as one with a bias: this JAX's cuDNN attention refuses a two-sided window without
    a causal mask, and `padded_attention`'s reordered keys would lose their positions."""
    backend, capability = current_backend()
    impl = attention_implementation(q.dtype, backend, has_bias=bias is not None or local_window is not None,
                                    length=q.shape[1], head_dim=q.shape[-1], capability=capability)
    if impl == "cudnn":
        try:
            return padded_attention(q, k, v, key_mask, "cudnn")
        except (NotImplementedError, RuntimeError, ValueError) as e:  # JAX's checks, at trace time
            impl = "blocked" if q.shape[1] > ACCELERATOR_SHORT_LENGTH else "xla"
            log.debug("cuDNN attention unavailable for %s %s, using %s: %s", q.shape, q.dtype, impl, e)
    bias = full_bias(bias, key_mask, k.shape[1])
    xla = lambda q, k, v, bias: _xla_attention(q, k, v, windowed_bias(bias, q.shape[1], k.shape[1], local_window,
                                                                      local_active))
    if impl == "xla":
        return xla(q, k, v, bias)
    blocked = functools.partial(blocked_attention, local_window=local_window, local_active=local_active,
                                planner=block_plan if backend == "cpu" else accelerator_plan)
    if backend != "cpu":
        return blocked(q, k, v, bias)
    return jax.lax.platform_dependent(q, k, v, bias, cpu=blocked, default=xla)


def windowed_bias(bias: Array, queries: int, keys: int, local_window: int | None,
                  local_active: bool | Array = True) -> Array:
    """`bias` with the local window of queries 0.. over keys 0.. applied (`apply_window`), [..., Tq, Tk];
    `bias` itself without a window or where `local_active` is false."""
    if local_window is None or local_active is False:
        return bias
    inside = window_mask(queries, keys, local_window)
    return apply_window(bias, inside if local_active is True else inside | ~jnp.asarray(local_active, bool))


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


def attend(cfg: EncoderConfig, q: Array, k: Array, v: Array, bias: Array | None, attn_perturb: Array | None,
           return_attention: bool, deterministic: bool, cls_only: bool,
           key_mask: Array | None = None, *, local_window: int | None = None,
           local_active: bool | Array = True) -> tuple[Array, Array | None]:
    """Attention context [B, Tq, heads, d] and, when anyone needs them, the probabilities.

    `bias` is added to the scaled scores, `attn_perturb` to the probabilities after attention dropout;
    called from inside a block's compact method (its attention dropout is a submodule of that block). With `key_mask`
    ([B, T], true where attended) `bias` holds only the terms beyond the padding (None: none), and a
    padding-only call may take cuDNN's attention (`attention`). `local_window`, `local_active`: a local
    window, as `attention` takes it (the queries are positions 0..Tq-1: all, or [CLS] alone)."""
    # one query row: plain einsums (cheap here; XLA:CPU's fused bf16 attention fails on one query)
    needs_probs = cls_only or return_attention or attn_perturb is not None or (
        not deterministic and cfg.attention_dropout_rate > 0)
    if not needs_probs:  # fused attention when nobody needs the probabilities
        if local_window is None:
            return attention(q, k, v, bias, key_mask=key_mask), None
        return attention(q, k, v, bias, key_mask=key_mask, local_window=local_window,
                         local_active=local_active), None
    bias = windowed_bias(full_bias(bias, key_mask, k.shape[1]), q.shape[1], k.shape[1], local_window, local_active)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(scores / math.sqrt(cfg.head_dim) + bias, axis=-1)
    dropped = nn.Dropout(cfg.attention_dropout_rate)(probs, deterministic=deterministic)
    if attn_perturb is not None:  # after dropout: ∂F/∂perturb is the gradient at the dropped A (AD-DROP's reference)
        dropped = dropped + attn_perturb
    return jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(v.dtype), v), probs
