"""DeBERTa-v2/v3 pieces of the one encoder (family "deberta-v2"; HF model_type "deberta-v2").

DeBERTa is a post-LayerNorm encoder like BERT except for:
  * disentangled attention: besides content->content scores q_i.k_j, content->position (c2p,
    q_i.Kr[d(i, j)]) and position->content (p2c, k_j.Qr[d(j, i)]) terms, where Kr/Qr are the shared
    relative embeddings projected per layer and d is a log-bucketed, clamped relative distance. These
    terms are additive to the scores, so the block adds them to its attention bias
    (`relative_bias`): attn_bias, attn_perturb, return_attention and cls_only behave exactly as in
    the BERT block;
  * every score is divided by sqrt(head_dim * (1 + len(pos_att_type))), not sqrt(head_dim);
  * the relative embeddings (and their optional LayerNorm) are shared by all layers: they live in
    `params["relative"]`, outside the stacked `params["layers"]`;
  * embeddings: optional absolute positions (v3: none), a bias-free projection *before* the
    LayerNorm, and the output multiplied by the attention mask;
  * the ContextPooler head: dropout, dense, pooler activation, dropout, classifier.
Unsupported HF switches (conv_kernel_size, ...) are refused by `hf_fields`, never ignored.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxattr.models.config import EncoderConfig
from jaxattr.models.primitives import activation, dense, layer_norm
from jaxattr.types import Array, Params

FAMILY = "deberta-v2"


class UnsupportedSwitch(ValueError):
    """A DeBERTa config switch this encoder does not implement (hf.py turns it into a CheckpointError)."""


# ----------------------------------------------------------------------------------------------
# Relative positions (static: they depend only on the sequence length).


def max_relative(cfg: EncoderConfig) -> int:
    """The largest relative distance before bucketing (HF: max_relative_positions, or the position table)."""
    return cfg.max_relative_positions if cfg.max_relative_positions >= 1 else cfg.max_position_embeddings


def attention_span(cfg: EncoderConfig) -> int:
    """Half the number of relative-embedding rows: the bucket count, or the largest distance."""
    return cfg.position_buckets if cfg.position_buckets > 0 else max_relative(cfg)


def scale_factor(cfg: EncoderConfig) -> int:
    """Scores are divided by sqrt(head_dim * this): one term each for c2c, c2p and p2c."""
    return 1 + len(cfg.pos_att_type)


def log_buckets(rel: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """HF's `make_log_bucket_position` in float32: distances within +-bucket_size/2 stay exact, larger
    ones are log-spaced up to max_position (same float32 operations, so the same ceil boundaries)."""
    mid = bucket_size // 2
    sign = np.sign(rel)
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
    ratio = np.log(abs_pos / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * sign).astype(np.int64)


def relative_positions(cfg: EncoderConfig, length: int) -> np.ndarray:
    """[T, T] relative positions query - key, log-bucketed when position_buckets > 0."""
    ids = np.arange(length, dtype=np.int64)
    rel = ids[:, None] - ids[None, :]
    if cfg.position_buckets > 0 and max_relative(cfg) > 0:
        rel = log_buckets(rel, cfg.position_buckets, max_relative(cfg))
    return rel


def embedding_indices(cfg: EncoderConfig, length: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative-embedding rows read by c2p and p2c for the first `rows` queries ([rows, T] each)."""
    span = attention_span(cfg)
    rel = relative_positions(cfg, length)
    c2p = np.clip(rel + span, 0, 2 * span - 1)
    p2c = np.clip(-rel.T + span, 0, 2 * span - 1)  # HF gathers per key, then transposes
    return c2p[:rows], p2c[:rows]


# ----------------------------------------------------------------------------------------------
# Modules and the functions the encoder's Layer/Head call inside their compact scope.


class DebertaEmbeddings(nn.Module):
    """Word (+ absolute position) (+ token type) embeddings, projection, LayerNorm, mask, dropout."""

    cfg: EncoderConfig

    def setup(self) -> None:
        cfg = self.cfg
        init = nn.initializers.normal(0.02)
        self.word = nn.Embed(cfg.vocab_size, cfg.emb_size, embedding_init=init, name="word")
        if cfg.position_biased_input:
            self.position = nn.Embed(cfg.max_position_embeddings, cfg.emb_size, embedding_init=init, name="position")
        if cfg.type_vocab_size:
            self.token_type = nn.Embed(cfg.type_vocab_size, cfg.emb_size, embedding_init=init, name="token_type")
        if cfg.emb_size != cfg.hidden_size:
            self.project = dense(cfg.hidden_size, cfg, "project", use_bias=False)
        self.norm = layer_norm(cfg, "norm")
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def words(self, input_ids: Array) -> Array:
        return self.word(input_ids)

    def init_all(self, input_ids: Array) -> Array:
        return self(self.words(input_ids), input_ids, input_ids, jnp.ones(input_ids.shape))

    def __call__(self, word_embeds: Array, position_ids: Array, token_type_ids: Array | None, mask: Array,
                 deterministic: bool = True) -> Array:
        cfg = self.cfg
        x = word_embeds
        if cfg.position_biased_input:
            x = x + self.position(position_ids)
        if cfg.type_vocab_size:
            x = x + self.token_type(jnp.zeros_like(position_ids) if token_type_ids is None else token_type_ids)
        if cfg.emb_size != cfg.hidden_size:
            x = self.project(x.astype(cfg.compute_dtype))
        x = self.norm(x.astype(jnp.float32)) * mask[..., None].astype(jnp.float32)
        return self.dropout(x, deterministic=deterministic).astype(cfg.compute_dtype)


class RelativeEmbeddings(nn.Module):
    """The relative-position table [2 * span, H] shared by every layer, LayerNormed if norm_rel_ebd."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self) -> Array:
        cfg = self.cfg
        table = self.param("embedding", nn.initializers.normal(0.02), (2 * attention_span(cfg), cfg.hidden_size))
        if cfg.norm_rel_ebd:
            table = layer_norm(cfg, "norm")(table)
        return table.astype(jnp.float32)


def init_relative(cfg: EncoderConfig, key: Array) -> Params | None:
    """Random `params["relative"]`, or None where the model has no relative attention."""
    return RelativeEmbeddings(cfg).init(key)["params"] if cfg.relative_attention else None


def relative_table(params: Params, cfg: EncoderConfig) -> Array | None:
    """The (normalised) relative embeddings every block reads, or None without relative attention."""
    if cfg.family != FAMILY or not cfg.relative_attention:
        return None
    if "relative" not in params:
        raise ValueError('DeBERTa blocks read params["relative"]; add encoder.shared_block_params(params)')
    return RelativeEmbeddings(cfg).apply({"params": params["relative"]})


def relative_bias(cfg: EncoderConfig, q: Array, k: Array, rel: Array, query: nn.Module, key: nn.Module,
                  deterministic: bool) -> tuple[Array, Array | None]:
    """(q rescaled, c2p + p2c score bias [B, heads, Tq, T] or None), inside the Layer's compact scope.

    The content scores are later divided by sqrt(head_dim); q is rescaled by 1/sqrt(scale_factor) so
    that they come out divided by sqrt(head_dim * scale_factor), as HF's. With cls_only, q holds the
    [CLS] row alone (Tq = 1) and only its relative terms are computed. `query`/`key` are the block's
    content projections (reused for the relative embeddings when share_att_key).
    """
    factor = scale_factor(cfg)
    q_scaled = q * (1 / math.sqrt(factor))
    if not cfg.relative_attention or not cfg.pos_att_type:
        return q_scaled, None
    rel = nn.Dropout(cfg.dropout_rate)(rel, deterministic=deterministic)
    heads = lambda x: x.reshape(x.shape[0], cfg.num_heads, cfg.head_dim)
    tq, t = q.shape[1], k.shape[1]
    c2p_idx, p2c_idx = embedding_indices(cfg, t, tq)
    bias = jnp.zeros((), jnp.float32)
    if "c2p" in cfg.pos_att_type:
        pos_key = heads((key if cfg.share_att_key else dense(cfg.hidden_size, cfg, "pos_key"))(rel))
        c2p = jnp.einsum("bqhd,phd->bhqp", q, pos_key, preferred_element_type=jnp.float32)
        bias = bias + c2p[:, :, np.arange(tq)[:, None], c2p_idx]
    if "p2c" in cfg.pos_att_type:
        pos_query = heads((query if cfg.share_att_key else dense(cfg.hidden_size, cfg, "pos_query"))(rel))
        p2c = jnp.einsum("bkhd,phd->bhkp", k, pos_query, preferred_element_type=jnp.float32)
        bias = bias + p2c[:, :, np.arange(t)[None, :], p2c_idx]
    return q_scaled, bias / math.sqrt(cfg.head_dim * factor)


def pooler_logits(cfg: EncoderConfig, cls: Array, deterministic: bool) -> Array:
    """ContextPooler + classifier on the [CLS] vector, inside the Head's compact scope ("dense", "out")."""
    rate = cfg.dropout_rate if cfg.classifier_dropout_rate is None else cfg.classifier_dropout_rate
    x = nn.Dropout(cfg.pooler_dropout_rate)(cls, deterministic=deterministic)
    x = activation(cfg.pooler_hidden_act)(dense(cfg.hidden_size, cfg, "dense")(x))
    x = nn.Dropout(rate)(x, deterministic=deterministic)
    return dense(cfg.num_labels, cfg, "out")(x).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# HF config.json <-> the DeBERTa fields of EncoderConfig (hf.py adds the fields every family has).


def _pos_att_type(value: Any) -> tuple[str, ...]:
    """HF's pos_att_type: a list or a "p2c|c2p" string; order does not matter, the terms add up."""
    items = [x.strip() for x in value.lower().split("|")] if isinstance(value, str) else list(value or [])
    unknown = sorted(set(items) - {"c2p", "p2c"})
    if unknown:
        raise UnsupportedSwitch(f"pos_att_type {unknown} is not supported (only 'c2p', 'p2c')")
    return tuple(t for t in ("c2p", "p2c") if t in items)


def hf_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The DeBERTa switches of a HF config.json; a switch this encoder would not honour is refused."""
    if (hf.get("conv_kernel_size") or 0) > 0:
        raise UnsupportedSwitch(f"conv_kernel_size={hf['conv_kernel_size']} (DeBERTa's ConvLayer) is not supported")
    relative = bool(hf.get("relative_attention", False))
    biased = bool(hf.get("position_biased_input", True))
    if not relative and not biased:
        raise UnsupportedSwitch("relative_attention=False with position_biased_input=False (no position "
                                "information at all) is not supported")
    norms = {x.strip() for x in str(hf.get("norm_rel_ebd") or "none").lower().split("|")}
    if not norms <= {"none", "layer_norm"}:
        raise UnsupportedSwitch(f"norm_rel_ebd={hf['norm_rel_ebd']!r} is not supported (only 'layer_norm', 'none')")
    hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
    for name, expected in (("attention_head_size", hidden // heads), ("pooler_hidden_size", hidden)):
        if hf.get(name, expected) != expected:
            raise UnsupportedSwitch(f"{name}={hf[name]} is not supported (only {expected})")
    act = hf.get("pooler_hidden_act", "gelu")
    try:
        activation(act)
    except ValueError as e:
        raise UnsupportedSwitch(f"pooler_hidden_act={act!r} is not supported ({e})") from None
    return {"relative_attention": relative, "position_buckets": int(hf.get("position_buckets", -1)),
            "max_relative_positions": int(hf.get("max_relative_positions", -1)),
            "pos_att_type": _pos_att_type(hf.get("pos_att_type")),
            "share_att_key": bool(hf.get("share_att_key", False)),
            "norm_rel_ebd": "layer_norm" in norms, "position_biased_input": biased,
            "pooler_dropout_rate": float(hf.get("pooler_dropout", 0.0)),
            "pooler_hidden_act": act,
            "classifier_dropout_rate": hf.get("cls_dropout"),
            # DebertaV2Config's own defaults (a config.json may omit a key left at its default)
            "type_vocab_size": hf.get("type_vocab_size", 0), "layer_norm_eps": hf.get("layer_norm_eps", 1e-7),
            "embedding_size": hf.get("embedding_size") if hf.get("embedding_size", hidden) != hidden else None}


def hf_config(cfg: EncoderConfig) -> dict[str, Any]:
    """The DeBERTa keys of a HF config.json for `cfg` (DebertaV2Config reads them all)."""
    return {"relative_attention": cfg.relative_attention, "position_buckets": cfg.position_buckets,
            "max_relative_positions": cfg.max_relative_positions, "pos_att_type": list(cfg.pos_att_type),
            "share_att_key": cfg.share_att_key, "norm_rel_ebd": "layer_norm" if cfg.norm_rel_ebd else "none",
            "position_biased_input": cfg.position_biased_input, "pooler_dropout": cfg.pooler_dropout_rate,
            "pooler_hidden_act": cfg.pooler_hidden_act, "pooler_hidden_size": cfg.hidden_size,
            "cls_dropout": cfg.classifier_dropout_rate, "embedding_size": cfg.emb_size, "conv_kernel_size": 0}
