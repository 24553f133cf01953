"""The IBA paper's reference comparators: `ig_embedding` (Layer IG over the embedding output) and LIME's
bag-of-words features (`lime(unit="bow")`).

Oracles: Captum's `LayerIntegratedGradients` on the HF PyTorch model's embeddings module (fp64), IG's
completeness axiom, explicit per-sample deletions with sklearn's `Ridge(alpha=1)` under the lime kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import tiny_model
from hf_tiny import random_batch, save_tiny
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances

from jaxattr.attribution import registry
from jaxattr.attribution.driver import Driver
from jaxattr.attribution.gradients import embedding_ig
from jaxattr.attribution.lime import KERNEL_WIDTH, lime, word_types
from jaxattr.data import encode_texts, pad_batch
from jaxattr.errors import UserError
from jaxattr.models import forward, load_hf_dir

TEXTS = ["i love self driving cars !", "the zebra news is very bad", "you hate it"]
PAIRS = ["good news", "not bad at all", "cars"]  # second segments: token types 1


STEPS = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny BERT (jaxattr, HF fp64), text pairs, and `embedding_ig` as the reference runs it: 10 Gauss-Legendre
    steps on the softmax probability of class 0."""
    model, torch_model = tiny_model(tmp_path_factory.mktemp("tiny_bert_reference"))
    exs = encode_texts(model.tokenizer, TEXTS, PAIRS)
    for i, ex in enumerate(exs):
        ex["id"] = f"ex{i}"
    batch = pad_batch(exs, 32, model.pad_id)
    tgt = jnp.zeros(len(exs), jnp.int32)
    ours = jax.jit(lambda p, b: embedding_ig(p, model.cfg, b, steps=STEPS, pad_id=model.pad_id, output="prob",
                                             target=tgt))(model.params, batch)
    return model, torch_model.double().eval(), exs, ours


def test_ig_embedding_equals_captum_layer_ig(setup):
    """Captum's `LayerIntegratedGradients` on `bert.embeddings`, baseline ids [PAD] at the word pieces (the
    reference's `[CLS] + [PAD] * n + [SEP]` with the input's token types), its default Gauss-Legendre rule."""
    from captum.attr import LayerIntegratedGradients

    model, torch_model, exs, ours = setup

    def f(ids, mask, types):
        return torch.softmax(torch_model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, -1)

    lig = LayerIntegratedGradients(f, torch_model.bert.embeddings)
    for i, ex in enumerate(exs):
        ids = torch.tensor(ex["input_ids"], dtype=torch.long)[None]
        base = torch.where(torch.tensor(ex["word_ids"] >= 0)[None], model.pad_id, ids)  # [CLS]/[SEP] kept
        types = torch.tensor(ex["token_type_ids"], dtype=torch.long)[None]
        assert types.sum() > 0  # the pair's token types reach both the input and the baseline
        attr, delta = lig.attribute(ids, baselines=base, target=0, n_steps=STEPS, method="gausslegendre",
                                    additional_forward_args=(torch.ones_like(ids), types),
                                    return_convergence_delta=True)
        theirs = attr.sum(-1)[0].detach().numpy()
        got = np.asarray(ours.scores[i])
        n = len(ex["input_ids"])
        assert np.abs(theirs).max() > 0
        assert np.abs(got[:n] - theirs).max() <= 1e-4 * np.abs(theirs).max()
        assert np.all(got[n:] == 0) and np.all(got[:n][ex["word_ids"] < 0] == 0)
        assert float(ours.delta[i]) == pytest.approx(float(delta[0]), abs=1e-4 * np.abs(theirs).sum())


@pytest.mark.extra  # completeness on ModernBERT; the Captum test checks the BERT scores and delta exactly
def test_ig_embedding_completeness(tmp_path):
    """sum(scores) -> F(x) - F(b) with many steps (the logit) on ModernBERT, whose embedding output has no
    position table (rotary positions) but a LayerNorm; BERT's is checked against Captum above."""
    family = "modernbert"
    save_tiny(family, tmp_path)
    cfg, params = load_hf_dir(tmp_path)
    batch = {k: jnp.asarray(v) for k, v in random_batch(family, lengths=(12, 7, 9)).items()}
    am = np.asarray(batch["attention_mask"])
    pos = np.arange(am.shape[1])[None]
    special = (pos == 0) | (pos == am.sum(-1)[:, None] - 1) | (am == 0)
    batch["word_ids"] = jnp.asarray(np.where(special, -1, pos - 1), jnp.int32)
    res = jax.jit(lambda p, b: embedding_ig(p, cfg, b, steps=32, pad_id=cfg.pad_token_id))(params, batch)
    gap = np.asarray(res.f_x - res.f_baseline)
    assert np.all(np.abs(gap) > 1e-2), f"{family}: input and baseline give the same output"
    np.testing.assert_array_less(np.abs(np.asarray(res.delta)), 1e-3 * np.abs(gap))
    assert np.all(np.asarray(res.scores)[special] == 0)


def test_ig_embedding_through_the_driver(setup):
    model, _, exs, ours = setup
    drv = Driver(model.params, model.cfg, "ig_embedding", {"steps": STEPS}, mask_id=model.mask_id,
                 pad_id=model.pad_id, output="prob", buckets=(32,))
    got = {r["id"]: r for step in drv.run(exs, target=0) for r in step.records}
    for i, ex in enumerate(exs):
        want = np.asarray(ours.scores[i, :len(ex["input_ids"])])
        np.testing.assert_allclose(got[ex["id"]]["scores"], want, rtol=2e-4, atol=1e-6 * np.abs(want).max())
        assert got[ex["id"]]["delta"] == pytest.approx(float(ours.delta[i]), abs=1e-5)
    spec = registry.get("ig_embedding")
    assert spec.resolve_options({}) == {"steps": 10, "method": "gausslegendre", "baseline": "pad"}
    for bad in ({"baseline": "zero"}, {"steps": "auto"}, {"method": "simpson"}):
        with pytest.raises(UserError):
            spec.resolve_options(bad)


def _lime_y(params, cfg, ids, kept_rows, target):
    """The target probability of each sample: the kept tokens, padded (one forward for all samples)."""
    t = len(ids)
    rows = np.zeros((len(kept_rows), t), np.int32)
    mask = np.zeros_like(rows)
    for s, row in enumerate(kept_rows):
        rows[s, :len(row)] = ids[row]
        mask[s, :len(row)] = 1
    return np.asarray(jax.nn.softmax(forward(params, cfg, rows, mask).logits, -1)[:, target])


@pytest.fixture(scope="module")
def lime_runs(tiny_bert):
    """Row 0: five distinct words (word 2 = [10, 13] shares a piece with word 0 = [10, 11] only); row 1: words
    [10 11], [12], [10 11], [10], [12], [13 11], four word types (a prefix or a shared piece is not the same
    word). LIME over words and over distinct words with the same key."""
    cfg, params = tiny_bert
    ids = np.asarray([[2, 10, 11, 12, 10, 13, 14, 15, 3, 0, 0, 0],
                      [2, 10, 11, 12, 10, 11, 10, 12, 13, 11, 3, 0]], np.int32)
    word_ids = np.asarray([[-1, 0, 0, 1, 2, 2, 3, 4, -1, -1, -1, -1],
                           [-1, 0, 0, 1, 2, 2, 3, 4, 5, 5, -1, -1]], np.int32)
    mask = (np.arange(12) < np.asarray([[9], [11]])).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids}
    run = jax.jit(lambda b, k, unit: lime(params, cfg, b, key=k, samples=24, unit=unit), static_argnums=2)
    keys = jax.random.split(jax.random.key(3), 2)
    return cfg, params, batch, run(batch, keys, "word"), run(batch, keys, "bow")


def test_lime_bow_equals_word_on_distinct_words(lime_runs):
    *_, word, bow = lime_runs
    for a, b in zip(word, bow):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])
    assert not np.array_equal(np.asarray(word.features[1]), np.asarray(bow.features[1]))


def test_lime_bow_deletes_every_occurrence_and_fits_sklearn_ridge(lime_runs):
    """A sample keeps or deletes both occurrences of a repeated word together; the coefficients are sklearn's
    Ridge(alpha=1) with the lime kernel's weights over the word types; each occurrence's word score is the
    coefficient."""
    cfg, params, batch, _, out = lime_runs
    ids, word_ids = batch["input_ids"][1], batch["word_ids"][1]
    first = np.asarray(word_types(batch, jnp.asarray(batch["word_ids"] >= 0)))[1]
    np.testing.assert_array_equal(first[:6], [0, 1, 0, 3, 1, 5])
    types = [0, 1, 3, 5]
    keep = np.asarray(out.features[1])
    assert not keep[:, [2, 4, 6, 7, 8, 9, 10, 11]].any()  # only the first occurrences are features
    keep = keep[:, types]
    assert keep[0].all() and not keep[1:].all(1).any() and not keep[:, 0].all()
    kept_rows = [[0, *[j for j in range(1, 10) if keep[s, types.index(first[word_ids[j]])]], 10]
                 for s in range(len(keep))]
    y = _lime_y(params, cfg, ids, kept_rows, int(out.target[1]))
    np.testing.assert_allclose(np.asarray(out.probs[1]), y, rtol=1e-5, atol=1e-6)
    dist = pairwise_distances(keep.astype(float), np.ones((1, len(types))), metric="cosine").ravel() * 100
    ridge = Ridge(alpha=1.0).fit(keep.astype(float), y, sample_weight=np.sqrt(np.exp(-(dist**2) / KERNEL_WIDTH**2)))
    scores = np.asarray(out.scores[1])
    pieces = np.bincount(word_ids[word_ids >= 0])
    per_token = np.asarray([ridge.coef_[types.index(first[word_ids[j]])] / pieces[word_ids[j]] if word_ids[j] >= 0
                            else 0.0 for j in range(12)])
    np.testing.assert_allclose(scores, per_token, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(float(out.intercept[1]), ridge.intercept_, rtol=1e-3, atol=1e-5)
    with pytest.raises(UserError, match="bow"):
        registry.get("lime").resolve_options({"unit": "bag"})
