"""The evaluation store of `jaxattr evaluate`: one resumable `ResultWriter` file per method
(`DIR/records_<method>.jsonl`), `settings.json` (the run's shared options, checked on resume) and
`per_example.jsonl` (every stored record, rewritten after each run; what `eval/reproduce_sig.py` reads)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jaxattr.attribution.results import ResultWriter, read_records, read_results
from jaxattr.errors import UserError


def records_path(out: str | Path, method: str) -> Path:
    """Where `evaluate(out=...)` stores one method's records."""
    return Path(out) / f"records_{method}.jsonl"


def stored_records(out: str | Path, methods: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every record stored in `out` (of `methods`, or all); the first record of a (method, id) wins."""
    out = Path(out)
    paths = [records_path(out, m) for m in methods] if methods is not None else sorted(out.glob("records_*.jsonl"))
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for p in paths:
        for r in read_records(p, missing_ok=True):  # typed: earlier versions' records read alike
            seen.setdefault((r.method, json.dumps(r.id)), r.to_dict())
    return list(seen.values())


def import_legacy(out: Path) -> None:
    """Seed `records_<method>.jsonl` from a `per_example.jsonl` of the old harness (its only store; the last
    record of a pair won), once: a directory with any records file is not legacy."""
    legacy = out / "per_example.jsonl"
    if not legacy.exists() or any(out.glob("records_*.jsonl")):
        return
    latest: dict[str, dict[str, dict[str, Any]]] = {}
    for r in read_results(legacy):
        latest.setdefault(r["method"], {})[json.dumps(r["id"])] = r
    for method, recs in latest.items():
        with ResultWriter(records_path(out, method)) as w:
            w.write(recs.values())


def write_per_example(out: Path) -> Path:
    """`per_example.jsonl`: every stored record of `out`, one line each (rewritten atomically)."""
    path = out / "per_example.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in stored_records(out):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def check_settings(out: Path, settings: Mapping[str, Any], *, write: bool = True) -> None:
    """UserError when `out` holds results of other settings; then (`write`) record these in settings.json
    (atomically: another process may be reading it)."""
    meta = out / "settings.json"
    if meta.exists() and (any(out.glob("records_*.jsonl")) or (out / "per_example.jsonl").exists()):
        old = json.loads(meta.read_text())
        if old != dict(settings):
            raise UserError(f"{out} holds results made with other settings ({old}); use another out dir or delete it")
    if write:
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps(dict(settings), indent=2) + "\n")
        os.replace(tmp, meta)

