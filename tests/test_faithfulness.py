"""Faithfulness metrics (LO / Comp / Suff / AOPC) against values computed independently.

The oracle is HF PyTorch `BertForSequenceClassification` loaded from the exported tiny model, driven by a
plain Python loop that literally deletes / keeps / masks tokens in a list (no code shared with the
vectorised implementation beyond the weights).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxattr.data.batch import delete_tokens
from jaxattr.errors import UserError
from jaxattr.evaluation.faithfulness import (
    METRICS,
    aopc_comprehensiveness,
    comprehensiveness,
    faithfulness,
    log_odds,
    sufficiency,
    topk_masks,
)
from jaxattr.models import init_params, save_hf_dir, tiny_config

MASK_ID = 4
LENGTHS = [5, 7, 12, 16, 3, 10]  # valid tokens per example, [CLS] and [SEP] included
T = 16


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.0)
    params = init_params(cfg, jax.random.key(3))
    # Sharpen the random model so that removing a token visibly moves the probabilities.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    rng = np.random.default_rng(0)
    b = len(LENGTHS)
    batch = {k: np.zeros((b, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch["word_ids"] = np.full((b, T), -1, np.int32)
    for i, n in enumerate(LENGTHS):
        batch["input_ids"][i, :n] = rng.integers(5, cfg.vocab_size, n)
        batch["input_ids"][i, 0], batch["input_ids"][i, n - 1] = 2, 3  # [CLS], [SEP]
        batch["attention_mask"][i, :n] = 1
        batch["word_ids"][i, 1:n - 1] = np.arange(n - 2)
    scores = rng.normal(size=(b, T)).astype(np.float32)
    d = tmp_path_factory.mktemp("tiny_hf")
    save_hf_dir(cfg, params, d)
    return cfg, params, batch, scores, d


def _oracle(hf_dir, batch, scores, fractions=tuple(range(1, 11))):
    """Per-example metrics by literally editing token lists and running HF PyTorch."""
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(hf_dir)).eval()

    def prob(tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokens])).logits[0]
        return torch.softmax(logits.double(), -1).numpy()

    out = {m: [] for m in METRICS}
    for i, n in enumerate(batch["attention_mask"].sum(1)):
        toks = [int(t) for t in batch["input_ids"][i, :n]]
        special = [int(w) < 0 for w in batch["word_ids"][i, :n]]
        probs = prob(toks)
        y = int(np.argmax(probs))
        p0 = probs[y]
        cand = [j for j in range(n) if not special[j]]
        ranked = sorted(cand, key=lambda j: (-float(scores[i, j]), j))
        k = (n * 20) // 100  # int(0.2 * n)
        masked = [MASK_ID if j in ranked[:k] else t for j, t in enumerate(toks)]
        out["log_odds"].append(np.log(prob(masked)[y]) - np.log(p0))
        out["comprehensiveness"].append(p0 - prob([t for j, t in enumerate(toks) if j not in ranked[:k]])[y])
        # DIG's sufficiency returns 0 when int(0.2 n) is 0 (no rationale to keep)
        out["sufficiency"].append(p0 - prob([t for j, t in enumerate(toks) if special[j] or j in ranked[:k]])[y]
                                  if k else 0.0)
        comp, suff, prev = [], [], None
        for v in fractions:  # tenths
            kv = (v * len(cand)) // 10
            if kv == 0 or kv == prev:
                continue
            prev = kv
            top = set(ranked[:kv])
            comp.append(p0 - prob([t for j, t in enumerate(toks) if j not in top])[y])
            suff.append(p0 - prob([t for j, t in enumerate(toks) if special[j] or j in top])[y])
        out["aopc_comprehensiveness"].append(np.mean(comp) if comp else 0.0)
        out["aopc_sufficiency"].append(np.mean(suff) if suff else 1.0)
    return {m: np.asarray(v) for m, v in out.items()}


def test_metrics_match_independent_torch_loop(model_and_batch):
    cfg, params, batch, scores, hf_dir = model_and_batch
    got = faithfulness(params, cfg, batch, scores, mask_id=MASK_ID, chunk_size=8)
    want = _oracle(hf_dir, batch, scores)
    for m in METRICS:
        np.testing.assert_allclose(got[m], want[m], atol=2e-5, err_msg=m)
    # The metrics must actually move on this model, or the comparison above proves little.
    assert np.abs(want["comprehensiveness"]).max() > 1e-2
    assert np.abs(want["log_odds"]).max() > 1e-2
    # Single-metric entry points agree with the shared pass; chunking does not change anything.
    np.testing.assert_allclose(log_odds(params, cfg, batch, scores, mask_id=MASK_ID), got["log_odds"], atol=1e-6)
    np.testing.assert_allclose(comprehensiveness(params, cfg, batch, scores, chunk_size=3),
                               got["comprehensiveness"], atol=1e-6)
    np.testing.assert_allclose(sufficiency(params, cfg, batch, scores), got["sufficiency"], atol=1e-6)
    np.testing.assert_allclose(aopc_comprehensiveness(params, cfg, batch, scores), got["aopc_comprehensiveness"],
                               atol=1e-6)


def test_sufficiency_is_zero_when_k_rounds_to_zero(model_and_batch):
    """A 4-token input has int(0.2 * 4) = 0 rationale tokens: DIG returns 0, not p(ŷ) − p(one token)."""
    cfg, params, batch, scores, _ = model_and_batch
    short = {k: np.asarray(v)[:1].copy() for k, v in batch.items()}
    short["attention_mask"][:, 4:] = 0
    short["word_ids"][:, 3:] = -1
    got = faithfulness(params, cfg, short, np.asarray(scores)[:1], mask_id=MASK_ID,
                       metrics=("sufficiency", "comprehensiveness"))
    assert got["sufficiency"][0] == 0.0
    assert abs(got["comprehensiveness"][0]) < 1e-6  # nothing deleted either (up to float32 rounding)


def test_selection_and_deletion_by_hand():
    # One example of 12 valid tokens: [CLS] w1..w10 [SEP] + 4 padding; k = int(0.2 * 12) = 2.
    scores = np.array([[9.0, 0.1, 5.0, 0.2, 0.3, 7.0, 0.4, 0.5, 0.6, 0.7, 0.8, 99.0, 50, 50, 50, 50]])
    valid = np.arange(16) < 12
    words = valid & (np.arange(16) > 0) & (np.arange(16) < 11)
    top = np.asarray(topk_masks(scores, words[None], np.array([[2, 3]])))
    # [CLS] (9.0) and [SEP] (99.0) and padding are never picked: top-2 = positions 5, 2; top-3 adds 10.
    assert np.flatnonzero(top[0, 0]).tolist() == [2, 5]
    assert np.flatnonzero(top[0, 1]).tolist() == [2, 5, 10]
    ids = np.arange(100, 116)[None]
    out = delete_tokens({"input_ids": ids, "attention_mask": valid[None].astype(np.int32)}, top[0, :1], pad_id=0)
    new_ids, new_mask = np.asarray(out["input_ids"]), np.asarray(out["attention_mask"])
    assert new_ids[0].tolist() == [100, 101, 103, 104, 106, 107, 108, 109, 110, 111] + [0] * 6
    assert new_mask[0].tolist() == [1] * 10 + [0] * 6


def test_bad_input_is_one_clear_error(model_and_batch):
    cfg, params, batch, scores, _ = model_and_batch
    with pytest.raises(UserError, match="unknown metric 'bleu'"):
        faithfulness(params, cfg, batch, scores, mask_id=MASK_ID, metrics=("bleu",))
    with pytest.raises(UserError, match="one score per token"):
        faithfulness(params, cfg, batch, scores[:, :5], mask_id=MASK_ID)
