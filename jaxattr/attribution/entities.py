"""Token-classification targets: one example per predicted entity, explained as a span (issue 34).

A token model's output for an entity is a span of tags (B-PER, I-PER, ...). jaxattr explains the sum of the
span's logits for its predicted tags (`gradients.explained_output`): one scalar per entity, so IG's
completeness and the other methods' definitions hold unchanged, and a one-token span with a chosen class is
the (position, class) target. `entity_examples` predicts the tags of every example (batched forwards per
length bucket), finds the entities (`jaxattr.data.entities`) and returns one example per entity, with its
span target, for the driver, which batches the entities of a text like any examples.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxattr.data.entities import entities, span_target
from jaxattr.data.tokenize import bucket_length, pad_batch
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, forward_batch

PREDICT_ROWS = 64  # examples per forward when predicting tags


def add_task_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--task sequence|token` and `--entities all|LABEL`, one meaning for every command that explains entities
    (`attribute`, `evaluate`, `degradation`); `what` says what the command writes per entity."""
    parser.add_argument("--task", default="sequence", choices=("sequence", "token"),
                        help=f"token: a token-classification model; {what}")
    parser.add_argument("--entities", default="all",
                        help="--task token: explain every predicted entity (all, the default) or those of one label")


def predicted_tags(params: Params, cfg: EncoderConfig, examples: Sequence[Mapping[str, Any]], pad_id: int
                   ) -> list[np.ndarray]:
    """Each example's predicted class per token ([n_i] int32), batched per length bucket."""
    fwd = jax.jit(lambda p, b: forward_batch(p, cfg, b).logits.argmax(-1))
    out: list[np.ndarray | None] = [None] * len(examples)
    by_length: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_length.setdefault(bucket_length(len(ex["input_ids"])), []).append(i)
    for length, idx in by_length.items():
        for s in range(0, len(idx), PREDICT_ROWS):
            part = idx[s:s + PREDICT_ROWS]
            batch = pad_batch([examples[i] for i in part], length, pad_id)
            tags = np.asarray(fwd(params, {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}))
            for k, i in enumerate(part):
                out[i] = tags[k, :len(examples[i]["input_ids"])].astype(np.int32)
    return out  # type: ignore[return-value]


def entity_examples(params: Params, cfg: EncoderConfig, examples: Sequence[Mapping[str, Any]], *, pad_id: int,
                    select: str = "all") -> list[dict[str, Any]]:
    """One example per predicted entity (`select`: "all" or one entity label, e.g. "PER"), in input order: the
    example's fields plus `id` "<example id>/<k>", `example_id`, `entity` (label, start/end token, segment,
    characters, text) and `token_target` (the span's predicted classes, -1 elsewhere)."""
    if cfg.task != "token":
        raise UserError("entities come from a token-classification model; this one classifies whole sequences")
    names = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    known = {e for e in (n.split("-", 1)[-1] for n in names) if e != "O"}
    if select != "all" and select not in known:
        raise UserError(f"--entities {select!r}: the model's entity labels are {', '.join(sorted(known)) or 'none'}")
    out = []
    for ex, tags in zip(examples, predicted_tags(params, cfg, examples, pad_id)):
        texts = (ex.get("text", ""), ex.get("text_pair") or "")
        found = entities([names[t] for t in tags], ex["word_ids"], ex.get("word_spans", []), texts)
        for k, ent in enumerate(e for e in found if select in ("all", e["label"])):
            out.append({**ex, "id": f"{ex['id']}/{k}", "example_id": ex["id"], "entity": ent,
                        "token_target": span_target(len(tags), ent["start"], ent["end"], tags).tolist()})
    return out
