"""LIME: lime's sampling and kernel, the vectorised forward over samples, the ridge fit vs sklearn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances

from jaxattr.attribution import registry
from jaxattr.attribution.baselines import random_attribution
from jaxattr.attribution.lime import KERNEL_WIDTH, lime
from jaxattr.models import forward


def test_lime_equals_per_sample_loop_and_sklearn_ridge(tiny_bert):
    cfg, params = tiny_bert
    rng = np.random.default_rng(0)
    lengths = [10, 6]
    ids = np.zeros((2, 10), np.int32)
    mask = np.zeros((2, 10), np.int32)
    word_ids = np.full((2, 10), -1, np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 100, n)
        mask[i, :n] = 1
        word_ids[i, 1:n - 1] = np.arange(n - 2)
    batch = {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids}
    out = lime(params, cfg, batch, key=jax.random.key(0), samples=12, chunk=8)
    fwd = jax.jit(lambda x: forward(params, cfg, x, jnp.ones_like(x)).logits)  # one compile per length
    for i, n in enumerate(lengths):
        feats = np.arange(1, n - 1)
        keep = np.asarray(out.features[i])[:, feats]  # [S, d]
        assert keep[0].all() and (~keep[1:]).sum(1).min() >= 1  # sample 0 = the input; others delete >= 1
        y = []
        for s in range(keep.shape[0]):  # one forward per sample on the really shortened sequence
            kept = [ids[i, 0], *ids[i, feats][keep[s]], ids[i, n - 1]]
            x = np.asarray(kept, np.int32)[None]
            y.append(float(jax.nn.softmax(fwd(x)[0])[out.target[i]]))
        np.testing.assert_allclose(np.asarray(out.probs[i]), y, rtol=1e-5, atol=1e-6)
        # lime's kernel: cosine distance to the all-ones vector, x100, sqrt(exp(-d^2 / 25^2))
        dist = pairwise_distances(keep.astype(float), np.ones((1, len(feats))), metric="cosine").ravel() * 100
        w = np.sqrt(np.exp(-(dist**2) / KERNEL_WIDTH**2))
        ridge = Ridge(alpha=1.0, fit_intercept=True).fit(keep.astype(float), y, sample_weight=w)
        np.testing.assert_allclose(np.asarray(out.scores[i, feats]), ridge.coef_, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(float(out.intercept[i]), ridge.intercept_, rtol=1e-3, atol=1e-5)
        assert np.all(np.asarray(out.scores[i, [0, *range(n - 1, 10)]]) == 0)


def test_random_baseline_and_registry(tiny_bert):
    cfg, params = tiny_bert
    batch = {"input_ids": np.full((2, 6), 9, np.int32), "attention_mask": np.array([[1] * 6, [1] * 4 + [0] * 2]),
             "word_ids": np.array([[-1, 0, 1, 2, 3, -1], [-1, 0, 1, -1, -1, -1]])}
    a = np.asarray(random_attribution(params, cfg, batch, key=jax.random.key(0)).scores)
    b = np.asarray(random_attribution(params, cfg, batch, key=jax.random.key(0)).scores)
    c = np.asarray(random_attribution(params, cfg, batch, key=jax.random.key(1)).scores)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a[0, 1:5] > 0) and a[0, 0] == 0 and a[0, 5] == 0 and np.all(a[1, 3:] == 0)
    assert {"iba", "lime", "random"} <= set(registry.names())


def test_lime_over_words_deletes_whole_words_and_fits_their_coefficients(tiny_bert):
    """unit="word": the features are words (the lime package's text features); each sample deletes whole
    words, and the pieces of a word share its sklearn ridge coefficient equally."""
    cfg, params = tiny_bert
    rng = np.random.default_rng(1)
    n = 9
    ids = rng.integers(5, 100, (1, n)).astype(np.int32)
    word_ids = np.asarray([[-1, 0, 0, 1, 2, 2, 2, 3, -1]], np.int32)  # 4 words of 2, 1, 3, 1 pieces
    batch = {"input_ids": ids, "attention_mask": np.ones((1, n), np.int32), "word_ids": word_ids}
    out = lime(params, cfg, batch, key=jax.random.key(3), samples=16, unit="word")
    keep = np.asarray(out.features[0])[:, :4]  # [S, words]
    fwd = jax.jit(lambda x: forward(params, cfg, x, jnp.ones_like(x)).logits)
    y = []
    for s in range(keep.shape[0]):
        kept = [ids[0, 0], *[ids[0, j] for j in range(1, n - 1) if keep[s, word_ids[0, j]]], ids[0, n - 1]]
        y.append(float(jax.nn.softmax(fwd(np.asarray(kept, np.int32)[None])[0])[out.target[0]]))
    np.testing.assert_allclose(np.asarray(out.probs[0]), y, rtol=1e-5, atol=1e-6)
    dist = pairwise_distances(keep.astype(float), np.ones((1, 4)), metric="cosine").ravel() * 100
    ridge = Ridge(alpha=1.0).fit(keep.astype(float), y, sample_weight=np.sqrt(np.exp(-(dist**2) / KERNEL_WIDTH**2)))
    scores = np.asarray(out.scores[0])
    per_word = np.asarray([scores[word_ids[0] == k].sum() for k in range(4)])
    np.testing.assert_allclose(per_word, ridge.coef_, rtol=1e-3, atol=1e-5)
    assert scores[1] == scores[2] and scores[0] == scores[-1] == 0
