"""Resumable result files: one record per example (JSONL, or Parquet when the name ends in .parquet).

Record: `AttributionRecord` (inseq's typed result: `to_dict`/`from_dict`, `read_records`), written as a dict
whose first key is "id" and last "layer" (for methods that explain several layers; the multi-process merge
decodes only those two). `ResultWriter.pending(examples)` gives the examples not yet
written, so a re-run skips the others; it keys them on the id *and* `input_sha` (`input_digest`: a hash
of the token ids), so a re-ordered, filtered or edited input never pairs an old record with a new text.
`ResultWriter.bind(settings)` writes `OUT.meta.json` (method, options, output, model, jaxattr version): a
results file says what made it, and resuming it with other settings is refused. The model is identified by
its config and its logits on a probe batch, compared to 1e-5: a model equal up to float rounding (the same
fine-tuning rerun on another CPU) resumes the file, any other is refused.

Given the input `order` (a Job's OUT), OUT itself is written once, when the writer closes: its earlier records
and the run's, in that order, through a temporary file renamed over it. While the run goes, each chunk is kept
durably beside it (without `order`, a JSONL file is an append log that the chunks go to directly):
* JSONL: chunks are appended to `OUT.inflight.jsonl`, flushed at once and fsync'ed every `FSYNC_EVERY` s, so
  a kill loses at most the chunk in flight. A torn last line (killed mid-write) is cut off when the file is
  reopened; `read_results(OUT)` reads OUT and this file alike. A file OUT that earlier versions appended to
  (a torn last line included) resumes the same way.
* Parquet: every chunk becomes a part file `OUT.parts/part-NNNNNN.parquet` (written to a temporary name,
  fsync'ed, then renamed: a part is whole or absent).
A killed run leaves its chunks; the next run reads their ids, skips them and writes them into OUT at the end.
* Partial sums (`PartialSums`, `OUT.partial.json`, `ResultWriter.partial`): an IG/SIG example whose rows
  span many chunks keeps its running sum and the number of rows done in this sidecar, rewritten
  atomically every few seconds and when a run is interrupted (`jaxattr.attribution.job.drive`). A re-run
  continues such an example from its stored sum; the entry goes once the example is in OUT, and the file
  once it is empty. A sidecar written with other settings (method, options, model) is ignored with a
  warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jaxattr.errors import UserError

log = logging.getLogger(__name__)

@dataclasses.dataclass
class AttributionRecord:
    """One example's attribution as `jaxattr attribute` writes it, or as `evaluate` stores it with its metrics.

    `scores` has one value per token of `tokens` (the word pieces, special tokens included), `word_scores` one per
    word of `words`; `target` is the class explained (a token model's entity record: its label's first class),
    `prob` its probability, `delta` the completeness gap (None where a method has none), `prediction` and `gold`
    the predicted and labelled classes. An evaluation record has `method`, `n_tokens`, `seconds` and its
    evaluators' columns (`metrics`) instead of the text fields. Any other key a file holds rides in `metrics`.
    """

    id: Any
    input_sha: str | None = None
    tokens: list[str] | None = None
    scores: list[float] = dataclasses.field(default_factory=list)
    words: list[str] | None = None
    word_scores: list[float] | None = None
    target: Any = None
    prob: float | None = None
    delta: float | None = None
    prediction: int | None = None
    text: str | None = None
    text_pair: str | None = None
    word_spans: list[Any] | None = None
    example_id: Any = None
    entity: dict[str, Any] | None = None
    gold: int | None = None
    method: str | None = None
    n_tokens: int | None = None
    seconds: float | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    layer: Any = None

    ALWAYS: ClassVar[tuple[str, ...]] = ("id", "scores", "target", "prob", "delta")  # written even when None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: "id" first, the metrics after the fields, "layer" (when set) last."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "metrics":
                out.update(v)
            elif f.name != "layer" and (v is not None or (f.name in self.ALWAYS and self.tokens is not None)):
                out[f.name] = v
        if self.layer is not None:
            out["layer"] = self.layer
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttributionRecord:
        """A record read back; files of earlier versions too (an evaluation record's int "tokens" is its
        `n_tokens`)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        d = dict(d)
        if isinstance(d.get("tokens"), int):
            d["n_tokens"] = d.pop("tokens")
        return cls(**{k: v for k, v in d.items() if k in names},
                   metrics={k: v for k, v in d.items() if k not in names})


def input_digest(example: Mapping[str, Any]) -> str:
    """A short hash of the token (and segment) ids an example runs on: what resume checks besides the id."""
    h = hashlib.sha1(np.asarray(example["input_ids"], np.int32).tobytes())
    if example.get("token_type_ids") is not None:
        h.update(np.asarray(example["token_type_ids"], np.int32).tobytes())
    return h.hexdigest()[:16]


FSYNC_EVERY = 2.0  # seconds between fsyncs of a result file (every write is flushed to the OS at once)
PROBE_TOLERANCE = 1e-5  # |Δ| ≤ tol·(1 + |logit|): float rounding passes (~1e-6), one more training step does not


def settings_diff(old: Any, new: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two settings dicts (none when `old` is not a dict: unreadable).
    `probe` (the model's logits on a probe batch, `Driver.settings`) is compared to `PROBE_TOLERANCE` and
    named as what it means."""
    if not isinstance(old, dict):
        return []
    keys = sorted(k for k in set(new) | set(old) if not _same(k, old.get(k), new.get(k)))
    return ["model (its logits on a probe batch)" if k == "probe" else k for k in keys]


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "probe" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return bool(np.allclose(a, b, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE))
    return a == b


def stored_settings(meta_path: Path) -> Any:
    """The settings an `OUT.meta.json` records (None when absent or unreadable)."""
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))["settings"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None


def check_same_input(path: Path, example: Mapping[str, Any], stored: str | None) -> None:
    """UserError when a stored record of `example`'s id ran on other token ids (`input_sha`)."""
    if stored not in (None, input_digest(example)):
        raise UserError(f"{path}: example {example['id']!r} was written for another text (the input was edited, "
                        "re-ordered or filtered since); use --overwrite or another --out")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxattr")
    except PackageNotFoundError:
        return "unknown"


def _key(record: Mapping[str, Any]) -> str:
    """Resume key: the id (and the layer, for per-layer records)."""
    return json.dumps([record["id"], record.get("layer")])


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        if isinstance(v, float) and v != v:  # NaN is not JSON
            v = None
        out[k] = v
    return out


class ResultWriter:
    """Resumable writer of OUT (module doc). Use as a context manager; `write(records)` once per chunk. `order`:
    the ids in the order OUT lists them (others after, as they came); `records` holds what OUT holds once closed."""

    def __init__(self, path: str | Path, overwrite: bool = False, *, order: Iterable[Any] | None = None) -> None:
        self.path = Path(path)
        self.order = None if order is None else {json.dumps(i): n for n, i in enumerate(order)}
        self._held: list[Any] | None = None  # OUT's lines (JSONL) or records (Parquet) once closed
        self.inflight = self.path.with_name(self.path.name + ".inflight.jsonl")
        self.parquet = self.path.suffix.lower() == ".parquet"
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"{self.path} is a directory; give a file name ending in .jsonl or .parquet")
        if not self.path.parent.exists():
            raise UserError(f"output directory {self.path.parent} does not exist")
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.partial = PartialSums(self.path.with_name(self.path.name + ".partial.json"))
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        if overwrite:
            self.path.unlink(missing_ok=True)
            self.inflight.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
            self.partial.path.unlink(missing_ok=True)
            self.meta_path.unlink(missing_ok=True)
        self.done: set[str] = set()
        self.ids_done: set[Any] = set()
        self.digests: dict[str, str | None] = {}  # id -> input_sha of its stored record
        self._fh = None
        self._n_parts = 0
        self._synced = float("-inf")  # the first write is fsynced
        if self.parquet:
            self._open_parquet()
        else:
            self._open_jsonl()

    # ------------------------------------------------------------------------------------------
    def _seen(self, record: Mapping[str, Any]) -> None:
        self.done.add(_key(record))
        self.ids_done.add(json.dumps(record["id"]))
        self.digests[json.dumps(record["id"])] = record.get("input_sha")

    def _open_jsonl(self) -> None:
        for path in (self.path, self.inflight):
            if path.exists():
                data = path.read_bytes()
                cut = data.rfind(b"\n") + 1
                if cut < len(data):  # a torn last line from a killed run
                    with open(path, "r+b") as fh:
                        fh.truncate(cut)
                    data = data[:cut]
                for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        self._seen(json.loads(line))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise UserError(f"{path}: line {n} is not a result record; remove the file or "
                                        f"choose another --out") from None

    def _read_parquet(self, path: Path) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - any unreadable file
            raise UserError(f"{path}: not a readable result file ({type(e).__name__}); remove it or choose "
                            f"another --out") from None

    def _open_parquet(self) -> None:
        if self.path.exists():
            for r in self._read_parquet(self.path):
                self._seen(r)
        if self.parts.exists():
            for p in sorted(self.parts.glob("part-*.parquet")):
                for r in self._read_parquet(p):
                    self._seen(r)
                self._n_parts = max(self._n_parts, int(p.stem.split("-")[1]) + 1)

    # ------------------------------------------------------------------------------------------
    def bind(self, settings: Mapping[str, Any], *, model: str | None = None) -> None:
        """Record what makes the records (method, options, output, model) in OUT.meta.json; a file that
        holds records made with other settings is refused (resuming would mix two runs in one file)."""
        settings = plain(settings)
        diff = settings_diff(stored_settings(self.meta_path), settings) if self.ids_done else []
        if diff:
            raise UserError(f"{self.path} holds records made with another {', '.join(diff)} "
                            f"({self.meta_path.name}); use --overwrite or another --out")
        meta = {"format": "jaxattr-results", "jaxattr": _version(), "model": model, "settings": settings,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _atomic_write(self.meta_path, json.dumps(meta, indent=1))

    def is_done(self, example_id: Any) -> bool:
        """Whether an example id has records in the file (all its layers are written together)."""
        return json.dumps(example_id) in self.ids_done

    def pending(self, examples: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The examples without records; an id whose record ran on other token ids is a UserError."""
        todo = []
        for ex in examples:
            key = json.dumps(ex["id"])
            if key not in self.ids_done:
                todo.append(ex)
            else:
                check_same_input(self.path, ex, self.digests.get(key))
        return todo

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append a chunk of records; returns how many were new. Each write reaches the OS at once (a killed
        process loses nothing written), and is fsynced at most every `FSYNC_EVERY` seconds and on close (a
        power loss loses at most that much: an fsync per chunk cost more than the chunk on small models)."""
        new = [_jsonable(r) for r in records if _key(r) not in self.done]
        if not new:
            return 0
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self.parts.mkdir(exist_ok=True)
            final = self.parts / f"part-{self._n_parts:06d}.parquet"
            tmp = final.with_suffix(".tmp")
            pq.write_table(pa.Table.from_pylist(new), tmp)
            if self._sync_due():
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
            self._n_parts += 1
        else:
            if self._fh is None:
                self._fh = open(self.path if self.order is None else self.inflight, "a", encoding="utf-8")
            self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            self._fh.flush()
            if self._sync_due():
                os.fsync(self._fh.fileno())
        for r in new:
            self._seen(r)
        return len(new)

    def _sync_due(self) -> bool:
        now = time.monotonic()
        if now - self._synced < FSYNC_EVERY:
            return False
        self._synced = now
        return True

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        """Write OUT once: its records and the run's chunks, in `order`, atomically; then drop the chunks
        (an OUT with nothing new is left as it is). JSONL lines move as they are (only ids and layers are
        decoded), so closing holds about OUT's size in memory. Without `order` a JSONL OUT is an append log (a
        multi-process job's per-process files, `evaluate`'s store): its chunks are already in it."""
        self._close_file()
        if self.order is None and not self.parquet and not self.inflight.exists():
            return
        if self.parquet:
            chunks = sorted(self.parts.glob("part-*.parquet")) if self.parts.exists() else []
            rows = [(r["id"], r.get("layer"), r) for r in (self._read_parquet(self.path) if self.path.exists() else [])]
            entries = [*rows, *((r["id"], r.get("layer"), r) for p in chunks for r in self._read_parquet(p))]
        else:
            rows = list(record_lines(self.path)) if self.path.exists() else []
            entries = [*rows, *(record_lines(self.inflight) if self.inflight.exists() else ())]
        merged: dict[str, tuple[Any, Any]] = {}
        for rid, layer, item in entries:
            merged.setdefault(json.dumps([rid, layer]), (rid, item))
        ranked = list(merged.values())
        if self.order is not None:
            ranked.sort(key=lambda v: self.order.get(json.dumps(v[0]), len(self.order)))  # stable
        self._held = [item for _, item in ranked]
        if len(ranked) != len(rows) or [item for _, _, item in rows] != self._held or not self.path.exists():
            _write_records(self.path, self._held)
        self.inflight.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    @property
    def records(self) -> list[dict[str, Any]] | None:
        """OUT's records once closed with an `order` (None before): what the writer holds, not read back."""
        if self._held is None:
            return None
        return [json.loads(x) if isinstance(x, str) else x for x in self._held]

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close_file()
        if exc[0] is None:
            self.close()


def plain(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples as lists, unknown types as strings), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _write_records(path: Path, rows: list[Any]) -> None:
    """OUT := `rows` (JSONL lines or record dicts; Parquet: dicts), through a fsync'ed temporary file renamed
    over it."""
    tmp = path.with_name("." + path.name + ".writing")
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    """Write `text` to a temporary file and rename it over `path`: a killed process leaves the old or
    the new file, never a torn one. No fsync (it runs after every chunk): after a power loss the file
    may be older or unreadable, which costs recomputation only (an older state is consistent, an
    unreadable one is ignored)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class PartialSums:
    """The sidecar `OUT.partial.json` of unfinished path-method examples: a `Driver` step's `state()` (per example
    key, a check of what the example and its target were, the rows done and their sum) with the settings it was
    made with. `load` reads it for a run of the same settings, `save` rewrites it atomically (or removes it when
    no entry is left)."""

    FORMAT = "jaxattr-partial-sums"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.settings: Any = None

    def load(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The stored entries if the sidecar was written with the same `settings` (JSON-able); else none, with a
        warning (the next `save` replaces the file)."""
        self.settings = plain(settings)
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            ok = data.get("format") == self.FORMAT and isinstance(data.get("examples"), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            log.warning("%s is not a partial-sums file; ignoring it (it will be replaced)", self.path)
        elif diff := settings_diff(data["settings"] if isinstance(data.get("settings"), dict) else {},
                                   self.settings):
            log.warning("%s was written with other settings (%s); ignoring its partial sums", self.path,
                        ", ".join(diff))
        else:
            return data["examples"]
        return {}

    def save(self, entries: Mapping[str, Any]) -> None:
        """Persist `entries` (a `Step.state()`) atomically; remove the file when there is none."""
        if entries:
            _atomic_write(self.path, json.dumps({"format": self.FORMAT, "settings": self.settings,
                                                 "examples": dict(entries)}))
        else:
            self.path.unlink(missing_ok=True)


def read_results(path: str | Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """All records of a JSONL or Parquet result file, the one reader of stored records: those of a JSONL OUT's
    unfinished run (`OUT.inflight.jsonl`) included, a torn last line (a killed writer) skipped. A missing file
    is a UserError, or no records with `missing_ok`."""
    path = Path(path)
    inflight = path.with_name(path.name + ".inflight.jsonl")
    if not path.exists() and not inflight.exists():
        if missing_ok:
            return []
        raise UserError(f"{path}: no such result file")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist() if path.exists() else []
    rows = _read_jsonl(path) if path.exists() else []
    if inflight.exists():
        have = {_key(r) for r in rows}
        rows += [r for r in _read_jsonl(inflight) if _key(r) not in have]
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # the last line, torn (no newline after it)
                break
            raise UserError(f"{path}: line {n + 1} is not a result record") from None
    return out


def read_records(path: str | Path, *, missing_ok: bool = False) -> list[AttributionRecord]:
    """The records of a result file, typed (`read_results` for the dicts)."""
    return [AttributionRecord.from_dict(r) for r in read_results(path, missing_ok=missing_ok)]


_ID_PREFIX, _LAYER_KEY = '{"id": ', ', "layer": '


def record_lines(path: Path) -> Iterator[tuple[Any, Any, str]]:
    """(id, layer, line) of every complete record line of a JSONL result file. Records start with their id
    and end with their layer when they have one, so those two values are decoded alone (a key with bare
    quotes cannot occur inside a JSON string); other lines are decoded whole, a torn last line is skipped."""
    dec = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                if not line.startswith(_ID_PREFIX):
                    raise ValueError
                rid = dec.raw_decode(line, len(_ID_PREFIX))[0]
                k = line.rfind(_LAYER_KEY)
                layer = dec.raw_decode(line, k + len(_LAYER_KEY))[0] if k >= 0 else None
            except ValueError:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                rid, layer = r["id"], r.get("layer")
            yield rid, layer, line
