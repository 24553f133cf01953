"""`jaxattr merge OUT [--html FILE]`: join the `jaxattr attribute --shard K/N` jobs of OUT into OUT.

    jaxattr attribute --model M --method ig --input data.csv --out out.jsonl --shard $SLURM_ARRAY_TASK_ID/8
    jaxattr merge out.jsonl --html out.html

Refused (exit 2, OUT untouched) until all N shards are finished; each id once, in input order.
"""

from __future__ import annotations

import argparse
import sys

from jaxattr.errors import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the --out of the sharded jobs (.jsonl or .parquet)")
    parser.add_argument("--html", default=None, help="also write an HTML report of the merged records here")
    parser.add_argument("--html-view", default="words", choices=("words", "tokens"),
                        help="the report shows the original text coloured by word (default) or the word pieces")


def run(args: argparse.Namespace) -> int:
    from jaxattr.attribution import multihost
    from jaxattr.attribution.results import read_results, stored_settings

    check_output(args.out, "OUT")
    if args.html:
        check_output(args.html, "--html")
    n = multihost.merge_shards(args.out)
    print(f"jaxattr merge: {n} records in {args.out}", file=sys.stderr)
    if args.html:
        from pathlib import Path

        from jaxattr.viz.html import write_report

        settings = stored_settings(Path(args.out + ".meta.json")) or {}
        method = settings.get("method", "")
        write_report(args.html, read_results(args.out), title=f"{method} attributions",
                     method=f"method {method} {settings.get('options', {})}",
                     label_names=(settings.get("model") or {}).get("label_names"), level=args.html_view)
        print(f"jaxattr merge: report in {args.html}", file=sys.stderr)
    return 0
