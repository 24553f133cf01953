"""The training engine: pure `train_step(state, batch)` / `eval_step(params, batch)`, each jitted once
over a device mesh (batch sharded on `data`, params and optimizer state replicated; sharding decided in
`jaxattr.sharding`), with the state donated, gradient accumulation and a pluggable loss.

Extension hooks (for DACT, DeeBERT and anything else that trains through this engine):

* `loss_fn(params, batch, rng, deterministic) -> (loss, aux)`: `params` may be any pytree (e.g. the
  encoder params plus extra halting heads), `batch` is a dict of arrays with a leading batch axis
  (`input_ids`, `attention_mask`, `token_type_ids`, `labels`, `weight` — 0 on filler rows — and
  optionally `attn_bias`), `loss` is a scalar weighted mean over the batch, `aux` a dict of arrays:
  scalars are logged as training metrics, and `eval_step` returns all of it (per-example arrays such as
  `logits` must keep the batch axis first; `LOSS_WEIGHT`, if given, is what the loss averages over).
  `default_loss_fn(cfg)` is cross-entropy (classification), MSE (regression) or the per-token
  cross-entropy of a token model (`labels` [B, T], `IGNORE` = -100 skipped) on `forward` logits,
  honouring `batch["attn_bias"]`.
* `transform(params, batch, rng) -> batch`: runs before the gradient is taken and computes no parameter
  gradient; AD-DROP is such a transform (it adds `attn_bias`). An `Engine` compiles one train step per
  named transform (`modes`), e.g. `{"plain": None, "addrop": addrop_transform}` for cross-tuning.

Multi-host: call `jaxattr.sharding.initialize_distributed()` first; `Engine.put_batch` takes the
global host batch and each process materialises only its own rows (`jax.make_array_from_process_local_data`).
This replaces `jax.pmap` (maintenance mode in JAX): one `jit` with shardings serves 1..N devices and hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxattr import sharding as shd
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import forward
from jaxattr.training.data import IGNORE
from jaxattr.training.state import Params, TrainState, init_state
from jaxattr.types import Batch

LossFn = Callable[[Params, Batch, jax.Array, bool], tuple[jax.Array, dict[str, jax.Array]]]
Transform = Callable[[Params, Batch, jax.Array], Batch]



@dataclasses.dataclass
class Method:
    """What a training method contributes to the engine (`jaxattr.training.trainer.build_method`, a method
    module's `make_method`)."""

    params: Any  # initial params (any pytree)
    loss_fn: LossFn
    modes: dict[str, Transform | None]  # one compiled train step per mode
    mode_for_epoch: Callable[[int], str]  # epoch (1-indexed) -> mode
    export: Callable[[Any], Any]  # params -> the encoder params written as the final model
    optimizer: Callable[[Any], Any] | None = None  # wraps the optimizer (e.g. DeeBERT stage 2 freezes the encoder)


# Keys of a host batch that go to the device (anything else, e.g. `word_ids`, stays on the host).
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "weight")
# An aux scalar a loss may return: what its mean is over (default: the batch's weight sum, i.e. its rows);
# a per-token loss gives its token count, so gradient accumulation and the eval loss average over tokens.
LOSS_WEIGHT = "loss_weight"


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """sum(w * v) / sum(w) (0 when every weight is 0: a batch of filler rows)."""
    w = weight.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1e-12)


def token_cross_entropy(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean cross-entropy over the labelled tokens, their count): HF `BertForTokenClassification`'s loss
    (`CrossEntropyLoss`, ignore_index -100 = `IGNORE`, averaged over the batch's labelled tokens); `logits`
    [B, T, C], `labels` [B, T], rows of `weight` 0 (filler) count for nothing."""
    labels = labels.astype(jnp.int32)
    w = (labels != IGNORE) * weight.astype(jnp.float32)[:, None]
    per = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), jnp.where(w > 0, labels, 0))
    return weighted_mean(per, w), jnp.sum(w)


def default_loss_fn(cfg: EncoderConfig) -> LossFn:
    """Cross-entropy (classification) or squared error (regression) of `forward` logits, weighted mean; a
    token model (`cfg.task == "token"`): `token_cross_entropy`, with its token count as `LOSS_WEIGHT`."""

    def loss_fn(params: Params, batch: Batch, rng: jax.Array, deterministic: bool):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                      attn_bias=batch.get("attn_bias"), deterministic=deterministic, rng=rng, cls_only=True)
        if cfg.task == "token":
            loss, count = token_cross_entropy(out.logits, batch["labels"], batch["weight"])
            return loss, {"logits": out.logits, LOSS_WEIGHT: count}
        if cfg.problem_type == "regression":
            per = (out.logits[:, 0] - batch["labels"].astype(jnp.float32)) ** 2
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(out.logits, batch["labels"].astype(jnp.int32))
        return weighted_mean(per, batch["weight"]), {"logits": out.logits}

    return loss_fn


def _split_micro(x: jax.Array, k: int) -> jax.Array:
    """[B, ...] -> [k, B/k, ...] taking every k-th row, so each device keeps its own rows."""
    return jnp.moveaxis(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 1, 0)


def make_train_step(tx: optax.GradientTransformation, loss_fn: LossFn, transform: Transform | None = None,
                    grad_accum: int = 1) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """A pure train step: (transform) -> loss -> gradient (accumulated over `grad_accum` micro-batches,
    weighted by what each averages over, `LOSS_WEIGHT` else its weight sum, so the result equals one big
    batch) -> optimizer update."""

    def grads_of(params: Params, mb: Batch, key: jax.Array):
        k_transform, k_loss = jax.random.split(key)
        if transform is not None:
            mb = transform(params, mb, k_transform)
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, mb, k_loss, False)
        scalars = {k: v.astype(jnp.float32) for k, v in aux.items() if jnp.ndim(v) == 0 and k != LOSS_WEIGHT}
        return loss, scalars, g, aux.get(LOSS_WEIGHT, jnp.sum(mb["weight"])).astype(jnp.float32)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        rng, key = jax.random.split(state.rng)
        if grad_accum == 1:
            loss, scalars, grads, _ = grads_of(state.params, batch, key)
        else:
            micro = jax.tree.map(lambda x: _split_micro(x, grad_accum), batch)
            keys = jax.random.split(key, grad_accum)
            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grads_of, state.params, first, keys[0])
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

            def body(carry, xs):
                loss_s, sc_s, g_s, w_s = carry
                loss, sc, g, w = grads_of(state.params, *xs)
                add = lambda a, b: a + w * b
                return (loss_s + w * loss, jax.tree.map(add, sc_s, sc), jax.tree.map(add, g_s, g), w_s + w), None

            (loss, scalars, grads, w), _ = jax.lax.scan(body, zeros, (micro, keys))
            inv = 1.0 / jnp.maximum(w, 1e-12)
            loss, scalars, grads = loss * inv, jax.tree.map(lambda x: x * inv, scalars), jax.tree.map(
                lambda x: x * inv, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **scalars}
        return TrainState(params, opt_state, state.step + 1, rng), metrics

    return train_step


def make_eval_step(loss_fn: LossFn) -> Callable[[Params, Batch], dict[str, jax.Array]]:
    """A pure eval step: the loss_fn in deterministic mode; returns its aux plus `loss`."""

    def eval_step(params: Params, batch: Batch) -> dict[str, jax.Array]:
        loss, aux = loss_fn(params, batch, jax.random.PRNGKey(0), True)
        return {**aux, "loss": loss}

    return eval_step


class Engine:
    """Compiles the steps once over a mesh and moves state and batches onto it.

    `modes` names the train-step variants (one compiled function each); "plain" uses no transform.
    """

    def __init__(self, tx: optax.GradientTransformation, loss_fn: LossFn, *, mesh: Mesh | None = None,
                 grad_accum: int = 1, modes: Mapping[str, Transform | None] | None = None) -> None:
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.tx, self.loss_fn, self.grad_accum = tx, loss_fn, grad_accum
        self.mesh = mesh if mesh is not None else shd.make_mesh()
        self.replicated = shd.replicated(self.mesh)
        self.batch_sharding = shd.batch_sharding(self.mesh)
        modes = dict(modes) if modes is not None else {"plain": None}
        self._train = {
            name: jax.jit(make_train_step(tx, loss_fn, transform, grad_accum),
                          in_shardings=(self.replicated, self.batch_sharding),
                          out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))
            for name, transform in modes.items()
        }
        self._eval = jax.jit(make_eval_step(loss_fn), in_shardings=(self.replicated, self.batch_sharding),
                             out_shardings=self.replicated)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self._train)

    def batch_multiple(self) -> int:
        """Global batch sizes must be a multiple of this (devices x accumulation steps)."""
        return self.mesh.size * self.grad_accum

    def replicate(self, tree: Any) -> Any:
        """Host pytree (identical on every process) -> replicated global arrays on the mesh."""

        def put(x: Any) -> jax.Array:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda idx: x[idx])

        return jax.tree.map(put, tree)

    def init_state(self, params: Params, seed: int) -> TrainState:
        """A fresh, replicated train state."""
        return self.replicate(jax.device_get(init_state(params, self.tx, seed)))

    def local_rows(self, global_batch_size: int) -> slice:
        """The rows of a global batch this process feeds (processes own contiguous slices)."""
        n = jax.process_count()
        per = global_batch_size // n
        return slice(jax.process_index() * per, (jax.process_index() + 1) * per)

    def put_batch(self, host_batch: Mapping[str, np.ndarray], global_batch_size: int | None = None) -> Batch:
        """A batch onto the mesh, sharded on `data`.

        Single process: `host_batch` is the global batch. Multi-process: it is this process's rows
        (`local_rows`) and `global_batch_size` the total; each process reads only its own data.
        """
        batch = {k: np.asarray(v) for k, v in host_batch.items() if k in BATCH_KEYS}
        if jax.process_count() == 1:
            return jax.device_put(batch, self.batch_sharding)
        if global_batch_size is None:
            raise ValueError("multi-process put_batch needs global_batch_size")
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v, (global_batch_size,) + v.shape[1:])
                for k, v in batch.items()}

    def train_step(self, state: TrainState, batch: Batch, mode: str = "plain") -> tuple[TrainState, dict[str, Any]]:
        """One update (the input state is donated: do not reuse it)."""
        return self._train[mode](state, batch)

    def eval_step(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        return self._eval(params, batch)
