"""The Ray Data executor (`jaxattr.ray`, `jaxattr attribute --executor ray`) on a local 2-CPU cluster started
and stopped here: the same records as one process, each id once; a run whose actor is killed and which is then
interrupted loses nothing on relaunch; combinations that make no sense, and a missing Ray, fail in one line."""

from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest
from helpers import TABLE_TEXTS as TEXTS
from helpers import attribute

from jaxattr.attribution import results as results_mod
from jaxattr.attribution.results import read_results
from jaxattr.errors import UserError

NO_RAY = "Ray is not installed (pip install jaxattr[ray])"


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason=NO_RAY)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """helpers.tiny_model saved as a jaxattr checkpoint: every actor and CLI run loads it (3x faster than its HF
    dir, which builds the params before filling them)."""
    from helpers import tiny_model

    from jaxattr.models.checkpoint import save_checkpoint

    model, _ = tiny_model(tmp_path_factory.mktemp("tiny_bert_hf"))
    path = tmp_path_factory.mktemp("tiny_bert_ray") / "ckpt"
    save_checkpoint(path, model.cfg, model.params, model.tokenizer)
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.csv"
    path.write_text("\n".join(["id,text,label"] + [f'{10 + i},"{t}",{i % 3}' for i, t in enumerate(TEXTS)]) + "\n")
    return path


def _same(local: list[dict], other: list[dict]) -> None:
    """`other` holds `local`'s records, each id once: equal fields, scores to float tolerance (the examples are
    batched otherwise); a field `local` lacks may only be None (a column the Ray dataset fills)."""
    assert sorted(r["id"] for r in other) == sorted(r["id"] for r in local) and len(other) == len(local)
    by_id = {r["id"]: r for r in other}
    for r in local:
        o = by_id[r["id"]]
        assert all(o[k] is None for k in set(o) - set(r)), (r, o)
        for k, v in r.items():
            close = k in ("scores", "word_scores", "prob", "delta") and v is not None
            assert o[k] == (pytest.approx(v, rel=1e-5, abs=1e-6) if close else v), (k, v, o[k])


def test_library_records_equal_one_process(cluster, model_dir, table, tmp_path):
    import jaxattr.ray

    local = tmp_path / "local.jsonl"
    assert attribute(model_dir, "--method", "saliency", "--input", table, "--label-column", "label",
                     "--out", local, "--tokens-per-batch", 64) == 0
    ds = cluster.data.from_items([{"id": 10 + i, "text": t, "label": i % 3} for i, t in enumerate(TEXTS)])
    out = jaxattr.ray.attribute(ds, str(model_dir), "saliency", actors=2, batch_size=2, tokens_per_batch=64)
    _same(read_results(local), out.take_all())
    with pytest.raises(UserError, match="no column 'sentence'"):
        jaxattr.ray.attribute(ds, str(model_dir), "saliency", text_column="sentence")
    with pytest.raises(UserError, match="not a loaded model|model's spec"):
        jaxattr.ray.attribute(ds, object(), "saliency")


def _map_workers() -> list[psutil.Process]:
    """The Ray actor processes of this test's cluster (descendants of this process), the newest last."""
    found = [p for p in psutil.Process().children(recursive=True) if "MapWorker" in " ".join(p.cmdline())]
    assert found, "no Ray actor process found"
    return sorted(found, key=lambda p: p.create_time())


def test_cli_kill_and_relaunch_give_the_one_process_file(cluster, model_dir, table, tmp_path, monkeypatch, capsys):
    local, out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    args = ("--method", "ig", "--steps", "4", "--input", table, "--tokens-per-batch", 64)
    assert attribute(model_dir, *args, "--out", local) == 0
    original, writes = results_mod.ResultWriter.write, []

    def write(self, records):  # after the first records: kill an actor, go on, then Ctrl-C at the third write
        records = list(records)
        if records and len(writes) == 2:
            raise KeyboardInterrupt
        n = original(self, records)
        if records:
            writes.append(n)
            if len(writes) == 1:
                os.kill(_map_workers()[-1].pid, signal.SIGKILL)
        return n

    monkeypatch.setattr(results_mod.ResultWriter, "write", write)
    assert attribute(model_dir, *args, "--out", out, "--executor", "ray", "--ray-actors", 1) == 130
    monkeypatch.undo()
    first = read_results(out)
    assert len(writes) == 2 and 2 <= len(first) < len(TEXTS)  # the run went on after its only actor was killed
    capsys.readouterr()
    assert attribute(model_dir, *args, "--out", out, "--executor", "ray", "--ray-actors", 1) == 0
    err = capsys.readouterr().err
    assert f"{len(first)} of {len(TEXTS)} examples already in" in err
    assert f"wrote {len(TEXTS) - len(first)} records" in err  # nothing redone
    a, b = read_results(local), read_results(out)
    assert [r["id"] for r in b] == [r["id"] for r in a] == [10 + i for i in range(len(TEXTS))]  # input order
    _same(a, b)


def test_combinations_refused_in_one_line(model_dir, table, tmp_path, capsys):
    base = ("--method", "saliency", "--input", table, "--out", tmp_path / "o.jsonl")
    for extra, words in ((("--ray-actors", 2), "go with --executor ray"),
                         (("--executor", "ray", "--shard", "0/2"), "drop --shard"),
                         (("--executor", "ray", "--devices", 1), "--devices goes with --executor local"),
                         (("--executor", "ray", "--ray-actors", 0), "--ray-actors must be >= 1")):
        assert attribute(model_dir, *base, *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_an_actors_user_error_is_found_inside_rays_exceptions():
    """What `jaxattr attribute --executor ray` turns into its one-line error: a UserError raised in an actor's
    call (Ray's wrapper subclasses it) or constructor (inside ActorDiedError); another error is no UserError."""
    exceptions = pytest.importorskip("ray.exceptions", reason=NO_RAY)
    from jaxattr.ray import user_error

    ActorDiedError, RayTaskError = exceptions.ActorDiedError, exceptions.RayTaskError

    call = RayTaskError("submit", "Traceback ...", UserError("target class 7 is outside 0..2")).as_instanceof_cause()
    assert isinstance(call, UserError) and str(user_error(call)) == "target class 7 is outside 0..2"
    init = ActorDiedError(RayTaskError("__init__", "Traceback ...", UserError("no such model dir")))
    assert str(user_error(init)) == "no such model dir"
    assert user_error(RayTaskError("submit", "Traceback ...", ValueError("a bug"))) is None


def test_without_ray_one_line_names_the_extra(model_dir, table, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    from jaxattr.ray import require_ray

    with pytest.raises(UserError, match=r"pip install jaxattr\[ray\]"):
        require_ray()
    assert attribute(model_dir, "--method", "saliency", "--input", table, "--out", tmp_path / "o.jsonl",
                     "--executor", "ray") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install jaxattr[ray]" in err, err
