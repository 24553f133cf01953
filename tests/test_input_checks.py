"""Bad input a user can give the library or the CLI: one clear error, never a silent wrong answer."""

from __future__ import annotations

import json
import stat

import jax
import numpy as np
import pytest
from helpers import attribute, encoded, save_tiny_tokenizer, tiny_model
from hf_tiny import hf_logits, save_tiny

from jaxattr.attribution.gradients import integrated_gradients, saliency
from jaxattr.attribution.iba import iba
from jaxattr.errors import UserError
from jaxattr.models import forward_batch, load_model, save_hf_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_checks")
    model, _ = tiny_model(path)  # 3 classes
    return model, path


@pytest.mark.parametrize("target", [7, -1, [0, 3, 1]])
def test_public_functions_refuse_a_target_outside_the_classes(tiny, target):
    model, _ = tiny
    _, batch = encoded(model)
    batch = {k: v[:3] for k, v in batch.items()}
    kw = {"mask_id": model.mask_id, "pad_id": model.pad_id}
    with pytest.raises(UserError, match="outside 0..2"):
        integrated_gradients(model.params, model.cfg, batch, steps=2, target=target, **kw)
    with pytest.raises(UserError, match="outside 0..2"):
        saliency(model.params, model.cfg, batch, target=target)
    with pytest.raises(UserError, match="outside 0..2"):
        iba(model.params, model.cfg, batch, layer=1, steps=1, samples=1, key=jax.random.key(0), target=target)
    ok = integrated_gradients(model.params, model.cfg, batch, steps=2, target=2, **kw)  # a valid class still runs
    assert ok.target.tolist() == [2, 2, 2]


@pytest.mark.parametrize("head", ["BertForMaskedLM", "BertForQuestionAnswering", "BertForMultipleChoice",
                                  "BertForNextSentencePrediction"])
def test_a_checkpoint_with_another_head_is_refused_in_one_line(tiny, tmp_path, capsys, head):
    model, path = tiny
    other = tmp_path / "other"
    save_hf_dir(model.cfg, model.params, other, tokenizer_dir=path)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": [head]}))
    with pytest.raises(UserError, match=head):
        load_model(str(other))
    capsys.readouterr()
    assert attribute(other, "--method", "saliency", "--text", "a car", "--out", tmp_path / "o.jsonl") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and head in err[0] and "jaxattr train" in err[0], err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_token_classification_checkpoint_loads_as_a_token_model(tmp_path):
    torch_model = save_tiny("bert", tmp_path, num_labels=5, seed=2, task="token")
    assert type(torch_model).__name__ == "BertForTokenClassification"
    save_tiny_tokenizer(tmp_path)
    model = load_model(str(tmp_path))  # was refused: then re-headed as a sequence classifier before that
    assert model.cfg.task == "token" and model.cfg.num_labels == 5
    _, batch = encoded(model)
    logits = np.asarray(forward_batch(model.params, model.cfg, batch).logits)
    assert logits.shape == (3, 16, 5)
    want = hf_logits(torch_model, batch, "bert")
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(logits[mask], want[mask], atol=1e-5, rtol=0)


def test_export_writes_world_readable_weights(tiny, tmp_path):
    model, _ = tiny
    out = save_hf_dir(model.cfg, model.params, tmp_path / "hf")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644, modes  # as the other files under the usual umask
