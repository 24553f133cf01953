"""Matplotlib figures (Agg, imported on first use): the degradation curves (the IBA paper's Fig. 1) and
`fit_title`, which wraps an axes title onto as many lines as it needs to lie inside the figure."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIN_WRAP = 12  # never wrap to fewer characters a line than this (textwrap still splits a longer word)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _wrap(title: str, width: int) -> str:
    return "\n".join(textwrap.fill(part, width, break_on_hyphens=False) if part else part
                     for part in title.split("\n"))


def fit_title(ax: Any, title: str, **kwargs: Any) -> Any:
    """Set `ax`'s title, wrapped (at spaces; a word longer than a line is split) until it is no wider than the
    axes, so a title centred over the axes lies inside the figure; then `tight_layout` makes room for its lines
    above the axes. Returns the title's `Text`. Call it after everything else is drawn on the figure."""
    fig = ax.figure
    text = ax.set_title(title, **kwargs)
    fig.tight_layout()  # the axes' final width, with the tick labels and axis labels in place
    renderer = fig.canvas.get_renderer()
    width = max(map(len, title.split("\n")), default=0)
    for _ in range(64):  # each round shortens the lines; a handful of rounds is the norm
        fig.tight_layout()
        room = ax.get_window_extent(renderer).width
        wide = text.get_window_extent(renderer).width
        if wide <= 0.97 * room or width <= MIN_WRAP:  # a margin: text metrics move with the dpi of savefig
            break
        width = max(MIN_WRAP, min(width - 1, int(width * room / wide)))
        text.set_text(_wrap(title, width))
    return text


def degradation_figure(fractions: Any, curves: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                       title: str = "Degradation test") -> Any:
    """The IBA paper's Fig. 1 as a matplotlib Figure: the normalised probability d = (p − m)/(o − m) against
    the % of tokens deleted (`fractions` in [0, 1]), one line per method (`curves`: method -> d per fraction;
    `random` dashed); the title wrapped to fit (`fit_title`)."""
    import numpy as np

    labels = labels or {}
    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    for m, d in curves.items():
        ax.plot(100 * np.asarray(fractions), d, marker="o", ms=3, label=labels.get(m, m),
                ls="--" if m == "random" else "-")
    ax.set_xlabel("% of tokens deleted (top ranked first)")
    ax.set_ylabel("normalised probability d = (p − m)/(o − m)")
    ax.grid(alpha=0.3)
    ax.legend()
    fit_title(ax, title)
    return fig


def plot_degradation(path: str | Path, fractions: Any, curves: Mapping[str, Any], *,
                     labels: Mapping[str, str] | None = None, title: str = "Degradation test") -> str:
    """`degradation_figure` saved as a PNG at `path` (dpi 120); returns `path` as a string."""
    fig = degradation_figure(fractions, curves, labels=labels, title=title)
    try:
        fig.savefig(path, dpi=120)
    finally:
        _pyplot().close(fig)
    return str(path)
