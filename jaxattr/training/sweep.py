"""The p × q grid of AD-DROP (paper Fig. 4/6): one fine-tuning run per cell, then a results table
(CSV + Markdown) and a heat map of the dev metric. Cells with a `results.json` are not re-run, so an
interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxattr.errors import UserError
from jaxattr.training.config import TrainConfig


def cell_dir(out: Path, p: float, q: float) -> Path:
    return out / f"p{p:g}_q{q:g}"


def run_sweep(base: TrainConfig, ps: Sequence[float], qs: Sequence[float], out: str | Path) -> list[dict[str, Any]]:
    """Train AD-DROP for every (p, q); returns one row per cell (dev/test metrics) and writes the outputs."""
    from jaxattr.training.trainer import run

    out = Path(out)
    rows = []
    for p in ps:
        for q in qs:
            d = cell_dir(out, p, q)
            cfg = dataclasses.replace(base, method="addrop", output_dir=str(d),
                                      addrop=dataclasses.replace(base.addrop, p=float(p), q=float(q))).validate()
            done = d / "results.json"
            res = json.loads(done.read_text()) if done.exists() else run(cfg)
            rows.append({"p": p, "q": q, **{f"dev_{k}": v for k, v in res["dev"].items()},
                         **{f"test_{k}": v for k, v in res["test"].items()}})
            write_outputs(rows, out, base.dev_metric)
    return rows


def write_outputs(rows: list[dict[str, Any]], out: str | Path, metric: str) -> dict[str, Path]:
    """sweep.csv (all columns), sweep.md (dev metric, p down × q across) and sweep.png (heat map)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise UserError("the sweep has no finished cells yet")
    keys = list(rows[0])
    with (out / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    ps = sorted({r["p"] for r in rows})
    qs = sorted({r["q"] for r in rows})
    col = f"dev_{metric}"
    grid = {(r["p"], r["q"]): r[col] for r in rows}
    lines = [f"dev {metric} of AD-DROP by p (rows) and q (columns)", "",
             "| p \\ q | " + " | ".join(f"{q:g}" for q in qs) + " |", "|---" * (len(qs) + 1) + "|"]
    for p in ps:
        cells = [f"{grid[(p, q)]:.4f}" if (p, q) in grid else "" for q in qs]
        lines.append(f"| {p:g} | " + " | ".join(cells) + " |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    z = np.full((len(ps), len(qs)), np.nan)
    for (p, q), v in grid.items():
        z[ps.index(p), qs.index(q)] = v
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(qs), 1.0 + 0.6 * len(ps)))
    im = ax.imshow(z, origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(qs)), [f"{q:g}" for q in qs])
    ax.set_yticks(range(len(ps)), [f"{p:g}" for p in ps])
    ax.set_xlabel("q (drop rate in the region)")
    ax.set_ylabel("p (candidate region)")
    for i in range(len(ps)):
        for j in range(len(qs)):
            if not np.isnan(z[i, j]):
                ax.text(j, i, f"{z[i, j]:.3f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"dev {metric}")
    ax.set_title("AD-DROP p × q")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
    return {"csv": out / "sweep.csv", "md": out / "sweep.md", "png": out / "sweep.png"}
