"""Entities from per-token tags (BIO / IOB2), merged over word pieces: what a token-classification model found.

A word's tag is its first piece's (the usual first-piece labelling of NER fine-tuning); the word's other
pieces join the entity its first piece is in. `B-X` starts an entity of type X, `I-X` continues an open
entity of type X and otherwise starts one (a stray `I-X`, or one after another type), `O` is outside; a
tag with neither prefix (IO tagging, `PER`) is read as `I-PER`. Special tokens (word id -1) end an entity,
so no entity crosses [SEP] into a second segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def split_tag(tag: str) -> tuple[str, str | None]:
    """("B" | "I" | "O", entity type or None): "B-PER" -> ("B", "PER"), "O" -> ("O", None), "PER" -> ("I", "PER")."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return tag[0], tag[2:]
    return "I", tag


def entities(tags: Sequence[str], word_ids: Sequence[int], word_spans: Sequence[Sequence[int]],
             texts: Sequence[str]) -> list[dict[str, Any]]:
    """The entities of one example: `tags` and `word_ids` per token (-1: special token or padding),
    `word_spans` ([segment, start, end] characters per word, as `encode_texts` gives them) and the texts of
    the segments (text, text_pair). Each entity: label, start and end token (end exclusive), segment,
    char_start/char_end in that segment's text, and the text itself."""
    if len(tags) != len(word_ids):
        raise ValueError(f"{len(tags)} tags for {len(word_ids)} tokens")
    found: list[dict[str, Any]] = []
    open_: dict[str, Any] | None = None  # the entity the previous token belongs to, if any
    prev_word = -1
    for j, (tag, w) in enumerate(zip(tags, (int(w) for w in word_ids))):
        if w < 0:  # special token or padding: no entity crosses it
            open_, prev_word = None, -1
            continue
        if w == prev_word:  # a later piece of the same word: with its first piece
            if open_ is not None and open_["end"] == j:
                open_["end"], open_["last_word"] = j + 1, w
            continue
        prev_word = w
        prefix, kind = split_tag(str(tag))
        if prefix == "O":
            open_ = None
        elif prefix == "I" and open_ is not None and open_["label"] == kind:
            open_["end"], open_["last_word"] = j + 1, w
        else:
            open_ = {"label": kind, "start": j, "end": j + 1, "first_word": w, "last_word": w}
            found.append(open_)
    out = []
    for e in found:
        segment, char_start = int(word_spans[e["first_word"]][0]), int(word_spans[e["first_word"]][1])
        char_end = int(word_spans[e["last_word"]][2])
        out.append({"label": e["label"], "start": e["start"], "end": e["end"], "segment": segment,
                    "char_start": char_start, "char_end": char_end, "text": texts[segment][char_start:char_end]})
    return out


def span_target(length: int, start: int, end: int, classes: Sequence[int]) -> Any:
    """The target [length] that explains tokens start..end-1 of a token model (-1 elsewhere): each token's
    class in `classes` ([length], e.g. the predicted tags), so F = the sum of the span's logits for those tags
    (`gradients.explained_output`); one position with its class is the (position, class) target."""
    import numpy as np

    from jaxattr.errors import UserError

    if not 0 <= start < end <= length:
        raise UserError(f"span {start}..{end} is outside the input's {length} tokens")
    out = np.full(length, -1, np.int32)
    out[start:end] = np.asarray(classes, np.int32)[start:end]
    return out
