"""Which attention runs where (`attention_implementation`), and the key-lengths form cuDNN gets.

cuDNN needs a GPU, so its inputs are checked here through XLA: `padded_attention(..., "xla")` is the same
wrapper, key reordering and lengths with `implementation="xla"`, compared with today's additive-bias path.
On CPU the cuDNN call itself can only be traced (jaxpr, with JAX's cuDNN version check stubbed), which
is where batching under `vmap` fails when it fails."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattr.models import attention as attention_module
from jaxattr.models import forward, init_params, tiny_config
from jaxattr.models.attention import (
    ACCELERATOR_SHORT_LENGTH,
    SHORT_LENGTH,
    attention,
    attention_implementation,
    padded_attention,
    padding_bias,
)

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32


@pytest.mark.parametrize("backend,dtype,has_bias,length,head_dim,capability,want", [
    # CUDA: cuDNN for a padding-only call in half precision, at any length
    ("cuda", BF16, False, 512, 64, (9, 0), "cudnn"),
    ("gpu", F16, False, 8, 64, (8, 0), "cudnn"),  # jax.default_backend()'s name for CUDA
    ("cuda", BF16, False, 128, 256, (9, 0), "cudnn"),
    # ... else XLA: float32, an extra bias, head dims cuDNN refuses, pre-Ampere or unknown GPUs
    ("cuda", F32, False, 512, 64, (9, 0), "xla"),
    ("cuda", BF16, True, 512, 64, (9, 0), "xla"),
    ("cuda", F32, True, 512, 64, (9, 0), "xla"),
    ("cuda", BF16, False, 512, 68, (9, 0), "xla"),
    ("cuda", BF16, False, 512, 256, (8, 6), "xla"),
    ("cuda", BF16, False, 512, 264, (9, 0), "xla"),
    ("cuda", BF16, False, 512, 64, (7, 5), "xla"),
    ("cuda", BF16, False, 512, 64, None, "xla"),
    ("rocm", BF16, False, 512, 64, None, "xla"),
    ("tpu", BF16, False, 512, 64, None, "xla"),
    ("tpu", F32, True, 512, 64, None, "xla"),
    # ... up to ACCELERATOR_SHORT_LENGTH tokens; longer, the blocked kernel (cuDNN still takes what it can)
    ("tpu", F32, True, ACCELERATOR_SHORT_LENGTH, 64, None, "xla"),
    ("tpu", BF16, False, ACCELERATOR_SHORT_LENGTH + 1, 64, None, "blocked"),
    ("cuda", F32, False, 8192, 64, (9, 0), "blocked"),
    ("cuda", BF16, True, 4096, 64, (9, 0), "blocked"),
    ("rocm", BF16, False, 2048, 64, None, "blocked"),
    ("cuda", BF16, False, 8192, 64, (9, 0), "cudnn"),
    # CPU: XLA up to SHORT_LENGTH tokens, the blocked kernel beyond, bias or not, any dtype
    ("cpu", F32, False, SHORT_LENGTH, 64, None, "xla"),
    ("cpu", BF16, False, SHORT_LENGTH, 64, None, "xla"),
    ("cpu", F32, False, SHORT_LENGTH + 1, 64, None, "blocked"),
    ("cpu", BF16, True, 512, 64, None, "blocked"),
])
def test_selector(backend, dtype, has_bias, length, head_dim, capability, want):
    assert attention_implementation(dtype, backend, has_bias=has_bias, length=length, head_dim=head_dim,
                                    capability=capability) == want


def test_current_backend_names_the_default_one():
    backend, capability = attention_module.current_backend()
    if jax.default_backend() == "gpu":
        assert backend in ("cuda", "rocm") and (capability is None) == (backend == "rocm")
    else:
        assert (backend, capability) == (jax.default_backend(), None)


# the key-lengths form against the additive bias ---------------------------------------------------------------

MASK = np.array([[1] * 12,  # no padding
                 [1] * 7 + [0] * 5,  # right padding
                 [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # left padding
                 [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1],  # holes (a deleted key, a masked-out word)
                 [0] * 11 + [1]], bool)  # one key
EMPTY = np.zeros((1, 12), bool)  # no key at all


def _inputs(mask, h=3, d=8, dtype=F32, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(*mask.shape, h, d)), dtype) for _ in range(3))


def _bias_path(q, k, v, mask):  # the encoder's form before the split: one [B, 1, 1, T] additive bias
    return attention(q, k, v, padding_bias(mask))


def _length_path(q, k, v, mask):
    return padded_attention(q, k, v, mask, "xla")


def _reference(q, k, v, mask):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision="highest") / np.sqrt(q.shape[-1]) + padding_bias(mask)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v, precision="highest")


def test_key_lengths_equal_the_additive_bias_including_padded_rows():
    mask = np.concatenate([MASK, EMPTY])
    q, k, v = _inputs(mask)
    want = jax.jit(_bias_path)(q, k, v, mask)
    got = jax.jit(_length_path)(q, k, v, mask)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, _reference(q, k, v, mask), atol=1e-5)
    # padded query rows attend to the valid keys as before (no query lengths: nothing is zeroed)
    assert float(jnp.abs(got[1, 7:]).min()) > 0
    # the row without keys averages every value, as the additive bias makes it
    np.testing.assert_allclose(got[-1], jnp.broadcast_to(v[-1].mean(0), got[-1].shape), atol=1e-5)
    # and keys are really masked: changing a padded key's value changes nothing
    v2 = v.at[1, 9].set(100.0).at[3, 1].set(100.0)
    np.testing.assert_allclose(jax.jit(_length_path)(q, k, v2, mask)[:-1], got[:-1], atol=1e-5)
    assert not np.allclose(jax.jit(_length_path)(q, k, v2, np.ones_like(mask))[1], got[1], atol=1e-3)


def test_key_lengths_without_a_mask_attend_to_every_key():
    q, k, v = _inputs(MASK)
    np.testing.assert_allclose(padded_attention(q, k, v, None, "xla"), attention(q, k, v), atol=1e-5)


def test_key_lengths_in_bf16_stay_close_to_the_bias_path():  # the dtype cuDNN runs in
    q, k, v = _inputs(MASK, dtype=BF16)
    got, want = _length_path(q, k, v, MASK), _bias_path(q, k, v, MASK)
    assert got.dtype == BF16
    np.testing.assert_allclose(got.astype(F32), want.astype(F32), atol=2e-2)


def _loss(fn):
    return lambda q, k, v, mask: jnp.sum(jnp.sin(fn(q, k, v, mask)))  # a non-uniform cotangent


def test_key_lengths_gradients_equal_the_additive_bias():
    # (rows with at least one key: for a row with none the bias path differentiates softmax(s - 1.7e38),
    # which rounds to a constant, as if s still counted; the lengths path gives that row zero gradient)
    q, k, v = _inputs(MASK)
    got = jax.jit(jax.grad(_loss(_length_path), argnums=(0, 1, 2)))(q, k, v, MASK)
    want = jax.grad(_loss(_bias_path), argnums=(0, 1, 2))(q, k, v, MASK)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    # masked keys get no gradient
    assert float(jnp.abs(got[1][1, 7:]).max()) == 0 and float(jnp.abs(got[2][3, 1]).max()) == 0


def test_key_lengths_batch_under_vmap_and_differentiate_there():
    q, k, v = _inputs(MASK)
    qs, ks, vs = (jnp.stack([x, 0.5 * x, -x]) for x in (q, k, v))
    masks = np.stack([MASK, MASK[::-1], np.ones_like(MASK)])
    cases = [  # (in_axes, args): mapped q/k/v with a shared mask, a mapped mask with shared q/k/v, both
        ((0, 0, 0, None), (qs, ks, vs, MASK)),
        ((None, None, None, 0), (q, k, v, masks)),
        ((0, 0, 0, 0), (qs, ks, vs, masks)),
    ]
    for axes, args in cases:
        np.testing.assert_allclose(jax.vmap(_length_path, axes)(*args), jax.vmap(_bias_path, axes)(*args),
                                   atol=1e-5)
        got = jax.jit(jax.vmap(jax.grad(_loss(_length_path), argnums=(0, 1, 2)), axes))(*args)
        want = jax.vmap(jax.grad(_loss(_bias_path), argnums=(0, 1, 2)), axes)(*args)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-5)
    # nested, the outer map on axis 1, and the gradient of a vmap
    qq = jnp.stack([qs, 2 * qs], axis=1)
    nested = lambda f: jax.vmap(jax.vmap(f, (0, 0, 0, None)), (1, 1, 1, None))(qq, qq, qq, MASK)
    np.testing.assert_allclose(nested(_length_path), nested(_bias_path), atol=1e-5)
    grad_of_vmap = lambda f: jax.grad(lambda x: jnp.sum(jnp.sin(jax.vmap(f, (0, None, None, None))(x, k, v, MASK))))(qs)
    np.testing.assert_allclose(grad_of_vmap(_length_path), grad_of_vmap(_bias_path), atol=1e-5)


def test_cudnn_call_traces_under_grad_and_vmap(monkeypatch):
    """JAX's cuDNN attention makes its own query lengths, unmapped, so it fails to batch under `vmap` on
    its own; the wrapper folds the mapped axis into the batch. Traced only: lowering needs CUDA."""
    fused = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
    if not hasattr(fused, "check_cudnn_version"):
        pytest.skip("this JAX checks cuDNN differently")
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 90000)
    q, _, _ = _inputs(np.ones((2, 16), bool), h=2, d=64, dtype=BF16)
    mask = jnp.asarray(np.arange(16)[None] < np.array([[16], [9]]))
    loss = lambda q, m: padded_attention(q, q, q, m, "cudnn").astype(F32).sum()
    qs = jnp.stack([q, q])
    for fn, args in [(jax.grad(loss), (q, mask)),
                     (jax.vmap(loss, (0, None)), (qs, mask)),
                     (jax.vmap(loss, (None, 0)), (q, jnp.stack([mask, mask]))),
                     (jax.vmap(jax.jit(jax.grad(loss)), (0, None)), (qs, mask)),
                     (jax.grad(lambda x: jax.vmap(loss, (0, None))(x, mask).sum()), (qs,))]:
        jaxpr = str(jax.make_jaxpr(fn)(*args))
        assert "dot_product_attention_fwd" in jaxpr  # cuDNN's primitive, not XLA's einsums


@pytest.mark.skipif(attention_module.current_backend()[0] != "cuda", reason="cuDNN runs on CUDA only")
def test_cudnn_on_a_gpu_equals_the_bias_path():
    mask = np.concatenate([MASK, EMPTY])
    q, k, v = _inputs(mask, h=2, d=64, dtype=BF16)
    backend, capability = attention_module.current_backend()
    impl = attention_implementation(BF16, backend, has_bias=False, length=12, head_dim=64, capability=capability)
    if impl != "cudnn":
        pytest.skip(f"no cuDNN flash attention on compute capability {capability}")
    cudnn = lambda q, k, v, m: padded_attention(q, k, v, m, "cudnn")
    up = lambda x: np.asarray(x, np.float32)
    np.testing.assert_allclose(up(jax.jit(cudnn)(q, k, v, mask)), up(_bias_path(q, k, v, mask)), atol=2e-2)
    got = jax.jit(jax.grad(_loss(cudnn), argnums=(0, 1, 2)))(q, k, v, MASK)
    want = jax.grad(_loss(_bias_path), argnums=(0, 1, 2))(q, k, v, MASK)
    for g, w in zip(got, want):
        np.testing.assert_allclose(up(g), up(w), rtol=5e-2, atol=5e-2)
    qs = jnp.stack([q[:-1], -q[:-1]])
    mapped = lambda f: jax.vmap(jax.grad(_loss(f)), (0, None, None, None))(qs, k[:-1], v[:-1], MASK)
    np.testing.assert_allclose(up(jax.jit(lambda: mapped(cudnn))()), up(mapped(_bias_path)), rtol=5e-2, atol=5e-2)


# the encoder: only padding-only calls are handed to cuDNN ------------------------------------------------------

def _as_if_cuda(monkeypatch, dtypes=(BF16,)):
    """Pretend the default backend is an H100 and let the 'cuDNN' path run through XLA; count its calls."""
    calls = []
    original = attention_module.padded_attention

    def spy(q, k, v, key_mask, implementation):
        assert implementation == "cudnn"
        calls.append(q.shape)
        return original(q, k, v, key_mask, "xla")

    monkeypatch.setattr(attention_module, "current_backend", lambda: ("cuda", (9, 0)))
    monkeypatch.setattr(attention_module, "padded_attention", spy)
    monkeypatch.setattr(attention_module, "_HALF", tuple(jnp.dtype(d) for d in dtypes))
    return calls


def _model(family="bert", dtype="float32", **overrides):
    cfg = tiny_config(family, dtype=dtype, **overrides)
    params = init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(3, 100, (3, 12)), jnp.int32)
    mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [7], [3]]), jnp.int32).at[0, 4].set(0)
    return cfg, params, ids, mask


def _logits_and_grad(params, cfg, ids, mask, **kwargs):
    from jaxattr.models import word_embeddings
    e = word_embeddings(params, cfg, ids)
    f = lambda e: forward(params, cfg, None, mask, word_embeds=e, **kwargs)
    out = f(e)
    grad = jax.grad(lambda e: jnp.sum(jnp.sin(f(e).logits)))(e)
    return out.hidden, out.logits, grad


def test_encoder_padding_only_blocks_take_the_key_lengths_path_unchanged(monkeypatch):
    cfg, params, ids, mask = _model()
    want = _logits_and_grad(params, cfg, ids, mask)
    calls = _as_if_cuda(monkeypatch, dtypes=(BF16, F32))  # float32 admitted, for a tight comparison
    got = _logits_and_grad(params, cfg, ids, mask)
    assert calls, "the padding-only blocks did not reach the cuDNN path"
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_encoder_in_bf16_on_cuda_takes_the_key_lengths_path(monkeypatch):
    cfg, params, ids, mask = _model(dtype="bfloat16")
    want = forward(params, cfg, ids, mask).logits
    calls = _as_if_cuda(monkeypatch)
    got = forward(params, cfg, ids, mask).logits
    assert calls
    np.testing.assert_allclose(got, want, atol=2e-2)


DEBERTA_RELATIVE = dict(relative_attention=True, position_buckets=8, max_relative_positions=16,
                        pos_att_type=("p2c", "c2p"), share_att_key=True, position_biased_input=False)


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert", "electra"])
def test_other_families_without_score_terms_take_it_too(monkeypatch, family):
    cfg, params, ids, mask = _model(family)  # DeBERTa without relative attention: padding only
    want = _logits_and_grad(params, cfg, ids, mask)
    calls = _as_if_cuda(monkeypatch, dtypes=(BF16, F32))
    got = _logits_and_grad(params, cfg, ids, mask)
    assert bool(calls) == (family != "modernbert")  # ModernBERT's blocks always carry a window bias
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.mark.parametrize("family,kwargs", [
    ("bert", {"attn_bias": True}),  # AD-DROP's additive bias
    ("deberta-v2", DEBERTA_RELATIVE),  # relative-position score terms
    ("modernbert", {}),  # padding and local window as one bias
    ("bert", {"dtype": "float32"}),  # cuDNN takes half precision only
])
def test_encoder_blocks_with_a_bias_or_in_float32_stay_on_xla(monkeypatch, family, kwargs):
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", "bfloat16")
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in DEBERTA_RELATIVE}
    cfg, params, ids, mask = _model(family, dtype=dtype, **overrides)
    if kwargs.pop("attn_bias", False):
        kwargs["attn_bias"] = jnp.zeros((cfg.num_layers, 3, 1, 12, 12))
    want = forward(params, cfg, ids, mask, **kwargs).logits
    calls = _as_if_cuda(monkeypatch)
    got = forward(params, cfg, ids, mask, **kwargs).logits
    assert not calls
    np.testing.assert_array_equal(got, want)


def test_encoder_probabilities_stay_explicit(monkeypatch):
    cfg, params, ids, mask = _model(dtype="bfloat16")
    calls = _as_if_cuda(monkeypatch)
    out = forward(params, cfg, ids, mask, return_attention=True)
    perturb = jnp.zeros((cfg.num_layers, 3, cfg.num_heads, 12, 12))
    forward(params, cfg, ids, mask, attn_perturb=perturb)
    assert not calls
    probs = out.attention.astype(F32)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs[:, 1, :, :, 7:], 0.0)  # padded keys


def test_a_refused_cudnn_call_falls_back_to_xla_with_a_debug_line(monkeypatch, caplog):
    q, k, v = _inputs(MASK, dtype=BF16, d=8)
    want = attention(q, k, v, padding_bias(MASK))  # XLA's, on any backend

    def refuse(*args):
        raise NotImplementedError("no flash attention here")

    monkeypatch.setattr(attention_module, "current_backend", lambda: ("cuda", (9, 0)))
    monkeypatch.setattr(attention_module, "padded_attention", refuse)
    with caplog.at_level(logging.DEBUG, logger=attention_module.__name__):
        got = attention(q, k, v, key_mask=MASK)
    np.testing.assert_array_equal(got, want)
    assert "no flash attention here" in caplog.text
