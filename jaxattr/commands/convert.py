"""`jaxattr convert HF_DIR OUT_DIR`: a Hugging Face checkpoint directory (or Hub name ORG/NAME[@REV], from the
local HF cache) -> a jaxattr checkpoint."""

from __future__ import annotations

import argparse

from jaxattr.models.checkpoint import save_checkpoint
from jaxattr.models.hf import load_hf_dir
from jaxattr.models.loading import is_hub_name, load_tokenizer, resolve_hub_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json, model.safetensors "
                        "(or pytorch_model.bin) and tokenizer files, or a Hub name ORG/NAME[@REV]")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="jaxattr checkpoint directory to write")
    parser.add_argument("--num-labels", type=int, default=None,
                        help="replace the classification head with a fresh one of this size (1 = regression)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a freshly initialised head")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="take the tokenizer files from DIR instead of HF_DIR")


def run(args: argparse.Namespace) -> int:
    if is_hub_name(args.hf_dir):
        args.hf_dir = str(resolve_hub_name(args.hf_dir))
    tokenizer = load_tokenizer(args.tokenizer or args.hf_dir)
    cfg, params = load_hf_dir(args.hf_dir, seed=args.seed, num_labels=args.num_labels)
    out = save_checkpoint(args.out_dir, cfg, params, tokenizer)
    print(f"wrote jaxattr checkpoint {out} ({cfg.family}, {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_labels} labels)")
    return 0
