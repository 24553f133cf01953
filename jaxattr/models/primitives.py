"""Building blocks shared by the encoder families (encoder.py, deberta.py, modernbert.py): activations,
the additive mask value, Dense/LayerNorm factories with the parameter dtype and init every family uses,
and `TokenHeadBase`, what every token-classification head shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxattr.models.config import EncoderConfig
from jaxattr.types import Array

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    # exact GELU through erf, as PyTorch computes it; jax.nn.gelu's erfc form costs ~10% more on CPU
    "gelu": lambda x: 0.5 * x * (1.0 + jax.lax.erf(x * (1 / math.sqrt(2)))),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[Array], Array]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def mask_value(dtype: Any) -> float:
    """A large negative number for additive masks: half the dtype's minimum, so two masks add safely."""
    return float(jnp.finfo(dtype).min) / 2


def dense(features: int, cfg: EncoderConfig, name: str, use_bias: bool = True) -> nn.Dense:
    """A Dense layer in the compute dtype with float32 parameters and BERT's N(0, 0.02) init."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(0.02), name=name,
    )


def layer_norm(cfg: EncoderConfig, name: str, use_bias: bool = True) -> nn.LayerNorm:
    """A LayerNorm in the compute dtype with float32 parameters (ModernBERT's may have no bias)."""
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_bias=use_bias, dtype=cfg.compute_dtype,
                        param_dtype=jnp.float32, name=name)


class TokenHeadBase(nn.Module):
    """What every token-classification head (HF `...ForTokenClassification`) shares: it reads every
    position's final hidden state [B, T, H] and gives float32 logits [B, T, num_labels]. `attention_mask`
    is accepted for the sequence heads' signature and not read: padded positions get logits too, which
    callers mask out. A family's head (`encoder.TokenHead`, `modernbert.TokenHead`) defines `logits`."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array | None = None, deterministic: bool = True) -> Array:
        if x.ndim != 3:
            raise ValueError("a token-classification head reads every position: pass the [B, T, H] hidden state")
        return self.logits(x, deterministic).astype(jnp.float32)

    def logits(self, x: Array, deterministic: bool) -> Array:
        """[B, T, H] -> [B, T, num_labels], run inside `__call__`'s compact scope (submodules may be made here)."""
        raise NotImplementedError
