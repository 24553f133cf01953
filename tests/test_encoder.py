"""The encoder against HF PyTorch (the oracle) and its transformations: jit, vmap, grad, interventions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from hf_tiny import FAMILIES, hf_logits, random_batch, save_tiny

from jaxattr.data import bucket_length, encode_texts, pad_batch
from jaxattr.models import (
    classify,
    deberta,
    embed,
    forward,
    forward_batch,
    load_hf_dir,
    minilm_dir,
    run_layers,
    tiny_config,
    word_embeddings,
)
from jaxattr.models.encoder import mask_value


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """{family: (hf torch model, our cfg, our params)} for 3-class heads, loaded through our HF reader."""
    out = {}
    for family in FAMILIES:
        d = tmp_path_factory.mktemp(family)
        model = save_tiny(family, d)
        cfg, params = load_hf_dir(d)
        out[family] = (model, cfg, params)
    return out


def _ours(cfg, params, batch, **kw):
    return np.asarray(forward_batch(params, cfg, batch, **kw).logits)


@pytest.mark.parametrize("cls_only", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_hf_pytorch(tiny_models, family, cls_only):
    model, cfg, params = tiny_models[family]
    assert (cfg.hf_model_type or cfg.family) == family
    if family == "electra":
        assert cfg.emb_size == 16 != cfg.hidden_size
    batch = random_batch(family)
    theirs = hf_logits(model, batch, family)
    ours = _ours(cfg, params, batch, cls_only=cls_only)
    assert theirs.shape == ours.shape == (4, 3)
    assert np.ptp(theirs, axis=0).max() > 0.1, "oracle logits barely vary: the comparison would be weak"
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_regression_head_matches_hf(tmp_path, family):
    model = save_tiny(family, tmp_path, num_labels=1)
    cfg, params = load_hf_dir(tmp_path)
    assert cfg.problem_type == "regression" and cfg.num_labels == 1
    batch = random_batch(family, seed=3)
    np.testing.assert_allclose(_ours(cfg, params, batch), hf_logits(model, batch, family), atol=1e-5, rtol=0)


def test_real_minilm_matches_hf(minilm):
    """The real all-MiniLM-L6-v2 as BertForSequenceClassification, our seeded head copied into HF's."""
    hf = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2).eval()
    head = minilm.params["head"]
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.tensor(np.asarray(head["out"]["kernel"]).T))
        hf.classifier.bias.copy_(torch.tensor(np.asarray(head["out"]["bias"])))
    texts = ["I love my new self-driving car!", "Driverless cars are not worth the risk.",
             "ok", "Would you trust a computer to drive your kids to school? I wouldn't, not in a million years."]
    examples = encode_texts(minilm.tokenizer, texts)
    batch = pad_batch(examples, bucket_length(max(len(e["input_ids"]) for e in examples)), minilm.pad_id)
    with torch.no_grad():
        theirs = hf(**{k: torch.tensor(batch[k], dtype=torch.long)
                       for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.numpy()
    ours = _ours(minilm.cfg, minilm.params, batch)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_jit_vmap_and_eager_agree(tiny_models):
    _, cfg, params = tiny_models["bert"]
    batch = random_batch("bert")
    eager = _ours(cfg, params, batch)
    jitted = np.asarray(jax.jit(lambda p, b: forward_batch(p, cfg, b).logits)(params, batch))
    one = lambda ids, m, t: forward(params, cfg, ids[None], m[None], t[None]).logits[0]
    vmapped = np.asarray(jax.vmap(one)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    np.testing.assert_allclose(vmapped, eager, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
@pytest.mark.parametrize("cls_only", [False, True])
def test_grad_wrt_word_embeddings_matches_torch_autograd(tiny_models, cls_only, family):
    model, cfg, params = tiny_models[family]
    batch = random_batch(family, seed=1)
    we = word_embeddings(params, cfg, batch["input_ids"])

    def f(we):
        out = forward(params, cfg, None, batch["attention_mask"], batch["token_type_ids"], word_embeds=we,
                      cls_only=cls_only)
        return out.logits[:, 1].sum()

    g = np.asarray(jax.jit(jax.grad(f))(we))
    t_we = torch.tensor(np.asarray(we), requires_grad=True)
    out = model(inputs_embeds=t_we, attention_mask=torch.tensor(batch["attention_mask"]),
                token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long)).logits[:, 1].sum()
    out.backward()
    expected = t_we.grad.numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(g, expected, atol=1e-5 * np.abs(expected).max() + 1e-7)
    # Padding tokens do not influence [CLS]: their embedding gradient is zero.
    assert np.abs(g[batch["attention_mask"] == 0]).max() < 1e-6


@pytest.mark.parametrize("family", [pytest.param("roberta", marks=pytest.mark.extra), "modernbert", "deberta-v2"])
def test_cls_only_on_long_inputs_keeps_logits_and_gradients(tiny_models, family):
    """Past the CPU kernel's short length (remat on): the [CLS]-only last block changes nothing the
    head sees, with an attention bias on the last block and under dropout too (DeBERTa: with its
    per-head relative-position bias through the kernel)."""
    _, cfg, params = tiny_models[family]
    if family == "modernbert":  # dropout on (the tiny HF config has none), so the dropout branch runs
        cfg = cfg.replace(dropout_rate=0.1, attention_dropout_rate=0.1)
    rng = np.random.default_rng(5)
    b, t = 3, 48
    mask = np.ones((b, t), np.int32)
    mask[1, 30:] = 0
    ids = rng.integers(5, cfg.vocab_size, (b, t)).astype(np.int32)
    we = word_embeddings(params, cfg, ids)
    bias = jnp.asarray(rng.normal(size=(cfg.num_layers, b, 1, t, t)), jnp.float32)

    def run(we, cls_only, **kw):
        return forward(params, cfg, None, mask, None, word_embeds=we, attn_bias=bias, cls_only=cls_only, **kw)

    grads = [jax.jit(jax.grad(lambda w, c=c: run(w, c).logits[:, 2].sum()))(we) for c in (False, True)]
    np.testing.assert_allclose(run(we, True).logits, run(we, False).logits, atol=1e-6)
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-6 * float(jnp.abs(grads[0]).max()))
    out = run(we, True, deterministic=False, rng=jax.random.key(0))
    assert out.hidden.shape == (b, 1, cfg.hidden_size) and out.cls.shape == (cfg.num_layers, b, cfg.hidden_size)
    assert np.isfinite(np.asarray(out.logits)).all()
    with pytest.raises(ValueError, match="cls_only"):
        run(we, True, return_attention=True)


def test_three_lengths_in_one_bucket_compile_once(tiny_models):
    _, cfg, params = tiny_models["bert"]
    traces = []

    @jax.jit
    def fwd(p, b):
        traces.append(1)  # runs only while tracing
        return forward_batch(p, cfg, b).logits

    rng = np.random.default_rng(0)
    for n in (5, 9, 13):
        length = bucket_length(n)
        examples = [{"input_ids": rng.integers(3, 100, n).astype(np.int32), "token_type_ids": np.zeros(n, np.int32),
                     "word_ids": np.arange(n, dtype=np.int32)} for _ in range(3)]
        fwd(params, pad_batch(examples, length, 0)).block_until_ready()
    assert len(traces) == 1
    fwd(params, pad_batch(examples, bucket_length(20), 0))  # another bucket: one more compile
    assert len(traces) == 2


def test_bf16_compute_is_close_to_fp32(tiny_models):
    _, cfg, params = tiny_models["electra"]
    batch = random_batch("electra")
    ref = forward_batch(params, cfg, batch)
    low = jax.jit(lambda p, b: forward_batch(p, cfg.replace(dtype="bfloat16"), b))(params, batch)
    assert low.hidden.dtype == jnp.bfloat16 and ref.hidden.dtype == jnp.float32
    assert low.logits.dtype == jnp.float32
    scale = float(jnp.abs(ref.logits).max())
    err = float(jnp.abs(low.logits - ref.logits).max())
    assert np.isfinite(err) and err <= 0.05 * max(scale, 1.0), (err, scale)
    assert err > 0  # it really computed in bf16


@pytest.mark.parametrize("family", ["roberta", "electra", "deberta-v2"])
def test_after_layer_identity_and_layer_slices_compose(tiny_models, family):
    _, cfg, params = tiny_models[family]
    batch = random_batch(family)
    ref = forward_batch(params, cfg, batch)
    for layer in range(cfg.num_layers + 1):
        out = forward_batch(params, cfg, batch, after_layer=(layer, lambda h: h))
        # Same maths; splitting the layer scan in two may only change fp32 rounding.
        np.testing.assert_allclose(np.asarray(out.logits), np.asarray(ref.logits), atol=2e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(out.cls), np.asarray(ref.cls), atol=1e-6)
    # embed -> blocks [0, 1) -> transform -> blocks [1, 2) -> head == forward with after_layer=(1, transform)
    transform = lambda h: 0.5 * h + 0.1
    mask = batch["attention_mask"]
    h0 = embed(params, cfg, word_embeddings(params, cfg, batch["input_ids"]), mask, batch["token_type_ids"])
    low = run_layers(params, cfg, h0, mask, start=0, stop=1)
    high = run_layers(params, cfg, transform(low.hidden), mask, start=1, stop=2)
    manual = classify(params, cfg, high.hidden[:, 0])
    out = forward_batch(params, cfg, batch, after_layer=(1, transform))
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(manual), atol=1e-6)
    assert np.abs(np.asarray(out.logits) - np.asarray(ref.logits)).max() > 1e-3  # the transform mattered
    # Slices compose: [0, 1) then [1, 2) equals [0, 2).
    whole = run_layers(params, cfg, h0, mask)
    np.testing.assert_allclose(np.asarray(run_layers(params, cfg, low.hidden, mask, start=1, stop=2).hidden),
                               np.asarray(whole.hidden), atol=1e-6)
    np.testing.assert_allclose(np.asarray(whole.cls), np.asarray(ref.cls), atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_attn_perturb_gradient_is_dF_dA(tiny_models, family):
    """grad w.r.t. an additive perturbation of the attention probabilities vs a central finite difference."""
    _, cfg, params = tiny_models[family]
    batch = random_batch(family, lengths=(8, 5), length=8, seed=2)
    n_heads = cfg.num_heads
    shape = (cfg.num_layers, 2, n_heads, 8, 8)

    @jax.jit
    def f(perturb):
        return forward_batch(params, cfg, batch, attn_perturb=perturb).logits[:, 0].sum()

    zero = jnp.zeros(shape)
    np.testing.assert_allclose(float(f(zero)), _ours(cfg, params, batch)[:, 0].sum(), atol=1e-5)
    g = jax.grad(f)(zero)
    assert float(jnp.abs(g).max()) > 1e-3
    # Rows of padded queries never reach [CLS] (nobody attends to padding): their gradient is zero.
    assert float(jnp.abs(g[:, 1, :, 5:, :]).max()) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=shape), jnp.float32)
        eps = 1e-3  # central difference: O(eps^2) truncation, ~1e-4 fp32 rounding
        fd = (float(f(eps * v)) - float(f(-eps * v))) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(g, v)), fd, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_attn_bias_masking_a_key_equals_attention_mask(tiny_models, family):
    _, cfg, params = tiny_models[family]
    batch = random_batch(family, lengths=(8, 8), length=8, seed=4)
    bias = np.zeros((cfg.num_layers, 2, 1, 8, 8), np.float32)
    bias[..., 3] = mask_value(jnp.float32)  # every query ignores key 3 in every layer
    masked = dict(batch, attention_mask=batch["attention_mask"].copy())
    masked["attention_mask"][:, 3] = 0
    np.testing.assert_allclose(_ours(cfg, params, batch, attn_bias=jnp.asarray(bias)), _ours(cfg, params, masked),
                               atol=1e-6)


# ModernBERT: mean pooling, bias switches, block types by absolute index ------------------------------------------

MEAN_BIASED = dict(classifier_pooling="mean", norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True)


@pytest.fixture(scope="module")
def modernbert_mean(tmp_path_factory):
    """A tiny ModernBERT that mean-pools, with every bias switch on (the default tiny one has none)."""
    d = tmp_path_factory.mktemp("modernbert-mean")
    model = save_tiny("modernbert", d, seed=2, **MEAN_BIASED)
    cfg, params = load_hf_dir(d)
    return model, cfg, params


@pytest.mark.parametrize("cls_only", [False, True])
def test_modernbert_mean_pooling_matches_hf(modernbert_mean, cls_only):
    """Masked mean of final_norm(hidden) over valid tokens; cls_only falls back to the full last block."""
    model, cfg, params = modernbert_mean
    assert cfg.classifier_pooling == "mean" and cfg.norm_bias and cfg.mlp_bias and not cfg.head_reads_cls_only
    batch = random_batch("modernbert", seed=7)
    theirs = hf_logits(model, batch, "modernbert")
    out = forward_batch(params, cfg, batch, cls_only=cls_only)
    assert out.hidden.shape == (4, 16, cfg.hidden_size)  # every row: the head reads them all
    assert np.ptp(theirs, axis=0).max() > 0.1
    np.testing.assert_allclose(np.asarray(out.logits), theirs, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="mean pooling"):
        classify(params, cfg, out.hidden[:, 0])  # one vector cannot be mean-pooled


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_modernbert_grad_wrt_word_embeddings_matches_torch(tiny_models, modernbert_mean, pooling):
    """IG/SIG's intervention point: gradients w.r.t. word embeddings (positions implicit in RoPE)."""
    model, cfg, params = tiny_models["modernbert"] if pooling == "cls" else modernbert_mean
    batch = random_batch("modernbert", seed=1)
    we = word_embeddings(params, cfg, batch["input_ids"])
    f = lambda w: forward(params, cfg, None, batch["attention_mask"], word_embeds=w, cls_only=True).logits[:, 1].sum()
    g = np.asarray(jax.jit(jax.grad(f))(we))
    t_we = torch.tensor(np.asarray(we), requires_grad=True)
    model(inputs_embeds=t_we, attention_mask=torch.tensor(batch["attention_mask"])).logits[:, 1].sum().backward()
    expected = t_we.grad.numpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(g, expected, atol=1e-5 * np.abs(expected).max() + 1e-7)
    assert np.abs(g[batch["attention_mask"] == 0]).max() < 1e-6


def test_modernbert_blocks_keep_their_type_in_slices(tiny_models):
    """Block i run alone (layer_offset=i) or in a slice behaves as in the full stack: local windows
    and RoPE theta follow the absolute index; running block 1 as if it were block 0 differs."""
    _, cfg, params = tiny_models["modernbert"]
    batch = random_batch("modernbert", seed=3)
    mask = batch["attention_mask"]
    h = embed(params, cfg, word_embeddings(params, cfg, batch["input_ids"]), mask)
    whole = run_layers(params, cfg, h, mask)
    hid = h
    for i in range(cfg.num_layers):
        one = {"layers": jax.tree.map(lambda a, i=i: a[i:i + 1], params["layers"])}
        nxt = run_layers(one, cfg, hid, mask, start=0, stop=1, layer_offset=i).hidden
        if i == 1:
            wrong = run_layers(one, cfg, hid, mask, start=0, stop=1).hidden
            assert np.abs(np.asarray(wrong - nxt)).max() > 1e-2
        hid = nxt
    np.testing.assert_allclose(np.asarray(hid), np.asarray(whole.hidden), atol=1e-6)
    low = run_layers(params, cfg, h, mask, stop=2)
    high = run_layers(params, cfg, low.hidden, mask, start=2)
    np.testing.assert_allclose(np.asarray(high.hidden), np.asarray(whole.hidden), atol=1e-6)
    ref = forward_batch(params, cfg, batch)
    np.testing.assert_allclose(np.asarray(classify(params, cfg, high.hidden, mask)), np.asarray(ref.logits), atol=1e-6)
    np.testing.assert_allclose(np.asarray(classify(params, cfg, high.hidden[:, 0])), np.asarray(ref.logits), atol=1e-6)
    for layer in range(cfg.num_layers + 1):
        out = forward_batch(params, cfg, batch, after_layer=(layer, lambda x: x))
        np.testing.assert_allclose(np.asarray(out.logits), np.asarray(ref.logits), atol=2e-6, rtol=0)


def test_modernbert_attention_maps_respect_the_window(tiny_models):
    """return_attention: local blocks (1) put no mass beyond local_attention // 2; global ones (0, 2) do."""
    _, cfg, params = tiny_models["modernbert"]
    batch = random_batch("modernbert", lengths=(16, 16), seed=4)
    attn = np.asarray(forward_batch(params, cfg, batch, return_attention=True).attention)
    assert attn.shape == (3, 2, cfg.num_heads, 16, 16)
    far = np.abs(np.arange(16)[:, None] - np.arange(16)[None]) > cfg.local_attention // 2
    assert attn[1][..., far].max() == 0.0
    assert attn[0][..., far].max() > 1e-3 and attn[2][..., far].max() > 1e-3
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_attn_bias_masking_a_key_equals_attention_mask_all_layouts(tiny_models, family):
    _, cfg, params = tiny_models[family]
    batch = random_batch(family, lengths=(8, 8), length=8, seed=4)
    bias = np.zeros((cfg.num_layers, 2, 1, 8, 8), np.float32)
    bias[..., 3] = mask_value(jnp.float32)
    masked = dict(batch, attention_mask=batch["attention_mask"].copy())
    masked["attention_mask"][:, 3] = 0
    np.testing.assert_allclose(_ours(cfg, params, batch, attn_bias=jnp.asarray(bias)), _ours(cfg, params, masked),
                               atol=1e-6)


# DeBERTa-v2/v3 switches beyond the v3 layout of hf_tiny (each against HF; lengths 16 and 48 > 8 buckets).
DEBERTA_VARIANTS = {
    "v2": dict(position_biased_input=True, type_vocab_size=2, share_att_key=False, pos_att_type=["c2p"]),
    "p2c-proj": dict(share_att_key=False, pos_att_type=["p2c"], max_relative_positions=-1, norm_rel_ebd="none",
                     embedding_size=16),
    "unbucketed": dict(position_buckets=-1, max_relative_positions=6, pos_att_type="c2p|p2c"),
    "absolute": dict(relative_attention=False, position_biased_input=True),
}


@pytest.mark.parametrize("variant", DEBERTA_VARIANTS)
def test_deberta_variants_match_hf(tmp_path, variant):
    model = save_tiny("deberta-v2", tmp_path, **DEBERTA_VARIANTS[variant])
    cfg, params = load_hf_dir(tmp_path)
    assert cfg.family == "deberta-v2"
    for batch in (random_batch("deberta-v2", seed=7), random_batch("deberta-v2", (48, 30, 17), 48, seed=8)):
        theirs = hf_logits(model, batch, "deberta-v2")
        assert np.ptp(theirs, axis=0).max() > 0.1
        for cls_only in (False, True):
            np.testing.assert_allclose(_ours(cfg, params, batch, cls_only=cls_only), theirs, atol=1e-5, rtol=0)


def test_deberta_log_buckets_match_hf():
    """The static relative-position table against HF's own builder, up to a real v3 config's sizes."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    for buckets, max_rel, length in ((8, 16, 40), (256, 512, 512), (4, 64, 64), (-1, 16, 20)):
        cfg = tiny_config("deberta-v2", relative_attention=True, type_vocab_size=0, position_biased_input=False,
                          pos_att_type=("c2p", "p2c"), position_buckets=buckets, max_relative_positions=max_rel)
        x = torch.zeros(1, length, 1)
        theirs = build_relative_position(x, x, bucket_size=buckets, max_position=max_rel)[0].numpy()
        np.testing.assert_array_equal(deberta.relative_positions(cfg, length), theirs)


def test_deberta_attention_maps_match_hf(tiny_models):
    """return_attention gives HF's disentangled attention probabilities on every valid query row
    (HF gives padded query rows a uniform row; ours attend to the valid keys: no logit sees either)."""
    model, cfg, params = tiny_models["deberta-v2"]
    batch = random_batch("deberta-v2", seed=9)
    ours = np.asarray(forward_batch(params, cfg, batch, return_attention=True).attention)
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                       attention_mask=torch.tensor(batch["attention_mask"]), output_attentions=True).attentions
    for layer, att in enumerate(theirs):
        for b, n in enumerate(batch["attention_mask"].sum(-1)):
            np.testing.assert_allclose(ours[layer, b, :, :n], att.numpy()[b, :, :n], atol=1e-6)
