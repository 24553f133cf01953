"""The evaluation harness as a library: attribution methods x examples -> faithfulness metrics.

    from jaxattr.evaluation import evaluate, summarise
    df = evaluate("default", ["what a great flight", "lost my bag again"], methods=["ig", "sig", "random"],
                  steps=8)
    summarise(df)                     # one row per method: mean and standard error of every metric

`evaluate(model, data, methods, metrics, out=None, **method_options)` returns a pandas DataFrame with one
row per (example, method): `id`, `method`, `target`, `prob`, `tokens`, `seconds`, `scores` and the metric
columns (`log_odds`, `comprehensiveness`, `sufficiency`, `aopc_comprehensiveness`, `aopc_sufficiency` —
`jaxattr.evaluation.faithfulness`; `degradation_drop_11`, `degradation_p11`, `degradation_curve` — the
IBA paper's degradation test; with `rationale_column=` also plausibility against human rationales,
`token_f1`, `iou`, `auprc` — `jaxattr.evaluation.plausibility`). All metrics explain the attribution
target (the predicted class unless `target="gold"`). With `out=DIR` the run is resumable: each method's
records go to `DIR/records_<method>.jsonl` through the one `ResultWriter` (a rerun skips finished examples;
a kill loses at most the chunk in flight), and `DIR/per_example.jsonl` is rewritten after each run with
every record in DIR (what `eval/reproduce_sig.py` reads). `write_tables` / `write_degradation` write the papers' tables
(`attribution_table.md`/`.csv`, `degradation.md`/`.csv`/`.png`); `jaxattr evaluate` is their CLI.

`run_degradation_test` is the IBA paper's protocol as `jaxattr degradation` runs it (its own deletion grids,
the reference code's comparators `ig_ref`/`lime_ref`, IBA over all layers): per method a resumable
`DIR/scores_<method>.jsonl`, then `DIR/degradation.md`/`.csv`/`.png` and the curves `DIR/per_example.csv`.

**Several processes.** Launched as N processes (`jax.distributed.initialize`, e.g. by
`jaxattr.sharding.initialize_distributed` before the model loads, as `jaxattr evaluate` /
`jaxattr degradation` do from `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`) with DIR on a
filesystem they share, `evaluate(..., out=DIR)` and `run_degradation_test` split the examples between the
processes through `jaxattr.attribution.multihost.run_sharded`, one job per method in the order given: each
process claims cost-balanced chunks and computes them (attributions, and for `evaluate` their metrics) into
its shard `DIR/records_<method>.jsonl.shards/proc-NNNN.jsonl` (`scores_<method>.jsonl.shards/` for the
degradation test), then process 0 merges each method's store (every id once, in input order). Process 0 alone
writes `settings.json`, `per_example.jsonl`/`.csv`, `noise_stats.npz` and the tables/plots, and shows the
progress bars. **Every process returns the same value** after a final barrier: `evaluate` the frame of the
merged records (its rows in input order per method), `run_degradation_test` the same result and file names (its
curves are recomputed by every process from the merged scores: forward passes only). A killed process stalls
the others at the next barrier; relaunching the job continues from the stores and shards, nothing lost or
repeated. Without `out` (no shared store) every process computes every example, as one process does.

pandas is imported on first use (the attribution and metric paths work without it).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.attribution import multihost
from jaxattr.attribution.results import check_same_input
from jaxattr.errors import LazyModule, UserError

pd = LazyModule("pandas", "evaluation tables (jaxattr.evaluation.evaluate / summarise)")

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
                                 "degradation_drop_11": "Deg. drop@11% ↑", "degradation_auc": "Deg. AUC(d) ↓",
                                 "token_f1": "Token F1 ↑", "iou": "IOU ↑", "auprc": "AUPRC ↑"}
PLAUSIBILITY_METRICS: tuple[str, ...] = ("token_f1", "iou", "auprc")  # plausibility.Plausibility's fields
DEGRADATION_METRICS: tuple[str, ...] = ("degradation_drop_11", "degradation_auc")
PER_EXAMPLE_DEGRADATION: tuple[str, ...] = ("degradation_drop_11", "degradation_p11")
OPTION_DEFAULTS: dict[str, Any] = {"steps": 50, "shap_samples": 20, "iba_layer": None, "iba_beta": None,
                                   "lime_samples": 100}
FLUSH = 32  # examples per stored chunk: a kill loses at most one chunk of one method


# ----------------------------------------------------------------------------------------------
# Names


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """Method names (comma-separated or a list) -> list; an unknown name is one clear error."""
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not names:
        raise UserError("no methods given; choose from " + ", ".join(METHODS))
    for m in names:
        if m not in METHODS:
            raise UserError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """(faithfulness metrics, whether to run the degradation test) from None/'all' or names."""
    from jaxattr.evaluation.faithfulness import METRICS

    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(METRICS), True
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    for m in names:
        if m not in METRICS and m != "degradation":
            raise UserError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}, degradation, all")
    return [m for m in names if m != "degradation"], "degradation" in names


def method_options(name: str, model_cfg: Any, *, steps: int = 50, shap_samples: int = 20,
                   iba_layer: int | None = None, iba_beta: float | None = None,
                   lime_samples: int = 100) -> tuple[str, dict[str, Any]]:
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
# Model and data


def as_model(model: Any) -> Any:
    """A `jaxattr.models.loading.Model`, or a model spec string loaded with `load_model`."""
    from jaxattr.models.loading import Model, load_model, sequence_model

    if isinstance(model, Model):
        return sequence_model(model, "the evaluation harness")
    if isinstance(model, (str, os.PathLike)):
        return sequence_model(load_model(str(model)), "the evaluation harness")
    raise UserError(f"model must be a jaxattr Model or a model spec string, not {type(model).__name__}")


def _check_against_model(ds: Any, model: Any, data: str, need_labels: bool, label_column: str | None) -> None:
    from jaxattr.data.datasets import label_names_of

    cfg = model.cfg
    if cfg.problem_type != "classification":
        raise UserError("attribution tables need a classification model (the metrics use class probabilities)")
    has_labels = "label" in ds.column_names
    if need_labels and not has_labels:
        raise UserError(f"dataset {data!r} has no labels (column {label_column!r}); --target gold needs them")
    names = label_names_of(ds) if has_labels else None
    if names is not None and len(names) != cfg.num_labels:
        raise UserError(f"the model has {cfg.num_labels} labels but dataset {data!r} has {len(names)} classes "
                        f"({', '.join(names)}); evaluate a model trained on this dataset")
    if has_labels and names is None:
        labels = [v for v in ds["label"] if v is not None and v >= 0]
        if labels and max(labels) >= cfg.num_labels:
            raise UserError(f"dataset {data!r} has label {max(labels)} but the model has {cfg.num_labels} labels")


def _load_spec(data: str, split: str, seed: int, text_column: str, label_column: str | None,
               need_labels: bool, rationale_column: str | None = None) -> Any:
    from jaxattr.data.datasets import CORPORA, datasets, load_dataset_spec

    spec_split = split if data in CORPORA or data.startswith("hf:") else None
    load = lambda labels: load_dataset_spec(data, spec_split, seed=seed, text_column=text_column,
                                            label_column=label_column if labels else None,
                                            rationale_column=rationale_column)
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
    return ds


def load_examples(model: Any, data: Any, *, split: str = "test", examples: int | None = None,
                  max_length: int = 128, seed: int = 0, need_labels: bool = False, text_column: str = "text",
                  label_column: str | None = "label", rationale_column: str | None = None) -> list[dict[str, Any]]:
    """Tokenised examples of `data`: a list of texts, a `datasets.Dataset`, or a spec string (corpus name,
    CSV/JSONL/Parquet file, `hf:NAME[:CONFIG]`; `split` picks a corpus split).

    `examples=None` takes every row in order; an int N the first N of a seeded shuffle (0 = all, shuffled:
    what `jaxattr evaluate --examples` does). The dataset is checked against the model (label count;
    labels present when `need_labels`). `rationale_column` names a column of human rationales (a table,
    a Hub or a `datasets.Dataset` column; forms: `plausibility.token_rationale`): each example gets its
    token mask as `rationale`."""
    from jaxattr.data.datasets import datasets, tokenize_dataset
    from jaxattr.evaluation.plausibility import token_rationale

    model = as_model(model)
    if isinstance(data, (str, os.PathLike)):
        name = str(data)
        ds = _load_spec(name, split, seed, text_column, label_column, need_labels, rationale_column)
    elif isinstance(data, Sequence) and all(isinstance(t, str) for t in data):
        name = "texts"
        ds = datasets.Dataset.from_dict({"text": list(data)})
    elif isinstance(data, datasets.Dataset):
        name = "dataset"
        ds = data
        renames = {c: k for c, k in ((text_column, "text"), (label_column, "label"), (rationale_column, "rationale"))
                   if c and c != k and c in ds.column_names}
        ds = ds.rename_columns(renames) if renames else ds
        if "text" not in ds.column_names:
            raise UserError(f"the dataset has no text column {text_column!r} (columns: {ds.column_names})")
    else:
        raise UserError(f"data must be a list of texts, a datasets.Dataset or a dataset spec, not "
                        f"{type(data).__name__}")
    if rationale_column and "rationale" not in ds.column_names:
        raise UserError(f"dataset {name!r} has no rationale column {rationale_column!r} (columns: {ds.column_names})")
    _check_against_model(ds, model, name, need_labels, label_column)
    if examples is not None:
        n = len(ds) if examples <= 0 else min(examples, len(ds))
        ds = ds.shuffle(seed=seed).select(range(n))
    if len(ds) == 0:
        raise UserError(f"dataset {name!r} is empty")
    exs = tokenize_dataset(ds, model.tokenizer, max_length=min(max_length, model.cfg.max_position_embeddings))
    if rationale_column:
        for ex, value in zip(exs, ds["rationale"]):
            try:
                ex["rationale"] = token_rationale(ex, value)
            except UserError as e:
                raise UserError(f"dataset {name!r}, example {ex['id']!r}: {e}") from None
    return exs


# ----------------------------------------------------------------------------------------------
# Metrics per (method, example)


def padded_scores(examples: Sequence[Mapping[str, Any]], scores: Sequence[Sequence[float]], pad_id: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One padded batch of `examples` (bucketed length) and their scores as a [B, T] array."""
    from jaxattr.data.tokenize import bucket_length, pad_batch

    length = bucket_length(max(len(ex["input_ids"]) for ex in examples))
    batch = pad_batch(examples, length, pad_id)
    s = np.zeros(batch["input_ids"].shape, np.float32)
    for i, sc in enumerate(scores):
        s[i, :len(sc)] = sc
    return batch, s


def example_metrics(model: Any, examples: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]], *,
                    metrics: Sequence[str], degradation: bool, batch_size: int = 32) -> list[dict[str, Any]]:
    """The metrics of each example's attribution (`results[i]` holds `scores` and `target` of `examples[i]`):
    one dict per example, in input order."""
    from jaxattr.evaluation import degradation as dg
    from jaxattr.evaluation.faithfulness import faithfulness

    out: list[dict[str, Any]] = [{} for _ in examples]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch, scores = padded_scores([examples[i] for i in idx], [results[i]["scores"] for i in idx], model.pad_id)
        vals: dict[str, np.ndarray] = {}
        if metrics:
            vals.update(faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id,
                                     metrics=list(metrics)))
        curves = None
        if degradation:
            tgt = np.asarray([results[i]["target"] for i in idx], np.int32)
            fr = tuple(dg.FRACTIONS) + (dg.TABLE_FRACTION,)
            _, p = dg.degradation_probs(model.params, model.cfg, batch, scores, tgt, fractions=fr)
            curves, p11 = p[:, :-1], p[:, -1]
            vals["degradation_drop_11"], vals["degradation_p11"] = curves[:, 0] - p11, p11
        for j, i in enumerate(idx):
            out[i] = {k: float(vals[k][j]) for k in [*metrics, *(PER_EXAMPLE_DEGRADATION if degradation else ())]}
            if curves is not None:
                out[i]["degradation_fractions"] = [float(f) for f in dg.FRACTIONS]
                out[i]["degradation_curve"] = [float(p) for p in curves[j]]
    return out


# ----------------------------------------------------------------------------------------------
# The store: one ResultWriter file per method


def records_path(out: str | Path, method: str) -> Path:
    return Path(out) / f"records_{method}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a kill) is skipped."""
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def stored_records(out: str | Path, methods: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every record stored in `out` (of `methods`, or all); the first record of a (method, id) wins."""
    out = Path(out)
    paths = [records_path(out, m) for m in methods] if methods is not None else sorted(out.glob("records_*.jsonl"))
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for p in paths:
        for r in _read_jsonl(p):
            seen.setdefault((r["method"], json.dumps(r["id"])), r)
    return list(seen.values())


def _import_legacy(out: Path) -> None:
    """Seed `records_<method>.jsonl` from a `per_example.jsonl` of the old harness (its only store; the last
    record of a pair won), once: a directory with any records file is not legacy."""
    legacy = out / "per_example.jsonl"
    if not legacy.exists() or any(out.glob("records_*.jsonl")):
        return
    from jaxattr.attribution.results import ResultWriter

    latest: dict[str, dict[str, dict[str, Any]]] = {}
    for r in _read_jsonl(legacy):
        latest.setdefault(r["method"], {})[json.dumps(r["id"])] = r
    for method, recs in latest.items():
        with ResultWriter(records_path(out, method)) as w:
            w.write(recs.values())


def _write_per_example(out: Path) -> Path:
    """`per_example.jsonl`: every stored record of `out`, one line each (rewritten atomically)."""
    path = out / "per_example.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in stored_records(out):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _check_settings(out: Path, settings: Mapping[str, Any], *, write: bool = True) -> None:
    """UserError when `out` holds results of other settings; then (`write`) record these in settings.json
    (atomically: another process may be reading it)."""
    meta = out / "settings.json"
    if meta.exists() and (any(out.glob("records_*.jsonl")) or (out / "per_example.jsonl").exists()):
        old = json.loads(meta.read_text())
        if old != dict(settings):
            raise UserError(f"{out} holds results made with other settings ({old}); use another out dir or delete it")
    if write:
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps(dict(settings), indent=2) + "\n")
        os.replace(tmp, meta)


# ----------------------------------------------------------------------------------------------
# The API


def evaluate(model: Any, data: Any, methods: Sequence[str] | str = ("random", "ig", "sig"),
             metrics: Sequence[str] | str | None = None, *, out: str | Path | None = None,
             target: str = "predicted", examples: int | None = None, split: str = "test", max_length: int = 128,
             text_column: str = "text", label_column: str | None = "label", rationale_column: str | None = None,
             tokens_per_batch: int = 1024, seed: int = 0, compute: bool = True, progress: bool = True,
             **method_options_: Any) -> Any:
    """Attribute `data` with every method and measure each attribution: a DataFrame, one row per
    (example, method), columns `id`, `method`, `target`, `prob`, `tokens`, `seconds`, `scores` and the metrics.

    `model`: a `Model` or a model spec (checkpoint dir, HF dir, Hub name, `minilm`, `default`). `data`: a
    list of texts, a `datasets.Dataset`, or a dataset spec (see `load_examples`; `examples`, `split`,
    `max_length`, `text_column`, `label_column` select from it), or already tokenised examples.
    `methods`: names of `METHODS`. `metrics`: None or "all" (every faithfulness metric and the degradation
    test), or a list of `faithfulness.METRICS` and/or "degradation". `method_options`: `steps` (IG/SIG,
    default 50), `shap_samples` (20), `iba_layer`, `iba_beta`, `lime_samples` (100). `out`: a directory that
    makes the run resumable (see the module doc); `compute=False` only reads what it holds. Launched as
    several processes, a run with `out` splits the examples between them (module doc): process 0 writes the
    files, and every process returns the same frame.

    `rationale_column`: a column of human rationales in `data` (a table, Hub or `datasets.Dataset` column),
    per row either a list of 0/1, one per whitespace-separated word of the text (`text.split()`), or a list
    of character spans `[[start, end], ...]` (end exclusive) into the text; a CSV cell holds the list as
    JSON text. A token is in the rationale when its tokenizer word overlaps a marked word or span. Each row
    then gets the plausibility columns `token_f1`, `iou` (the top-k tokens, k = the rationale's size, vs
    the rationale) and `auprc` (`plausibility.plausibility`; NaN for an empty rationale), computed from the
    scores on every call (not stored in `out`). Pre-tokenised examples must come from
    `load_examples(..., rationale_column=...)`. A missing column or a malformed rationale (wrong number of
    marks, a span outside the text) is a one-line UserError.
    """
    unknown = set(method_options_) - set(OPTION_DEFAULTS)
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}; evaluate takes "
                        f"{', '.join(OPTION_DEFAULTS)}")
    opts = {**OPTION_DEFAULTS, **method_options_}
    methods = parse_methods(methods)
    faith, degradation = parse_metrics(metrics)
    model = as_model(model)
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and "input_ids" in data[0]:
        exs = list(data)
        if rationale_column and not all("rationale" in ex for ex in exs):
            raise UserError("the examples carry no rationale; load them with load_examples(..., rationale_column=)")
    else:
        exs = load_examples(model, data, split=split, examples=examples, max_length=max_length, seed=seed,
                            need_labels=target == "gold", text_column=text_column, label_column=label_column,
                            rationale_column=rationale_column)
    wanted = [*faith, *(PER_EXAMPLE_DEGRADATION if degradation else ())]
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    rank, sharded = 0, False
    if out is not None:
        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        rank, n_proc = multihost.process()
        sharded = compute and n_proc > 1
        # every process checks alike; process 0 alone writes, and nobody reads the store before it has
        _check_settings(outp, {**opts, "target": target, "seed": seed}, write=rank == 0)
        if rank == 0:
            _import_legacy(outp)
        multihost.barrier("jaxattr-evaluate-setup")  # (no-op in one process)
        stored = {(r["method"], json.dumps(r["id"])): r for r in stored_records(outp, methods)}
    rows: list[dict[str, Any]] = []
    for name in methods:
        prior = [stored.get((name, json.dumps(ex["id"]))) for ex in exs]
        for ex, r in zip(exs, prior):
            if r is not None:
                check_same_input(records_path(outp, name), ex, r.get("input_sha"))
        todo = [ex for ex, r in zip(exs, prior) if r is None]
        if todo and sharded:  # every process sees the same store here, so all take this branch alike
            rows += _run_method_sharded(model, name, exs, opts, faith, degradation, target=target, out=outp,
                                        tokens_per_batch=tokens_per_batch, seed=seed, progress=progress)
            continue
        rows += [dict(r) for r in prior if r is not None]
        if todo and compute:
            rows += _run_method(model, name, todo, opts, faith, degradation, target=target, out=out,
                                tokens_per_batch=tokens_per_batch, seed=seed, progress=progress)
    if compute:  # stored records that lack a metric asked for now: computed from their scores (not stored)
        lacking = [r for r in rows if not all(c in r for c in wanted)]
        by_id = {json.dumps(ex["id"]): ex for ex in exs}
        if lacking:
            vals = example_metrics(model, [by_id[json.dumps(r["id"])] for r in lacking], lacking, metrics=faith,
                                   degradation=degradation)
            for r, v in zip(lacking, vals):
                r.update({k: x for k, x in v.items() if k not in r})
    if out is not None and compute and rank == 0:
        _write_per_example(Path(out))
    if sharded:
        multihost.barrier("jaxattr-evaluate-written")  # per_example.jsonl is there when any process returns
    if rationale_column:
        _add_plausibility(rows, exs)
    return records_frame(rows)


def _add_plausibility(rows: list[dict[str, Any]], examples: Sequence[Mapping[str, Any]]) -> None:
    """`token_f1`, `iou`, `auprc` of each row's scores against its example's `rationale` token mask."""
    from jaxattr.evaluation.plausibility import plausibility

    by_id = {json.dumps(ex["id"]): ex for ex in examples}
    for r in rows:
        ex = by_id[json.dumps(r["id"])]
        scores = np.zeros(len(ex["input_ids"]))
        scores[:len(r["scores"])] = r["scores"]
        r.update(plausibility(scores, ex["rationale"], np.asarray(ex["word_ids"]) >= 0)._asdict())


def _run_method(model: Any, name: str, todo: list[dict[str, Any]], opts: Mapping[str, Any], faith: list[str],
                degradation: bool, *, target: str, out: str | Path | None, tokens_per_batch: int, seed: int,
                progress: bool) -> list[dict[str, Any]]:
    """Attribute `todo` with one method, measure, and store the records chunk by chunk."""
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from jaxattr.attribution.results import ResultWriter

    driver = _method_driver(model, name, opts, tokens_per_batch=tokens_per_batch, seed=seed)
    writer = ResultWriter(records_path(out, name)) if out is not None else None
    if writer is not None:
        writer.bind({**driver.settings(), "target": target, "seed": seed}, model=model.source)
    rows: list[dict[str, Any]] = []
    with writer if writer is not None else nullcontext(), \
            tqdm(total=len(todo), unit="ex", desc=name, disable=not progress) as bar:
        for s in range(0, len(todo), FLUSH):
            part = todo[s:s + FLUSH]
            recs = _measured_records(model, driver, name, part, faith, degradation, target=target,
                                     partial=writer.partial if writer else None)
            if writer is not None:
                writer.write(recs)
            rows += recs
            bar.update(len(part))
    return rows


def _method_driver(model: Any, name: str, opts: Mapping[str, Any], *, tokens_per_batch: int, seed: int) -> Any:
    from jaxattr.attribution.driver import Driver

    reg, options = method_options(name, model.cfg, **{k: opts[k] for k in OPTION_DEFAULTS})
    return Driver(model.params, model.cfg, reg, options, mask_id=model.mask_id, pad_id=model.pad_id,
                  tokens_per_batch=tokens_per_batch, seed=seed)


def _measured_records(model: Any, driver: Any, name: str, part: Sequence[Mapping[str, Any]], faith: list[str],
                      degradation: bool, *, target: str, partial: Any) -> list[dict[str, Any]]:
    """One stored chunk: the attributions of `part` and their metrics, as records in `part`'s order."""
    t0 = time.perf_counter()
    res = {json.dumps(r["id"]): r for chunk in driver.run(part, target, partial=partial) for r in chunk}
    seconds = (time.perf_counter() - t0) / len(part)
    got = [res[json.dumps(ex["id"])] for ex in part]
    vals = example_metrics(model, part, got, metrics=faith, degradation=degradation)
    return [{"id": ex["id"], "input_sha": r["input_sha"], "target": int(r["target"]), "prob": float(r["prob"]),
             "seconds": seconds, "tokens": len(ex["input_ids"]), "scores": [float(x) for x in r["scores"]], **v,
             "method": name} for ex, r, v in zip(part, got, vals)]


def _run_method_sharded(model: Any, name: str, exs: list[dict[str, Any]], opts: Mapping[str, Any],
                        faith: list[str], degradation: bool, *, target: str, out: Path, tokens_per_batch: int,
                        seed: int, progress: bool) -> list[dict[str, Any]]:
    """This process's claimed chunks of one method (`multihost.run_sharded`: chunks of at most FLUSH examples
    stored at a time), then every merged record of `exs` in input order (the same on every process)."""
    from tqdm.auto import tqdm

    from jaxattr.attribution.results import read_results

    driver = _method_driver(model, name, opts, tokens_per_batch=tokens_per_batch, seed=seed)
    rank, n = multihost.process()
    path = records_path(out, name)
    with tqdm(unit="ex", desc=f"{name} ({n} processes)", disable=not progress or rank != 0) as bar:
        counter = multihost.JobProgress(bar, lambda ex: 1)

        def measure(chunk, writer):
            for s in range(0, len(chunk), FLUSH):
                part = chunk[s:s + FLUSH]
                yield _measured_records(model, driver, name, part, faith, degradation, target=target,
                                        partial=writer.partial)
                counter.update(len(part))

        multihost.run_sharded(path, exs, driver.work, measure, {**driver.settings(), "target": target, "seed": seed},
                              model=model.source, progress=counter)
    merged = {json.dumps(r["id"]): r for r in read_results(path)}
    rows = []
    for ex in exs:
        r = merged.get(json.dumps(ex["id"]))
        if r is not None:
            rows.append(dict(r))
    return rows


def records_frame(records: Sequence[Mapping[str, Any]]) -> Any:
    """Records -> DataFrame with `id` and `method` first."""
    df = pd.DataFrame(list(records))
    if df.empty:
        return pd.DataFrame(columns=["id", "method"])
    first = [c for c in ("id", "method") if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def metric_columns(df: Any) -> list[str]:
    """The metric columns present in an `evaluate` frame, in table order."""
    from jaxattr.evaluation.faithfulness import METRICS

    cols = [c for c in (*METRICS, *PLAUSIBILITY_METRICS) if c in df.columns]
    if "degradation_drop_11" in df.columns:
        cols += list(DEGRADATION_METRICS)
    return cols


def _degradation_result(df: Any) -> tuple[Any, int] | None:
    """`degradation.summarise` of an `evaluate` frame's curves over the examples every method has (o and m
    shared by all methods, IBA paper §4.1), and that number of examples; None without curves."""
    from jaxattr.evaluation import degradation as dg

    if "degradation_curve" not in df.columns:
        return None
    d = df[df["degradation_curve"].notna()]
    methods = list(dict.fromkeys(d["method"]))
    if not methods:
        return None
    ids = set.intersection(*({json.dumps(i) for i in d.loc[d["method"] == m, "id"]} for m in methods))
    curves, at_11 = {}, {}
    for m in methods:
        rs = sorted((r for r in d[d["method"] == m].to_dict("records") if json.dumps(r["id"]) in ids),
                    key=lambda r: str(r["id"]))
        curves[m] = np.asarray([r["degradation_curve"] for r in rs])
        at_11[m] = np.asarray([r["degradation_p11"] for r in rs])
    return dg.summarise(curves, at_11, dg.FRACTIONS), len(ids)


def degradation_auc(df: Any) -> dict[str, float]:
    """Area under each method's normalised degradation curve (`_degradation_result`); {} without curves."""
    from jaxattr.evaluation import degradation as dg

    got = _degradation_result(df)
    return {} if got is None else {m: r["auc_normalised"] for m, r in zip(got[0].mean_probs, dg.result_rows(got[0]))}


def summarise(df: Any, methods: Sequence[str] | None = None) -> Any:
    """The paper-style table of an `evaluate` frame: one row per method with `examples`,
    `seconds_per_example`, and per metric its mean over examples and standard error (`<metric>_se`);
    `degradation_auc` is the area under the method's normalised degradation curve (no error)."""
    methods = list(dict.fromkeys(df["method"])) if methods is None else list(methods)
    columns = metric_columns(df)
    auc = degradation_auc(df) if "degradation_auc" in columns else {}
    out = []
    for m in methods:
        rs = df[df["method"] == m]
        row: dict[str, Any] = {"method": m, "examples": len(rs),
                               "seconds_per_example": float(rs["seconds"].mean()) if len(rs) else math.nan}
        for c in columns:
            if c == "degradation_auc":
                row[c], row[c + "_se"] = auc.get(m, math.nan), math.nan
                continue
            v = np.asarray(rs[c].dropna(), np.float64) if c in rs else np.zeros(0)
            row[c] = float(v.mean()) if len(v) else math.nan
            row[c + "_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan
        out.append(row)
    fields = ["method", "examples", "seconds_per_example"] + [x for c in columns for x in (c, c + "_se")]
    return pd.DataFrame(out, columns=fields)


# ----------------------------------------------------------------------------------------------
# Tables and plots


def write_tables(summary: Any, out: str | Path, *, title: str, note: str = "") -> tuple[Path, Path]:
    """`attribution_table.md` (mean ± s.e.) and `attribution_table.csv` (full precision) of a `summarise` frame."""
    out = Path(out)
    csv_path, md_path = out / "attribution_table.csv", out / "attribution_table.md"
    summary.to_csv(csv_path, index=False)
    columns = [c for c in summary.columns if c not in ("method", "examples", "seconds_per_example")
               and not c.endswith("_se")]
    head = ["Method"] + [METRIC_LABELS.get(c, c) for c in columns] + ["s / example", "n"]
    lines = [f"## {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in summary.to_dict("records"):
        cells = [METHOD_LABELS.get(row["method"], row["method"])]
        for c in columns:
            v, se = row[c], row[c + "_se"]
            cells.append("–" if math.isnan(v) else (f"{v:.3f} ± {se:.3f}" if not math.isnan(se) else f"{v:.3f}"))
        cells += [f"{row['seconds_per_example']:.2f}", str(row["examples"])]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def write_degradation(df: Any, out: str | Path, *, title: str, labels: Mapping[str, str] | None = None
                      ) -> tuple[Path, Path] | None:
    """The degradation summary of an `evaluate` frame over the examples every method has:
    `degradation.md`/`.csv` and the curves `degradation.png` (IBA paper Fig. 1); returns (md, png)."""
    from jaxattr.evaluation import degradation as dg

    got = _degradation_result(df)
    if got is None:
        return None
    res, n = got
    labels = METHOD_LABELS if labels is None else labels
    title = f"{title}: degradation on the {n} examples every method has"
    md, _ = dg.write_table(res, str(out), labels=labels, title=title)
    png = Path(dg.plot_curves(res, str(Path(out) / "degradation.png"), labels=labels, title=title))
    return Path(md), png


def write_reports(df: Any, out: str | Path, methods: Sequence[str], *, title: str, note: str = "",
                  say: Callable[[str], None] = print) -> Any:
    """The CLI's files for an `evaluate` frame: the attribution table and (with curves) the degradation
    files in `out`; prints the Markdown table; returns the summary frame."""
    summary = summarise(df, methods)
    deg = write_degradation(df, out, title=title)
    md, csv_path = write_tables(summary, out, title=title, note=note)
    say(md.read_text())
    say(f"tables: {md}, {csv_path}" + (f"; degradation: {deg[0]}, {deg[1]}" if deg else ""))
    return summary


# ----------------------------------------------------------------------------------------------
# The IBA paper's protocol (`jaxattr degradation`)

DEGRADATION_LABELS = {"iba": "IBA", "ig": "IG", "lime": "LIME", "random": "Random", "sig": "SIG",
                      "gradxinput": "Grad×Input", "saliency": "Saliency", "gradientshap": "GradientShap",
                      "ig_ref": "IG (class 0, as the reference)", "lime_ref": "LIME (class 1, as the reference)"}
# The IBA reference code's comparators: its IG explains softmax[:, 0] and its LIME label 1 (the
# `explain_instance` default) whatever the target; the curves still read the target's probability.
COMPARATORS: dict[str, tuple[str, int]] = {"ig_ref": ("ig", 0), "lime_ref": ("lime", 1)}


def load_input_examples(model: Any, spec: str, *, split: str | None = None, limit: int = 100,
                        text_column: str = "text", label_column: str | None = "label", need_labels: bool = False,
                        max_length: int = 512) -> list[dict[str, Any]]:
    """The first `limit` rows (0 = all) of a dataset spec, tokenised (what `jaxattr degradation --input` reads)."""
    from jaxattr.data.datasets import CORPORA, load_input_dataset, tokenize_dataset

    split = split or ("test" if spec in CORPORA else None)
    ds = load_input_dataset(spec, split, limit=limit, text_column=text_column,
                            label_column=label_column if need_labels else None, label_names=model.cfg.label_names)
    return tokenize_dataset(ds, model.tokenizer, max_length=min(max_length, model.cfg.max_length))


def _noise_stats(model: Any, examples: list, path: Path) -> Path:
    from jaxattr.attribution.iba import estimate_noise_stats, save_noise_stats
    from jaxattr.data.tokenize import bucket_length, pad_batch

    if multihost.process()[0] == 0 and not path.exists():  # process 0 alone estimates; the others wait
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))

        def batches():
            for s in range(0, len(order), 32):
                part = [examples[i] for i in order[s:s + 32]]
                yield pad_batch(part, bucket_length(max(len(e["input_ids"]) for e in part)), model.pad_id)

        save_noise_stats(str(path), estimate_noise_stats(model.params, model.cfg, batches()))
    multihost.barrier("jaxattr-noise-stats")
    return path


def _protocol_options(method: str, model: Any, examples: list, out: Path, *, layer: Any, beta: float | None,
                      noise: str, ig_steps: int, lime_samples: int) -> dict[str, Any]:
    if method == "iba":
        if layer is not None and layer != "all":
            try:
                layer = int(layer)
            except ValueError:
                raise UserError(f"--layer must be a block index or 'all', not {layer!r}") from None
        opts = {"layer": layer, "beta": beta, "noise": noise}
        if noise == "dataset":
            opts["noise_stats"] = str(_noise_stats(model, examples, out / "noise_stats.npz"))
        return opts
    if method == "ig":
        return {"steps": ig_steps}
    if method == "lime":
        return {"samples": lime_samples}
    return {}


def run_degradation_test(model: Any, examples: list[dict[str, Any]], methods: Sequence[str], out: str | Path, *,
                         target: str = "predicted", layer: Any = None, beta: float | None = None,
                         noise: str = "sequence", grid: str = "reference", ig_steps: int = 10,
                         lime_samples: int = 100, tokens_per_batch: int = 8192, seed: int = 0,
                         overwrite: bool = False, progress: bool = True) -> tuple[Any, list[str]]:
    """The IBA paper's degradation test (§4.1, Table 1, Fig. 1): attributions of the probability of the
    target (resumable, `out/scores_<method>.jsonl`), then the vectorised test; returns (result, written files:
    `degradation.md`, `.csv`, `.png`, `per_example.csv`). Launched as several processes, the attributions are
    split between them (module doc); process 0 writes the files and every process returns the same."""
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
        write_table,
    )
    from jaxattr.evaluation.degradation import summarise as summarise_curves

    model, out = as_model(model), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, n_proc = multihost.process()
    fractions = grid_fractions(grid)
    for m in methods:
        registry.get(COMPARATORS.get(m, (m,))[0])  # unknown names fail before any work
    by_id = {ex["id"]: ex for ex in examples}
    scores: dict[str, dict[Any, dict[str, Any]]] = {}
    for m in methods:
        reg, explain = COMPARATORS.get(m, (m, target))
        if reg != m and model.cfg.num_labels <= explain:
            raise UserError(f"{m} explains class {explain} as the reference does; the model has {model.cfg.num_labels}")
        path = out / f"scores_{m}.jsonl"
        opts = _protocol_options(reg, model, examples, out, layer=layer, beta=beta, noise=noise, ig_steps=ig_steps,
                                 lime_samples=lime_samples)
        driver = Driver(model.params, model.cfg, reg, opts, mask_id=model.mask_id, pad_id=model.pad_id,
                        output="prob", tokens_per_batch=tokens_per_batch, seed=seed)
        settings = {**driver.settings(), "target": explain, "seed": seed}
        if n_proc > 1:
            multihost.run_driver_sharded(path, examples, driver, explain, settings, desc=m, model=model.source,
                                         overwrite=overwrite, progress=progress)
        else:
            with ResultWriter(path, overwrite=overwrite) as writer:
                writer.bind(settings, model=model.source)
                todo = writer.pending(examples)
                with tqdm(total=driver.total_work(todo), unit="row", desc=m, dynamic_ncols=True,
                          disable=not (todo and progress)) as bar:
                    for chunk in driver.run(todo, explain, progress=bar, partial=writer.partial):
                        writer.write(chunk)
        rows = [r for r in read_results(path) if r["id"] in by_id]
        layers = sorted({r.get("layer") for r in rows}, key=lambda x: (x is None, x))
        for lay in layers:  # IBA with layer "all": one curve per layer
            name = m if len(layers) == 1 else f"{m}@{lay}"
            scores[name] = {r["id"]: r for r in rows if r.get("layer") == lay}
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
            tgt = np.asarray([recs[ex["id"]]["gold" if target == "gold" else "prediction"] for ex in part], np.int32)
            curves[name].append(degradation_probs(model.params, model.cfg, batch, sc, tgt, fractions=fr)[1])
    allc = {k: np.concatenate(v) for k, v in curves.items()}
    res = summarise_curves({k: v[:, :-1] for k, v in allc.items()}, {k: v[:, -1] for k, v in allc.items()}, fractions)
    labels = {k: DEGRADATION_LABELS.get(k.split("@")[0], k) + (f" (layer {k.split('@')[1]})" if "@" in k else "")
              for k in allc}
    title = f"Degradation test: {model.source}, {len(examples)} examples, target {target}"
    if rank == 0:
        per_example = _write_curves(out / "per_example.csv", ids, allc, by_id, fractions)
        md, csv_path = write_table(res, str(out), labels=labels, title=title)
        png = plot_curves(res, str(out / "degradation.png"), labels=labels, title="Degradation test")
    else:  # the names process 0 writes (`degradation.write_table` / `plot_curves` name them so)
        per_example, png = str(out / "per_example.csv"), str(out / "degradation.png")
        md, csv_path = str(out / "degradation.md"), str(out / "degradation.csv")
    multihost.barrier("jaxattr-degradation-written")  # the files are there when any process returns
    return res, [md, csv_path, png, per_example]


def _write_curves(path: Path, ids: list, curves: Mapping[str, np.ndarray], by_id: Mapping[Any, Any],
                  fractions: Sequence[float]) -> str:
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
