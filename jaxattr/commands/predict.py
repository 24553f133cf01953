"""`jaxattr predict --model MODEL --text TEXT [--text-pair TEXT] [--json]`: label and probabilities."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import jax
import numpy as np

from jaxattr.data.tokenize import bucket_length, encode_texts, pad_batch
from jaxattr.models.encoder import forward_batch
from jaxattr.models.loading import Model, load_model
from jaxattr.models.precision import with_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.models.precision import add_precision_arguments

    add_precision_arguments(parser)
    parser.add_argument("--model", default="minilm",
                        help="jaxattr checkpoint dir, HF dir, 'minilm' (untrained head) or 'default' (demo model)")
    parser.add_argument("--text", required=True, help="the text to classify")
    parser.add_argument("--text-pair", default=None, help="second segment for sentence-pair models")
    parser.add_argument("--json", action="store_true", help='print {"label": int, "probs": [...], "logits": [...]}')


def predict_logits(model: Model, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
    """Logits [N, num_labels] for texts (one jit-compiled forward per bucket length)."""
    examples = encode_texts(model.tokenizer, texts, pairs, max_length=model.cfg.max_length)
    length = bucket_length(max(len(e["input_ids"]) for e in examples))
    batch = pad_batch(examples, length, model.pad_id)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    fwd = jax.jit(lambda p, b: forward_batch(p, model.cfg, b).logits)
    return np.asarray(fwd(model.params, batch), np.float64)


def run(args: argparse.Namespace) -> int:
    model = with_dtype(load_model(args.model), args.dtype)
    cfg = model.cfg
    logits = predict_logits(model, [args.text], None if args.text_pair is None else [args.text_pair])[0]
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
