"""`jaxattr convert HF_DIR OUT_DIR`: a Hugging Face checkpoint directory -> a jaxattr checkpoint."""

from __future__ import annotations

import argparse

from jaxattr.models.checkpoint import save_checkpoint
from jaxattr.models.hf import load_hf_dir
from jaxattr.models.loading import load_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json, model.safetensors "
                        "(or pytorch_model.bin) and tokenizer files")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="jaxattr checkpoint directory to write")
    parser.add_argument("--num-labels", type=int, default=None,
                        help="replace the classification head with a fresh one of this size (1 = regression)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a freshly initialised head")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="take the tokenizer files from DIR instead of HF_DIR")


def run(args: argparse.Namespace) -> int:
    tokenizer = load_tokenizer(args.tokenizer or args.hf_dir)
    cfg, params = load_hf_dir(args.hf_dir, seed=args.seed, num_labels=args.num_labels)
    out = save_checkpoint(args.out_dir, cfg, params, tokenizer)
    print(f"wrote jaxattr checkpoint {out} ({cfg.family}, {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_labels} labels)")
    return 0
