"""`jaxattr predict / convert / export` in-process, checked against the library and HF PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from hf_tiny import save_tiny

from jaxattr.cli import main
from jaxattr.data import bucket_length, encode_texts, pad_batch
from jaxattr.models import forward_batch, load_model

TEXT = "i love the self driving car !"
PAIR = "it is not very good ."


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny HF BERT with a tokenizer, converted to a jaxattr checkpoint, exported back to HF."""
    root = tmp_path_factory.mktemp("cli")
    hf = save_tiny("bert", root / "hf", num_labels=3, seed=2, tokenizer=True)
    assert main(["convert", str(root / "hf"), str(root / "ck")]) == 0
    assert main(["export", str(root / "ck"), str(root / "out")]) == 0
    return root, hf


def _predict_json(capsys, *args):
    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _torch_logits(model, tokenizer, text, pair=None):
    enc = tokenizer(text, pair, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[0].numpy()


def test_predict_json_matches_library_and_pytorch(dirs, capsys):
    root, hf = dirs
    out = _predict_json(capsys, "--model", str(root / "ck"), "--text", TEXT)
    assert set(out) == {"label", "probs", "logits"}
    model = load_model(root / "ck")
    ex = encode_texts(model.tokenizer, [TEXT])
    assert (np.asarray(ex[0]["input_ids"]) != model.tokenizer.unk_token_id).sum() >= 6  # real words, not [UNK]
    batch = pad_batch(ex, bucket_length(len(ex[0]["input_ids"])), model.pad_id)
    lib = np.asarray(forward_batch(model.params, model.cfg, batch).logits[0])
    np.testing.assert_allclose(out["logits"], lib, atol=1e-6)
    probs = np.exp(lib - lib.max()) / np.exp(lib - lib.max()).sum()
    np.testing.assert_allclose(out["probs"], probs, atol=1e-6)
    assert out["label"] == int(np.argmax(lib))
    tok = transformers.AutoTokenizer.from_pretrained(str(root / "hf"))
    np.testing.assert_allclose(out["logits"], _torch_logits(hf, tok, TEXT), atol=1e-5)
    # The HF directory itself is a valid MODEL too.
    np.testing.assert_allclose(_predict_json(capsys, "--model", str(root / "hf"), "--text", TEXT)["logits"],
                               out["logits"], atol=1e-6)


def test_predict_text_pair_matches_pytorch(dirs, capsys):
    root, hf = dirs
    out = _predict_json(capsys, "--model", str(root / "ck"), "--text", TEXT, "--text-pair", PAIR)
    tok = transformers.AutoTokenizer.from_pretrained(str(root / "hf"))
    np.testing.assert_allclose(out["logits"], _torch_logits(hf, tok, TEXT, PAIR), atol=1e-5)
    single = _predict_json(capsys, "--model", str(root / "ck"), "--text", TEXT)
    assert np.abs(np.subtract(out["logits"], single["logits"])).max() > 1e-3


def test_predict_human_output_names_the_label(dirs, capsys):
    root, _ = dirs
    out = _predict_json(capsys, "--model", str(root / "ck"), "--text", TEXT)
    assert main(["predict", "--model", str(root / "ck"), "--text", TEXT]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"label: class{out['label']} ({out['label']})"


def test_export_loads_in_transformers_with_same_logits(dirs, capsys):
    root, hf = dirs
    out = _predict_json(capsys, "--model", str(root / "ck"), "--text", TEXT)
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(str(root / "out")).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(root / "out"))
    assert exported.config.id2label[0] == "class0"
    np.testing.assert_allclose(_torch_logits(exported, tok, TEXT), out["logits"], atol=1e-5)
    np.testing.assert_array_equal(_torch_logits(exported, tok, TEXT), _torch_logits(hf, tok, TEXT))


def test_convert_with_a_new_head_and_separate_tokenizer(dirs, tmp_path, capsys):
    root, _ = dirs
    save_tiny("bert", tmp_path / "weights_only", num_labels=3, seed=2)  # same weights, no tokenizer files
    argv = ["convert", str(tmp_path / "weights_only"), str(tmp_path / "ck5"), "--num-labels", "5", "--seed", "1"]
    assert main(argv) == 2  # no tokenizer there
    assert main([*argv, "--tokenizer", str(root / "hf")]) == 0
    out = _predict_json(capsys, "--model", str(tmp_path / "ck5"), "--text", TEXT)
    assert len(out["probs"]) == 5


@pytest.mark.parametrize("argv,needle", [
    (["predict", "--model", "/no/such/dir", "--text", "hi"], "/no/such/dir"),
    (["predict", "--model", "{ck}", "--text", "   "], "empty"),
    (["export", "{hf}", "{tmp}/x"], "jaxattr.json"),
    (["convert", "{tmp}", "{tmp}/y"], "tokenizer"),
])
def test_user_errors_are_one_line(dirs, tmp_path, capsys, argv, needle):
    root, _ = dirs
    argv = [a.format(ck=root / "ck", hf=root / "hf", tmp=tmp_path) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"jaxattr {argv[0]}: error:") and needle in err, err
