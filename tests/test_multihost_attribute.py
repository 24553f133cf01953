"""`jaxattr attribute` as 2 processes x 2 CPU devices on loopback (issue "Attribution at pod scale"):
the same rows as one process, one file, every id once in input order; a SIGKILLed job relaunched
continues without losing or repeating a record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model

from jaxattr.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["i love self driving cars", "the zebra news is very bad", "you hate it", "good news a car",
         "not very good driving", "cars cars cars", "it is not bad", "a very very good car"]
IDS = [f"t{i}" for i in range(24)]
METHODS = {"ig": ["--steps", "8"], "sig": ["--steps", "4"], "iba": ["--layer", "1", "--steps", "3", "--samples", "2"]}
# IBA's scores are min-max normalised to [0, 1] after Adam steps, whose g / sqrt(v) turns last-bit differences
# between the 1-device and the 2 x 2-device programs into ~2e-6 of the range: agreement to 1e-5 of the range
ATOL = {"ig": 1e-6, "sig": 1e-6, "iba": 1e-5}
# one process runs the commands one after another (one interpreter start, one jax.distributed init)
WORKER = "import sys; from jaxattr.cli import main; [main(a) for a in eval(sys.argv[1])]"


def _launch(commands: list[list[str]]) -> list[subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    return [subprocess.Popen([sys.executable, "-c", WORKER, repr(commands)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(env, JAX_PROCESS_ID=str(i)))
            for i in range(2)]


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("multihost")
    tiny_model(d / "model")
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": WORDS[int(i[1:]) % 8] + " !" * (int(i[1:]) % 5)}) + "\n"
                            for i in IDS))
    return d, data


def _argv(d: Path, data: Path, method: str, out: Path, *extra: str) -> list[str]:
    return ["attribute", "--model", str(d / "model"), "--method", method, *METHODS.get(method, []), *extra,
            "--input", str(data), "--out", str(out), "--tokens-per-batch", "256"]


@pytest.mark.slow
def test_two_processes_write_what_one_writes(job):
    d, data = job
    _wait(_launch([_argv(d, data, m, d / f"two_{m}.jsonl") for m in METHODS]))
    for m in METHODS:
        assert main(_argv(d, data, m, d / f"one_{m}.jsonl")) == 0
        one, two = _rows(d / f"one_{m}.jsonl"), _rows(d / f"two_{m}.jsonl")
        assert [r["id"] for r in two] == IDS == [r["id"] for r in one], m
        for a, b in zip(one, two):
            np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=ATOL[m], err_msg=m)
        assert not (d / f"two_{m}.jsonl.shards").exists()


@pytest.mark.slow
def test_killed_job_relaunched_has_every_id_once(job):
    d, data = job
    out = d / "killed.jsonl"
    cmd = _argv(d, data, "ig", out, "--steps", "32")[:-2] + ["--tokens-per-batch", "96"]
    procs = _launch([cmd])
    shard = d / "killed.jsonl.shards" / "proc-0001.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and not (shard.exists() and shard.read_text().count("\n") >= 2):
        time.sleep(0.1)
    assert shard.exists(), "process 1 never wrote a record"
    for p in procs:  # process 1 dies; without its partner the job is dead, as a pod's would be
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    assert not out.exists()
    _wait(_launch([cmd]))
    rows = _rows(out)
    assert [r["id"] for r in rows] == IDS
    assert main(cmd[:-4] + ["--out", str(d / "ref.jsonl"), "--tokens-per-batch", "96"]) == 0
    for a, b in zip(_rows(d / "ref.jsonl"), rows):
        np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-6)
