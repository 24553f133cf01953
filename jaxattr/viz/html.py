"""A self-contained HTML report: words (or tokens) coloured by attribution with a diverging palette.

Colours are normalised per example by the largest |score| of that example (red = supports the
target, blue = against it, white = 0), so every example uses the full range; the legend says so. The
word view shows the original text, its spelling and spacing, from the records' `word_spans`; the
token view shows the word pieces. `show(records)` displays the same in a Jupyter notebook.
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


def text_pieces(rec: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    """The record's text as (piece, word index or None for the text between words), segment by segment
    (a " | " piece between a pair's segments); words joined by spaces when the record has no spans."""
    spans, texts = rec.get("word_spans"), (rec.get("text"), rec.get("text_pair"))
    if not spans or texts[0] is None:
        pieces: list[tuple[str, int | None]] = []
        for k, w in enumerate(rec.get("words", [])):
            pieces += [(" ", None)] * bool(k) + [(w, k)]
        return pieces
    pieces, pos, seg = [], 0, 0
    for k, (s, a, b) in enumerate(spans):
        if s != seg:
            pieces += [(texts[seg][pos:], None), (" | ", None)]
            seg, pos = s, 0
        pieces += [(texts[seg][pos:a], None), (texts[seg][a:b], k)]
        pos = b
    pieces.append((texts[seg][pos:], None))
    return [p for p in pieces if p[0]]


def _coloured(text: str, score: float | None, scale: float, special: bool = False, entity: bool = False) -> str:
    s = 0.0 if score is None else float(score)
    names = [n for n, on in (("special", special), ("in-entity", entity)) if on]
    cls = f' class="{" ".join(names)}"' if names else ""
    return f'<span{cls} style="background:{colour(s / scale)}" title="{s:.4g}">{html.escape(text)}</span>'


def _example(rec: Mapping[str, Any], label_names: Sequence[str] | None, level: str) -> str:
    words = level == "words" and bool(rec.get("words"))
    scores = rec["word_scores"] if words else rec["scores"]
    finite = [abs(s) for s in scores if s is not None and not math.isnan(s)]
    scale = max(finite) if finite and max(finite) > 0 else 1.0
    ent = rec.get("entity")
    if words:
        marked = _entity_words(rec, ent)
        spans = [html.escape(t) if k is None else _coloured(t, scores[k], scale, entity=k in marked)
                 for t, k in text_pieces(rec)]
        text = "".join(spans)
    else:
        inside = range(ent["start"], ent["end"]) if ent else range(0)
        text = " ".join(_coloured(str(u), s, scale, u in SPECIAL, i in inside)
                        for i, (u, s) in enumerate(zip(rec["tokens"], scores)))
    pred = rec.get("prediction", rec.get("target"))
    meta = [f"<b>id</b> {html.escape(str(rec.get('id')))}"]
    if "layer" in rec:
        meta.append(f"<b>layer</b> {html.escape(str(rec['layer']))}")
    if ent:  # a token model's explained entity (attribute --task token), also outlined in the text
        meta.append(f'<b>entity</b> <span class="entity">{html.escape(ent["text"])}</span> '
                    f'{html.escape(str(ent["label"]))} (tokens {ent["start"]}..{ent["end"] - 1})')
    meta.append(f"<b>prediction</b> {html.escape(_label(pred, label_names))}")
    meta.append(f"<b>target</b> {html.escape(_label(rec.get('target'), label_names))}")
    if rec.get("prob") is not None:
        meta.append(f"<b>p(target)</b> {float(rec['prob']):.3f}")
    if rec.get("gold") is not None:
        meta.append(f"<b>gold</b> {html.escape(_label(rec['gold'], label_names))}")
    if rec.get("delta") is not None:
        meta.append(f"<b>delta</b> {float(rec['delta']):.2e}")
    meta.append(f"<b>max |score|</b> {scale:.3g}")
    return f'<div class="ex"><div class="meta">{" · ".join(meta)}</div><div class="toks">{text}</div></div>'


_STYLE = """.ex { margin: 1em 0; padding: .5em; border-bottom: 1px solid #ddd; }
.meta { color: #444; font-size: 90%; margin-bottom: .3em; }
.toks { white-space: pre-wrap; max-height: 30em; overflow-y: auto; }
.toks span.in-entity { outline: 2px solid #000; }
.toks span { padding: 1px 2px; border-radius: 3px; line-height: 1.9; }
.toks span.special { color: #888; }
.meta span.entity { border-bottom: 2px solid #000; font-weight: bold; }
.legend span { padding: 2px 8px; margin-right: 2px; font-size: 85%; }"""


def _entity_words(rec: Mapping[str, Any], ent: Mapping[str, Any] | None) -> set[int]:
    """The words (indices into `word_spans`) inside an entity's characters, to outline in the word view."""
    if not ent or ent.get("char_start") is None:
        return set()
    return {k for k, (seg, a, b) in enumerate(rec.get("word_spans") or [])
            if seg == ent.get("segment", 0) and a >= ent["char_start"] and b <= ent["char_end"]}


def _fragment(records: Iterable[Mapping[str, Any]], label_names: Sequence[str] | None, level: str) -> str:
    if level not in ("words", "tokens"):
        raise ValueError(f"level must be 'words' or 'tokens', not {level!r}")
    legend = "".join(f'<span style="background:{colour(v)}">{v:+.1f}</span>' for v in (-1, -0.5, 0, 0.5, 1))
    body = "\n".join(_example(r, label_names, level) for r in records)
    return (f'<div class="legend">legend (score / max |score| of each example): {legend}\n &nbsp; red supports '
            f'the target, blue speaks against it</div>\n{body}')


def render_report(records: Iterable[Mapping[str, Any]], *, title: str = "jaxattr attributions",
                  method: str = "", label_names: Sequence[str] | None = None, level: str = "words") -> str:
    """The HTML text of a report (one block per record; `level` "words", the original text, or "tokens")."""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
{_STYLE}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(method)}</p>
{_fragment(records, label_names, level)}
</body></html>
"""


class AttributionView:
    """Records shown as coloured text in a Jupyter notebook (`_repr_html_`); `show` makes one."""

    def __init__(self, records: Iterable[Mapping[str, Any]], *, label_names: Sequence[str] | None = None,
                 level: str = "words") -> None:
        self.records, self.label_names, self.level = list(records), label_names, level

    def _repr_html_(self) -> str:
        return f"<style>{_STYLE}</style>" + _fragment(self.records, self.label_names, self.level)

    def __repr__(self) -> str:
        return f"AttributionView({len(self.records)} records, level={self.level!r})"


def show(records: Iterable[Mapping[str, Any]] | Mapping[str, Any], **kwargs: Any) -> AttributionView:
    """`show(read_results("out.jsonl"))` in a notebook: the records (or one record) as coloured text."""
    return AttributionView([records] if isinstance(records, Mapping) else records, **kwargs)


def write_report(path: str | Path, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> Path:
    """Write `render_report(records, **kwargs)` to `path`."""
    path = Path(path)
    path.write_text(render_report(records, **kwargs), encoding="utf-8")
    return path
