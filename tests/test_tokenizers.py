"""Word alignment for each fast-tokenizer kind the encoder families use (issue "Bring your own encoder").

WordPiece (BERT, DistilBERT, ELECTRA), byte-level BPE with `Ġ` word starts (RoBERTa, ModernBERT) and
SentencePiece with `▁` word starts (XLM-R, CamemBERT, ALBERT, DeBERTa-v3) are each trained here on a
few sentences with the `tokenizers` library (no download) and wrapped as transformers' fast tokenizer,
as a Hub checkpoint ships them. The oracle is the text itself: every word's span must be a slice of the
input, every piece of a word must carry that word's id, and special tokens none.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import KINDS, spm_model_dir
from helpers import TOKENIZER_TEXT as TEXT
from transformers import PreTrainedTokenizerFast

from jaxattr.attribution.gradients import word_scores
from jaxattr.data import encode_texts
from jaxattr.models.loading import load_tokenizer

PAIR = "Not worth the risk."


@pytest.fixture(scope="module", params=[*sorted(KINDS), "spm_model"])
def kind(request, tmp_path_factory):
    if request.param == "spm_model":  # DeBERTa-v3's Hub layout, converted by transformers when loaded
        tok = load_tokenizer(spm_model_dir(tmp_path_factory.mktemp("spm")))
        assert tok.is_fast
        return request.param, tok, "▁", KINDS["sentencepiece"][3]
    build, specials, marker, words = KINDS[request.param]
    return request.param, PreTrainedTokenizerFast(tokenizer_object=build(), **specials), marker, words


def test_words_are_slices_of_the_text_and_pieces_share_their_word(kind):
    name, tok, marker, want = kind
    (ex,) = encode_texts(tok, [TEXT])
    assert ex["words"] == want, name
    wids, tokens = ex["word_ids"], ex["tokens"]
    assert wids[0] == -1 and wids[-1] == -1 and (wids[1:-1] >= 0).all()
    assert list(np.unique(wids[wids >= 0])) == list(range(len(want)))
    assert (np.diff(wids[1:-1]) >= 0).all(), "a word's pieces are contiguous"
    for k, word in enumerate(want):
        pieces = [tokens[j] for j in np.flatnonzero(wids == k)]
        text = "".join(pieces).replace("##", "")
        if marker:  # the word-start marker sits on the word's first piece only (not after punctuation)
            assert all(marker not in p for p in pieces[1:]), (name, word, pieces)
            text = text.replace(marker, "")
        assert text.lower() == word.lower(), (name, word, pieces)
    # word_scores sums exactly the pieces of each word
    scores = np.arange(len(wids), dtype=np.float64) + 1.0
    ws = word_scores(scores, wids, len(want))
    assert ws.sum() == scores[wids >= 0].sum()
    for k in range(len(want)):
        assert ws[k] == scores[wids == k].sum()


def test_pair_words_follow_the_first_segment(kind):
    name, tok, _, want = kind
    (ex,) = encode_texts(tok, [TEXT], [PAIR])
    assert ex["words"][:len(want)] == want
    assert " ".join(ex["words"][len(want):]).replace(" .", ".") == PAIR, name
    assert ex["word_ids"].max() == len(ex["words"]) - 1


def test_spm_model_without_sentencepiece_is_one_line(tmp_path):
    """Without the `sentencepiece` package transformers cannot convert spm.model (its error names tiktoken);
    jaxattr says what is missing."""
    d = spm_model_dir(tmp_path / "spm")
    code = ("import sys; sys.modules['sentencepiece'] = None\n"
            "from jaxattr.errors import UserError\nfrom jaxattr.models.loading import load_tokenizer\n"
            f"try:\n    load_tokenizer({str(d)!r})\nexcept UserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (f"{d}: the tokenizer is SentencePiece's spm.model without a tokenizer.json; "
                           "converting it needs the sentencepiece package (pip install sentencepiece)")
