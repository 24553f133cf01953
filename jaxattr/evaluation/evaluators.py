"""Evaluators as plug-ins (big_vision's way): each measures stored attribution records and yields its table rows.

An evaluator has a `name`, the per-example `columns` it adds to a record, `measure(model, examples, records)`
(one dict of those columns per example, in input order; `records[i]` holds `scores` and `target` of
`examples[i]`) and `summary(df)`, which yields `(method, metric, value)` rows over an `evaluate` frame (a
metric's standard error as `<metric>_se`). `evaluate`, `jaxattr evaluate`, the demo and the reproductions
differ only in which evaluators and methods they list; `get(name)` finds one by name.

* `faithfulness`: log-odds, comprehensiveness, sufficiency (SIG paper, §4) and AOPC (ferret),
  `jaxattr.evaluation.faithfulness`.
* `degradation`: the IBA paper's degradation test (§4.1): the target probability after deleting the top
  1/9 of the tokens, the curve over `degradation.FRACTIONS`, and per method the area under the normalised
  curve over the examples every method has (o and m shared by all methods, as the paper defines them).
* `plausibility`: token F1, IOU and AUPRC against human rationales (`jaxattr.evaluation.plausibility`);
  each example needs its `rationale` token mask.

A token model's examples are its predicted entities (`inputs.explained_examples`): faithfulness and degradation
read each one's span target (`span_targets`, the example's `token_target`) and replace the top tokens by [MASK].
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from jaxattr.errors import UserError

BATCH = 32  # examples per metric batch


def scored_batches(model: Any, examples: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
                   ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]]:
    """(example indices, padded batch, scores [B, T]): the one batching of stored scores. Examples sorted by
    length, `BATCH` at a time, each batch padded to the bucket of its longest: full batches share few shapes,
    so the metric programs compile a handful of times (per-bucket batches would compile one per bucket and size).
    """
    from jaxattr.data.tokenize import bucket_length, pad_batch

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for s in range(0, len(order), BATCH):
        idx = np.asarray(order[s:s + BATCH], np.int64)
        part = [examples[i] for i in idx]
        batch = pad_batch(part, bucket_length(max(len(e["input_ids"]) for e in part)), model.pad_id)
        scores = np.zeros(batch["input_ids"].shape, np.float32)
        for j, i in enumerate(idx):
            sc = records[i]["scores"]
            scores[j, :len(sc)] = sc
        yield idx, batch, scores


def span_targets(examples: Sequence[Mapping[str, Any]], idx: Sequence[int], width: int) -> np.ndarray:
    """[B, width] the span targets of examples `idx` (a token model's `token_target`, -1 outside the span and in
    the padding): the target every metric of a token model reads, batched as `scored_batches` batches."""
    out = np.full((len(idx), width), -1, np.int32)
    for j, i in enumerate(idx):
        if "token_target" not in examples[i]:
            raise UserError(f"example {examples[i].get('id')!r} has no token_target: a token model's metrics read "
                            "an entity span (evaluation.inputs.explained_examples finds the entities)")
        t = examples[i]["token_target"]
        out[j, :len(t)] = t
    return out


def _mean_rows(df: Any, columns: Sequence[str]) -> Iterator[tuple[str, str, float]]:
    """(method, column, mean) and (method, column_se, standard error) over each method's rows."""
    for m in dict.fromkeys(df["method"]):
        rs = df[df["method"] == m]
        for c in columns:
            v = np.asarray(rs[c].dropna(), np.float64) if c in rs else np.zeros(0)
            yield m, c, float(v.mean()) if len(v) else math.nan
            yield m, c + "_se", float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else math.nan


class Faithfulness:
    """LO / Comp / Suff / AOPC of each attribution (`faithfulness.METRICS`, or the ones named).

    `protocol="tint"` measures as the SIG paper's code does (`faithfulness.faithfulness`: every position
    ranked, special tokens included; LO writes the run's baseline token, [PAD] for a method whose baseline is
    "pad"); its columns are `tint_<metric>`, so both protocols sit side by side on the same attributions."""

    name: ClassVar[str] = "faithfulness"

    def __init__(self, metrics: Sequence[str] | None = None, protocol: str = "ours") -> None:
        from jaxattr.evaluation.faithfulness import METRICS, PROTOCOLS

        if protocol not in PROTOCOLS:
            raise UserError(f"protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        default = METRICS if protocol == "ours" else ("log_odds", "comprehensiveness", "sufficiency")
        self.metrics = tuple(default if metrics is None else metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        self.protocol = protocol
        self.prefix = "" if protocol == "ours" else f"{protocol}_"
        self.columns = tuple(self.prefix + m for m in self.metrics)

    def _replacement(self, model: Any, method: str | None) -> int:
        """The token LO writes: [MASK], or under tint's protocol the method's own baseline token."""
        from jaxattr.attribution import registry

        if self.protocol == "tint" and method is not None:
            if registry.get(method).options.get("baseline") == "pad":
                return model.pad_id
        return model.mask_id

    def measure(self, model: Any, examples: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
        from jaxattr.evaluation.faithfulness import faithfulness

        out: list[dict[str, Any]] = [{} for _ in examples]
        by_method: dict[Any, list[int]] = {}
        for i, r in enumerate(records):
            by_method.setdefault(r.get("method"), []).append(i)
        for method, rows in by_method.items():
            part_ex, part_rec = [examples[i] for i in rows], [records[i] for i in rows]
            for idx, batch, scores in scored_batches(model, part_ex, part_rec):
                span = span_targets(part_ex, idx, scores.shape[1]) if model.cfg.task == "token" else None
                vals = faithfulness(model.params, model.cfg, batch, scores, metrics=list(self.metrics),
                                    mask_id=self._replacement(model, method), protocol=self.protocol, target=span)
                for j, i in enumerate(idx):
                    out[rows[i]] = {self.prefix + k: float(vals[k][j]) for k in self.metrics}
        return out

    def summary(self, df: Any) -> Iterator[tuple[str, str, float]]:
        yield from _mean_rows(df, [c for c in self.columns if c in df.columns])


class Degradation:
    """The IBA paper's degradation test per example (drop at 1/9 of the tokens and the curve) and per method."""

    name: ClassVar[str] = "degradation"
    columns: ClassVar[tuple[str, ...]] = ("degradation_drop_11", "degradation_p11")

    def measure(self, model: Any, examples: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
        from jaxattr.evaluation import degradation as dg

        out: list[dict[str, Any]] = [{} for _ in examples]
        fractions = tuple(dg.FRACTIONS) + (dg.TABLE_FRACTION,)
        for idx, batch, scores in scored_batches(model, examples, records):
            tgt = span_targets(examples, idx, scores.shape[1]) if model.cfg.task == "token" else \
                np.asarray([records[i]["target"] for i in idx], np.int32)
            _, p = dg.degradation_probs(model.params, model.cfg, batch, scores, tgt, fractions=fractions,
                                        mask_id=model.mask_id)
            for j, i in enumerate(idx):
                curve, p11 = p[j, :-1], float(p[j, -1])
                out[i] = {"degradation_drop_11": float(curve[0]) - p11, "degradation_p11": p11,
                          "degradation_fractions": [float(f) for f in dg.FRACTIONS],
                          "degradation_curve": [float(v) for v in curve]}
        return out

    def result(self, df: Any) -> tuple[Any, int] | None:
        """`degradation.summarise` over the examples every method has, and their number; None without curves."""
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

    def summary(self, df: Any) -> Iterator[tuple[str, str, float]]:
        from jaxattr.evaluation import degradation as dg

        if "degradation_drop_11" not in df.columns:
            return
        yield from _mean_rows(df, ["degradation_drop_11"])
        got = self.result(df)
        auc = {} if got is None else {m: r["auc_normalised"]
                                      for m, r in zip(got[0].mean_probs, dg.result_rows(got[0]))}
        for m in dict.fromkeys(df["method"]):
            yield m, "degradation_auc", auc.get(m, math.nan)
            yield m, "degradation_auc_se", math.nan


class Plausibility:
    """Agreement of each attribution with the example's human rationale (`rationale`, a token mask)."""

    name: ClassVar[str] = "plausibility"
    columns: ClassVar[tuple[str, ...]] = ("token_f1", "iou", "auprc")  # plausibility.Plausibility's fields

    def measure(self, model: Any, examples: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
        from jaxattr.evaluation.plausibility import plausibility

        out = []
        for ex, r in zip(examples, records):
            if "rationale" not in ex:
                raise UserError(f"example {ex['id']!r} carries no rationale; load the examples with "
                                "load_examples(..., rationale_column=)")
            scores = np.zeros(len(ex["input_ids"]))
            scores[:len(r["scores"])] = r["scores"]
            out.append(plausibility(scores, ex["rationale"], np.asarray(ex["word_ids"]) >= 0)._asdict())
        return out

    def summary(self, df: Any) -> Iterator[tuple[str, str, float]]:
        yield from _mean_rows(df, [c for c in self.columns if c in df.columns])


EVALUATORS: dict[str, type] = {e.name: e for e in (Faithfulness, Degradation, Plausibility)}


def get(name: str, **options: Any) -> Any:
    """The evaluator registered under `name`, built with `options`; an unknown name is a UserError."""
    if name not in EVALUATORS:
        raise UserError(f"unknown evaluator {name!r}; known: {', '.join(EVALUATORS)}")
    return EVALUATORS[name](**options)


def parse_metrics(spec: str | Sequence[Any] | None, protocol: str = "ours") -> list[Any]:
    """The evaluators of a metrics spec: None/'all' (faithfulness and degradation), faithfulness metric
    names and/or 'degradation', or evaluator objects (kept as they are); `protocol="tint"` adds the faithfulness
    metrics as the SIG paper's code measures them (`tint_*` columns)."""
    from jaxattr.evaluation.faithfulness import METRICS

    tint = [Faithfulness(protocol="tint")] if protocol == "tint" else []
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return [Faithfulness(), *tint, Degradation()]
    if not isinstance(spec, str) and spec and all(hasattr(e, "measure") for e in spec):
        return list(spec)
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    for m in names:
        if m not in METRICS and m != "degradation":
            raise UserError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}, degradation, all")
    faith = [m for m in names if m != "degradation"]
    return [*([Faithfulness(faith)] if faith else []), *tint, *([Degradation()] if "degradation" in names else [])]
