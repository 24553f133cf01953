"""Training engine: optimizer, data-parallel equivalence on 4 fake devices, gradient accumulation,
metrics, configs and one-line errors, end-to-end tiny runs (pair classification, regression)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import device_flags, synthetic_batch, write_csv

from jaxattr.models import init_params, tiny_config
from jaxattr.training import load_config
from jaxattr.training.engine import Engine, default_loss_fn
from jaxattr.training.state import decay_mask, lr_schedule, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def test_decay_mask_skips_bias_and_layernorm(tiny_bert):
    _, params = tiny_bert
    mask = decay_mask(params)
    assert mask["layers"]["query"]["kernel"] is True
    assert mask["embeddings"]["word"]["embedding"] is True
    assert mask["layers"]["query"]["bias"] is False
    assert mask["layers"]["attn_norm"]["scale"] is False and mask["embeddings"]["norm"]["bias"] is False


def test_lr_schedule_warmup_then_linear_decay():
    s = lr_schedule(1e-3, total_steps=10, warmup_steps=2)
    np.testing.assert_allclose([float(s(i)) for i in (0, 1, 2, 6, 10)], [0, 5e-4, 1e-3, 5e-4, 0], atol=1e-9)


def test_lr_schedule_constant_after_warmup():
    """The AD-DROP reference code's schedule: warm-up (if any), then the learning rate held."""
    s = lr_schedule(1e-3, total_steps=10, warmup_steps=2, kind="constant")
    np.testing.assert_allclose([float(s(i)) for i in (0, 1, 2, 6, 10)], [0, 5e-4, 1e-3, 1e-3, 1e-3], atol=1e-9)
    s0 = lr_schedule(1e-3, total_steps=10, warmup_steps=0, kind="constant")
    np.testing.assert_allclose([float(s0(i)) for i in (0, 9)], [1e-3, 1e-3], atol=1e-9)


def test_weight_decay_not_applied_to_bias(tiny_bert):
    """With zero gradients, AdamW only decays: kernels shrink, biases and LayerNorm stay."""
    _, params = tiny_bert
    params = jax.tree.map(lambda x: x + 1.0, params)
    tx = make_optimizer(0.1, 10, 0, weight_decay=0.5, max_grad_norm=None)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(jnp.abs(updates["layers"]["query"]["bias"]).max()) == 0
    assert float(jnp.abs(updates["layers"]["out_norm"]["scale"]).max()) == 0
    assert float(jnp.abs(updates["layers"]["query"]["kernel"]).max()) > 0


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch():
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.0)
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = synthetic_batch(8, 10, seed=1)
    batch["weight"][5] = 0.0  # a filler row: weights make accumulation exact
    out = []
    for k in (1, 4):
        eng = Engine(make_optimizer(1e-3, 10, 1), default_loss_fn(cfg), grad_accum=k)
        st = eng.init_state(params, 0)
        for _ in range(2):
            st, m = eng.train_step(st, eng.put_batch(batch))
        out.append((jax.device_get(st.params), float(m["loss"])))
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
        np.testing.assert_allclose(a, b, atol=1e-5)


DP_WORKER = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import synthetic_batch
    from jaxattr.models import init_params, tiny_config
    from jaxattr.sharding import make_mesh
    from jaxattr.training import addrop
    from jaxattr.training.engine import Engine, default_loss_fn
    from jaxattr.training.state import make_optimizer
    assert jax.device_count() == 4, jax.devices()
    cfg = tiny_config("bert")  # dropout on
    params = init_params(cfg, jax.random.PRNGKey(0))
    results = []
    for n in (1, 4):
        modes = {{"plain": None, "addrop": addrop.make_transform(cfg, addrop.ADDropConfig())}}
        eng = Engine(make_optimizer(1e-3, 10, 1), default_loss_fn(cfg), mesh=make_mesh(n), modes=modes)
        st = eng.init_state(params, 0)
        for i, mode in enumerate(("plain", "addrop", "plain")):
            batch = eng.put_batch(synthetic_batch(8, 12, seed=i))
            assert len(batch["input_ids"].sharding.device_set) == n
            st, m = eng.train_step(st, batch, mode)
        results.append([np.asarray(x).tolist() for x in jax.tree.leaves(jax.device_get(st.params))])
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(*results))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(results[0], jax.tree.leaves(params)))
    print(json.dumps({{"diff": diff, "moved": moved}}))
""")


@pytest.mark.slow
def test_data_parallel_4_devices_equals_1_device():
    env = dict(os.environ, XLA_FLAGS=device_flags(4), JAX_PLATFORMS="cpu")
    code = DP_WORKER.format(tests=str(ROOT / "tests"))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["moved"] > 1e-4  # training did change the params
    assert res["diff"] <= 1e-5, res


def test_metrics_from_libraries():
    from jaxattr.training.metrics import classification_metrics, regression_metrics

    logits = np.asarray([[2, 1], [0, 3], [1, 0], [0, 1]], float)  # predictions 0, 1, 0, 1
    m = classification_metrics(logits, np.asarray([0, 1, 1, 1]))
    assert m["accuracy"] == 0.75
    np.testing.assert_allclose(m["f1"], 0.8)  # precision 1, recall 2/3
    np.testing.assert_allclose(m["matthews"], 1 / np.sqrt(3))  # (1*2 - 0*1)/sqrt(1*3*2*2)
    r = regression_metrics(np.asarray([1.0, 2, 3, 4]), np.asarray([2.0, 4, 6, 9]))
    assert r["spearman"] == pytest.approx(1.0) and 0.98 < r["pearson"] < 1.0


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: addrop\nlearning_rate: 1e-5\naddrop:\n  p: 0.4\n  layers: [1]\n")
    cfg = load_config(path, ["addrop.q=0.6", "epochs=5", "addrop.cross_tuning=false"])
    assert cfg.method == "addrop" and cfg.learning_rate == 1e-5 and cfg.epochs == 5
    assert cfg.addrop.p == 0.4 and cfg.addrop.q == 0.6 and cfg.addrop.layers == (1,) and not cfg.addrop.cross_tuning


def test_dact_section_overrides_round_trip_and_renamed_keys(tmp_path):
    from jaxattr.errors import UserError
    from jaxattr.training.config import dump_config
    from jaxattr.training.dact import DactConfig

    path = tmp_path / "c.yaml"
    path.write_text("method: dact\ndact:\n  tau: 1e-3\n")
    cfg = load_config(path, ["dact.ponder=p", "dact.halt_bias=1"])
    assert cfg.dact == DactConfig(tau=1e-3, ponder="p", halt_bias=1.0) and cfg.addrop == load_config().addrop
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg
    (tmp_path / "old.yaml").write_text("method: dact\ndact_tau: 0.01\n")
    with pytest.raises(UserError, match=r"'dact_tau' is now 'dact\.tau'"):
        load_config(tmp_path / "old.yaml")
    with pytest.raises(UserError, match="dact must be a mapping"):
        load_config(None, ["dact=0.1"])


def test_fingerprint_holds_the_method_settings(tiny_bert):
    from jaxattr.training.addrop import ADDropConfig
    from jaxattr.training.config import TrainConfig
    from jaxattr.training.dact import DactConfig
    from jaxattr.training.trainer import _fingerprint

    def fp(**kw):
        return _fingerprint(TrainConfig(**kw), tiny_bert[0])

    assert "dact" not in fp(method="plain") and fp(method="plain") == fp(method="plain", dact=DactConfig(tau=0.1))
    assert fp(method="dact") != fp(method="dact", dact=DactConfig(tau=0.1))
    assert fp(method="dact") != fp(method="dact", dact=DactConfig(halt_bias=1.0))
    assert fp(method="addrop") != fp(method="addrop", addrop=ADDropConfig(p=0.5))


def tiny_run_overrides(tmp_path: Path, **kw) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    d = dict(model="tiny", data=str(write_csv(tmp_path / "train.csv", 32, 0, kw.pop("pair", False),
                                              kw.get("task") == "regression")),
             max_length=16, epochs=1, batch_size=8, eval_batch_size=16, learning_rate=1e-3, progress=False,
             output_dir=str(tmp_path / "run"), save_every=2)
    d["dev_data"] = d["test_data"] = d["data"]
    d.update(kw)
    return [f"{k}={v}" for k, v in d.items()]


def _cli_error(args: list[str], capsys) -> str:
    from jaxattr.cli import main

    code = main(["train", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("override, msg", [
    ("task=translation", "unknown task"),
    ("addrop.p=1.2", "addrop.p must lie strictly between 0 and 1"),
    ("addrop.q=0", "addrop.q must lie strictly between 0 and 1"),
    ("method=magic", "unknown method"),
    ("dact.ponder=x", "dact.ponder must be 'p' or 'h'"),
    ("dact_tau=0.1", "config key 'dact_tau' is now 'dact.tau'"),
    ("label_column=sentiment", "no label column 'sentiment'"),
])
def test_bad_configs_give_one_line(tmp_path, capsys, override, msg):
    err = _cli_error([a for kv in tiny_run_overrides(tmp_path) for a in ("--set", kv)] + ["--set", override], capsys)
    assert msg in err


def test_checkpoint_from_another_model_gives_one_line(tmp_path, capsys):
    from jaxattr.models import load_tokenizer, minilm_dir
    from jaxattr.models.checkpoint import save_checkpoint

    cfg = tiny_config("bert", num_labels=3, vocab_size=30522)
    save_checkpoint(tmp_path / "other", cfg, init_params(cfg, jax.random.PRNGKey(0)), load_tokenizer(minilm_dir()))
    args = tiny_run_overrides(tmp_path, model=str(tmp_path / "other"))
    err = _cli_error([a for kv in args for a in ("--set", kv)], capsys)
    assert "3-label head" in err and "another task" in err


def test_method_without_make_method_gives_one_line(monkeypatch, tiny_bert):
    """dact/deebert come from jaxattr.training.<method>.make_method; until a module provides it: one line."""
    import importlib

    from jaxattr.errors import UserError
    from jaxattr.models import Model
    from jaxattr.training.config import TrainConfig
    from jaxattr.training.trainer import build_method

    real = importlib.import_module

    def fake(name, *a):
        if name == "jaxattr.training.dact":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(UserError, match="comes from jaxattr.training.dact"):
        build_method(TrainConfig(method="dact"), Model(tiny_bert[0], tiny_bert[1], None, "tiny"))


@pytest.mark.slow
def test_end_to_end_pair_classification_and_regression(tmp_path):
    from jaxattr.models import load_model
    from jaxattr.training.trainer import run

    res = run(load_config(None, tiny_run_overrides(tmp_path / "a", pair=True, task="pair-classification",
                                                  text_pair_column="text_pair", method="addrop", epochs=2,
                                                  log_every=1)))
    assert res["test_examples"] == 32 and set(res["dev"]) >= {"accuracy", "f1", "matthews"}
    model = load_model(tmp_path / "a" / "run" / "model")
    assert model.cfg.num_labels == 2 and model.cfg.label_names == ("neg", "pos")
    log = [json.loads(x) for x in (tmp_path / "a" / "run" / "log.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in log if "mode" in r} == {"plain", "addrop"}  # cross-tuning: epoch 1 plain, 2 AD-DROP
    res = run(load_config(None, tiny_run_overrides(tmp_path / "b", task="regression")))
    assert set(res["test"]) >= {"pearson", "spearman", "mse"}
    assert load_model(tmp_path / "b" / "run" / "model").cfg.problem_type == "regression"


@pytest.mark.slow
def test_user_hooks_see_every_step_and_can_stop_the_run(tmp_path):
    from jaxattr.training.trainer import run

    seen = []

    def record(info):
        seen.append((info.step, info.epoch, info.dev is not None))
        return info.step == 6

    res = run(load_config(None, tiny_run_overrides(tmp_path, epochs=2, eval_every=3, log_every=1)), hooks=[record])
    assert seen == [(s, 1 + (s - 1) // 4, s in (3, 6)) for s in range(1, 7)]  # 4 steps an epoch
    assert res["steps"] == 6 and res["early_stopped_at"] == 6
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 6
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "mode" in r] == list(range(1, 7))
    assert [r["step"] for r in log if "dev" in r and "event" not in r] == [3, 6]


def test_early_stopping_patience():
    from jaxattr.training.checkpointing import EarlyStopping

    es = EarlyStopping(patience=2)
    assert es.update(0.5, 1) and not es.update(0.4, 2) and not es.should_stop
    assert es.update(0.6, 3) and es.best_step == 3
    es.update(0.6, 4)
    es.update(0.1, 5)
    assert es.should_stop and es.best == 0.6
    assert not EarlyStopping(patience=0, bad_evals=9).should_stop
    low = EarlyStopping(patience=1, mode="min")
    assert low.update(2.0, 1) and low.update(1.0, 2) and not low.update(1.5, 3) and low.should_stop


def test_bfloat16_compute_step_tracks_float32():
    cfg = tiny_config("bert", dropout_rate=0.0, attention_dropout_rate=0.0)
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = synthetic_batch(8, 10, seed=3)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        eng = Engine(make_optimizer(1e-3, 10, 0), default_loss_fn(cfg.replace(dtype=dtype)))
        st = eng.init_state(params, 0)
        st, m = eng.train_step(st, eng.put_batch(batch))
        assert jax.tree.leaves(st.params)[0].dtype == jnp.float32  # params stay float32
        losses[dtype] = float(m["loss"])
    assert np.isfinite(losses["bfloat16"]) and abs(losses["bfloat16"] - losses["float32"]) < 0.02
