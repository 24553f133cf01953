"""The HTML views: the word view rebuilds the original text (spelling, spacing, pairs) from word spans."""

from __future__ import annotations

from helpers import KINDS
from transformers import PreTrainedTokenizerFast

from jaxattr.data import encode_texts
from jaxattr.viz import render_report, show
from jaxattr.viz.html import text_pieces

TEXT, PAIR = "Driverless  cars, honestly?\tI trust them!", "Not worth the risk."


def _record(kind: str, pair: str | None = None) -> dict:
    build, specials, _, _ = KINDS[kind]
    tok = PreTrainedTokenizerFast(tokenizer_object=build(), **specials)
    (ex,) = encode_texts(tok, [TEXT], None if pair is None else [pair])
    n = len(ex["words"])
    return {**ex, "id": 0, "scores": [0.0] * len(ex["tokens"]), "word_scores": [float(k) for k in range(n)],
            "target": 1, "prob": 0.5}


def test_word_view_is_the_original_text_for_every_tokenizer_kind():
    for kind in KINDS:
        rec = _record(kind)
        pieces = text_pieces(rec)
        assert "".join(p for p, _ in pieces) == TEXT, kind
        assert [p for p, k in pieces if k is not None] == rec["words"]
        paired = text_pieces(_record(kind, PAIR))
        assert "".join(p for p, _ in paired) == TEXT + " | " + PAIR, kind


def test_report_and_notebook_view_escape_and_colour():
    rec = {**_record("byte_bpe"), "text": TEXT}
    page = render_report([rec])
    assert "cars</span><span" in page and "\t" in page and "  " in page  # spacing between words kept
    assert render_report([rec], level="tokens").count("<span") > page.count("<span") - 6
    view = show(rec)
    assert "<style>" in view._repr_html_() and "them" in view._repr_html_()
    assert "1 records" in repr(view)
    legacy = {k: v for k, v in rec.items() if k not in ("word_spans", "text")}  # records without spans
    assert "".join(p for p, _ in text_pieces(legacy)) == " ".join(rec["words"])


def test_report_outlines_the_explained_entity_and_scrolls_long_texts():
    """A token model's record (attribute --task token): the entity's words (word view) or tokens (token view)
    carry the `in-entity` class, no other does; a long text scrolls inside its block."""
    rec = {"id": "0/0", "tokens": ["[CLS]", "ann", "lives", "in", "new", "york", "[SEP]"],
           "scores": [0, .5, .1, .2, .9, .3, 0], "words": ["ann", "lives", "in", "new", "york"],
           "word_scores": [.5, .1, .2, .9, .3], "text": "ann lives in new york",
           "word_spans": [[0, 0, 3], [0, 4, 9], [0, 10, 12], [0, 13, 16], [0, 17, 21]],
           "entity": {"label": "LOC", "start": 4, "end": 6, "segment": 0, "char_start": 13, "char_end": 21,
                      "text": "new york"}, "target": 1}
    import re

    for level, marked in (("words", ["new", "york"]), ("tokens", ["new", "york"])):
        page = render_report([rec], level=level)
        body = page.split('<div class="toks">')[1]
        assert re.findall(r'<span class="(?:special )?in-entity"[^>]*>([^<]*)</span>', body) == marked, level
    assert "overflow-y: auto" in render_report([rec])
