"""Orbax checkpoints: exact round trip, tokenizer kept, clear errors for the wrong architecture."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxattr.errors import UserError
from jaxattr.models import init_params, load_model, tiny_config
from jaxattr.models.checkpoint import MARKER, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def electra():
    cfg = tiny_config("electra", embedding_size=16, num_labels=3, label_names=("a", "b", "c"))
    return cfg, init_params(cfg, jax.random.key(3))


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, path
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_round_trip_is_exact(tmp_path, electra):
    cfg, params = electra
    save_checkpoint(tmp_path / "ck", cfg, params)
    meta = json.loads((tmp_path / "ck" / MARKER).read_text())
    assert meta["format"] == "jaxattr-checkpoint" and meta["version"] == 1 and meta["config"] == cfg.to_dict()
    cfg2, params2 = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg
    _leaves_equal(params, params2)
    # Saving again over the same directory replaces it.
    params3 = jax.tree.map(lambda x: x + 1, params)
    save_checkpoint(tmp_path / "ck", cfg, params3)
    _leaves_equal(params3, load_checkpoint(tmp_path / "ck", expect=cfg)[1])


def test_tokenizer_is_saved_and_load_model_dispatches(tmp_path, minilm):
    save_checkpoint(tmp_path, minilm.cfg, minilm.params, minilm.tokenizer)
    model = load_model(tmp_path)
    assert model.cfg == minilm.cfg and model.source == str(tmp_path)
    text = "Self-driving cars are great"
    assert model.tokenizer(text)["input_ids"] == minilm.tokenizer(text)["input_ids"]
    _leaves_equal(model.params, minilm.params)


def test_expect_names_the_differing_fields(tmp_path, electra):
    cfg, params = electra
    save_checkpoint(tmp_path, cfg, params)
    with pytest.raises(UserError, match=r"embedding_size: checkpoint 16, expected None") as info:
        load_checkpoint(tmp_path, expect=cfg.replace(embedding_size=None))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="num_layers"):
        load_checkpoint(tmp_path, expect=cfg.replace(num_layers=3))
    # Compute dtype is not part of the architecture: a bf16 expectation restores the same params.
    cfg16, restored = load_checkpoint(tmp_path, expect=cfg.replace(dtype="bfloat16"))
    assert cfg16.dtype == "bfloat16"
    _leaves_equal(params, restored)


def test_params_of_another_architecture_are_a_clear_error(tmp_path, electra):
    cfg, params = electra
    save_checkpoint(tmp_path, cfg, params)
    meta = json.loads((tmp_path / MARKER).read_text())
    meta["config"]["hidden_size"] = 64  # the config now disagrees with the stored tensors
    (tmp_path / MARKER).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"\['embeddings'\]\['project'\].*shape") as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)
    # Saving params that do not fit the config is refused up front.
    with pytest.raises(UserError, match="num_layers|shape"):
        save_checkpoint(tmp_path / "bad", cfg.replace(num_layers=3), params)


def test_missing_or_malformed_metadata(tmp_path, electra):
    with pytest.raises(UserError, match=MARKER):
        load_checkpoint(tmp_path)
    (tmp_path / MARKER).write_text("{oops")
    with pytest.raises(UserError, match="malformed"):
        load_checkpoint(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a jaxattr checkpoint"):
        load_checkpoint(tmp_path)
    cfg, _ = electra
    (tmp_path / MARKER).write_text(json.dumps({"format": "jaxattr-checkpoint", "version": 1,
                                               "config": cfg.to_dict()}))
    with pytest.raises(UserError, match="params"):  # marker present, params directory absent
        load_checkpoint(tmp_path)
