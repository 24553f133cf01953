"""Local (sliding-window) attention given as a window, not as a [T, T] bias (ModernBERT's local blocks).

`attention(..., key_mask=..., local_window=w)` against the dense formulation it replaces (the padding and a
hand-built [T, T] window bias combined by min, as ModernBERT built them), through XLA's attention and the
CPU kernel, values and gradients; the kernel's query chunks (long inputs) against the dense softmax; a tiny
ModernBERT against HF PyTorch; and the memory of a 4,096-token ModernBERT gradient, which no longer holds
anything [T, T]."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_tiny import random_batch, save_tiny

from jaxattr.models import attention as attention_module
from jaxattr.models import forward, init_params, load_hf_dir, tiny_config
from jaxattr.models.attention import accelerator_plan, attention, block_plan, blocked_attention, padding_bias
from jaxattr.models.encoder import word_embeddings
from jaxattr.models.primitives import mask_value

H, D = 3, 8


def _inputs(t: int, b: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, H, D)), jnp.float32) for _ in range(3))
    mask = np.ones((b, t), bool)
    mask[1, t - t // 3:] = False  # right padding, long enough that some padded queries see no key
    mask[2, : t // 4] = False  # left padding
    mask[3, rng.choice(t, t // 5, replace=False)] = False  # holes
    mask[3, 0] = True
    return q, k, v, jnp.asarray(mask)


def _window_bias(t: int, w: int) -> np.ndarray:
    """The old NumPy [T, T] window bias."""
    dist = np.abs(np.arange(t)[:, None] - np.arange(t)[None])
    return np.where(dist <= w, 0.0, mask_value(np.float32)).astype(np.float32)


def _dense_bias(mask, w: int) -> jnp.ndarray:
    """[B, 1, T, T]: padding and window combined by min, the bias ModernBERT used to pass."""
    return jnp.minimum(padding_bias(mask), jnp.asarray(_window_bias(mask.shape[1], w))[None, None])


def _rows_seen(mask, w: int) -> jnp.ndarray:
    """[B, T]: the query rows that see at least one key."""
    return jnp.asarray(_dense_bias(mask, w)[:, 0].max(-1) == 0)


def _reference(q, k, v, bias):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision="highest") / np.sqrt(q.shape[-1]) + bias
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v, precision="highest")


def _value_and_grads(fn, q, k, v, rows=None):
    """The output and d/d(q, k, v) of a non-uniform loss (over the valid query `rows` alone, if given)."""
    weight = 1.0 if rows is None else rows[:, :, None, None].astype(jnp.float32)
    loss = lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)) * weight)
    return (fn(q, k, v), *jax.grad(loss, argnums=(0, 1, 2))(q, k, v))


def _assert_close(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


@pytest.mark.parametrize("path", ["xla", "blocked"])
# (40, 64) and (130, 4) repeat the short/long and narrow/wide cases the other two cover: `make test-all` only
@pytest.mark.parametrize("t,w", [(40, 4), pytest.param(40, 64, marks=pytest.mark.extra),
                                 pytest.param(130, 4, marks=pytest.mark.extra), (130, 64)])
def test_window_equals_the_dense_window_bias(monkeypatch, path, t, w):
    if path == "xla":  # XLA's attention at any length (on CPU it runs up to SHORT_LENGTH)
        monkeypatch.setattr(attention_module, "SHORT_LENGTH", 10_000)
    q, k, v, mask = _inputs(t)
    dense = _dense_bias(mask, w)
    new = _value_and_grads(jax.jit(lambda q, k, v: attention(q, k, v, key_mask=mask, local_window=w)), q, k, v)
    old = _value_and_grads(jax.jit(lambda q, k, v: attention(q, k, v, dense)), q, k, v)
    _assert_close(new, old)  # every row, those that see no key (padding far from any token) included
    # against plain softmax attention the rows that see a key (the kernel's gradient of a row that sees none is
    # off, as it was with the dense bias: its log-sum-exp is lost in the mask value; nobody reads such rows)
    seen = _rows_seen(mask, w)
    _assert_close(_value_and_grads(lambda q, k, v: attention(q, k, v, key_mask=mask, local_window=w), q, k, v, seen),
                  _value_and_grads(lambda q, k, v: _reference(q, k, v, dense), q, k, v, seen), rtol=1e-4, atol=2e-5)
    if path == "blocked":  # the kernel itself, with the window switched at run time (a traced flag)
        run = jax.jit(lambda q, k, v, on: blocked_attention(q, k, v, padding_bias(mask), w, on))
        _assert_close(_value_and_grads(lambda q, k, v: run(q, k, v, jnp.bool_(True)), q, k, v), old)
        plain = _value_and_grads(lambda q, k, v: blocked_attention(q, k, v, padding_bias(mask)), q, k, v)
        _assert_close(_value_and_grads(lambda q, k, v: run(q, k, v, jnp.bool_(False)), q, k, v), plain)


def test_window_and_an_extra_bias_equal_the_dense_form():
    """AD-DROP's attn_bias on a local block: added to the padding, the window applied on top."""
    t, w = 40, 4
    q, k, v, mask = _inputs(t)
    extra = jnp.asarray(np.random.default_rng(3).normal(size=(4, H, t, t)), jnp.float32)
    dense = _dense_bias(mask, w) + extra
    new = _value_and_grads(lambda q, k, v: attention(q, k, v, extra, key_mask=mask, local_window=w), q, k, v)
    _assert_close(new, _value_and_grads(lambda q, k, v: attention(q, k, v, dense), q, k, v))


@pytest.mark.parametrize("t,w,extra", [(130, 4, False), pytest.param(130, 64, False, marks=pytest.mark.extra),
                                       (97, 6, True), pytest.param(130, 200, False, marks=pytest.mark.extra)])
def test_chunked_kernel_equals_the_dense_softmax(monkeypatch, t, w, extra):
    """Long inputs: a pair's queries in chunks (and, under a window, each chunk's keys its window alone)."""
    budget = 4 * 16 * t  # 16 query rows of all keys per chunk
    monkeypatch.setattr(attention_module, "_BLOCK_BYTES", budget)
    pairs, rows, span, window = block_plan(4 * H, t, w, query_bias=extra)
    assert pairs == 1 and rows < t and rows * span * 4 <= budget
    assert span == (t if extra or w >= t - 1 else min(t, rows + 2 * w)) and (span < t) == (not extra and w < 60)
    q, k, v, mask = _inputs(t)
    bias = padding_bias(mask)
    if extra:
        bias = bias + jnp.asarray(np.random.default_rng(3).normal(size=(4, H, t, t)), jnp.float32)
    dense = jnp.minimum(bias, jnp.asarray(_window_bias(t, w))[None, None]) if not extra else (
        _dense_bias(mask, w) + (bias - padding_bias(mask)))
    # rows that see no key at all (padding far from any token) average their chunk's keys rather than all
    # T: nobody reads them, so the loss leaves them out
    rows_seen = _rows_seen(mask, w)
    got = _value_and_grads(jax.jit(lambda q, k, v: blocked_attention(q, k, v, bias, w)), q, k, v, rows_seen)
    want = _value_and_grads(lambda q, k, v: _reference(q, k, v, dense), q, k, v, rows_seen)
    seen = np.asarray(rows_seen)[:, :, None, None]
    np.testing.assert_allclose(np.where(seen, got[0], 0), np.where(seen, want[0], 0), rtol=1e-4, atol=2e-5)
    _assert_close(got[1:], want[1:], rtol=1e-4, atol=2e-5)
    if extra:  # the extra bias's gradient, chunk by chunk
        loss = lambda b: jnp.sum(jnp.sin(blocked_attention(q, k, v, b, w)) * seen)
        d_bias = jax.grad(loss)(bias)
        inside = jnp.asarray(_window_bias(t, w) == 0)
        want_d = jax.grad(lambda b: jnp.sum(jnp.sin(_reference(q, k, v, jnp.where(inside, b, mask_value(
            np.float32)))) * seen))(bias)
        np.testing.assert_allclose(d_bias, want_d, rtol=1e-4, atol=2e-5)


def test_global_chunks_equal_the_dense_softmax_with_all_gradients(monkeypatch):
    """No window, a key-only bias: chunks of queries over all keys; the bias gradient summed over chunks."""
    t = 70
    monkeypatch.setattr(attention_module, "_BLOCK_BYTES", 4 * 16 * t)
    q, k, v, mask = _inputs(t)
    bias = padding_bias(mask)
    f = lambda q, k, v, b: jnp.sum(jnp.sin(blocked_attention(q, k, v, b)))
    g = lambda q, k, v, b: jnp.sum(jnp.sin(_reference(q, k, v, b)))
    got, want = jax.grad(f, argnums=(0, 1, 2, 3))(q, k, v, bias), jax.grad(g, argnums=(0, 1, 2, 3))(q, k, v, bias)
    _assert_close(got, want, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(blocked_attention(q, k, v, bias), _reference(q, k, v, bias), rtol=1e-4, atol=2e-5)


def test_block_plan():
    assert block_plan(24, 256) == (8, 256, 256, None)  # whole pairs, as before
    assert block_plan(24, 256, 4) == (8, 256, 256, 4)
    pairs, rows, span, window = block_plan(12, 4096)  # one pair no longer fits: chunks of queries
    assert (pairs, span, window) == (1, 4096, None) and rows * 4096 * 4 <= 2 * 2**20 and 4096 % rows == 0
    pairs, rows, span, window = block_plan(12, 8192, 64)
    assert (pairs, window) == (1, 64) and span == rows + 128 and rows * span * 4 <= 2 * 2**20 and rows > 256
    assert block_plan(12, 8192, 64, query_bias=True)[2] == 8192  # a [T, T] extra bias: all keys per chunk
    assert block_plan(12, 1000, 999)[3] is None  # a window over every key is none


def test_accelerator_plan():
    assert accelerator_plan(24, 1024) == (24, 1024, 1024, None)  # 4 MiB a pair: every pair in one block
    assert accelerator_plan(24, 4096, None) == (4, 4096, 4096, None)  # 64 MiB a pair
    pairs, rows, span, window = accelerator_plan(24, 16384)  # one pair's scores are 1 GiB: query chunks
    assert (pairs, span, window) == (1, 16384, None) and rows * span * 4 <= 256 * 2**20 and 16384 % rows == 0
    pairs, rows, span, window = accelerator_plan(24, 8192, 64)  # under a window: chunks of its keys alone
    assert (rows, span, window) == (512, 640, 64) and pairs == 24  # 24 x 512 x 640 x 4 B = 30 MiB
    assert accelerator_plan(24, 8192, 64, query_bias=True)[1:3] == (8192, 8192)
    assert accelerator_plan(24, 600, 64)[1:] == (600, 600, 64)  # too short to chunk


@pytest.mark.parametrize("t,w,extra", [(130, 4, False), (97, None, False), (97, 6, True)])
def test_accelerator_blocks_of_many_chunked_pairs_equal_the_dense_softmax(monkeypatch, t, w, extra):
    """The accelerator plan, run on CPU: query chunks, under a window over the window's keys alone in blocks
    of several (batch, head) pairs; values and gradients against the dense softmax."""
    monkeypatch.setattr(attention_module, "_WINDOW_ROWS", 16)
    budget = 4 * 4 * 16 * t  # four pairs of 16 all-key query rows
    monkeypatch.setattr(attention_module, "_ACCELERATOR_BLOCK_BYTES", budget)
    pairs, rows, span, _ = accelerator_plan(4 * H, t, w, query_bias=extra)
    assert rows < t and pairs * rows * span * 4 <= budget
    assert (span < t) == (pairs > 1) == (w is not None and not extra)  # window chunks are small: many pairs
    q, k, v, mask = _inputs(t)
    bias = padding_bias(mask)
    if extra:
        bias = bias + jnp.asarray(np.random.default_rng(3).normal(size=(4, H, t, t)), jnp.float32)
    dense = bias if w is None else _dense_bias(mask, w) + (bias - padding_bias(mask))
    rows_seen = _rows_seen(mask, w if w is not None else t)
    run = jax.jit(lambda q, k, v: blocked_attention(q, k, v, bias, w, planner=accelerator_plan))
    got = _value_and_grads(run, q, k, v, rows_seen)
    want = _value_and_grads(lambda q, k, v: _reference(q, k, v, dense), q, k, v, rows_seen)
    seen = np.asarray(rows_seen)[:, :, None, None]
    np.testing.assert_allclose(np.where(seen, got[0], 0), np.where(seen, want[0], 0), rtol=1e-4, atol=2e-5)
    _assert_close(got[1:], want[1:], rtol=1e-4, atol=2e-5)


def test_accelerators_take_the_blocked_kernel_for_long_inputs(monkeypatch):
    """Off CPU (the backend stubbed), a long call runs the kernel with the accelerator plan, not XLA's
    [B, heads, T, T] attention: the same values, and no [T, T] array in the program."""
    t, w = 300, 8
    monkeypatch.setattr(attention_module, "current_backend", lambda: ("tpu", None))
    monkeypatch.setattr(attention_module, "ACCELERATOR_SHORT_LENGTH", 64)
    monkeypatch.setattr(attention_module, "_WINDOW_ROWS", 32)
    monkeypatch.setattr(attention_module, "_ACCELERATOR_BLOCK_BYTES", 4 * 64 * t)
    plans = []
    real = attention_module.accelerator_plan
    monkeypatch.setattr(attention_module, "accelerator_plan", lambda *a, **k: plans.append(a) or real(*a, **k))
    q, k, v, mask = _inputs(t)
    run = jax.jit(lambda q, k, v: attention(q, k, v, key_mask=mask, local_window=w))
    text = run.lower(q, k, v).compile().as_text()
    assert plans and not re.search(rf"[\[,]{t},{t}\]", text), "a [T, T] array in the compiled program"
    seen = np.asarray(_rows_seen(mask, w))[:, :, None, None]
    want = _reference(q, k, v, _dense_bias(mask, w))
    np.testing.assert_allclose(np.where(seen, run(q, k, v), 0), np.where(seen, want, 0), rtol=1e-4, atol=2e-5)


# ---- ModernBERT ----------------------------------------------------------------------------------------------


def _logits(params, cfg, mask, e, cls_only=False):
    return forward(params, cfg, None, mask, word_embeds=e, cls_only=cls_only).logits


def test_modernbert_matches_hf_past_the_blocked_kernel_threshold(tmp_path):
    """48 tokens (the CPU kernel; the HF model's 8-token window binds): logits and input gradients as HF's."""
    model = save_tiny("modernbert", tmp_path, seed=1)
    cfg, params = load_hf_dir(tmp_path)
    assert cfg.local_attention == 8 and cfg.global_attn_every_n_layers == 2 and cfg.num_layers == 3
    batch = random_batch("modernbert", lengths=(48, 29, 40), length=48, seed=2)
    batch["attention_mask"][2, 17] = 0  # a hole: positions, not key order, define the window
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] > attention_module.SHORT_LENGTH

    embeds = torch.nn.Parameter(model.get_input_embeddings()(torch.tensor(ids, dtype=torch.long)).detach())
    logits = model(inputs_embeds=embeds, attention_mask=torch.tensor(mask, dtype=torch.long)).logits
    (logits * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    e = word_embeddings(params, cfg, jnp.asarray(ids))
    weights = jnp.array([1.0, -2.0, 0.5])
    for cls_only in (False, True):
        run = functools.partial(_logits, params, cfg, jnp.asarray(mask), cls_only=cls_only)
        ours = jax.jit(run)(e)
        d_e = jax.jit(jax.grad(lambda e, run=run: (run(e) * weights).sum()))(e)
        np.testing.assert_allclose(ours, logits.detach().numpy(), atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(d_e, embeds.grad.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.extra  # the window on the explicit-probabilities path; the kernels' window tests cover the masking
def test_modernbert_attention_maps_keep_the_window():
    """The explicit-probabilities path (return_attention): local blocks put no mass beyond the window."""
    cfg = tiny_config("modernbert", local_attention=8, global_attn_every_n_layers=2, num_layers=2)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 100, (2, 40)), jnp.int32)
    mask = jnp.ones((2, 40), jnp.int32).at[1, 30:].set(0)
    out = forward(params, cfg, ids, mask, return_attention=True)
    far = np.abs(np.arange(40)[:, None] - np.arange(40)[None]) > 4
    probs = np.asarray(out.attention)  # [layers, B, heads, T, T]
    assert probs[1][0][:, far].max() == 0 and probs[1][1][:, :30][:, far[:30]].max() == 0  # valid rows
    assert probs[0][0][:, far].min() > 0  # the global block
    np.testing.assert_array_equal(probs[:, 1, :, :30, 30:], 0.0)
    fused = forward(params, cfg, ids, mask).logits
    np.testing.assert_allclose(out.logits, fused, atol=1e-5)


def test_modernbert_gradient_memory_does_not_grow_with_the_square_of_the_input():
    """A 4,096-token ModernBERT (global and local block) input gradient, compiled for CPU: its buffers stay far
    below one [heads, T, T] float32 array (128 MiB), and no [T, T] array (the old window-bias constant among
    them) appears in the program. The dense-bias blocks took 459 MiB of temporaries here."""
    t = 4096
    cfg = tiny_config("modernbert", hidden_size=32, num_heads=2, num_layers=2, max_position_embeddings=t,
                      local_attention=16, global_attn_every_n_layers=2)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = jnp.full((1, t), 5, jnp.int32)
    mask = jnp.ones((1, t), jnp.int32).at[0, t - 100:].set(0)

    def gradient(params, ids, mask):
        loss = lambda e: forward(params, cfg, None, mask, word_embeds=e).logits[:, 0].sum()
        return jax.grad(loss)(word_embeddings(params, cfg, ids))

    compiled = jax.jit(gradient).lower(params, ids, mask).compile()
    text = compiled.as_text()
    assert not re.search(rf"[\[,]{t},{t}\]", text), "a [T, T] array in the compiled program"
    stats = compiled.memory_analysis()
    if stats is None:
        pytest.skip("no memory analysis on this backend")
    used = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    dense = cfg.num_heads * t * t * 4
    print(f"temp {stats.temp_size_in_bytes / 2**20:.1f} MiB, total {used / 2**20:.1f} MiB, "
          f"dense [heads, T, T] {dense / 2**20:.0f} MiB")
    assert used < dense / 4
