"""Sequential Integrated Gradients (Enguehard 2023; DESIGN.md §3 SIG; reference `tint/attr/seq_ig.py`).

For each unit i (a token, as tint does on the positions of `inputs_embeds`, or a whole word: all its
word pieces at once) the baseline `x̄^i` is the input with only unit i's word embedding(s) replaced by
the baseline embedding ([MASK] by default); every other token, and all position / token-type
embeddings, stay fixed. Then

    SIG_ij = (x_ij - x̄_ij) * ∫_0^1 dF(x̄^i + a (x - x̄^i)) / dx_ij da            (quadrature, 50 steps)

per-unit completeness: sum_j SIG_ij = F(x) - F(x̄^i); the per-token score is sum over the embedding
dimension, and the paper's (and tint experiments') score is normalised: `SIG_i = sum_j SIG_ij / ||SIG||_2`
with the norm over the tokens of the example. Special tokens and padding are never units and get 0.

`sequential_integrated_gradients` is the pure function (vectorised over examples x steps, `lax.map`
over units); the batched driver flattens units x steps x examples into fixed-shape chunks instead,
and only runs units that exist (the pure function also runs empty padding units, at no effect).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.attribution.gradients import (
    PATH_OPTIONS,
    Rows,
    check_path_options,
    path_cost,
    prepare_path,
    quadrature,
    row_contributions,
    row_outputs,
    token_types,
)
from jaxattr.data.batch import token_mask
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params
from jaxattr.types import Array

Unit = Literal["token", "word"]


class SIGAttribution(NamedTuple):
    scores: Array  # [B, T] normalised per example: raw / ||raw||_2
    raw: Array  # [B, T] sum_j SIG_ij per token (before normalisation)
    target: Array  # [B]
    prob: Array  # [B]
    f_x: Array  # [B]
    unit_delta: Array  # [B, T] per unit u (indexed by position or word id): sum_{tokens of u} raw - (F(x) - F(x̄^u))
    delta: Array  # [B] the unit gap of largest magnitude (0 when there are no units)


def unit_ids(batch: Mapping[str, Array], unit: str) -> Array:
    """The unit each token belongs to ([B, T], -1 for special tokens and padding)."""
    word_ids = jnp.asarray(batch["word_ids"])
    ok = token_mask(batch)
    if unit == "token":
        pos = jnp.broadcast_to(jnp.arange(word_ids.shape[-1], dtype=jnp.int32), word_ids.shape)
        return jnp.where(ok, pos, -1)
    if unit == "word":
        return jnp.where(ok, word_ids, -1)
    raise ValueError(f"unknown SIG unit {unit!r}; expected 'token' or 'word'")


def normalise(raw: Array) -> Array:
    """`raw / ||raw||_2` over the last axis (zero vectors stay zero)."""
    n = jnp.linalg.norm(raw, axis=-1, keepdims=True)
    return jnp.where(n > 0, raw / jnp.where(n > 0, n, 1.0), 0.0)


def sequential_integrated_gradients(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *,
                                    steps: int = 50, method: str = "gausslegendre", baseline: str = "mask",
                                    mask_id: int | None = None, pad_id: int | None = None,
                                    target: Array | None = None, output: str = "logit", unit: str = "token",
                                    ) -> SIGAttribution:
    """SIG for a padded batch ([B, T] arrays incl. `word_ids`): every unit's B*steps path points at once."""
    base_ids, base_scale, interp, tgt, prob, f_x = prepare_path(params, cfg, batch, baseline, mask_id, pad_id,
                                                           target, output)
    uid = unit_ids(batch, unit)
    a, w = quadrature(method, steps)
    alphas, weights = jnp.asarray(a, jnp.float32), jnp.asarray(w, jnp.float32)
    b, t = base_ids.shape
    rep = lambda x: jnp.repeat(jnp.asarray(x), steps, axis=0)
    ids, am, tt, bid, bsc, tg = map(rep, (batch["input_ids"], batch["attention_mask"], token_types(batch), base_ids,
                                          base_scale, tgt))

    def one_unit(u: Array) -> tuple[Array, Array]:
        m = (uid == u).astype(jnp.float32)
        rows = Rows(ids, am, tt, bid, bsc, rep(m), jnp.tile(alphas, b), jnp.tile(weights, b), tg)
        contrib = row_contributions(params, cfg, rows, output).reshape(b, steps, t).sum(1)
        base = Rows(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]), token_types(batch), base_ids,
                    base_scale, m, jnp.zeros(b), jnp.zeros(b), tgt)
        return contrib, row_outputs(params, cfg, base, output)

    contribs, f_bases = jax.lax.map(one_unit, jnp.arange(t, dtype=jnp.int32))  # [U, B, T], [U, B]
    raw = contribs.sum(0)
    present = (uid[None, :, :] == jnp.arange(t)[:, None, None]).any(-1)  # [U, B]
    gaps = contribs.sum(-1) - (f_x[None] - f_bases)
    unit_delta = jnp.where(present, gaps, 0.0).T  # [B, U]
    worst = jnp.take_along_axis(unit_delta, jnp.argmax(jnp.abs(unit_delta), -1)[:, None], 1)[:, 0]
    return SIGAttribution(normalise(raw), raw, tgt, prob, f_x, unit_delta, worst)


def _finish(raw: np.ndarray, units: np.ndarray, f_gap: np.ndarray) -> tuple[np.ndarray, float]:
    """Scores raw / ||raw||_2; delta the unit completeness gap of largest magnitude."""
    gaps = units @ raw - f_gap
    norm = np.linalg.norm(raw)
    return (raw / norm if norm > 0 else raw), float(gaps[np.argmax(np.abs(gaps))])


def _validate(o: Mapping[str, Any]) -> None:
    from jaxattr.attribution.registry import check_choice

    check_path_options(o)
    check_choice("unit", o["unit"], ("token", "word"))


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, Paths, register

    register(MethodSpec("sig", sequential_integrated_gradients, {**PATH_OPTIONS, "unit": "token"},
                        cost=path_cost, validate=_validate, token_models=True,
                        paths=Paths(unit_ids=lambda batch, o: unit_ids(batch, o["unit"]), finish=_finish),
                        description="sequential integrated gradients: one path per token (or word)"))


_register()
