"""The batched driver: chunked, bucketed and multi-device results equal the pure per-example functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import device_flags, tiny_model

from jaxattr.attribution import registry
from jaxattr.attribution.driver import Driver, attribute_examples, example_keys
from jaxattr.attribution.gradients import gradient_shap, integrated_gradients, saliency
from jaxattr.attribution.sig import sequential_integrated_gradients
from jaxattr.data import encode_texts, pad_batch
from jaxattr.errors import UserError

# two length buckets (16 and 32 tokens) and a word split into pieces
TEXTS = ["i love self driving cars !", "the zebra news is very bad , not good at all you know it is",
         "you hate it", "cars driving news and sport , is it good ? not very , it is bad"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert_driver")
    model, _ = tiny_model(path)
    exs = encode_texts(model.tokenizer, TEXTS)
    for i, ex in enumerate(exs):
        ex["id"] = f"ex{i}"
    assert {len(e["input_ids"]) <= 16 for e in exs} == {True, False}
    return model, exs, path


def reference(model, exs, method: str, opts: dict) -> list[np.ndarray]:
    """Per-example scores from the pure functions on the whole set padded to 32 tokens."""
    batch = pad_batch(exs, 32, model.pad_id)
    cfg, kw = model.cfg, {"mask_id": model.mask_id, "pad_id": model.pad_id}
    if method == "ig":
        res = jax.jit(lambda p, b: integrated_gradients(p, cfg, b, steps=opts["steps"], **kw))(model.params, batch)
    elif method == "sig":
        res = jax.jit(lambda p, b: sequential_integrated_gradients(p, cfg, b, steps=opts["steps"], **kw))(
            model.params, batch)
    elif method == "saliency":
        res = jax.jit(lambda p, b: saliency(p, cfg, b))(model.params, batch)
    else:
        keys = example_keys(0, [e["id"] for e in exs])
        res = jax.jit(lambda p, b, k: gradient_shap(p, cfg, b, k, samples=opts["samples"], **kw))(
            model.params, batch, keys)
    return [np.asarray(res.scores[i, :len(e["input_ids"])]) for i, e in enumerate(exs)], np.asarray(res.delta)


@pytest.mark.parametrize("method,opts", [("ig", {"steps": 6}), ("sig", {"steps": 3}), ("saliency", {}),
                                         ("gradientshap", {"samples": 3, "stdev": 0.0})])
def test_chunked_bucketed_equals_single(tiny, method, opts):
    model, exs, _ = tiny
    drv = Driver(model.params, model.cfg, method, opts, mask_id=model.mask_id, pad_id=model.pad_id,
                 tokens_per_batch=48, buckets=(16, 32))
    out = [r for step in drv.run(exs) for r in step.records]
    assert sorted(r["id"] for r in out) == sorted(e["id"] for e in exs)  # each example exactly once
    by_id = {r["id"]: r for r in out}
    ref, ref_delta = reference(model, exs, method, opts)
    for i, ex in enumerate(exs):
        got = np.asarray(by_id[ex["id"]]["scores"])
        np.testing.assert_allclose(got, ref[i], rtol=2e-4, atol=1e-6 * np.abs(ref[i]).max())
        if method in ("ig", "gradientshap"):
            assert by_id[ex["id"]]["delta"] == pytest.approx(float(ref_delta[i]), abs=1e-4)
        assert len(by_id[ex["id"]]["word_scores"]) == len(ex["words"])
    # one compiled shape per bucket and kind; memory bound: 48 tokens = 3 rows of 16 or 1 row of 32
    shapes = {s for s in drv.compiled_shapes if s[0] != "forward"}
    assert {s[2] for s in shapes} == {16, 32}
    if method in ("ig", "sig"):
        assert shapes == {("grad", 3, 16), ("grad", 1, 32)}


def test_small_calls_share_few_shapes(tiny):
    """A multi-process job runs the driver once per chunk; the rows per call come from a short ladder (multiples
    of 1/16 of the memory bound), so calls of 1, 2, ..., 24 examples do not each compile their own shape."""
    model, exs, _ = tiny
    short = [dict(exs[0], id=f"s{i}") for i in range(24)]  # one 16-token bucket
    drv = Driver(model.params, model.cfg, "ig", {"steps": 5}, mask_id=model.mask_id, pad_id=model.pad_id,
                 tokens_per_batch=16 * 128)  # 128 rows of 16 tokens: the ladder steps by 8 rows
    limit = drv.rows_per_chunk(16)
    ladder = {drv.even_rows(5 * n, limit) for n in range(1, len(short) + 1)}  # the rows a call of n examples takes
    assert all(r % 8 == 0 for r in ladder) and len(ladder) <= 16, ladder  # 24 shapes (5, 10, ..., 120) without it
    for n in (1, 7, 24):  # the driver compiles the ladder's shapes (a few calls: each compiles its own kernels)
        assert sum(len(step.records) for step in drv.run(short[:n])) == n
    rows = {s[1] for s in drv.compiled_shapes if s[0] == "grad"}
    assert rows == {drv.even_rows(5 * n, limit) for n in (1, 7, 24)}, rows


def test_registry_and_options(tiny):
    model, exs, _ = tiny
    assert {"ig", "sig", "saliency", "gradxinput", "gradientshap"} <= set(registry.names())
    with pytest.raises(UserError, match="unknown attribution method"):
        registry.get("nope")
    with pytest.raises(UserError, match="takes no option"):
        registry.get("ig").resolve_options({"layer": 3})
    with pytest.raises(UserError, match="steps"):
        registry.get("sig").resolve_options({"steps": 0})
    with pytest.raises(UserError, match="baseline"):
        registry.get("ig").resolve_options({"baseline": "unk"})
    assert registry.get("sig").resolve_options({"steps": None})["steps"] == 50
    drv = Driver(model.params, model.cfg, "saliency", mask_id=model.mask_id, pad_id=model.pad_id)
    with pytest.raises(UserError, match="no gold label"):
        next(drv.run(exs, target="gold"))
    with pytest.raises(UserError, match="outside"):
        next(drv.run(exs, target=7))
    # a given target is explained; gold labels come from the examples
    labelled = [dict(e, label=2) for e in exs[:1]]
    res = attribute_examples(model.params, model.cfg, labelled, "saliency", target="gold", mask_id=model.mask_id)
    assert res[0]["target"] == 2 and res[0]["gold"] == 2


MULTI = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    assert len(jax.devices()) == 4, jax.devices()
    sys.path.insert(0, {tests!r})
    from test_driver import TEXTS, reference
    from jaxattr.models import load_model
    from jaxattr.data import encode_texts
    from jaxattr.attribution.driver import Driver
    model = load_model({path!r})
    exs = encode_texts(model.tokenizer, TEXTS)
    for i, e in enumerate(exs):
        e["id"] = f"ex{{i}}"
    out = {{}}
    for method, opts in (("sig", {{"steps": 3}}), ("ig", {{"steps": 6}}), ("gradientshap", {{"samples": 3}})):
        drv = Driver(model.params, model.cfg, method, opts, mask_id=model.mask_id, pad_id=model.pad_id,
                     tokens_per_batch=48, devices=4)
        got = {{r["id"]: np.asarray(r["scores"]) for step in drv.run(exs) for r in step.records}}
        ref, _ = reference(model, exs, method, opts)
        out[method] = max(float(np.abs(got[e["id"]] - r).max() / np.abs(r).max()) for e, r in zip(exs, ref))
        out[method + "_rows"] = sorted({{s[1] for s in drv.compiled_shapes}})
    print("RESULT", json.dumps(out))
""")


@pytest.mark.extra  # a second check: tests/test_multihost_attribute.py runs the driver on 2 processes x 2 devices
def test_four_fake_devices_equal_single(tiny):
    model, _, path = tiny
    env = dict(os.environ, XLA_FLAGS=device_flags(4), JAX_PLATFORMS="cpu")
    script = MULTI.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][0]
    res = json.loads(line[len("RESULT "):])
    for method in ("sig", "ig", "gradientshap"):
        assert res[method] < 1e-4, res
        assert all(r % 4 == 0 for r in res[method + "_rows"]), res  # chunks span the 4 devices
