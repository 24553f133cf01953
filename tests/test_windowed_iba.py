"""IBA on windowed long documents (issue 34: one bottleneck per window, raw capacities averaged over overlaps).

Oracle: the windows built by hand in NumPy from the token ids (each with its own [CLS]/[SEP], padded to the
window), plain `iba` run on them as ordinary examples with the keys the windowed run gives them
(`window_keys`), their raw capacities averaged over the overlaps and min-max normalised here."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxattr.attribution.iba import estimate_noise_stats, iba, minmax_scores, window_keys
from jaxattr.models import init_params, tiny_config
from jaxattr.models.encoder import forward

CLS, SEP, PAD = 2, 3, 0
WINDOW, STRIDE = 16, 8
OPTS = dict(layer=1, steps=3, samples=2)


def _doc(n_content: int, length: int, seed: int) -> np.ndarray:
    ids = np.full(length, PAD, np.int32)
    ids[0], ids[n_content + 1] = CLS, SEP
    ids[1:n_content + 1] = np.random.default_rng(seed).integers(5, 90, n_content)
    return ids


def _batch(ids: np.ndarray) -> dict[str, np.ndarray]:
    real = ids != PAD
    return {"input_ids": ids, "attention_mask": real.astype(np.int32), "token_type_ids": np.zeros_like(ids),
            "word_ids": np.where(real & (ids != CLS) & (ids != SEP), 1, -1).astype(np.int32)}


def _hand_windows(ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(window ids padded to WINDOW, document position of each window token) as HF's stride overflow builds
    them: [CLS] content[start:start + W - 2] [SEP]."""
    n_real = int((ids != PAD).sum())
    per, out, start = WINDOW - 2, [], 0
    while True:
        count = min(per, n_real - 2 - start)
        pos = np.r_[0, np.arange(1 + start, 1 + start + count), n_real - 1]
        out.append((np.r_[ids[pos], np.full(WINDOW - len(pos), PAD)].astype(np.int32), pos))
        if start + per >= n_real - 2:
            return out
        start += STRIDE


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(num_labels=3, max_position_embeddings=WINDOW)
    return cfg, init_params(cfg, jax.random.key(0))


def _oracle(params, cfg, docs: np.ndarray, keys: jax.Array, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, raw) [D, T] of documents from plain IBA on their hand-built windows (one call for all the
    windows), averaged over the overlaps and min-max normalised here."""
    wins = [_hand_windows(ids) for ids in docs]
    win_keys = jax.numpy.concatenate([window_keys(k[None], len(w)) for k, w in zip(keys, wins)])
    rows = np.stack([w for doc in wins for w, _ in doc])
    out = iba(params, cfg, _batch(rows), key=win_keys, target=np.repeat(targets, [len(w) for w in wins]), **OPTS)
    raw_w, row = np.asarray(out.raw), 0
    raw, content = np.zeros(docs.shape), np.zeros(docs.shape, bool)
    for d, doc in enumerate(wins):
        total, count = np.zeros(docs.shape[1]), np.zeros(docs.shape[1])
        for _, pos in doc:
            total[pos] += raw_w[row, :len(pos)]
            count[pos] += 1
            row += 1
        raw[d] = total / np.maximum(count, 1)
        content[d, 1:int((docs[d] != PAD).sum()) - 1] = True
    return np.asarray(minmax_scores(raw.astype(np.float32), content)), raw


@pytest.fixture(scope="module")
def long_docs() -> np.ndarray:
    """Two documents in 48 positions: 5 window slots, the last one invalid for both (3 and 4 valid windows)."""
    return np.stack([_doc(38, 48, seed=1), _doc(23, 48, seed=2)])


def test_windowed_iba_equals_the_windows_run_by_hand(model, long_docs):
    cfg, params = model
    wcfg = cfg.replace(window=WINDOW, window_stride=STRIDE)
    keys = jax.random.split(jax.random.key(7), 2)
    got = iba(params, wcfg, _batch(long_docs), key=keys, **OPTS)
    pooled = jax.jit(forward, static_argnums=1)(params, wcfg, long_docs, _batch(long_docs)["attention_mask"]).logits
    np.testing.assert_array_equal(got.target, np.argmax(pooled, -1))  # the windowed classifier's prediction
    scores, raw = _oracle(params, cfg, long_docs, keys, np.asarray(got.target))
    real = long_docs != PAD
    np.testing.assert_allclose(np.where(real, got.raw, 0), np.where(real, raw, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.scores, scores, rtol=1e-5, atol=1e-5)
    assert np.count_nonzero(np.asarray(got.scores)[~real]) == 0  # padding stays 0


@pytest.mark.extra
def test_layer_all_pools_every_layer(model, long_docs):
    cfg, params = model
    wcfg = cfg.replace(window=WINDOW, window_stride=STRIDE)
    keys = jax.random.split(jax.random.key(7), 2)
    every = iba(params, wcfg, _batch(long_docs), key=keys, layer="all", steps=3, samples=2)
    one = iba(params, wcfg, _batch(long_docs), key=keys, **OPTS)  # layer 1, compiled by the test above
    assert every.scores.shape == (2, 2, 48) and every.ce.shape == (2, 3, 2)
    np.testing.assert_allclose(every.scores[0], one.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(every.ce[0], one.ce, rtol=1e-5, atol=1e-5)


def test_a_document_shorter_than_the_window_is_plain_iba(model):
    cfg, params = model
    wcfg = cfg.replace(window=WINDOW, window_stride=STRIDE)
    short = _doc(10, WINDOW, seed=4)
    key = jax.random.key(3)
    plain = iba(params, cfg, _batch(short[None]), key=key[None], **OPTS)
    fits = iba(params, wcfg, _batch(short[None]), key=key[None], **OPTS)  # T <= window: not windowed at all
    for a, b in zip(plain, fits):
        np.testing.assert_array_equal(a, b)
    # padded past the window next to a long document: one valid window, the document's own key
    ids = np.stack([np.r_[short, np.full(32, PAD, np.int32)], _doc(40, 48, seed=5)])
    mixed = iba(params, wcfg, _batch(ids), key=jax.random.split(key, 2).at[0].set(key), **OPTS)
    np.testing.assert_allclose(np.asarray(mixed.scores)[0, :WINDOW], plain.scores[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mixed.raw)[0, :WINDOW], plain.raw[0], rtol=1e-5, atol=1e-5)


def test_dataset_noise_stats_count_the_valid_windows(model, long_docs):
    cfg, params = model
    wcfg = cfg.replace(window=WINDOW, window_stride=STRIDE)
    got = estimate_noise_stats(params, wcfg, [_batch(long_docs)])
    rows = np.stack([w for ids in long_docs for w, _ in _hand_windows(ids)])
    want = estimate_noise_stats(params, cfg, [_batch(rows)])
    assert int(got.count) == int((rows != PAD).sum())
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-4, atol=1e-5)


LONG_TEXT = " ".join(["i love self driving cars but the zebra news is very bad"] * 3)  # ~40 tokens


def test_attribute_iba_long_window_covers_the_whole_document(model_dir, tmp_path):
    from helpers import attribute

    from jaxattr.attribution.results import read_results

    out = tmp_path / "iba.jsonl"
    assert attribute(model_dir, "--method", "iba", "--steps", "2", "--samples", "2", "--text", LONG_TEXT,
                     "--out", out, "--long", "window", "--window", WINDOW, "--stride", STRIDE) == 0
    rec = read_results(out)[0]
    scores = np.asarray(rec["scores"])
    assert len(rec["tokens"]) > WINDOW and rec["tokens"][-1] == "[SEP]" and len(scores) == len(rec["tokens"])
    assert scores[0] == scores[-1] == 0 and scores[1:-1].max() == 1.0
    assert np.count_nonzero(scores[WINDOW:-1]) > 0  # tokens past the first window are scored too


def test_embedding_ig_still_refused_on_windows(model_dir, tmp_path, capsys):
    from helpers import attribute

    assert attribute(model_dir, "--method", "ig_embedding", "--long", "window", "--text", LONG_TEXT,
                     "--out", tmp_path / "o.jsonl") == 2
    assert "ig_embedding works inside the encoder" in capsys.readouterr().err
