"""DACT-BERT: accumulation and loss vs a hand-written NumPy reference, the halting bound's guarantee,
and batched early exit (with compaction) vs example-by-example early exit and an all-layers oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxattr.models import forward, init_params, tiny_config
from jaxattr.training import dact, early_exit


def _batch(rng: np.random.Generator, b: int, t: int, vocab: int = 100) -> dict[str, np.ndarray]:
    ids = rng.integers(3, vocab, (b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    lengths = rng.integers(3, t + 1, b)
    mask[np.arange(t)[None] >= lengths[:, None]] = 0
    ids[:, 0] = 2
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _model(seed: int, *, layers: int = 4, labels: int = 3, halt_bias: float = -1.0, regression: bool = False,
           spread: float | None = 2.0):
    """A random tiny DACT model whose heads really vary between inputs.

    Random encoders map all inputs to nearly the same [CLS] state, so the random heads are standardised
    on a calibration batch: per block, class logits and halting logits get zero mean and `spread` standard
    deviation over inputs, and the halting logits are shifted by `halt_bias` (negative = halt earlier).
    `spread=None` keeps the raw N(0, 1) heads (no float32 cancellation: for exact numeric comparisons).
    """
    kw = dict(num_layers=layers, num_labels=1 if regression else labels)
    if regression:
        kw["problem_type"] = "regression"
    cfg = tiny_config("bert", **kw)
    enc = init_params(cfg, jax.random.key(seed))
    params = dact.init_params(cfg, enc, jax.random.key(seed + 1000), cls_std=1.0, halt_std=1.0, halt_bias=halt_bias)
    if spread is None:
        return cfg, params
    calib = _batch(np.random.default_rng(seed + 500), 64, 12)
    cls = np.asarray(forward(enc, cfg, calib["input_ids"], calib["attention_mask"]).cls, np.float64)
    d = jax.tree.map(np.array, jax.device_get(params["dact"]))
    for n in range(layers):
        for part, shift in (("cls", 0.0), ("halt", halt_bias)):
            k = np.asarray(d[part]["kernel"][n], np.float64)
            z = cls[n] @ k
            std = z.std(0) + 1e-9
            d[part]["kernel"][n] = (k / std * spread).astype(np.float32)
            d[part]["bias"][n] = (-z.mean(0) / std * spread + shift).astype(np.float32)
    params["dact"] = jax.tree.map(jnp.asarray, d)
    return cfg, params


_loss = jax.jit(dact.loss, static_argnames=("cfg", "tau", "ponder", "deterministic"))


# ----------------------------------------------------------------------------------------------
# NumPy reference (written from the paper's equations, independently of the JAX code).


def _np_reference(cls: np.ndarray, dact_p: dict, labels: np.ndarray, tau: float, regression: bool):
    L, B, _ = cls.shape
    a = np.zeros((B, dact_p["cls"]["bias"].shape[-1]))
    p = np.ones(B)
    a_all, p_all, h_all = [], [], []
    for n in range(L):
        z = cls[n] @ np.asarray(dact_p["cls"]["kernel"][n], np.float64) + np.asarray(dact_p["cls"]["bias"][n])
        if regression:
            y = z
        else:
            e = np.exp(z - z.max(-1, keepdims=True))
            y = e / e.sum(-1, keepdims=True)
        h = 1 / (1 + np.exp(-(cls[n] @ np.asarray(dact_p["halt"]["kernel"][n], np.float64)
                               + float(dact_p["halt"]["bias"][n]))))
        a_new = np.empty_like(a)
        for i in range(B):  # the recurrence, literally
            a_new[i] = y[i] * p[i] + a[i] * (1 - p[i])
        a = a_new
        p = h * p
        a_all.append(a.copy())
        p_all.append(p.copy())
        h_all.append(h)
    if regression:
        task = np.mean((a[:, 0] - labels) ** 2)
    else:
        task = -np.mean(np.log(a[np.arange(B), labels]))
    loss_p = task + tau * np.mean(np.sum(p_all, axis=0))
    loss_h = task + tau * np.mean(np.sum(h_all, axis=0))
    return np.stack(a_all), np.stack(p_all), loss_p, loss_h


@pytest.mark.parametrize("regression", [False, pytest.param(True, marks=pytest.mark.extra)])
def test_accumulation_and_loss_match_numpy(regression):
    cfg, params = _model(0, regression=regression, spread=None, halt_bias=0.5)
    rng = np.random.default_rng(0)
    batch = _batch(rng, 48, 12)
    batch["labels"] = (rng.normal(size=48).astype(np.float32) if regression
                       else rng.integers(0, cfg.num_labels, 48).astype(np.int32))
    out = dact.apply_jit(params, cfg, batch["input_ids"], batch["attention_mask"])
    cls = np.asarray(out.cls, np.float64)
    a_ref, p_ref, loss_p, loss_h = _np_reference(cls, jax.device_get(params["dact"]), batch["labels"], 0.3,
                                                 regression)
    np.testing.assert_allclose(np.asarray(out.a), a_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.p), p_ref, rtol=1e-5, atol=1e-7)
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    got_p, aux = _loss(params, cfg, jb, tau=0.3, ponder="p")
    got_h, _ = _loss(params, cfg, jb, tau=0.3, ponder="h")
    np.testing.assert_allclose(float(got_p), loss_p, rtol=1e-5)
    np.testing.assert_allclose(float(got_h), loss_h, rtol=1e-5)
    assert abs(loss_p - loss_h) > 1e-4  # the two ponder costs really differ, so each check means something
    # the default is the DACT-BERT paper's eq. 3 (sum of h_n), in the loss and in the training config
    np.testing.assert_allclose(float(_loss(params, cfg, jb, tau=0.3)[0]), loss_h, rtol=1e-5)
    from jaxattr.training.config import TrainConfig
    assert TrainConfig().dact.ponder == "h"
    # the weight mask: a zero-weight row does not count
    jb["weight"] = jnp.asarray([1.0] * 40 + [0.0] * 8, jnp.float32)
    sub = {k: v[:40] for k, v in batch.items()}
    _, _, l5, _ = _np_reference(cls[:, :40], jax.device_get(params["dact"]), sub["labels"], 0.3, regression)
    np.testing.assert_allclose(float(_loss(params, cfg, jb, tau=0.3, ponder="p")[0]), l5, rtol=1e-5)


def test_loss_gradients_reach_heads_and_backbone():
    cfg, params = _model(1)
    rng = np.random.default_rng(1)
    batch = {k: jnp.asarray(v) for k, v in _batch(rng, 8, 12).items()}
    batch["labels"] = jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1])
    g = jax.jit(jax.grad(lambda p: dact.loss(p, cfg, batch, deterministic=False, rng=jax.random.key(0))[0]))(params)
    for part in (g["dact"]["cls"]["kernel"], g["dact"]["halt"]["kernel"], g["encoder"]["layers"]["query"]["kernel"]):
        assert float(jnp.abs(part).max()) > 0


def test_halting_bound_guarantee_on_random_sequences():
    """Pure-function check over many random (y, h) sequences: the class at exit is argmax a_N."""
    rng = np.random.default_rng(2)
    L, B, C = 8, 4000, 4
    cfg = tiny_config("bert", num_layers=L, num_labels=C)
    z = rng.normal(scale=3.0, size=(L, B, C))
    y = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    h = 1 / (1 + np.exp(-rng.normal(loc=-1.5, scale=2.0, size=(L, B))))
    a, p = dact.accumulate(jnp.asarray(y, jnp.float32), jnp.asarray(h, jnp.float32))
    out = dact.DactOutput(a, p, jnp.asarray(y), jnp.asarray(h), jnp.zeros((L, B, 1)))
    exit_layer, a_exit = dact.oracle_exit(out, cfg)
    final = np.asarray(a[-1]).argmax(-1)
    np.testing.assert_array_equal(a_exit.argmax(-1), final)
    assert (exit_layer < L).mean() > 0.3 and (exit_layer > 1).mean() > 0.1  # not vacuous
    # and the bound is not trivially loose: with d = 0 it is always satisfied
    assert bool(jnp.all(dact.halting_condition(a[-1], p[-1], 0, cfg)))


def test_early_exit_predicts_the_full_models_class():
    """Many random inputs on several random models: the class at exit = argmax a_N with all layers."""
    exits = []
    for seed, hb in [(0, -2.0), (1, -0.5), (2, 0.5), (3, -1.0), (4, -3.0), (5, 0.0)]:
        cfg, params = _model(seed, halt_bias=hb)
        for k in range(2):
            batch = _batch(np.random.default_rng([seed, k]), 48, 12)
            out = dact.apply_jit(params, cfg, batch["input_ids"], batch["attention_mask"])
            r = dact.predict_early_exit(params, cfg, batch)
            np.testing.assert_array_equal(r.prediction, np.asarray(out.output).argmax(-1))
            exits.append(r.exit_layer)
    e = np.concatenate(exits)
    # halting really happens, at every depth, so the check is not vacuous
    assert (e == 1).sum() > 50 and ((e > 1) & (e < 4)).sum() > 50 and (e == 4).sum() > 20


@pytest.mark.parametrize("seed", [0, 3])
def test_batched_equals_one_by_one_and_oracle(seed):
    cfg, params = _model(seed, halt_bias=-1.0)
    batch = _batch(np.random.default_rng(seed + 10), 20, 12)
    batched = dact.predict_early_exit(params, cfg, batch, granularity=4)
    single = dact.predict_early_exit(params, cfg, batch, one_by_one=True)
    np.testing.assert_array_equal(batched.exit_layer, single.exit_layer)
    # outputs to 1e-4: the calibrated heads amplify float32 rounding differences between batch shapes
    np.testing.assert_allclose(batched.output, single.output, atol=1e-4)
    out = dact.apply_jit(params, cfg, batch["input_ids"], batch["attention_mask"])
    oracle_layer, oracle_a = dact.oracle_exit(out, cfg)
    np.testing.assert_array_equal(batched.exit_layer, oracle_layer)
    np.testing.assert_allclose(batched.output, oracle_a, atol=1e-4)
    # compute falls with the layers saved: rows per block shrink as examples leave
    assert len(set(batched.exit_layer.tolist())) > 1
    assert batched.rows_per_layer[-1] < batched.rows_per_layer[0]
    # no compaction (halted rows stay in the batch): same answers, no saving
    kept = dact.predict_early_exit(params, cfg, batch, compact=False)
    np.testing.assert_array_equal(kept.exit_layer, batched.exit_layer)
    np.testing.assert_allclose(kept.output, batched.output, atol=1e-4)


def test_regression_early_exit_bound():
    cfg, params = _model(4, halt_bias=-1.5, regression=True)
    batch = _batch(np.random.default_rng(4), 48, 12)
    out = dact.apply_jit(params, cfg, batch["input_ids"], batch["attention_mask"])
    tol = 0.05
    r = dact.predict_early_exit(params, cfg, batch, regression_tol=tol, granularity=4)
    assert (r.exit_layer < cfg.num_layers).any()
    a, y = np.asarray(out.a)[..., 0], np.asarray(out.y)[..., 0]
    spread = np.abs(y[:, None] - a[None]).max((0, 1))  # max |y_k - a_j| per example
    np.testing.assert_array_less(np.abs(r.output[:, 0] - a[-1]), tol * spread + 1e-5)


def test_batch_sizes():
    assert early_exit.batch_sizes(64, 8) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert early_exit.batch_sizes(5, 8) == [1, 2, 4, 5]
    assert early_exit.batch_sizes(37, 1) == list(range(1, 38))


def test_integrated_gradients_of_output_and_halting_are_complete():
    """IG axiom (completeness): per output, the token scores sum to F(x) - F(baseline)."""
    cfg, params = _model(0, spread=None, halt_bias=0.0)
    batch = _batch(np.random.default_rng(5), 4, 10)
    special = (np.arange(10)[None] == 0) | (batch["attention_mask"] == 0)
    batch["word_ids"] = np.where(special, -1, np.arange(10)[None]).astype(np.int32)
    ig = jax.jit(dact.integrated_gradients, static_argnames=("cfg", "steps", "mask_id"))
    r = ig(params, cfg, batch, steps=16, mask_id=1)
    gap = np.abs(np.asarray(r.f_x - r.f_baseline))
    assert gap.min() > 1e-5  # the outputs really move between baseline and input
    np.testing.assert_array_less(np.abs(np.asarray(r.delta)), 1e-3 * gap + 1e-6)
    np.testing.assert_allclose(np.asarray(r.output_scores).sum(-1) + np.asarray(r.f_baseline[0]),
                               np.asarray(r.f_x[0]), rtol=1e-3, atol=1e-6)
    assert r.halt_scores.shape == (cfg.num_layers, 4, 10)
    assert np.all(np.asarray(r.halt_scores)[:, special] == 0) and np.all(np.asarray(r.output_scores)[special] == 0)
    out = dact.apply_jit(params, cfg, batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(np.asarray(r.f_x[1:]), np.asarray(out.h), rtol=1e-5)


def test_heads_round_trip_next_to_the_checkpoint(tmp_path):
    from jaxattr.errors import UserError
    from jaxattr.models import minilm_dir
    from jaxattr.models.checkpoint import save_checkpoint

    cfg, params = _model(6, spread=None)
    save_checkpoint(tmp_path, cfg, params["encoder"], minilm_dir())
    with pytest.raises(UserError, match="no dact_heads.npz"):
        dact.load(tmp_path)
    dact.save_heads(tmp_path, jax.device_get(params["dact"]))
    _, loaded = dact.load(tmp_path)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
