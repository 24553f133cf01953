"""Two processes on loopback (jax.distributed.initialize, gloo CPU collectives), each feeding its own
half of every global batch, give the same parameters after 3 steps as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import device_flags

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {tests!r})
    from helpers import synthetic_batch
    from jaxattr.models import init_params, tiny_config
    from jaxattr.training import addrop
    from jaxattr.training.engine import Engine, default_loss_fn
    from jaxattr.training.state import make_optimizer
    from jaxattr.sharding import initialize_distributed
    initialize_distributed()
    cfg = tiny_config("bert")
    params = init_params(cfg, jax.random.PRNGKey(0))
    modes = {{"plain": None, "addrop": addrop.make_transform(cfg, addrop.ADDropConfig())}}
    eng = Engine(make_optimizer(1e-3, 10, 1), default_loss_fn(cfg), modes=modes)
    st = eng.init_state(params, 0)
    rows = eng.local_rows(8)
    for i, mode in enumerate(("plain", "addrop", "plain")):
        host = synthetic_batch(8, 12, seed=i)
        local = {{k: v[rows] for k, v in host.items()}}  # this process reads only its own rows
        st, m = eng.train_step(st, eng.put_batch(local, 8), mode)
    leaves = [np.asarray(x).ravel() for x in jax.tree.leaves(jax.device_get(st.params))]
    if jax.process_index() == 0:
        np.save({out!r}, np.concatenate(leaves))
    print(json.dumps({{"processes": jax.process_count(), "devices": jax.device_count(), "loss": float(m["loss"])}}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    base = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=device_flags(1))
    one = WORKER.format(tests=str(ROOT / "tests"), out=str(tmp_path / "one.npy"))
    two = WORKER.format(tests=str(ROOT / "tests"), out=str(tmp_path / "two.npy"))
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", two], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                  JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    single = subprocess.run([sys.executable, "-c", one], cwd=ROOT, capture_output=True, text=True, env=base,
                            timeout=600)
    outs = [p.communicate(timeout=600) for p in procs]
    assert single.returncode == 0, single.stderr[-3000:]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        info = json.loads(out.strip().splitlines()[-1])
        assert info["processes"] == 2 and info["devices"] == 2
    assert json.loads(single.stdout.strip().splitlines()[-1])["processes"] == 1
    a, b = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert np.max(np.abs(a - b)) <= 1e-5
