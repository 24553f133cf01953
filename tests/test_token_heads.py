"""Token-classification heads (issue 34): HF `...ForTokenClassification` parity for every family, export back
to HF, `jaxattr predict --json` on a token model, the BIO entity decoder, and the one-line refusals of the
commands that run sequence classifiers only."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from hf_tiny import FAMILIES, hf_logits, random_batch, save_tiny

from jaxattr.cli import main
from jaxattr.data.entities import entities, split_tag
from jaxattr.models import (
    EncoderConfig,
    forward_batch,
    init_params,
    load_checkpoint,
    load_hf_dir,
    load_model,
    save_checkpoint,
    save_hf_dir,
    tiny_config,
    token_logits,
)
from jaxattr.models.checkpoint import config_diff
from jaxattr.models.hf import CheckpointError

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _masked_max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(np.where(mask[..., None].astype(bool), a - b, 0.0)).max())


@pytest.mark.parametrize("family", FAMILIES)
def test_token_head_matches_hf_and_exports_back(tmp_path, family):
    original = save_tiny(family, tmp_path / "in", num_labels=len(TAGS), seed=3, task="token", label_names=TAGS,
                         problem_type="single_label_classification")
    assert type(original).__name__.endswith("ForTokenClassification")
    cfg, params = load_hf_dir(tmp_path / "in")
    assert cfg.task == "token" and cfg.label_names == tuple(TAGS) and cfg.problem_type == "classification"
    batch = random_batch(family, seed=7)
    mask = batch["attention_mask"]
    want = hf_logits(original, batch, family)
    ours = np.asarray(forward_batch(params, cfg, batch).logits)
    assert ours.shape == (4, 16, len(TAGS)) == want.shape
    # the comparison means something: logits differ clearly between positions and between classes
    assert np.abs(want - want[:, :1]).max() > 0.1 and want.std(-1).mean() > 0.1
    assert _masked_max_diff(ours, want, mask) <= 1e-5
    # token_logits is the same function; cls_only cannot shorten a head that reads every row
    args = (batch["input_ids"], mask, batch["token_type_ids"])
    np.testing.assert_array_equal(np.asarray(token_logits(params, cfg, *args)), ours)
    assert _masked_max_diff(np.asarray(forward_batch(params, cfg, batch, cls_only=True).logits), ours, mask) <= 1e-6

    out = save_hf_dir(cfg, params, tmp_path / "out")
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["architectures"] == [type(original).__name__]
    exported = transformers.AutoModelForTokenClassification.from_pretrained(str(out)).eval()
    assert type(exported) is type(original)
    assert exported.config.id2label == original.config.id2label == dict(enumerate(TAGS))
    assert exported.config.problem_type == original.config.problem_type == "single_label_classification"
    np.testing.assert_array_equal(hf_logits(exported, batch, family), want)  # every tensor copied bit for bit
    sd_in, sd_out = original.state_dict(), exported.state_dict()
    assert set(sd_out) == set(sd_in)
    for k, v in sd_in.items():
        np.testing.assert_array_equal(sd_out[k].numpy(), v.numpy(), err_msg=k)


def test_a_token_checkpoint_round_trips_through_a_jaxattr_checkpoint(tmp_path):
    save_tiny("roberta", tmp_path / "hf", num_labels=len(TAGS), seed=1, task="token", label_names=TAGS)
    cfg, params = load_hf_dir(tmp_path / "hf")
    save_checkpoint(tmp_path / "ck", cfg, params)
    cfg2, params2 = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg and cfg2.task == "token"
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    assert config_diff(cfg2, cfg.replace(task="sequence")) == ["task: checkpoint 'token', expected 'sequence'"]


def test_configs_without_the_task_field_are_sequence_classifiers():
    cfg = tiny_config("bert")
    assert cfg.task == "sequence" and "task" not in cfg.to_dict()  # serialised (and hashed) as before the field
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    token = cfg.replace(task="token")
    assert token.to_dict()["task"] == "token" and EncoderConfig.from_dict(token.to_dict()) == token
    assert hash(token) != hash(cfg) and not token.head_reads_cls_only
    with pytest.raises(ValueError, match="single-label"):
        tiny_config("bert", task="token", num_labels=1, problem_type="regression")
    with pytest.raises(ValueError, match="task"):
        tiny_config("bert", task="span")


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_init_params_of_a_token_model_give_per_token_logits(family):
    cfg = tiny_config(family, task="token", num_labels=4)
    params = init_params(cfg, jax.random.key(0))
    ids = np.arange(3, 13, dtype=np.int32).reshape(2, 5)
    logits = forward_batch(params, cfg, {"input_ids": ids, "attention_mask": np.ones_like(ids)}).logits
    assert logits.shape == (2, 5, 4)
    with pytest.raises(ValueError, match="token_logits needs"):
        token_logits(init_params(tiny_config(family), jax.random.key(0)), tiny_config(family), ids, np.ones_like(ids))


def test_the_other_head_kind_on_request_is_fresh_and_seeded(tmp_path):
    save_tiny("bert", tmp_path / "tok", num_labels=len(TAGS), seed=1, task="token", label_names=TAGS)
    cfg, params = load_hf_dir(tmp_path / "tok", task="sequence", seed=4)
    assert cfg.task == "sequence" and cfg.num_labels == len(TAGS)
    fresh = init_params(cfg, jax.random.key(4))["head"]  # no token-head tensor was read into the sequence head
    jax.tree.map(np.testing.assert_array_equal, params["head"], jax.tree.map(np.asarray, fresh))
    save_tiny("electra", tmp_path / "seq", num_labels=3, seed=1)
    cfg, params = load_hf_dir(tmp_path / "seq", task="token", num_labels=len(TAGS))
    assert cfg.task == "token" and params["head"]["out"]["kernel"].shape == (32, len(TAGS))


def test_a_regression_token_head_is_refused(tmp_path):
    save_tiny("bert", tmp_path, num_labels=len(TAGS), task="token", label_names=TAGS)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "problem_type": "regression"}))
    with pytest.raises(CheckpointError, match="regression"):
        load_hf_dir(tmp_path)


# ---- the BIO decoder


def test_split_tag():
    assert split_tag("B-PER") == ("B", "PER") and split_tag("I-LOC") == ("I", "LOC")
    assert split_tag("O") == ("O", None) and split_tag("PER") == ("I", "PER") and split_tag("B-") == ("I", "B-")


def test_entities_merge_word_pieces_and_start_on_stray_inside_tags():
    text = "anna smith went to new york and paris"
    words = text.split()
    starts = [text.index(w, sum(len(x) + 1 for x in words[:i])) for i, w in enumerate(words)]
    spans = [[0, s, s + len(w)] for s, w in zip(starts, words)]
    # tokens: [CLS] an ##na smith went to new york and par ##is [SEP]
    word_ids = [-1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 7, -1]
    tags = ["B-LOC", "B-PER", "O", "I-PER", "O", "O", "I-LOC", "I-LOC", "O", "B-LOC", "I-PER", "I-LOC"]
    found = entities(tags, word_ids, spans, (text, ""))
    assert [(e["label"], e["start"], e["end"], e["text"]) for e in found] == [
        ("PER", 1, 4, "anna smith"),  # ##na's own tag (O) does not matter: a word goes with its first piece
        ("LOC", 6, 8, "new york"),  # a stray I-LOC starts an entity, the next I-LOC continues it
        ("LOC", 9, 11, "paris"),  # the special tokens' tags never make an entity
    ]
    assert found[0]["char_start"] == 0 and found[0]["char_end"] == 10 and found[0]["segment"] == 0
    # B-X right after an entity of X starts a new one; I-Y after X starts a Y
    tags = ["O", "B-PER", "I-PER", "B-PER", "I-LOC", "O", "O", "O", "O", "O", "O", "O"]
    assert [(e["label"], e["start"], e["end"]) for e in entities(tags, word_ids, spans, (text, ""))] == [
        ("PER", 1, 3), ("PER", 3, 4), ("LOC", 4, 5)]
    with pytest.raises(ValueError, match="tags for"):
        entities(tags[:-1], word_ids, spans, (text, ""))


def test_entities_never_cross_into_the_second_segment():
    text, pair = "new york", "york city"
    spans = [[0, 0, 3], [0, 4, 8], [1, 0, 4], [1, 5, 9]]
    word_ids = [-1, 0, 1, -1, 2, 3, -1]
    tags = ["O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "I-LOC", "O"]
    found = entities(tags, word_ids, spans, (text, pair))
    assert [(e["text"], e["segment"], e["start"], e["end"]) for e in found] == [("new york", 0, 1, 3),
                                                                              ("york city", 1, 4, 6)]


# ---- the CLI

TEXT = "i love the self driving cars !"


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("token_cli")
    hf = save_tiny("bert", path, num_labels=len(TAGS), seed=5, tokenizer=True, task="token", label_names=TAGS)
    return path, hf


def _predict_json(capsys, *args):
    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("pair", [None, "it is not very good ."])
def test_predict_json_on_a_token_model(token_dir, capsys, pair):
    path, hf = token_dir
    out = _predict_json(capsys, "--model", str(path), "--text", TEXT, *(["--text-pair", pair] if pair else []))
    assert set(out) == {"tokens", "labels", "tags", "logits", "entities"}
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    enc = tok(TEXT, pair, return_tensors="pt")
    assert out["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0])  # special tokens included
    assert out["tokens"][0] == "[CLS]" and out["tokens"][-1] == "[SEP]" and "[UNK]" not in out["tokens"]
    logits = np.asarray(out["logits"])
    assert logits.shape == (len(out["tokens"]), len(TAGS))
    with torch.no_grad():
        want = hf(**enc).logits[0].numpy()
    assert np.abs(logits - want).max() <= 1e-5
    assert out["labels"] == logits.argmax(-1).tolist() and out["tags"] == [TAGS[k] for k in out["labels"]]
    model = load_model(path)
    from jaxattr.data import encode_texts

    ex = encode_texts(model.tokenizer, [TEXT], None if pair is None else [pair])[0]
    assert out["entities"] == entities(out["tags"], ex["word_ids"], ex["word_spans"], (TEXT, pair or ""))
    for e in out["entities"]:
        assert e["text"] == (TEXT, pair)[e["segment"]][e["char_start"]:e["char_end"]] and e["label"] in ("PER", "LOC")
        assert split_tag(out["tags"][e["start"]])[1] == e["label"]


def test_predict_text_on_a_token_model(token_dir, capsys):
    path, _ = token_dir
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--text", TEXT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "[CLS]" and any(line.startswith("entities: ") for line in lines)


def test_predict_terminal_view_elides_a_long_document(token_dir, capsys):
    """Past 2 x TERMINAL_EDGE tokens the terminal shows both ends and a count; --json keeps every row."""
    from jaxattr.commands.predict import TERMINAL_EDGE

    path, _ = token_dir
    long_text = " ".join([TEXT] * 8)
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--text", long_text, "--json"]) == 0
    n = len(json.loads(capsys.readouterr().out)["tokens"])
    assert n > 2 * TERMINAL_EDGE + 1
    assert main(["predict", "--model", str(path), "--text", long_text]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[:out.index(next(line for line in out if line.startswith("entities: ")))]
    assert len(rows) == 2 * TERMINAL_EDGE + 1 and rows[0].split()[0] == "[CLS]" and rows[-1].split()[0] == "[SEP]"
    assert rows[TERMINAL_EDGE].strip() == f"... {n - 2 * TERMINAL_EDGE} more tokens (--json prints them all) ..."


def test_sequence_only_commands_refuse_a_token_model_in_one_line(token_dir, tmp_path, capsys):
    path, _ = token_dir
    capsys.readouterr()
    rc = main(["attribute", "--model", str(path), "--method", "saliency", "--text", TEXT,
               "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "a token classification model is not run by attribute; give --task token" in err[0]
    assert not (tmp_path / "o.jsonl").exists()
    rc = main(["evaluate", "--model", str(path), "--methods", "saliency", "--data", str(tmp_path / "none.csv"),
               "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"jaxattr evaluate: error: {path}: a token classification model is not run by "
                               "evaluate; give --task token"], err
