"""The evaluation harness as a library: attribution methods x examples -> the evaluators' metrics.

    from jaxattr.evaluation import evaluate, summarise
    df = evaluate("default", ["what a great flight", "lost my bag again"], methods=["ig", "sig", "random"],
                  steps=8)
    summarise(df)                     # one row per method: mean and standard error of every metric

`evaluate(model, data, methods, metrics, out=None, **method_options)` returns a pandas DataFrame with one
row per (example, method): `id`, `method`, `target`, `prob`, `tokens`, `seconds`, `scores` and the columns of
its evaluators (`jaxattr.evaluation.evaluators`: faithfulness `log_odds`, `comprehensiveness`, `sufficiency`,
`aopc_*`; the degradation test's `degradation_drop_11`, `degradation_p11`, `degradation_curve`; with
`rationale_column=` plausibility `token_f1`, `iou`, `auprc`). Methods are any registered method or variant
(`jaxattr.attribution.registry`: `sig_pad`, `ig_ref`, ...). All metrics explain the attribution target (the
predicted class unless `target="gold"`). With `out=DIR` the run is resumable (`jaxattr.evaluation.store`): each
method's records go to `DIR/records_<method>.jsonl` through a `Job` (a rerun skips finished
examples; a kill loses at most the chunk in flight), and `DIR/per_example.jsonl` is rewritten after each run.
The tables are `jaxattr.evaluation.tables`; the IBA paper's own protocol (`jaxattr degradation`) is
`jaxattr.evaluation.iba_protocol`.

**Several processes.** Launched as N processes (`jax.distributed.initialize`, e.g. by
`jaxattr.sharding.initialize_distributed` before the model loads, as `jaxattr evaluate` does) with DIR on a
filesystem they share, `evaluate(..., out=DIR)` splits the examples between the processes through
`jaxattr.attribution.job.Job`, one job per method in the order given: each process claims
cost-balanced chunks and computes them (attributions and their metrics) into its shard
`DIR/records_<method>.jsonl.shards/proc-NNNN.jsonl`, then process 0 merges each method's store (every id once,
in input order). Process 0 alone writes `settings.json` and `per_example.jsonl` and shows the progress bars.
**Every process returns the same frame** after a final barrier. A killed process stalls the others at the next
barrier; relaunching the job continues from the stores and shards, nothing lost or repeated. Without `out`
every process computes every example, as one process does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxattr.attribution import multihost, registry
from jaxattr.attribution.job import Job, drive
from jaxattr.attribution.results import AttributionRecord, check_same_input, read_results
from jaxattr.errors import UserError
from jaxattr.evaluation import store
from jaxattr.evaluation.evaluators import Plausibility, parse_metrics
from jaxattr.evaluation.inputs import as_model, check_entity_settings, explained_examples, load_examples
from jaxattr.evaluation.tables import records_frame

OPTION_DEFAULTS: dict[str, Any] = {"steps": 50, "shap_samples": 20, "iba_layer": None, "iba_beta": None,
                                   "lime_samples": 100}
FLUSH = 32  # examples per stored chunk: a kill loses at most one chunk of one method


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """Method names (comma-separated or a list) -> list; an unknown name is one clear error."""
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not names:
        raise UserError("no methods given; choose from " + ", ".join(registry.names()))
    known = registry.names()
    for m in names:
        if m not in known:
            raise UserError(f"unknown method {m!r}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def method_options(name: str, model_cfg: Any, *, steps: int = 50, shap_samples: int = 20,
                   iba_layer: int | None = None, iba_beta: float | None = None,
                   lime_samples: int = 100) -> dict[str, Any]:
    """The options `evaluate`'s shared settings give method `name` (by the registered method it runs)."""
    family = registry.get(name).family
    if family in ("ig", "sig", "ig_embedding"):
        return {"steps": steps}
    if family == "gradientshap":
        return {"samples": shap_samples}
    if family == "iba":
        return {"layer": iba_layer if iba_layer is not None else max(1, round(0.75 * model_cfg.num_layers)),
                "beta": iba_beta}
    if family == "lime":
        return {"samples": lime_samples}
    return {}


def evaluate(model: Any, data: Any, methods: Sequence[str] | str = ("random", "ig", "sig"),
             metrics: Sequence[str] | str | None = None, *, out: str | Path | None = None,
             target: str = "predicted", examples: int | None = None, split: str = "test", max_length: int = 128,
             text_column: str = "text", label_column: str | None = "label", rationale_column: str | None = None,
             tokens_per_batch: int = 1024, seed: int = 0, compute: bool = True, progress: bool = True,
             protocol: str = "ours", entities: str = "all", **method_options_: Any) -> Any:
    """Attribute `data` with every method and measure each attribution: a DataFrame, one row per
    (example, method), columns `id`, `method`, `target`, `prob`, `tokens`, `seconds`, `scores` and the metrics.

    `model`: a `Model` or a model spec (checkpoint dir, HF dir, Hub name, `minilm`, `default`). `data`: a
    list of texts, a `datasets.Dataset`, or a dataset spec (see `load_examples`; `examples`, `split`,
    `max_length`, `text_column`, `label_column` select from it), or already tokenised examples.
    `methods`: registered methods or variants (`registry.names()`). `metrics`: None or "all" (every
    faithfulness metric and the degradation test), a list of `faithfulness.METRICS` and/or "degradation", or
    evaluator objects (`jaxattr.evaluation.evaluators`); `protocol="tint"` adds LO/Comp/Suff as the SIG paper's
    code measures them (`tint_*` columns, `evaluators.Faithfulness`). `method_options`: `steps` (IG/SIG,
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

    A token-classification model (`model.cfg.task == "token"`) is evaluated per predicted entity
    (`inputs.explained_examples`; `entities`: "all" or one entity label): one row per (text, entity), with id
    "<text id>/<k>", `example_id` and `entity`, every metric read on the entity's span target (the mean
    probability of its tags, its top tokens replaced by [MASK]: `faithfulness`, `degradation`). Only the predicted
    target applies, and methods that do not explain token models are refused (`registry.check_token_models`).
    """
    unknown = set(method_options_) - set(OPTION_DEFAULTS)
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}; evaluate takes "
                        f"{', '.join(OPTION_DEFAULTS)}")
    opts = {**OPTION_DEFAULTS, **method_options_}
    methods = parse_methods(methods)
    evaluators = parse_metrics(metrics, protocol)
    model = as_model(model)
    check_entity_settings(model, target, entities, methods)
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and "input_ids" in data[0]:
        exs = list(data)
        if rationale_column and not all("rationale" in ex for ex in exs):
            raise UserError("the examples carry no rationale; load them with load_examples(..., rationale_column=)")
    else:
        exs = load_examples(model, data, split=split, examples=examples, max_length=max_length, seed=seed,
                            need_labels=target == "gold", text_column=text_column, label_column=label_column,
                            rationale_column=rationale_column)
    exs = explained_examples(model, exs, target=target, entities=entities)
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    rank, sharded = 0, False
    if out is not None:
        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        rank, n_proc = multihost.process()
        sharded = compute and n_proc > 1
        # every process checks alike; process 0 alone writes, and nobody reads the store before it has
        store.check_settings(outp, _store_settings(model, opts, target, seed, entities), write=rank == 0)
        if rank == 0:
            store.import_legacy(outp)
        multihost.barrier("jaxattr-evaluate-setup")  # (no-op in one process)
        stored = {(r["method"], json.dumps(r["id"])): r for r in store.stored_records(outp, methods)}
    rows: list[dict[str, Any]] = []
    for name in methods:
        prior = [stored.get((name, json.dumps(ex["id"]))) for ex in exs]
        for ex, r in zip(exs, prior):
            if r is not None:
                check_same_input(store.records_path(outp, name), ex, r.get("input_sha"))
        todo = [ex for ex, r in zip(exs, prior) if r is None]
        if todo and sharded:  # every process sees the same store here, so all take this branch alike
            rows += _run_method(model, name, exs, todo, opts, evaluators, target=target, out=outp,
                                tokens_per_batch=tokens_per_batch, seed=seed, progress=progress)
            continue
        rows += [dict(r) for r in prior if r is not None]
        if todo and compute:
            rows += _run_method(model, name, exs, todo, opts, evaluators, target=target, out=out,
                                tokens_per_batch=tokens_per_batch, seed=seed, progress=progress)
    by_id = {json.dumps(ex["id"]): ex for ex in exs}
    if compute:  # stored records that lack a metric asked for now: computed from their scores (not stored)
        for ev in evaluators:
            lacking = [r for r in rows if not all(c in r for c in ev.columns)]
            if lacking:
                vals = ev.measure(model, [by_id[json.dumps(r["id"])] for r in lacking], lacking)
                for r, v in zip(lacking, vals):
                    r.update({k: x for k, x in v.items() if k not in r})
    if out is not None and compute and rank == 0:
        store.write_per_example(Path(out))
    if sharded:
        multihost.barrier("jaxattr-evaluate-written")  # per_example.jsonl is there when any process returns
    if rationale_column:  # computed from the scores on every call (not stored)
        for r, v in zip(rows, Plausibility().measure(model, [by_id[json.dumps(r["id"])] for r in rows], rows)):
            r.update(v)
    return records_frame(rows)


def _store_settings(model: Any, opts: Mapping[str, Any], target: str, seed: int, entities: str) -> dict[str, Any]:
    """What a store's records depend on beyond each method's settings; a token model's also the entity label
    selected, since an entity's id "<text>/<k>" counts the selected entities alone."""
    token = {"entities": entities} if model.cfg.task == "token" else {}
    return {**opts, "target": target, "seed": seed, **token}


def _run_method(model: Any, name: str, exs: list[dict[str, Any]], todo: list[dict[str, Any]],
                opts: Mapping[str, Any], evaluators: Sequence[Any], *, target: str, out: str | Path | None,
                tokens_per_batch: int, seed: int, progress: bool) -> list[dict[str, Any]]:
    """Attribute the pending examples `todo` of `exs` with one method, measure, and store the records in chunks of
    FLUSH examples (`Job.run`). Returns the new records; as one of N processes (with `out`), every merged record
    of `exs` in input order, the same on every process."""
    from tqdm.auto import tqdm

    driver = _method_driver(model, name, opts, tokens_per_batch=tokens_per_batch, seed=seed)
    rank, n = multihost.process()
    sharded = out is not None and n > 1
    rows: list[dict[str, Any]] = []
    with tqdm(total=None if sharded else len(todo), unit="ex", desc=f"{name} ({n} processes)" if sharded else name,
              disable=not progress or rank != 0) as bar:
        counter = multihost.JobProgress(bar, lambda ex: 1) if sharded else bar

        def measure(pending: Sequence[dict[str, Any]], writer: Any) -> None:
            for s in range(0, len(pending), FLUSH):
                part = pending[s:s + FLUSH]
                recs = _measured_records(model, driver, name, part, evaluators, target=target,
                                         partial=None if writer is None else writer.partial)
                if writer is not None:
                    writer.write(recs)
                rows.extend(recs)
                counter.update(len(part))

        if out is None:
            measure(todo, None)
        else:
            path = store.records_path(out, name)
            Job(path, _settings(driver, target, seed), model=model.source).run(
                exs, measure, cost=driver.work, progress=counter if sharded else None)
    if not sharded:
        return rows
    merged = {json.dumps(r["id"]): r for r in read_results(path)}
    return [dict(merged[key]) for ex in exs if (key := json.dumps(ex["id"])) in merged]


def _method_driver(model: Any, name: str, opts: Mapping[str, Any], *, tokens_per_batch: int, seed: int) -> Any:
    from jaxattr.attribution.driver import Driver

    options = method_options(name, model.cfg, **{k: opts[k] for k in OPTION_DEFAULTS})
    return Driver(model.params, model.cfg, name, options, mask_id=model.mask_id, pad_id=model.pad_id,
                  tokens_per_batch=tokens_per_batch, seed=seed)


def _settings(driver: Any, target: str, seed: int) -> dict[str, Any]:
    """What a method's stored records depend on: the driver's settings, the class explained and the seed."""
    explained = target if driver.spec.explain is None else driver.spec.explain
    return {**driver.settings(), "target": explained, "seed": seed}


def _measured_records(model: Any, driver: Any, name: str, part: Sequence[Mapping[str, Any]],
                      evaluators: Sequence[Any], *, target: str, partial: Any) -> list[dict[str, Any]]:
    """One stored chunk: the attributions of `part` and their metrics, as records in `part`'s order."""
    t0 = time.perf_counter()
    found: list[dict[str, Any]] = []
    drive(driver, part, target, found.extend, partial=partial)
    res = {json.dumps(r["id"]): r for r in found}
    seconds = (time.perf_counter() - t0) / len(part)
    got = [{**res[json.dumps(ex["id"])], "method": name} for ex in part]
    vals: list[dict[str, Any]] = [{} for _ in part]
    for ev in evaluators:
        for v, new in zip(vals, ev.measure(model, part, got)):
            v.update(new)
    return [AttributionRecord(id=ex["id"], input_sha=r["input_sha"], scores=[float(x) for x in r["scores"]],
                              target=int(r["target"]), prob=float(r["prob"]), method=name,
                              n_tokens=len(ex["input_ids"]), seconds=seconds, metrics=v,
                              example_id=ex.get("example_id"), entity=ex.get("entity")).to_dict()
            for ex, r, v in zip(part, got, vals)]
