"""Long documents as overlapping windows (`jaxattr/models/windowed.py`, `--long window`).

Oracles: the windows built by hand in NumPy from the token ids (as HF tokenizers' `stride` overflow builds
them) and run one by one through the plain encoder; the plain model on a document that fits one window; IG's
completeness axiom on a document 4x longer than the model's positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattr.attribution.gradients import integrated_gradients
from jaxattr.models import init_params, tiny_config
from jaxattr.models.encoder import forward
from jaxattr.models.windowed import check_window, window_count, window_index

CLS, SEP, PAD = 2, 3, 0


def _doc(n_content: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full(length, PAD, np.int32)
    ids[0], ids[n_content + 1] = CLS, SEP
    ids[1:n_content + 1] = np.random.default_rng(seed).integers(5, 90, n_content)
    return ids, (ids != PAD).astype(np.int32)


def _hand_windows(ids: np.ndarray, window: int, stride: int) -> list[np.ndarray]:
    content = ids[1:int((ids != PAD).sum()) - 1]
    per, out, start = window - 2, [], 0
    while True:
        out.append(np.r_[CLS, content[start:start + per], SEP].astype(np.int32))
        if start + per >= len(content):
            return out
        start += stride


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(num_labels=3, max_position_embeddings=32)
    return cfg, init_params(cfg, jax.random.key(0))


@pytest.mark.parametrize("n_content,length", [(100, 128), pytest.param(30, 128, marks=pytest.mark.extra), (61, 64),
                                              pytest.param(5, 64, marks=pytest.mark.extra)])
@pytest.mark.parametrize("pool", ["mean", "max"])
def test_windowed_logits_equal_the_windows_run_by_hand(model, n_content, length, pool):
    cfg, params = model
    window, stride = 32, 20
    ids, mask = _doc(n_content, length)
    wcfg = cfg.replace(window=window, window_stride=stride, window_pool=pool)
    got = forward(params, wcfg, ids[None], mask[None]).logits[0]
    per_window = [forward(params, cfg, w[None], np.ones((1, len(w)), np.int32)).logits[0] for w in
                  _hand_windows(ids, window, stride)]
    want = np.mean(per_window, 0) if pool == "mean" else np.max(per_window, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_document_that_fits_one_window_is_the_plain_model(model):
    cfg, params = model
    ids, mask = _doc(20, 96)  # 22 real tokens, padded past the 32 positions
    got = forward(params, cfg.replace(window=32, window_stride=16), ids[None], mask[None]).logits
    want = forward(params, cfg, ids[None, :32], mask[None, :32]).logits
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_every_content_token_is_in_a_valid_window():
    for n_content, length, window, stride in [(100, 128, 32, 20), (1, 16, 8, 6), (300, 512, 64, 62), (7, 64, 9, 1)]:
        ids, mask = _doc(n_content, length)
        index, wmask, valid = (np.asarray(a)[0] for a in window_index(jnp.asarray(mask[None]), window, stride))
        assert index.shape == (window_count(length, window, stride), window)
        covered = {int(p) for k in np.flatnonzero(valid) for p, m in zip(index[k], wmask[k]) if m}
        assert covered == set(range(n_content + 2))  # [CLS], every content token, [SEP]
        assert valid.sum() == len(_hand_windows(ids, window, stride))


def test_ig_completeness_on_a_document_four_times_the_positions(model):
    cfg, params = model
    wcfg = cfg.replace(window=32, window_stride=16)
    ids, mask = _doc(120, 128)
    batch = {"input_ids": ids[None], "attention_mask": mask[None], "token_type_ids": np.zeros_like(ids)[None],
             "word_ids": np.where((ids != PAD) & (ids != CLS) & (ids != SEP), 1, -1)[None]}
    attr = integrated_gradients(params, wcfg, batch, steps=64, mask_id=4, pad_id=PAD)
    scores = np.asarray(attr.scores)[0]
    assert np.count_nonzero(scores[1:121]) == 120  # every content token, through its windows
    gap = abs(float(np.asarray(attr.delta)[0]))
    assert gap < 1e-3 * (1 + abs(float(scores.sum()))), gap


def test_bad_windows_refused():
    with pytest.raises(ValueError, match="stride"):
        check_window(32, 31, 64)
    with pytest.raises(ValueError, match="positions"):
        check_window(128, 64, 64)
    with pytest.raises(ValueError, match="pooling"):
        check_window(32, 16, 64, "median")


LONG_TEXT = " ".join(["i love self driving cars but the zebra news is very bad and you hate it"] * 8)  # ~130 tokens


def test_attribute_long_window_covers_the_whole_document(model_dir, tmp_path, capsys):
    from helpers import attribute

    from jaxattr.attribution.results import read_results

    out = tmp_path / "long.jsonl"
    assert attribute(model_dir, "--method", "ig", "--steps", "16", "--text", LONG_TEXT, "--out", out,
                     "--long", "window", "--window", "32", "--stride", "16", "--tokens-per-batch", 512) == 0
    rec = read_results(out)[0]
    assert len(rec["tokens"]) > 100 and rec["tokens"][-1] == "[SEP]"  # nothing truncated
    scores = np.asarray(rec["scores"])
    assert np.count_nonzero(scores[1:-1]) == len(scores) - 2
    assert abs(rec["delta"]) < 1e-3 * (1 + abs(scores.sum()))
    assert "truncated" not in capsys.readouterr().err
    assert attribute(model_dir, "--method", "ig", "--steps", "16", "--text", LONG_TEXT,
                     "--out", tmp_path / "t.jsonl") == 0
    assert "--long window" in capsys.readouterr().err  # the truncation warning names the alternative


@pytest.mark.parametrize("argv,message", [
    (["--method", "ig_embedding", "--long", "window"], "ig_embedding works inside the encoder"),
    (["--method", "ig", "--long", "native"], "use --long window"),
    (["--method", "ig", "--long", "window", "--window", "100"], "between 3 and the model's"),
    (["--method", "ig", "--window", "32"], "--window and --stride go with --long window"),
])
def test_long_input_errors(model_dir, tmp_path, capsys, argv, message):
    from helpers import attribute

    assert attribute(model_dir, *argv, "--text", LONG_TEXT, "--out", tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_predict_long_window(model_dir, capsys):
    import json

    from jaxattr.cli import main

    assert main(["predict", "--model", str(model_dir), "--text", LONG_TEXT, "--json", "--long", "window"]) == 0
    windowed = json.loads(capsys.readouterr().out)
    assert main(["predict", "--model", str(model_dir), "--text", LONG_TEXT, "--json"]) == 0
    truncated = json.loads(capsys.readouterr().out)
    assert len(windowed["probs"]) == 3 and windowed["logits"] != truncated["logits"]
