"""Every method on every encoder family (issue "Bring your own encoder").

Each family's tiny random HF model (tests/hf_tiny.py, the oracle for its logits in test_encoder.py) is
loaded through our HF reader and run through IG (the completeness axiom is the check), SIG, IBA, LIME,
one AD-DROP training step, DACT and DeeBERT. A family whose layout breaks an intervention point
(word embeddings, after_layer, attn_bias, attn_perturb, per-block [CLS] states) fails here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hf_tiny import FAMILIES, random_batch, save_tiny

from jaxattr.attribution import integrated_gradients, sig
from jaxattr.attribution.iba import iba
from jaxattr.attribution.lime import lime
from jaxattr.models import forward, load_hf_dir
from jaxattr.training import addrop as ad
from jaxattr.training import dact, deebert

MASK_ID = 4
# XLM-R and CamemBERT are RoBERTa tensor for tensor (their logit parity is in test_encoder.py)
DISTINCT = tuple(f for f in FAMILIES if f not in ("xlm-roberta", "camembert"))


@pytest.fixture(scope="module", params=DISTINCT)
def family_model(request, tmp_path_factory):
    """(family, cfg, params, batch with word_ids): a tiny random HF model of each family."""
    d = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, d)
    cfg, params = load_hf_dir(d)
    batch = {k: jnp.asarray(v) for k, v in random_batch(request.param, lengths=(12, 7, 9)).items()}
    am = np.asarray(batch["attention_mask"])
    n = am.sum(-1)
    pos = np.arange(am.shape[1])[None]
    special = (pos == 0) | (pos == n[:, None] - 1) | (am == 0)
    batch["word_ids"] = jnp.asarray(np.where(special, -1, pos - 1), jnp.int32)
    return request.param, cfg, params, batch


def test_ig_completeness(family_model):
    family, cfg, params, batch = family_model
    res = jax.jit(lambda p, b: integrated_gradients(p, cfg, b, steps=50, mask_id=MASK_ID,
                                                    pad_id=cfg.pad_token_id))(params, batch)
    gap = np.asarray(res.f_x - res.f_baseline)
    assert np.all(np.abs(gap) > 1e-2), f"{family}: input and baseline give the same output"
    # A ReLU head (DistilBERT's pre_classifier) has kinks on the path that Gauss-Legendre converges on
    # slowly (measured at 50/200/800 steps: 2.4%/1.0%/0.3% of the gap); smooth heads reach ~1e-7.
    tol = 5e-2 if cfg.family == "distilbert" else 1e-3
    np.testing.assert_array_less(np.abs(np.asarray(res.delta)), tol * np.abs(gap))
    special = np.asarray(batch["word_ids"]) < 0
    assert np.all(np.asarray(res.scores)[special] == 0)


# the per-family runs of the methods and of AD-DROP beyond three distinct layouts are second checks (make test-all)
SMOKE = [f if f in ("bert", "modernbert", "deberta-v2") else pytest.param(f, marks=pytest.mark.extra) for f in DISTINCT]


@pytest.mark.parametrize("family_model", SMOKE, indirect=True)
def test_sig_iba_lime_run_and_respect_special_tokens(family_model):
    family, cfg, params, batch = family_model
    special = np.asarray(batch["word_ids"]) < 0
    s = jax.jit(lambda p, b: sig(p, cfg, b, steps=4, mask_id=MASK_ID, pad_id=cfg.pad_token_id))(params, batch)
    scores = np.asarray(s.scores)
    assert np.isfinite(scores).all() and np.all(scores[special] == 0) and np.any(scores[~special] != 0)
    key = jax.random.key(0)
    m = np.asarray(iba(params, cfg, batch, layer=1, steps=3, samples=2, key=key).scores)
    assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 and np.ptp(m[~special]) > 0
    li = np.asarray(lime(params, cfg, batch, key=key, samples=16).scores)
    assert np.isfinite(li).all() and np.all(li[special] == 0)


@pytest.mark.parametrize("family_model", SMOKE, indirect=True)
def test_one_addrop_step(family_model):
    """One AD-DROP (GA) step: the drop bias only touches valid keys and the parameters move."""
    family, cfg, params, batch = family_model
    batch = {**batch, "labels": jnp.asarray([0, 1, 2], jnp.int32)}
    acfg = ad.ADDropConfig(p=0.5, q=0.5).validate(cfg.num_layers)
    key = jax.random.key(1)
    bias = np.asarray(jax.jit(ad.addrop_bias, static_argnums=(1, 4))(params, cfg, batch, key, acfg))
    am = np.asarray(batch["attention_mask"]).astype(bool)
    assert (bias < 0).any() and (bias[np.broadcast_to(~am[None, :, None, None, :], bias.shape)] == 0).all()

    def loss(p):
        logits = forward(p, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         attn_bias=jnp.asarray(bias), deterministic=False, rng=key).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0


def test_dact_and_deebert_exits(family_model):
    """DACT's accumulated output is a convex mix (the halting bound's premise); DeeBERT gives one exit per block."""
    family, cfg, params, batch = family_model
    p = dact.init_params(cfg, params, jax.random.key(2))
    out = dact.apply(p, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    a, prods = np.asarray(out.a), np.asarray(out.p)
    assert a.shape == (cfg.num_layers, 3, cfg.num_labels) and np.isfinite(a).all()
    assert np.all(prods >= 0) and np.all(prods <= 1 + 1e-6) and np.all(np.diff(prods, axis=0) <= 1e-6)
    r = deebert.init_params(cfg, params, jax.random.key(3))
    ramps = deebert.ramp_logits(r, cfg, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert ramps.shape == (cfg.num_layers, 3, cfg.num_labels) and np.isfinite(np.asarray(ramps)).all()


def test_modernbert_block_index_survives_block_by_block_runs(tmp_path):
    """Early exit and IBA run one block at a time: each must still get its absolute index (ModernBERT's
    global/local type and RoPE theta), so both reproduce forward's per-block [CLS] states."""
    from jaxattr.attribution.iba import hidden_states
    from jaxattr.training import early_exit

    save_tiny("modernbert", tmp_path)
    cfg, params = load_hf_dir(tmp_path)
    batch = random_batch("modernbert", lengths=(16, 9, 12))
    ref = forward(params, cfg, batch["input_ids"], batch["attention_mask"])
    hs = hidden_states(params, cfg, batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(np.asarray(hs[1:, :, 0]), np.asarray(ref.cls), atol=1e-5)
    exits = {"_": jnp.zeros((cfg.num_layers, 1))}
    res = early_exit.run_early_exit(params, cfg, batch, exits, early_exit.never_exit_rule, {"_": np.zeros(3)})
    np.testing.assert_allclose(res.output, np.asarray(ref.cls[-1]), atol=1e-5)


def test_deebert_refuses_a_mean_pooling_head(tmp_path):
    from jaxattr.errors import UserError

    save_tiny("modernbert", tmp_path, classifier_pooling="mean")
    cfg, params = load_hf_dir(tmp_path)
    with pytest.raises(UserError, match="mean-pooling"):
        deebert.init_params(cfg, params, jax.random.key(0))
