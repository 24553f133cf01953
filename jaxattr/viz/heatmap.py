"""A tokens × layers heat map of IBA maps for one example (the IBA paper's Fig. 3), as HTML and PNG.

    out = iba(params, cfg, batch, layer="all", key=key)
    write_layer_heatmap("fig3.html", tokens, np.asarray(out.scores[:, i, :n]), layers=out.layer)
    plot_layer_heatmap("fig3.png", tokens, np.asarray(out.scores[:, i, :n]), layers=out.layer)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.errors import UserError


def _check(tokens: Sequence[str], scores: Any, layers: Any) -> tuple[np.ndarray, list[str]]:
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] != len(tokens):
        raise UserError(f"heat map needs scores [layers, {len(tokens)} tokens], got shape {s.shape}")
    labels = [str(int(x)) for x in np.atleast_1d(np.asarray(layers))] if layers is not None else \
        [str(i + 1) for i in range(s.shape[0])]
    if len(labels) != s.shape[0]:
        raise UserError(f"{len(labels)} layer labels for {s.shape[0]} rows of scores")
    return s, labels


def layer_heatmap_html(tokens: Sequence[str], scores: Any, *, layers: Any = None, title: str = "IBA per layer"
                       ) -> str:
    """An HTML table: one row per layer, one cell per token, red intensity = the layer's (0..1) score."""
    s, labels = _check(tokens, scores, layers)
    span = np.ptp(s, axis=1, keepdims=True)
    norm = np.where(span > 0, (s - s.min(axis=1, keepdims=True)) / np.where(span > 0, span, 1), 0.0)
    head = "".join(f'<th class="tok">{html.escape(t)}</th>' for t in tokens)
    rows = []
    for lab, row, raw in zip(labels, norm, s):
        cells = "".join(f'<td style="background: rgba(220, 40, 40, {v:.3f})" title="{r:.4g}"></td>'
                        for v, r in zip(row, raw))
        rows.append(f"<tr><th>layer {html.escape(lab)}</th>{cells}</tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif} table{border-collapse:collapse} td{width:2.2em;height:1.6em;"
            "border:1px solid #eee} th.tok{writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;"
            "padding:2px} th{font-size:12px;text-align:right;padding-right:6px}</style></head><body>"
            f"<h3>{html.escape(title)}</h3><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            "<p>Each row is min-max normalised; hover a cell for its score.</p></body></html>")


def write_layer_heatmap(path: str | Path, tokens: Sequence[str], scores: Any, *, layers: Any = None,
                        title: str = "IBA per layer") -> Path:
    path = Path(path)
    path.write_text(layer_heatmap_html(tokens, scores, layers=layers, title=title), encoding="utf-8")
    return path


def plot_layer_heatmap(path: str | Path, tokens: Sequence[str], scores: Any, *, layers: Any = None,
                       title: str = "IBA per layer") -> Path:
    """The same map as a PNG (matplotlib, Agg): tokens on x, layers on y (first layer at the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, labels = _check(tokens, scores, layers)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(tokens) + 1.5), 0.4 * len(labels) + 1.6))
    im = ax.imshow(s, cmap="Reds", aspect="auto", vmin=0, vmax=max(1.0, float(s.max())))
    ax.set_xticks(range(len(tokens)), list(tokens), rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), [f"layer {x}" for x in labels], fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
