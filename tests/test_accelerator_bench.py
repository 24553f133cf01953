"""scripts/accelerator_bench.py end to end on CPU (--tiny): the entry's rows and columns, and peers that
cannot run reported as skipped, not left out. Captum (and with it tint) is made unimportable here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["workload", "tokens", "dtype", "items", "jaxattr s/item", "peer", "peer s/item", "speed-up",
           "jaxattr TFLOP/s", "jaxattr MFU", "peer MFU", "row wall s", "note"]


@pytest.mark.slow
def test_accelerator_bench_tiny(tmp_path):
    shim = tmp_path / "shim" / "captum"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('captum blocked by the test')\n")
    out = tmp_path / "accel.md"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "accelerator_bench.py"), "--tiny", "--budget-s",
                           "120", "--dtypes", "float32", "--out", str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout
    assert text.startswith("### ") and "Command: `python scripts/accelerator_bench.py --tiny" in text
    assert "jax 0." in text and "Load average before" in text
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == COLUMNS
    rows = {}
    for ln in table[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(COLUMNS), ln
        rows[cells[0]] = dict(zip(COLUMNS, cells))
    assert set(rows) == {"IG", "SIG", "IBA", "fine-tune step", "DACT early exit"}
    wall = float(text.split("Wall time ")[1].split(" s")[0])  # the rows' own times fit in the run's wall time
    assert 0 < sum(float(r["row wall s"]) for r in rows.values()) <= wall + len(rows), text
    for r in rows.values():
        if r["note"].startswith(("skipped (time budget)", "failed")):  # a loaded machine may run out of budget
            assert "time budget" in r["note"], r
            continue
        assert r["tokens"] == "16" and r["dtype"] == "fp32"
        assert float(r["jaxattr s/item"]) > 0, r
        assert float(r["row wall s"]) >= 0, r  # whole seconds: compiles and warm-ups included
        assert r["jaxattr MFU"] == "n/a"  # no peak known for a CPU
    # unavailable peers: named and reported as skipped, with the reason
    for name, peer, why in (("IG", "captum", "captum not importable"), ("SIG", "tint", "not importable"),
                            ("fine-tune step", "hf-train", "no CUDA")):
        r = rows[name]
        if "time budget" in r["note"]:
            continue
        assert r["peer"] == peer and r["peer s/item"].startswith("skipped (") and why in r["peer s/item"], r
        assert r["speed-up"] == "—"
    if importlib.util.find_spec("torch") and "time budget" not in rows["IBA"]["note"]:  # the reference runs on CPU
        assert float(rows["IBA"]["peer s/item"]) > 0 and rows["IBA"]["speed-up"].endswith("×")
