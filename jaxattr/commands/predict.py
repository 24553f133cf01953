"""`jaxattr predict --model MODEL --text TEXT [--text-pair TEXT] [--json]`: label and probabilities; on a
token-classification model, a label and logits per token and the entities found (`jaxattr.data.entities`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import jax
import numpy as np

from jaxattr.data.entities import entities
from jaxattr.data.tokenize import Example, bucket_length, encode_texts, pad_batch
from jaxattr.models.encoder import forward_batch
from jaxattr.models.loading import Model, load_model
from jaxattr.models.precision import with_dtype
from jaxattr.models.windowed import add_long_arguments, check_native, token_limit, with_long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.models.precision import add_precision_arguments

    add_precision_arguments(parser)
    add_long_arguments(parser)
    parser.add_argument("--model", default="minilm",
                        help="jaxattr checkpoint dir, HF dir, 'minilm' (untrained head) or 'default' (demo model)")
    parser.add_argument("--text", required=True, help="the text to classify")
    parser.add_argument("--text-pair", default=None, help="second segment for sentence-pair models")
    parser.add_argument("--json", action="store_true", help='print {"label": int, "probs": [...], "logits": [...]}; '
                        'a token model: {"tokens", "labels", "tags", "logits" [T, C], "entities"}')


def predict_logits(model: Model, texts: Sequence[str], pairs: Sequence[str] | None = None,
                   examples: Sequence[Example] | None = None) -> np.ndarray:
    """Logits [N, num_labels] for texts (one jit-compiled forward per bucket length); a token model's are
    [N, T, num_labels] over the padded length (row i's first len(examples[i]["input_ids"]) are its tokens).
    `examples`: the texts already encoded."""
    if examples is None:
        examples = encode_texts(model.tokenizer, texts, pairs, max_length=model.cfg.max_length)
    length = bucket_length(max(len(e["input_ids"]) for e in examples))
    batch = pad_batch(examples, length, model.pad_id)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    fwd = jax.jit(lambda p, b: forward_batch(p, model.cfg, b).logits)
    return np.asarray(fwd(model.params, batch), np.float64)


def predict_tokens(model: Model, text: str, pair: str | None = None) -> dict:
    """A token model on one text: its tokens (special tokens included), per token the predicted label
    (`labels`, ints; `tags`, their names) and logits [T, C], and the entities the tags spell
    (`jaxattr.data.entities.entities`: label, start/end token, segment, characters and text)."""
    pairs = None if pair is None else [pair]
    example = encode_texts(model.tokenizer, [text], pairs, max_length=model.cfg.max_length)[0]
    n = len(example["input_ids"])
    logits = predict_logits(model, [], examples=[example])[0, :n]
    labels = logits.argmax(-1)
    names = model.cfg.label_names or tuple(f"LABEL_{i}" for i in range(model.cfg.num_labels))
    tags = [names[k] for k in labels]
    found = entities(tags, example["word_ids"], example["word_spans"], (text, pair or ""))
    return {"tokens": list(example["tokens"]), "labels": labels.tolist(), "tags": tags, "logits": logits.tolist(),
            "entities": found}


TERMINAL_EDGE = 20  # tokens shown at each end of a long document in the terminal view


def _run_token(model: Model, args: argparse.Namespace) -> int:
    out = predict_tokens(model, args.text, args.text_pair)
    if args.json:
        print(json.dumps(out))
        return 0
    width = max(len(t) for t in out["tokens"])
    rows = list(zip(out["tokens"], out["tags"], out["logits"]))
    for i, (tok, tag, row) in enumerate(rows):
        if TERMINAL_EDGE <= i < len(rows) - TERMINAL_EDGE:  # a long document: its ends and a count (--json: all)
            if i == TERMINAL_EDGE:
                print(f"  ... {len(rows) - 2 * TERMINAL_EDGE} more tokens (--json prints them all) ...")
            continue
        print(f"  {tok:<{width}}  {tag:<12} logit={max(row):+.4f}")
    print(f"entities: {len(out['entities'])}")
    for e in out["entities"]:
        print(f"  {e['label']:<12} tokens {e['start']}..{e['end'] - 1}  {e['text']!r}")
    return 0


def run(args: argparse.Namespace) -> int:
    model = with_long(with_dtype(load_model(args.model), args.dtype), args.long, args.window, args.stride,
                      args.window_pool)
    cfg = model.cfg
    if cfg.task == "token":
        return _run_token(model, args)
    if args.long == "window" and args.text_pair is not None:
        from jaxattr.errors import UserError

        raise UserError("--long window reads single texts, not sentence pairs")
    pairs = None if args.text_pair is None else [args.text_pair]
    examples = encode_texts(model.tokenizer, [args.text], pairs, max_length=token_limit(cfg, args.long))
    if args.long == "native":
        check_native(examples, cfg.max_positions)
    logits = predict_logits(model, [], examples=examples)[0]
    if cfg.problem_type == "regression":
        out = {"value": float(logits[0]), "logits": logits.tolist()}
        print(json.dumps(out) if args.json else f"value: {out['value']:.6g}")
        return 0
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    label = int(np.argmax(logits))
    if args.json:
        print(json.dumps({"label": label, "probs": probs.tolist(), "logits": logits.tolist()}))
        return 0
    names = cfg.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_labels))
    print(f"label: {names[label]} ({label})")
    for i, (name, p) in enumerate(zip(names, probs)):
        print(f"  {i} {name:<20} p={p:.4f}  logit={logits[i]:+.4f}")
    return 0
