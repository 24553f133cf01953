"""Batched dataset driver: any registered method over many examples, bounded memory, every device.

Examples are grouped by length bucket (`jaxattr.data.bucket_length` over `FINE_BUCKETS`). Within a
bucket of length T every device gets `tokens_per_batch // T` rows per step, so memory depends on the
bound and never on the input: a 512-token SIG example (≈500 units × 50 steps) is split over many
chunks of its path points, and one chunk may hold the path points of several short examples.

* path methods (a spec with `paths`: IG, SIG) run as a device-resident pipeline. A bucket's examples
  are written once into S device slots (token ids, unit ids, the asked-for target); a gradient chunk is
  described by four small [R] arrays (slot, unit, alpha, weight), and the jitted chunk gathers the rows,
  builds baselines and interpolation on the device, and adds its contributions into a [S, T] float32
  sum per slot (a scatter-add). Forwards for F(x) and F(baseline of every unit) run per group of loaded
  examples into a [S, U + 1, C] logits buffer, so the target ("predicted") is resolved on the device
  too: the host never waits for them. Chunks are dispatched asynchronously with `LAG` of them in
  flight; each chunk returns the sums of the examples whose last row it holds, fetched `LAG` chunks
  later. The units are what the method's `Paths.unit_ids` groups (IG: one, all word pieces; SIG: one
  per token or word), finished by its `Paths.finish`; the driver knows no method by name.
* a token model's span target ([T] classes, -1 elsewhere) rides in its slot as a [T] row; its forwards store,
  per (slot, x or unit baseline), the span's summary (`token_summary`: F, the span's mean probability, its first
  token's prediction and class) instead of the logits, so the same pipeline (and `steps="auto"`) runs it.
* `steps="auto"` (IG, SIG): nested trapezoid rules. Every unit starts with `AUTO_START` intervals; a
  unit whose completeness gap |Σ scores − (F(x) − F(baseline))| is above `tolerance` gets the midpoints
  of its intervals (doubling them, reusing every point so far) until `AUTO_MAX` intervals.
* batch methods (saliency, Grad×Input, GradientShap, IBA, ...) get padded batches of
  `max(1, tokens_per_batch // (T * cost)) × devices` examples; the target is resolved inside the same
  jitted call and `LAG` batches are in flight.

The driver is pure in what it knows: no file, progress bar or acknowledgement. `run` yields `Step`s: the
records finished, the work (gradient rows) they account for, and `state()`, a snapshot of every unfinished
example's partial sums (rows done and their float32 sum, keyed by example id). A run given such a snapshot
(`run(..., resume=state)`) continues those examples from their sums. Storing records and snapshots, and when,
is the caller's (`jaxattr.attribution.job.drive`: every few seconds and when interrupted, so a kill loses at
most that interval plus the chunks in flight, even inside one long SIG example).

Every chunk runs under one `jit` per (method, bucket): a dataset compiles a handful of times. Batch
axes are sharded over a 1-D mesh of all (or `devices`) devices; params and the slot tables are
replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

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
from jaxattr.attribution.results import AttributionRecord, input_digest, plain
from jaxattr.data.tokenize import FINE_BUCKETS, bucket_length, pad_batch
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, forward, probe_logits
from jaxattr.models.windowed import window_count
from jaxattr.sharding import make_mesh, replicated, shard_batch

DEFAULT_TOKENS_PER_BATCH = 8192
LAG = 2  # chunks in flight before the host reads the oldest one's finished examples
AUTO_START, AUTO_MAX = 4, 64  # --steps auto: trapezoid intervals per unit at first and at most
DEFAULT_TOLERANCE = 0.01  # --steps auto: completeness gap (in units of F) below which a unit is done
_BATCH_FNS: dict[Any, Any] = {}  # jitted batch-method callables shared by drivers with equal settings


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax on the host (float64)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def targets_and_probs(logits: np.ndarray, targets: Sequence[int | None], cfg: EncoderConfig
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The class each row explains ([N]: its given target, else the argmax) and that class's probability
    ([N]; a regression head's output)."""
    logits = np.asarray(logits, np.float32)
    if cfg.problem_type == "regression":
        return np.zeros(len(logits), np.int32), logits[:, 0].astype(np.float64)
    tgt = np.asarray([int(np.argmax(lg)) if t is None else int(t) for lg, t in zip(logits, targets)], np.int32)
    return tgt, softmax(logits)[np.arange(len(tgt)), tgt]


def explained_host(logits: np.ndarray, target: int, cfg: EncoderConfig, output: str) -> np.ndarray:
    """F of `target` for each row of logits [N, C] on the host (`gradients.explained_output`'s rule)."""
    if cfg.problem_type == "regression":
        return np.asarray(logits[:, 0], np.float64)
    values = softmax(logits) if output == "prob" else np.asarray(logits, np.float64)
    return values[:, target]


SUMMARY = 4  # a token model's forward summary: F, the span's mean probability, first token's prediction and class


def token_summary(logits: jax.Array, target: jax.Array, cfg: EncoderConfig, output: str) -> jax.Array:
    """[R, SUMMARY] per row of a token model's logits [R, T, C] and span target [R, T]: F (`explained_output`),
    the mean probability of the span's classes, the argmax and the class at the span's first token (what the
    record reports), so the path pipeline keeps four numbers per forward instead of [T, C] logits."""
    first = jnp.argmax(target >= 0, axis=-1)
    at_first = jnp.take_along_axis(logits, first[:, None, None], axis=1)[:, 0]  # [R, C]
    probs = jnp.take_along_axis(jax.nn.softmax(logits, -1), jnp.maximum(target, 0)[..., None], -1)[..., 0]
    inside = target >= 0
    mean_prob = jnp.where(inside, probs, 0.0).sum(-1) / jnp.maximum(inside.sum(-1), 1)
    cls = jnp.take_along_axis(target, first[:, None], axis=1)[:, 0]
    return jnp.stack([explained_output(logits, target, cfg, output), mean_prob,
                      jnp.argmax(at_first, -1).astype(jnp.float32), cls.astype(jnp.float32)], -1)


def span_probs(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[B] the mean probability of each span's classes (logits [B, T, C], span targets [B, T], -1 elsewhere)."""
    target = np.asarray(target)
    probs = np.take_along_axis(softmax(logits), np.maximum(target, 0)[..., None], -1)[..., 0]
    inside = target >= 0
    return np.where(inside, probs, 0.0).sum(-1) / np.maximum(inside.sum(-1), 1)


def given_rows(targets: Sequence[Any], idx: Sequence[int], length: int, cfg: EncoderConfig) -> np.ndarray:
    """The targets of examples `idx` as device input: [N] int32 (-1: the predicted class), or a token model's
    [N, length] span classes (-1 elsewhere)."""
    if cfg.task == "token":
        return np.stack([_pad(np.asarray(targets[i], np.int32), length, -1) for i in idx]).astype(np.int32)
    return np.asarray([-1 if targets[i] is None else targets[i] for i in idx], np.int32)


def auto_tokens_per_batch(cfg: EncoderConfig, device: Any = None, fraction: float = 0.5) -> int:
    """`--tokens-per-batch auto`: the memory bound from the device's memory (accelerators), else the default.

    A gradient row keeps, per token and block, about 12 hidden-size and 2 intermediate-size activations
    and the attention's per-head rows (its backward recomputes no more than that); `fraction` of the
    memory the device reports free goes to them, in powers of two.
    """
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if not stats or "bytes_limit" not in stats:
        return DEFAULT_TOKENS_PER_BATCH
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    per_token = 4 * cfg.num_layers * (12 * cfg.hidden_size + 2 * cfg.intermediate_size + 4 * cfg.num_heads * 128)
    tokens = max(1024, int(fraction * free // per_token))
    return 1 << (tokens.bit_length() - 1)


def resolve_targets(examples: Sequence[Mapping[str, Any]], target: Any, cfg: EncoderConfig
                    ) -> list[Any]:
    """Per-example targets: None = predicted; "gold" = the example's `label`; an int = that class. A token model
    explains each example's `token_target` (a span's classes per position, -1 elsewhere: `span_target`)."""
    if cfg.task == "token":
        if target not in (None, "predicted"):
            raise UserError("a token model explains the span each example names (token_target), not --target "
                            f"{target!r}")
        missing = next((ex.get("id", i) for i, ex in enumerate(examples) if "token_target" not in ex), None)
        if missing is not None:
            raise UserError(f"example {missing!r} has no token_target: a token model explains a span (jaxattr "
                            "attribute --task token finds the entities)")
        return [np.asarray(ex["token_target"], np.int32) for ex in examples]
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
    bound per device (rows × sequence length; "auto": from the device's memory); `devices`: how many
    devices of the mesh to use; `tolerance`: the completeness gap `steps="auto"` refines down to.
    """

    def __init__(self, params: Params, cfg: EncoderConfig, method: str, options: Mapping[str, Any] | None = None,
                 *, mask_id: int | None = None, pad_id: int = 0, output: str = "logit",
                 tokens_per_batch: int | str = DEFAULT_TOKENS_PER_BATCH, devices: int | None = None,
                 buckets: Sequence[int] = FINE_BUCKETS, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.spec = registry.get(method)
        if cfg.task == "token":
            registry.check_token_models(method)
        self.options = self.spec.resolve_options(dict(options or {}))
        if self.spec.explain is not None and not 0 <= self.spec.explain < cfg.num_labels:
            raise UserError(f"{method} explains class {self.spec.explain} as the reference does; the model has "
                            f"{cfg.num_labels}")
        self.cfg, self.mask_id, self.pad_id, self.output = cfg, mask_id, pad_id, output
        if tokens_per_batch == "auto":
            tokens_per_batch = auto_tokens_per_batch(cfg)
        if not isinstance(tokens_per_batch, int) or tokens_per_batch < 1:
            raise UserError(f"tokens per batch must be an integer >= 1 or 'auto', not {tokens_per_batch!r}")
        self.tokens_per_batch = int(tokens_per_batch)
        if devices is not None and not 1 <= devices <= len(jax.local_devices()):
            raise UserError(f"asked for {devices} devices, {len(jax.local_devices())} available")
        self.auto = self.options.get("steps") == "auto"
        if self.auto and self.spec.paths is None:
            raise UserError(f"--steps auto is for path methods (ig, sig), not {method!r}")
        if not (tolerance > 0 and np.isfinite(tolerance)):
            raise UserError(f"the tolerance must be a positive number, not {tolerance!r}")
        self.tolerance = float(tolerance)
        self.mesh = make_mesh(devices, local=True)  # several processes: each runs its own examples
        self.ndev = self.mesh.size
        # rows onto the mesh: one device takes host arrays through jit's own (faster) transfer
        self.put = (lambda x: x) if self.ndev == 1 else (lambda x: shard_batch(x, self.mesh))
        self.buckets = tuple(buckets)
        self.seed = seed
        if self.options.get("baseline") in ("mask", "pad") and (mask_id if self.options["baseline"] == "mask"
                                                                 else pad_id) is None:
            raise UserError(f"the tokenizer has no {self.options['baseline']} token; use --baseline zero")
        self.params = jax.device_put(params, replicated(self.mesh))
        self._load, self._fwd, self._grad = _path_kernels(cfg, output, self._row_opts())
        self._batch_fns: dict[tuple[int, int, int], Any] = {}
        self._unit_cache: dict[tuple[bytes, bytes], int] = {}
        self.compiled_shapes: set[tuple[str, int, int]] = set()  # (kind, rows, T) seen: recompiles are visible
        self._probe: list[float] | None = None

    def _row_opts(self) -> tuple:
        base = self.options.get("baseline", "mask")
        return (base, self.mask_id, self.pad_id, self.cfg.problem_type == "regression")

    # ------------------------------------------------------------------------------------------
    def rows_per_chunk(self, length: int, cost: int = 1) -> int:
        """Rows (or examples of `cost` rows) per chunk over all devices for sequence length `length` (a windowed
        model's row runs all its windows: `window_count` x window tokens)."""
        if self.cfg.window and length > self.cfg.window:
            length = window_count(length, self.cfg.window, self.cfg.window_stride) * self.cfg.window
        return max(1, self.tokens_per_batch // (length * max(1, cost))) * self.ndev

    def even_rows(self, total: int, limit: int) -> int:
        """Rows per chunk for `total` rows in as few chunks under `limit` as possible, rounded up to a multiple
        of `limit / 16` (and of the device count): small calls (a multi-process job's chunks) then compile at
        most 16 shapes per bucket and kind instead of one per call, for at most 1/16 of a chunk of padding."""
        n_chunks = -(-max(total, 1) // limit)
        per = -(-max(total, 1) // n_chunks)
        step = -(-limit // (16 * self.ndev)) * self.ndev
        return min(limit, -(-per // step) * step)

    def _steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The base rule's (alphas, weights): the quadrature, or (auto) the first trapezoid rule with its
        weights in units of one interval (the host divides by the intervals when the unit is done)."""
        if not self.auto:
            return quadrature(self.options["method"], self.options["steps"])
        w = np.ones(AUTO_START + 1)
        w[[0, -1]] = 0.5
        return np.linspace(0.0, 1.0, AUTO_START + 1), w

    def _unit_table(self, examples: Sequence[Mapping[str, Any]], length: int) -> np.ndarray:
        """[N, T] unit value per position of examples padded to `length` (-1: never moved): one call."""
        arrays = pad_batch(list(examples), length, self.pad_id)
        uid = np.asarray(self.spec.paths.unit_ids(arrays, self.options), np.int32)
        for ex, row in zip(examples, uid):
            self._unit_cache[_example_key(ex)] = len(np.unique(row[row >= 0]))
        return uid

    def _n_units(self, ex: Mapping[str, Any]) -> int:
        """Paths one example costs (1 for a batch method)."""
        if self.spec.paths is None:
            return 1
        key = _example_key(ex)
        if key not in self._unit_cache:
            self._unit_table([ex], bucket_length(len(ex["input_ids"]), self.buckets))
        return self._unit_cache[key]

    def work(self, ex: Mapping[str, Any]) -> int:
        """Gradient rows one example costs (for progress bars)."""
        return max(1, self._n_units(ex) * int(self.spec.cost(self.options)))

    def total_work(self, examples: Sequence[Mapping[str, Any]]) -> int:
        """Σ `work(ex)`, a path method's unit counts computed in one call per length bucket."""
        if self.spec.paths is not None:
            by_bucket: dict[int, list[Mapping[str, Any]]] = {}
            for ex in examples:
                if _example_key(ex) not in self._unit_cache:
                    by_bucket.setdefault(bucket_length(len(ex["input_ids"]), self.buckets), []).append(ex)
            for length, exs in by_bucket.items():
                self._unit_table(exs, length)
        return sum(self.work(ex) for ex in examples)

    @property
    def resumable(self) -> bool:
        """Whether `run` continues unfinished examples from a `Step.state()` snapshot (IG and SIG with fixed
        steps: their sums are additive over rows)."""
        return self.spec.kind == "paths" and not self.auto

    def run(self, examples: Sequence[dict[str, Any]], target: Any = "predicted",
            resume: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[Step]:
        """Yield `Step`s (finished records, one dict per example or per example and layer; the work done; a
        snapshot of the unfinished examples' sums). Path methods yield after every chunk (no records until the
        chunks in flight finish an example).

        `resume` (`resumable` methods): an earlier run's `Step.state()`; an example whose entry matches (same
        ids, target, rows) continues from its sums, other entries are dropped. A variant that explains a fixed
        class (`spec.explain`, a reference comparator) explains it whatever `target` says.
        """
        targets = resolve_targets(examples, target if self.spec.explain is None else self.spec.explain, self.cfg)
        by_bucket: dict[int, list[int]] = {}
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            if n > self.cfg.max_length:
                raise UserError(f"example {ex.get('id', i)!r} has {n} tokens; the model takes at most "
                                f"{self.cfg.max_length}")
            by_bucket.setdefault(bucket_length(n, self.buckets), []).append(i)
        keys = {_partial_key(ex.get("id", i)) for i, ex in enumerate(examples)}
        carry = {k: v for k, v in (resume or {}).items() if k in keys} if self.resumable else {}
        for length in sorted(by_bucket):
            idx = by_bucket[length]
            if self.spec.kind == "paths":
                yield from _PathRun(self, examples, targets, idx, length, carry).run()
            else:
                yield from self._run_batch(examples, targets, idx, length)

    def settings(self) -> dict[str, Any]:
        """What the records and partial sums depend on besides the example: method, options, output and
        the model (config, tensor count, and its logits on a probe batch, which `settings_diff` compares to
        1e-5: the same model retrained on another CPU, equal up to float rounding, resumes a job). A variant
        records its base method: its options (and the caller's target) say the rest, as files always held."""
        if self._probe is None:
            self._probe = [float(v) for v in probe_logits(self.params, self.cfg).ravel()]
        return {"method": self.spec.family, "options": dict(self.options), "output": self.output,
                "model": dataclasses.asdict(self.cfg), "mask_id": self.mask_id, "pad_id": self.pad_id,
                "params": f"{len(jax.tree_util.tree_leaves(self.params))} tensors", "probe": self._probe,
                **({"tolerance": self.tolerance, "max_intervals": AUTO_MAX} if self.auto else {})}

    def _finish_path(self, ex: Mapping[str, Any], index: int, raw: np.ndarray, logits: np.ndarray,
                     units: np.ndarray, given: int | None, intervals: np.ndarray | None = None
                     ) -> tuple[dict[str, Any], np.ndarray]:
        """(record, per-unit completeness gaps) of a path example from its raw sums [T] and logits
        [1 + U, C] (x, then each unit's baseline); `intervals` [U] (auto): the raw sums' trapezoid scale."""
        n = len(ex["input_ids"])
        raw = np.asarray(raw[:n], np.float64)
        if intervals is not None and len(units):
            raw = raw / (intervals @ units[:, :n] + (units[:, :n].sum(0) == 0))
        if self.cfg.task == "token":  # the forwards' span summaries (`token_summary`)
            f, prob = np.asarray(logits[:, 0], np.float64), [float(logits[0, 1])]
            prediction, target = int(logits[0, 2]), int(logits[0, 3])
        else:
            prediction = int(np.argmax(logits[0]))
            tgt, prob = targets_and_probs(logits[:1], [given], self.cfg)
            target = int(tgt[0])
            f = explained_host(logits, target, self.cfg, self.output)
        if len(units):
            unit_masks = units[:, :n]
            f_gap = f[0] - f[1:1 + len(units)]
            scores, delta = self.spec.paths.finish(raw, unit_masks, f_gap)
            gaps = unit_masks.astype(np.float64) @ raw - f_gap
        else:  # nothing to move (no word pieces): all scores 0
            scores, delta, gaps = raw, 0.0, np.zeros(0)
        return self._result(ex, index, scores, target, float(prob[0]), delta, prediction), gaps

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

        def call(params, batch, given, key):
            logits = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                             cls_only=True).logits
            if cfg.problem_type == "regression":
                target = jnp.zeros_like(given)
            elif cfg.task == "token":
                target = given  # [B, T] span classes
            else:
                target = jnp.where(given >= 0, given, jnp.argmax(logits, -1).astype(jnp.int32))
            kw = dict(ctx, **opts, target=target)
            if takes_key:
                kw["key"] = key
            return fn(params, cfg, batch, **kw), logits, target

        return jax.jit(call)

    def _run_batch(self, examples, targets, idx, length) -> Iterator[Step]:
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
        in_flight: deque[tuple[list[int], Any]] = deque()
        for s in range(0, len(idx), b):
            part = idx[s:s + b]
            exs = [examples[i] for i in part]
            batch = pad_batch(exs + [exs[-1]] * (b - len(part)), length, self.pad_id)
            given = given_rows(targets, part + [part[-1]] * (b - len(part)), length, self.cfg)
            keys = example_keys(self.seed, [examples[i].get("id", i) for i in part] + [None] * (b - len(part)))
            self.compiled_shapes.add(("batch", b, length))
            out = fn(self.params, self.put(batch), self.put(given), self.put(keys))
            for leaf in jax.tree.leaves(out):
                leaf.copy_to_host_async()
            in_flight.append((part, out))
            if len(in_flight) > LAG:
                yield self._batch_records(examples, *in_flight.popleft())
        while in_flight:
            yield self._batch_records(examples, *in_flight.popleft())

    def _batch_records(self, examples, part: list[int], out: Any) -> Step:
        result, logits, tgt = jax.device_get(out)
        conv = self.spec.outputs(result) if self.spec.outputs is not None else {
            "scores": result.scores, "delta": getattr(result, "delta", None)}
        scores = np.asarray(conv["scores"], np.float64)
        delta = conv.get("delta")
        delta = None if delta is None else np.asarray(delta, np.float64)
        layers = conv.get("layers")
        if self.cfg.task == "token":  # a span: its first token's class and prediction, the span's mean prob
            first = [int(np.argmax(tgt[k] >= 0)) for k in range(len(part))]
            probs = span_probs(logits, tgt)
            tgt = [tgt[k][j] for k, j in enumerate(first)]
            logits = [logits[k][j] for k, j in enumerate(first)]
        else:
            probs = targets_and_probs(logits, list(tgt), self.cfg)[1]
        records = []
        for k, i in enumerate(part):
            d = None if delta is None or not np.isfinite(delta[k]) else float(delta[k])
            n = len(examples[i]["input_ids"])
            common = (int(tgt[k]), float(probs[k]), d, int(np.argmax(logits[k])))
            if layers is None:
                records.append(self._result(examples[i], i, scores[k, :n], *common))
            for li, name in enumerate(layers or ()):
                records.append({**self._result(examples[i], i, scores[li, k, :n], *common), "layer": name})
        return Step(records, sum(self.work(examples[i]) for i in part), None)

    # ------------------------------------------------------------------------------------------
    def _result(self, ex: Mapping[str, Any], index: int, scores: np.ndarray, target: int, prob: float,
                delta: float | None, prediction: int) -> dict[str, Any]:
        """One output record; "prediction" (argmax class) and "label" (gold, when known) ride along."""
        from jaxattr.attribution.gradients import word_scores

        scores = np.asarray(scores, np.float64)
        words = list(ex.get("words", []))
        ws = word_scores(scores, np.asarray(ex["word_ids"]), len(words))
        gold = ex.get("label")
        return AttributionRecord(
            id=ex.get("id", index), input_sha=input_digest(ex), tokens=list(ex["tokens"]),
            scores=[float(x) for x in scores], words=words, word_scores=[float(x) for x in ws], target=int(target),
            prob=float(prob), delta=delta, prediction=int(prediction),
            **{k: ex[k] for k in ("text", "text_pair", "word_spans", "example_id", "entity") if k in ex},
            gold=int(gold) if gold is not None and int(gold) >= 0 and self.cfg.problem_type != "regression" else None,
        ).to_dict()


class _PathRun:
    """One bucket of a path method through the device pipeline (see the module docstring)."""

    def __init__(self, drv: Driver, examples: Sequence[Mapping[str, Any]], targets: Sequence[int | None],
                 idx: Sequence[int], length: int, carry: dict[str, Any]) -> None:
        self.drv, self.examples, self.targets, self.length = drv, examples, targets, length
        self.carry = carry  # resume entries of examples not loaded yet (this bucket's and later ones')
        self.work = 0  # rows to report in the next step
        self.alphas, self.weights = drv._steps()
        self.steps = len(self.alphas)
        uid = drv._unit_table([examples[i] for i in idx], length)
        self.units = {i: np.unique(row[row >= 0]) for i, row in zip(idx, uid)}
        self.uid = dict(zip(idx, uid))
        counts = [len(self.units[i]) for i in idx]
        n_grad = sum(counts) * self.steps
        self.r = drv.even_rows(n_grad, drv.rows_per_chunk(length))
        self.r_fwd = drv.even_rows(len(idx) + sum(counts), self.r)
        min_rows = max(1, min(min(counts) * self.steps, AUTO_START if drv.auto else n_grad))
        self.k = min(len(idx), self.r // min_rows + 1)  # examples that can finish in one chunk
        self.g = min(len(idx), 2 * self.r // min_rows + 1)  # examples loaded at once
        n_slots = min(len(idx), 2 * self.g + (LAG + 2) * self.k)
        umax = max(counts) if counts else 0
        rep = replicated(drv.mesh)
        zeros = lambda shape, dt: jax.device_put(np.zeros(shape, dt), rep)
        token = drv.cfg.task == "token"  # a span target per slot, a span summary per forward (`token_summary`)
        self.tables = _Tables(*(zeros((n_slots, length), np.int32) for _ in range(5)),
                              zeros((n_slots, length) if token else (n_slots,), np.int32),
                              zeros((n_slots, length), np.float32),
                              zeros((n_slots, umax + 1, SUMMARY if token else max(1, drv.cfg.num_labels)), np.float32))
        self.queue = deque(idx)
        self.free = list(range(n_slots))[::-1]
        self.jobs: dict[int, _PathJob] = {}  # slot -> job
        self.stream: deque[list[Any]] = deque()  # [job, slots, units, alphas, weights, is_last, base rows]
        self.stream_rows = 0
        self.in_flight: deque[tuple[Any, Any, list[tuple[int, _PathJob]]]] = deque()
        self.finished: list[tuple[_PathJob, dict[str, Any]]] = []  # collected, not yet handed out

    # -- loading ------------------------------------------------------------------------------
    def _check(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        crc = zlib.crc32(np.asarray(ex["token_type_ids"], np.int32).tobytes(),
                         zlib.crc32(np.asarray(ex["input_ids"], np.int32).tobytes()))
        return {"inputs": zlib.crc32(np.asarray(ex["word_ids"], np.int32).tobytes(), crc), "length": self.length,
                "rows": len(self.units[i]) * self.steps, "target": _plain_target(self.targets[i])}

    def _load_group(self) -> None:
        """Load up to G examples into free slots, dispatch their forwards, queue their gradient rows."""
        drv, length = self.drv, self.length
        g = min(self.g, len(self.free), len(self.queue))
        group = [self.queue.popleft() for _ in range(g)]
        acc0 = np.zeros((self.g, length), np.float32)
        jobs = []
        for k, i in enumerate(group):
            ex = self.examples[i]
            job = _PathJob(i, ex, self.free.pop(), self.units[i], self._check(i), len(self.units[i]) * self.steps)
            got = _resumed(self.carry.pop(_partial_key(ex.get("id", i)), None), job, length)
            if got is not None:
                job.rows_done, acc0[k] = got
                self.work += job.rows_done  # done in an earlier run: counted as done now
            if drv.auto:
                job.intervals = np.full(len(job.unit_values), AUTO_START, np.float64)
            self.jobs[job.slot] = job
            jobs.append(job)
        slots = np.full(self.g, self.tables.given.shape[0], np.int32)  # padding: an out-of-range slot
        slots[:g] = [j.slot for j in jobs]
        arrays = pad_batch([self.examples[i] for i in group] + [self.examples[group[0]]] * (self.g - g), length,
                           drv.pad_id)
        arrays["unit_ids"] = np.stack([self.uid[i] for i in group] + [self.uid[group[0]]] * (self.g - g))
        given = given_rows(self.targets, group, length, drv.cfg)
        given = np.concatenate([given, np.full((self.g - g,) + given.shape[1:], -1, np.int32)])
        self.tables = drv._load(self.tables, slots, arrays, given, acc0)
        self._forwards(jobs)
        for job in jobs:
            p = np.arange(job.rows_done, job.rows_total)
            self._queue_rows(job, job.unit_values[p // self.steps] if len(p) else p, self.alphas[p % self.steps],
                             self.weights[p % self.steps], base=True)

    def _forwards(self, jobs: list[_PathJob]) -> None:
        """F at x and at every unit's baseline, in chunks of r_fwd rows (no waiting)."""
        slot = np.concatenate([np.full(1 + len(j.unit_values), j.slot, np.int32) for j in jobs])
        unit = np.concatenate([np.concatenate([[-2], j.unit_values]).astype(np.int32) for j in jobs])
        column = np.concatenate([np.arange(1 + len(j.unit_values), dtype=np.int32) for j in jobs])
        out_of_range = self.tables.given.shape[0]
        for s in range(0, len(slot), self.r_fwd):
            part = [_pad(a[s:s + self.r_fwd], self.r_fwd, fill) for a, fill in
                    ((slot, out_of_range), (unit, -2), (column, 0))]
            self.drv.compiled_shapes.add(("forward", self.r_fwd, self.length))
            self.tables = self.drv._fwd(self.drv.params, self.tables, *self.drv.put(tuple(part)))

    def _queue_rows(self, job: _PathJob, units: np.ndarray, alphas: np.ndarray, weights: np.ndarray, *,
                    base: bool) -> None:
        n = len(units)
        self.stream.append([job, np.full(n, job.slot, np.int32), np.asarray(units, np.int32),
                            np.asarray(alphas, np.float32), np.asarray(weights, np.float32), True, base])
        self.stream_rows += n

    # -- the chunk loop -----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Take up to r rows off the stream into one gradient chunk and dispatch it."""
        r, parts, done, counted, base_rows = self.r, [], [], [], 0
        taken = 0
        while self.stream and taken < r and len(done) < self.k:
            seg = self.stream[0]
            job, n = seg[0], len(seg[1])
            take = min(n, r - taken)
            parts.append([a[:take] for a in seg[1:5]])
            if seg[6]:
                counted.append((job, take))
                base_rows += take
            taken += take
            if take == n:
                self.stream.popleft()
                done.append(job)
            else:
                seg[1:5] = [a[take:] for a in seg[1:5]]
            self.stream_rows -= take
        out_of_range = self.tables.given.shape[0]
        cat = lambda k, fill: _pad(np.concatenate([p[k] for p in parts]) if parts else np.zeros(0), r, fill)
        desc = (cat(0, out_of_range).astype(np.int32), cat(1, -2).astype(np.int32),
                cat(2, 0).astype(np.float32), cat(3, 0).astype(np.float32))
        finish = _pad(np.asarray([j.slot for j in done], np.int32), self.k, 0)
        self.drv.compiled_shapes.add(("grad", r, self.length))
        self.tables, sums, logits = self.drv._grad(self.drv.params, self.tables, *self.drv.put(desc), finish)
        for job, take in counted:  # dispatched: its rows are in the sums from now on
            job.rows_done += take
        if done:
            sums.copy_to_host_async()
            logits.copy_to_host_async()
        self.in_flight.append((sums, logits, list(enumerate(done))))
        self.work += base_rows

    def _collect(self) -> None:
        """Read the oldest chunk's finished examples; finish them (or, auto, refine their loose units)."""
        sums, logits, done = self.in_flight.popleft()
        if not done:
            return
        sums, logits = np.asarray(sums), np.asarray(logits)
        for k, job in done:
            units = (self.uid[job.index][None, :] == job.unit_values[:, None])
            record, gaps = self.drv._finish_path(job.ex, job.index, sums[k], logits[k], units.astype(np.float64),
                                                 self.targets[job.index], job.intervals)
            if self.drv.auto and self._refine(job, gaps):
                continue
            self.finished.append((job, record))
            del self.jobs[job.slot]
            self.free.append(job.slot)

    def _refine(self, job: _PathJob, gaps: np.ndarray) -> bool:
        """Queue the midpoints of every unit whose gap is above the tolerance; False if none is left."""
        loose = (np.abs(gaps) > self.drv.tolerance) & (job.intervals < AUTO_MAX)
        if not loose.any():
            return False
        job.refining = True
        units, alphas = [], []
        for u in np.flatnonzero(loose):
            n = int(job.intervals[u])
            units.append(np.full(n, job.unit_values[u]))
            alphas.append((np.arange(n) + 0.5) / n)
            job.intervals[u] = 2 * n
        units, alphas = np.concatenate(units), np.concatenate(alphas)
        self._queue_rows(job, units, alphas, np.ones(len(units)), base=False)
        return True

    def _step(self) -> Step:
        """Hand out what finished and the work done since the last step."""
        records = [r for _, r in self.finished]
        self.finished, work, self.work = [], self.work, 0
        return Step(records, work, self.state)

    def state(self) -> dict[str, dict[str, Any]]:
        """Every unfinished example's entry (check, rows done, their sum): those in the pipeline (waiting for the
        chunks in flight), those collected but not handed out yet, and the resume entries not loaded yet."""
        out = dict(self.carry)
        live = [*self.jobs.values(), *(job for job, _ in self.finished)]
        live = [job for job in live if not job.refining and job.rows_done > 0]
        if live:
            acc = np.asarray(self.tables.acc)
            for job in live:
                out[_partial_key(job.ex.get("id", job.index))] = {
                    "check": plain(job.check), "rows_done": int(job.rows_done),
                    "acc": [float(x) for x in np.asarray(acc[job.slot], np.float64)]}
        return out

    def run(self) -> Iterator[Step]:
        while True:
            while self.stream_rows < 2 * self.r and self.queue and self.free:
                self._load_group()
            if self.stream:
                self._dispatch()
                if len(self.in_flight) > LAG:
                    self._collect()
            elif self.in_flight:
                self._collect()
                continue
            else:
                break
            yield self._step()
        yield self._step()


class Step(NamedTuple):
    """What `Driver.run` yields: `records` finished since the last step, the `work` (gradient rows, `Driver.work`'s
    unit) they and the unfinished examples advanced by, and `state()` (resumable methods; else None): the
    snapshot a later `run(..., resume=...)` continues from, taken when called."""

    records: list[dict[str, Any]]
    work: int
    state: Callable[[], dict[str, dict[str, Any]]] | None


def _resumed(entry: Mapping[str, Any] | None, job: _PathJob, length: int) -> tuple[int, np.ndarray] | None:
    """(rows done, their sum) of a resume entry that matches `job` (same ids, target and rows), else None."""
    try:
        if entry is None or entry["check"] != plain(job.check):
            return None
        rows, acc = int(entry["rows_done"]), np.asarray(entry["acc"], np.float32)
    except (KeyError, TypeError, ValueError):
        return None
    return (rows, acc) if 0 < rows <= job.rows_total and acc.shape == (length,) else None


def _plain_target(target: Any) -> Any:
    """A target as the resume check stores it (a span target as a list, not numpy's abbreviated str)."""
    return np.asarray(target).tolist() if isinstance(target, np.ndarray) else target


def _pad(a: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """`a` [m <= n] padded to n entries with `fill`."""
    a = np.asarray(a)
    return a if len(a) == n else np.concatenate([a, np.full(n - len(a), fill, a.dtype if len(a) else None)])


def _example_key(ex: Mapping[str, Any]) -> tuple[bytes, bytes]:
    return (np.asarray(ex["input_ids"], np.int32).tobytes(), np.asarray(ex["word_ids"], np.int32).tobytes())


def _partial_key(example_id: Any) -> str:
    """An example's key in a resume snapshot (`Step.state()`)."""
    return json.dumps(example_id)


def example_keys(seed: int, ids: Sequence[Any]) -> jax.Array:
    """One PRNG key per example from the seed and the example's id (stable across resumed runs)."""
    crcs = np.asarray([zlib.crc32(str(i).encode()) & 0x7FFFFFFF for i in ids], np.uint32)
    return _fold_keys(seed, crcs)


@functools.partial(jax.jit, static_argnums=0)
def _fold_keys(seed: int, crcs: jax.Array) -> jax.Array:
    base = jax.random.key(seed)
    return jax.vmap(lambda c: jax.random.fold_in(base, c))(crcs)


# ------------------------------------------------------------------------------------------------
# The device-resident path pipeline


class _Tables(NamedTuple):
    """Device state of one bucket's path pipeline: S example slots of length T, U units at most."""

    input_ids: jax.Array  # [S, T] int32
    attention_mask: jax.Array  # [S, T]
    token_type_ids: jax.Array  # [S, T]
    word_ids: jax.Array  # [S, T]
    unit_ids: jax.Array  # [S, T] unit value per position (-1: never moved)
    given: jax.Array  # [S] int32 target asked for (-1: the predicted class); a token model: [S, T] span classes
    acc: jax.Array  # [S, T] float32 running sum of row contributions
    logits: jax.Array  # [S, U + 1, C] logits at x (index 0) and at each unit's baseline (1 + unit index);
    # a token model: [S, U + 1, SUMMARY], each forward's `token_summary`


@dataclasses.dataclass
class _PathJob:
    """One example on its way through the path pipeline (host bookkeeping only: its sums live on the device)."""

    index: int
    ex: Mapping[str, Any]
    slot: int
    unit_values: np.ndarray  # [U] unit ids in index order
    check: dict[str, Any]
    rows_total: int
    rows_done: int = 0  # base-rule rows dispatched (a prefix of its unit x step rows)
    intervals: np.ndarray | None = None  # --steps auto: [U] trapezoid intervals of each unit so far
    refining: bool = False


def _gather(a: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take(a, idx, axis=0, mode="clip")


def _row_view(t: _Tables, slot: jax.Array, unit: jax.Array, alpha: jax.Array, weight: jax.Array,
              baseline: str, mask_id: int | None, pad_id: int, regression: bool) -> Rows:
    """Rows built on the device from descriptors (slot, unit value, alpha, weight) [R]."""
    ids, am, wid = _gather(t.input_ids, slot), _gather(t.attention_mask, slot), _gather(t.word_ids, slot)
    base_ids, base_scale = baseline_ids({"input_ids": ids, "attention_mask": am, "word_ids": wid}, baseline,
                                        mask_id, pad_id)
    interp = (_gather(t.unit_ids, slot) == unit[:, None]).astype(jnp.float32)
    given = _gather(t.given, slot)
    if given.ndim == 2:  # a token model's span target, always given
        target = given
    else:
        predicted = jnp.argmax(_gather(t.logits, slot)[:, 0], axis=-1).astype(jnp.int32)
        target = jnp.zeros_like(given) if regression else jnp.where(given >= 0, given, predicted)
    return Rows(ids, am, _gather(t.token_type_ids, slot), base_ids, base_scale, interp, alpha, weight, target)


def _load_step(t: _Tables, slots: jax.Array, arrays: Mapping[str, jax.Array], given: jax.Array,
               acc0: jax.Array) -> _Tables:
    """Write G examples into their slots (padding entries carry slot S and are dropped)."""
    put = lambda a, v: a.at[slots].set(v, mode="drop")
    return t._replace(input_ids=put(t.input_ids, arrays["input_ids"]),
                      attention_mask=put(t.attention_mask, arrays["attention_mask"]),
                      token_type_ids=put(t.token_type_ids, arrays["token_type_ids"]),
                      word_ids=put(t.word_ids, arrays["word_ids"]), unit_ids=put(t.unit_ids, arrays["unit_ids"]),
                      given=put(t.given, given), acc=put(t.acc, acc0))


def _forward_step(params: Params, t: _Tables, slot: jax.Array, unit: jax.Array, column: jax.Array, *,
                  cfg: EncoderConfig, output: str, opts: tuple) -> _Tables:
    """Logits at x (column 0, alpha 1) or at a unit's baseline (column 1 + u, alpha 0), stored per slot (a
    token model's: their span summary)."""
    alpha = (column == 0).astype(jnp.float32)
    rows = _row_view(t, slot, unit, alpha, jnp.zeros_like(alpha), *opts)
    logits = row_logits(params, cfg, rows)
    if cfg.task == "token":
        logits = token_summary(logits, rows.target, cfg, output)
    return t._replace(logits=t.logits.at[slot, column].set(logits.astype(t.logits.dtype), mode="drop"))


def _grad_step(params: Params, t: _Tables, slot: jax.Array, unit: jax.Array, alpha: jax.Array,
               weight: jax.Array, done: jax.Array, *, cfg: EncoderConfig, output: str, opts: tuple
               ) -> tuple[_Tables, jax.Array, jax.Array]:
    """One chunk of gradient rows added into the slots' sums; returns the sums and logits of the slots in
    `done` [K] (the examples whose last row is in this chunk) for the host to fetch later."""
    rows = _row_view(t, slot, unit, alpha, weight, *opts)
    contrib = row_contributions(params, cfg, rows, output)
    acc = t.acc.at[slot].add(contrib.astype(t.acc.dtype), mode="drop")
    return t._replace(acc=acc), _gather(acc, done), _gather(t.logits, done)


@functools.cache
def _path_kernels(cfg: EncoderConfig, output: str, opts: tuple) -> tuple[Any, Any, Any]:
    """The jitted load / forward / gradient steps, shared by every Driver of the same settings; the slot
    tables are donated, so each step updates them in place."""
    return (jax.jit(_load_step, donate_argnums=0),
            jax.jit(functools.partial(_forward_step, cfg=cfg, output=output, opts=opts), donate_argnums=1),
            jax.jit(functools.partial(_grad_step, cfg=cfg, output=output, opts=opts), donate_argnums=1))


def attribute_examples(params: Params, cfg: EncoderConfig, examples: Sequence[dict[str, Any]], method: str,
                       options: Mapping[str, Any] | None = None, *, target: Any = "predicted",
                       **driver_kwargs: Any) -> list[dict[str, Any]]:
    """Convenience: run the driver to the end and return the results in input order."""
    drv = Driver(params, cfg, method, options, **driver_kwargs)
    out = [r for step in drv.run(examples, target) for r in step.records]
    pos = {ex.get("id", i): i for i, ex in enumerate(examples)}
    return sorted(out, key=lambda r: (pos.get(r["id"], 0), str(r.get("layer", ""))))
