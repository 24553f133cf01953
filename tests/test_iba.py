"""IBA: planted evidence, vectorised == per-example/per-sample loop, all layers == per layer, β trend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import spearmanr

from jaxattr.attribution.iba import (
    ALPHA_INIT,
    draw_noise,
    estimate_noise_stats,
    hidden_states,
    iba,
    iba_beta_sweep,
)
from jaxattr.errors import UserError
from jaxattr.models import embed, forward, init_params, run_layers, tiny_config, word_embeddings

PLANT, CLS, SEP = 7, 2, 3


def _planted(rng: np.random.Generator, n: int, t: int = 10):
    ids = rng.integers(10, 100, size=(n, t)).astype(np.int32)
    ids[:, 0], ids[:, -1] = CLS, SEP
    y = rng.integers(0, 2, size=n).astype(np.int32)
    pos = rng.integers(1, t - 1, size=n)
    ids[np.arange(n)[y == 1], pos[y == 1]] = PLANT
    return ids, y, pos


@pytest.fixture(scope="module")
def planted_model():
    """A tiny encoder trained here to say 1 iff token PLANT occurs anywhere (a few seconds)."""
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.0)
    params = init_params(cfg, jax.random.key(0))
    opt = optax.adam(3e-3)

    @jax.jit
    def step(params, state, ids, y):
        def loss(p):
            logits = forward(p, cfg, ids, jnp.ones_like(ids)).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        g = jax.grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state

    state = opt.init(params)
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids, y, _ = _planted(rng, 32)
        params, state = step(params, state, ids, y)
    return cfg, params


def _positives():
    ids, y, pos = _planted(np.random.default_rng(1), 96)
    keep = y == 1
    return {"input_ids": ids[keep], "attention_mask": np.ones_like(ids[keep]), "label": y[keep]}, pos[keep]


def test_planted_token_ranked_first(planted_model):
    cfg, params = planted_model
    ids, y, _ = _planted(np.random.default_rng(1), 96)
    logits = forward(params, cfg, ids, jnp.ones_like(ids)).logits
    assert float((np.asarray(logits).argmax(-1) == y).mean()) > 0.95  # the model really learned the rule
    batch, pos = _positives()
    out = iba(params, cfg, batch, layer=1, key=jax.random.key(0), target="gold")
    top = np.asarray(out.scores).argmax(-1)
    assert (top == pos).mean() >= 0.95
    # scores are a min-max map over the non-special tokens; [CLS]/[SEP] get 0
    s = np.asarray(out.scores)
    assert np.allclose(s[:, [0, -1]], 0) and np.allclose(s[:, 1:-1].max(-1), 1) and np.allclose(s[:, 1:-1].min(-1), 0)


def _loop_oracle(params, cfg, ids, layer, beta, steps, samples, lr, key_b, n_pad, target):
    """One unpadded example, one noise sample per forward (the whole model with `after_layer`), optax Adam."""
    ids = jnp.asarray(ids)[None]
    mask = jnp.ones_like(ids)
    h = embed(params, cfg, word_embeddings(params, cfg, ids), mask)
    x = run_layers(params, cfg, h, mask, stop=layer).hidden[0]  # [n, H]
    mu = x.mean(0)  # "sequence" noise: per-feature statistics over the example's tokens
    sd = jnp.sqrt(jnp.maximum(((x - mu) ** 2).mean(0), 1e-5))
    n, hdim = x.shape
    opt = optax.adam(lr)

    def capacity(alpha):  # the paper's KL
        lam = jax.nn.sigmoid(alpha)
        m = lam * (x - mu) / sd
        log_var = jnp.log(jax.nn.sigmoid(-alpha) ** 2)  # (1 - λ)², without float32 cancellation
        return -0.5 * (1 + log_var - m**2 - jnp.exp(log_var))

    def loss(alpha, eps):
        lam = jax.nn.sigmoid(alpha)
        std = jnp.exp(jnp.clip(jnp.log(jax.nn.sigmoid(-alpha) ** 2), -10, 10) / 2)
        ce = 0.0
        for j in range(samples):
            t = (lam * (x - mu) / sd + std * eps[j]) * sd + mu
            logits = forward(params, cfg, ids, mask, after_layer=(layer, lambda _, t=t: t[None])).logits[0]
            ce = ce - jax.nn.log_softmax(logits)[target] / samples
        return ce + beta * capacity(alpha).mean()

    grad = jax.jit(jax.grad(loss))
    alpha = jnp.full((n, hdim), ALPHA_INIT)
    state = opt.init(alpha)
    cap = None
    for s in range(steps):
        eps = draw_noise(key_b[None], s, (samples, n_pad, hdim))[0, :, :n]
        cap = capacity(alpha)
        upd, state = opt.update(grad(alpha, eps), state, alpha)
        alpha = optax.apply_updates(alpha, upd)
    return np.asarray(cap)


LENGTHS = [9, 6]
KW = dict(beta=1e-2, steps=3, samples=2, lr=1.0, target=np.array([1, 0], np.int32))


def _small_batch():
    rng = np.random.default_rng(3)
    ids = np.zeros((2, 9), np.int32)
    mask = np.zeros((2, 9), np.int32)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = rng.integers(5, 100, n)
        ids[i, 0], ids[i, n - 1] = CLS, SEP
        mask[i, :n] = 1
    ids[0, 3] = PLANT
    return {"input_ids": ids, "attention_mask": mask}


def test_vectorised_equals_per_example_per_sample_loop(planted_model):
    cfg, params = planted_model
    batch = _small_batch()
    keys = jax.random.split(jax.random.key(11), 2)
    out = iba(params, cfg, batch, layer=1, key=keys, **KW)
    for i, n in enumerate(LENGTHS):
        cap = _loop_oracle(params, cfg, batch["input_ids"][i, :n], 1, 1e-2, 3, 2, 1.0, keys[i], 9,
                           int(KW["target"][i]))
        np.testing.assert_allclose(np.asarray(out.capacity[i, :n]), cap, rtol=1e-5, atol=1e-5)
        assert np.all(np.asarray(out.capacity[i, n:]) == 0)
        assert np.all(np.asarray(out.scores[i, n - 1:]) == 0) and out.scores[i, 0] == 0
    # same key -> same map; another key -> another map
    again = iba(params, cfg, batch, layer=1, key=keys, **KW)
    np.testing.assert_array_equal(np.asarray(again.capacity), np.asarray(out.capacity))
    other = iba(params, cfg, batch, layer=1, key=jax.random.split(jax.random.key(12), 2), **KW)
    assert not np.array_equal(np.asarray(other.capacity), np.asarray(out.capacity))


def test_all_layers_equals_per_layer_calls(planted_model):
    cfg, params = planted_model
    batch = _small_batch()
    keys = jax.random.split(jax.random.key(11), 2)
    every = iba(params, cfg, batch, layer="all", key=keys, **KW)
    assert every.scores.shape == (cfg.num_layers, 2, 9)
    for layer in range(1, cfg.num_layers + 1):
        one = iba(params, cfg, batch, layer=layer, key=keys, **KW)
        np.testing.assert_allclose(np.asarray(every.capacity[layer - 1]), np.asarray(one.capacity),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(every.scores[layer - 1]), np.asarray(one.scores), atol=1e-4)
        assert int(every.layer[layer - 1]) == layer


def test_beta_trend_and_tiny_beta_is_the_unbottlenecked_map(planted_model):
    cfg, params = planted_model
    batch, _ = _positives()
    betas = np.array([1e-9, 1e-6, 1e-4, 1e-2, 1.0, 100.0])
    out = iba_beta_sweep(params, cfg, batch, betas, layer=1, key=jax.random.key(0), target="gold")
    mean_cap = np.asarray(out.capacity.mean(axis=(1, 2, 3)))
    rho = spearmanr(np.log(betas), mean_cap)[0]
    assert rho <= -0.8 and mean_cap[-1] < 0.1 * mean_cap[0], mean_cap
    # the sweep equals a single call (same compiled program as the planted test); Adam's sign-like steps on
    # near-zero gradients amplify float rounding between the vmapped and the plain program, hence 1e-2
    one = iba(params, cfg, batch, layer=1, beta=float(betas[2]), key=jax.random.key(0), target="gold")
    np.testing.assert_allclose(np.asarray(out.capacity[2]), np.asarray(one.capacity), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(np.asarray(out.scores[2]), np.asarray(one.scores), atol=1e-3)
    # tiny β: the map is X's own (normalised) magnitude, i.e. no bottleneck (paper Fig. 2b)
    ids = jnp.asarray(batch["input_ids"])
    hs = hidden_states(params, cfg, ids, jnp.ones_like(ids))[1]
    xn = (hs - hs.mean(1, keepdims=True)) / hs.std(1, keepdims=True)
    x_map = np.asarray((xn**2).sum(-1))

    def agreement(i):
        return np.mean([spearmanr(np.asarray(out.raw[i, j]), x_map[j])[0] for j in range(len(ids))])

    assert agreement(0) > 0.99
    assert agreement(0) - agreement(3) > 0.2


def test_default_beta_binds_for_every_noise_mode(planted_model):
    """The default β makes the KL term a real part of the loss (the paper's rule: β·L_IB ≈ 10·L_CE) and so
    moves the maps away from β = 0; with per-feature noise, the paper's 1e-5 did neither."""
    from jaxattr.attribution.iba import DEFAULT_BETA, default_beta

    cfg, params = planted_model
    batch, _ = _positives()
    assert default_beta("reference") == 1e-5  # the reference algorithm's own β stays
    for noise in ("sequence", "dataset"):
        stats = None
        if noise == "dataset":
            stats = estimate_noise_stats(params, cfg, [batch])
        run = lambda b, noise=noise, stats=stats: iba(params, cfg, batch, layer=1, beta=b, key=jax.random.key(0),
                                                      target="gold", noise=noise, noise_stats=stats)
        dflt, zero = run(None), run(0.0)
        ratio = DEFAULT_BETA[noise] * np.asarray(dflt.kl[0]) / np.asarray(dflt.ce[0])
        assert np.median(ratio) > 1.0, (noise, ratio)  # the IB term is at least the size of the CE
        rho = np.mean([spearmanr(np.asarray(dflt.raw[j]), np.asarray(zero.raw[j]))[0]
                       for j in range(len(batch["input_ids"]))])
        assert rho < 0.95, (noise, rho)
        np.testing.assert_allclose(np.asarray(dflt.raw), np.asarray(run(DEFAULT_BETA[noise]).raw))


def test_dataset_noise_stats_welford_matches_numpy(planted_model):
    cfg, params = planted_model
    rng = np.random.default_rng(7)
    batches, states = [], []
    for n in (5, 3):
        ids = rng.integers(5, 100, (n, 7)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[0, 4:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
        hs = np.asarray(hidden_states(params, cfg, jnp.asarray(ids), jnp.asarray(mask)))
        states.append(hs[:, mask.astype(bool)])  # [L+1, tokens, H]
    allv = np.concatenate(states, axis=1)
    stats = estimate_noise_stats(params, cfg, batches)
    np.testing.assert_allclose(np.asarray(stats.mean), allv.mean(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.std), allv.std(1), rtol=1e-4, atol=1e-5)
    assert int(stats.count) == allv.shape[1]
    out = iba(params, cfg, _small_batch(), layer=1, key=jax.random.key(0), noise="dataset", noise_stats=stats, **KW)
    assert np.isfinite(np.asarray(out.scores)).all() and out.scores.shape == (2, 9)


def test_user_errors(planted_model):
    cfg, params = planted_model
    batch = {"input_ids": np.full((1, 4), 5, np.int32), "attention_mask": np.ones((1, 4), np.int32)}
    with pytest.raises(UserError, match="layer"):
        iba(params, cfg, batch, layer=3, key=jax.random.key(0))
    with pytest.raises(UserError, match="noise_stats"):
        iba(params, cfg, batch, layer=1, key=jax.random.key(0), noise="dataset")
    with pytest.raises(UserError, match="noise"):
        iba(params, cfg, batch, layer=1, key=jax.random.key(0), noise="gauss")
    with pytest.raises(UserError, match="gold"):
        iba(params, cfg, batch, layer=1, key=jax.random.key(0), target="gold")


def test_layer_heatmap_html_and_png(planted_model, tmp_path):
    from jaxattr.viz.heatmap import plot_layer_heatmap, write_layer_heatmap

    cfg, params = planted_model
    batch = _small_batch()
    every = iba(params, cfg, batch, layer="all", key=jax.random.split(jax.random.key(11), 2), **KW)
    n = LENGTHS[0]
    tokens = ["[CLS]", "a", "b", "<planted>", "c", "d", "e", "f", "[SEP]"]
    page = write_layer_heatmap(tmp_path / "m.html", tokens, np.asarray(every.scores[:, 0, :n]), layers=every.layer)
    text = page.read_text()
    assert text.count("<tr><th>layer") == cfg.num_layers and "&lt;planted&gt;" in text
    png = plot_layer_heatmap(tmp_path / "m.png", tokens, np.asarray(every.scores[:, 0, :n]), layers=every.layer)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="tokens"):
        write_layer_heatmap(tmp_path / "x.html", tokens[:3], np.asarray(every.scores[:, 0, :n]))


def test_reference_mode_matches_the_reference_algorithm_in_pytorch(planted_model, tmp_path):
    """noise='reference' vs the reference code's algorithm on HF BertForSequenceClassification (a forward
    hook on the block's output, 10 copies, Adam lr 1, all layers each step). The reference's noise is
    σ = sqrt(1e-5) times (1 − λ): tiny, so the two optimisations agree although their noise draws differ."""
    torch = pytest.importorskip("torch")
    from transformers import BertForSequenceClassification

    from jaxattr.models import save_hf_dir

    cfg, params = planted_model
    save_hf_dir(cfg, params, tmp_path)
    ref = BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    batch = _small_batch()
    n, layer, steps, samples, beta = LENGTHS[0], 1, 3, 2, 1e-2
    ids = torch.as_tensor(batch["input_ids"][:1, :n], dtype=torch.long)
    torch.manual_seed(0)
    with torch.no_grad():
        mean = ref(ids, output_hidden_states=True).hidden_states[layer - 1][0]
    std = torch.full_like(mean, 1e-5 ** 0.5)
    alpha = torch.nn.Parameter(torch.full((1, *mean.shape), 5.0))
    opt = torch.optim.Adam([alpha], lr=1.0)
    cap = {}

    def hook(_m, _i, output):
        x = output[0] if isinstance(output, tuple) else output
        lam = torch.sigmoid(alpha).expand(x.shape[0], x.shape[1], -1)
        log_var = torch.log((1 - lam) ** 2)
        m = (x - mean) / std * lam
        cap["kl"] = -0.5 * (1 + log_var - m**2 - log_var.exp())
        t = (m + (torch.clamp(log_var, -10, 10) / 2).exp() * torch.randn_like(m)) * std + mean
        return (t, *output[1:]) if isinstance(output, tuple) else t

    handle = ref.bert.encoder.layer[layer - 1].register_forward_hook(hook)
    for _ in range(steps):
        opt.zero_grad()
        logits = ref(ids.expand(samples, -1)).logits
        loss = torch.nn.functional.cross_entropy(logits, torch.full((samples,), 1)) + beta * cap["kl"].mean()
        loss.backward()
        opt.step()
    handle.remove()
    want = cap["kl"][0].detach().numpy()
    out = iba(params, cfg, batch, layer=layer, key=jax.random.split(jax.random.key(1), 2), noise="reference", **KW)
    got = np.asarray(out.capacity[0, :n])
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_cli_attribute_iba_all_layers_rows_and_resume(tmp_path):
    """`jaxattr attribute --method iba --layer all`: one row per example and layer, HTML, resume."""
    import json

    from jaxattr.cli import main
    from jaxattr.models import minilm_dir, save_hf_dir

    cfg = tiny_config("bert", vocab_size=30522)
    save_hf_dir(cfg, init_params(cfg, jax.random.key(0)), tmp_path / "m", tokenizer_dir=minilm_dir())
    out = tmp_path / "r.jsonl"
    argv = ["attribute", "--model", str(tmp_path / "m"), "--method", "iba", "--layer", "all", "--beta", "1e-4",
            "--steps", "2", "--samples", "2", "--text", "a fine day", "--text", "awful, simply awful",
            "--out", str(out), "--html", str(tmp_path / "r.html")]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["id"], r["layer"]) for r in rows) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for r in rows:
        assert r["scores"][0] == 0 and r["scores"][-1] == 0 and abs(max(r["scores"]) - 1) < 1e-6
    assert (tmp_path / "r.html").exists()
    assert main(argv) == 0  # resumes: nothing new
    assert len(out.read_text().splitlines()) == 4
    assert main([*argv[:5], "--noise", "dataset", *argv[5:]]) == 2  # needs --noise-stats: one-line error
