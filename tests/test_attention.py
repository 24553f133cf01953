"""The CPU attention kernel against XLA's reference attention: values and all four gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattr.models import attention as attention_module
from jaxattr.models.attention import attention, block_rows, blocked_attention


def _inputs(b: int, t: int, h: int = 3, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32) for _ in range(3))
    # a padding mask per row (the encoder's key bias) plus a dense per-head bias (AD-DROP's attn_bias)
    pad = np.where(np.arange(t)[None, :] >= rng.integers(1, t + 1, size=(b, 1)), -1e9, 0.0)
    bias = jnp.asarray(pad[:, None, None, :] + rng.normal(size=(b, h, t, t)), jnp.float32)
    return q, k, v, bias


def _reference(q, k, v, bias):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision="highest") / np.sqrt(q.shape[-1]) + bias
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v, precision="highest")


@pytest.mark.parametrize("b,t,block_bytes", [(1, 5, None), (6, 16, None), (7, 33, None), (6, 16, 2 * 16 * 16 * 4)])
def test_blocked_attention_values_and_gradients_match_softmax_attention(b, t, block_bytes, monkeypatch):
    if block_bytes is not None:  # many blocks of two (batch, head) pairs, as long inputs get
        monkeypatch.setattr(attention_module, "_BLOCK_BYTES", block_bytes)
        assert block_rows(b * 3, t) == 2
    q, k, v, bias = _inputs(b, t)
    np.testing.assert_allclose(blocked_attention(q, k, v, bias), _reference(q, k, v, bias), atol=2e-5)
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))  # a non-uniform cotangent
    got = jax.grad(loss(blocked_attention), argnums=(0, 1, 2, 3))(q, k, v, bias)
    want = jax.grad(loss(_reference), argnums=(0, 1, 2, 3))(q, k, v, bias)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=5e-5)


def test_mask_only_bias_broadcasts_and_gradient_reduces_to_its_shape():
    q, k, v, _ = _inputs(4, 12)
    key_bias = jnp.zeros((4, 1, 1, 12)).at[:, :, :, 9:].set(-1e9)
    np.testing.assert_allclose(blocked_attention(q, k, v, key_bias), _reference(q, k, v, key_bias), atol=2e-5)
    d_bias = jax.grad(lambda b: blocked_attention(q, k, v, b).sum())(key_bias)
    assert d_bias.shape == key_bias.shape
    # masked keys get no probability mass, so no gradient flows into their bias
    np.testing.assert_allclose(d_bias[..., 9:], 0.0, atol=1e-6)


@pytest.mark.parametrize("t", [10, 40])  # XLA's attention, then the blocked kernel (longer than SHORT_LENGTH)
def test_dispatch_under_jit_and_vmap_equals_reference(t):
    assert (t > attention_module.SHORT_LENGTH) == (t == 40)
    q, k, v, bias = _inputs(6, t)
    out = jax.jit(attention)(q, k, v, bias)
    np.testing.assert_allclose(out, _reference(q, k, v, bias), atol=2e-5)
    per_row = jax.vmap(lambda *a: attention(*(x[None] for x in a))[0])(q, k, v, bias)
    np.testing.assert_allclose(per_row, out, atol=2e-5)


def test_block_rows_divides_the_pairs_and_respects_the_budget():
    assert block_rows(50 * 12, 256) == 8  # 2 MiB of 256 x 256 float32 scores
    assert block_rows(7 * 12, 256) == 7
    assert block_rows(8 * 12, 512) == 2
    assert block_rows(5, 2048) == 1  # one pair over budget still runs
    for pairs in (1, 3, 10, 64, 97):
        assert pairs % block_rows(pairs, 64) == 0
