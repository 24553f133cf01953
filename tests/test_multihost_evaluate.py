"""`jaxattr evaluate` and `jaxattr degradation` as 2 processes x 2 CPU devices on loopback (issue "Attribution
at pod scale", multi-host jobs): the same records and tables as one process, each method's store with every
id once in input order; a SIGKILLed evaluate job relaunched continues without losing or repeating a record.
The launcher is `test_multihost_attribute`'s."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import JOB_TEXTS, SLOW_WRITER, launch_processes, read_rows, tiny_model, wait_processes

from jaxattr.cli import main

N = 8
EV_ARGS = ("--methods", "ig,random", "--steps", "4", "--metrics", "log_odds,comprehensiveness,sufficiency,degradation")
DG_METHODS = ("ig", "random")
METRICS = ("log_odds", "comprehensiveness", "sufficiency", "aopc_comprehensiveness", "aopc_sufficiency",
           "degradation_drop_11", "degradation_p11", "degradation_curve", "prob", "target")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("multihost_evaluate")
    tiny_model(d / "model")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "text": JOB_TEXTS[i % 8] + " !" * (i % 5)}) + "\n"
                            for i in range(N)))
    return d, data


def _evaluate(d: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(d / "model"), "--data", str(data), "--out", str(out), "--examples", "0",
            "--max-length", "32", "--tokens-per-batch", "256", *extra]


def _degradation(d: Path, data: Path, out: Path) -> list[str]:
    return ["degradation", "--model", str(d / "model"), "--input", str(data), "--out", str(out), "--limit", "0",
            "--methods", ",".join(DG_METHODS), "--ig-steps", "4", "--max-length", "32", "--tokens-per-batch", "256"]


def _csv(path: Path, skip: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in r.items() if k not in skip} for r in csv.DictReader(f)]


def _close(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return (np.isnan(x) and np.isnan(y)) or bool(np.isclose(x, y, rtol=1e-5, atol=1e-6))


def _same_tables(one: Path, two: Path, skip: tuple[str, ...] = ()) -> None:
    a, b = _csv(one, skip), _csv(two, skip)
    assert len(a) == len(b) and [list(r) for r in a] == [list(r) for r in b], one.name
    for ra, rb in zip(a, b):
        assert all(_close(ra[k], rb[k]) for k in ra), (one.name, ra, rb)


def _same_records(one: list[dict], two: list[dict], fields: tuple[str, ...]) -> None:
    assert [r["id"] for r in two] == [r["id"] for r in one]
    for a, b in zip(one, two):
        np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-6, err_msg=str(a["id"]))
        for k in fields:
            if k in a:
                np.testing.assert_allclose(np.asarray(b[k], float), np.asarray(a[k], float), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{a['id']} {k}")


@pytest.mark.slow
def test_two_processes_evaluate_as_one(job):
    d, data = job
    wait_processes(launch_processes([_evaluate(d, data, d / "ev_two", *EV_ARGS)]))
    assert main(_evaluate(d, data, d / "ev_one", *EV_ARGS)) == 0
    for m in ("ig", "random"):
        one, two = read_rows(d / "ev_one" / f"records_{m}.jsonl"), read_rows(d / "ev_two" / f"records_{m}.jsonl")
        assert len(one) == N and len({json.dumps(r["id"]) for r in two}) == N
        _same_records(one, two, METRICS)
        assert not (d / "ev_two" / f"records_{m}.jsonl.shards").exists()
    key = lambda r: (r["method"], r["id"])  # noqa: E731
    per_one, per_two = (sorted(read_rows(d / x / "per_example.jsonl"), key=key) for x in ("ev_one", "ev_two"))
    assert [key(r) for r in per_one] == [key(r) for r in per_two]
    _same_tables(d / "ev_one" / "attribution_table.csv", d / "ev_two" / "attribution_table.csv",
                 skip=("seconds_per_example",))
    _same_tables(d / "ev_one" / "degradation.csv", d / "ev_two" / "degradation.csv")
    assert (d / "ev_two" / "degradation.png").exists() and (d / "ev_two" / "attribution_table.md").exists()


@pytest.mark.slow
@pytest.mark.extra  # degradation shares evaluate's run_sharded path, checked by the test above
def test_two_processes_degradation_as_one(job):
    d, data = job
    wait_processes(launch_processes([_degradation(d, data, d / "dg_two")]))
    assert main(_degradation(d, data, d / "dg_one")) == 0
    for m in DG_METHODS:
        one, two = read_rows(d / "dg_one" / f"scores_{m}.jsonl"), read_rows(d / "dg_two" / f"scores_{m}.jsonl")
        assert [r["id"] for r in one] == [r["id"] for r in two] and len(one) == N
        _same_records(one, two, ("prob", "target"))
        assert not (d / "dg_two" / f"scores_{m}.jsonl.shards").exists()
    _same_tables(d / "dg_one" / "degradation.csv", d / "dg_two" / "degradation.csv")
    _same_tables(d / "dg_one" / "per_example.csv", d / "dg_two" / "per_example.csv")
    assert (d / "dg_two" / "degradation.png").exists()


@pytest.mark.slow
@pytest.mark.extra  # the same kill-and-relaunch path as test_multihost_attribute's, through the harness
def test_killed_evaluate_relaunched_has_every_id_once(job):
    d, data = job
    out = d / "ev_killed"
    cmd = _evaluate(d, data, out, "--methods", "ig", "--steps", "32", "--metrics", "log_odds")
    procs = launch_processes([cmd], worker=SLOW_WRITER)
    shards = out / "records_ig.jsonl.shards"
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs) and not (shards.exists() and any(
            p.read_text().count("\n") >= 1 for p in shards.glob("proc-*.jsonl"))):
        time.sleep(0.1)
    assert all(p.poll() is None for p in procs), "the job ended before it could be killed"
    assert shards.exists(), "no process wrote a record"
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    assert not (out / "records_ig.jsonl").exists()
    wait_processes(launch_processes([cmd]))
    rows = read_rows(out / "records_ig.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(f"t{i}" for i in range(N)) and len(rows) == N
    assert not shards.exists()
    assert main(_evaluate(d, data, d / "ev_killed_ref", "--methods", "ig", "--steps", "32", "--metrics",
                          "log_odds")) == 0
    _same_records(read_rows(d / "ev_killed_ref" / "records_ig.jsonl"), rows, ("log_odds", "prob", "target"))
