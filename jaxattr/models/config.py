"""Encoder configuration: one frozen dataclass covers BERT, RoBERTa, DistilBERT, ELECTRA, ALBERT,
DeBERTa-v2/v3 and ModernBERT.

The config is hashable so it can be a static argument of `jax.jit`. Families differ only in a few
switches (position-id scheme, token types, classification head, embedding projection); the encoder
code path is shared. ModernBERT's block (pre-norm, RoPE, GeGLU, alternating global/local attention)
lives in `jaxattr.models.modernbert`; the fields marked "ModernBERT" are read by that family alone.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

import jax.numpy as jnp

Family = Literal["bert", "roberta", "distilbert", "electra", "albert", "deberta-v2", "modernbert"]
FAMILIES: tuple[str, ...] = ("bert", "roberta", "distilbert", "electra", "albert", "deberta-v2", "modernbert")
# DeBERTa-only switches (jaxattr/models/deberta.py) and the values every other family must leave them at
DEBERTA_DEFAULTS: dict[str, Any] = {
    "relative_attention": False, "position_buckets": -1, "max_relative_positions": -1, "pos_att_type": (),
    "share_att_key": False, "norm_rel_ebd": False, "position_biased_input": True, "pooler_dropout_rate": 0.0,
    "pooler_hidden_act": "gelu",
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder with a sequence classification/regression head, or (`task="token"`)
    a token-classification head: one label per position, logits [B, T, num_labels]."""

    family: Family = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    embedding_size: int | None = None  # ELECTRA-small, ALBERT: projected to hidden_size; None = hidden_size
    num_layers: int = 12
    num_layer_groups: int | None = None  # ALBERT: blocks share the parameters of this many groups
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0 = no token-type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    num_labels: int = 2
    problem_type: Literal["classification", "regression"] = "classification"
    task: Literal["sequence", "token"] = "sequence"  # "token": HF's ...ForTokenClassification head on every position
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    classifier_dropout_rate: float | None = None  # None = dropout_rate
    dtype: str = "float32"  # compute dtype; parameters are always float32
    label_names: tuple[str, ...] | None = None
    hf_model_type: str | None = None  # HF model_type of an alias (xlm-roberta, camembert: RoBERTa's layout)
    # ModernBERT only (the defaults are the BERT layout's, or HF's ModernBERT defaults where BERT has no such thing)
    global_attn_every_n_layers: int = 1  # block i (0-based) attends globally iff i % n == 0, else locally
    local_attention: int = 128  # local window, in tokens: a query sees keys within local_attention // 2 either side
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    classifier_pooling: Literal["cls", "mean"] = "cls"  # "mean": masked mean of the final-normed hidden state
    classifier_activation: str = "gelu"
    norm_bias: bool = True  # LayerNorms with a bias
    attention_bias: bool = True  # Wqkv and the attention output projection with biases
    mlp_bias: bool = True  # GeGLU Wi / Wo with biases
    classifier_bias: bool = True  # head.dense with a bias
    embedding_dropout_rate: float | None = None  # None = dropout_rate
    # DeBERTa-v2/v3 (HF names): disentangled attention with log-bucketed relative positions
    relative_attention: bool = False
    position_buckets: int = -1  # <= 0: relative distances are not bucketed
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    pos_att_type: tuple[str, ...] = ()  # subset of ("c2p", "p2c")
    share_att_key: bool = False  # relative embeddings projected by the content query/key layers
    norm_rel_ebd: bool = False  # LayerNorm on the relative embeddings (HF norm_rel_ebd="layer_norm")
    position_biased_input: bool = True  # absolute position embeddings added to the input (v3: False)
    pooler_dropout_rate: float = 0.0
    pooler_hidden_act: str = "gelu"
    # Long documents (`models/windowed.py`, `--long window`): a run setting, not saved with the model.
    # window > 0: inputs longer than `window` tokens run as overlapping windows, one every `window_stride`
    # tokens, their logits pooled by `window_pool` ("mean" or "max"); 0: inputs are at most max_length.
    window: int = 0
    window_stride: int = 0
    window_pool: Literal["mean", "max"] = "mean"
    max_document_length: int = 16384  # longest windowed input in tokens

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown encoder family {self.family!r}; expected one of {FAMILIES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.task not in ("sequence", "token"):
            raise ValueError(f"task {self.task!r}: use 'sequence' or 'token'")
        if self.task == "token" and self.problem_type != "classification":
            raise ValueError("a token-classification head is single-label classification, not regression")
        if self.problem_type == "regression" and self.num_labels != 1:
            raise ValueError("a regression head has num_labels == 1")
        if self.num_layer_groups is not None and not 1 <= self.num_layer_groups <= self.num_layers:
            raise ValueError(f"num_layer_groups {self.num_layer_groups} must lie in 1..num_layers")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} labels")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling {self.classifier_pooling!r}: use 'cls' or 'mean'")
        if self.classifier_pooling == "mean" and self.family != "modernbert":
            raise ValueError("classifier_pooling='mean' is ModernBERT's; the other families read [CLS]")
        if self.global_attn_every_n_layers < 1:
            raise ValueError(f"global_attn_every_n_layers must be >= 1, not {self.global_attn_every_n_layers}")
        if self.family != "deberta-v2":
            changed = sorted(k for k, v in DEBERTA_DEFAULTS.items() if getattr(self, k) != v)
            if changed:
                raise ValueError(f"{changed} are DeBERTa switches; family {self.family!r} has none of them")
        if not set(self.pos_att_type) <= {"c2p", "p2c"}:
            raise ValueError(f"pos_att_type {self.pos_att_type} is not a subset of ('c2p', 'p2c')")

    @property
    def emb_size(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def projects_embeddings(self) -> bool:
        """Whether a dense layer maps the embeddings to hidden_size (ALBERT always has one)."""
        return self.family == "albert" or self.emb_size != self.hidden_size

    @property
    def num_param_layers(self) -> int:
        """Entries on the stacked layer axis of the parameters (ALBERT: one per shared group)."""
        return self.num_layer_groups or self.num_layers

    @property
    def layer_groups(self) -> tuple[int, ...]:
        """The parameter entry each block 1..L uses (ALBERT's int(i / (L / groups)); else block i)."""
        return tuple(int(i / (self.num_layers / self.num_param_layers)) for i in range(self.num_layers))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def head_reads_cls_only(self) -> bool:
        """Whether the classification head reads the [CLS] row alone (not mean pooling, not a token head):
        then the last block may compute that row only (`cls_only`)."""
        return self.task == "sequence" and self.classifier_pooling == "cls"

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def max_positions(self) -> int:
        """Longest input the encoder itself reads, in tokens (RoBERTa reserves pad_token_id + 1 positions)."""
        if self.family == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def max_length(self) -> int:
        """Longest input in tokens: the encoder's positions, or `max_document_length` with windows."""
        return self.max_document_length if self.window else self.max_positions

    def unshared(self) -> EncoderConfig:
        """This config for parameters already expanded to one entry per block (`encoder.layer_params`)."""
        return self if self.num_layer_groups is None else self.replace(num_layer_groups=None)

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label_names"] = list(self.label_names) if self.label_names else None
        d["pos_att_type"] = list(self.pos_att_type)
        if self.task == "sequence":  # the default: sequence configs serialise (and hash) as before the field existed
            del d["task"]
        for key in ("window", "window_stride", "window_pool", "max_document_length"):  # a run setting
            del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown encoder config keys: {sorted(unknown)}")
        d = dict(d)
        if d.get("label_names") is not None:
            d["label_names"] = tuple(d["label_names"])
        if "pos_att_type" in d:
            d["pos_att_type"] = tuple(d["pos_att_type"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def tiny_config(family: Family = "bert", **overrides: Any) -> EncoderConfig:
    """A 2-layer, hidden-32 config for tests."""
    base = dict(
        family=family, vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
        max_position_embeddings=64, type_vocab_size=0 if family in ("distilbert", "modernbert") else 2,
        pad_token_id=1 if family == "roberta" else 0,
    )
    base.update(overrides)
    return EncoderConfig(**base)
