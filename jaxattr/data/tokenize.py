"""Texts -> token ids with word<->token alignment, and padding to a few bucket lengths.

Every example keeps `word_ids` (index of the word each token belongs to, -1 for special tokens and
padding) and its `words`, so attributions can be summed from word pieces to words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxattr.errors import UserError

log = logging.getLogger(__name__)

# past 512 tokens (windowed or natively long models) the lengths grow by ~1.25x (FINE) or 2x
LONG_BUCKETS: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
BUCKETS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, *LONG_BUCKETS)  # training/eval batches: few shapes, few compiles
# attribution jobs run each example for many rows (steps x words), so padding costs more than a few
# extra compiles (~2 s each for MiniLM on CPU, a few IG examples' time): at most ~25% padding, ~12%
# on average, so a 25-token tweet runs at 28 tokens, not 32 (8% faster IG on tweets than 1.5x steps)
FINE_BUCKETS: tuple[int, ...] = (16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
                                 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584,
                                 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384)
Example = dict[str, Any]


def bucket_length(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket that holds n tokens (padding to a handful of lengths bounds recompiles)."""
    for b in buckets:
        if n <= b:
            return b
    raise UserError(f"{n} tokens exceed the largest bucket {max(buckets)}")


def _strip_span(text: str, segment: int, start: int, end: int) -> list[int]:
    """A word's [segment, start, end] without surrounding whitespace (SentencePiece offsets include the
    space before a word: the word is the text without it)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [segment, start, end]


def _merge_blank_words(spans: list[list[int]], word_ids: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Give a whitespace-only "word" (byte-level BPE makes one of the second of two spaces) to the next
    word of its segment (else the previous one): a word is never blank, and no piece loses its word."""
    kept = [k for k, (_, a, b) in enumerate(spans) if b > a]
    if len(kept) == len(spans):
        return spans, word_ids
    new = {k: i for i, k in enumerate(kept)}
    for k, (seg, _, _) in enumerate(spans):
        if k not in new:
            after = [j for j in kept if j > k and spans[j][0] == seg]
            before = [j for j in kept if j < k and spans[j][0] == seg]
            new[k] = new[after[0]] if after else new[before[-1]] if before else -1
    remap = np.vectorize(lambda w: new[int(w)] if w >= 0 else -1, otypes=[np.int32])
    return [spans[k] for k in kept], remap(word_ids) if len(word_ids) else word_ids


def encode_texts(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                 max_length: int = 512) -> list[Example]:
    """Tokenise texts (and optional second segments); over-long inputs are truncated with a warning.

    Returns one dict per text: `input_ids`, `token_type_ids`, `word_ids` (int32 arrays of the token
    length), `tokens` and `words` (lists of str), `word_spans` ([segment, start, end] character offsets
    of each word in `text` (segment 0) or `text_pair` (1), so a view can show the original spelling and
    spacing) and the texts. Words of the second segment follow the first's.
    """
    texts = list(texts)
    if pairs is not None and len(pairs) != len(texts):
        raise UserError(f"{len(texts)} texts but {len(pairs)} text pairs")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise UserError(f"text #{i} is empty; give non-empty text")
    if pairs is not None:
        for i, t in enumerate(pairs):
            if not isinstance(t, str) or not t.strip():
                raise UserError(f"text pair #{i} is empty; give non-empty text or drop --text-pair")
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_token_type_ids=True)
    full = tokenizer(texts, pairs, truncation=False, add_special_tokens=True, verbose=False)["input_ids"]
    n_cut = sum(len(f) > max_length for f in full)
    if n_cut:
        log.warning("%d of %d inputs are longer than %d tokens and were truncated", n_cut, len(texts), max_length)
    out = []
    for i in range(len(texts)):
        ids = enc["input_ids"][i]
        seq_ids, wids, offsets = enc.sequence_ids(i), enc.word_ids(i), enc["offset_mapping"][i]
        sources = (texts[i], pairs[i] if pairs is not None else "")
        word_index: dict[tuple[int, int], int] = {}
        spans: list[list[int]] = []  # [segment, start, end] per word
        word_ids = np.full(len(ids), -1, np.int32)
        for j, (s, w) in enumerate(zip(seq_ids, wids)):
            if s is None or w is None:
                continue
            key = (s, w)
            if key not in word_index:
                word_index[key] = len(spans)
                spans.append([s, offsets[j][0], offsets[j][1]])
            k = word_index[key]
            spans[k][2] = offsets[j][1]
            word_ids[j] = k
        tt = enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(ids)
        spans, word_ids = _merge_blank_words([_strip_span(sources[s], s, a, b) for s, a, b in spans], word_ids)
        out.append({
            "input_ids": np.asarray(ids, np.int32),
            "token_type_ids": np.asarray(tt, np.int32),
            "word_ids": word_ids,
            "tokens": tokenizer.convert_ids_to_tokens(ids),
            "words": [sources[s][a:b] for s, a, b in spans],
            "word_spans": spans,
            "text": texts[i],
            **({"text_pair": pairs[i]} if pairs is not None else {}),
        })
    return out


def pad_batch(examples: Sequence[Example], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Stack examples into [B, length] int32 arrays: input_ids, attention_mask, token_type_ids, word_ids."""
    b = len(examples)
    batch = {
        "input_ids": np.full((b, length), pad_id, np.int32),
        "attention_mask": np.zeros((b, length), np.int32),
        "token_type_ids": np.zeros((b, length), np.int32),
        "word_ids": np.full((b, length), -1, np.int32),
    }
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        if n > length:
            raise ValueError(f"example of {n} tokens does not fit length {length}")
        batch["input_ids"][i, :n] = ex["input_ids"]
        batch["attention_mask"][i, :n] = 1
        batch["token_type_ids"][i, :n] = ex["token_type_ids"]
        batch["word_ids"][i, :n] = ex["word_ids"]
    return batch
