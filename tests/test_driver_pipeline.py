"""The device-resident driver pipeline: adaptive steps, save intervals, auto chunk sizes."""

from __future__ import annotations

import types

import numpy as np
import pytest
from helpers import tiny_model
from scipy.stats import spearmanr

from jaxattr.attribution import driver as driver_mod
from jaxattr.attribution.driver import AUTO_MAX, AUTO_START, Driver, auto_tokens_per_batch
from jaxattr.attribution.job import drive
from jaxattr.attribution.results import PartialSums
from jaxattr.data import encode_texts
from jaxattr.errors import UserError

TEXTS = ["i love self driving cars !", "the zebra news is very bad , not good at all you know it is",
         "you hate it", "cars driving news and sport , is it good ? not very , it is bad"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, _ = tiny_model(tmp_path_factory.mktemp("tiny_pipeline"))
    exs = encode_texts(model.tokenizer, TEXTS)
    for i, ex in enumerate(exs):
        ex["id"] = f"ex{i}"
    return model, exs


def _run(model, exs, method, opts, **kw):
    drv = Driver(model.params, model.cfg, method, opts, mask_id=model.mask_id, pad_id=model.pad_id,
                 tokens_per_batch=96, buckets=(16, 32), **kw)
    rows = {"n": 0}
    grad = drv._grad

    def counted(params, tables, slot, *rest):
        rows["n"] += int(np.sum(np.asarray(slot) < tables.given.shape[0]))  # real rows, not padding
        return grad(params, tables, slot, *rest)

    drv._grad = counted
    return {r["id"]: r for step in drv.run(exs) for r in step.records}, rows["n"]


@pytest.mark.parametrize("method", ["ig", "sig"])
def test_auto_steps_refine_until_the_gap_is_below_the_tolerance(tiny, method):
    model, exs = tiny
    ref, _ = _run(model, exs, method, {"steps": 50})
    loose, n_loose = _run(model, exs, method, {"steps": "auto"}, tolerance=1e6)
    tight, n_tight = _run(model, exs, method, {"steps": "auto"}, tolerance=1e-3)
    units = sum(len(ex["input_ids"]) - 2 for ex in exs) if method == "sig" else len(exs)
    assert n_loose == units * (AUTO_START + 1)  # nothing refined: the first rule alone
    assert units * (AUTO_START + 1) < n_tight <= units * (AUTO_MAX + 1)  # some units needed their midpoints
    for ex in exs:
        got, want = tight[ex["id"]], ref[ex["id"]]
        assert abs(got["delta"]) <= 1e-3 or method == "sig"  # SIG's delta: its worst unit (checked below)
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=0.05, atol=0.02 * np.abs(want["scores"]).max())
        assert spearmanr(got["scores"][1:-1], want["scores"][1:-1]).statistic > 0.95
    if method == "sig":
        assert max(abs(r["delta"]) for r in tight.values()) <= 1e-3


def test_auto_steps_are_refused_for_batch_methods_and_bad_tolerances(tiny):
    model, _ = tiny
    with pytest.raises(UserError, match="takes no option"):
        Driver(model.params, model.cfg, "saliency", {"steps": "auto"}, mask_id=model.mask_id)
    with pytest.raises(UserError, match="tolerance"):
        Driver(model.params, model.cfg, "ig", {"steps": "auto"}, mask_id=model.mask_id, tolerance=0.0)


def test_partial_sums_are_saved_per_interval_not_per_chunk(tiny, tmp_path, monkeypatch):
    model, exs = tiny
    puts = []
    monkeypatch.setattr(PartialSums, "save", lambda self, entries: puts.append(dict(entries)))
    for save_every, some in ((0.0, True), (1e9, False)):
        puts.clear()
        drv = Driver(model.params, model.cfg, "sig", {"steps": 3}, mask_id=model.mask_id, pad_id=model.pad_id,
                     tokens_per_batch=64, buckets=(16, 32))
        out = []
        drive(drv, exs, "predicted", out.extend, partial=PartialSums(tmp_path / f"p{save_every}.json"),
              save_every=save_every)
        assert len(out) == len(exs)
        assert puts[-1] == {}  # the end: nothing left unfinished
        assert any(puts[:-1]) == some, (save_every, len(puts))


def test_auto_tokens_per_batch_from_device_memory(tiny):
    cfg = tiny[0].cfg
    cpu = types.SimpleNamespace(platform="cpu", memory_stats=lambda: None)
    assert auto_tokens_per_batch(cfg, cpu) == driver_mod.DEFAULT_TOKENS_PER_BATCH
    gib = 2**30

    def gpu(total, used):
        return types.SimpleNamespace(platform="gpu", memory_stats=lambda: {"bytes_limit": total, "bytes_in_use": used})

    big, small = auto_tokens_per_batch(cfg, gpu(80 * gib, gib)), auto_tokens_per_batch(cfg, gpu(80 * gib, 70 * gib))
    assert big > small >= 1024 and big & (big - 1) == 0  # a power of two that shrinks with the free memory
    bert_base = cfg.replace(hidden_size=768, intermediate_size=3072, num_layers=12, num_heads=12)
    tokens = auto_tokens_per_batch(bert_base, gpu(80 * gib, 0))
    assert 16_384 <= tokens <= 1_048_576, tokens  # BERT-base on an 80 GB card: tens to hundreds of 512-token rows


def test_targets_resolved_on_the_device_match_the_given_ones(tiny):
    model, exs = tiny
    pred, _ = _run(model, exs, "ig", {"steps": 4})
    drv = Driver(model.params, model.cfg, "ig", {"steps": 4}, mask_id=model.mask_id, pad_id=model.pad_id,
                 tokens_per_batch=96, buckets=(16, 32))
    for target in range(model.cfg.num_labels):
        got = {r["id"]: r for step in drv.run(exs, target=target) for r in step.records}
        assert {r["target"] for r in got.values()} == {target}
        for ex in exs:
            if pred[ex["id"]]["prediction"] == target:  # explaining the predicted class by name: the same scores
                np.testing.assert_allclose(got[ex["id"]]["scores"], pred[ex["id"]]["scores"], rtol=1e-5, atol=1e-7)
