"""A pure-functional BERT-family encoder (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT, DeBERTa-v2/v3,
ModernBERT) in Flax Linen.

Parameters are a plain pytree `{"embeddings", "layers", "head"}` with the layer parameters stacked on
a leading axis, so a range of layers is a slice (ALBERT's blocks share parameters: `layer_params`
expands its groups to one entry per block, and the gradient sums back onto the shared ones); the
blocks run under a fully unrolled `jax.lax.scan` (XLA then schedules across blocks and keeps no
stacked residual buffers: 10-15% faster on CPU than a rolled loop, for a compile time that grows with
depth). Every function here is pure
(`params, inputs -> outputs`) and can be wrapped in `jit`, `vmap` and `grad` by the caller.

Intervention points (all optional):
  * `word_embeds`: caller-supplied word embeddings (IG/SIG interpolate these; position and token-type
    embeddings are added by the encoder and never interpolated);
  * `after_layer=(l, fn)`: a transform of the hidden state after block l (IBA), and `run_layers`
    with `start`/`stop` to run a range of blocks from a given hidden state;
  * `attn_bias`: an additive bias on the attention scores per layer (AD-DROP's drop mask);
  * `attn_perturb`: an additive perturbation of the attention probabilities per layer; pass zeros and
    its gradient is dF/dA (AD-DROP's attribution);
  * every block's [CLS] state is returned (DACT, DeeBERT).

DeBERTa's pieces (relative-position score terms, embeddings, pooler) live in deberta.py; its
relative embeddings are shared by all blocks, in `params["relative"]`.

Layers are counted like the papers: block 1..L; "after layer 0" is the embedding output.

ModernBERT brings its own embeddings, block and head (`jaxattr.models.modernbert`, picked by
`modules(cfg)`) behind the same interfaces: its positions are rotary (implicit in attention, so
`word_embeds` carry no position), a block's global/local type follows its absolute index (passed
through the scan), and its head pools the final-normed hidden state (`classify` takes that state).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.models import deberta, modernbert
from jaxattr.models.attention import attend, cpu_gradient_policy
from jaxattr.models.config import EncoderConfig
from jaxattr.models.primitives import TokenHeadBase, activation, mask_value
from jaxattr.models.primitives import dense as _dense
from jaxattr.models.primitives import layer_norm as _layer_norm
from jaxattr.models.windowed import windowed_logits
from jaxattr.types import Array, Params


class Embeddings(nn.Module):
    """Word + position (+ token type) embeddings, LayerNorm, dropout, and ELECTRA's/ALBERT's projection."""

    cfg: EncoderConfig

    def setup(self) -> None:
        cfg = self.cfg
        init = nn.initializers.normal(0.02)
        self.word = nn.Embed(cfg.vocab_size, cfg.emb_size, embedding_init=init, name="word")
        self.position = nn.Embed(cfg.max_position_embeddings, cfg.emb_size, embedding_init=init, name="position")
        if cfg.type_vocab_size:
            self.token_type = nn.Embed(cfg.type_vocab_size, cfg.emb_size, embedding_init=init, name="token_type")
        self.norm = _layer_norm(cfg, "norm")
        self.dropout = nn.Dropout(cfg.dropout_rate)
        if cfg.projects_embeddings:
            self.project = _dense(cfg.hidden_size, cfg, "project")

    def words(self, input_ids: Array) -> Array:
        return self.word(input_ids)

    def init_all(self, input_ids: Array) -> Array:
        return self(self.words(input_ids), input_ids, input_ids)

    def __call__(self, word_embeds: Array, position_ids: Array, token_type_ids: Array | None,
                 deterministic: bool = True) -> Array:
        x = word_embeds + self.position(position_ids)
        if self.cfg.type_vocab_size:
            tt = jnp.zeros_like(position_ids) if token_type_ids is None else token_type_ids
            x = x + self.token_type(tt)
        x = self.norm(x.astype(jnp.float32))
        x = self.dropout(x, deterministic=deterministic).astype(self.cfg.compute_dtype)
        if self.cfg.projects_embeddings:
            x = self.project(x)
        return x


class Layer(nn.Module):
    """One post-LayerNorm transformer block (BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT; DeBERTa with its
    relative-position score terms)."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, h: Array, key_bias: Array, attn_bias: Array | None, attn_perturb: Array | None,
                 return_attention: bool, deterministic: bool, cls_only: bool = False,
                 index: Array | int = 0, rel: Array | None = None) -> tuple[Array, Array | None]:
        """`cls_only`: queries, output and feed-forward for position 0 alone (keys and values still
        come from every position): the block's [CLS] state, all a classification head reads.
        `index`, the block's absolute 0-based index, does not matter to this layout (ModernBERT's does).
        `rel`: DeBERTa's shared relative embeddings (their score terms join the additive bias)."""
        cfg = self.cfg
        b = h.shape[0]
        hq = h[:, :1] if cls_only else h
        tq = hq.shape[1]
        if cls_only:
            attn_bias = None if attn_bias is None else attn_bias[..., :1, :]
            attn_perturb = None if attn_perturb is None else attn_perturb[..., :1, :]
        split = lambda x: x.reshape(b, -1, cfg.num_heads, cfg.head_dim)
        query, key = _dense(cfg.hidden_size, cfg, "query"), _dense(cfg.hidden_size, cfg, "key")
        q, k = split(query(hq)), split(key(h))
        v = split(_dense(cfg.hidden_size, cfg, "value")(h))
        bias = None  # score terms beyond the padding, which goes to `attend` as a key mask
        if cfg.family == deberta.FAMILY:
            q, bias = deberta.relative_bias(cfg, q, k, rel, query, key, deterministic)
        if attn_bias is not None:
            bias = attn_bias if bias is None else bias + attn_bias
        key_mask = key_bias == 0  # run_layers' key_bias is exactly 0 where attended
        ctx, probs = attend(cfg, q, k, v, bias, attn_perturb, return_attention, deterministic, cls_only, key_mask)
        ctx = ctx.reshape(b, tq, cfg.hidden_size)
        a = nn.Dropout(cfg.dropout_rate)(_dense(cfg.hidden_size, cfg, "attn_out")(ctx), deterministic=deterministic)
        h = _layer_norm(cfg, "attn_norm")(hq + a)
        f = activation(cfg.hidden_act)(_dense(cfg.intermediate_size, cfg, "ffn_in")(h))
        f = nn.Dropout(cfg.dropout_rate)(_dense(cfg.hidden_size, cfg, "ffn_out")(f), deterministic=deterministic)
        h = _layer_norm(cfg, "out_norm")(h + f)
        return h, probs


class Head(nn.Module):
    """Sequence classification / regression head on the [CLS] vector, per family as in HF.

    `x`: the [CLS] vectors [B, H] or the last hidden state [B, T, H] (its row 0 is read)."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array | None = None, deterministic: bool = True) -> Array:
        cfg = self.cfg
        if cfg.family == deberta.FAMILY:
            return deberta.pooler_logits(cfg, x[:, 0] if x.ndim == 3 else x, deterministic)
        rate = cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate
        drop = nn.Dropout(rate)
        if x.ndim == 3:
            x = x[:, 0]
        if cfg.family in ("roberta", "electra"):
            x = drop(x, deterministic=deterministic)
        x = _dense(cfg.hidden_size, cfg, "dense")(x)
        act = {"bert": jnp.tanh, "albert": jnp.tanh, "roberta": jnp.tanh, "distilbert": jax.nn.relu,
               "electra": activation("gelu")}[cfg.family]
        x = drop(act(x), deterministic=deterministic)
        return _dense(cfg.num_labels, cfg, "out")(x).astype(jnp.float32)


class TokenHead(TokenHeadBase):
    """Token classification head (HF `...ForTokenClassification`): dropout -> `classifier` Linear on every
    position's final hidden state, [B, T, H] -> logits [B, T, num_labels]. The same for BERT, RoBERTa,
    DistilBERT, ELECTRA, ALBERT and DeBERTa (no pooler, no dense layer); ModernBERT's is its own
    (`modernbert.TokenHead`). The call, its input check and float32 logits: `primitives.TokenHeadBase`."""

    def logits(self, x: Array, deterministic: bool) -> Array:
        cfg = self.cfg
        # HF: DistilBERT's token head drops out with config.dropout, DeBERTa's with hidden_dropout_prob; the
        # others with classifier_dropout (ALBERT: classifier_dropout_prob), else the hidden dropout
        own = cfg.family in ("distilbert", deberta.FAMILY) or cfg.classifier_dropout_rate is None
        x = nn.Dropout(cfg.dropout_rate if own else cfg.classifier_dropout_rate)(x, deterministic=deterministic)
        return _dense(cfg.num_labels, cfg, "out")(x)


def modules(cfg: EncoderConfig) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """(Embeddings, Layer, Head) classes of `cfg`'s family: ModernBERT has its own, DeBERTa its embeddings,
    the rest share these; the head is `TokenHead` (ModernBERT: `modernbert.TokenHead`) when cfg.task == "token"."""
    token = cfg.task == "token"
    if cfg.family == "modernbert":
        return modernbert.Embeddings, modernbert.Layer, modernbert.TokenHead if token else modernbert.Head
    if cfg.family == deberta.FAMILY:  # optional positions, embeddings zeroed on padding
        return deberta.DebertaEmbeddings, Layer, TokenHead if token else Head
    return Embeddings, Layer, TokenHead if token else Head


def head_module(cfg: EncoderConfig) -> nn.Module:
    """The classification head module of `cfg`'s family (DeeBERT's off-ramps are copies of it)."""
    return modules(cfg)[2](cfg)


# ----------------------------------------------------------------------------------------------
# Pure functions over the parameter pytree.


def init_params(cfg: EncoderConfig, key: Array) -> Params:
    """Random parameters (BERT initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm)."""
    k_emb, k_layers, k_head = jax.random.split(key, 3)
    emb_cls, layer_cls, head_cls = modules(cfg)
    ids = jnp.zeros((1, 2), jnp.int32)
    params = {"embeddings": emb_cls(cfg).init(k_emb, ids, method=emb_cls.init_all)["params"]}
    if cfg.family == deberta.FAMILY:  # its own key: the other families' inits stay as they were
        params["relative"] = deberta.init_relative(cfg, jax.random.fold_in(key, 3))
    rel = deberta.relative_table(params, cfg)
    h = jnp.zeros((1, 2, cfg.hidden_size), cfg.compute_dtype)
    layer_init = lambda k: layer_cls(cfg).init(k, h, jnp.zeros((1, 2)), None, None, False, True, False, 0,
                                               rel)["params"]
    params["layers"] = jax.vmap(layer_init)(jax.random.split(k_layers, cfg.num_param_layers))
    params["head"] = head_cls(cfg).init(k_head, h, jnp.ones((1, 2), jnp.int32))["params"]
    return params


def shared_block_params(params: Params) -> Params:
    """The parameters every block reads besides its own slice of `params["layers"]` (DeBERTa's
    relative embeddings; empty otherwise): callers that run blocks from `{"layers": ...}` add these."""
    return {k: params[k] for k in ("relative",) if k in params}


def layer_params(params: Params, cfg: EncoderConfig) -> Params:
    """Per-block parameters stacked on a leading axis of length L (ALBERT's shared groups expanded)."""
    if cfg.num_layer_groups is None:
        return params["layers"]
    index = jnp.asarray(cfg.layer_groups, jnp.int32)
    return jax.tree.map(lambda p: p[index], params["layers"])


def position_ids(cfg: EncoderConfig, attention_mask: Array) -> Array:
    """Position ids; RoBERTa counts valid tokens from pad_token_id + 1, the others count from 0."""
    t = attention_mask.shape[-1]
    if cfg.family == "roberta":
        m = attention_mask.astype(jnp.int32)
        return jnp.cumsum(m, axis=-1) * m + cfg.pad_token_id
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), attention_mask.shape)


def word_embeddings(params: Params, cfg: EncoderConfig, input_ids: Array) -> Array:
    """The word-embedding rows for `input_ids` ([B, T, E]): the space IG and SIG interpolate in
    (positions are added by `embed`, or with RoPE enter in attention: never interpolated)."""
    emb_cls = modules(cfg)[0]
    return emb_cls(cfg).apply({"params": params["embeddings"]}, input_ids, method=emb_cls.words)


def embed(params: Params, cfg: EncoderConfig, word_embeds: Array, attention_mask: Array,
          token_type_ids: Array | None = None, *, deterministic: bool = True,
          rng: Array | None = None) -> Array:
    """Hidden state entering block 1 (embedding output, [B, T, H]) from word embeddings."""
    rngs = None if deterministic else {"dropout": rng}
    args = (word_embeds.astype(jnp.float32), position_ids(cfg, attention_mask), token_type_ids)
    if cfg.family == deberta.FAMILY:  # DeBERTa zeroes the embeddings of padding
        args += (attention_mask,)
    module = modules(cfg)[0](cfg)
    return module.apply({"params": params["embeddings"]}, *args, deterministic=deterministic, rngs=rngs)


class LayersOutput(NamedTuple):
    hidden: Array  # [B, T, H] after the last block run
    cls: Array  # [n, B, H] [CLS] state after each block run
    attention: Array | None  # [n, B, heads, T, T] attention probabilities, if asked for


def run_layers(params: Params, cfg: EncoderConfig, hidden: Array, attention_mask: Array, *,
               start: int = 0, stop: int | None = None, attn_bias: Array | None = None,
               attn_perturb: Array | None = None, return_attention: bool = False,
               deterministic: bool = True, rng: Array | None = None, cls_only: bool = False,
               layer_offset: Array | int = 0) -> LayersOutput:
    """Run blocks start+1..stop (0-based slice [start, stop)) from `hidden`, under `lax.scan`.

    `attn_bias` and `attn_perturb` carry one entry per block in the slice ([n, B, heads|1, T, T]).
    `cls_only`: the slice's last block computes the [CLS] row alone (`hidden` is then [B, 1, H]),
    which is all a classification head needs: the same logits for ~1/L fewer FLOPs. A head that
    mean-pools (ModernBERT's "mean") reads every row: then the last block runs in full.
    `layer_offset`: the absolute index of `params["layers"][0]` (may be traced), for callers that pass
    a slice of the stack (early exit, IBA): a ModernBERT block's type depends on its absolute index.
    """
    stop = cfg.num_layers if stop is None else stop
    if not 0 <= start <= stop <= cfg.num_layers:
        raise ValueError(f"layer range [{start}, {stop}) is outside 0..{cfg.num_layers}")
    if cls_only and return_attention:
        raise ValueError("cls_only computes one query row in the last block: it cannot return attention maps")
    cls_only = cls_only and cfg.head_reads_cls_only
    n = stop - start
    if n == 0:
        return LayersOutput(hidden, jnp.zeros((0,) + hidden[:, 0].shape, hidden.dtype), None)
    per_block = jax.tree.map(lambda p: p[start:stop], layer_params(params, cfg))
    key_bias = jnp.where(attention_mask.astype(bool), 0.0, mask_value(jnp.float32))
    rngs = jnp.zeros((n, 2), jnp.uint32) if deterministic else jax.random.split(rng, n)
    index = layer_offset + jnp.arange(start, stop, dtype=jnp.int32)
    model = modules(cfg)[1](cfg)
    rel = deberta.relative_table(params, cfg)  # shared by every block, not stacked

    def block(h, xs, last):
        p, bias, perturb, key, i = xs
        h, probs = model.apply({"params": p}, h, key_bias, bias, perturb, return_attention, deterministic, last, i,
                               rel, rngs=None if deterministic else {"dropout": key})
        return h, (h[:, 0], probs if return_attention else None)

    policy = cpu_gradient_policy(hidden.shape[1])
    remat = deterministic and not return_attention and attn_perturb is None and policy is not None
    # attribution gradients on CPU: recompute, store less
    wrap = (lambda f: jax.checkpoint(f, policy=policy)) if remat else (lambda f: f)
    body, final = wrap(functools.partial(block, last=False)), wrap(functools.partial(block, last=True))
    xs = (per_block, attn_bias, attn_perturb, rngs, index)
    if not cls_only:
        hidden, (cls, attn) = jax.lax.scan(body, hidden, xs, unroll=True)
        return LayersOutput(hidden, cls, attn)
    hidden, (cls, _) = jax.lax.scan(body, hidden, jax.tree.map(lambda a: a[:-1], xs), unroll=True)
    hidden, (cls_last, _) = final(hidden, jax.tree.map(lambda a: a[-1], xs))
    return LayersOutput(hidden, jnp.concatenate([cls, cls_last[None]]), None)


def classify(params: Params, cfg: EncoderConfig, hidden: Array, attention_mask: Array | None = None, *,
             deterministic: bool = True, rng: Array | None = None) -> Array:
    """Logits ([B, num_labels], float32) from the last hidden state [B, T, H] (or [B, 1, H] after
    `cls_only`) and its `attention_mask`, pooled as the family's head does; a [B, H] [CLS] vector
    also works wherever the head reads [CLS] alone (mean pooling refuses it: it needs every row).
    A token-classification model (cfg.task == "token") gives [B, T, num_labels], one row per position."""
    rngs = None if deterministic else {"dropout": rng}
    return head_module(cfg).apply({"params": params["head"]}, hidden, attention_mask, deterministic=deterministic,
                                  rngs=rngs)


class EncoderOutput(NamedTuple):
    logits: Array  # [B, num_labels] float32; [B, T, num_labels] for a token-classification model
    cls: Array  # [L, B, H] every block's [CLS] state
    hidden: Array  # [B, T, H] last hidden state
    attention: Array | None  # [L, B, heads, T, T] if return_attention


def forward(params: Params, cfg: EncoderConfig, input_ids: Array | None, attention_mask: Array,
            token_type_ids: Array | None = None, *, word_embeds: Array | None = None,
            after_layer: tuple[int, Callable[[Array], Array]] | None = None,
            attn_bias: Array | None = None, attn_perturb: Array | None = None,
            return_attention: bool = False, deterministic: bool = True,
            rng: Array | None = None, cls_only: bool = False) -> EncoderOutput:
    """The whole model: embeddings -> blocks (with optional interventions) -> head.

    `word_embeds` replaces the lookup of `input_ids` (which may then be None). `after_layer=(l, fn)`
    applies `fn` to the hidden state after block l (0 = embedding output) before block l+1 runs.
    `cls_only`: the last block computes only the [CLS] row the head reads (`hidden` is then
    [B, 1, H]): the same logits and gradients for ~1/L fewer FLOPs (the attribution kernels use it);
    ignored when the head mean-pools (ModernBERT's classifier_pooling="mean") or classifies every token
    (cfg.task == "token": logits [B, T, num_labels], see `token_logits`).
    """
    if word_embeds is None:
        if input_ids is None:
            raise ValueError("pass input_ids or word_embeds")
        word_embeds = word_embeddings(params, cfg, input_ids)
    if cfg.window and attention_mask.shape[1] > cfg.window:
        return _windowed(params, cfg, word_embeds, attention_mask, token_type_ids, after_layer=after_layer,
                         attn_bias=attn_bias, attn_perturb=attn_perturb, return_attention=return_attention,
                         deterministic=deterministic, rng=rng, cls_only=cls_only)
    keys = [None] * 3 if deterministic else list(jax.random.split(rng, 3))
    h = embed(params, cfg, word_embeds, attention_mask, token_type_ids, deterministic=deterministic, rng=keys[0])
    cut = 0 if after_layer is None else after_layer[0]
    if not 0 <= cut <= cfg.num_layers:
        raise ValueError(f"after_layer {cut} is outside 0..{cfg.num_layers}")

    def part(h, start, stop, key, last=False):
        sl = lambda a: None if a is None else a[start:stop]
        return run_layers(params, cfg, h, attention_mask, start=start, stop=stop, attn_bias=sl(attn_bias),
                          attn_perturb=sl(attn_perturb), return_attention=return_attention,
                          deterministic=deterministic, rng=key, cls_only=last)

    outs = []
    if after_layer is not None:
        low = part(h, 0, cut, None if deterministic else jax.random.fold_in(keys[1], 0))
        outs.append(low)
        h = after_layer[1](low.hidden)
    high = part(h, cut, cfg.num_layers, keys[1], cls_only and cut < cfg.num_layers)
    outs.append(high)
    cls = jnp.concatenate([o.cls for o in outs]) if len(outs) > 1 else high.cls
    probs = None
    if return_attention:
        probs = jnp.concatenate([o.attention for o in outs if o.attention is not None])
    logits = classify(params, cfg, high.hidden, attention_mask, deterministic=deterministic, rng=keys[2])
    return EncoderOutput(logits, cls, high.hidden, probs)


def _windowed(params: Params, cfg: EncoderConfig, word_embeds: Array, attention_mask: Array,
              token_type_ids: Array | None, *, after_layer: Any, attn_bias: Any, attn_perturb: Any,
              return_attention: bool, deterministic: bool, rng: Array | None, cls_only: bool) -> EncoderOutput:
    """`forward` on a document longer than `cfg.window` (`models/windowed.py`): pooled logits only (`cls` and
    `hidden` are None)."""
    if after_layer is not None or attn_bias is not None or attn_perturb is not None or return_attention:
        raise ValueError("windowed long inputs expose only the pooled logits: no interventions on hidden states or "
                         "attention (attention perturbation, AD-DROP; IBA windows itself) and no attention maps")
    if cfg.task != "sequence":
        raise ValueError("windowed long inputs need a sequence classifier (pooled logits), not a token model")

    def run(embeds: Array, mask: Array, types: Array | None) -> Array:
        return forward(params, cfg, None, mask, types, word_embeds=embeds, deterministic=deterministic, rng=rng,
                       cls_only=cls_only).logits

    logits = windowed_logits(run, word_embeds, attention_mask, token_type_ids, window=cfg.window,
                             stride=cfg.window_stride, pool=cfg.window_pool)
    return EncoderOutput(logits, None, None, None)


def forward_batch(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], **kwargs: Any) -> EncoderOutput:
    """`forward` on a dict batch with `input_ids`, `attention_mask` and optional `token_type_ids`."""
    return forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), **kwargs)


def token_logits(params: Params, cfg: EncoderConfig, input_ids: Array, attention_mask: Array,
                 token_type_ids: Array | None = None) -> Array:
    """Per-token logits [B, T, num_labels] (float32) of a token-classification model (cfg.task == "token"),
    inference mode; padded positions get logits too (mask them with `attention_mask`)."""
    if cfg.task != "token":
        raise ValueError(f"token_logits needs a token-classification model; this one has task={cfg.task!r} "
                         "(use forward(...).logits)")
    return forward(params, cfg, input_ids, attention_mask, token_type_ids).logits


def probe_logits(params: Params, cfg: EncoderConfig) -> np.ndarray:
    """[2, num_labels] ([2, 16, num_labels] for a token model) float32 logits on a fixed pseudo-random batch
    (2 × 16 token ids, seed 0), computed in float32: a fingerprint of the function the parameters compute.
    Two models agree on it to ~1e-6 only when they are the same model up to float rounding (the same
    fine-tuning run on another CPU)."""
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return np.asarray(_probe_fn(cfg.replace(dtype="float32"))(params, batch), np.float32)


@functools.cache
def _probe_fn(cfg: EncoderConfig) -> Callable[[Params, Mapping[str, Array]], Array]:
    return jax.jit(lambda params, batch: forward_batch(params, cfg, batch).logits.astype(jnp.float32))


def predict_probs(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], chunk: int | None = None) -> Array:
    """Softmax class probabilities [N, C] (float32) of a dict batch, `chunk` rows at a time under
    `lax.map` (None: all at once) so that memory is bounded; the last block runs for [CLS] only.
    Sequence classifiers only (a token model's [N, T, C] would not fit the rows)."""
    if cfg.task != "sequence":
        raise ValueError("predict_probs is for sequence classifiers, not token-classification models (issue 34)")
    probs = lambda b: jax.nn.softmax(forward_batch(params, cfg, b, cls_only=True).logits.astype(jnp.float32), -1)
    n, t = batch["input_ids"].shape
    size = n if chunk is None else max(1, min(int(chunk), n))
    if size == n:
        return probs(batch)
    pad = (-n) % size
    padded = jax.tree.map(lambda a: jnp.concatenate([a, a[:pad]]) if pad else a, dict(batch))
    return jax.lax.map(probs, jax.tree.map(lambda a: a.reshape(-1, size, t), padded)).reshape(n + pad, -1)[:n]
