"""`jaxattr train`: fine-tune (plain, AD-DROP; DACT/DeeBERT via jaxattr.training.<method>) a sequence or,
with `--set task=token`, a token classifier (NER) from a YAML config with `--set key=value` overrides. Same
program as `train/finetune.py`."""

from __future__ import annotations

import argparse
import json

from jaxattr.errors import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of TrainConfig keys (see jaxattr/training/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set method=addrop --set addrop.p=0.3 or --set task=token "
                        "(repeatable)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from jaxattr.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from jaxattr.training.trainer import run as train

    check_output(cfg.output_dir, "output_dir", directory=True)

    results = train(cfg)
    print(json.dumps({"dev": results["dev"], "test": results["test"], "output_dir": cfg.output_dir}))
    return 0
