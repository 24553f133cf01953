"""Attribution for token-classification models (issue 34): a span target explains the sum of its tokens'
logits for their classes. Oracles: `jax.grad` of that sum written out here (saliency, Grad×Input), IG's
completeness axiom, and the CLI's records against the pure function on the same span."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_tiny import save_tiny

from jaxattr.attribution.gradients import grad_x_input, integrated_gradients
from jaxattr.attribution.results import read_results
from jaxattr.attribution.sig import sequential_integrated_gradients
from jaxattr.cli import main
from jaxattr.data.entities import span_target
from jaxattr.errors import UserError
from jaxattr.models import init_params, tiny_config
from jaxattr.models.encoder import forward, word_embeddings

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["i love the self driving cars !", "the zebra news is very bad", "you hate it"]


@pytest.fixture(scope="module")
def model():
    cfg = tiny_config(num_labels=5, task="token")
    return cfg, init_params(cfg, jax.random.key(3))


def _batch() -> dict[str, np.ndarray]:
    ids = np.array([[2, 11, 12, 13, 14, 15, 3, 0]], np.int32)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32), "token_type_ids": np.zeros_like(ids),
            "word_ids": np.array([[-1, 0, 1, 2, 3, 4, -1, -1]], np.int32)}


def test_grad_x_input_is_the_gradient_of_the_spans_summed_logits(model):
    cfg, params = model
    batch = _batch()
    classes = np.array([0, 1, 2, 2, 3, 0, 0, 0])
    target = span_target(8, 2, 5, classes)[None]
    x = word_embeddings(params, cfg, jnp.asarray(batch["input_ids"]))

    def f(e):  # the span's logits for its classes, summed: written out, not through explained_output
        logits = forward(params, cfg, None, batch["attention_mask"], batch["token_type_ids"], word_embeds=e).logits
        return sum(logits[0, t, classes[t]] for t in range(2, 5))

    want = (jax.grad(f)(x) * x).sum(-1)[0] * np.array([0, 1, 1, 1, 1, 1, 0, 0])
    got = grad_x_input(params, cfg, batch, target=target)
    np.testing.assert_allclose(np.asarray(got.scores)[0], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(got.f_x[0]), float(f(x)), rtol=1e-5)


@pytest.mark.parametrize("span", [(1, 2), (2, 5)])
def test_ig_and_sig_completeness_on_a_span(model, span):
    cfg, params = model
    target = span_target(8, *span, np.array([0, 1, 2, 4, 3, 0, 0, 0]))[None]
    ig = integrated_gradients(params, cfg, _batch(), steps=64, target=target, mask_id=4, pad_id=0)
    assert abs(float(ig.delta[0])) < 1e-4 * (1 + abs(float(ig.f_x[0])))
    s = sequential_integrated_gradients(params, cfg, _batch(), steps=32, target=target, mask_id=4, pad_id=0)
    assert np.abs(np.asarray(s.unit_delta)).max() < 1e-4


def test_a_token_target_is_checked(model):
    cfg, params = model
    with pytest.raises(UserError, match="explains a span"):
        grad_x_input(params, cfg, _batch())
    with pytest.raises(UserError, match=r"must be \[B, T\]"):
        grad_x_input(params, cfg, _batch(), target=np.zeros((1, 5), np.int32))
    with pytest.raises(UserError, match="classes in 0..4"):
        grad_x_input(params, cfg, _batch(), target=np.full((1, 8), 7, np.int32))
    with pytest.raises(UserError, match="outside the input"):
        span_target(8, 6, 9, np.zeros(8))


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("token_attr")
    save_tiny("bert", path, num_labels=len(TAGS), seed=5, tokenizer=True, task="token", label_names=TAGS)
    return path


def test_attribute_task_token_writes_one_record_per_entity(token_dir, tmp_path, capsys):
    out = tmp_path / "ents.jsonl"
    args = ["attribute", "--model", str(token_dir), "--task", "token", "--method", "ig", "--steps", "32",
            "--out", str(out), *sum((["--text", t] for t in TEXTS), [])]
    assert main(args) == 0
    assert main(["predict", "--model", str(token_dir), "--text", TEXTS[0], "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recs = read_results(out)
    assert recs, "the tiny model predicts entities in these texts"
    first = [r for r in recs if r["example_id"] == 0]
    assert [r["entity"] for r in first] == predicted["entities"]
    for r in recs:
        ent = r["entity"]
        assert r["id"].startswith(f"{r['example_id']}/") and ent["label"] in ("PER", "LOC")
        assert len(r["scores"]) == len(r["tokens"]) and r["target"] == TAGS.index(
            predicted["tags"][ent["start"]]) if r["example_id"] == 0 else True
        assert abs(r["delta"]) < 1e-3
    from jaxattr.viz.html import render_report

    page = render_report(recs, label_names=TAGS)
    assert page.count('class="entity"') == len(recs) and recs[0]["entity"]["text"] in page  # the entity is marked
    labels = {r["entity"]["label"] for r in recs}
    one = sorted(labels)[0]
    assert main([*args[:-6], "--entities", one, "--text", TEXTS[0], "--out", str(tmp_path / "one.jsonl")]) == 0
    assert {r["entity"]["label"] for r in read_results(tmp_path / "one.jsonl")} <= {one}


@pytest.mark.parametrize("extra,message", [(["--method", "ig_embedding"], "ig_embedding does not explain token"),
                                           (["--method", "ig", "--entities", "ORG"], "entity labels are LOC, PER"),
                                           (["--method", "ig", "--target", "1"], "--target does not apply")])
def test_token_attribution_errors(token_dir, tmp_path, capsys, extra, message):
    assert main(["attribute", "--model", str(token_dir), "--task", "token", *extra, "--text", TEXTS[0],
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_task_token_on_a_sequence_model_is_refused(model_dir, tmp_path, capsys):
    assert main(["attribute", "--model", str(model_dir), "--task", "token", "--method", "ig", "--text", TEXTS[0],
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "--task token needs a token-classification model" in capsys.readouterr().err
