"""Encoder configuration: one frozen dataclass covers BERT, RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2/v3.

The config is hashable so it can be a static argument of `jax.jit`. Families differ only in a few
switches (position-id scheme, token types, classification head, embedding projection); the encoder
code path is shared.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

import jax.numpy as jnp

Family = Literal["bert", "roberta", "distilbert", "electra", "deberta-v2"]
FAMILIES: tuple[str, ...] = ("bert", "roberta", "distilbert", "electra", "deberta-v2")
# DeBERTa-only switches (jaxattr/models/deberta.py) and the values every other family must leave them at
DEBERTA_DEFAULTS: dict[str, Any] = {
    "relative_attention": False, "position_buckets": -1, "max_relative_positions": -1, "pos_att_type": (),
    "share_att_key": False, "norm_rel_ebd": False, "position_biased_input": True, "pooler_dropout_rate": 0.0,
    "pooler_hidden_act": "gelu",
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder with a sequence classification/regression head."""

    family: Family = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    embedding_size: int | None = None  # ELECTRA-small: 128 projected to hidden_size; None = hidden_size
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0 = no token-type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    num_labels: int = 2
    problem_type: Literal["classification", "regression"] = "classification"
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    classifier_dropout_rate: float | None = None  # None = dropout_rate
    dtype: str = "float32"  # compute dtype; parameters are always float32
    label_names: tuple[str, ...] | None = None
    hf_model_type: str | None = None  # HF model_type of an alias (xlm-roberta, camembert: RoBERTa's layout)
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

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown encoder family {self.family!r}; expected one of {FAMILIES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.problem_type == "regression" and self.num_labels != 1:
            raise ValueError("a regression head has num_labels == 1")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} labels")
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
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def max_length(self) -> int:
        """Longest input in tokens (RoBERTa reserves pad_token_id + 1 position slots)."""
        if self.family == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def replace(self, **changes: Any) -> EncoderConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label_names"] = list(self.label_names) if self.label_names else None
        d["pos_att_type"] = list(self.pos_att_type)
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
        max_position_embeddings=64, type_vocab_size=0 if family == "distilbert" else 2,
        pad_token_id=1 if family == "roberta" else 0,
    )
    base.update(overrides)
    return EncoderConfig(**base)
