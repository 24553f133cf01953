"""DeeBERT baseline: off-ramp logits and stage-2 loss vs NumPy, the frozen backbone in stage 2, and the
entropy exit batched (shared compaction engine) vs one example at a time vs an all-layers oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxattr.models import forward, init_params, tiny_config
from jaxattr.training import deebert
from jaxattr.training.state import make_optimizer


def _batch(rng: np.random.Generator, b: int, t: int) -> dict[str, np.ndarray]:
    ids = rng.integers(3, 100, (b, t)).astype(np.int32)
    mask = (np.arange(t)[None] < rng.integers(3, t + 1, b)[:, None]).astype(np.int32)
    ids[:, 0] = 2
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _model(seed: int = 0, spread: float | None = 3.0):
    """Tiny random DeeBERT whose exits' logits really vary between inputs.

    Random encoders map all inputs to nearly the same [CLS] state, so each exit's output layer is
    standardised on a calibration batch (zero mean, `spread` std per class over inputs); `None` keeps
    the raw initialisation (for exact numeric comparisons).
    """
    cfg = tiny_config("bert", num_layers=4, num_labels=3)
    params = deebert.init_params(cfg, init_params(cfg, jax.random.key(seed)), jax.random.key(seed + 7))
    if spread is None:
        return cfg, params
    calib = _batch(np.random.default_rng(seed + 100), 64, 10)
    cls = np.asarray(forward(params["encoder"], cfg, calib["input_ids"], calib["attention_mask"]).cls, np.float64)
    host = jax.tree.map(np.array, jax.device_get(params))
    for n in range(cfg.num_layers):
        head = host["encoder"]["head"] if n == cfg.num_layers - 1 else jax.tree.map(lambda x, n=n: x[n], host["ramps"])
        pooled = np.tanh(cls[n] @ head["dense"]["kernel"] + head["dense"]["bias"])
        k = head["out"]["kernel"].astype(np.float64)
        z = pooled @ k
        std = z.std(0) + 1e-9
        kernel, bias = (k / std * spread).astype(np.float32), (-z.mean(0) / std * spread).astype(np.float32)
        if n == cfg.num_layers - 1:
            host["encoder"]["head"]["out"].update(kernel=kernel, bias=bias)
        else:
            host["ramps"]["out"]["kernel"][n], host["ramps"]["out"]["bias"][n] = kernel, bias
    return cfg, jax.tree.map(jnp.asarray, host)


def _np_head(p: dict, x: np.ndarray) -> np.ndarray:
    z = np.tanh(x @ np.asarray(p["dense"]["kernel"], np.float64) + np.asarray(p["dense"]["bias"]))
    return z @ np.asarray(p["out"]["kernel"], np.float64) + np.asarray(p["out"]["bias"])


def test_ramp_logits_and_stage2_loss_match_numpy():
    cfg, params = _model(spread=None)
    rng = np.random.default_rng(0)
    batch = _batch(rng, 16, 10)
    batch["labels"] = rng.integers(0, 3, 16).astype(np.int32)
    cls = np.asarray(forward(params["encoder"], cfg, batch["input_ids"], batch["attention_mask"]).cls, np.float64)
    host = jax.device_get(params)
    ref = [_np_head(jax.tree.map(lambda x, i=i: x[i], host["ramps"]), cls[i]) for i in range(3)]
    ref.append(_np_head(host["encoder"]["head"], cls[3]))  # the last exit is the model's own classifier
    got = jax.jit(deebert.ramp_logits, static_argnames="cfg")(params, cfg, batch["input_ids"],
                                                               batch["attention_mask"])
    np.testing.assert_allclose(np.asarray(got), np.stack(ref), rtol=1e-4, atol=1e-4)
    logp = [r - np.log(np.exp(r - r.max(-1, keepdims=True)).sum(-1, keepdims=True)) - r.max(-1, keepdims=True)
            for r in ref[:3]]
    want = sum(-np.mean(lp[np.arange(16), batch["labels"]]) for lp in logp)
    loss, _ = deebert.ramp_loss(params, cfg, {k: jnp.asarray(v) for k, v in batch.items()})
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)


def test_stage2_trains_ramps_only():
    cfg, params = _model(1, spread=None)
    rng = np.random.default_rng(1)
    batch = {k: jnp.asarray(v) for k, v in _batch(rng, 8, 10).items()}
    batch["labels"] = jnp.asarray(rng.integers(0, 3, 8))
    fn = deebert.make_stage2_loss_fn(cfg)
    grads = jax.jit(jax.grad(lambda p: fn(p, batch, jax.random.key(0), False)[0]))(params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["encoder"]))  # stop_gradient
    assert float(jnp.abs(grads["ramps"]["out"]["kernel"]).max()) > 0
    tx = deebert.stage2_optimizer(make_optimizer(1e-2, 10, 0, weight_decay=0.1))
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree.leaves(new["encoder"]), jax.tree.leaves(params["encoder"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # weight decay cannot move it either
    assert float(jnp.abs(new["ramps"]["out"]["kernel"] - params["ramps"]["out"]["kernel"]).max()) > 0


def test_batched_entropy_exit_equals_one_by_one_and_oracle():
    cfg, params = _model(2)
    batch = _batch(np.random.default_rng(2), 24, 10)
    seen = []
    for s in (0.2, 0.6, 0.9):
        batched = deebert.predict_early_exit(params, cfg, batch, s, granularity=4)
        oracle_layer, oracle_p = deebert.oracle_exit(params, cfg, batch, s)
        np.testing.assert_array_equal(batched.exit_layer, oracle_layer)
        np.testing.assert_allclose(batched.output, oracle_p, atol=1e-4)
        seen.append(batched.exit_layer)
    single = deebert.predict_early_exit(params, cfg, batch, 0.6, one_by_one=True)
    np.testing.assert_array_equal(single.exit_layer, seen[1])
    e = np.concatenate(seen)
    assert (e == 1).any() and (e == 4).any() and len(np.unique(e)) >= 3  # exits really spread over layers
    # threshold 0: nobody exits early and the output is the full model's softmax
    full = deebert.predict_early_exit(params, cfg, batch, 0.0)
    assert (full.exit_layer == 4).all()
    logits = forward(params["encoder"], cfg, batch["input_ids"], batch["attention_mask"]).logits
    # 1e-4 as above: the standardised exits amplify float32 rounding (which depends on the batch's
    # blocking) by ~1e3; on the raw initialisation the two agree to 3e-8
    np.testing.assert_allclose(full.output, np.asarray(jax.nn.softmax(logits)), atol=1e-4)


def test_entropy_matches_scipy():
    from scipy.stats import entropy as sp_entropy

    p = np.random.default_rng(3).dirichlet(np.ones(4), size=50)
    p[0] = [1, 0, 0, 0]
    np.testing.assert_allclose(np.asarray(deebert.entropy(jnp.asarray(p, jnp.float32))), sp_entropy(p, axis=-1),
                               atol=1e-5)


def test_ramps_round_trip_next_to_the_checkpoint(tmp_path):
    import pytest

    from jaxattr.errors import UserError
    from jaxattr.models import minilm_dir
    from jaxattr.models.checkpoint import save_checkpoint

    cfg, params = _model(3, spread=None)
    save_checkpoint(tmp_path, cfg, params["encoder"], minilm_dir())
    with pytest.raises(UserError, match="no deebert_ramps.npz"):
        deebert.load(tmp_path)
    deebert.save_ramps(tmp_path, jax.device_get(params["ramps"]))
    _, loaded = deebert.load(tmp_path)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
