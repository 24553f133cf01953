"""Attribution jobs over several processes (hosts): one output file, every id once, in input order.

Launched as N processes of the same command (`jax.distributed.initialize` from `JAX_COORDINATOR_ADDRESS` /
`JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, `jaxattr.sharding.initialize_distributed`), the processes
exchange work **through files, not collectives**: examples are independent, so no array ever crosses hosts,
and the only shared state is a directory next to OUT (`OUT.shards/`) on a filesystem every host sees.

1. Every process reads which ids OUT and the shard files already hold (a barrier after the reading,
   so that nobody writes before everybody has read); the pending examples are sorted by length (a chunk
   then fills its batches and compiles few shapes) and cut into `CHUNKS_PER_PROCESS x N` chunks of about
   equal cost (`Driver.work` rows times tokens, so a 512-token SIG example weighs hundreds of SIG tweets).
2. Each process claims chunks (an `O_EXCL` file in `OUT.shards/claims/`) in its `claim_order`: its own
   contiguous share of the length-sorted chunks first, so it compiles the shapes of one length range only,
   then whatever the others have not claimed yet. It runs each on its local devices and appends the records
   to its own shard file (`ResultWriter`: durable per chunk, resumable) until no chunk is left. A slow host
   thus delays the others by at most its last chunk.
3. After a barrier, process 0 merges OUT and every shard into OUT (atomically; ids once, input order),
   then removes the shards. Progress is shown by process 0 for the whole job (`JobProgress`: each
   process counts its finished rows into a small file that process 0 sums).

Without a coordinator, `--shard K/N` runs N independent jobs (a SLURM array): each writes its cost-balanced,
contiguous part of the input to `OUT.shards/shard-K-of-N.jsonl` (resumable as one process is, `Job`) and a
marker when it is done; `jaxattr merge OUT` (`merge_shards`) joins them in input order once all N are done.

A killed process stalls the others at the next barrier (the JAX coordinator's timeout ends the job);
relaunching the job continues from OUT plus the shards: records already written are neither lost nor
redone, and the claims of the killed launch are discarded (process 0 clears them before the first read).
An id already stored for another text (`input_sha`) is refused by every process alike, as `ResultWriter.pending`
refuses it in one process.

These are the primitives of `jaxattr.attribution.job.Job`, which chooses between one process, N processes and
`--shard K/N`. `run_sharded` is generic: the work of a chunk is a callable that stores records into the
process's shard writer, so the evaluation harness (`jaxattr evaluate`: attributions *and* their metrics per
chunk, into `DIR/records_<method>.jsonl`) runs one job per method, every process in the same order (the
barriers are counted, so each call's are its own).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.attribution.results import (
    ResultWriter,
    check_same_input,
    plain,
    read_results,
    record_lines,
    settings_diff,
    stored_settings,
)
from jaxattr.errors import UserError

CHUNKS_PER_PROCESS = 8
BARRIER_TIMEOUT_MS = 24 * 3600 * 1000  # a barrier waits for the slowest host's last chunk


def process() -> tuple[int, int]:
    """(this process's index, number of processes)."""
    import jax

    return jax.process_index(), jax.process_count()


_BARRIERS = [0]  # barriers passed by this process: every process passes the same sequence


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (the coordinator's key-value barrier; no device collective)."""
    from jax._src import distributed

    if process()[1] > 1:
        _BARRIERS[0] += 1
        distributed.global_state.client.wait_at_barrier(f"{name}-{_BARRIERS[0]}", BARRIER_TIMEOUT_MS)


def shard_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


def _shard_files(out: Path) -> list[Path]:
    """Every shard file of OUT: one per process of a multi-process job, one per `--shard K/N` job."""
    found = [*shard_dir(out).glob("proc-*.jsonl"), *shard_dir(out).glob("shard-*-of-*.jsonl")]
    return sorted(p for p in found if not p.name.endswith(".inflight.jsonl"))  # read with their file


def shard_files_left(out: str | Path) -> bool:
    """Whether shard files of OUT are on disk (a multi-process or `--shard` run not merged yet)."""
    return bool(_shard_files(Path(out)))


def done_ids(out: str | Path) -> set[str]:
    """JSON-encoded ids with records in OUT or any shard file (read-only)."""
    return set(_done_digests(Path(out)))


def _done_digests(out: Path) -> dict[str, str | None]:
    """JSON-encoded id -> `input_sha` of its first record in OUT or a shard file (read-only)."""
    digests: dict[str, str | None] = {}
    for path in ([out] if out.exists() else []) + _shard_files(out):
        for r in read_results(path):
            digests.setdefault(json.dumps(r["id"]), r.get("input_sha"))
    return digests


def check_settings(out: str | Path, settings: Mapping[str, Any]) -> None:
    """The UserError `ResultWriter.bind` would raise, raised by every process alike before any barrier (a
    process that failed alone would leave the others waiting): OUT or a shard made with other settings."""
    out, want = Path(out), plain(settings)
    for path in ([out] if out.exists() else []) + _shard_files(out):
        diff = settings_diff(stored_settings(path.with_name(path.name + ".meta.json")), want)
        if diff:
            raise UserError(f"{path} holds records made with another {', '.join(diff)}; use --overwrite or "
                            "another --out")


def split_by_cost(examples: Sequence[Mapping[str, Any]], cost: Callable[[Mapping[str, Any]], int],
                  n: int) -> list[list[Mapping[str, Any]]]:
    """Cut `examples` (kept in order) into exactly `n` contiguous parts of about equal total cost (some may
    be empty)."""
    if not examples:
        return [[] for _ in range(n)]
    w = np.cumsum([max(1, int(cost(ex))) for ex in examples], dtype=np.float64)
    cut = np.searchsorted(w, w[-1] * np.arange(1, n) / n, side="left") + 1
    bounds = [0, *(int(c) for c in np.minimum(cut, len(examples))), len(examples)]
    return [list(examples[a:b]) for a, b in zip(bounds, bounds[1:])]


def cost_chunks(examples: Sequence[Mapping[str, Any]], cost: Callable[[Mapping[str, Any]], int],
                n: int) -> list[list[Mapping[str, Any]]]:
    """Cut `examples` (kept in order) into at most `n` contiguous, non-empty chunks of about equal total cost."""
    return [part for part in split_by_cost(examples, cost, n) if part]


def claim_order(count: int, rank: int, n: int) -> list[int]:
    """The order in which process `rank` of `n` tries to claim `count` length-sorted chunks: its own contiguous
    share first (so each process compiles the shapes of one length range, not of every range), then the others'
    from the far end backwards (a fast process takes over a slow one's longest chunks, which that process
    would reach last)."""
    start, stop = rank * count // n, (rank + 1) * count // n
    return [*range(start, stop), *(k for k in reversed(range(count)) if not start <= k < stop)]


def _claim(claims: Path, k: int) -> bool:
    try:
        os.close(os.open(claims / f"chunk-{k:06d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class JobProgress:
    """Whole-job progress of a multi-process job, shown by process 0: each process counts what it finishes
    (`update(n)`, in `units(example)`: rows or examples) into a small file under `OUT.shards/progress/`, and
    process 0's bar shows the sum over every process against the whole job's total (rows restored from partial
    sums count as done, as the driver counts them)."""

    def __init__(self, bar: Any, units: Callable[[Mapping[str, Any]], int], every_s: float = 1.0) -> None:
        self.bar, self.units, self.every_s = bar, units, every_s
        self.folder: Path | None = None
        self.rank = self.base = self.done = 0
        self._last = float("-inf")

    def start(self, folder: Path, rank: int, pending: Sequence[Mapping[str, Any]]) -> None:
        """The job's pending examples are known (every process has the same list)."""
        self.folder, self.rank = folder, rank
        folder.mkdir(parents=True, exist_ok=True)
        self.base = sum(int(self.units(ex)) for ex in pending)
        self._sync(force=True)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self._sync()

    def finish(self) -> None:
        """Every process is done (after the last barrier): the bar shows the whole job finished."""
        if self.bar.total is not None:
            self.bar.n = self.bar.total
            self.bar.refresh()

    def _sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.folder is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        mine = self.folder / f"proc-{self.rank:04d}"
        tmp = mine.with_name("." + mine.name + ".tmp")
        tmp.write_text(str(self.done))
        os.replace(tmp, mine)
        if self.rank == 0 and not self.bar.disable:
            done = sum(int(f.read_text()) for f in self.folder.glob("proc-*"))
            self.bar.total, self.bar.n = self.base, done
            self.bar.refresh()


def run_sharded(out: str | Path, examples: Sequence[Mapping[str, Any]], cost: Callable[[Mapping[str, Any]], int],
                work: Callable[[Sequence[Mapping[str, Any]], ResultWriter], Any],
                settings: Mapping[str, Any], *, model: str | None = None, overwrite: bool = False,
                progress: JobProgress | None = None) -> int:
    """Run `work(chunk, writer)` (which stores records into `writer`: attributions, or anything keyed by example
    id) over this process's claimed chunks of the pending examples, then merge into OUT (process 0). Every
    process must make the same calls in the same order. `progress` (which `work` updates) is started on the
    pending examples. Returns how many records this process wrote."""
    out = Path(out)
    rank, n = process()
    shards, claims = shard_dir(out), shard_dir(out) / "claims"
    if not overwrite:
        check_settings(out, settings)
    barrier("jaxattr-start")
    if rank == 0:
        if overwrite:
            out.unlink(missing_ok=True)
            shutil.rmtree(shards, ignore_errors=True)
        shutil.rmtree(claims, ignore_errors=True)
        shutil.rmtree(shards / "progress", ignore_errors=True)
        claims.mkdir(parents=True)
    barrier("jaxattr-cleared")
    seen = _done_digests(out)
    barrier("jaxattr-read")  # nobody writes before everybody has read
    pending = []
    for ex in examples:  # every process reads the same files: a mismatch is raised by all alike
        key = json.dumps(ex["id"])
        if key in seen:
            check_same_input(out, ex, seen[key])
        else:
            pending.append(ex)
    # by length: a chunk then spans one or two length buckets, so its batches fill and few shapes compile
    pending.sort(key=lambda ex: len(ex.get("input_ids", ())))
    if progress is not None:
        progress.start(shards / "progress", rank, pending)
    with ResultWriter(shards / f"proc-{rank:04d}.jsonl") as writer:
        writer.bind(settings, model=model)
        before = len(writer.done)
        # compute per row grows with the sequence: weigh rows by tokens, or the long half of a sorted job
        # would be one process's "equal" share at twice the time
        chunks = cost_chunks(pending, lambda ex: cost(ex) * max(1, len(ex.get("input_ids", ()))),
                             CHUNKS_PER_PROCESS * n)
        for k in claim_order(len(chunks), rank, n):
            if _claim(claims, k):
                work(chunks[k], writer)
        written = len(writer.done) - before
    barrier("jaxattr-done")
    if rank == 0:
        merge(out, examples, settings, model=model)
    barrier("jaxattr-merged")
    if progress is not None:
        progress.finish()
    return written


def merge(out: Path, examples: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], *,
          model: str | None = None) -> None:
    """OUT := OUT's records and every shard's, each key once, in input order (ids not among `examples`
    after), written atomically in OUT's format; then the shards go."""
    order = {json.dumps(ex["id"]): i for i, ex in enumerate(examples)}
    sources = ([out] if out.exists() else []) + _shard_files(out)
    tmp = out.with_name("." + out.name + ".merging" + out.suffix)  # hidden: no `records_*.jsonl` glob sees it
    tmp.unlink(missing_ok=True)
    if all(p.suffix == ".jsonl" for p in [out, *sources]):  # lines move as they are: no decoding, no encoding
        lines: dict[str, tuple[Any, str]] = {}
        for path in sources:
            for rid, layer, line in record_lines(path):
                lines.setdefault(json.dumps([rid, layer]), (rid, line))
        ranked_lines = sorted(lines.values(), key=lambda v: order.get(json.dumps(v[0]), len(order)))
        with ResultWriter(tmp) as writer:
            writer.bind(settings, model=model)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(line for _, line in ranked_lines)
            fh.flush()
            os.fsync(fh.fileno())
        _replace_merged(tmp, out)
        return
    records: dict[str, dict[str, Any]] = {}
    for path in sources:
        for r in read_results(path):
            records.setdefault(json.dumps([r["id"], r.get("layer")]), r)
    ranked = sorted(records.values(), key=lambda r: (order.get(json.dumps(r["id"]), len(order)),))
    with ResultWriter(tmp) as writer:
        writer.bind(settings, model=model)
        writer.write(ranked)
    _replace_merged(tmp, out)


def _replace_merged(tmp: Path, out: Path) -> None:
    os.replace(tmp, out)
    os.replace(tmp.with_name(tmp.name + ".meta.json"), out.with_name(out.name + ".meta.json"))
    shutil.rmtree(shard_dir(out), ignore_errors=True)


SHARD_FORMAT = "jaxattr-shard"


def parse_shard(spec: str) -> tuple[int, int]:
    """`--shard K/N` as (K, N), 0 <= K < N."""
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec!r}: expected K/N, e.g. 0/4 (shard K of N, K from 0 to N-1)") from None
    if not 0 <= k < n:
        raise UserError(f"--shard {spec!r}: K must be in 0..N-1")
    return k, n


def _shard_path(out: Path, k: int, n: int) -> Path:
    return shard_dir(out) / f"shard-{k:05d}-of-{n:05d}.jsonl"


def _shard_marker(out: Path, k: int, n: int) -> Path:
    return _shard_path(out, k, n).with_suffix(".done.json")


def _shard_counts(out: Path) -> set[int]:
    """The N of every `--shard K/N` file or marker under OUT.shards/."""
    return {int(p.name.split("-of-")[1].split(".")[0]) for p in shard_dir(out).glob("shard-*-of-*")}


def shard_files(out: Path, k: int, n: int) -> tuple[Path, Path]:
    """(records, done-marker) of shard K of N of OUT; a UserError when OUT.shards/ holds shards of another N."""
    others = _shard_counts(out) - {n}
    if others:
        raise UserError(f"{shard_dir(out)} holds shards of a job cut in {sorted(others)[0]}, not {n}; merge or "
                        "remove them first")
    return _shard_path(out, k, n), _shard_marker(out, k, n)


def merge_shards(out: str | Path) -> int:
    """OUT := OUT's records and those of every `--shard K/N` job, each id once, in input order, once all N
    shards are finished (else a UserError naming the missing ones); then the shards go. Returns the number
    of records in OUT."""
    out = Path(out)
    counts = _shard_counts(out)
    if not counts:
        raise UserError(f"no shards to merge: {shard_dir(out)} holds no shard-K-of-N files (run jaxattr attribute "
                        "... --shard K/N first)")
    if len(counts) > 1:
        raise UserError(f"{shard_dir(out)} holds shards of jobs cut in {sorted(counts)} parts; keep one")
    n = counts.pop()
    missing = [k for k in range(n) if not _shard_marker(out, k, n).exists()]
    if missing:
        names = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise UserError(f"shard(s) {names} of {n} are not finished; run them (--shard K/{n}) before merging")
    markers = []
    for k in range(n):
        try:
            m = json.loads(_shard_marker(out, k, n).read_text(encoding="utf-8"))
            if m.get("format") != SHARD_FORMAT:
                raise ValueError
        except (OSError, UnicodeDecodeError, ValueError):
            raise UserError(f"{_shard_marker(out, k, n)} is not a shard marker; rerun shard {k}/{n}") from None
        markers.append(m)
    settings, model = markers[0]["settings"], markers[0]["model"]
    for m in markers[1:]:
        if diff := settings_diff(m["settings"], settings):
            raise UserError(f"shards {markers[0]['shard']} and {m['shard']} of {n} were made with another "
                            f"{', '.join(diff)}; rerun one of them")
    check_settings(out, settings)
    merge(out, [{"id": i} for m in markers for i in m["ids"]], settings, model=model)
    return len(read_results(out))


