"""`jaxattr evaluate`: the attribution-table harness end to end on a tiny model and a 20-example subset."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from jaxattr import cli
from jaxattr import evaluation as ev
from jaxattr.attribution.registry import label
from jaxattr.evaluation.evaluators import scored_batches
from jaxattr.evaluation.faithfulness import METRICS
from jaxattr.models import Model, init_params, load_model, load_tokenizer, minilm_dir, tiny_config

WORDS = ["good", "bad", "great", "awful", "car", "road", "drive", "fine", "slow", "fast", "the", "a", "is"]
ALL_METHODS = ["random", "gradxinput", "gradientshap", "ig", "sig", "sig_pad", "iba", "lime"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny random BERT with the real MiniLM tokenizer, saved as a checkpoint, and labelled CSVs."""
    from jaxattr.models.checkpoint import save_checkpoint

    tok = load_tokenizer(minilm_dir())
    cfg = tiny_config("bert", vocab_size=tok.vocab_size, dropout_rate=0.0, attention_dropout_rate=0.0)
    params = init_params(cfg, jax.random.key(1))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    d = tmp_path_factory.mktemp("evaluate")
    ckpt = save_checkpoint(d / "tiny", cfg, params, tok)
    rng = np.random.default_rng(0)
    rows = [(" ".join(rng.choice(WORDS, rng.integers(3, 12))), ["neg", "pos"][i % 2]) for i in range(24)]
    labelled, three, unlabelled = d / "two.csv", d / "three.csv", d / "nolabel.csv"
    rows3 = [(t, ["a", "b", "c"][i % 3]) for i, (t, _) in enumerate(rows)]
    for path, fields, data in ((labelled, ["text", "label"], rows), (three, ["text", "label"], rows3),
                               (unlabelled, ["text"], [(t,) for t, _ in rows])):
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(fields)
            w.writerows(data)
    return {"ckpt": str(ckpt), "two": str(labelled), "three": str(three), "none": str(unlabelled), "dir": d}


ARGS = ["--examples", "20", "--steps", "4", "--shap-samples", "4", "--lime-samples", "16", "--iba-layer", "1",
        "--max-length", "32"]


@pytest.mark.slow
def test_harness_end_to_end_and_resume(tiny_setup, capsys):
    out = tiny_setup["dir"] / "out"
    argv = ["evaluate", "--model", tiny_setup["ckpt"], "--data", tiny_setup["two"], "--out", str(out),
            "--methods", ",".join(ALL_METHODS), *ARGS]
    assert cli.main(argv) == 0
    table = (out / "attribution_table.md").read_text()
    for m in ALL_METHODS:
        assert label(m) in table
    with (out / "attribution_table.csv").open() as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert set(summary) == set(ALL_METHODS)
    recs = [json.loads(x) for x in (out / "per_example.jsonl").read_text().splitlines()]
    assert len(recs) == 20 * len(ALL_METHODS)
    cols = [*METRICS, "degradation_drop_11", "degradation_p11"]
    for r in recs:
        assert all(np.isfinite(r[c]) for c in cols), r
    assert (out / "degradation.png").stat().st_size > 1000 and (out / "degradation.md").exists()
    for m in ALL_METHODS:
        assert np.isfinite(float(summary[m]["degradation_auc"]))
    for m in ALL_METHODS:  # the table is the mean of the per-example records
        vals = [r["comprehensiveness"] for r in recs if r["method"] == m]
        assert float(summary[m]["comprehensiveness"]) == pytest.approx(np.mean(vals), abs=1e-9)
        assert int(summary[m]["examples"]) == 20

    # The records hold the metrics of exactly that example's attribution (no mix-up across buckets):
    # recompute SIG's for every example one at a time, straight from the library.
    from jaxattr.attribution.driver import attribute_examples
    from jaxattr.evaluation.faithfulness import faithfulness

    model = load_model(tiny_setup["ckpt"])
    examples = ev.load_examples(model, tiny_setup["two"], examples=20, max_length=32)
    sig_recs = {r["id"]: r for r in recs if r["method"] == "sig"}
    for ex in examples[:6]:
        res = attribute_examples(model.params, model.cfg, [ex], "sig", {"steps": 4, "baseline": "mask"},
                                 mask_id=model.mask_id, pad_id=model.pad_id)[0]
        [(_, batch, scores)] = scored_batches(model, [ex], [res])
        want = faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id)
        for c in ("log_odds", "comprehensiveness", "sufficiency", "aopc_sufficiency"):
            assert sig_recs[ex["id"]][c] == pytest.approx(float(want[c][0]), abs=1e-5), c

    # Resume: a killed run (last records lost, the last line torn) is completed without redoing
    # finished pairs: the kept records are untouched and the lost ones come back.
    store = out / "records_lime.jsonl"
    lines = store.read_text().splitlines()
    keep = len(lines) - 6
    store.write_text("\n".join(lines[:keep]) + "\n" + lines[keep][:20])
    assert cli.main(argv) == 0
    after = [json.loads(x) for x in store.read_text().splitlines()]  # the torn line was cut off
    assert after[:keep] == [json.loads(x) for x in lines[:keep]] and len(after) == len(lines)
    after = [json.loads(x) for x in (out / "per_example.jsonl").read_text().splitlines()]
    assert len(after) == len(recs)
    assert {(r["method"], r["id"]) for r in after} == {(r["method"], r["id"]) for r in recs}
    with (out / "attribution_table.csv").open() as f:
        summary2 = {r["method"]: r for r in csv.DictReader(f)}
    for m in ("sig", "ig", "gradxinput"):  # deterministic methods give the same numbers
        assert float(summary2[m]["log_odds"]) == pytest.approx(float(summary[m]["log_odds"]), abs=1e-6)


@pytest.mark.parametrize("extra, data, message", [
    (["--methods", "sig,shapley"], "two", "unknown method 'shapley'"),
    (["--metrics", "log_odds,bleu"], "two", "unknown metric 'bleu'"),
    ([], "three", "the model has 2 labels but dataset"),
    (["--target", "gold"], "none", "has no labels"),
])
def test_user_mistakes_are_one_line(tiny_setup, capsys, extra, data, message):
    argv = ["evaluate", "--model", tiny_setup["ckpt"], "--data", tiny_setup[data], "--out",
            str(tiny_setup["dir"] / "bad"), "--methods", "sig", *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_model_object_is_usable_directly(tiny_setup):
    """Library use without the CLI: `evaluate()` on a Model and examples, a subset of metrics."""
    model = load_model(tiny_setup["ckpt"])
    assert isinstance(model, Model)
    examples = ev.load_examples(model, tiny_setup["two"], examples=5, max_length=32)
    df = ev.evaluate(model, examples, ["gradxinput"], ["comprehensiveness"], out=tiny_setup["dir"] / "lib",
                     progress=False)
    summary = ev.summarise(df)
    assert summary["examples"][0] == 5 and np.isfinite(summary["comprehensiveness"][0])
