"""Hub names (`--model ORG/NAME[@REV]`) through a cache laid out as huggingface_hub lays it out; never the network."""

from __future__ import annotations

import numpy as np
import pytest
from hf_tiny import random_batch, save_tiny

from jaxattr.cli import main
from jaxattr.errors import UserError
from jaxattr.models import forward_batch, load_hf_dir
from jaxattr.models.loading import load_model

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HUB_CACHE with models--org--tiny-bert/snapshots/REV (+ refs/main), offline."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny-bert"
    snap = repo / "snapshots" / REV
    save_tiny("bert", snap, num_labels=3, seed=2, tokenizer=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snap


@pytest.mark.parametrize("name", ["org/tiny-bert", f"org/tiny-bert@{REV}", "org/tiny-bert@main"])
def test_hub_name_loads_the_cached_snapshot(hub_cache, name):
    model = load_model(name)
    cfg, params = load_hf_dir(hub_cache)
    assert model.cfg == cfg and model.source == str(hub_cache)
    batch = random_batch("bert")
    np.testing.assert_array_equal(np.asarray(forward_batch(model.params, model.cfg, batch).logits),
                                  np.asarray(forward_batch(params, cfg, batch).logits))


def test_uncached_hub_name_offline_is_one_line(hub_cache, capsys):
    with pytest.raises(UserError, match="not in the Hugging Face cache.*hf download org/absent.*HF_HUB_OFFLINE"):
        load_model("org/absent")
    assert main(["predict", "--model", "org/absent", "--text", "good"]) == 2
    err = capsys.readouterr().err.strip()
    assert "org/absent" in err and "\n" not in err


def test_cli_predict_with_a_hub_name(hub_cache, capsys):
    assert main(["predict", "--model", "org/tiny-bert", "--text", "good cars"]) == 0
    assert "class" in capsys.readouterr().out


def test_convert_a_hub_name(hub_cache, tmp_path):
    out = tmp_path / "ckpt"
    assert main(["convert", "org/tiny-bert", str(out)]) == 0
    assert load_model(out).cfg == load_hf_dir(hub_cache)[0]
