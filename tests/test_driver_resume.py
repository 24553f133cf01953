"""Resume inside one long IG/SIG example: the partial-sums sidecar keeps the finished rows, so an
interrupted run continues where it stopped and ends with the same file as an uninterrupted one."""

from __future__ import annotations

import json
import logging
import shutil

import jax
import pytest
from helpers import attribute, tiny_model

from jaxattr.attribution import results as results_mod
from jaxattr.attribution.driver import Driver
from jaxattr.attribution.job import drive
from jaxattr.attribution.results import ResultWriter, read_results
from jaxattr.cli import main
from jaxattr.data import encode_texts
from jaxattr.models import save_hf_dir

LONG = "the zebra news is very bad , not good at all you know it is"
SHORT = "you hate it"
TPB = 128  # tokens per batch: 4 rows of the 32-token bucket per chunk, so LONG spans many chunks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert_resume")
    model, _ = tiny_model(path)
    exs = encode_texts(model.tokenizer, [LONG, SHORT])
    for i, ex in enumerate(exs):
        ex["id"] = f"ex{i}"
    assert 16 < len(exs[0]["input_ids"]) <= 32
    return model, exs, path


def _run(model, exs, out, *, steps=3, stop_after=None):
    """The attribute command's loop; returns the number of gradient chunks computed. With `stop_after`
    the gradient kernel raises KeyboardInterrupt (as Ctrl-C would) once that many chunks are done."""
    drv = Driver(model.params, model.cfg, "sig", {"steps": steps}, mask_id=model.mask_id, pad_id=model.pad_id,
                 tokens_per_batch=TPB, buckets=(16, 32))  # the chunk counts below assume these buckets
    grad, calls = drv._grad, {"n": 0}

    def counted(*a):
        if stop_after is not None and calls["n"] >= stop_after:
            raise KeyboardInterrupt
        calls["n"] += 1
        return grad(*a)

    drv._grad = counted
    with ResultWriter(out) as writer:
        todo = [ex for ex in exs if not writer.is_done(ex["id"])]
        try:
            drive(drv, todo, "predicted", writer.write, partial=writer.partial)
        except KeyboardInterrupt:
            if stop_after is None:
                raise
    return calls["n"]


def _sidecar(out):
    return out.with_name(out.name + ".partial.json")


def test_interrupted_sig_example_resumes_from_its_partial_sums(tiny, tmp_path):
    model, exs, _ = tiny
    n_rows = (len(exs[0]["input_ids"]) - 2) * 3  # SIG token units x steps
    full = tmp_path / "full.jsonl"
    n_full = _run(model, exs, full)
    assert not _sidecar(full).exists()
    rows_per_chunk = 4
    assert n_full >= n_rows // rows_per_chunk > 5  # the long example alone spans many chunks

    part = tmp_path / "part.jsonl"
    assert _run(model, exs, part, stop_after=5) == 5  # the 16-token bucket (SHORT) first, then LONG's
    assert [r["id"] for r in read_results(part)] == ["ex1"]
    side = json.loads(_sidecar(part).read_text())
    assert list(side["examples"]) == [json.dumps("ex0")]
    entry = side["examples"][json.dumps("ex0")]
    assert entry["rows_done"] % rows_per_chunk == 0 and 0 < entry["rows_done"] < n_rows
    assert entry["check"]["rows"] == n_rows
    assert side["settings"]["method"] == "sig" and side["settings"]["options"]["steps"] == 3
    assert len(entry["acc"]) == 32 and any(x != 0 for x in entry["acc"])

    n_resumed = _run(model, exs, part)
    assert n_resumed == n_full - 5  # the 5 finished chunks are not computed again
    assert not _sidecar(part).exists()
    a, b = read_results(full), read_results(part)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert x["scores"] == pytest.approx(y["scores"], rel=1e-6, abs=1e-9)
        assert x["delta"] == pytest.approx(y["delta"], rel=1e-6, abs=1e-9)
    assert full.read_text() == part.read_text()  # same rows in the same chunks: the same bytes


def test_sidecar_from_other_settings_is_ignored_with_a_warning(tiny, tmp_path, caplog):
    model, exs, _ = tiny
    out = tmp_path / "out.jsonl"
    _run(model, exs[:1], out, stop_after=3)
    assert _sidecar(out).exists()
    ref = tmp_path / "ref.jsonl"
    n_ref = _run(model, exs[:1], ref, steps=2)
    with caplog.at_level(logging.WARNING, logger=results_mod.__name__):
        n = _run(model, exs[:1], out, steps=2)  # other steps: the stored sums do not apply
    assert n == n_ref
    assert any("other settings" in r.getMessage() and "options" in r.getMessage() for r in caplog.records)
    assert not _sidecar(out).exists()
    assert read_results(out) == read_results(ref)


def test_unreadable_sidecar_is_ignored_with_a_warning(tiny, tmp_path, caplog):
    model, exs, _ = tiny
    out, ref = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    _sidecar(out).write_text('{"format": "jaxattr-partial-sums", "sett')  # torn
    with caplog.at_level(logging.WARNING, logger=results_mod.__name__):
        _run(model, exs[:1], out)
    assert any("not a partial-sums file" in r.getMessage() for r in caplog.records)
    _run(model, exs[:1], ref)
    assert out.read_text() == ref.read_text() and not _sidecar(out).exists()


def test_cli_keeps_partial_sums_of_an_interrupted_example(tiny, tmp_path, monkeypatch):
    _, _, model_dir = tiny
    common = ["attribute", "--model", str(model_dir), "--method", "sig", "--steps", "3", "--text", LONG,
              "--tokens-per-batch", str(TPB)]
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    original = results_mod.ResultWriter.write
    calls = {"n": 0, "stop": None}

    def write(self, records):  # the driver yields once per chunk; stop (Ctrl-C) at the chosen one
        if calls["stop"] is not None and calls["n"] >= calls["stop"]:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(self, records)

    monkeypatch.setattr(results_mod.ResultWriter, "write", write)
    assert main([*common, "--out", str(full)]) == 0
    n_full, calls["n"], calls["stop"] = calls["n"], 0, 4
    assert main([*common, "--out", str(part)]) == 130
    assert json.loads(_sidecar(part).read_text())["examples"][json.dumps(0)]["rows_done"] > 0
    calls["n"], calls["stop"] = 0, None
    assert main([*common, "--out", str(part)]) == 0
    assert calls["n"] < n_full
    assert not _sidecar(part).exists() and part.read_text() == full.read_text()
    # --overwrite starts afresh and removes a sidecar
    _sidecar(part).write_text("{}")
    assert main([*common, "--out", str(part), "--overwrite"]) == 0
    assert not _sidecar(part).exists() and part.read_text() == full.read_text()


@pytest.mark.parametrize("scale, resumes", [(1e-7, True), (1e-2, False)])
def test_resume_needs_the_same_model_up_to_float_rounding(tiny, tmp_path, capsys, scale, resumes):
    """A model that differs from the one that wrote OUT only in the last bits (the same fine-tuning rerun on
    another CPU) resumes it; one whose logits moved (here every weight scaled by 1 + 1e-2) is refused in one
    line, and OUT is kept."""
    model, _, model_dir = tiny
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    save_hf_dir(model.cfg, jax.tree.map(lambda x: x * (1 + scale), model.params), other)
    out = tmp_path / "out.jsonl"
    common = ["--method", "ig", "--steps", "2", "--out", out]
    assert attribute(model_dir, "--text", SHORT, *common) == 0
    before = out.read_bytes()
    capsys.readouterr()
    code = attribute(other, "--text", SHORT, "--text", LONG, *common)
    err = capsys.readouterr().err.strip()
    assert out.read_bytes().startswith(before)
    if resumes:
        assert code == 0 and [r["id"] for r in read_results(out)] == [0, 1]
    else:
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "another model (its logits on a probe batch)" in err and len(read_results(out)) == 1
