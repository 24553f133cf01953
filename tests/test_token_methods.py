"""LIME, IBA and `--steps auto` on token-classification models (issue 34): each explains an entity span's target
([T] classes, -1 elsewhere). Oracles: LIME's surrogate targets recomputed by a loop that shortens each sample
by hand and sums the span's probabilities at the tokens' new positions (then sklearn's Ridge); IBA's first-step
cross-entropy against the span's mean CE at the input; the adaptive driver's scores against IG's completeness
and the pure function."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_tiny import save_tiny
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances

from jaxattr.attribution import registry
from jaxattr.attribution.driver import AUTO_START, Driver
from jaxattr.attribution.gradients import integrated_gradients
from jaxattr.attribution.iba import iba
from jaxattr.attribution.lime import KERNEL_WIDTH, lime
from jaxattr.data import encode_texts, pad_batch
from jaxattr.data.entities import span_target
from jaxattr.errors import UserError
from jaxattr.models import forward, init_params, load_model, tiny_config

T, LENGTHS, CLASSES = 10, [10, 7], 5
SPANS = [(2, 5), (1, 3)]  # end exclusive
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["i love the self driving cars !", "the zebra news is very bad , not good at all", "you hate it"]


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(num_labels=CLASSES, task="token", dropout_rate=0.0, attention_dropout_rate=0.0)
    return cfg, init_params(cfg, jax.random.key(3))


def _batch_and_target(spans=SPANS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    batch = {k: np.zeros((2, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch["word_ids"] = np.full((2, T), -1, np.int32)
    target = np.full((2, T), -1, np.int32)
    for i, (n, span) in enumerate(zip(LENGTHS, spans)):
        batch["input_ids"][i, :n] = rng.integers(5, 100, n)
        batch["input_ids"][i, 0], batch["input_ids"][i, n - 1] = 2, 3
        batch["attention_mask"][i, :n] = 1
        batch["word_ids"][i, 1:n - 1] = np.arange(n - 2)
        target[i] = span_target(T, *span, rng.integers(0, CLASSES, T))
    return batch, target


@functools.partial(jax.jit, static_argnums=0)
def _probs(cfg, params, ids):
    return jax.nn.softmax(forward(params, cfg, ids, jnp.ones_like(ids)).logits, -1)


# the pure IG, compiled once per length (the references below)
_ig = jax.jit(integrated_gradients, static_argnums=1, static_argnames=("steps", "mask_id", "pad_id"))


def _span_f(cfg, params, ids: list[int], positions: dict[int, int]) -> float:
    """The span's summed probabilities of its classes, `positions` {index in ids: class}, the model on ids alone."""
    probs = np.asarray(_probs(cfg, params, jnp.asarray([ids], jnp.int32)))[0]
    return float(sum(probs[j, c] for j, c in positions.items()))


def test_lime_fits_the_spans_probabilities_on_the_shortened_samples(model):
    cfg, params = model
    batch, target = _batch_and_target()
    out = lime(params, cfg, batch, key=jax.random.key(0), samples=12, chunk=8, target=target)
    np.testing.assert_array_equal(np.asarray(out.target), target)
    for i, n in enumerate(LENGTHS):
        feats = np.arange(1, n - 1)
        keep = np.asarray(out.features[i])[:, feats]
        y = []
        for s in range(keep.shape[0]):  # delete by hand; the span's kept tokens are read where they now stand
            kept = [0, *feats[keep[s]], n - 1]
            ids = [int(batch["input_ids"][i, p]) for p in kept]
            y.append(_span_f(cfg, params, ids, {j: int(target[i, p]) for j, p in enumerate(kept) if target[i, p] >= 0}))
        np.testing.assert_allclose(np.asarray(out.probs[i]), y, rtol=1e-5, atol=1e-6)
        dist = pairwise_distances(keep.astype(float), np.ones((1, len(feats))), metric="cosine").ravel() * 100
        w = np.sqrt(np.exp(-(dist**2) / KERNEL_WIDTH**2))
        ridge = Ridge(alpha=1.0).fit(keep.astype(float), y, sample_weight=w)
        np.testing.assert_allclose(np.asarray(out.scores[i, feats]), ridge.coef_, rtol=1e-3, atol=1e-5)
        assert np.all(np.asarray(out.scores[i, [0, *range(n - 1, T)]]) == 0)
    other = lime(params, cfg, batch, key=jax.random.key(0), samples=12, chunk=8,
                 target=_batch_and_target([(5, 7), (3, 6)])[1])
    assert not np.allclose(np.asarray(other.probs), np.asarray(out.probs))  # the target is what is fitted


def test_iba_on_a_span_keeps_special_tokens_at_zero_and_depends_on_the_span(model):
    cfg, params = model
    batch, target = _batch_and_target()
    kw = dict(layer=1, beta=0.3, steps=4, samples=3, key=jax.random.key(1))
    out = iba(params, cfg, batch, target=target, **kw)
    s = np.asarray(out.scores)
    for i, n in enumerate(LENGTHS):
        assert np.all(s[i, [0, *range(n - 1, T)]] == 0)  # [CLS], [SEP] and padding
        assert np.isclose(s[i, 1:n - 1].max(), 1) and np.isclose(s[i, 1:n - 1].min(), 0)
    # the loss's CE is the span's mean CE of its classes: at α's start (λ ≈ 0.993) it is about the input's
    logp = np.asarray(jax.nn.log_softmax(forward(params, cfg, batch["input_ids"], batch["attention_mask"]).logits))
    for i, (a, b) in enumerate(SPANS):
        want = -np.mean([logp[i, j, target[i, j]] for j in range(a, b)])
        np.testing.assert_allclose(float(out.ce[0, i]), want, rtol=0.05)
    other = iba(params, cfg, batch, target=_batch_and_target([(5, 7), (3, 6)])[1], **kw)
    assert np.abs(np.asarray(other.scores) - s).max() > 0.05
    every = iba(params, cfg, batch, target=target, **{**kw, "layer": "all"})
    np.testing.assert_allclose(np.asarray(every.scores[0]), s, atol=1e-5)  # layer="all" shares the span loss


def test_lime_and_iba_check_a_token_models_target(model):
    cfg, params = model
    batch, target = _batch_and_target()
    for fn in (lambda t: lime(params, cfg, batch, key=jax.random.key(0), samples=4, target=t),
               lambda t: iba(params, cfg, batch, layer=1, key=jax.random.key(0), target=t)):
        with pytest.raises(UserError, match="explains a span"):
            fn(None)
        with pytest.raises(UserError, match=r"must be \[B, T\]"):
            fn(target[:, :5])
        with pytest.raises(UserError, match="classes in 0..4"):
            fn(np.full((2, T), 7, np.int32))
    assert registry.get("lime").token_models and registry.get("iba").token_models
    assert registry.get("lime_bow").token_models
    with pytest.raises(UserError, match="lime_ref does not explain token"):
        registry.check_token_models("lime_ref")  # a reference comparator explains a fixed class, not a span


@pytest.fixture(scope="module")
def token_examples(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_token_methods")
    save_tiny("bert", path, num_labels=len(TAGS), seed=5, tokenizer=True, task="token", label_names=TAGS)
    m = load_model(str(path))
    exs = encode_texts(m.tokenizer, TEXTS)
    rng = np.random.default_rng(2)
    for i, ex in enumerate(exs):
        n = len(ex["input_ids"])
        ex["id"] = f"ex{i}"
        ex["token_target"] = span_target(n, 1, min(3, n - 1), rng.integers(1, len(TAGS), n)).tolist()
    return m, exs


@pytest.mark.parametrize("method", ["ig", "sig"])
def test_auto_steps_on_a_token_model_reach_the_completeness_tolerance(token_examples, method):
    m, exs = token_examples
    rows = {"n": 0}

    def run(opts, tolerance):
        drv = Driver(m.params, m.cfg, method, opts, mask_id=m.mask_id, pad_id=m.pad_id, tokens_per_batch=96,
                     buckets=(16, 32), tolerance=tolerance)
        grad = drv._grad

        def counted(params, tables, slot, *rest):
            rows["n"] += int(np.sum(np.asarray(slot) < tables.given.shape[0]))
            return grad(params, tables, slot, *rest)

        drv._grad = counted
        rows["n"] = 0
        return {r["id"]: r for step in drv.run(exs) for r in step.records}, rows["n"]

    loose, n_loose = run({"steps": "auto"}, 1e6)
    tight, n_tight = run({"steps": "auto"}, 1e-4)
    assert n_loose < n_tight  # the tight tolerance refined some units
    units = sum(len(ex["input_ids"]) - 2 for ex in exs) if method == "sig" else len(exs)
    assert n_loose == units * (AUTO_START + 1)
    for ex in exs:
        n = len(ex["input_ids"])
        batch = pad_batch([ex], n, m.pad_id)
        target = np.asarray(ex["token_target"], np.int32)[None]
        ref = _ig(m.params, m.cfg, batch, steps=64, mask_id=m.mask_id, pad_id=m.pad_id, target=target)
        got = tight[ex["id"]]
        assert abs(got["delta"]) <= 1e-4
        if method == "ig":  # completeness against F(x) - F(baseline) of the pure function
            gap = float(ref.f_x[0] - ref.f_baseline[0])
            assert abs(sum(got["scores"]) - gap) <= 1e-3 * (1 + abs(gap))
            np.testing.assert_allclose(got["scores"], np.asarray(ref.scores[0]), atol=2e-3 * (1 + abs(gap)))
        assert got["target"] == ex["token_target"][1]


def test_token_models_run_every_method_through_the_driver(token_examples):
    m, exs = token_examples
    fixed, _ = _run_plain(m, exs, "ig", {"steps": 16})
    for ex in exs:  # the path pipeline carries the span: its fixed-steps IG is the pure function's
        batch = pad_batch([ex], len(ex["input_ids"]), m.pad_id)
        ref = _ig(m.params, m.cfg, batch, steps=16, mask_id=m.mask_id, pad_id=m.pad_id,
                  target=np.asarray(ex["token_target"], np.int32)[None])
        np.testing.assert_allclose(fixed[ex["id"]]["scores"], np.asarray(ref.scores[0]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fixed[ex["id"]]["delta"], float(ref.delta[0]), atol=1e-4)
    for method, opts in (("lime", {"samples": 16}), ("iba", {"steps": 2, "samples": 2, "layer": 1})):
        recs, _ = _run_plain(m, exs, method, opts)
        assert set(recs) == {ex["id"] for ex in exs}
        for ex in exs:  # every record: the span's mean probability, as IG's records give it
            assert recs[ex["id"]]["prob"] == pytest.approx(fixed[ex["id"]]["prob"], rel=1e-4)
            assert recs[ex["id"]]["target"] == fixed[ex["id"]]["target"]


def _run_plain(m, exs, method, opts) -> tuple[dict[str, dict], Driver]:
    drv = Driver(m.params, m.cfg, method, opts, mask_id=m.mask_id, pad_id=m.pad_id, tokens_per_batch=96,
                 buckets=(16, 32))
    return {r["id"]: r for step in drv.run(exs) for r in step.records}, drv
