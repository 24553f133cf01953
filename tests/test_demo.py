"""`jaxattr demo` (what `make demo` runs): the whole path from a fresh cache, shrunk by --quick for CI."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest

from jaxattr import cli
from jaxattr import demo as demo_module
from jaxattr.demo import LONG_QUICK, QUICK, TOKEN_QUICK, default_model_dir, gold_entity, highlight, run_long_demo
from jaxattr.errors import UserError


@pytest.mark.slow
def test_quick_demo_full_path_then_cached(tmp_path, capsys, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "report"
    argv = ["demo", "--quick", "--cache-dir", str(cache), "--out", str(out), "--no-color"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "fine-tuned now" in text and "dev accuracy:" in text
    assert (cache / QUICK.name / "jaxattr.json").exists() and (cache / QUICK.name / "demo.json").exists()
    assert not (cache / (QUICK.name + ".run")).exists()  # the training run directory is cleaned up
    for method in ("SIG", "IG", "IBA"):
        assert f" {method}: " in text
    assert "[" in text and "\x1b[" not in text  # top words marked without colours when asked
    html, png = out / "attributions.html", out / "degradation.png"
    assert html.stat().st_size > 500 and png.stat().st_size > 1000
    assert f"HTML report: {html}" in text and f"degradation plot: {png}" in text

    # Second run: the cached classifier is reused (no training), same accuracy.
    assert cli.main(argv) == 0
    again = capsys.readouterr().out
    assert "cached" in again and "fine-tuned now" not in again
    acc = [line for line in text.splitlines() if line.startswith("dev accuracy")]
    assert acc == [line for line in again.splitlines() if line.startswith("dev accuracy")]

    # `--model default` resolves to the cache (the full demo's directory; the quick one lives beside it).
    monkeypatch.setenv("JAXATTR_CACHE_DIR", str(cache))
    assert default_model_dir(quick=True, required=True) == cache / QUICK.name


def test_default_model_missing_says_run_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXATTR_CACHE_DIR", str(tmp_path))
    with pytest.raises(UserError, match="run `jaxattr demo`"):
        default_model_dir(required=True)
    assert cli.main(["predict", "--model", "default", "--text", "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert "jaxattr demo" in err and len(err.splitlines()) == 1


def test_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXATTR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_model_dir() == tmp_path / "jaxattr" / "default-classifier"


def test_highlight_marks_top_words():
    text = "self-driving cars  are terrible!"
    rec = {"words": ["self", "-", "driving", "cars", "are", "terrible", "!"], "text": text,
           "word_spans": [[0, 0, 4], [0, 4, 5], [0, 5, 12], [0, 13, 17], [0, 19, 22], [0, 23, 31], [0, 31, 32]],
           "word_scores": [0.1, 0.0, -0.5, 0.3, 0.0, 2.0, 0.0]}
    assert highlight(rec, top=2) == "self-{driving} [cars]  are [terrible]!"  # the text's own spacing
    no_spans = {"words": ["self", "driving"], "word_scores": [1.0, -1.0]}
    assert highlight(no_spans, top=1) == "[self] {driving}"
    coloured = highlight(rec, top=1, colour=True)
    assert "\x1b[1;30;42mterrible\x1b[0m" in coloured and "\x1b[1;37;41mdriving\x1b[0m" in coloured
    assert "[" not in coloured.replace("\x1b[", "")


@pytest.mark.slow
def test_quick_token_demo_explains_an_entity(tmp_path, capsys):
    """`demo --task token`: a token model fine-tuned on the embedded bbc_ner sentences, cached, and an entity per
    held-out sentence explained by every method, its text in the sentence, with an HTML report."""
    cache, out = tmp_path / "cache", tmp_path / "report"
    argv = ["demo", "--task", "token", "--quick", "--cache-dir", str(cache), "--out", str(out), "--no-color"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "fine-tuned now" in text and "dev entity F1:" in text and "silver" in text
    assert (cache / TOKEN_QUICK.name / "jaxattr.json").exists()
    entities = re.findall(r"#\d entity '(.+?)' \((PER|ORG|LOC|MISC), (?:predicted|gold, not predicted)\) in '(.+)'",
                          text)
    assert len(entities) == TOKEN_QUICK.explain
    for ent, _, sentence in entities:
        assert ent in sentence
    for method in ("SIG", "IG", "IBA"):
        assert text.count(f" {method}: ") == TOKEN_QUICK.explain
    html = (out / "entities.html").read_text()
    assert "in-entity" in html and f"HTML report: {out / 'entities.html'}" in text


def test_quick_long_demo_reads_the_whole_article(tmp_path):
    """`demo --task long`: a BBC topic classifier, cached, reads a held-out article longer than 512 tokens whole
    through windows; IG and IBA score every token, those past the 512th too (truncation would drop them, and
    each window's gradient reaches them), and the HTML report holds the whole article."""
    cache, out, printed = tmp_path / "cache", tmp_path / "report", io.StringIO()
    got = run_long_demo(quick=True, cache_dir=cache, out_dir=out, colour=False, stream=printed)
    text = printed.getvalue()
    assert got["trained"] and (cache / LONG_QUICK.name / "jaxattr.json").exists()
    n = got["tokens"]
    assert 512 < n <= LONG_QUICK.explain_max_tokens
    assert f"explaining a held-out article of {n} tokens, read whole through 64-token windows" in text
    assert set(got["results"]) == {"ig", "iba"}  # SIG is left out for long documents
    for method, rows in got["results"].items():
        scores = np.asarray(rows[0]["scores"])
        assert len(scores) == n and np.isfinite(scores).all()
        assert np.abs(scores[512:-1]).min() > 0, method
        assert len(re.search(rf" {method.upper()} top words: (.+)", text)[1].split(", ")) == 8
    html = (out / "article.html").read_text()
    assert f"HTML report (the whole article): {out / 'article.html'}" in text
    assert rows[0]["tokens"][-2].lstrip("#") in html  # the article's last word piece is in the report


def test_demo_task_long_runs_the_long_demo(monkeypatch):
    calls = []
    monkeypatch.setattr(demo_module, "run_long_demo", lambda **kw: calls.append(kw))
    assert cli.main(["demo", "--task", "long", "--quick", "--no-color"]) == 0
    assert calls and calls[0]["quick"] and calls[0]["colour"] is False


def test_gold_entity_spans_the_pieces_of_its_words():
    """A sentence the model finds no entity in explains its first gold entity: the span covers every piece of the
    entity's words, also when the tokenizer splits one corpus word into several ("U.S." -> U . S .)."""
    model = SimpleNamespace(cfg=SimpleNamespace(label_names=("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG")))
    ex = {"id": 7, "text": "U.S. firm TimeWarner", "word_ids": np.array([-1, 0, 1, 2, 3, 4, 5, 5, -1]),
          "word_spans": [[0, 0, 1], [0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 5, 9], [0, 10, 20]]}
    got = gold_entity(model, ex, ["U.S.", "firm", "TimeWarner"], ["B-LOC", "O", "B-ORG"])
    assert got["entity"]["text"] == "U.S." and got["id"] == "7/0" and got["example_id"] == 7
    assert got["token_target"] == [-1, 1, 2, 2, 2, -1, -1, -1, -1]
    later = gold_entity(model, ex, ["U.S.", "firm", "TimeWarner"], ["O", "O", "B-ORG"])
    assert later["entity"]["text"] == "TimeWarner" and later["token_target"] == [-1] * 6 + [3, 4, -1]
    assert gold_entity(model, ex, ["U.S.", "firm", "TimeWarner"], ["O", "O", "O"]) is None
