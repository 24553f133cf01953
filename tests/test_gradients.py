"""Saliency, Grad×Input, IG and GradientShap: axioms (completeness, special tokens), baselines, targets.

Oracles: the completeness axiom of IG, autodiff of the encoder by hand, Captum's quadrature rules;
Captum/tint parity on the same converted model lives in tests/test_peers.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import encoded, ig_fn, tiny_model

from jaxattr.attribution import (
    grad_x_input,
    gradient_shap,
    quadrature,
    saliency,
    word_scores,
)
from jaxattr.attribution.gradients import METHODS, baseline_ids
from jaxattr.models import forward, word_embeddings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, _ = tiny_model(tmp_path_factory.mktemp("tiny_bert"))
    return model


def test_quadrature_weights_sum_to_one_and_trapezoid_is_exact_for_lines():
    for method in METHODS:
        for n in (2, 5, 10):
            a, w = quadrature(method, n)
            want = (n - 1) / n if method == "captum_trapezoid" else 1.0
            np.testing.assert_allclose(w.sum(), want, atol=1e-12, err_msg=f"{method} n={n}")
    a, w = quadrature("riemann_trapezoid", 4)
    np.testing.assert_allclose(w @ (3 * a + 1), 2.5, atol=1e-12)  # the integral of 3a + 1 over [0, 1]


def test_quadrature_matches_captum():
    approx = pytest.importorskip("captum.attr._utils.approximation_methods")
    for method in METHODS:
        if method == "riemann_trapezoid":
            continue  # ours sums to 1; Captum's weights are `captum_trapezoid`
        a, w = quadrature(method, 7)
        sizes, alphas = approx.approximation_parameters(method.replace("captum_", "riemann_"))
        np.testing.assert_allclose(a, alphas(7), atol=1e-7)
        np.testing.assert_allclose(w, sizes(7), atol=1e-7)
    with pytest.raises(ValueError):
        quadrature("simpson", 5)


def test_tokenizer_splits_words(tiny):
    exs, _ = encoded(tiny)
    assert "[UNK]" not in exs[0]["tokens"]
    assert exs[1]["tokens"][2:7] == ["z", "##e", "##b", "##r", "##a"]  # one word, five pieces


@functools.cache
def logits_fn(cfg):
    return jax.jit(lambda p, ids, am, tt: forward(p, cfg, ids, am, tt).logits)


@pytest.mark.parametrize("baseline", ["mask", "zero"])
def test_ig_completeness(tiny, baseline):
    """|sum attr - (F(x) - F(b))| <= 1e-3 |F(x) - F(b)| with 50 Gauss-Legendre steps in fp32."""
    _, batch = encoded(tiny)
    res = ig_fn(tiny.cfg, baseline, mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    gap = np.asarray(res.f_x - res.f_baseline)
    assert np.all(np.abs(gap) > 1e-2), "the model must separate input and baseline for the test to mean much"
    np.testing.assert_array_less(np.abs(np.asarray(res.delta)), 1e-3 * np.abs(gap))
    np.testing.assert_allclose(np.asarray(res.scores).sum(-1), gap, rtol=1e-3)
    # special tokens and padding get exactly 0
    special = (batch["attention_mask"] == 0) | (batch["word_ids"] < 0)
    assert np.all(np.asarray(res.scores)[special] == 0)
    assert np.all(np.asarray(res.scores)[~special] != 0)


def test_baseline_moves_only_word_embeddings(tiny):
    """F(baseline) is the model on [CLS] [MASK]... [SEP] token ids: position/type embeddings stay put."""
    _, batch = encoded(tiny)
    res = ig_fn(tiny.cfg, "mask", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    masked = np.where((batch["word_ids"] >= 0), tiny.mask_id, batch["input_ids"])
    logits = logits_fn(tiny.cfg)(tiny.params, masked, batch["attention_mask"], batch["token_type_ids"])
    expect = np.asarray(logits)[np.arange(3), np.asarray(res.target)]
    np.testing.assert_allclose(np.asarray(res.f_baseline), expect, rtol=1e-5, atol=1e-6)
    # the baselines' token ids: word pieces -> [MASK] / [PAD] / zero vector, special tokens and padding kept
    for kind, tok, scale in (("mask", tiny.mask_id, 1.0), ("pad", tiny.pad_id, 1.0), ("zero", None, 0.0)):
        ids, sc = baseline_ids(batch, kind, tiny.mask_id, tiny.pad_id)
        words = batch["word_ids"] >= 0
        assert np.all(np.asarray(ids)[~words] == batch["input_ids"][~words])
        assert np.all(np.asarray(sc)[~words] == 1.0) and np.all(np.asarray(sc)[words] == scale)
        if tok is not None:
            assert np.all(np.asarray(ids)[words] == tok)


def test_targets_given_and_prob_output(tiny):
    _, batch = encoded(tiny)
    tgt = jnp.asarray([2, 0, 1])
    res = ig_fn(tiny.cfg, "mask", "prob", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch, tgt)
    assert list(np.asarray(res.target)) == [2, 0, 1]
    logits = logits_fn(tiny.cfg)(tiny.params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    probs = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(np.asarray(res.f_x), probs[np.arange(3), [2, 0, 1]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.prob), probs[np.arange(3), [2, 0, 1]], rtol=1e-5)
    gap = np.asarray(res.f_x - res.f_baseline)
    np.testing.assert_array_less(np.abs(np.asarray(res.delta)), 1e-3 * np.abs(gap) + 1e-7)
    pred = ig_fn(tiny.cfg, "mask", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    assert list(np.asarray(pred.target)) == list(np.argmax(np.asarray(logits), -1))


def test_regression_head_completeness(tmp_path):
    model, _ = tiny_model(tmp_path, num_labels=1)
    assert model.cfg.problem_type == "regression"
    _, batch = encoded(model)
    res = ig_fn(model.cfg, "mask", mask_id=model.mask_id, pad_id=model.pad_id)(model.params, batch)
    logits = logits_fn(model.cfg)(model.params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    np.testing.assert_allclose(np.asarray(res.f_x), np.asarray(logits)[:, 0], rtol=1e-5)
    gap = np.asarray(res.f_x - res.f_baseline)
    np.testing.assert_array_less(np.abs(np.asarray(res.delta)), 1e-3 * np.abs(gap))


def test_saliency_and_grad_x_input_by_hand(tiny):
    _, batch = encoded(tiny)
    x = word_embeddings(tiny.params, tiny.cfg, batch["input_ids"])

    def f(e):
        logits = forward(tiny.params, tiny.cfg, None, batch["attention_mask"], batch["token_type_ids"],
                         word_embeds=e).logits
        return jnp.sum(jnp.max(logits, -1))

    g = np.asarray(jax.jit(jax.grad(f))(x))
    ok = (batch["attention_mask"] > 0) & (batch["word_ids"] >= 0)
    both = jax.jit(lambda p, b: (saliency(p, tiny.cfg, b).scores, grad_x_input(p, tiny.cfg, b).scores))
    sal, gxi = both(tiny.params, batch)
    np.testing.assert_allclose(np.asarray(sal), np.where(ok, np.abs(g).sum(-1), 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gxi), np.where(ok, (g * np.asarray(x)).sum(-1), 0), rtol=1e-4, atol=1e-6)


def test_gradient_shap_estimates_ig(tiny):
    """With stdev 0, GradientShap is a Monte-Carlo estimate of IG: many samples agree with IG."""
    _, batch = encoded(tiny)
    ig = ig_fn(tiny.cfg, "mask", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    gs = jax.jit(lambda p, b: gradient_shap(p, tiny.cfg, b, jax.random.key(0), samples=128, mask_id=tiny.mask_id,
                                            pad_id=tiny.pad_id))(tiny.params, batch)
    a, b = np.asarray(gs.scores), np.asarray(ig.scores)
    assert np.linalg.norm(a - b) < 0.2 * np.linalg.norm(b)
    assert np.all(np.asarray(gs.scores)[batch["word_ids"] < 0] == 0)


def test_word_scores_sum_pieces(tiny):
    exs, _ = encoded(tiny)
    ex = exs[1]  # "zebra" is five pieces
    scores = np.arange(len(ex["input_ids"]), dtype=float)
    ws = word_scores(scores, ex["word_ids"], len(ex["words"]))
    assert ex["words"][1] == "zebra"
    assert ws[1] == sum(scores[2:7])
    assert ws.sum() == scores[ex["word_ids"] >= 0].sum()
