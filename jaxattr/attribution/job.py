"""One dataset run into one result file: the store, resume, processes and progress around a pure `Driver`.

A `Driver` is an iterator of `Step`s (the records it finished, the work they cost, a snapshot of its unfinished
examples' sums) and knows no file. A `Job(out, settings)` owns what surrounds it:

* the store: OUT (`ResultWriter`: JSONL or Parquet, durable per chunk; the one record key (id, layer) and the
  settings check of `OUT.meta.json`) and the partial-sums sidecar (`PartialSums`);
* resume: the examples OUT holds are skipped (an id stored for another text is refused); a re-ordered input
  resumes when its ids and texts are the same;
* where it runs: one process; N `jax.distributed` processes that claim cost-balanced chunks and merge into OUT
  (`multihost.run_sharded`); or `shard=(K, N)`, one of N independent jobs (`multihost.merge_shards` joins them);
* progress: one bar for the whole job, in gradient rows.

`drive` is the loop where a Driver's steps meet a store: each step's records go to the caller's `sink` first, then
(every `save_every` seconds, and when the run is interrupted) the snapshot goes to the sidecar, so a kill loses
at most that interval plus the chunks in flight, even inside one long SIG example.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxattr.attribution import multihost
from jaxattr.attribution.driver import Driver
from jaxattr.attribution.results import PartialSums, ResultWriter, check_same_input, plain, read_results
from jaxattr.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_SAVE_EVERY = 5.0  # seconds between partial-sum saves


def drive(driver: Driver, examples: Sequence[Mapping[str, Any]], target: Any,
          sink: Callable[[list[dict[str, Any]]], Any], *, partial: PartialSums | None = None, progress: Any = None,
          save_every: float = DEFAULT_SAVE_EVERY) -> None:
    """Run `driver` over `examples`, handing each step's records to `sink` (which stores them), then counting its
    work into `progress` (a tqdm-like `update(n)`) and, every `save_every` seconds (0: every step) and when
    interrupted, saving the unfinished examples' sums to `partial`, from which the next run resumes."""
    resumable = partial is not None and driver.resumable
    resume = partial.load(driver.settings()) if resumable else None
    last, saved = None, time.monotonic()
    try:
        for last in driver.run(examples, target, resume=resume):
            sink(last.records)
            if progress is not None and last.work:
                progress.update(last.work)
            if resumable and time.monotonic() - saved >= save_every:
                partial.save(last.state())
                saved = time.monotonic()
    except BaseException:  # interrupted (an error, Ctrl-C): keep what was done
        if resumable and last is not None:
            try:
                partial.save(last.state())
            except Exception:  # noqa: BLE001 - the device state may be gone with the error
                log.warning("could not save the partial sums of the examples in flight")
        raise
    if resumable:
        partial.save({})


@dataclasses.dataclass
class Job:
    """A resumable run of one method over a dataset into `out` (see the module doc). `settings`: what the records
    depend on (`Driver.settings()`, and what the caller adds), checked against a resumed OUT; `model`: the model
    spec recorded beside them."""

    out: Path
    settings: Mapping[str, Any]
    model: str | None = None
    overwrite: bool = False
    save_every: float = DEFAULT_SAVE_EVERY

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.records: list[dict[str, Any]] | None = None

    def attribute(self, driver: Driver, examples: Sequence[Mapping[str, Any]], target: Any, *, desc: str,
                  progress: bool = True, shard: tuple[int, int] | None = None) -> int:
        """The driver's records of `examples` into OUT, in input order: in this process, over every process of a
        multi-process job, or as shard K of N (`shard`). Returns how many records this process wrote."""
        from tqdm.auto import tqdm

        if shard is not None:
            return self._shard(driver, examples, target, shard, desc=desc, progress=progress)
        rank, n = multihost.process()
        if n > 1:  # one bar for the whole job on process 0, every process's rows counted into it
            driver.total_work(examples)  # the unit counts of every example in one call per bucket
            with tqdm(unit="row", desc=f"{desc} ({n} processes)", dynamic_ncols=True,
                      disable=not progress or rank != 0) as bar:
                counter = multihost.JobProgress(bar, driver.work)
                return self.run(examples, self._drive(driver, target, counter), cost=driver.work, progress=counter)

        def one(pending: Sequence[Mapping[str, Any]], writer: ResultWriter) -> None:
            if len(pending) < len(examples):
                print(f"{desc}: {len(examples) - len(pending)} of {len(examples)} examples already in {self.out}; "
                      "resuming", file=sys.stderr)
            with tqdm(total=driver.total_work(pending), unit="row", desc=desc, dynamic_ncols=True,
                      disable=not progress or not pending) as bar:
                self._drive(driver, target, bar)(pending, writer)

        return self.run(examples, one, cost=driver.work)

    def run(self, examples: Sequence[Mapping[str, Any]], work: Callable[[Sequence[Mapping[str, Any]],
            ResultWriter], Any], *, cost: Callable[[Mapping[str, Any]], int], progress: Any = None) -> int:
        """`work(pending, writer)` stores the records of the pending examples it is given into `writer`: all of them
        in one process, each claimed chunk on several (`multihost.run_sharded`, whose `progress` it counts into);
        OUT ends in input order either way. Returns how many records this process wrote."""
        if multihost.process()[1] > 1:
            self.records = None
            return multihost.run_sharded(self.out, examples, cost, work, self.settings, model=self.model,
                                         overwrite=self.overwrite, progress=progress)
        with self._writer(self.out, order=[ex["id"] for ex in examples]) as writer:
            before = len(writer.done)
            work(writer.pending(examples), writer)
            written = len(writer.done) - before
        self.records = writer.records
        if multihost.shard_files_left(self.out):  # a multi-process run of this OUT was cut short: take its records
            multihost.merge(self.out, examples, self.settings, model=self.model)
            self.records = None
        return written

    def results(self) -> list[dict[str, Any]]:
        """OUT's records after `run`/`attribute`: those the Job already holds (written once, not re-read), or
        OUT read back where other processes wrote it."""
        return self.records if self.records is not None else read_results(self.out)

    # ------------------------------------------------------------------------------------------
    def _writer(self, path: Path, order: Sequence[Any] | None = None) -> ResultWriter:
        writer = ResultWriter(path, overwrite=self.overwrite, order=order)
        writer.bind(self.settings, model=self.model)
        return writer

    def _drive(self, driver: Driver, target: Any, progress: Any) -> Callable[[Sequence[Mapping[str, Any]],
                                                                                ResultWriter], None]:
        return lambda chunk, writer: drive(driver, chunk, target, writer.write, partial=writer.partial,
                                           progress=progress, save_every=self.save_every)

    def _shard(self, driver: Driver, examples: Sequence[Mapping[str, Any]], target: Any, shard: tuple[int, int], *,
               desc: str, progress: bool) -> int:
        """Shard K of N (`jaxattr attribute --shard K/N`): N independent jobs (a SLURM array, any scheduler) each
        take one contiguous part of the input, cut by cost as a multi-process job cuts it, and write it resumably
        to `OUT.shards/shard-K-of-N.jsonl`; a finished shard leaves a marker with its ids, and
        `multihost.merge_shards(OUT)` (`jaxattr merge OUT`) joins them once all N are done. Ids in OUT are skipped."""
        k, n = shard
        if multihost.process()[1] > 1:
            raise UserError("--shard K/N runs each shard as one process; launch N jobs, not N processes")
        path, marker = multihost.shard_files(self.out, k, n)
        if self.overwrite:
            marker.unlink(missing_ok=True)
        else:
            multihost.check_settings(self.out, self.settings)
        driver.total_work(examples)
        part = multihost.split_by_cost(examples, lambda ex: driver.work(ex) * max(1, len(ex.get("input_ids", ()))),
                                       n)[k]
        todo = _not_in(self.out, part)
        path.parent.mkdir(exist_ok=True)
        written = dataclasses.replace(self, out=path).attribute(driver, todo, target, desc=f"{desc} (shard {k}/{n})",
                                                               progress=progress)
        text = json.dumps({"format": multihost.SHARD_FORMAT, "shard": k, "of": n, "settings": plain(self.settings),
                           "model": self.model, "ids": [ex["id"] for ex in part]})
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, marker)
        return written


def _not_in(out: Path, examples: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The examples OUT holds no record of (an id OUT holds for another text is a UserError)."""
    stored = {json.dumps(r["id"]): r.get("input_sha") for r in read_results(out, missing_ok=True)}
    todo = []
    for ex in examples:
        key = json.dumps(ex["id"])
        if key in stored:
            check_same_input(out, ex, stored[key])
        else:
            todo.append(ex)
    return todo
