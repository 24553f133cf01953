"""A self-contained HTML report: tokens coloured by attribution with a diverging palette.

Colours are normalised per example by the largest |score| of that example (red = supports the
target, blue = against it, white = 0), so every example uses the full range; the legend says so.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"}


def colour(value: float) -> str:
    """Diverging red/white/blue for a value in [-1, 1] (RdBu-like)."""
    v = max(-1.0, min(1.0, 0.0 if math.isnan(value) else value))
    if v >= 0:  # white -> red (178, 24, 43)
        r, g, b = 255 + (178 - 255) * v, 255 + (24 - 255) * v, 255 + (43 - 255) * v
    else:  # white -> blue (33, 102, 172)
        v = -v
        r, g, b = 255 + (33 - 255) * v, 255 + (102 - 255) * v, 255 + (172 - 255) * v
    return f"rgb({round(r)},{round(g)},{round(b)})"


def _label(idx: Any, names: Sequence[str] | None) -> str:
    if idx is None:
        return "?"
    if names is not None and isinstance(idx, int) and 0 <= idx < len(names):
        return f"{names[idx]} ({idx})"
    return str(idx)


def _example(rec: Mapping[str, Any], label_names: Sequence[str] | None, level: str) -> str:
    if level == "words" and rec.get("words"):
        units, scores = rec["words"], rec["word_scores"]
    else:
        units, scores = rec["tokens"], rec["scores"]
    finite = [abs(s) for s in scores if s is not None and not math.isnan(s)]
    scale = max(finite) if finite and max(finite) > 0 else 1.0
    spans = []
    for u, s in zip(units, scores):
        s = 0.0 if s is None else float(s)
        style = f"background:{colour(s / scale)}"
        cls = ' class="special"' if u in SPECIAL else ""
        spans.append(f'<span{cls} style="{style}" title="{s:.4g}">{html.escape(str(u))}</span>')
    pred = rec.get("prediction", rec.get("target"))
    meta = [f"<b>id</b> {html.escape(str(rec.get('id')))}"]
    if "layer" in rec:
        meta.append(f"<b>layer</b> {html.escape(str(rec['layer']))}")
    meta.append(f"<b>prediction</b> {html.escape(_label(pred, label_names))}")
    meta.append(f"<b>target</b> {html.escape(_label(rec.get('target'), label_names))}")
    if rec.get("prob") is not None:
        meta.append(f"<b>p(target)</b> {float(rec['prob']):.3f}")
    if rec.get("gold") is not None:
        meta.append(f"<b>gold</b> {html.escape(_label(rec['gold'], label_names))}")
    if rec.get("delta") is not None:
        meta.append(f"<b>delta</b> {float(rec['delta']):.2e}")
    meta.append(f"<b>max |score|</b> {scale:.3g}")
    return f'<div class="ex"><div class="meta">{" · ".join(meta)}</div><div class="toks">{" ".join(spans)}</div></div>'


def render_report(records: Iterable[Mapping[str, Any]], *, title: str = "jaxattr attributions",
                  method: str = "", label_names: Sequence[str] | None = None, level: str = "tokens") -> str:
    """The HTML text of a report (one block per record; `level` "tokens" or "words")."""
    legend = "".join(f'<span style="background:{colour(v)}">{v:+.1f}</span>' for v in (-1, -0.5, 0, 0.5, 1))
    body = "\n".join(_example(r, label_names, level) for r in records)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.ex {{ margin: 1em 0; padding: .5em; border-bottom: 1px solid #ddd; }}
.meta {{ color: #444; font-size: 90%; margin-bottom: .3em; }}
.toks span {{ padding: 1px 2px; border-radius: 3px; line-height: 1.9; }}
.toks span.special {{ color: #888; }}
.legend span {{ padding: 2px 8px; margin-right: 2px; font-size: 85%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(method)}</p>
<div class="legend">legend (score / max |score| of each example): {legend}
 &nbsp; red supports the target, blue speaks against it</div>
{body}
</body></html>
"""


def write_report(path: str | Path, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> Path:
    """Write `render_report(records, **kwargs)` to `path`."""
    path = Path(path)
    path.write_text(render_report(records, **kwargs), encoding="utf-8")
    return path
