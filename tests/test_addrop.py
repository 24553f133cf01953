"""AD-DROP: masks (padding, top-p region, p·q rate), GA against finite differences, IGA completeness,
pseudo/gold labels, chosen layers, cross-tuning."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import binom

from jaxattr.errors import UserError
from jaxattr.models import init_params, tiny_config
from jaxattr.models.encoder import forward
from jaxattr.training import addrop as ad

_attention_gradient = jax.jit(ad.attention_gradient, static_argnums=(1,), static_argnames=("labels", "deterministic"))
_addrop_bias = jax.jit(ad.addrop_bias, static_argnums=(1, 4))
_forward = jax.jit(forward, static_argnums=(1,), static_argnames=("return_attention",))
_candidates = jax.jit(ad.candidate_region, static_argnums=(2, 3))
_drop_mask = jax.jit(ad.drop_mask, static_argnums=(2, 3, 5))


def _batch(b: int = 4, t: int = 12, seed: int = 0, vocab: int = 100) -> dict[str, jnp.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, t + 1, b)
    lengths[0] = t
    am = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, (b, t)).astype(np.int32) * am
    return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(am),
            "token_type_ids": jnp.zeros((b, t), jnp.int32), "labels": jnp.asarray(rng.integers(0, 2, b), jnp.int32),
            "weight": jnp.ones(b, jnp.float32)}


@pytest.fixture(scope="module")
def nodrop():
    """A tiny BERT without dropout, so forward 1 is deterministic and finite differences are exact."""
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.0)
    return cfg, init_params(cfg, jax.random.PRNGKey(3))


def _reference_candidates(scores: np.ndarray, key_mask: np.ndarray, p: float, region: str = "high") -> np.ndarray:
    """Eq. (6) as the reference code (`generate_mask_rev` / `generate_mask`) with Python loops and exact
    integer counts: high = valid keys at/above the floor((1-p) n)-th smallest valid score; low = valid keys
    strictly below the floor(p n)-th smallest."""
    frac = Fraction(str(p))
    out = np.zeros(scores.shape, bool)
    for idx in np.ndindex(scores.shape[:-1]):
        b = idx[1]
        valid = key_mask[b].astype(bool)
        row = scores[idx]
        n = int(valid.sum())
        t = math.floor((frac if region == "low" else 1 - frac) * n)
        thr = np.sort(row[valid])[t]
        out[idx] = valid & ((row < thr) if region == "low" else (row >= thr))
    return out


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_candidate_region_matches_equation_6(p):
    batch = _batch(3, 10, seed=1)
    scores = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 2, 10, 10))
    got = np.asarray(_candidates(scores, batch["attention_mask"], p, "high"))
    want = _reference_candidates(np.asarray(scores), np.asarray(batch["attention_mask"]), p)
    np.testing.assert_array_equal(got, want)
    low = np.asarray(_candidates(scores, batch["attention_mask"], p, "low"))
    want_low = _reference_candidates(np.asarray(scores), np.asarray(batch["attention_mask"]), p, "low")
    np.testing.assert_array_equal(low, want_low)
    n = np.asarray(batch["attention_mask"]).sum(-1)
    assert (low.sum(-1) == np.floor(np.asarray([float(Fraction(str(p)) * k) for k in n]))[None, :, None, None]).all()


def test_candidate_region_with_ties_signed_zeros_and_extremes():
    """Ties, -0.0 vs +0.0, infinities and huge magnitudes: the bisection threshold equals the sort's."""
    batch = _batch(3, 10, seed=2)
    rng = np.random.default_rng(5)
    scores = rng.integers(-2, 3, (2, 3, 2, 10, 10)).astype(np.float32)
    scores[scores == 0] = rng.choice([0.0, -0.0], size=int((scores == 0).sum()))
    scores[0, 0, 0, 0, :3] = [np.inf, -np.inf, 3e38]
    scores[1, 2, 1, 4, :2] = [-3e-38, 1e-45]
    for p in (0.2, 0.5, 0.7):
        for region in ("high", "low"):
            got = np.asarray(_candidates(jnp.asarray(scores), batch["attention_mask"], p, region))
            want = _reference_candidates(scores, np.asarray(batch["attention_mask"]), p, region)
            np.testing.assert_array_equal(got, want)


def test_drops_only_valid_positions_in_the_top_region_at_rate_pq():
    p, q = 0.3, 0.2
    batch = _batch(16, 24, seed=2)
    am = np.asarray(batch["attention_mask"])
    scores = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 4, 24, 24))  # continuous: no ties
    dropped = np.asarray(_drop_mask(scores, batch["attention_mask"], p, q, jax.random.PRNGKey(2), "high"))
    valid = np.broadcast_to(am[None, :, None, None, :].astype(bool), dropped.shape)
    assert not (dropped & ~valid).any(), "a padding position was dropped"
    cand = _reference_candidates(np.asarray(scores), am, p)
    assert not (dropped & ~cand).any(), "a dropped position lies outside the top-p region of its row"
    # Candidates per row: n - floor((1-p) n), i.e. a fraction in [p, p + 1/n) of the valid keys.
    n = am.sum(-1)
    per_row = n - np.asarray([math.floor((1 - Fraction(str(p))) * k) for k in n])
    k = int(cand.sum())
    assert k == int((per_row[None, :, None, None] * np.ones(dropped.shape[:-1], int)).sum())
    # Dropped ~ Binomial(k, q): a two-sided test at level 1e-6.
    lo, hi = binom.ppf(5e-7, k, q), binom.ppf(1 - 5e-7, k, q)
    assert lo <= dropped.sum() <= hi
    frac = dropped.sum() / valid.sum()
    assert abs(frac - p * q) < 0.02, frac  # ≈ p·q of the valid positions (the region rounds up)


def test_drop_rate_is_not_a_constant():
    """The statistical test above can fail: q = 0.5 gives a different count."""
    batch = _batch(16, 24, seed=2)
    scores = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 4, 24, 24))
    a = np.asarray(_drop_mask(scores, batch["attention_mask"], 0.3, 0.2, jax.random.PRNGKey(2), "high")).sum()
    b = np.asarray(_drop_mask(scores, batch["attention_mask"], 0.3, 0.5, jax.random.PRNGKey(2), "high")).sum()
    assert b > 2 * a


def test_ga_equals_finite_difference(nodrop):
    cfg, params = nodrop
    batch = _batch(2, 6, seed=4)
    grad, logits, _ = _attention_gradient(params, cfg, batch, None, labels="pseudo", deterministic=True)
    c = np.asarray(jnp.argmax(logits, -1))
    zeros = jnp.zeros_like(grad)

    def f(perturb):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb)
        return out.logits[jnp.arange(2), c]

    rng = np.random.default_rng(0)
    eps = 1e-2
    idxs = [(rng.integers(cfg.num_layers), rng.integers(2), rng.integers(cfg.num_heads), 0, rng.integers(6))
            for _ in range(12)]
    bumps = jnp.stack([zeros.at[idx].set(eps) for idx in idxs])
    fplus, fminus = jax.jit(jax.vmap(f))(bumps), jax.jit(jax.vmap(f))(-bumps)
    for i, idx in enumerate(idxs):
        fd = (fplus[i] - fminus[i])[idx[1]] / (2 * eps)
        np.testing.assert_allclose(float(grad[idx]), float(fd), atol=2e-4, rtol=2e-2)
    # The gradient lands where it should: CLS query rows of the last layer carry signal, padding keys none.
    assert float(jnp.abs(grad[-1, :, :, 0]).max()) > 0


def test_pseudo_and_gold_labels(nodrop):
    cfg, params = nodrop
    batch = _batch(4, 8, seed=5)
    _, logits, _ = _attention_gradient(params, cfg, batch, None, deterministic=True)
    pseudo = jnp.argmax(logits, -1)
    gold = 1 - pseudo  # every gold label disagrees with the prediction
    batch = {**batch, "labels": gold}
    g_pseudo, _, _ = _attention_gradient(params, cfg, batch, None, labels="pseudo", deterministic=True)
    g_gold, _, _ = _attention_gradient(params, cfg, batch, None, labels="gold", deterministic=True)

    def grad_of(c):
        def f(perturb):
            out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb)
            return jnp.sum(out.logits[jnp.arange(4), c])
        return jax.jit(jax.grad(f))(jnp.zeros_like(g_pseudo))

    np.testing.assert_allclose(g_pseudo, grad_of(pseudo), atol=1e-6)
    np.testing.assert_allclose(g_gold, grad_of(gold), atol=1e-6)
    assert float(jnp.abs(g_pseudo - g_gold).max()) > 1e-4


def test_regression_uses_negative_loss_gradient(nodrop):
    cfg, params = nodrop
    cfg = cfg.replace(num_labels=1, problem_type="regression")
    params = init_params(cfg, jax.random.PRNGKey(3))
    batch = {**_batch(3, 7, seed=6), "labels": jnp.asarray([0.5, -1.0, 2.0])}
    g, _, _ = _attention_gradient(params, cfg, batch, None, deterministic=True)

    def neg_loss(perturb):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb)
        return -jnp.sum((out.logits[:, 0] - batch["labels"]) ** 2)

    np.testing.assert_allclose(g, jax.jit(jax.grad(neg_loss))(jnp.zeros_like(g)), atol=1e-6)


def test_iga_completeness(nodrop):
    """Integrated gradients sum to F(A) - F(0·A_l) for the scaled layer (IG completeness), m large."""
    cfg, params = nodrop
    batch = _batch(2, 6, seed=7)
    layer = 1
    iga = jax.jit(ad.integrated_attention_gradient, static_argnums=(1, 4), static_argnames=("steps", "deterministic"))
    b = iga(params, cfg, batch, None, (layer,), steps=64, deterministic=True)
    out = _forward(params, cfg, batch["input_ids"], batch["attention_mask"], return_attention=True)
    c = jnp.argmax(out.logits, -1)
    perturb = jnp.zeros_like(out.attention).at[layer].set(-out.attention[layer])
    base = _forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb).logits
    want = (out.logits - base)[jnp.arange(2), c]
    got = jnp.sum(b[0], axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3)


def test_bias_only_on_chosen_layers_and_variants(nodrop):
    cfg, params = nodrop
    batch = _batch(4, 10, seed=8)
    key = jax.random.PRNGKey(0)
    for attribution in ("ga", "aa", "rd"):  # IGA: see test_iga_completeness
        acfg = ad.ADDropConfig(attribution=attribution, layers=[2], p=0.5, q=0.5, iga_steps=2).validate(2)
        bias = np.asarray(_addrop_bias(params, cfg, batch, key, acfg))
        assert bias.shape == (2, 4, cfg.num_heads, 10, 10)
        assert (bias[0] == 0).all() and (bias[1] < 0).any(), attribution
        am = np.asarray(batch["attention_mask"]).astype(bool)
        assert (bias[1][~np.broadcast_to(am[:, None, None, :], bias[1].shape)] == 0).all()
    # AA scores are the attention weights themselves.
    aa = jax.jit(ad.attribution_scores, static_argnums=(1, 4))(params, cfg, batch, key,
                                                               ad.ADDropConfig(attribution="aa").validate(2))
    att = _forward(params, cfg, batch["input_ids"], batch["attention_mask"], return_attention=True).attention
    np.testing.assert_allclose(aa, att, atol=1e-6)


def test_high_vs_low_region_pick_different_positions(nodrop):
    cfg, params = nodrop
    batch = _batch(4, 10, seed=9)
    grad, _, _ = _attention_gradient(params, cfg, batch, None, deterministic=True)
    hi = np.asarray(_candidates(grad[:1], batch["attention_mask"], 0.3, "high"))
    lo = np.asarray(_candidates(grad[:1], batch["attention_mask"], 0.3, "low"))
    g = np.asarray(grad[:1])
    # Rows whose scores are not all tied: the high region's minimum exceeds the low region's maximum.
    for idx in zip(*np.nonzero(hi.any(-1) & lo.any(-1))):
        if np.ptp(g[idx][np.asarray(batch["attention_mask"])[idx[1]] == 1]) > 0:
            assert g[idx][hi[idx]].min() > g[idx][lo[idx]].max()


def test_cross_tuning_alternates():
    assert [ad.use_addrop(e, True) for e in range(1, 7)] == [False, True] * 3
    assert all(ad.use_addrop(e, False) for e in range(1, 7))


def test_trainer_method_modes(tiny_bert):
    from jaxattr.models import Model
    from jaxattr.training.config import TrainConfig
    from jaxattr.training.trainer import build_method

    cfg, params = tiny_bert
    model = Model(cfg, params, None, "tiny")
    m = build_method(TrainConfig(method="addrop"), model)
    assert [m.mode_for_epoch(e) for e in (1, 2, 3, 4)] == ["plain", "addrop", "plain", "addrop"]
    m = build_method(TrainConfig(method="addrop", addrop=ad.ADDropConfig(cross_tuning=False)), model)
    assert [m.mode_for_epoch(e) for e in (1, 2, 3)] == ["addrop"] * 3
    assert build_method(TrainConfig(method="plain"), model).mode_for_epoch(2) == "plain"


@pytest.mark.parametrize("bad, msg", [
    (dict(p=0.0), "addrop.p"), (dict(q=1.0), "addrop.q"), (dict(p=1.5), "addrop.p"),
    (dict(attribution="xx"), "attribution"), (dict(layers=[0]), "layers"), (dict(labels="silver"), "labels"),
    (dict(region="middle"), "region"),
])
def test_bad_addrop_settings(bad, msg):
    with pytest.raises(UserError, match=msg):
        ad.ADDropConfig(**bad).validate(num_layers=2)


def test_sweep_writes_table_and_heatmap(tmp_path):
    from jaxattr.training.sweep import write_outputs

    rows = [{"p": p, "q": q, "dev_accuracy": p + q / 10, "test_accuracy": 0.5} for p in (0.1, 0.3) for q in (0.2, 0.4)]
    paths = write_outputs(rows, tmp_path, "accuracy")
    md = paths["md"].read_text().splitlines()
    assert md[2] == "| p \\ q | 0.2 | 0.4 |"
    assert md[5] == "| 0.3 | 0.3200 | 0.3400 |"
    assert paths["png"].stat().st_size > 1000 and len(paths["csv"].read_text().splitlines()) == 5


def test_sweep_rejects_bad_grid(capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "train" / "sweep_addrop.py"
    spec = importlib.util.spec_from_file_location("sweep_addrop", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--p", "0.3", "1.0", "--q", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strictly between 0 and 1" in err[0]


@pytest.mark.parametrize("p,n,high,low", [(0.8, 5, 4, 4), (0.8, 10, 8, 8), (0.9, 10, 9, 9), (0.3, 10, 3, 3),
                                          (0.3, 7, 3, 2), (0.2, 5, 1, 1)])
def test_region_counts_are_exact_integers(p, n, high, low):
    """float64 gives int((1 - 0.8) * 5) = 0, one extra candidate; the counts use exact rational arithmetic."""
    scores = jax.random.normal(jax.random.PRNGKey(4), (1, 1, 1, 2, n))
    mask = jnp.ones((1, n), jnp.int32)
    assert ad.threshold_index(p, n, "high") == n - high
    assert int(np.asarray(_candidates(scores, mask, p, "high")).sum(-1).max()) == high
    assert int(np.asarray(_candidates(scores, mask, p, "low")).sum(-1).max()) == low


def test_rd_drops_each_valid_position_with_probability_pq(nodrop):
    """RD as the reference: independent Bernoulli(p·q) per valid position, no fixed-size region."""
    cfg, params = nodrop
    p, q = 0.5, 0.4
    batch = _batch(8, 12, seed=3)
    acfg = ad.ADDropConfig(attribution="rd", p=p, q=q).validate(2)
    bias = np.asarray(_addrop_bias(params, cfg, batch, jax.random.PRNGKey(7), acfg))
    am = np.asarray(batch["attention_mask"]).astype(bool)
    valid = np.broadcast_to(am[None, :, None, None, :], bias.shape)
    dropped = bias < 0
    assert not (dropped & ~valid).any()
    k = int(valid.sum())
    lo, hi = binom.ppf(5e-7, k, p * q), binom.ppf(1 - 5e-7, k, p * q)
    assert lo <= dropped.sum() <= hi
    # rows are not all the same size: the count per row varies (a fixed region would give q·region each)
    per_row = dropped.sum(-1)[valid.any(-1)]
    assert per_row.std() > 0


def test_iga_reference_weighting_is_k_over_m(nodrop):
    """weighting='reference' = A ⊙ (1/m) Σ_k (k/m) ∂F(k/m·A)/∂A, as the AD-DROP code differentiates."""
    cfg, params = nodrop
    batch = _batch(2, 6, seed=7)
    layer, m = 0, 3
    iga = jax.jit(ad.integrated_attention_gradient, static_argnums=(1, 4),
                  static_argnames=("steps", "deterministic", "weighting"))
    got = iga(params, cfg, batch, None, (layer,), steps=m, deterministic=True, weighting="reference")[0]
    hao = iga(params, cfg, batch, None, (layer,), steps=m, deterministic=True, weighting="hao")[0]
    out = _forward(params, cfg, batch["input_ids"], batch["attention_mask"], return_attention=True)
    c = jnp.argmax(out.logits, -1)
    a = out.attention[layer]

    def f(perturb):
        o = forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb)
        return jnp.sum(o.logits[jnp.arange(2), c])

    g = jax.jit(jax.grad(f))
    want = sum((k / m) * g(jnp.zeros_like(out.attention).at[layer].set((k / m - 1) * a))[layer]
               for k in range(1, m + 1)) * a / m
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert float(jnp.abs(got - hao).max()) > 1e-6


def test_gradient_is_taken_after_attention_dropout():
    """The reference takes ∂F/∂A at the dropped probabilities: with attention dropout on (same key), the
    perturbation's gradient matches finite differences of that forward and is non-zero where A was dropped
    (a perturbation added before dropout would get exactly 0 there)."""
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.5)
    params = init_params(cfg, jax.random.PRNGKey(3))
    batch, key = _batch(2, 6, seed=4), jax.random.PRNGKey(7)
    t = batch["input_ids"].shape[1]
    zeros = jnp.zeros((cfg.num_layers, 2, cfg.num_heads, t, t), jnp.float32)

    def f(perturb):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], attn_perturb=perturb,
                      deterministic=False, rng=key)
        return out.logits[:, 0].sum()

    grad = jax.grad(f)(zeros)
    eps = 1e-2
    for idx in [(0, 0, 0, 0, 1), (1, 1, 1, 2, 3), (1, 0, 0, 0, 0)]:
        bump = zeros.at[idx].set(eps)
        fd = (f(bump) - f(-bump)) / (2 * eps)
        np.testing.assert_allclose(float(grad[idx]), float(fd), atol=2e-4, rtol=2e-2)
    # Where dropout zeroed A the gradient still flows (one row of the last layer's valid keys).
    assert float(jnp.abs(grad[-1, 0, :, 0, : int(batch["attention_mask"][0].sum())]).min()) > 0
