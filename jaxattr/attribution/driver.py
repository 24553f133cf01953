"""Batched dataset driver: any registered method over many examples, bounded memory, every device.

Examples are grouped by length bucket (`jaxattr.data.bucket_length` over `FINE_BUCKETS`). Within a
bucket of length T every device gets `tokens_per_batch // T` rows per step, so memory depends on the
bound and never on the input: a 512-token SIG example (≈500 units × 50 steps) is split over many
chunks of its path points, and one chunk may hold the path points of several short examples.

* path methods (a spec with `paths`: IG, SIG) are flattened into rows: examples × units × steps, the
  units being what the method's `Paths.unit_ids` groups (IG: one, all word pieces; SIG: one per token or
  word), and finished by its `Paths.finish`; the driver knows no method by name. One forward chunk per
  group of examples gives predictions and F at x and at every baseline (for the convergence deltas);
  then gradient rows stream through `row_contributions` in fixed [R, T] chunks, R = rows per device ×
  devices. Partial sums are accumulated per example on the host (float64) and an example is finished
  when its last row is done. Given a `PartialSums` sidecar (`run(..., partial=writer.partial)`), the
  sums and rows done of unfinished examples are saved after every chunk and a re-run continues from
  them, so a kill loses at most the chunk in flight even inside one long SIG example.
* batch methods (saliency, Grad×Input, GradientShap, IBA, ...) get padded batches of
  `max(1, tokens_per_batch // (T * cost)) × devices` examples.

Every chunk runs under one `jit` per (method, bucket): a dataset compiles a handful of times. Batch
axes are sharded over a 1-D mesh of all (or `devices`) devices; params are replicated.
`attribute_examples` yields the finished examples after every chunk, which is what the resumable
writer flushes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.attribution import registry
from jaxattr.attribution.gradients import (
    Rows,
    baseline_ids,
    explained_output,
    quadrature,
    row_contributions,
    row_logits,
)
from jaxattr.attribution.results import input_digest
from jaxattr.data.tokenize import FINE_BUCKETS, bucket_length, pad_batch
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, probe_logits
from jaxattr.sharding import make_mesh, replicated, shard_batch

if TYPE_CHECKING:
    from jaxattr.attribution.results import PartialSums

log = logging.getLogger(__name__)

DEFAULT_TOKENS_PER_BATCH = 8192
_BATCH_FNS: dict[Any, Any] = {}  # jitted batch-method callables shared by drivers with equal settings


@dataclasses.dataclass
class _Job:
    """One example on its way through the path driver."""

    index: int  # position in the input list
    ex: dict[str, Any]
    arrays: dict[str, np.ndarray]  # padded [T] arrays
    units: list[np.ndarray]  # float masks [T], one per unit
    remaining: int = 0
    rows_done: int = 0  # a prefix of the (unit, step) rows, in order
    acc: np.ndarray | None = None  # float64 [T]
    target: int = 0
    prediction: int = 0
    prob: float = float("nan")
    f_x: float = float("nan")
    f_base: np.ndarray | None = None  # [U]


def targets_and_probs(logits: np.ndarray, targets: Sequence[int | None], cfg: EncoderConfig
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The class each row explains ([N]: its given target, else the argmax) and that class's probability
    ([N]; a regression head's output)."""
    logits = np.asarray(logits, np.float32)
    if cfg.problem_type == "regression":
        return np.zeros(len(logits), np.int32), logits[:, 0].astype(np.float64)
    tgt = np.asarray([int(np.argmax(lg)) if t is None else int(t) for lg, t in zip(logits, targets)], np.int32)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    return tgt, probs[np.arange(len(tgt)), tgt]


def resolve_targets(examples: Sequence[Mapping[str, Any]], target: Any, cfg: EncoderConfig
                    ) -> list[int | None]:
    """Per-example targets: None = predicted; "gold" = the example's `label`; an int = that class."""
    if target in (None, "predicted"):
        return [None] * len(examples)
    if cfg.problem_type == "regression":
        return [0] * len(examples)
    if target == "gold":
        out = []
        for ex in examples:
            lab = ex.get("label", -1)
            if lab is None or int(lab) < 0:
                raise UserError(f"example {ex.get('id')!r} has no gold label; use --target predicted or an index")
            if not 0 <= int(lab) < cfg.num_labels:
                raise UserError(f"example {ex.get('id')!r}: gold label {lab} is outside 0..{cfg.num_labels - 1}")
            out.append(int(lab))
        return out
    try:
        t = int(target)
    except (TypeError, ValueError):
        raise UserError(f"target must be 'predicted', 'gold' or a class index, not {target!r}") from None
    if not 0 <= t < cfg.num_labels:
        raise UserError(f"target class {t} is outside 0..{cfg.num_labels - 1}")
    return [t] * len(examples)


class Driver:
    """Runs one method over examples (dicts from `encode_texts` / `tokenize_dataset`).

    `params`/`cfg`: the model; `mask_id`/`pad_id`: the tokenizer's ids; `tokens_per_batch`: the memory
    bound per device (rows × sequence length); `devices`: how many devices of the mesh to use.
    """

    def __init__(self, params: Params, cfg: EncoderConfig, method: str, options: Mapping[str, Any] | None = None,
                 *, mask_id: int | None = None, pad_id: int = 0, output: str = "logit",
                 tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH, devices: int | None = None,
                 buckets: Sequence[int] = FINE_BUCKETS, seed: int = 0) -> None:
        self.spec = registry.get(method)
        self.options = self.spec.resolve_options(dict(options or {}))
        self.cfg, self.mask_id, self.pad_id, self.output = cfg, mask_id, pad_id, output
        if tokens_per_batch < 1:
            raise UserError(f"tokens per batch must be >= 1, not {tokens_per_batch}")
        self.tokens_per_batch = int(tokens_per_batch)
        if devices is not None and not 1 <= devices <= len(jax.local_devices()):
            raise UserError(f"asked for {devices} devices, {len(jax.local_devices())} available")
        self.mesh = make_mesh(devices, local=True)  # several processes: each runs its own examples
        self.ndev = self.mesh.size
        self.buckets = tuple(buckets)
        self.seed = seed
        if self.options.get("baseline") in ("mask", "pad") and (mask_id if self.options["baseline"] == "mask"
                                                                 else pad_id) is None:
            raise UserError(f"the tokenizer has no {self.options['baseline']} token; use --baseline zero")
        self.params = jax.device_put(params, replicated(self.mesh))
        self._grad, self._fwd = _kernels(cfg, output)
        self._batch_fns: dict[tuple[int, int, int], Any] = {}
        self.compiled_shapes: set[tuple[str, int, int]] = set()  # (kind, rows, T) seen: recompiles are visible
        self._probe: list[float] | None = None

    # ------------------------------------------------------------------------------------------
    def rows_per_chunk(self, length: int, cost: int = 1) -> int:
        """Rows (or examples of `cost` rows) per chunk over all devices for sequence length `length`."""
        return max(1, self.tokens_per_batch // (length * max(1, cost))) * self.ndev

    def even_rows(self, total: int, limit: int) -> int:
        """Rows per chunk for `total` rows in as few chunks under `limit` as possible, rounded up to a multiple
        of `limit / 16` (and of the device count): small calls (a multi-process job's chunks) then compile at
        most 16 shapes per bucket and kind instead of one per call, for at most 1/16 of a chunk of padding."""
        n_chunks = -(-max(total, 1) // limit)
        per = -(-max(total, 1) // n_chunks)
        step = -(-limit // (16 * self.ndev)) * self.ndev
        return min(limit, -(-per // step) * step)

    def _unit_ids(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """[T] the path method's unit index per position (-1: never moved)."""
        batch = {k: np.asarray(v)[None] for k, v in arrays.items() if k in ("input_ids", "attention_mask",
                                                                          "token_type_ids", "word_ids")}
        return np.asarray(self.spec.paths.unit_ids(batch, self.options))[0]

    def _n_units(self, ex: Mapping[str, Any]) -> int:
        """Paths one example costs (1 for a batch method)."""
        if self.spec.paths is None:
            return 1
        # padded to the bucket length: a handful of shapes for the eager unit_ids, not one per length
        arrays = pad_batch([ex], bucket_length(len(ex["input_ids"]), self.buckets), self.pad_id)
        uid = self._unit_ids({k: v[0] for k, v in arrays.items()})
        return len(np.unique(uid[uid >= 0]))

    def work(self, ex: Mapping[str, Any]) -> int:
        """Gradient rows one example costs (for progress bars)."""
        return max(1, self._n_units(ex) * int(self.spec.cost(self.options)))

    def run(self, examples: Sequence[dict[str, Any]], target: Any = "predicted", progress: Any = None,
            partial: PartialSums | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield lists of finished results (one dict per example, or per example and layer).

        `partial` (IG, SIG): a sidecar that keeps unfinished examples' sums between runs; the caller
        must have stored every yielded list before asking for the next. Entries of examples not in
        `examples` (finished, or left out) are dropped.
        """
        targets = resolve_targets(examples, target, self.cfg)
        if self.spec.kind != "paths":
            partial = None
        if partial is not None:
            partial.bind(self.settings())
            keep = {_partial_key(ex.get("id", i)) for i, ex in enumerate(examples)}
            for key in [k for k in partial.entries if k not in keep]:
                partial.drop(key)
        by_bucket: dict[int, list[int]] = {}
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            if n > self.cfg.max_length:
                raise UserError(f"example {ex.get('id', i)!r} has {n} tokens; the model takes at most "
                                f"{self.cfg.max_length}")
            by_bucket.setdefault(bucket_length(n, self.buckets), []).append(i)
        if partial is not None:
            partial.flush()
        for length in sorted(by_bucket):
            idx = by_bucket[length]
            if self.spec.kind == "paths":
                yield from self._run_paths(examples, targets, idx, length, progress, partial)
            else:
                yield from self._run_batch(examples, targets, idx, length, progress)

    def settings(self) -> dict[str, Any]:
        """What the records and partial sums depend on besides the example: method, options, output and
        the model (config, tensor count, and its logits on a probe batch, which `settings_diff` compares to
        1e-5: the same model retrained on another CPU, equal up to float rounding, resumes a job)."""
        if self._probe is None:
            self._probe = [float(v) for v in probe_logits(self.params, self.cfg).ravel()]
        return {"method": self.spec.name, "options": dict(self.options), "output": self.output,
                "model": dataclasses.asdict(self.cfg), "mask_id": self.mask_id, "pad_id": self.pad_id,
                "params": f"{len(jax.tree_util.tree_leaves(self.params))} tensors", "probe": self._probe}

    # ------------------------------------------------------------------------------------------
    # path methods
    def _units(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """[T] float masks, one per unit, in unit-index order."""
        uid = self._unit_ids(arrays)
        return [(uid == u).astype(np.float32) for u in np.unique(uid[uid >= 0])]

    def _base_arrays(self, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The baseline's (token ids [T], embedding scale [T]), as the pure functions make them."""
        ids, scale = baseline_ids({k: arrays[k][None] for k in ("input_ids", "attention_mask", "word_ids")},
                                  self.options["baseline"], self.mask_id, self.pad_id)
        return np.asarray(ids[0], np.int32), np.asarray(scale[0], np.float32)

    def _rows(self, jobs_units: list[tuple[_Job, np.ndarray, float, float]], r: int) -> Rows:
        """Stack row descriptors (job, interp mask, alpha, weight) into [r, T] arrays (padding rows weigh 0)."""
        n = len(jobs_units)
        pad = [jobs_units[-1][:2] + (0.0, 0.0)] * (r - n)
        items = jobs_units + pad
        st = lambda key: np.stack([j.arrays[key] for j, *_ in items])
        return Rows(st("input_ids"), st("attention_mask"), st("token_type_ids"), st("baseline_ids"),
                    st("baseline_scale"), np.stack([m for _, m, _, _ in items]),
                    np.asarray([a for *_, a, _ in items], np.float32), np.asarray([w for *_, w in items], np.float32),
                    np.asarray([j.target for j, *_ in items], np.int32))

    def _forward_group(self, jobs: list[_Job], targets: list[int | None], r: int, length: int) -> None:
        """Predictions and F at x and at every unit's baseline for a group of jobs."""
        descs: list[tuple[_Job, np.ndarray, float, float]] = []
        for job in jobs:
            descs.append((job, job.units[0] if job.units else np.zeros(length, np.float32), 1.0, 0.0))
            descs.extend((job, u, 0.0, 0.0) for u in job.units)
        logits, explained = [], []
        for s in range(0, len(descs), r):
            part = descs[s:s + r]
            rows = self._rows(part, r)
            self.compiled_shapes.add(("forward", r, length))
            out, per_class = self._fwd(self.params, shard_batch(rows, self.mesh))
            logits.append(np.asarray(out)[:len(part)])
            explained.append(np.asarray(per_class, np.float64)[:len(part)])
        logits, explained = np.concatenate(logits), np.concatenate(explained)
        k = 0
        for job in jobs:
            lx = logits[k:k + 1]
            f = explained[k:k + 1 + len(job.units)]  # [1 + U, C]: F of every class at x and each baseline
            k += 1 + len(job.units)
            job.prediction = int(np.argmax(lx[0]))
            tgt, prob = targets_and_probs(lx, [targets[job.index]], self.cfg)
            job.target, job.prob = int(tgt[0]), float(prob[0])
            job.f_x, job.f_base = float(f[0, job.target]), f[1:, job.target]

    def _run_paths(self, examples, targets, idx, length, progress,
                   partial: PartialSums | None) -> Iterator[list[dict[str, Any]]]:
        alphas, weights = quadrature(self.options["method"], self.options["steps"])
        steps = len(alphas)
        # chunk sizes: at most the memory bound, and the bucket's rows split evenly (no padding waste on
        # small jobs); one compiled shape per bucket and kind
        n_fwd = n_grad = 0
        for i in idx:
            n_units = self._n_units(examples[i])
            n_grad += n_units * steps
            n_fwd += 1 + n_units
        r = self.even_rows(n_grad, self.rows_per_chunk(length))
        r_fwd = self.even_rows(n_fwd, r)
        pending: deque[tuple[_Job, int, int]] = deque()  # (job, unit index, step)
        queue = deque(idx)
        finished: list[dict[str, Any]] = []
        handed: list[dict[str, Any]] = []  # last results yielded: stored by the caller once we resume

        def check(job: _Job) -> dict[str, Any]:
            a = job.arrays
            crc = zlib.crc32(a["token_type_ids"].tobytes(), zlib.crc32(a["input_ids"].tobytes()))
            return {"inputs": zlib.crc32(a["word_ids"].tobytes(), crc), "length": length,
                    "rows": len(job.units) * steps, "target": job.target}

        def restore(job: _Job) -> int:
            """Continue `job` from its stored partial sum; returns the rows skipped."""
            got = partial.get(_partial_key(job.ex.get("id", job.index)), check(job)) if partial else None
            if got is None or not 0 < got[0] < job.remaining or got[1].shape != job.acc.shape:
                return 0
            job.rows_done, job.acc = got[0], got[1].copy()
            job.remaining -= job.rows_done
            if progress is not None and getattr(progress, "total", None):
                progress.total -= job.rows_done
            return job.rows_done

        def settle() -> None:
            """The caller has stored the results handed out: their partial sums can go."""
            if partial is not None:
                for rec in handed:
                    partial.drop(_partial_key(rec["id"]))
            handed.clear()

        def refill() -> None:
            group: list[_Job] = []
            budget = 8 * r
            while queue and budget > 0:
                i = queue.popleft()
                arrays = pad_batch([examples[i]], length, self.pad_id)
                arrays = {k: v[0] for k, v in arrays.items()}
                arrays["baseline_ids"], arrays["baseline_scale"] = self._base_arrays(arrays)
                job = _Job(i, examples[i], arrays, self._units(arrays))
                job.acc = np.zeros(length, np.float64)
                job.remaining = len(job.units) * steps
                group.append(job)
                budget -= max(1, job.remaining)
            if not group:
                return
            self._forward_group(group, targets, r_fwd, length)
            for job in group:
                if job.remaining == 0:
                    finished.append(self._finish_path(job))
                for p in range(restore(job), len(job.units) * steps):
                    pending.append((job, p // steps, p % steps))

        while True:
            if len(pending) < r and queue:
                refill()
                if finished and not pending:
                    settle()
                    handed.extend(self._emit(finished, progress, 0))
                    yield list(handed)
                continue
            if not pending:
                break
            take = [pending.popleft() for _ in range(min(r, len(pending)))]
            rows = self._rows([(j, j.units[u], float(alphas[s]), float(weights[s])) for j, u, s in take], r)
            self.compiled_shapes.add(("grad", r, length))
            contrib = np.asarray(self._grad(self.params, shard_batch(rows, self.mesh)), np.float64)
            for k, (job, _, _) in enumerate(take):
                job.acc += contrib[k]
                job.remaining -= 1
                job.rows_done += 1
                if job.remaining == 0:
                    finished.append(self._finish_path(job))
            settle()
            if partial is not None:
                for job in {id(j): j for j, _, _ in take}.values():
                    if job.remaining:
                        partial.put(_partial_key(job.ex.get("id", job.index)), check(job), job.rows_done, job.acc)
                partial.flush()
            handed.extend(self._emit(finished, progress, len(take)))
            yield list(handed)
        settle()
        if finished:
            handed.extend(self._emit(finished, progress, 0))
            yield list(handed)
            settle()
        if partial is not None:
            partial.flush()

    def _emit(self, finished: list[dict[str, Any]], progress: Any, rows_done: int) -> list[dict[str, Any]]:
        out = list(finished)
        finished.clear()
        if progress is not None and rows_done:
            progress.update(rows_done)
        return out

    def _finish_path(self, job: _Job) -> dict[str, Any]:
        n = len(job.ex["input_ids"])
        raw = job.acc[:n]
        if job.units:
            units = np.stack([u[:n] > 0 for u in job.units]).astype(np.float64)
            scores, delta = self.spec.paths.finish(raw, units, job.f_x - job.f_base)
        else:  # nothing to move (no word pieces): all scores 0
            scores, delta = raw, 0.0
        return self._result(job.ex, job.index, scores, job.target, job.prob, delta, job.prediction)

    # ------------------------------------------------------------------------------------------
    # batch: saliency, Grad×Input, GradientShap, IBA and other registered methods
    def _batch_callable(self, rows_per_step: int):
        fn = self.spec.fn
        sig = inspect.signature(fn).parameters
        ctx = {"mask_id": self.mask_id, "pad_id": self.pad_id, "output": self.output, "chunk": rows_per_step}
        ctx = {k: v for k, v in ctx.items() if k in sig}
        opts = dict(self.options)
        takes_key = "key" in sig
        cfg = self.cfg

        def call(params, batch, target, key):
            kw = dict(ctx, **opts, target=target)
            if takes_key:
                kw["key"] = key
            return fn(params, cfg, batch, **kw)

        return jax.jit(call)

    def _run_batch(self, examples, targets, idx, length, progress) -> Iterator[list[dict[str, Any]]]:
        cost = int(self.spec.cost(self.options))
        b = self.rows_per_chunk(length, cost)
        # rows per lax.map step: the largest divisor of the per-device rows that fits the memory bound
        per_dev = (b // self.ndev) * cost
        budget = max(1, self.tokens_per_batch // length)
        chunk = max(d for d in range(1, per_dev + 1) if per_dev % d == 0 and d <= budget)
        try:
            cache_key = (self.spec.name, self.cfg, self.output, tuple(sorted(self.options.items())), chunk, self.ndev,
                         self.mask_id, self.pad_id)
            hash(cache_key)
        except TypeError:  # unhashable options: cache on this driver only
            cache_key = None
        cache = _BATCH_FNS if cache_key is not None else self._batch_fns
        fn = cache.get(cache_key or (b, length, chunk))
        if fn is None:
            fn = cache[cache_key or (b, length, chunk)] = self._batch_callable(chunk * self.ndev)
        for s in range(0, len(idx), b):
            part = idx[s:s + b]
            exs = [examples[i] for i in part]
            batch = pad_batch(exs + [exs[-1]] * (b - len(part)), length, self.pad_id)
            sharded = shard_batch(batch, self.mesh)
            shape = batch["input_ids"].shape
            rows = Rows(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["input_ids"],
                        np.ones(shape, np.float32), np.zeros(shape, np.float32), np.ones(b, np.float32),
                        np.zeros(b, np.float32), np.zeros(b, np.int32))
            self.compiled_shapes.add(("forward", b, length))
            logits = np.asarray(self._fwd(self.params, shard_batch(rows, self.mesh))[0], np.float64)
            tgt, probs = targets_and_probs(logits, [targets[i] for i in part] + [targets[part[-1]]] * (b - len(part)),
                                           self.cfg)
            keys = example_keys(self.seed, [examples[i].get("id", i) for i in part] + [None] * (b - len(part)))
            self.compiled_shapes.add(("batch", b, length))
            result = fn(self.params, sharded, shard_batch(tgt, self.mesh), shard_batch(keys, self.mesh))
            conv = self.spec.outputs(result) if self.spec.outputs is not None else {
                "scores": result.scores, "delta": getattr(result, "delta", None)}
            scores = np.asarray(conv["scores"], np.float64)
            delta = conv.get("delta")
            delta = None if delta is None else np.asarray(delta, np.float64)
            layers = conv.get("layers")
            out = []
            for k, i in enumerate(part):
                d = None if delta is None or not np.isfinite(delta[k]) else float(delta[k])
                n = len(examples[i]["input_ids"])
                if layers is None:
                    out.append(self._result(examples[i], i, scores[k, :n], int(tgt[k]), float(probs[k]), d,
                                            int(np.argmax(logits[k]))))
                else:
                    for li, name in enumerate(layers):
                        row = self._result(examples[i], i, scores[li, k, :n], int(tgt[k]), float(probs[k]), d,
                                           int(np.argmax(logits[k])))
                        row["layer"] = name
                        out.append(row)
            if progress is not None:
                progress.update(sum(self.work(examples[i]) for i in part))
            yield out

    # ------------------------------------------------------------------------------------------
    def _result(self, ex: Mapping[str, Any], index: int, scores: np.ndarray, target: int, prob: float,
                delta: float | None, prediction: int) -> dict[str, Any]:
        """One output record; "prediction" (argmax class) and "label" (gold, when known) ride along."""
        from jaxattr.attribution.gradients import word_scores

        scores = np.asarray(scores, np.float64)
        words = list(ex.get("words", []))
        ws = word_scores(scores, np.asarray(ex["word_ids"]), len(words))
        return {"id": ex.get("id", index), "input_sha": input_digest(ex), "tokens": list(ex["tokens"]),
                "scores": [float(x) for x in scores],
                "words": words, "word_scores": [float(x) for x in ws], "target": int(target),
                "prob": float(prob), "delta": delta, "prediction": int(prediction),
                **{k: ex[k] for k in ("text", "text_pair", "word_spans") if k in ex},
                **({"gold": int(ex["label"])} if ex.get("label") is not None and int(ex["label"]) >= 0
                   and self.cfg.problem_type != "regression" else {})}


def _partial_key(example_id: Any) -> str:
    """An example's key in a `PartialSums` sidecar."""
    return json.dumps(example_id)


def example_keys(seed: int, ids: Sequence[Any]) -> jax.Array:
    """One PRNG key per example from the seed and the example's id (stable across resumed runs)."""
    base = jax.random.key(seed)
    return jnp.stack([jax.random.fold_in(base, zlib.crc32(str(i).encode()) & 0x7FFFFFFF) for i in ids])


@functools.cache
def _kernels(cfg: EncoderConfig, output: str) -> tuple[Any, Any]:
    """The jitted row kernels, shared by every Driver of the same config (one compile per shape)."""
    return (jax.jit(functools.partial(_grad_chunk, cfg=cfg, output=output)),
            jax.jit(functools.partial(_fwd_chunk, cfg=cfg, output=output)))


def _grad_chunk(params: Params, rows: Rows, *, cfg: EncoderConfig, output: str) -> jax.Array:
    return row_contributions(params, cfg, rows, output)


def _fwd_chunk(params: Params, rows: Rows, *, cfg: EncoderConfig, output: str) -> tuple[jax.Array, jax.Array]:
    """Logits at each row's path point [R, C], and the explained output F for every class [R, C] (the driver
    picks the target's column once it is resolved: the predicted class is known only after this call)."""
    logits = row_logits(params, cfg, rows)
    n = logits.shape[0]
    per_class = jnp.stack([explained_output(logits, jnp.full(n, c, jnp.int32), cfg, output)
                           for c in range(logits.shape[1])], axis=-1)
    return logits, per_class


def attribute_examples(params: Params, cfg: EncoderConfig, examples: Sequence[dict[str, Any]], method: str,
                       options: Mapping[str, Any] | None = None, *, target: Any = "predicted",
                       **driver_kwargs: Any) -> list[dict[str, Any]]:
    """Convenience: run the driver to the end and return the results in input order."""
    drv = Driver(params, cfg, method, options, **driver_kwargs)
    out = [r for chunk in drv.run(examples, target) for r in chunk]
    pos = {ex.get("id", i): i for i, ex in enumerate(examples)}
    return sorted(out, key=lambda r: (pos.get(r["id"], 0), str(r.get("layer", ""))))
