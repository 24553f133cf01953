"""`jaxattr attribute`: token attributions (SIG, IG, Grad×Input, saliency, GradientShap, IBA, ...) for
texts or a dataset, written to a resumable JSONL / Parquet file, optionally with an HTML report.

    jaxattr attribute --model MODEL --method sig --text "a great film" --out out.jsonl --html out.html
    jaxattr attribute --model MODEL --method ig --input data.csv --target gold --out out.jsonl

    jaxattr attribute --model /shared/ckpt --method ig --input data.parquet --out out.jsonl --executor ray

Re-running the same command skips the examples already in OUT; a kill loses at most the chunk in
flight and the last `--save-every` seconds (an unfinished IG/SIG example continues from its partial sums
in OUT.partial.json). Texts
longer than the model's maximum are truncated (with a warning).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jaxattr.errors import UserError, check_output

log = logging.getLogger("jaxattr.attribute")

# generic method options: flag -> (dest, type, help). Passed to a method only if it declares them.
METHOD_OPTIONS: dict[str, tuple[str, Any, str]] = {
    "--steps": ("steps", lambda v: v if v == "auto" else int(v),
                "integration / optimisation steps (IG, SIG: 50; IBA: 10); IG/SIG: 'auto' refines each unit's "
                "nested trapezoid rule until its completeness gap is below --tolerance"),
    "--baseline": ("baseline", str, "IG/SIG/GradientShap baseline: mask (default), pad or zero"),
    "--integration": ("method", str, "quadrature: gausslegendre (default), riemann_left/right/middle/trapezoid, "
                                     "captum_trapezoid (Captum's weights)"),
    "--unit": ("unit", str, "SIG/LIME unit: token (default; as tint) or word (all pieces of a word at once; "
                            "LIME: words are the features, as the lime package)"),
    "--samples": ("samples", int, "noise samples (GradientShap: 20; IBA: 10)"),
    "--stdev": ("stdev", float, "GradientShap input noise standard deviation (default 0)"),
    "--layer": ("layer", str, "IBA layer: a block index >= 0 (0 = embeddings) or 'all'"),
    "--beta": ("beta", float, "IBA beta (weight of the KL term)"),
    "--noise": ("noise", str, "IBA noise statistics: sequence, dataset or reference"),
    "--noise-stats": ("noise_stats", str, "IBA: per-layer noise statistics (.npz) for --noise dataset"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.attribution.entities import add_task_arguments
    from jaxattr.models.precision import add_precision_arguments
    from jaxattr.models.windowed import add_long_arguments

    add_precision_arguments(parser)
    add_long_arguments(parser)
    parser.add_argument("--model", default="default",
                        help="jaxattr checkpoint dir, HF dir, 'minilm' (untrained head) or 'default' (demo model)")
    parser.add_argument("--method", required=True,
                        help="a registered method (sig, ig, gradxinput, saliency, gradientshap, iba, lime, random) or "
                             "variant (sig_pad, ig_pad, ig_ref, lime_ref, ...: jaxattr.attribution.registry)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to explain (repeat for several)")
    src.add_argument("--input", help="a CSV/JSONL/Parquet file, or a corpus name (with --split)")
    parser.add_argument("--text-pair", action="append", default=None,
                        help="second segment of the --text before it (sentence-pair models; once per --text)")
    parser.add_argument("--split", default=None, help="split of a corpus / hub dataset (train, dev, test)")
    parser.add_argument("--text-column", default="text", help="column with the text (default: text)")
    parser.add_argument("--pair-column", default=None, help="column with a second segment (sentence pairs)")
    parser.add_argument("--id-column", default="id",
                        help="column with the examples' own ids, kept in the records (default: id when the input "
                             "has it, else the row number); duplicate ids are refused")
    parser.add_argument("--label-column", default=None,
                        help="column with gold labels (default: 'label' when --target gold)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--out", required=True, help="result file: .jsonl (default) or .parquet")
    parser.add_argument("--overwrite", action="store_true", help="start OUT afresh instead of resuming")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run part K (0..N-1) of the input as one of N independent jobs (a SLURM array); "
                             "each writes OUT.shards/, and `jaxattr merge OUT` joins them once all are done")
    parser.add_argument("--executor", default="local", choices=("local", "ray"),
                        help="local (default): this process (or each process of a jax.distributed job) on its "
                             "devices; ray: a pool of Ray actors, each loading --model on its own devices "
                             "(pip install jaxattr[ray]; the model path must be readable on every node)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="--executor ray: the cluster to join (default: RAY_ADDRESS, else a new local one)")
    parser.add_argument("--ray-actors", type=int, default=None, metavar="N",
                        help="--executor ray: actors in the pool (default: one per GPU of the cluster, else 1)")
    parser.add_argument("--target", default="predicted", help="predicted (default), gold, or a class index")
    add_task_arguments(parser, "one record per predicted entity, explaining the sum of its tokens' logits for "
                               "their predicted tags")
    parser.add_argument("--output", default="logit", choices=("logit", "prob"),
                        help="explained output: the target's logit (default, as the SIG reference) or probability")
    parser.add_argument("--html", default=None, help="also write an HTML report here")
    parser.add_argument("--html-view", default="words", choices=("words", "tokens"),
                        help="the report shows the original text coloured by word (default) or the word pieces")
    parser.add_argument("--tokens-per-batch", type=_tokens_per_batch, default=None,
                        help="memory bound: rows x sequence length per device and chunk; 'auto' (the default on "
                             "accelerators) sizes it from the device's memory; 8192 on CPU")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="--steps auto: the completeness gap (in units of the explained output) a unit is "
                             "refined down to (default 0.01)")
    parser.add_argument("--save-every", type=float, default=None,
                        help="seconds between saves of unfinished IG/SIG sums and finished records (default 5; "
                             "a kill loses at most this much work plus the chunks in flight)")
    parser.add_argument("--devices", type=int, default=None, help="number of devices to shard over (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling methods (GradientShap, IBA)")
    for flag, (dest, typ, help_text) in METHOD_OPTIONS.items():
        parser.add_argument(flag, dest=f"opt_{dest}", type=typ, default=None, help=help_text)


def _tokens_per_batch(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', not {value!r}") from None


def driver_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The Driver's run settings from the shared flags (--tokens-per-batch, --tolerance)."""
    import jax

    from jaxattr.attribution.driver import DEFAULT_TOKENS_PER_BATCH, DEFAULT_TOLERANCE

    tpb = args.tokens_per_batch
    if tpb is None:
        tpb = DEFAULT_TOKENS_PER_BATCH if jax.default_backend() == "cpu" else "auto"
    if args.tolerance is not None and getattr(args, "opt_steps", None) != "auto":
        raise UserError("--tolerance goes with --steps auto")
    return {"tokens_per_batch": tpb, "tolerance": DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance}


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts = {dest: getattr(args, f"opt_{dest}") for dest, _, _ in METHOD_OPTIONS.values()}
    layer = opts.get("layer")
    if layer is not None and layer != "all":
        try:
            opts["layer"] = int(layer)
        except ValueError:
            raise UserError(f"--layer must be an integer >= 0 or 'all', not {layer!r}") from None
        if opts["layer"] < 0:
            raise UserError(f"--layer must be >= 0, not {layer}")
    return opts


def _examples(args: argparse.Namespace, model: Any) -> list[dict[str, Any]]:
    from jaxattr.models.windowed import token_limit

    cfg = model.cfg
    if args.text_pair is not None and args.text is None:
        raise UserError("--text-pair goes with --text; for a file give --pair-column")
    if args.text is not None:
        from jaxattr.data.tokenize import encode_texts

        if args.target == "gold":
            raise UserError("--target gold needs labels: use --input with a label column")
        if args.text_pair is not None and len(args.text_pair) != len(args.text):
            raise UserError(f"{len(args.text)} --text but {len(args.text_pair)} --text-pair; give one pair per text")
        exs = encode_texts(model.tokenizer, args.text, args.text_pair, max_length=token_limit(cfg, args.long))
        for i, ex in enumerate(exs):
            ex["id"] = i
        return exs[:args.limit] if args.limit else exs
    from jaxattr.data.datasets import load_input_dataset, tokenize_dataset

    label_col = args.label_column or ("label" if args.target == "gold" else None)
    ds = load_input_dataset(args.input, args.split, limit=args.limit, text_column=args.text_column,
                            label_column=label_col, text_pair_column=args.pair_column, label_names=cfg.label_names,
                            id_column=args.id_column)
    if "label" in ds.column_names and cfg.problem_type != "regression":
        bad = [x for x in ds["label"] if x is not None and not -1 <= int(x) < cfg.num_labels]
        if bad:
            raise UserError(f"{args.input}: label {bad[0]} is unknown to the model ({cfg.num_labels} classes)")
    return tokenize_dataset(ds, model.tokenizer, max_length=token_limit(cfg, args.long))


def _warn_truncated(examples: list[dict[str, Any]], args: argparse.Namespace, model: Any) -> None:
    """Say (on stderr, whatever the logging setup) how many inputs were cut to the model's maximum."""
    limit = model.cfg.max_length
    full = [ex for ex in examples if len(ex["input_ids"]) >= limit]
    if not full:
        return
    print(f"jaxattr attribute: warning: {len(full)} input(s) fill the model's maximum of {limit} tokens; longer "
          f"text was truncated to it (ids: {', '.join(str(ex['id']) for ex in full[:5])}"
          f"{', ...' if len(full) > 5 else ''}; --long truncate, the default: --long window reads whole documents)",
          file=sys.stderr)


def _check_executor(args: argparse.Namespace, shard: tuple[int, int] | None) -> None:
    """The one-line refusals of flags that do not go with `--executor` (before any model is loaded)."""
    from jaxattr.attribution import multihost

    if args.executor != "ray":
        if args.ray_address is not None or args.ray_actors is not None:
            raise UserError("--ray-address and --ray-actors go with --executor ray")
        return
    from jaxattr.ray import require_ray

    if shard:
        raise UserError("--executor ray runs the whole job on the cluster's actors; drop --shard K/N")
    if multihost.process()[1] > 1:
        raise UserError("--executor ray runs from one process; launch it once, not as jax.distributed processes")
    if args.devices is not None:
        raise UserError("--devices goes with --executor local; each Ray actor runs on the devices Ray gives it")
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UserError(f"--ray-actors must be >= 1, not {args.ray_actors}")
    require_ray()


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="jaxattr attribute: warning: %(message)s")
    from jaxattr.attribution import multihost
    from jaxattr.sharding import initialize_distributed, request_cpu_devices

    request_cpu_devices(args.devices)
    initialize_distributed()
    from jaxattr.attribution import registry
    from jaxattr.attribution.driver import Driver, resolve_targets
    from jaxattr.attribution.job import Job
    from jaxattr.models.loading import load_model, task_model
    from jaxattr.models.precision import with_dtype
    from jaxattr.models.windowed import check_native, with_long

    spec = registry.get(args.method)
    options = spec.resolve_options(_options(args))
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, not {args.limit}")
    if not (args.out.endswith(".jsonl") or args.out.endswith(".parquet")):
        raise UserError(f"--out {args.out!r}: give a file name ending in .jsonl or .parquet")
    shard = multihost.parse_shard(args.shard) if args.shard else None
    _check_executor(args, shard)
    if shard and args.html:
        raise UserError("--html goes with the whole job: run `jaxattr merge OUT --html FILE` once every shard is done")
    check_output(args.out, "--out")
    if args.html:
        check_output(args.html, "--html")
    if args.long == "window":
        registry.check_windows([args.method])
    if args.long == "window" and (args.text_pair or args.pair_column):
        raise UserError("--long window reads single texts, not sentence pairs")
    model = task_model(load_model(args.model), args.task, "attribute")
    if args.task == "token":
        registry.check_token_models(args.method)
    if args.task == "token" and args.target != "predicted":
        raise UserError("--task token explains the predicted entities; --target does not apply")
    model = with_dtype(model, args.dtype)
    model = with_long(model, args.long, args.window, args.stride, args.window_pool)
    examples = _examples(args, model)
    if args.long == "native":
        check_native(examples, model.cfg.max_positions)
    if args.task == "token":
        from jaxattr.attribution.entities import entity_examples

        n_texts = len(examples)
        examples = entity_examples(model.params, model.cfg, examples, pad_id=model.pad_id, select=args.entities)
        print(f"jaxattr attribute: {len(examples)} entities in {n_texts} texts", file=sys.stderr)
    _warn_truncated(examples, args, model)
    resolve_targets(examples, args.target, model.cfg)  # bad --target / missing gold labels: fail before writing
    driver = Driver(model.params, model.cfg, args.method, options, mask_id=model.mask_id, pad_id=model.pad_id,
                    output=args.output, devices=args.devices, seed=args.seed, **driver_kwargs(args))
    settings = {**driver.settings(), "target": args.target, "seed": args.seed}
    job = Job(args.out, settings, model=model.source, overwrite=args.overwrite,
              **({} if args.save_every is None else {"save_every": args.save_every}))
    if shard:
        written = job.attribute(driver, examples, args.target, desc=args.method, shard=shard)
        print(f"jaxattr attribute: shard {shard[0]}/{shard[1]} wrote {written} records to "
              f"{multihost.shard_dir(args.out)}", file=sys.stderr)
        return 0
    if args.executor == "ray":
        from jaxattr.ray import RayDriver

        actor = {"output": args.output, "seed": args.seed, "tokens_per_batch": args.tokens_per_batch,
                 "tolerance": args.tolerance, "dtype": args.dtype, "matmul_precision": args.matmul_precision,
                 "long": args.long, "window": args.window, "stride": args.stride, "window_pool": args.window_pool}
        driver = RayDriver(driver, args.model, actor, address=args.ray_address, actors=args.ray_actors)
    written = job.attribute(driver, examples, args.target, desc=args.method)
    print(f"jaxattr attribute: wrote {written} records to {args.out}", file=sys.stderr)
    if multihost.process()[0] != 0:
        return 0
    if args.html:
        from jaxattr.viz.html import write_report

        write_report(args.html, job.results(), title=f"{args.method} attributions",
                     method=f"method {args.method} {options} on {model.source}",
                     label_names=model.cfg.label_names, level=args.html_view)
        print(f"jaxattr attribute: report in {args.html}", file=sys.stderr)
    return 0
