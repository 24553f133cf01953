"""The notebook API: `jaxattr.evaluation.evaluate` / `summarise` on a tiny random model and three texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxattr import cli
from jaxattr.evaluation import evaluate, summarise
from jaxattr.models import Model, load_tokenizer, minilm_dir

TEXTS = ["the flight was great", "lost my bag again, awful", "fine"]
METHODS = ["random", "gradxinput", "ig"]
OPTIONS = {"steps": 2}
COLUMNS = ["log_odds", "comprehensiveness", "sufficiency", "aopc_comprehensiveness", "aopc_sufficiency",
           "degradation_drop_11", "degradation_p11"]


@pytest.fixture(scope="module")
def model(tiny_bert, tmp_path_factory):
    """The conftest tiny BERT with the real MiniLM tokenizer (its vocabulary), saved as a checkpoint."""
    import jax

    from jaxattr.models import init_params
    from jaxattr.models.checkpoint import save_checkpoint

    cfg, _ = tiny_bert
    tok = load_tokenizer(minilm_dir())
    cfg = cfg.replace(vocab_size=tok.vocab_size)
    params = init_params(cfg, jax.random.key(0))
    d = save_checkpoint(tmp_path_factory.mktemp("api") / "tiny", cfg, params, tok)
    return Model(cfg, params, tok, str(d))


def test_evaluate_texts_gives_one_row_per_example_and_method(model):
    df = evaluate(model, TEXTS, methods=METHODS, progress=False, **OPTIONS)
    assert len(df) == len(TEXTS) * len(METHODS)
    assert sorted(map(tuple, df[["id", "method"]].values.tolist())) == sorted(
        (i, m) for i in range(len(TEXTS)) for m in METHODS)
    for c in COLUMNS:
        assert np.isfinite(df[c].astype(float)).all(), c
    table = summarise(df)
    assert list(table["method"]) == METHODS and (table["examples"] == len(TEXTS)).all()
    for c in ("log_odds", "comprehensiveness", "degradation_drop_11", "degradation_auc"):
        assert np.isfinite(table[c]).all(), c
        sub = df.groupby("method")[c].mean() if c != "degradation_auc" else None
        if sub is not None:
            np.testing.assert_allclose(table.set_index("method")[c].loc[METHODS], sub.loc[METHODS], atol=1e-12)
    assert "<table" in table._repr_html_()


def test_values_equal_the_cli_and_resume_computes_nothing(model, tmp_path, monkeypatch):
    data = tmp_path / "texts.csv"
    data.write_text("text\n" + "".join(f'"{t}"\n' for t in TEXTS))
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    argv = ["evaluate", "--model", model.source, "--data", str(data), "--out", str(cli_out), "--methods",
            ",".join(METHODS), "--examples", "0", "--steps", "2", "--label-column", ""]
    assert cli.main(argv) == 0
    written = {(r["method"], r["id"]): r for r in map(json.loads, (cli_out / "per_example.jsonl").open())}
    assert (cli_out / "attribution_table.md").exists() and (cli_out / "degradation.png").exists()
    df = evaluate(model, str(data), methods=METHODS, examples=0, label_column=None, out=lib_out, progress=False,
                  **OPTIONS)
    assert len(written) == len(df)
    for r in df.to_dict("records"):
        want = written[(r["method"], r["id"])]
        for c in COLUMNS:
            assert r[c] == pytest.approx(want[c], abs=1e-6), c
    # resume: the same call again attributes nothing (the driver is never built) and gives the same frame
    from jaxattr.attribution import driver

    monkeypatch.setattr(driver, "Driver", lambda *a, **k: pytest.fail("a resumed run attributed again"))
    again = evaluate(model, str(data), methods=METHODS, examples=0, label_column=None, out=lib_out,
                     progress=False, **OPTIONS)
    assert again[["id", "method", *COLUMNS]].equals(df[["id", "method", *COLUMNS]])


def test_tint_protocol_sits_beside_ours_on_the_same_attributions(model):
    """`protocol="tint"` adds tint_* columns measured by `faithfulness(protocol="tint")` on the stored scores,
    with LO writing each method's own baseline token ([PAD] for sig_pad), and summarise tabulates both."""
    from jaxattr.evaluation.evaluators import scored_batches
    from jaxattr.evaluation.faithfulness import faithfulness

    df = evaluate(model, TEXTS, methods=["ig", "sig_pad"], metrics=["log_odds", "sufficiency"], protocol="tint",
                  progress=False, **OPTIONS)
    for method, replacement in (("ig", model.mask_id), ("sig_pad", model.pad_id)):
        rows = df[df["method"] == method].sort_values("id").to_dict("records")
        from jaxattr.evaluation import load_examples

        examples = load_examples(model, TEXTS)
        for idx, batch, scores in scored_batches(model, examples, rows):
            want = faithfulness(model.params, model.cfg, batch, scores, mask_id=replacement, protocol="tint",
                                metrics=["log_odds", "sufficiency"])
            ours = faithfulness(model.params, model.cfg, batch, scores, mask_id=model.mask_id,
                                metrics=["log_odds"])
            for j, i in enumerate(idx):
                assert rows[i]["tint_log_odds"] == pytest.approx(float(want["log_odds"][j]), abs=1e-6)
                assert rows[i]["tint_sufficiency"] == pytest.approx(float(want["sufficiency"][j]), abs=1e-6)
                assert rows[i]["log_odds"] == pytest.approx(float(ours["log_odds"][j]), abs=1e-6)
    table = summarise(df)
    assert {"log_odds", "tint_log_odds", "tint_sufficiency"} <= set(table.columns)
