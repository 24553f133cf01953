"""Datasets as fixed-shape arrays for training: one sequence length per run (one compile), a seeded
permutation per epoch (the data order is a pure function of (seed, step), so a resumed run sees exactly
the batches it would have seen), and eval batches filled up with weight-0 rows. Token classification:
`labels` [N, T] with first-piece labelling (`first_piece_labels`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from jaxattr.data import bucket_length, encode_texts, tokenize_dataset
from jaxattr.data.tokenize import Example, pad_batch

Arrays = dict[str, np.ndarray]
IGNORE = -100  # a token without a label (HF's ignore_index): later pieces of a word, special tokens, padding


def encode_split(ds: Any, tokenizer: Any, max_length: int, pad_id: int, regression: bool) -> Arrays:
    """Tokenise a `datasets.Dataset` (text [, text_pair], label) into [N, T] arrays, T = the bucket of the
    longest example (at most `max_length`)."""
    examples = tokenize_dataset(ds, tokenizer, max_length=max_length)
    longest = max((len(e["input_ids"]) for e in examples), default=1)
    t = min(bucket_length(longest), max_length) if longest <= max_length else max_length
    arrays = pad_batch(examples, t, pad_id)
    arrays.pop("word_ids", None)
    labels = [e["label"] for e in examples]
    arrays["labels"] = np.asarray(labels, np.float32 if regression else np.int32)
    arrays["weight"] = np.ones(len(examples), np.float32)
    return arrays


def first_piece_labels(tokenizer: Any, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]],
                       max_length: int) -> list[Example]:
    """Encode sentences given as words (`encode_texts` on the words joined by spaces) and label them as HF's
    token-classification examples do (`label_all_tokens=False`): each word's tag on its first word piece,
    `IGNORE` on its other pieces and on special tokens. Each example gains `labels` [n tokens]. Pieces are
    matched to words by character offsets, so any tokenizer works (a RoBERTa one needs no add_prefix_space);
    a word cut off by `max_length` has no label."""
    texts = [" ".join(w) for w in words]
    examples = encode_texts(tokenizer, texts, max_length=max_length)
    for ex, ws, ts in zip(examples, words, tags):
        starts = np.cumsum([0] + [len(w) + 1 for w in ws[:-1]]).tolist()  # where each word begins in the text
        of_piece_word = [bisect.bisect_right(starts, start) - 1 for _, start, _ in ex["word_spans"]]
        labels = np.full(len(ex["input_ids"]), IGNORE, np.int32)
        labelled = set()
        for j, w in enumerate(ex["word_ids"]):
            if w >= 0 and of_piece_word[w] not in labelled:
                labelled.add(of_piece_word[w])
                labels[j] = ts[of_piece_word[w]]
        ex["labels"] = labels
    return examples


def encode_token_split(ds: Any, tokenizer: Any, max_length: int, pad_id: int) -> Arrays:
    """A token-classification Dataset (`tokens`, `tags`) as [N, T] arrays with first-piece `labels` [N, T]
    (`IGNORE` on padding too), T = the bucket of the longest example (at most `max_length`)."""
    examples = first_piece_labels(tokenizer, list(ds["tokens"]), list(ds["tags"]), max_length)
    longest = max((len(e["input_ids"]) for e in examples), default=1)
    t = min(bucket_length(longest), max_length)
    arrays = pad_batch(examples, t, pad_id)
    arrays.pop("word_ids", None)
    arrays["labels"] = np.full((len(examples), t), IGNORE, np.int32)
    for i, e in enumerate(examples):
        arrays["labels"][i, :len(e["labels"])] = e["labels"]
    arrays["weight"] = np.ones(len(examples), np.float32)
    return arrays


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the incomplete last batch of an epoch is dropped)."""
    return n // batch_size


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of `epoch` (1-indexed): a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_batch(arrays: Arrays, batch_size: int, seed: int, step: int, rows: slice | None = None) -> tuple[int, Arrays]:
    """(epoch, host batch) for global step `step` (0-based); `rows` picks this process's part of it."""
    n = len(arrays["input_ids"])
    spe = steps_per_epoch(n, batch_size)
    epoch, pos = step // spe + 1, step % spe
    idx = epoch_permutation(n, seed, epoch)[pos * batch_size:(pos + 1) * batch_size]
    if rows is not None:
        idx = idx[rows]
    return epoch, {k: v[idx] for k, v in arrays.items()}


def eval_batches(arrays: Arrays, batch_size: int, rows: slice | None = None) -> Iterator[Arrays]:
    """Fixed-size batches in order; the last is filled with weight-0 copies of row 0."""
    n = len(arrays["input_ids"])
    for s in range(0, n, batch_size):
        idx = np.arange(s, s + batch_size)
        weight = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)
        if rows is not None:
            idx, weight = idx[rows], weight[rows]
        batch = {k: v[idx] for k, v in arrays.items()}
        batch["weight"] = weight
        yield batch
