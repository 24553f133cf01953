"""`jaxattr evaluate` and `jaxattr degradation` on a token-classification model (issue 34): one row per
(text, predicted entity), each metric read on that entity's span. Oracle: the tags from a plain forward, the
entity's span target built here, and `faithfulness` / `degradation_probs` called directly on one example with
the row's stored scores; the same call on the whole sentence's tags must differ, so a row that ignored its span
would fail."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hf_tiny import save_tiny

from jaxattr.attribution.results import read_results
from jaxattr.cli import main
from jaxattr.data.entities import entities, span_target
from jaxattr.data.tokenize import pad_batch
from jaxattr.evaluation import load_examples
from jaxattr.evaluation.degradation import FRACTIONS, TABLE_FRACTION, degradation_probs
from jaxattr.evaluation.faithfulness import METRICS, faithfulness
from jaxattr.models import load_model
from jaxattr.models.encoder import forward

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["i love the self driving cars !", "the zebra news is very bad", "you hate it", "we love the news"]
METHOD = "gradxinput"
WIDTH = 16  # the oracle's padded length: every text is shorter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random BERT token classifier with its tokenizer, the texts as a CSV, and the loaded model."""
    path = tmp_path_factory.mktemp("token_eval")
    save_tiny("bert", path / "model", num_labels=len(TAGS), seed=5, tokenizer=True, task="token", label_names=TAGS)
    with open(path / "texts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *([i, t] for i, t in enumerate(TEXTS))])  # ids kept when shuffled
    return path, load_model(path / "model")


@pytest.fixture(scope="module")
def evaluated(setup, tmp_path_factory):
    """`jaxattr evaluate --task token` over every entity: the records and the output dir."""
    path, _ = setup
    out = tmp_path_factory.mktemp("token_eval_out")
    assert main(["evaluate", "--model", str(path / "model"), "--task", "token", "--data", str(path / "texts.csv"),
                 "--methods", METHOD, "--limit", "0", "--out", str(out)]) == 0
    return read_results(out / f"records_{METHOD}.jsonl"), out


def _example(model, text_id):
    """One text's tokenised example (padded to WIDTH: one shape for every text, few compilations) and its
    predicted tags from a plain forward."""
    ex = next(e for e in load_examples(model, TEXTS) if e["id"] == text_id)
    batch = pad_batch([ex], WIDTH, model.pad_id)
    logits = forward(model.params, model.cfg, batch["input_ids"], batch["attention_mask"],
                     batch["token_type_ids"]).logits
    return ex, batch, np.asarray(logits.argmax(-1))[0, :len(ex["input_ids"])]


def _by_text(model, recs):
    """Per text: its example, its batch repeated once per record, the records' scores [R, T], their entities'
    span targets [R, T] built here from the plain forward's tags, and the whole sentence's span [R, T]."""
    for text_id in sorted({r["example_id"] for r in recs}):
        ex, batch, tags = _example(model, text_id)
        rows = [r for r in recs if r["example_id"] == text_id]
        n = len(rows)
        yield (ex, tags, rows, {k: np.repeat(v, n, 0) for k, v in batch.items()},
               _padded([r["scores"] for r in rows], 0.0),
               _padded([span_target(len(tags), r["entity"]["start"], r["entity"]["end"], tags) for r in rows], -1),
               _padded(np.repeat(span_target(len(tags), 1, len(tags) - 1, tags)[None], n, 0), -1))


def _padded(rows, value):
    """[R, n] -> [R, WIDTH], `value` in the padding (scores 0, span targets -1)."""
    a = np.asarray(rows, np.float32 if isinstance(value, float) else np.int32)
    return np.pad(a, ((0, 0), (0, WIDTH - a.shape[1])), constant_values=value)


def test_evaluate_gives_one_row_per_entity_measured_on_its_span(setup, evaluated):
    _, model = setup
    recs, out = evaluated
    assert recs, "the tiny model predicts entities in these texts"
    fr = (*FRACTIONS, TABLE_FRACTION)
    for text_id in range(len(TEXTS)):
        ex, _, tags = _example(model, text_id)
        want = entities([TAGS[t] for t in tags], ex["word_ids"], ex["word_spans"], (TEXTS[text_id], ""))
        assert [r["entity"] for r in recs if r["example_id"] == text_id] == want
    for _, _, rows, batch, scores, spans, whole in _by_text(model, recs):
        assert all(r["id"].startswith(f"{r['example_id']}/") and r["method"] == METHOD for r in rows)
        got = faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id, target=spans)
        for m in METRICS:
            np.testing.assert_allclose([r[m] for r in rows], got[m], atol=1e-5, err_msg=m)
        _, curve = degradation_probs(model.params, model.cfg, batch, scores, spans, fractions=fr,
                                     mask_id=model.mask_id)
        np.testing.assert_allclose([r["degradation_curve"] for r in rows], curve[:, :-1], atol=1e-5)
        np.testing.assert_allclose([r["degradation_p11"] for r in rows], curve[:, -1], atol=1e-5)
        other = faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id, target=whole)
        gap = np.max([np.abs(np.asarray([r[m] for r in rows]) - other[m]) for m in METRICS], axis=0)
        assert (gap > 1e-4).all(), gap  # the span is what was measured
    table = (out / "attribution_table.md").read_text()
    assert f"{len(recs)} entities" in table and (out / "degradation.md").exists()
    assert len((out / "per_example.jsonl").read_text().splitlines()) == len(recs)


def test_entities_label_filters_the_rows(setup, evaluated, tmp_path):
    path, _ = setup
    recs, _ = evaluated
    label = sorted({r["entity"]["label"] for r in recs})[0]
    assert main(["evaluate", "--model", str(path / "model"), "--task", "token", "--data", str(path / "texts.csv"),
                 "--methods", METHOD, "--metrics", "comprehensiveness,sufficiency", "--limit", "0",
                 "--entities", label, "--out", str(tmp_path / "one")]) == 0
    one = read_results(tmp_path / "one" / f"records_{METHOD}.jsonl")
    key = lambda r: (r["example_id"], r["entity"]["start"])
    want = {key(r): r for r in recs if r["entity"]["label"] == label}
    assert sorted(map(key, one)) == sorted(want)
    for r in one:
        np.testing.assert_allclose(r["comprehensiveness"], want[key(r)]["comprehensiveness"], atol=1e-6)


def test_degradation_gives_one_curve_per_entity_on_its_span(setup, tmp_path):
    path, model = setup
    out = tmp_path / "deg"
    assert main(["degradation", "--model", str(path / "model"), "--task", "token", "--input", str(path / "texts.csv"),
                 "--methods", METHOD, "--limit", "0", "--out", str(out)]) == 0
    recs = {r["id"]: r for r in read_results(out / f"scores_{METHOD}.jsonl")}
    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and sorted(r["id"] for r in rows) == sorted(recs)
    curves = {r["id"]: [float(r[f"p_{i}"]) for i in range(len(FRACTIONS) + 1)] for r in rows}
    fr = (*FRACTIONS, TABLE_FRACTION)
    for _, _, recs_t, batch, scores, spans, whole in _by_text(model, list(recs.values())):
        _, want = degradation_probs(model.params, model.cfg, batch, scores, spans, fractions=fr, mask_id=model.mask_id)
        np.testing.assert_allclose([curves[r["id"]] for r in recs_t], want[:, :-1], atol=1e-5)
        _, other = degradation_probs(model.params, model.cfg, batch, scores, whole, fractions=fr,
                                     mask_id=model.mask_id)
        assert (np.abs(other[:, :-1] - want[:, :-1]).max(-1) > 1e-4).all()
    assert "examples" in (out / "degradation.md").read_text()


def _one_line_error(capsys, args):
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["evaluate", "degradation"])
@pytest.mark.parametrize("model,extra,message", [
    ("sequence", ["--task", "token"], "--task token needs a token-classification model"),
    ("sequence", ["--entities", "PER"], "entities come from a token-classification model"),
    ("token", [], "a token classification model is not run by {command}; give --task token"),
    ("token", ["--task", "token", "--target", "gold"], "--target does not apply"),
    ("token", ["--task", "token", "--methods", "ig_ref"], "ig_ref does not explain token-classification models"),
    ("token", ["--task", "token", "--entities", "ORG"], "--entities 'ORG': the model's entity labels are"),
])
def test_mismatched_task_is_one_line(setup, model_dir, tmp_path, capsys, command, model, extra, message):
    path, _ = setup
    where = str(path / "model") if model == "token" else str(model_dir)
    data = ["--data" if command == "evaluate" else "--input", str(path / "texts.csv")]
    args = [command, "--model", where, *data, "--methods", METHOD, "--out", str(tmp_path / "o"), *extra]
    assert message.format(command=command) in _one_line_error(capsys, args)
    assert not list((tmp_path / "o").glob("*.jsonl")) if (tmp_path / "o").exists() else True


def test_records_name_their_entity(evaluated):
    recs, out = evaluated
    lines = [json.loads(line) for line in (out / "per_example.jsonl").read_text().splitlines()]
    assert all(r["entity"]["label"] in ("PER", "LOC") and isinstance(r["example_id"], int) for r in lines)
