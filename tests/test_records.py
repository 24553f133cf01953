"""`AttributionRecord`: the typed record every writer and reader shares (issue 33)."""

from __future__ import annotations

import json

import jax
import pytest

from jaxattr.attribution import AttributionRecord, Driver, ResultWriter, read_records
from jaxattr.attribution.results import read_results
from jaxattr.errors import UserError


def test_driver_records_round_trip_through_the_typed_record(tiny_bert, tmp_path):
    """What the driver yields is `AttributionRecord.to_dict()`: id first, and it reads back equal."""
    from jaxattr.data.tokenize import encode_texts
    from jaxattr.models import init_params, load_tokenizer, minilm_dir

    cfg, _ = tiny_bert
    tok = load_tokenizer(minilm_dir())
    cfg = cfg.replace(vocab_size=tok.vocab_size)
    params = init_params(cfg, jax.random.key(0))
    examples = encode_texts(tok, ["a fine day", "bad service again"], max_length=16)
    for i, ex in enumerate(examples):
        ex["id"] = f"ex{i}"
    drv = Driver(params, cfg, "gradxinput", mask_id=tok.mask_token_id, pad_id=tok.pad_token_id)
    rows = [r for step in drv.run(examples) for r in step.records]
    assert [r["id"] for r in rows] == ["ex0", "ex1"] and all(next(iter(r)) == "id" for r in rows)
    with ResultWriter(tmp_path / "out.jsonl") as w:
        w.write(rows)
    typed = read_records(tmp_path / "out.jsonl")
    assert [t.to_dict() for t in typed] == read_results(tmp_path / "out.jsonl") == json.loads(json.dumps(rows))
    assert len(typed[0].scores) == len(typed[0].tokens) and typed[0].delta is None and not typed[0].metrics


def test_earlier_files_and_extra_keys_read_back():
    """An evaluation record written before `n_tokens` (an int "tokens") reads as n_tokens; unknown keys are kept in
    `metrics`, after the fields, with "layer" last."""
    old = {"id": 3, "input_sha": "ab", "target": 1, "prob": 0.7, "seconds": 0.1, "tokens": 9, "scores": [0.0, 1.0],
           "log_odds": -1.5, "method": "ig"}
    rec = AttributionRecord.from_dict(old)
    assert rec.n_tokens == 9 and rec.tokens is None and rec.metrics == {"log_odds": -1.5}
    d = rec.to_dict()
    assert list(d)[0] == "id" and d["n_tokens"] == 9 and "tokens" not in d and d["log_odds"] == -1.5
    layered = AttributionRecord(id=1, scores=[0.5], target=0, prob=0.5, layer=2, metrics={"x": 1}).to_dict()
    assert list(layered)[-1] == "layer" and layered["x"] == 1


def test_a_torn_last_line_is_skipped_and_a_bad_middle_line_refused(tmp_path):
    good = json.dumps({"id": 1, "scores": [1.0]})
    p = tmp_path / "r.jsonl"
    p.write_text(good + "\n" + '{"id": 2, "sco')
    assert [r.id for r in read_records(p)] == [1]
    p.write_text('{"id": 2, "sco\n' + good + "\n")
    with pytest.raises(UserError, match="line 1"):
        read_records(p)
    assert read_records(tmp_path / "missing.jsonl", missing_ok=True) == []
