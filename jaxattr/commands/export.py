"""`jaxattr export CKPT_DIR HF_DIR`: a jaxattr checkpoint -> a HF directory for transformers."""

from __future__ import annotations

import argparse

from jaxattr.errors import check_output
from jaxattr.models.checkpoint import load_checkpoint
from jaxattr.models.hf import save_hf_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt_dir", metavar="CKPT_DIR", help="jaxattr checkpoint directory")
    parser.add_argument("hf_dir", metavar="HF_DIR",
                        help="output directory, loadable by transformers.AutoModelForSequenceClassification")


def run(args: argparse.Namespace) -> int:
    check_output(args.hf_dir, "HF_DIR", directory=True)
    cfg, params = load_checkpoint(args.ckpt_dir)
    out = save_hf_dir(cfg, params, args.hf_dir, tokenizer_dir=args.ckpt_dir)
    print(f"wrote HF directory {out} ({cfg.family} sequence classifier, {cfg.num_labels} labels)")
    return 0
