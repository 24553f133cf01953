"""Batched early exit that saves wall-clock time: one implementation shared by DACT-BERT and DeeBERT.

Reference early-exit code (DeeBERT, PABEE) only works at batch size 1: a batch runs until its slowest
example halts. Here examples that have halted *leave the batch between blocks*:

  1. the embeddings run once on the whole (padded) batch;
  2. blocks run one at a time; each block step is one jitted function of (one block's params, that
     block's exit head, hidden, mask, per-example exit state) that is compiled once per *batch size*
     (the block's params are an argument, not a static index, so all blocks share the compilation);
  3. after block n an *exit rule* (a pure function, see `ExitRule`) returns each example's new state,
     whether it halts, and its output; halted examples' outputs and exit layers are recorded on the host;
  4. the still-running examples are compacted with a device-side gather into the smallest allowed batch
     size that holds them (`batch_sizes`: powers of two up to `granularity`, then multiples of it), so
     the compute of block n+1 falls with the number of examples still running.

With granularity g the padding waste is < g rows per block, so the wall-clock saving tracks the fraction
of layers saved (benchmarked in `scripts/bench_dact.py`). Every example's exit layer (1-based) and its
output at exit are returned; the result does not depend on the batch composition (tested against the
same rule run one example at a time and against an all-layers oracle).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import embed, layer_params, run_layers, shared_block_params, word_embeddings
from jaxattr.types import Array

PyTree = Any

# rule(exit_params_n, cls_n [B, H], state (pytree of [B, ...]), n (int32 scalar, 0-based block index),
#      rule_args (pytree), cfg) -> (new state, done [B] bool, output [B, C] float32)
ExitRule = Callable[[PyTree, Array, PyTree, Array, PyTree, EncoderConfig], tuple[PyTree, Array, Array]]


@dataclasses.dataclass(frozen=True)
class ExitResult:
    """Per-example results of an early-exit run (numpy, in input order)."""

    exit_layer: np.ndarray  # [B] int: the block (1..L) after which the example halted
    output: np.ndarray  # [B, C] the rule's output at exit (DACT: a_n; DeeBERT: off-ramp probabilities)
    rows_per_layer: np.ndarray  # [L] batch rows computed in each block (incl. padding), summed over calls

    @property
    def prediction(self) -> np.ndarray:
        return self.output.argmax(-1)


def batch_sizes(max_size: int, granularity: int = 8) -> list[int]:
    """Allowed batch sizes: powers of two below `granularity`, then multiples of it, up to `max_size`."""
    if max_size < 1 or granularity < 1:
        raise ValueError("max_size and granularity must be >= 1")
    sizes = []
    s = 1
    while s < min(granularity, max_size):
        sizes.append(s)
        s *= 2
    s = granularity
    while s < max_size:
        sizes.append(s)
        s += granularity
    sizes.append(max_size)
    return sorted(set(sizes))


def _pick(sizes: list[int], m: int) -> int:
    for s in sizes:
        if s >= m:
            return s
    return sizes[-1]


def split_layers(tree: PyTree, num_layers: int) -> list[PyTree]:
    """A pytree stacked on a leading [L] axis -> L pytrees each with a leading axis of 1 (host-side, once)."""
    return [jax.tree.map(lambda x, i=i: x[i:i + 1], tree) for i in range(num_layers)]


def _block_step(block_p: PyTree, exit_p: PyTree, hidden: Array, mask: Array, state: PyTree, n: Array,
                rule_args: PyTree, *, cfg: EncoderConfig, rule: ExitRule) -> tuple[Array, PyTree, Array, Array]:
    # n: the block index (ModernBERT's block type depends on it)
    out = run_layers(block_p, cfg.unshared(), hidden, mask, start=0, stop=1, layer_offset=n)
    exit_n = jax.tree.map(lambda x: x[0], exit_p)
    state, done, output = rule(exit_n, out.cls[0], state, n, rule_args, cfg)
    return out.hidden, state, done, output


_block_step_jit = jax.jit(_block_step, static_argnames=("cfg", "rule"))


@jax.jit
def _gather(tree: PyTree, idx: Array) -> PyTree:
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), tree)


def _embed(params: PyTree, cfg: EncoderConfig, input_ids: Array, mask: Array, token_type_ids: Array) -> Array:
    return embed(params, cfg, word_embeddings(params, cfg, input_ids), mask, token_type_ids)


_embed_jit = jax.jit(_embed, static_argnames=("cfg",))


def run_early_exit(encoder_params: PyTree, cfg: EncoderConfig, batch: Mapping[str, Any], exit_params: PyTree,
                   rule: ExitRule, init_state: PyTree, rule_args: PyTree = None, *, granularity: int = 8,
                   compact: bool = True, max_batch: int | None = None, layers: list[PyTree] | None = None,
                   exits: list[PyTree] | None = None) -> ExitResult:
    """Run one batch block by block; halted examples leave the batch between blocks.

    `exit_params` is stacked on a leading [L] axis (one exit head per block); `init_state` is the exit
    state per example ([B, ...] leaves) before block 1. `compact=False` keeps halted rows in the batch
    (the reference behaviour: same outputs, no saving). `max_batch` fixes the set of batch sizes across
    calls (so a dataset's last, partial batch reuses the compiled sizes). `layers`/`exits` are
    `split_layers` results, for callers that run many batches (saves re-slicing the params every call).
    """
    ids = np.asarray(batch["input_ids"])
    b, _ = ids.shape
    if b == 0:
        raise ValueError("empty batch")
    num_layers = cfg.num_layers
    layers = layers if layers is not None else split_layers(layer_params(encoder_params, cfg), num_layers)
    exits = exits if exits is not None else split_layers(exit_params, num_layers)
    shared = shared_block_params(encoder_params)  # DeBERTa's relative embeddings, read by every block
    top = max(b, max_batch or b)
    sizes = batch_sizes(top, granularity) if compact else [b]
    size = _pick(sizes, b)
    mask = np.asarray(batch["attention_mask"])
    tt = batch.get("token_type_ids")
    tt = np.zeros_like(ids) if tt is None else np.asarray(tt)
    pad = np.concatenate([np.arange(b), np.zeros(size - b, np.int64)])  # pad with copies of row 0
    hidden = _embed_jit(encoder_params, cfg, jnp.asarray(ids[pad]), jnp.asarray(mask[pad]), jnp.asarray(tt[pad]))
    mask_d = jnp.asarray(mask[pad])
    state = _gather(jax.tree.map(jnp.asarray, init_state), jnp.asarray(pad))
    orig = np.where(np.arange(size) < b, np.arange(size), -1)  # position in batch -> input index (-1: padding)
    exit_layer = np.zeros(b, np.int64)
    output: np.ndarray | None = None
    rows = np.zeros(num_layers, np.int64)
    for n in range(num_layers):
        rows[n] = size
        block_p = {**shared, "layers": layers[n]}
        hidden, state, done, out = _block_step_jit(block_p, exits[n], hidden, mask_d, state, jnp.int32(n),
                                                   rule_args, cfg=cfg, rule=rule)
        live = orig >= 0
        done_h = np.asarray(done) | (n == num_layers - 1)
        finishing = live & done_h
        if finishing.any():
            out_h = np.asarray(out)
            if output is None:
                output = np.zeros((b,) + out_h.shape[1:], out_h.dtype)
            output[orig[finishing]] = out_h[finishing]
            exit_layer[orig[finishing]] = n + 1
            orig = np.where(finishing, -1, orig)
        m = int((orig >= 0).sum())
        if m == 0:
            break
        new_size = _pick(sizes, m)
        if new_size < size:
            keep = np.nonzero(orig >= 0)[0]
            idx = np.concatenate([keep, np.full(new_size - m, keep[0])])
            hidden, mask_d, state = _gather((hidden, mask_d, state), jnp.asarray(idx))
            orig = np.concatenate([orig[keep], np.full(new_size - m, -1)])
            size = new_size
    assert output is not None and (exit_layer > 0).all()
    return ExitResult(exit_layer, output, rows)


def run_one_by_one(encoder_params: PyTree, cfg: EncoderConfig, batch: Mapping[str, Any], exit_params: PyTree,
                   rule: ExitRule, init_state: PyTree, rule_args: PyTree = None) -> ExitResult:
    """The batch-size-1 reference (what DeeBERT/PABEE code does): each example alone, same rule."""
    b = np.asarray(batch["input_ids"]).shape[0]
    layers = split_layers(layer_params(encoder_params, cfg), cfg.num_layers)
    exits = split_layers(exit_params, cfg.num_layers)
    results = []
    for i in range(b):
        one = {k: np.asarray(v)[i:i + 1] for k, v in batch.items() if v is not None}
        st = jax.tree.map(lambda x, i=i: np.asarray(x)[i:i + 1], init_state)
        results.append(run_early_exit(encoder_params, cfg, one, exit_params, rule, st, rule_args,
                                      layers=layers, exits=exits))
    return ExitResult(np.concatenate([r.exit_layer for r in results]),
                      np.concatenate([r.output for r in results]),
                      np.sum([r.rows_per_layer for r in results], axis=0))


def never_exit_rule(exit_p: PyTree, cls: Array, state: PyTree, n: Array, rule_args: PyTree,
                    cfg: EncoderConfig) -> tuple[PyTree, Array, Array]:
    """The full model run the same way (block by block, nobody halts); output = the [CLS] state."""
    return state, jnp.zeros(cls.shape[0], bool), cls.astype(jnp.float32)


def run_dataset(examples: Sequence[Mapping[str, Any]], batch_size: int, run_batch: Callable[..., ExitResult],
                *, pad_id: int = 0, desc: str = "early exit") -> tuple[ExitResult, np.ndarray]:
    """`run_batch(batch, max_batch=batch_size)` over tokenised examples (length-bucketed, with progress).

    Returns the merged `ExitResult` in example order and the examples' labels.
    """
    from tqdm.auto import tqdm

    from jaxattr.data.datasets import iter_batches

    n = len(examples)
    if n == 0:
        raise ValueError("no examples")
    exit_layer = np.zeros(n, np.int64)
    output: np.ndarray | None = None
    rows: np.ndarray | None = None
    labels = np.zeros(n, np.float64)
    with tqdm(total=n, desc=desc, unit="ex", leave=False) as bar:
        for idx, batch in iter_batches(examples, batch_size, pad_id=pad_id):
            r = run_batch(batch, max_batch=batch_size)
            if output is None:
                output = np.zeros((n,) + r.output.shape[1:], r.output.dtype)
                rows = np.zeros_like(r.rows_per_layer)
            exit_layer[idx], output[idx] = r.exit_layer, r.output
            rows += r.rows_per_layer
            labels[idx] = batch["labels"]
            bar.update(len(idx))
    return ExitResult(exit_layer, output, rows), labels
