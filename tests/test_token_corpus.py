"""The embedded silver NER corpus (`bbc_ner`) and the BIO conversion of its build script."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from jaxattr.data.datasets import load_dataset_spec, load_token_corpus, load_token_spec
from jaxattr.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_splits_are_seeded_disjoint_by_article_and_bio() -> None:
    dd = load_token_corpus("bbc_ner", seed=0)
    assert list(dd) == ["train", "dev", "test"]
    names = dd["train"].features["tags"].feature.names
    assert names[0] == "O" and set(names) == {"O", *(f"{b}-{t}" for b in "BI" for t in ("PER", "ORG", "LOC", "MISC"))}
    articles = {k: {i.rsplit("/", 1)[0] for i in v["id"]} for k, v in dd.items()}
    assert not articles["train"] & articles["dev"] and not articles["train"] & articles["test"]
    assert not articles["dev"] & articles["test"]
    n = sum(len(v) for v in dd.values())
    assert 0.75 < len(dd["train"]) / n < 0.85  # 80/10/10 by article
    for row in dd["dev"]:
        tags = [names[k] for k in row["tags"]]
        assert len(tags) == len(row["tokens"])
        for prev, tag in zip(["O", *tags], tags):  # I-X only continues an X
            assert not tag.startswith("I-") or prev[2:] == tag[2:]
    again = load_token_corpus("bbc_ner", seed=0)
    assert again["test"]["id"] == dd["test"]["id"]
    assert load_token_corpus("bbc_ner", seed=1)["test"]["id"] != dd["test"]["id"]


def test_token_spec_and_text_view() -> None:
    dev = load_token_spec("bbc_ner", "dev")
    texts = load_dataset_spec("bbc_ner", "dev")
    assert texts["id"] == dev["id"]
    assert texts[0]["text"] == " ".join(dev[0]["tokens"])
    with pytest.raises(UserError, match="has splits"):
        load_token_spec("bbc_ner")
    with pytest.raises(UserError, match="not 'validation'"):
        load_token_spec("bbc_ner", "validation")
    with pytest.raises(UserError, match="unknown tag"):  # a model that knows fewer tags
        load_token_spec("bbc_ner", "dev", label_names=("O", "B-PER", "I-PER"))


def _build_script():
    spec = importlib.util.spec_from_file_location("build_silver_ner", ROOT / "scripts" / "build_silver_ner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_maps_ontonotes_to_conll_bio() -> None:
    def tok(text: str, kind: str = "", iob: str = "O") -> SimpleNamespace:
        return SimpleNamespace(text=text, ent_type_=kind, ent_iob_=iob, is_space=text.isspace())

    sent = [tok("\n", "PERSON", "B"), tok("Smith", "PERSON", "I"), tok("of"), tok("New", "GPE", "B"),
            tok("York", "GPE", "I"), tok("paid"), tok("$", "MONEY", "B"), tok("5", "MONEY", "I"),
            tok("Labour", "ORG", "B"), tok("Tories", "ORG", "B")]
    words, tags = _build_script().bio(sent)
    assert words == ["Smith", "of", "New", "York", "paid", "$", "5", "Labour", "Tories"]
    assert tags == ["B-PER", "O", "B-LOC", "I-LOC", "O", "O", "O", "B-ORG", "B-ORG"]
