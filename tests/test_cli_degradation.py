"""`jaxattr degradation` on a tiny model: --limit, resumable score files, and --input errors."""

from __future__ import annotations

import pytest
from test_cli_attribute import TEXTS
from test_gradients import tiny_model

from jaxattr.attribution.results import read_results
from jaxattr.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert_degradation")
    tiny_model(path)
    return path


def degradation(model_dir, *extra) -> int:
    return main(["degradation", "--model", str(model_dir), *map(str, extra)])


def test_limit_takes_the_first_rows(model_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(f'{{"text": "{t}"}}\n' for t in TEXTS))
    out = tmp_path / "out"
    assert degradation(model_dir, "--input", data, "--methods", "random", "--limit", 2, "--out", out) == 0
    assert [r["id"] for r in read_results(out / "scores_random.jsonl")] == [0, 1]
    assert (out / "degradation.md").exists() and (out / "degradation.png").exists()


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
