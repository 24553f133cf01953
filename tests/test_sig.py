"""SIG: per-unit completeness (paper §2), normalisation, special tokens, and SIG == IG on one unit."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from helpers import encoded, ig_fn, tiny_model

from jaxattr.attribution import sequential_integrated_gradients
from jaxattr.attribution.sig import unit_ids
from jaxattr.models import forward


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, _ = tiny_model(tmp_path_factory.mktemp("tiny_bert_sig"))
    return model


@functools.cache
def sig_fn(cfg, unit: str, mask_id: int, pad_id: int):
    return jax.jit(lambda p, b: sequential_integrated_gradients(p, cfg, b, steps=50, unit=unit, mask_id=mask_id,
                                                                pad_id=pad_id))


@pytest.mark.parametrize("unit", ["token", "word"])
def test_sig_per_unit_completeness(tiny, unit):
    """sum_j SIG_ij = F(x) - F(x̄^i) for every unit i, to 1e-3 relative, with 50 Gauss-Legendre steps.

    F(x̄^i) is computed independently here: the model on the token ids with unit i's pieces -> [MASK].
    """
    _, batch = encoded(tiny)
    res = sig_fn(tiny.cfg, unit, tiny.mask_id, tiny.pad_id)(tiny.params, batch)
    raw, uid = np.asarray(res.raw), np.asarray(unit_ids(batch, unit))
    rows, keys = [], []
    for b in range(raw.shape[0]):
        for u in sorted(set(uid[b][uid[b] >= 0].tolist())):
            ids = batch["input_ids"][b].copy()
            ids[uid[b] == u] = tiny.mask_id
            rows.append((b, ids))
            keys.append((b, u))
    ids = np.stack([r[1] for r in rows])
    masked_logits = np.asarray(forward(tiny.params, tiny.cfg, ids, batch["attention_mask"][[r[0] for r in rows]],
                                       batch["token_type_ids"][[r[0] for r in rows]]).logits)
    checked = 0
    for k, (b, u) in enumerate(keys):
        tgt = int(res.target[b])
        gap = float(res.f_x[b]) - float(masked_logits[k, tgt])
        got = raw[b][uid[b] == u].sum()
        assert abs(got - gap) <= 1e-3 * abs(gap) + 1e-6, (b, u, got, gap)
        assert abs(float(res.unit_delta[b, u])) <= 1e-3 * abs(gap) + 1e-6
        checked += 1
    assert checked >= 12
    if unit == "word":  # "zebra" (5 pieces) is one unit: only its pieces move together
        assert len(set(uid[1][2:7].tolist())) == 1


def test_sig_normalisation_and_special_tokens(tiny):
    _, batch = encoded(tiny)
    res = sig_fn(tiny.cfg, "token", tiny.mask_id, tiny.pad_id)(tiny.params, batch)
    scores, raw = np.asarray(res.scores), np.asarray(res.raw)
    np.testing.assert_allclose(np.linalg.norm(scores, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, raw / np.linalg.norm(raw, axis=-1, keepdims=True), rtol=1e-5)
    special = (batch["attention_mask"] == 0) | (batch["word_ids"] < 0)
    assert np.all(scores[special] == 0) and np.all(raw[special] == 0)
    # SIG is not IG: the baselines differ (one word masked vs all)
    ig = ig_fn(tiny.cfg, "mask", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    assert not np.allclose(raw, np.asarray(ig.scores), rtol=1e-2)


def test_sig_equals_ig_with_one_word(tiny):
    """With a single word piece, x̄^1 is IG's baseline: SIG's raw scores are IG's."""
    _, batch = encoded(tiny, texts=["cars", "good", "bad"])
    res = sig_fn(tiny.cfg, "token", tiny.mask_id, tiny.pad_id)(tiny.params, batch)
    ig = ig_fn(tiny.cfg, "mask", mask_id=tiny.mask_id, pad_id=tiny.pad_id)(tiny.params, batch)
    np.testing.assert_allclose(np.asarray(res.raw), np.asarray(ig.scores), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(res.delta), np.asarray(ig.delta), atol=1e-5)
