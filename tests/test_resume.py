"""Crash safety: SIGKILL a training run mid-way, run the same command again, and it resumes from the
last Orbax checkpoint to the same final parameters and metrics as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv

ROOT = Path(__file__).resolve().parents[1]
# The same run through the library, with an extra hook that sleeps after every step: slow enough for a kill
# to land mid-run (argv: the key=value overrides).
SLOW_RUN = textwrap.dedent("""
    import sys, time
    from jaxattr.training.config import load_config
    from jaxattr.training.trainer import run
    run(load_config(None, sys.argv[1:]), hooks=[lambda info: time.sleep(0.5)])
""")


def _overrides(tmp: Path, out: str) -> list[str]:
    data = str(write_csv(tmp / "train.csv", 48, 0))
    sets = dict(model="tiny", data=data, dev_data=data, test_data=data, max_length=16, epochs=3, batch_size=8,
                eval_batch_size=16, learning_rate=1e-3, method="addrop", save_every=2, log_every=1, progress=False,
                output_dir=str(tmp / out))
    return [f"{k}={v}" for k, v in sets.items()]


def _command(tmp: Path, out: str) -> list[str]:
    return [sys.executable, "train/finetune.py", *[a for kv in _overrides(tmp, out) for a in ("--set", kv)]]


def _latest_step(run: Path) -> int:
    d = run / "checkpoints" / "latest"
    steps = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.exists() else []
    return max(steps, default=-1)


def _params(run: Path) -> np.ndarray:
    import jax

    from jaxattr.models.checkpoint import load_checkpoint

    _, params = load_checkpoint(run / "model")
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ref = subprocess.Popen(_command(tmp_path, "ref"), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *_overrides(tmp_path, "run")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 540
    while _latest_step(tmp_path / "run") < 6 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = _latest_step(tmp_path / "run")
    before = json.loads((tmp_path / "run" / "checkpoints" / "latest" / str(killed_at) / "meta" / "metadata")
                        .read_text())["train_seconds"]
    assert before >= 0.5 * (killed_at - 1)  # the killed segment's steps slept 0.5 s each
    assert 6 <= killed_at < 18 and not (tmp_path / "run" / "results.json").exists()
    resumed = subprocess.run(_command(tmp_path, "run"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "run" / "results.json").read_text())
    assert a["steps"] == b["steps"] == 18 and a["best_step"] == b["best_step"]
    assert b["train_seconds"] > before  # the killed segment's time is counted, not only the resumed one's
    for split in ("dev", "test"):
        for k, v in a[split].items():
            assert b[split][k] == pytest.approx(v, abs=1e-6), (split, k)
    np.testing.assert_allclose(_params(tmp_path / "run"), _params(tmp_path / "ref"), atol=1e-6)
    # The log shows the resume, and the other run's checkpoints refuse a different setup.
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"event": "resume"' in log
    other = _command(tmp_path, "run") + ["--set", "learning_rate=0.5"]
    bad = subprocess.run(other, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "another model or setup" in bad.stderr.strip().splitlines()[-1]
