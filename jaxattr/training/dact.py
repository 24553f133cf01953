"""DACT-BERT (differentiable adaptive computation time for BERT): halting heads, accumulation, loss, early exit.

After every block n a DACT module reads that block's [CLS] state:
  y_n = softmax(W_n cls_n + c_n)          (class probabilities; regression: y_n = W_n cls_n + c_n, a scalar)
  h_n = sigmoid(w_n . cls_n + b_n)        (the halting value, a perceptron on [CLS])
and the outputs are accumulated (paper eqs. 1-2, DESIGN §3):
  a_0 = 0, p_0 = 1,  a_n = y_n p_{n-1} + a_{n-1} (1 - p_{n-1}),  p_n = h_n p_{n-1}.
The model's output is a_N. Training loss = task loss on a_N + tau * ponder cost.

Notes where the sources differ or are silent (documented decisions):
  * Ponder cost. Default `ponder="h"`: the DACT-BERT paper's eq. 3, tau * sum_n h_n, chosen by the paper
    "in contrast to" the original DACT's sum_n p_n (n = 1..N), which is `ponder="p"`.
  * Last layer's halting. Neither source forces h_N: it never enters a_N (a_N uses p_0..p_{N-1}), so it
    only feeds the ponder cost, which drives it towards 0; at inference the bound is trivially true at
    n = N (d = 0), i.e. every example stops after block N at the latest. We keep h_N for uniformity.
  * Classification loss: a_N is a convex combination of softmax outputs (a probability vector), so the
    task loss is the negative log-likelihood -log a_N[label] (what cross-entropy on a_N means).
  * Regression: y_n is a scalar and a_N (the same convex combination) is the prediction; task loss is the
    mean squared error. The paper's class bound does not apply; we stop when d * p_n <= `regression_tol`,
    which bounds the change still possible: |a_N - a_n| <= d p_n max_k |y_{k+1} - a_k| (since p_k <= p_n).
  * Dropout (training only) is applied to cls_n before both heads, with the encoder's hidden dropout rate.

Inference (paper eq. 4): stop after block n when a_n[c*] (1 - p_n)^d >= a_n[c_ru] + p_n d, d = N - n,
c* the top class and c_ru the runner-up. Because p is non-increasing and y_n >= 0 sums to 1,
a_N[c*] >= a_n[c*] (1 - p_n)^d and a_N[c] <= a_n[c] + d p_n for every c, so the class predicted at
exit equals argmax a_N of the full network (tested on many random models).

Parameters: `{"encoder": <encoder params>, "dact": {"cls": {"kernel" [L,H,C], "bias" [L,C]},
"halt": {"kernel" [L,H], "bias" [L]}}}`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.data.batch import token_mask
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import forward, word_embeddings
from jaxattr.training import early_exit
from jaxattr.training.config import register_section
from jaxattr.training.engine import Method
from jaxattr.types import Array, Params

TAU = 5e-3
PONDERS = ("h", "p")


@register_section("dact", renamed={"dact_tau": "tau", "dact_ponder": "ponder", "dact_halt_bias": "halt_bias"})
@dataclasses.dataclass(frozen=True)
class DactConfig:
    """DACT settings for `method: dact` (the `dact:` section of a TrainConfig; see the module notes)."""

    tau: float = TAU  # ponder-cost weight
    ponder: str = "h"  # h: sum_n h_n (DACT-BERT eq. 3, the default) | p: sum_n p_n (original DACT)
    halt_bias: float = 0.0  # initial bias of the halting units

    def validate(self) -> DactConfig:
        """Raise a one-line UserError for a bad setting; return self."""
        if self.ponder not in PONDERS:
            raise UserError(f"dact.ponder must be 'p' or 'h', got {self.ponder!r}")
        return self


def init_dact(cfg: EncoderConfig, key: Array, *, halt_bias: float = 0.0, cls_std: float = 0.02,
              halt_std: float = 0.02) -> Params:
    """Fresh DACT heads for every block (N(0, std) kernels, zero class bias, `halt_bias` on the halting unit)."""
    k1, k2 = jax.random.split(key)
    L, H, C = cfg.num_layers, cfg.hidden_size, cfg.num_labels
    return {
        "cls": {"kernel": cls_std * jax.random.normal(k1, (L, H, C), jnp.float32),
                "bias": jnp.zeros((L, C), jnp.float32)},
        "halt": {"kernel": halt_std * jax.random.normal(k2, (L, H), jnp.float32),
                 "bias": jnp.full((L,), halt_bias, jnp.float32)},
    }


def init_params(cfg: EncoderConfig, encoder_params: Params, key: Array, **kwargs: Any) -> Params:
    """`{"encoder": encoder_params, "dact": init_dact(...)}`: the pytree the DACT loss and inference take."""
    return {"encoder": encoder_params, "dact": init_dact(cfg, key, **kwargs)}


def head_outputs(head: Params, cls: Array, cfg: EncoderConfig) -> tuple[Array, Array]:
    """One block's DACT module on [CLS] ([B, H]): (y [B, C] probabilities or [B, 1] regression value, h [B])."""
    x = cls.astype(jnp.float32)
    z = x @ head["cls"]["kernel"] + head["cls"]["bias"]
    y = z if cfg.problem_type == "regression" else jax.nn.softmax(z, axis=-1)
    h = jax.nn.sigmoid(x @ head["halt"]["kernel"] + head["halt"]["bias"])
    return y, h


def update(a: Array, p: Array, y: Array, h: Array) -> tuple[Array, Array]:
    """One accumulation step: a_n = y_n p_{n-1} + a_{n-1} (1 - p_{n-1}), p_n = h_n p_{n-1}."""
    return y * p[:, None] + a * (1.0 - p[:, None]), h * p


def accumulate(y: Array, h: Array) -> tuple[Array, Array]:
    """All blocks' accumulators from y [L, B, C] and h [L, B]: (a [L, B, C], p [L, B]) for n = 1..L."""
    def step(carry, yh):
        a, p = update(*carry, *yh)
        return (a, p), (a, p)

    init = (jnp.zeros_like(y[0]), jnp.ones_like(h[0]))
    _, (a, p) = jax.lax.scan(step, init, (y, h))
    return a, p


def halting_condition(a: Array, p: Array, d: Array | int, cfg: EncoderConfig,
                      regression_tol: float | Array = 1e-2) -> Array:
    """Whether each example may stop after a block with `d` blocks left (paper eq. 4; see module notes)."""
    d = jnp.asarray(d, jnp.float32)
    if cfg.problem_type == "regression":
        return d * p <= regression_tol
    top2 = jax.lax.top_k(a, 2)[0]
    return top2[:, 0] * jnp.power(1.0 - p, d) >= top2[:, 1] + p * d


class DactOutput(NamedTuple):
    a: Array  # [L, B, C] accumulated output after each block (a[-1] = a_N, the model's output)
    p: Array  # [L, B] p_n
    y: Array  # [L, B, C] per-block outputs y_n
    h: Array  # [L, B] halting values h_n
    cls: Array  # [L, B, H] every block's [CLS] state (before dropout) the heads read

    @property
    def output(self) -> Array:
        return self.a[-1]


def apply(params: Params, cfg: EncoderConfig, input_ids: Array | None, attention_mask: Array,
          token_type_ids: Array | None = None, *, word_embeds: Array | None = None, deterministic: bool = True,
          rng: Array | None = None) -> DactOutput:
    """All blocks (no early exit): the training-time computation, differentiable in params and word_embeds."""
    k_enc, k_drop = (None, None) if deterministic else tuple(jax.random.split(rng))
    enc = forward(params["encoder"], cfg, input_ids, attention_mask, token_type_ids, word_embeds=word_embeds,
                  deterministic=deterministic, rng=k_enc)
    cls = cls_in = enc.cls.astype(jnp.float32)
    if not deterministic and cfg.dropout_rate > 0:
        keep = jax.random.bernoulli(k_drop, 1.0 - cfg.dropout_rate, cls.shape)
        cls = jnp.where(keep, cls / (1.0 - cfg.dropout_rate), 0.0)
    y, h = jax.vmap(lambda hd, c: head_outputs(hd, c, cfg))(params["dact"], cls)
    a, p = accumulate(y, h)
    return DactOutput(a, p, y, h, cls_in)


apply_jit = jax.jit(apply, static_argnames=("cfg", "deterministic"))


def loss(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, tau: float = TAU, ponder: str = "h",
         deterministic: bool = True, rng: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """DACT loss = task loss on a_N + tau * ponder cost, a weighted mean over the batch.

    `batch` has `input_ids`, `attention_mask`, optional `token_type_ids`, `labels` (int classes, or float
    targets for regression) and optional `weight` (0 on filler rows; default 1). aux: the two parts,
    accuracy, the expected number of blocks (1 + sum_{n<N} p_n) and per-example `logits` = log a_N.
    """
    if ponder not in ("p", "h"):
        raise ValueError(f"ponder must be 'p' (sum of p_n, DACT code) or 'h' (sum of h_n, paper eq. 3), not {ponder!r}")
    out = apply(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                deterministic=deterministic, rng=rng)
    labels = batch["labels"]
    weight = batch.get("weight")
    weight = jnp.ones(labels.shape[0], jnp.float32) if weight is None else weight.astype(jnp.float32)
    wmean = lambda v: jnp.sum(v * weight) / jnp.maximum(jnp.sum(weight), 1e-12)
    a_n = out.output
    if cfg.problem_type == "regression":
        task = wmean((a_n[:, 0] - labels.astype(jnp.float32)) ** 2)
        acc = jnp.zeros(())
        logits = a_n
    else:
        picked = jnp.take_along_axis(a_n, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
        task = wmean(-jnp.log(jnp.clip(picked, 1e-12, None)))
        acc = wmean((a_n.argmax(-1) == labels).astype(jnp.float32))
        logits = jnp.log(jnp.clip(a_n, 1e-12, None))
    cost = wmean(jnp.sum(out.p if ponder == "p" else out.h, axis=0))
    total = task + tau * cost
    return total, {"task_loss": task, "ponder": cost, "accuracy": acc,
                   "expected_layers": wmean(1.0 + jnp.sum(out.p[:-1], axis=0)), "logits": logits}


def make_loss_fn(cfg: EncoderConfig, *, tau: float = TAU, ponder: str = "h") -> Callable[..., tuple[Array, dict]]:
    """`loss_fn(params, batch, rng, deterministic) -> (loss, aux)` for the training engine."""
    def loss_fn(params: Params, batch: Mapping[str, Array], rng: Array, deterministic: bool):
        return loss(params, cfg, batch, tau=tau, ponder=ponder, deterministic=deterministic, rng=rng)

    return loss_fn


# ----------------------------------------------------------------------------------------------
# Inference with early exit.


def exit_rule(head: Params, cls: Array, state: Params, n: Array, rule_args: Params,
              cfg: EncoderConfig) -> tuple[Params, Array, Array]:
    """The DACT exit rule for `early_exit.run_early_exit`: accumulate, then test the halting bound."""
    y, h = head_outputs(head, cls, cfg)
    a, p = update(state["a"], state["p"], y, h)
    done = halting_condition(a, p, cfg.num_layers - 1 - n, cfg, rule_args["regression_tol"])
    return {"a": a, "p": p}, done, a


def init_state(cfg: EncoderConfig, batch_size: int) -> Params:
    """a_0 = 0, p_0 = 1 for every example."""
    return {"a": np.zeros((batch_size, cfg.num_labels), np.float32), "p": np.ones((batch_size,), np.float32)}


def predict_early_exit(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], *, granularity: int = 8,
                       compact: bool = True, regression_tol: float = 1e-2, one_by_one: bool = False,
                       max_batch: int | None = None, layers: list | None = None,
                       exits: list | None = None) -> early_exit.ExitResult:
    """DACT inference with the halting bound, batched: halted examples leave the batch between blocks.

    Returns each example's exit layer (1..L) and a_n at exit (`.prediction` = its class). `one_by_one`
    runs the batch-size-1 reference instead (for tests and comparisons).
    """
    b = np.asarray(batch["input_ids"]).shape[0]
    args = {"regression_tol": jnp.float32(regression_tol)}
    if one_by_one:
        return early_exit.run_one_by_one(params["encoder"], cfg, batch, params["dact"], exit_rule,
                                         init_state(cfg, b), args)
    return early_exit.run_early_exit(params["encoder"], cfg, batch, params["dact"], exit_rule, init_state(cfg, b),
                                     args, granularity=granularity, compact=compact, max_batch=max_batch,
                                     layers=layers, exits=exits)


def oracle_exit(out: DactOutput, cfg: EncoderConfig, regression_tol: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """From an all-blocks `apply` output: each example's first block where the bound holds (1-based) and a_n there.

    The all-layers reference for the batched early exit (no compaction, no per-block jit).
    """
    L = cfg.num_layers
    ok = np.stack([np.asarray(halting_condition(out.a[n], out.p[n], L - 1 - n, cfg, regression_tol))
                   for n in range(L)])
    ok[-1] = True
    first = ok.argmax(0)
    a = np.asarray(out.a)
    return first + 1, a[first, np.arange(a.shape[1])]


# ----------------------------------------------------------------------------------------------
# Training through the engine, and saving/loading the heads next to the encoder checkpoint.

HEADS_FILE = "dact_heads.npz"


def save_heads(model_dir: str | Path, dact_params: Params, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the DACT heads as `model_dir/dact_heads.npz` (the encoder is a normal jaxattr checkpoint)."""
    path = Path(model_dir) / HEADS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{part}.{k}": np.asarray(v, np.float32) for part, d in dact_params.items() for k, v in d.items()}
    np.savez(path, **flat, _meta=np.asarray(json.dumps(dict(meta or {}))))
    return path


def load(model_dir: str | Path) -> tuple[Any, Params]:
    """(Model, DACT params `{"encoder", "dact"}`) from a `train/dact.py` output model directory."""
    from jaxattr.models.loading import load_model

    path = Path(model_dir) / HEADS_FILE
    if not path.exists():
        raise UserError(f"{model_dir}: no {HEADS_FILE}; train a DACT model first (train/dact.py)")
    model = load_model(model_dir)
    with np.load(path) as z:
        dact_p: dict[str, dict[str, Array]] = {}
        for key in z.files:
            if key == "_meta":
                continue
            part, name = key.split(".")
            dact_p.setdefault(part, {})[name] = jnp.asarray(z[key])
    want = init_dact(model.cfg, jax.random.key(0))
    if jax.tree.map(np.shape, want) != jax.tree.map(np.shape, dact_p):
        raise UserError(f"{path}: DACT heads do not fit the model in {model_dir}")
    return model, {"encoder": model.params, "dact": dact_p}


def make_method(cfg: Any, model: Any) -> Method:
    """The trainer hook for `method: dact` (stage 2): DACT heads + backbone trained jointly.

    The starting model should be the stage-1 fine-tuned checkpoint (`train/dact.py` runs both stages).
    The final model directory holds the encoder checkpoint plus `dact_heads.npz`.
    """
    mcfg = model.cfg.replace(dtype=cfg.dtype)
    dcfg = cfg.dact.validate()
    params = init_params(mcfg, model.params, jax.random.key(cfg.seed + 1), halt_bias=dcfg.halt_bias)
    out_dir = Path(cfg.output_dir) / "model"

    def export(p: Params) -> Params:
        save_heads(out_dir, jax.device_get(p["dact"]), {"tau": dcfg.tau, "ponder": dcfg.ponder})
        return p["encoder"]

    return Method(params, make_loss_fn(mcfg, tau=dcfg.tau, ponder=dcfg.ponder), {"plain": None},
                  lambda e: "plain", export)


# ----------------------------------------------------------------------------------------------
# Interpretability (paper Fig. 4): Integrated Gradients of the output and of every halting value.


class DactAttribution(NamedTuple):
    """IG over word embeddings; scores are per token (0 on special tokens and padding)."""

    output_scores: Array  # [B, T] attribution of the output a_N[target] (regression: a_N)
    halt_scores: Array  # [L, B, T] attribution of each block's halting value h_n
    target: Array  # [B] class explained
    f_x: Array  # [L + 1, B] (a_N[target], h_1..h_L) at the input
    f_baseline: Array  # [L + 1, B] the same at the baseline
    delta: Array  # [L + 1, B] completeness gap: sum of scores - (F(x) - F(baseline))


def integrated_gradients(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, steps: int = 32,
                         method: str = "gausslegendre", baseline: str = "mask", mask_id: int | None = None,
                         pad_id: int | None = None, target: Array | None = None) -> DactAttribution:
    """IG of a_N[target] and of h_1..h_L with respect to the word embeddings, in one pass over the path.

    An adapter over `jaxattr.attribution.gradients` (whose IG explains the encoder's logits only): it
    reuses that module's quadrature rules, baselines and interpolation mask, and applies the IG path sum
    to the L + 1 DACT outputs (examples are independent, so one reverse pass per output serves the batch).
    """
    from jaxattr.attribution import gradients as G

    ids = jnp.asarray(batch["input_ids"])
    mask = jnp.asarray(batch["attention_mask"])
    tt = batch.get("token_type_ids")
    tt = None if tt is None else jnp.asarray(tt)
    base_ids, base_scale = G.baseline_ids(batch, baseline, mask_id, pad_id)
    interp = token_mask(batch).astype(jnp.float32)[..., None]
    x = word_embeddings(params["encoder"], cfg, ids)
    b = word_embeddings(params["encoder"], cfg, base_ids) * base_scale[..., None]
    diff = interp * (x - b)
    if target is None:
        a_x = apply(params, cfg, None, mask, tt, word_embeds=x).output
        target = jnp.zeros(ids.shape[0], jnp.int32) if cfg.problem_type == "regression" else a_x.argmax(-1)
    target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), ids.shape[:1])

    def outputs(e: Array) -> Array:  # [L + 1, B]
        o = apply(params, cfg, None, mask, tt, word_embeds=e)
        f = jnp.take_along_axis(o.output, target[:, None], axis=-1)[:, 0]
        return jnp.concatenate([f[None], o.h])

    alphas, weights = G.quadrature(method, steps)

    def step(acc: Array, aw: tuple[Array, Array]) -> tuple[Array, None]:
        alpha, w = aw
        jac = jax.jacrev(lambda e: outputs(e).sum(1))(x - (1.0 - alpha) * diff)  # [L + 1, B, T, E]
        return acc + w * jnp.sum(jac * diff[None], -1), None

    n_out = cfg.num_layers + 1
    scores, _ = jax.lax.scan(step, jnp.zeros((n_out,) + ids.shape, jnp.float32),
                             (jnp.asarray(alphas, jnp.float32), jnp.asarray(weights, jnp.float32)))
    f_x, f_b = outputs(x), outputs(x - diff)
    return DactAttribution(scores[0], scores[1:], target, f_x, f_b, scores.sum(-1) - (f_x - f_b))
