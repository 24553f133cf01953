"""ModernBERT (Warner et al., 2024) in the one encoder: its embeddings, block, head and HF layout.

What differs from the BERT layout (`jaxattr.models.encoder`, which picks these modules for the family and
which this module does not import: the pieces both use are in `primitives.py` and `attention.py`), as in
HF's `modeling_modernbert.py`:
  * embeddings are the word embeddings alone, LayerNorm'd (no position or token-type tables):
    positions enter through rotary embeddings (RoPE, `rotate_half` convention) on the queries and
    keys of every block. IG and SIG therefore interpolate the word embeddings with the positions
    left implicit in attention: a baseline keeps each token's position, as with BERT's tables;
  * pre-norm blocks: h + attn(LN(h)), then h + mlp(LN(h)); block 0 has no attention LayerNorm;
  * one fused Wqkv projection; the MLP is GeGLU: Wi -> (input, gate) -> act(input) * gate -> Wo;
  * block i attends globally when i % global_attn_every_n_layers == 0, else within a window of
    local_attention // 2 tokens either side, with its own RoPE theta (global / local). The type
    depends on the block's absolute index, which `run_layers` passes through its scan, so a slice of
    blocks (IBA, early exit) runs each block as the full model would. The window goes to
    `attention.attend` as `local_window` (switched on by the traced block type), the padding as a key
    mask: no [T, T] mask is built here, so memory does not grow with the square of the input;
  * biases are optional (norm_bias, attention_bias, mlp_bias, classifier_bias);
  * the head is final_norm -> pooling ([CLS] row, or the masked mean over valid tokens) ->
    head.dense -> act -> head.norm -> dropout -> classifier. final_norm lives in the head's
    parameters (`params["head"]["final_norm"]`): every block's [CLS] state stays the raw residual
    stream, and the head normalises what it reads.

The intervention points are those of the BERT block, with the same signature: `attn_bias` is added
to the scores with the padding (the window then masks what lies outside it), `attn_perturb` to the
probabilities, and `cls_only` computes the [CLS] query row alone (mean pooling reads every row, so
`run_layers` then runs the last block in full; see `EncoderConfig.head_reads_cls_only`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxattr.models.attention import attend
from jaxattr.models.config import EncoderConfig
from jaxattr.models.primitives import TokenHeadBase, activation, layer_norm
from jaxattr.models.primitives import dense as _dense
from jaxattr.types import Array

FULL, SLIDING = "full_attention", "sliding_attention"  # HF's layer_types


def _norm(cfg: EncoderConfig, name: str) -> nn.LayerNorm:
    return layer_norm(cfg, name, use_bias=cfg.norm_bias)


class Embeddings(nn.Module):
    """Word embeddings -> LayerNorm -> dropout; positions and token types are accepted and ignored
    (the encoder's `embed` passes them to every family; RoPE supplies positions in attention)."""

    cfg: EncoderConfig

    def setup(self) -> None:
        cfg = self.cfg
        self.word = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=nn.initializers.normal(0.02),
                             name="word")
        self.norm = _norm(cfg, "norm")
        rate = cfg.dropout_rate if cfg.embedding_dropout_rate is None else cfg.embedding_dropout_rate
        self.dropout = nn.Dropout(rate)

    def words(self, input_ids: Array) -> Array:
        return self.word(input_ids)

    def init_all(self, input_ids: Array) -> Array:
        return self(self.words(input_ids), input_ids, None)

    def __call__(self, word_embeds: Array, position_ids: Array, token_type_ids: Array | None,
                 deterministic: bool = True) -> Array:
        x = self.norm(word_embeds.astype(jnp.float32))
        return self.dropout(x, deterministic=deterministic).astype(self.cfg.compute_dtype)


def rope_tables(cfg: EncoderConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [2, T, head_dim] (float32) for positions 0..T-1: row 0 global theta, row 1 local.

    As HF: inv_freq = theta^(-2i/d), angles = position * inv_freq, duplicated over both halves."""
    d = cfg.head_dim
    pos = np.arange(length, dtype=np.float32)[:, None]
    tables = []
    for theta in (cfg.global_rope_theta, cfg.local_rope_theta):
        inv_freq = (1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float32) / d))).astype(np.float32)
        angles = pos * inv_freq[None]
        tables.append(np.concatenate([angles, angles], axis=-1))
    angles = np.stack(tables)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate x [B, T, heads, d] by RoPE (cos/sin [T, d]) in float32: x cos + rotate_half(x) sin."""
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[None, :, None] + rotated * sin[None, :, None]).astype(x.dtype)


class Layer(nn.Module):
    """One pre-norm ModernBERT block; `index` (absolute, 0-based, may be traced) picks its type."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, h: Array, key_bias: Array, attn_bias: Array | None, attn_perturb: Array | None,
                 return_attention: bool, deterministic: bool, cls_only: bool = False,
                 index: Array | int = 0, rel: Array | None = None) -> tuple[Array, Array | None]:
        """Same contract as `encoder.Layer`: (new hidden, attention probabilities or None); `rel`
        (DeBERTa's relative embeddings) is None here."""
        cfg = self.cfg
        b, t, _ = h.shape
        tq = 1 if cls_only else t
        is_global = jnp.asarray(index) % cfg.global_attn_every_n_layers == 0
        x = jnp.where(jnp.asarray(index) == 0, h, _norm(cfg, "attn_norm")(h))  # HF: block 0's attn_norm is Identity
        qkv = _dense(3 * cfg.hidden_size, cfg, "qkv", cfg.attention_bias)(x).reshape(b, t, 3, cfg.num_heads, -1)
        q, k, v = qkv[:, :tq, 0], qkv[:, :, 1], qkv[:, :, 2]
        cos, sin = (jnp.where(is_global, a[0], a[1]) for a in rope_tables(cfg, t))
        q, k = apply_rope(q, cos[:tq], sin[:tq]), apply_rope(k, cos, sin)
        # the padding as a key mask and the window as positions (`attention.attend`): no [T, T] array here
        bias = None if attn_bias is None else (attn_bias[..., :1, :] if cls_only else attn_bias)
        if cls_only and attn_perturb is not None:
            attn_perturb = attn_perturb[..., :1, :]
        key_mask = key_bias == 0  # run_layers' key_bias is exactly 0 where attended
        ctx, probs = attend(cfg, q, k, v, bias, attn_perturb, return_attention, deterministic, cls_only, key_mask,
                            local_window=cfg.local_attention // 2, local_active=~is_global)
        a = _dense(cfg.hidden_size, cfg, "attn_out", cfg.attention_bias)(ctx.reshape(b, tq, cfg.hidden_size))
        h = (h[:, :1] if cls_only else h) + nn.Dropout(cfg.attention_dropout_rate)(a, deterministic=deterministic)
        return h + self.mlp(_norm(cfg, "mlp_norm")(h), deterministic), probs

    def mlp(self, x: Array, deterministic: bool) -> Array:
        """GeGLU: Wi -> (input, gate) -> act(input) * gate -> dropout -> Wo."""
        cfg = self.cfg
        inp, gate = jnp.split(_dense(2 * cfg.intermediate_size, cfg, "ffn_in", cfg.mlp_bias)(x), 2, axis=-1)
        f = nn.Dropout(cfg.dropout_rate)(activation(cfg.hidden_act)(inp) * gate, deterministic=deterministic)
        return _dense(cfg.hidden_size, cfg, "ffn_out", cfg.mlp_bias)(f)


def pool(cfg: EncoderConfig, x: Array, attention_mask: Array | None) -> Array:
    """The head's input from a (final-normed) [B, T, H] state: the [CLS] row or the masked mean."""
    if cfg.classifier_pooling == "cls":
        return x[:, 0]
    if attention_mask is None or attention_mask.shape[-1] != x.shape[1]:
        raise ValueError("mean pooling reads every row: pass the full [B, T, H] hidden state and its attention_mask")
    m = attention_mask.astype(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1)


class Head(nn.Module):
    """final_norm -> pooling -> head.dense -> act -> head.norm -> dropout -> classifier.

    `x` is the last hidden state [B, T, H] (pooled here, after final_norm, as HF does) or one vector
    per example [B, H] (a [CLS] state: DeeBERT's off-ramps, and callers holding `hidden[:, 0]`)."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array | None = None, deterministic: bool = True) -> Array:
        cfg = self.cfg
        x = _norm(cfg, "final_norm")(x)
        if x.ndim == 3:
            x = pool(cfg, x, attention_mask)
        elif cfg.classifier_pooling == "mean":
            raise ValueError("mean pooling reads every row: pass the [B, T, H] hidden state, not one vector")
        return _classifier(cfg, x, deterministic).astype(jnp.float32)


class TokenHead(TokenHeadBase):
    """HF's ModernBertForTokenClassification head on every position: final_norm (inside HF's ModernBertModel)
    -> head.dense -> act -> head.norm -> dropout -> classifier, [B, T, H] -> [B, T, num_labels]. The same
    parameters (and HF names) as `Head`, without the pooling; the call and its input check:
    `primitives.TokenHeadBase`."""

    def logits(self, x: Array, deterministic: bool) -> Array:
        return _classifier(self.cfg, _norm(self.cfg, "final_norm")(x), deterministic)


def _classifier(cfg: EncoderConfig, x: Array, deterministic: bool) -> Array:
    """head.dense -> act -> head.norm -> dropout -> classifier on (pooled or every) final-normed state(s),
    inside a head's compact scope: `Head`'s and `TokenHead`'s submodules, under the same names."""
    x = _dense(cfg.hidden_size, cfg, "dense", cfg.classifier_bias)(x)
    x = _norm(cfg, "norm")(activation(cfg.classifier_activation)(x))
    rate = cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate
    x = nn.Dropout(rate)(x, deterministic=deterministic)
    return _dense(cfg.num_labels, cfg, "out", True)(x)


# ----------------------------------------------------------------------------------------------
# The HF layout (`jaxattr.models.hf` dispatches here for model_type "modernbert").


def _every_n(hf: dict[str, Any], num_layers: int) -> int:
    """global_attn_every_n_layers from HF's `layer_types` (v5) or the legacy integer; other patterns refused."""
    types = hf.get("layer_types")
    if not types:
        return int(hf.get("global_attn_every_n_layers", 3))
    full = [i for i, kind in enumerate(types) if kind == FULL]
    n = full[1] if len(full) > 1 else max(num_layers, 1)
    if len(types) != num_layers or list(types) != layer_types(n, num_layers):
        raise ValueError(f"layer_types {types} is not 'global every n layers from block 0'; not supported")
    return n


def layer_types(every_n: int, num_layers: int) -> list[str]:
    return [FULL if i % every_n == 0 else SLIDING for i in range(num_layers)]


def _thetas(hf: dict[str, Any]) -> tuple[float, float]:
    """(global, local) RoPE theta from `rope_parameters` (v5) or global/local_rope_theta; only default RoPE."""
    rope = hf.get("rope_parameters")
    if not rope:
        if hf.get("rope_scaling"):
            raise ValueError(f"rope_scaling={hf['rope_scaling']!r} is not supported (only default RoPE)")
        return float(hf.get("global_rope_theta", 160_000.0)), float(hf.get("local_rope_theta", 10_000.0))
    for kind in (FULL, SLIDING):
        if rope.get(kind, {}).get("rope_type", "default") != "default":
            raise ValueError(f"rope_type={rope[kind]['rope_type']!r} is not supported (only 'default')")
    return float(rope[FULL]["rope_theta"]), float(rope[SLIDING]["rope_theta"])


def config_kwargs(hf: dict[str, Any]) -> dict[str, Any]:
    """EncoderConfig fields from a ModernBERT `config.json` (labels and problem type: the caller's)."""
    num_layers = hf.get("num_hidden_layers", 22)
    if hf.get("head_dim") not in (None, hf["hidden_size"] // hf["num_attention_heads"]):
        raise ValueError(f"head_dim={hf['head_dim']} != hidden_size / num_attention_heads is not supported")
    global_theta, local_theta = _thetas(hf)
    return dict(
        family="modernbert", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=num_layers,
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 8192), type_vocab_size=0,
        layer_norm_eps=hf.get("norm_eps", 1e-5), hidden_act=hf.get("hidden_activation", "gelu"),
        pad_token_id=hf.get("pad_token_id") or 0, dropout_rate=hf.get("mlp_dropout", 0.0),
        attention_dropout_rate=hf.get("attention_dropout", 0.0),
        classifier_dropout_rate=hf.get("classifier_dropout", 0.0),
        embedding_dropout_rate=hf.get("embedding_dropout", 0.0), global_attn_every_n_layers=_every_n(hf, num_layers),
        local_attention=hf.get("local_attention", 128), global_rope_theta=global_theta, local_rope_theta=local_theta,
        classifier_pooling=hf.get("classifier_pooling", "cls"),
        classifier_activation=hf.get("classifier_activation", "gelu"), norm_bias=hf.get("norm_bias", False),
        attention_bias=hf.get("attention_bias", False), mlp_bias=hf.get("mlp_bias", False),
        classifier_bias=hf.get("classifier_bias", False))


def to_hf(cfg: EncoderConfig) -> dict[str, Any]:
    """The ModernBERT-specific keys of a HF `config.json` (v5 `layer_types`/`rope_parameters` and the
    legacy integer/theta keys, so older transformers read it too)."""
    or_hidden = lambda rate: cfg.dropout_rate if rate is None else rate
    rope = {FULL: {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
            SLIDING: {"rope_type": "default", "rope_theta": cfg.local_rope_theta}}
    return {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
            "norm_eps": cfg.layer_norm_eps, "hidden_activation": cfg.hidden_act, "mlp_dropout": cfg.dropout_rate,
            "attention_dropout": cfg.attention_dropout_rate,
            "classifier_dropout": or_hidden(cfg.classifier_dropout_rate),
            "embedding_dropout": or_hidden(cfg.embedding_dropout_rate),
            "global_attn_every_n_layers": cfg.global_attn_every_n_layers,
            "layer_types": layer_types(cfg.global_attn_every_n_layers, cfg.num_layers),
            "local_attention": cfg.local_attention, "global_rope_theta": cfg.global_rope_theta,
            "local_rope_theta": cfg.local_rope_theta, "rope_parameters": rope,
            "classifier_pooling": cfg.classifier_pooling, "classifier_activation": cfg.classifier_activation,
            "norm_bias": cfg.norm_bias, "attention_bias": cfg.attention_bias, "mlp_bias": cfg.mlp_bias,
            "classifier_bias": cfg.classifier_bias}


def name_table(cfg: EncoderConfig) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
    """`hf._name_table` for ModernBERT: (HF name without "model." or '@' + head name, our path, transpose?).

    Block 0 has no attention LayerNorm in HF: its (unused) parameters are neither read nor written."""
    def linear(base: str, path: tuple[Any, ...], bias: bool) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
        yield base + ".weight", (*path, "kernel"), True
        if bias:
            yield base + ".bias", (*path, "bias"), False

    def norm(base: str, path: tuple[Any, ...]) -> Iterator[tuple[str, tuple[Any, ...], bool]]:
        yield base + ".weight", (*path, "scale"), False
        if cfg.norm_bias:
            yield base + ".bias", (*path, "bias"), False

    yield "embeddings.tok_embeddings.weight", ("embeddings", "word", "embedding"), False
    yield from norm("embeddings.norm", ("embeddings", "norm"))
    for i in range(cfg.num_layers):
        base = f"layers.{i}."
        if i:
            yield from norm(base + "attn_norm", ("layers", i, "attn_norm"))
        yield from linear(base + "attn.Wqkv", ("layers", i, "qkv"), cfg.attention_bias)
        yield from linear(base + "attn.Wo", ("layers", i, "attn_out"), cfg.attention_bias)
        yield from norm(base + "mlp_norm", ("layers", i, "mlp_norm"))
        yield from linear(base + "mlp.Wi", ("layers", i, "ffn_in"), cfg.mlp_bias)
        yield from linear(base + "mlp.Wo", ("layers", i, "ffn_out"), cfg.mlp_bias)
    yield from norm("final_norm", ("head", "final_norm"))
    yield from linear("@head.dense", ("head", "dense"), cfg.classifier_bias)
    yield from norm("@head.norm", ("head", "norm"))
    yield from linear("@classifier", ("head", "out"), True)
