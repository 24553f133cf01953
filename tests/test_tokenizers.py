"""Word alignment for each fast-tokenizer kind the encoder families use (issue "Bring your own encoder").

WordPiece (BERT, DistilBERT, ELECTRA), byte-level BPE with `Ġ` word starts (RoBERTa, ModernBERT) and
SentencePiece with `▁` word starts (XLM-R, CamemBERT, ALBERT, DeBERTa-v3) are each trained here on a
few sentences with the `tokenizers` library (no download) and wrapped as transformers' fast tokenizer,
as a Hub checkpoint ships them. The oracle is the text itself: every word's span must be a slice of the
input, every piece of a word must carry that word's id, and special tokens none.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import KINDS
from helpers import TOKENIZER_TEXT as TEXT
from transformers import PreTrainedTokenizerFast

from jaxattr.attribution.gradients import word_scores
from jaxattr.data import encode_texts

PAIR = "Not worth the risk."


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request):
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
