"""Bad input a user can give the library or the CLI: one clear error, never a silent wrong answer."""

from __future__ import annotations

import json
import stat

import jax
import pytest
from helpers import attribute, encoded, tiny_model

from jaxattr.attribution.gradients import integrated_gradients, saliency
from jaxattr.attribution.iba import iba
from jaxattr.errors import UserError
from jaxattr.models import load_model, save_hf_dir


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


@pytest.mark.parametrize("head", ["BertForTokenClassification", "BertForMaskedLM", "BertForQuestionAnswering"])
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


def test_export_writes_world_readable_weights(tiny, tmp_path):
    model, _ = tiny
    out = save_hf_dir(model.cfg, model.params, tmp_path / "hf")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o644, modes  # as the other files under the usual umask
