"""`jaxattr degradation` on a tiny model: --limit, resumable score files, and --input errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TABLE_TEXTS as TEXTS

from jaxattr.attribution.results import read_results
from jaxattr.cli import main


def degradation(model_dir, *extra) -> int:
    return main(["degradation", "--model", str(model_dir), *map(str, extra)])


def test_limit_takes_the_first_rows(model_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS))
    out = tmp_path / "out"
    assert degradation(model_dir, "--input", data, "--methods", "random", "--limit", 2, "--out", out) == 0
    assert [r["id"] for r in read_results(out / "scores_random.jsonl")] == [0, 1]
    assert (out / "degradation.md").exists() and (out / "degradation.png").exists()
    # per-example curves: one row per example; p_0 is the unmasked input, p_table the 1/9 deletion (= p_1 on
    # the reference grid), and the mean over rows is the table's curve
    import csv

    with open(out / "per_example.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["id"]) for r in rows) == [0, 1] and {r["method"] for r in rows} == {"random"}
    assert all(float(r["p_table"]) == float(r["p_1"]) for r in rows)
    with open(out / "degradation.csv") as f:
        drop = float(next(csv.DictReader(f))["drop_11"])
    assert np.mean([float(r["p_0"]) - float(r["p_table"]) for r in rows]) == pytest.approx(drop, abs=1e-5)


@pytest.mark.parametrize("case,needle", [("splits", "choose one with --split"), ("no_rows", "no examples")])
def test_input_errors_are_one_line(model_dir, tmp_path, capsys, monkeypatch, case, needle):
    spec = tmp_path / "header_only.csv"
    spec.write_text("text,label\n")
    if case == "splits":  # a hub dataset with splits and none chosen (faked: no network)
        import datasets

        from jaxattr.data import datasets as data_mod

        spec = "hf:fake"
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})})
        monkeypatch.setattr(data_mod, "_from_hub", lambda *a, **k: dd)
    capsys.readouterr()
    assert degradation(model_dir, "--input", spec, "--methods", "random", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxattr degradation: error:") and needle in err, err


def test_reference_comparators_explain_a_fixed_class(model_dir, tmp_path):
    """ig_class0 explains class 0 and lime_label1 class 1 whatever the target (the class the IBA reference
    code's comparators explain, registry.VARIANTS); where the prediction is that class they equal the ordinary
    method."""
    import numpy as np

    data = tmp_path / "data.jsonl"
    data.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS))
    out = tmp_path / "out"
    assert degradation(model_dir, "--input", data, "--methods", "ig,ig_class0,lime,lime_label1", "--out", out) == 0
    checked_same = checked_other = 0
    for name, fixed, cls in (("ig", "ig_class0", 0), ("lime", "lime_label1", 1)):
        plain = {r["id"]: r for r in read_results(out / f"scores_{name}.jsonl")}
        ref = {r["id"]: r for r in read_results(out / f"scores_{fixed}.jsonl")}
        assert {r["target"] for r in ref.values()} == {cls}
        same = [i for i, r in plain.items() if r["prediction"] == cls]
        other = [i for i, r in plain.items() if r["prediction"] != cls]
        for i in same:
            np.testing.assert_allclose(ref[i]["scores"], plain[i]["scores"], atol=1e-6)
        if other:
            assert any(not np.allclose(ref[i]["scores"], plain[i]["scores"], atol=1e-4) for i in other)
        checked_same += len(same)
        checked_other += len(other)
    assert checked_same and checked_other  # both cases were exercised (the two comparators explain 0 and 1)
    assert "IG (class 0)" in (out / "degradation.md").read_text()


@pytest.mark.parametrize("command,data_flag", [("degradation", "--input"), ("evaluate", "--data")])
def test_long_native_past_the_positions_names_long_window(model_dir, tmp_path, capsys, command, data_flag):
    """`--long native --max-length` beyond the model's position table: one line naming `--long window`, before
    any data is read (the data file does not exist)."""
    import json

    positions = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    capsys.readouterr()
    code = main([command, "--model", str(model_dir), data_flag, str(tmp_path / "absent.csv"), "--methods", "random",
                 "--long", "native", "--max-length", str(positions + 1), "--out", str(tmp_path / command)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--long window" in err and str(positions) in err, err
