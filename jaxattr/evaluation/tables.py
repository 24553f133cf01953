"""The papers' tables from an `evaluate` frame: `summarise` (one row per method from the evaluators' `(method,
metric, value)` rows), `write_tables` (`attribution_table.md`/`.csv`), `write_degradation` (`degradation.md`/
`.csv`/`.png`) and `write_reports` (both, as `jaxattr evaluate` writes them). Method names print through the
one label table, `jaxattr.attribution.registry.label`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxattr.errors import LazyModule
from jaxattr.evaluation.evaluators import Degradation, Faithfulness, Plausibility

pd = LazyModule("pandas", "evaluation tables (jaxattr.evaluation.evaluate / summarise)")

METRIC_LABELS: dict[str, str] = {"log_odds": "LO ↓", "comprehensiveness": "Comp ↑", "sufficiency": "Suff ↓",
                                 "aopc_comprehensiveness": "AOPC-Comp ↑", "aopc_sufficiency": "AOPC-Suff ↓",
                                 "degradation_drop_11": "Deg. drop@11% ↑", "degradation_auc": "Deg. AUC(d) ↓",
                                 "token_f1": "Token F1 ↑", "iou": "IOU ↑", "auprc": "AUPRC ↑",
                                 "tint_log_odds": "LO ↓ (tint)", "tint_comprehensiveness": "Comp ↑ (tint)",
                                 "tint_sufficiency": "Suff ↓ (tint)"}


def records_frame(records: Sequence[Mapping[str, Any]]) -> Any:
    """Records -> DataFrame with `id` and `method` first."""
    df = pd.DataFrame(list(records))
    if df.empty:
        return pd.DataFrame(columns=["id", "method"])
    first = [c for c in ("id", "method") if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)


def frame_evaluators(df: Any) -> list[Any]:
    """The evaluators whose per-example columns an `evaluate` frame holds, in table order."""
    from jaxattr.evaluation.faithfulness import METRICS

    found = []
    for protocol, prefix in (("ours", ""), ("tint", "tint_")):
        metrics = [c for c in METRICS if prefix + c in df.columns]
        found += [Faithfulness(metrics, protocol=protocol)] if metrics else []
    found += [Plausibility()] if any(c in df.columns for c in Plausibility.columns) else []
    found += [Degradation()] if "degradation_drop_11" in df.columns else []
    return found


def summarise(df: Any, methods: Sequence[str] | None = None) -> Any:
    """The paper-style table of an `evaluate` frame: one row per method with `examples`,
    `seconds_per_example`, and per metric its mean over examples and standard error (`<metric>_se`);
    `degradation_auc` is the area under the method's normalised degradation curve (no error)."""
    methods = list(dict.fromkeys(df["method"])) if methods is None else list(methods)
    values: dict[str, dict[str, float]] = {m: {} for m in methods}
    for ev in frame_evaluators(df):
        for m, metric, v in ev.summary(df):
            if m in values:
                values[m][metric] = v
    out = []
    for m in methods:
        rs = df[df["method"] == m]
        out.append({"method": m, "examples": len(rs),
                    "seconds_per_example": float(rs["seconds"].mean()) if len(rs) else math.nan, **values[m]})
    metrics = list(dict.fromkeys(k for v in values.values() for k in v))
    return pd.DataFrame(out, columns=["method", "examples", "seconds_per_example", *metrics])


def write_tables(summary: Any, out: str | Path, *, title: str, note: str = "") -> tuple[Path, Path]:
    """`attribution_table.md` (mean ± s.e.) and `attribution_table.csv` (full precision) of a `summarise` frame."""
    from jaxattr.attribution.registry import label

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
        cells = [label(row["method"])]
        for c in columns:
            v, se = row[c], row[c + "_se"]
            cells.append("–" if math.isnan(v) else (f"{v:.3f} ± {se:.3f}" if not math.isnan(se) else f"{v:.3f}"))
        cells += [f"{row['seconds_per_example']:.2f}", str(row["examples"])]
        lines.append("| " + " | ".join(cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def write_degradation(df: Any, out: str | Path, *, title: str) -> tuple[Path, Path] | None:
    """The degradation summary of an `evaluate` frame over the examples every method has:
    `degradation.md`/`.csv` and the curves `degradation.png` (IBA paper Fig. 1); returns (md, png)."""
    from jaxattr.attribution.registry import label
    from jaxattr.evaluation import degradation as dg

    got = Degradation().result(df)
    if got is None:
        return None
    res, n = got
    labels = {m: label(m) for m in res.mean_probs}
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
