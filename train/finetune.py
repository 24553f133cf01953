"""Fine-tune a BERT-family encoder (plain or AD-DROP) from a YAML config with --set overrides.

    python train/finetune.py --config my.yaml --set method=addrop --set addrop.p=0.3

Thin wrapper around `jaxattr train` (jaxattr/commands/train.py); see jaxattr/training/config.py for keys.
"""

import sys

from jaxattr.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
