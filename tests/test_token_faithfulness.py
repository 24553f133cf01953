"""Faithfulness metrics and the degradation test on a token-classification model (issue 34): an entity span's
prediction (the mean over its positions of the probability of their tag), its top-k tokens replaced by [MASK]
rather than deleted. Oracle: HF PyTorch `BertForTokenClassification` (the exported tiny model) driven by a plain
loop over examples that edits token lists and averages the span's probabilities in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_tiny import save_tiny

from jaxattr.data.entities import span_target
from jaxattr.errors import UserError
from jaxattr.evaluation.degradation import FRACTIONS, degradation_probs
from jaxattr.evaluation.faithfulness import METRICS, comprehensiveness, faithfulness, sufficiency
from jaxattr.models import load_hf_dir

MASK_ID = 4
T = 16
LENGTHS = [12, 9, 16, 7]  # valid tokens per example, [CLS] and [SEP] included
SPANS = [(3, 4), (2, 5), (5, 8), (1, 2)]  # end exclusive: spans of 1 and of 3 tokens


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_token_faith")
    torch_model = save_tiny("bert", path, num_labels=5, seed=7, task="token").double().eval()
    cfg, params = load_hf_dir(path)
    assert cfg.task == "token"
    rng = np.random.default_rng(1)
    b = len(LENGTHS)
    batch = {k: np.zeros((b, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch["word_ids"] = np.full((b, T), -1, np.int32)
    target = np.full((b, T), -1, np.int32)
    for i, (n, span) in enumerate(zip(LENGTHS, SPANS)):
        batch["input_ids"][i, :n] = rng.integers(5, 100, n)
        batch["input_ids"][i, 0], batch["input_ids"][i, n - 1] = 2, 3  # [CLS], [SEP]
        batch["attention_mask"][i, :n] = 1
        batch["word_ids"][i, 1:n - 1] = np.arange(n - 2)
        target[i] = span_target(T, *span, rng.integers(0, 5, T))
    scores = rng.normal(size=(b, T)).astype(np.float32)
    return cfg, params, torch_model, batch, target, scores


def _span_prob(torch_model, tokens, target):
    """Mean over the span of each position's probability of its class, the model run on `tokens` alone."""
    with torch.no_grad():
        logits = torch_model(input_ids=torch.tensor([tokens])).logits[0]
    probs = torch.softmax(logits, -1).numpy()
    pos = [j for j in range(len(tokens)) if target[j] >= 0]
    return float(np.mean([probs[j, target[j]] for j in pos]))


def _kept_prob(torch_model, tokens, target, kept):
    """`_span_prob` with every token outside `kept` replaced by [MASK]."""
    return _span_prob(torch_model, [t if j in kept else MASK_ID for j, t in enumerate(tokens)], target)


def _ranked(scores, cand):
    return sorted(cand, key=lambda j: (-float(scores[j]), j))


def _oracle(torch_model, batch, target, scores):
    out = {m: [] for m in (*METRICS, "prob")}
    for i, n in enumerate(batch["attention_mask"].sum(1)):
        toks = [int(t) for t in batch["input_ids"][i, :n]]
        special = [int(w) < 0 for w in batch["word_ids"][i, :n]]
        tgt = target[i, :n]
        def p(kept, toks=toks, tgt=tgt):
            return _kept_prob(torch_model, toks, tgt, kept)

        p0 = p(range(n))
        cand = [j for j in range(n) if not special[j]]
        ranked = _ranked(scores[i], cand)
        top = set(ranked[:(n * 20) // 100])  # int(0.2 n)
        masked = p(set(range(n)) - top)
        out["prob"].append(p0)
        out["log_odds"].append(np.log(masked) - np.log(p0))
        out["comprehensiveness"].append(p0 - masked)
        out["sufficiency"].append(p0 - p(top | {j for j in range(n) if special[j]}) if top else 0.0)
        comp, suff, prev = [], [], None
        for v in range(1, 11):
            kv = (v * len(cand)) // 10
            if kv == 0 or kv == prev:
                continue
            prev = kv
            top_v = set(ranked[:kv])
            comp.append(p0 - p(set(range(n)) - top_v))
            suff.append(p0 - p(top_v | {j for j in range(n) if special[j]}))
        out["aopc_comprehensiveness"].append(np.mean(comp))
        out["aopc_sufficiency"].append(np.mean(suff))
    return {m: np.asarray(v) for m, v in out.items()}


def test_metrics_on_a_token_model_match_a_loop_over_examples(setup):
    cfg, params, torch_model, batch, target, scores = setup
    got = faithfulness(params, cfg, batch, scores, mask_id=MASK_ID, target=target, chunk_size=8)
    want = _oracle(torch_model, batch, target, scores)
    for m in (*METRICS, "prob"):
        np.testing.assert_allclose(got[m], want[m], atol=2e-5, err_msg=m)
    assert np.abs(want["comprehensiveness"]).max() > 1e-2 and np.abs(want["sufficiency"]).max() > 1e-2
    assert ((want["prob"] > 0) & (want["prob"] < 1)).all()  # a probability, not a sum over the span
    np.testing.assert_allclose(comprehensiveness(params, cfg, batch, scores, target=target, mask_id=MASK_ID),
                               got["comprehensiveness"], atol=1e-6)
    np.testing.assert_allclose(sufficiency(params, cfg, batch, scores, target=target, mask_id=MASK_ID),
                               got["sufficiency"], atol=1e-6)


def test_degradation_on_a_token_model_replaces_the_top_tokens(setup):
    cfg, params, torch_model, batch, target, scores = setup
    fr, probs = degradation_probs(params, cfg, batch, scores, target, mask_id=MASK_ID, chunk=5)
    assert probs.shape == (len(LENGTHS), len(FRACTIONS) + 1)
    for i, n in enumerate(LENGTHS):
        special = [int(w) < 0 for w in batch["word_ids"][i, :n]]
        cand = [j for j in range(n) if not special[j]]
        ranked = _ranked(scores[i], cand)
        toks = [int(t) for t in batch["input_ids"][i, :n]]
        want = []
        for f in (0.0, *fr):
            gone = set(ranked[:min(int(np.round(f * n)), len(cand))])
            want.append(_kept_prob(torch_model, toks, target[i, :n], set(range(n)) - gone))
        np.testing.assert_allclose(probs[i], want, atol=2e-5, err_msg=str(i))
    assert np.abs(probs[:, -1] - probs[:, 0]).max() > 1e-2  # the curve moves


def test_token_model_inputs_are_checked(setup):
    cfg, params, _, batch, target, scores = setup
    with pytest.raises(UserError, match="explains a span"):
        faithfulness(params, cfg, batch, scores, mask_id=MASK_ID)
    with pytest.raises(UserError, match="give mask_id"):
        comprehensiveness(params, cfg, batch, scores, target=target)
    with pytest.raises(UserError, match="give mask_id"):
        degradation_probs(params, cfg, batch, scores, target)
    with pytest.raises(UserError, match=r"must be \[B, T\]"):
        degradation_probs(params, cfg, batch, scores, target[:, :5], mask_id=MASK_ID)
