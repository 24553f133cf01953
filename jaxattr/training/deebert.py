"""DeeBERT (Xin et al., 2020): off-ramp classifiers after every block, two-stage training, entropy exit.

Off-ramp i (blocks 1..L-1) is DeeBERT's `BertHighway`: a pooler (dense + tanh) and a classifier on that
block's [CLS] state, with dropout between; this is exactly the structure of the encoder's own
classification head (`jaxattr.models.encoder.head_module`, per family), so off-ramps reuse that module.
Block L's exit is the model's final classifier itself, as in DeeBERT. (ModernBERT: every exit normalises
the [CLS] state with its own copy of final_norm; a mean-pooling head is refused, as its exits would not
read the rows the model's head reads.)

Training (DeeBERT's two stages, both through the training engine):
  stage 1: fine-tune the backbone and the final classifier (plain fine-tuning, `engine.default_loss_fn`);
  stage 2: freeze those and train the off-ramps: loss = sum over i = 1..L-1 of cross-entropy(ramp_i).
           The backbone is frozen twice over: `stop_gradient` in `ramp_loss` (no backward pass through
           it) and `stage2_optimizer`, which zeroes the updates of `encoder` (so weight decay cannot
           move it either).
Inference: exit after block i when the entropy (natural log) of ramp i's softmax is below the threshold
S; block L always exits. Batched with the same compaction engine as DACT (`early_exit`).

Parameters: `{"encoder": <encoder params incl. head>, "ramps": <Head params stacked on [L-1]>}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import forward, head_module
from jaxattr.training import early_exit
from jaxattr.training.engine import Method
from jaxattr.types import Array, Params


def init_ramps(cfg: EncoderConfig, key: Array) -> Params:
    """Fresh off-ramps for blocks 1..L-1 (BERT initialisation), stacked on a leading [L-1] axis."""
    if cfg.num_layers < 2:
        raise UserError("DeeBERT needs at least 2 layers (off-ramps sit after blocks 1..L-1)")
    if not cfg.head_reads_cls_only:
        raise UserError("DeeBERT's exits read each block's [CLS] state; a mean-pooling head is not supported")
    init = lambda k: head_module(cfg).init(k, jnp.zeros((1, cfg.hidden_size)))["params"]
    return jax.vmap(init)(jax.random.split(key, cfg.num_layers - 1))


def init_params(cfg: EncoderConfig, encoder_params: Params, key: Array) -> Params:
    """`{"encoder": encoder_params, "ramps": init_ramps(...)}` (encoder_params: the stage-1 model)."""
    return {"encoder": encoder_params, "ramps": init_ramps(cfg, key)}


def exit_heads(params: Params) -> Params:
    """All L exits stacked: the L-1 off-ramps, then the final classifier (the engine's exit params)."""
    return jax.tree.map(lambda r, h: jnp.concatenate([r, h[None]]), params["ramps"], params["encoder"]["head"])


def ramp_logits(params: Params, cfg: EncoderConfig, input_ids: Array, attention_mask: Array,
                token_type_ids: Array | None = None, *, freeze_backbone: bool = True, deterministic: bool = True,
                rng: Array | None = None) -> Array:
    """Every exit's logits [L, B, C] (blocks 1..L-1: off-ramps; block L: the final classifier)."""
    k_enc, k_ramp = (None, None) if deterministic else tuple(jax.random.split(rng))
    enc = forward(params["encoder"], cfg, input_ids, attention_mask, token_type_ids,
                  deterministic=deterministic, rng=k_enc)
    cls = jax.lax.stop_gradient(enc.cls) if freeze_backbone else enc.cls
    heads = exit_heads(params)
    keys = (jnp.zeros((cfg.num_layers, 2), jnp.uint32) if deterministic
            else jax.random.split(k_ramp, cfg.num_layers))

    def one(hp, c, k):
        return head_module(cfg).apply({"params": hp}, c, deterministic=deterministic,
                               rngs=None if deterministic else {"dropout": k})

    return jax.vmap(one)(heads, cls, keys)


def ramp_loss(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, deterministic: bool = True,
              rng: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Stage 2 loss: sum over off-ramps 1..L-1 of the weighted-mean cross-entropy (backbone frozen).

    aux: per-ramp accuracy [L] is not a scalar, so it is returned per example as `ramp_logits`
    ([B, L, C], batch axis first) plus the scalar `ramp_accuracy_mean`.
    """
    if cfg.problem_type == "regression":
        raise UserError("DeeBERT's entropy exit needs classes; regression is not supported")
    logits = ramp_logits(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                         deterministic=deterministic, rng=rng)
    labels = batch["labels"].astype(jnp.int32)
    weight = batch.get("weight")
    weight = jnp.ones(labels.shape[0], jnp.float32) if weight is None else weight.astype(jnp.float32)
    wsum = jnp.maximum(jnp.sum(weight), 1e-12)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:-1], labels[None])  # [L-1, B]
    total = jnp.sum(ce * weight) / wsum
    acc = jnp.sum((logits[:-1].argmax(-1) == labels[None]) * weight) / wsum / (cfg.num_layers - 1)
    return total, {"ramp_accuracy_mean": acc, "ramp_logits": jnp.moveaxis(logits, 0, 1)}


def make_stage2_loss_fn(cfg: EncoderConfig) -> Callable[..., tuple[Array, dict]]:
    """`loss_fn(params, batch, rng, deterministic)` for the engine (stage 2: off-ramps only)."""
    def loss_fn(params: Params, batch: Mapping[str, Array], rng: Array, deterministic: bool):
        return ramp_loss(params, cfg, batch, deterministic=deterministic, rng=rng)

    return loss_fn


def stage2_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the off-ramps, zero updates on the frozen encoder (and its final classifier)."""
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                 lambda params: {"encoder": jax.tree.map(lambda _: "freeze", params["encoder"]),
                                                 "ramps": jax.tree.map(lambda _: "train", params["ramps"])})


def entropy(probs: Array) -> Array:
    """Shannon entropy (nats) of each row of probabilities."""
    return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def exit_rule(head: Params, cls: Array, state: Params, n: Array, rule_args: Params,
              cfg: EncoderConfig) -> tuple[Params, Array, Array]:
    """DeeBERT's rule for `early_exit.run_early_exit`: exit when the exit's entropy < threshold."""
    probs = jax.nn.softmax(head_module(cfg).apply({"params": head}, cls), axis=-1)
    return state, entropy(probs) < rule_args["threshold"], probs


def predict_early_exit(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], threshold: float, *,
                       granularity: int = 8, compact: bool = True, one_by_one: bool = False,
                       max_batch: int | None = None, layers: list | None = None,
                       exits: list | None = None) -> early_exit.ExitResult:
    """Entropy-threshold early exit, batched (halted examples leave the batch between blocks).

    Output = the exit's class probabilities; threshold 0 never exits early (the full model).
    """
    if cfg.problem_type == "regression":
        raise UserError("DeeBERT's entropy exit needs classes; regression is not supported")
    if threshold < 0:
        raise UserError(f"entropy threshold must be >= 0, got {threshold}")
    b = np.asarray(batch["input_ids"]).shape[0]
    state = {"_": np.zeros((b,), np.float32)}
    args = {"threshold": jnp.float32(threshold)}
    heads = exit_heads(params)
    if one_by_one:
        return early_exit.run_one_by_one(params["encoder"], cfg, batch, heads, exit_rule, state, args)
    return early_exit.run_early_exit(params["encoder"], cfg, batch, heads, exit_rule, state, args,
                                     granularity=granularity, compact=compact, max_batch=max_batch,
                                     layers=layers, exits=exits)


def oracle_exit(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any],
                threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """All-blocks reference: each example's first exit with entropy < threshold (1-based) and its probabilities."""
    logits = ramp_logits(params, cfg, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                         None if batch.get("token_type_ids") is None else jnp.asarray(batch["token_type_ids"]))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    ok = np.asarray(entropy(jnp.asarray(probs))) < threshold
    ok[-1] = True
    first = ok.argmax(0)
    return first + 1, probs[first, np.arange(probs.shape[1])]


# ----------------------------------------------------------------------------------------------
# Training through the engine (stage 2), saving/loading the off-ramps next to the encoder checkpoint.

RAMPS_FILE = "deebert_ramps.npz"


def save_ramps(model_dir: str | Path, ramps: Params) -> Path:
    """Write the off-ramps as `model_dir/deebert_ramps.npz` (the encoder is a normal jaxattr checkpoint)."""
    path = Path(model_dir) / RAMPS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = jax.tree_util.tree_flatten_with_path(ramps)[0]
    np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v, np.float32) for k, v in flat})
    return path


def load(model_dir: str | Path) -> tuple[Any, Params]:
    """(Model, DeeBERT params `{"encoder", "ramps"}`) from a `train/dact.py` DeeBERT model directory."""
    from jaxattr.models.loading import load_model

    path = Path(model_dir) / RAMPS_FILE
    if not path.exists():
        raise UserError(f"{model_dir}: no {RAMPS_FILE}; train DeeBERT off-ramps first (train/dact.py)")
    model = load_model(model_dir)
    want = init_ramps(model.cfg, jax.random.key(0))
    paths, treedef = jax.tree_util.tree_flatten_with_path(want)
    with np.load(path) as z:
        keys = [jax.tree_util.keystr(k) for k, _ in paths]
        if set(keys) != set(z.files) or any(z[k].shape != v.shape for k, (_, v) in zip(keys, paths)):
            raise UserError(f"{path}: off-ramps do not fit the model in {model_dir}")
        ramps = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(z[k]) for k in keys])
    return model, {"encoder": model.params, "ramps": ramps}


def make_method(cfg: Any, model: Any) -> Method:
    """The trainer hook for `method: deebert` (DeeBERT stage 2: train off-ramps, backbone frozen).

    The starting model must be the stage-1 fine-tuned checkpoint (`train/dact.py` runs both stages).
    Dev metrics during training are those of the ramps' averaged log-probabilities (a training monitor);
    the final model directory holds the unchanged encoder checkpoint plus `deebert_ramps.npz`.
    """
    mcfg = model.cfg.replace(dtype=cfg.dtype)
    params = init_params(mcfg, model.params, jax.random.key(cfg.seed + 2))
    out_dir = Path(cfg.output_dir) / "model"
    base = make_stage2_loss_fn(mcfg)

    def loss_fn(p: Params, batch: Mapping[str, Array], rng: Array, deterministic: bool):
        total, aux = base(p, batch, rng, deterministic)
        ramps = aux.pop("ramp_logits")[:, :-1]
        aux["logits"] = jnp.mean(jax.nn.log_softmax(ramps, axis=-1), axis=1)
        return total, aux

    def export(p: Params) -> Params:
        save_ramps(out_dir, jax.device_get(p["ramps"]))
        return p["encoder"]

    return Method(params, loss_fn, {"plain": None}, lambda e: "plain", export, optimizer=stage2_optimizer)
