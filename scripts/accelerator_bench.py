"""One prepared accelerator run: SIG / IG / IBA, DACT early exit and a fine-tuning step at BERT-base size.

    python scripts/accelerator_bench.py [--peak-tflops N] [--budget-s 420] [--out FILE]
    python scripts/accelerator_bench.py --tiny --budget-s 120 --out /tmp/accel.md   # CPU smoke run

On one GPU or TPU, in one process, with random weights (the cost does not depend on them):

* IG, SIG and IBA at 128 and 512 tokens, jaxattr in float32 and bfloat16, next to Captum's
  IntegratedGradients, tint's SequentialIntegratedGradients (when importable) and the reference IBA
  algorithm in PyTorch (`scripts/bench_iba.py`), the peers in float32 on torch's CUDA device;
* batched DACT early exit at batch 256 (synthetic halting heads, `scripts/bench_dact.py`) against the
  same engine with nobody exiting;
* one fine-tuning step (`jaxattr.training.Engine`) against the plain HF PyTorch loop of
  `scripts/bench_training.py`, the latter only when torch has CUDA.

The workloads are those of `scripts/bench_attribution.py`, `bench_iba.py`, `bench_dact.py` and
`bench_training.py`, whose functions this script imports. SIG is timed over its first `--sig-units`
units (each unit is one IG-sized path; a whole 512-token SIG is 510 of them), as in bench_attribution.

Model FLOPs follow bench_attribution's `forward_flops`: a forward of t tokens is ~2 x (matmul
parameters) x t plus attention's 4 t^2 h; x3 for forward + backward; times the path points (IG/SIG
steps, IBA steps x samples). MFU = achieved model FLOP/s / the peak: `--peak-tflops`, else the table
`PEAKS` by device kind (dense TF32 peak for float32 rows on GPUs, as XLA's default matmul precision
uses TF32; the bf16 peak for bfloat16 rows and on TPUs; a given --peak-tflops applies to every row).
Peers run float32 (PyTorch's default: no TF32); their MFU is against the float32 rows' peak.
jaxattr's last block computes only [CLS] where only [CLS] is read, and IBA's loop runs only the blocks
after the bottleneck: both do less work than the model FLOPs count.

`--budget-s` (default 420, under 8 minutes on one H100 with start-up and compiles; on an H200 that covers the
128-token rows, DACT and fine-tuning, and `--lengths 512` is a second call of ~5 min): once it is spent,
the remaining rows are reported as skipped (time budget). Unavailable peers are reported as skipped,
with the reason. The result is a Markdown entry in benchmarks/RESULTS.md's format, printed to stdout
and written to `--out`. Timings on a shared CPU are functional checks only, never results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_* scripts

# dense peaks in TFLOP/s: (float32 rows, bfloat16 rows); matched in order against jax's device_kind
PEAKS: list[tuple[str, float, float]] = [
    ("H100 PCIe", 378.0, 756.0),  # TF32 / BF16 tensor cores, dense
    ("H100", 494.7, 989.4),  # SXM (device_kind "NVIDIA H100 80GB HBM3")
    ("H200", 494.7, 989.4),
    ("A100", 156.0, 312.0),
    ("TPU v4", 275.0, 275.0),  # TPUs: float32 matmuls run as bf16 passes; the bf16 peak for both
    ("TPU v5 lite", 197.0, 197.0),  # v5e
    ("TPU v5e", 197.0, 197.0),
    ("TPU v5p", 459.0, 459.0),
    ("TPU v6", 918.0, 918.0),  # v6e (Trillium)
]

DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def peak_for(kind: str, dtype: str, given: float | None) -> tuple[float | None, str]:
    """The peak TFLOP/s for `dtype` rows on a device of `kind`, and where it came from."""
    if given is not None:
        return given, "--peak-tflops"
    for key, fp32, bf16 in PEAKS:
        if key.lower() in kind.lower():
            return (fp32 if dtype == "float32" else bf16), f"table ({key})"
    return None, "unknown device kind"


@dataclasses.dataclass
class Row:
    workload: str
    tokens: int
    dtype: str
    unit: str = "example"
    items: int = 0
    jax_s: float | None = None  # seconds per item
    peer: str = ""
    peer_s: float | None = None
    peer_note: str = ""  # "skipped (...)" when the peer did not run
    flops: float = 0.0  # model FLOPs per item (jaxattr)
    peer_flops: float | None = None  # per item, when it differs
    note: str = ""
    skipped: str = ""  # the whole row
    wall_s: float = 0.0  # the row's wall time: compiles, warm-ups and both sides' rounds


def sizes(tiny: bool) -> dict[str, Any]:
    if tiny:
        return dict(lengths=[16], steps=4, ig=(4, 2), sig_units=4, iba=(4, 1), iba_steps=2, iba_samples=2,
                    iba_layer=1, dact_batch=8, dact_examples=16, dact_length=16, ft_batch=4, ft_length=16,
                    ft_steps=2, rounds=1, tpb=1024)
    return dict(lengths=[128, 512], steps=50, ig=(32, 4), sig_units=16, iba=(16, 2), iba_steps=10,
                iba_samples=10, iba_layer=4, dact_batch=256, dact_examples=1024, dact_length=128, ft_batch=32,
                ft_length=128, ft_steps=10, rounds=3, tpb=16384)


def synth_examples(n: int, length: int, cfg, ids: dict[str, int], seed: int) -> list[dict[str, Any]]:
    """`n` examples of exactly `length` tokens: [CLS], random word pieces (one word each), [SEP]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.integers(ids["low"], cfg.vocab_size, length).astype(np.int32)
        x[0], x[-1] = ids["cls"], ids["sep"]
        w = np.arange(-1, length - 1, dtype=np.int32)
        w[-1] = -1
        toks = [str(int(t)) for t in x]
        out.append({"id": i, "input_ids": x, "token_type_ids": np.zeros(length, np.int32), "word_ids": w,
                    "tokens": toks, "words": toks[1:-1]})
    return out


def padded(exs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {"input_ids": np.stack([e["input_ids"] for e in exs]),
            "attention_mask": np.ones((len(exs), len(exs[0]["input_ids"])), np.int32),
            "token_type_ids": np.stack([e["token_type_ids"] for e in exs]),
            "word_ids": np.stack([e["word_ids"] for e in exs])}


def median_s(fn: Callable[[], Any], rounds: int, sync: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(statistics.median(times))


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak TFLOP/s for MFU (default: the PEAKS table by device kind)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip the remaining rows once this is spent")
    ap.add_argument("--out", default=None, help="also write the Markdown entry here")
    ap.add_argument("--tiny", action="store_true", help="a tiny config, 16 tokens, few steps (CPU smoke run)")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 128 512)")
    ap.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    ap.add_argument("--steps", type=int, default=None, help="IG/SIG integration steps (default 50)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per contender, median (default 3)")
    ap.add_argument("--dact-batch", type=int, default=None, help="DACT batch (default 256)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget_s
    load0 = os.getloadavg()
    z = sizes(args.tiny)
    for k in ("lengths", "steps", "rounds", "dact_batch"):
        if getattr(args, k) is not None:
            z[k] = getattr(args, k)
    steps, rounds = z["steps"], z["rounds"]

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax and torch share the device
    import jax
    from bench_attribution import driver_runner, forward_flops, peer_inputs, tint_units
    from bench_dact import _synthetic_heads, make_variants
    from bench_iba import torch_reference
    from bench_training import torch_trainer

    from jaxattr.attribution.iba import iba
    from jaxattr.models import EncoderConfig, init_params, save_hf_dir, tiny_config
    from jaxattr.training.engine import Engine, default_loss_fn
    from jaxattr.training.state import make_optimizer

    dev = jax.devices()[0]
    kind, backend = dev.device_kind, jax.default_backend()
    if args.tiny:
        base_cfg = tiny_config(num_labels=2)
        ids = {"cls": 1, "sep": 2, "mask": 3, "pad": 0, "low": 5}
        model_name = (f"tiny ({base_cfg.num_layers} layers, hidden {base_cfg.hidden_size}, "
                      f"vocab {base_cfg.vocab_size})")
    else:
        base_cfg = EncoderConfig(num_labels=2)  # BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072
        ids = {"cls": 101, "sep": 102, "mask": 103, "pad": 0, "low": 1000}
        model_name = "BERT-base size (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522)"
    params = init_params(base_cfg, jax.random.key(0))

    # ---- the PyTorch side: what is importable, and on which device
    skipped_peers: dict[str, str] = {}
    torch = tm = None
    peer_device = None
    try:
        import torch
        import transformers
    except ImportError as e:
        for p in ("captum", "tint", "iba-ref", "hf-train"):
            skipped_peers[p] = f"skipped (torch/transformers not importable: {e.name})"
    if torch is not None:
        if torch.cuda.is_available():
            peer_device = "cuda"
        elif backend == "cpu":
            peer_device = "cpu"  # a functional check on CPU: both sides on the same CPU
        else:
            for p in ("captum", "tint", "iba-ref"):
                skipped_peers[p] = "skipped (torch has no CUDA: a CPU peer next to an accelerator is no comparison)"
        if not torch.cuda.is_available():
            skipped_peers["hf-train"] = "skipped (torch has no CUDA)"
        try:
            from captum.attr import IntegratedGradients
        except ImportError as e:
            skipped_peers.setdefault("captum", f"skipped (captum not importable: {e})")
        try:
            from tint.attr import SequentialIntegratedGradients
        except ImportError as e:
            skipped_peers.setdefault("tint", f"skipped (tint not importable: {e})")
    if peer_device is not None:
        hf_dir = tempfile.mkdtemp(prefix="accel-bench-")  # the peers load exactly jaxattr's weights, head included
        save_hf_dir(base_cfg, params, hf_dir)
        tm = transformers.AutoModelForSequenceClassification.from_pretrained(hf_dir).eval().to(peer_device)
    torch_sync = (lambda: torch.cuda.synchronize()) if peer_device == "cuda" else (lambda: None)

    def fwd(inputs_embeds, token_type_ids):
        return tm(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids).logits

    rows: list[Row] = []
    peer_cache: dict[tuple[str, int], tuple[str, float | None, str]] = {}

    def over_budget() -> bool:
        return time.perf_counter() > deadline

    def peer(key: tuple[str, int], name: str, fn: Callable[[], float | None]) -> tuple[str, float | None, str]:
        """Seconds per item of a peer (measured once per workload and length; reused by the bf16 row)."""
        if key not in peer_cache:
            if name in skipped_peers:
                peer_cache[key] = (name, None, skipped_peers[name])
            elif over_budget():
                return name, None, "skipped (time budget)"
            else:
                peer_cache[key] = (name, fn(), "")
        return peer_cache[key]

    # ---- the workloads, each filling one Row
    def ig(row: Row, cfg, exs):
        n_j, n_p = z["ig"]
        row.unit, row.items = "example", n_j
        row.flops = steps * 3 * forward_flops(cfg, row.tokens)
        run = driver_runner(params, cfg, "ig", exs[:n_j], {"steps": steps}, z["tpb"], mask_id=ids["mask"],
                            pad_id=ids["pad"])
        row.jax_s = median_s(run, rounds) / n_j

        def captum():
            ig_ = IntegratedGradients(fwd)
            inputs = [peer_inputs(tm, e, ids["mask"], peer_device) for e in exs[:n_p]]
            emb, base, tt, tgt = inputs[0]
            ig_.attribute(emb, baselines=base, target=tgt, additional_forward_args=(tt,), n_steps=2)  # warm-up

            def go():
                for emb, base, tt, tgt in inputs:
                    ig_.attribute(emb, baselines=base, target=tgt, additional_forward_args=(tt,), n_steps=steps,
                                  method="gausslegendre", internal_batch_size=steps)
            return median_s(go, rounds, torch_sync) / n_p
        row.peer, row.peer_s, row.peer_note = peer(("ig", row.tokens), "captum", captum)

    def sig(row: Row, cfg, exs):
        k = min(z["sig_units"], row.tokens - 2)
        row.unit, row.items = "unit", k
        row.flops = steps * 3 * forward_flops(cfg, row.tokens)
        run = driver_runner(params, cfg, "sig", exs[:1], {"steps": steps}, z["tpb"], mask_id=ids["mask"],
                            pad_id=ids["pad"], limit_units=k)
        row.jax_s = median_s(run, rounds) / k
        row.note = f"first {k} of {row.tokens - 2} units of one example"

        def tint():
            s = SequentialIntegratedGradients(fwd)
            emb, base, tt, tgt = peer_inputs(tm, exs[0], ids["mask"], peer_device)
            tint_units(s, emb, base, tt, tgt, 2, 1)  # warm-up
            return median_s(lambda: tint_units(s, emb, base, tt, tgt, steps, k), rounds, torch_sync) / k
        row.peer, row.peer_s, row.peer_note = peer(("sig", row.tokens), "tint", tint)

    def iba_row(row: Row, cfg, exs):
        n_j, n_p = z["iba"]
        row.unit, row.items = "example", n_j
        st, sa, layer = z["iba_steps"], z["iba_samples"], z["iba_layer"]
        row.flops = st * sa * 3 * forward_flops(cfg, row.tokens)
        row.note = f"layer {layer}, {st} steps x {sa} samples"
        batch = padded(exs[:n_j])
        kw = dict(layer=layer, beta=1e-5, steps=st, samples=sa, target=1, noise="reference")
        iba(params, cfg, batch, key=jax.random.key(0), **kw).scores.block_until_ready()  # compile
        row.jax_s = median_s(lambda: iba(params, cfg, batch, key=jax.random.key(1), **kw).scores.block_until_ready(),
                             rounds) / n_j

        def ref():
            x = [np.asarray(e["input_ids"]) for e in exs[:n_p]]
            torch_reference(tm, x[0][:8], 1, layer, 1e-5, 1, sa, device=peer_device)  # warm-up

            def go():
                for xi in x:
                    torch_reference(tm, xi, 1, layer, 1e-5, st, sa, device=peer_device)
            return median_s(go, rounds, torch_sync) / n_p
        row.peer, row.peer_s, row.peer_note = peer(("iba", row.tokens), "iba-ref", ref)

    def dact_row(row: Row, cfg, _exs):
        bs, T = z["dact_batch"], row.tokens
        exs = synth_examples(z["dact_examples"], T, cfg, ids, seed=7)
        data = padded(exs)
        data.pop("word_ids")
        p = _synthetic_heads(cfg, params, data, 0, -1.0)
        variants = make_variants(p, cfg, bs, 8)
        batches = [{k: v[s:s + bs] for k, v in data.items()} for s in range(0, len(exs), bs)]
        for name in ("full", "dact"):  # compile every batch size
            for b in batches:
                variants[name](b)
        med = {}
        for name in ("full", "dact"):
            med[name] = median_s(lambda name=name: [variants[name](b) for b in batches], rounds)
        exit_layers = np.concatenate([np.asarray(variants["dact"](b).exit_layer) for b in batches])
        saved = 1.0 - exit_layers.mean() / cfg.num_layers
        wall = 1.0 - med["dact"] / med["full"]
        row.unit, row.items = "example", len(exs)
        row.flops = forward_flops(cfg, T) * (1 - saved)  # the blocks actually run
        row.peer_flops = forward_flops(cfg, T)
        row.jax_s = med["dact"] / len(exs)
        row.peer, row.peer_s = "jaxattr, no exit", med["full"] / len(exs)
        eff = f"{wall / saved:.2f}" if saved > 0 else "n/a"
        row.note = (f"batch {bs}; layers saved {100 * saved:.0f}%, wall-clock saved {100 * wall:.0f}%, "
                    f"efficiency {eff}")

    def finetune(row: Row, cfg, exs):
        bs = z["ft_batch"]
        host = padded(exs[:bs])
        host.pop("word_ids")
        host["labels"] = (np.arange(bs) % 2).astype(np.int32)
        host["weight"] = np.ones(bs, np.float32)
        engine = Engine(make_optimizer(2e-5, 10_000, 100), default_loss_fn(cfg), modes={"plain": None})
        state = [engine.init_state(params, 0)]
        batch = engine.put_batch(host)

        def jax_steps():
            for _ in range(z["ft_steps"]):
                state[0], m = engine.train_step(state[0], batch, "plain")
            jax.block_until_ready(m)
        jax_steps()  # compile
        row.unit, row.items = "example", bs
        row.flops = 3 * forward_flops(cfg, row.tokens)
        row.jax_s = median_s(jax_steps, rounds) / (z["ft_steps"] * bs)
        row.note = f"batch {bs}, AdamW; jaxattr's loss runs the last block for [CLS] only"

        def hf():
            from transformers import BertForSequenceClassification

            torch.manual_seed(0)
            steps_fn = torch_trainer(BertForSequenceClassification.from_pretrained(hf_dir), host, peer_device)
            steps_fn(1)  # warm-up
            return median_s(lambda: steps_fn(z["ft_steps"]), rounds) / (z["ft_steps"] * bs)  # as jaxattr's
        row.peer, row.peer_s, row.peer_note = peer(("train", row.tokens), "hf-train", hf)

    # ---- the plan: short sequences first, then DACT (cheap) and fine-tuning, then the long sequences.
    # On an H200 (2026-12-04) the whole plan took ~11 min, compiles and the peers' warm-ups being most of it.
    plan: list[tuple[str, int, str, Callable]] = []
    for i, T in enumerate(z["lengths"]):
        for dt in args.dtypes:
            plan += [("IG", T, dt, ig), ("SIG", T, dt, sig), ("IBA", T, dt, iba_row)]
        if i == 0:
            plan.append(("DACT early exit", z["dact_length"], "float32", dact_row))
            plan += [("fine-tune step", z["ft_length"], dt, finetune) for dt in args.dtypes]
    examples = {T: synth_examples(max(z["ig"][0], z["iba"][0], z["ft_batch"]), T, base_cfg, ids, seed=T)
                for T in {*z["lengths"], z["ft_length"]}}
    setup_s = time.perf_counter() - start  # imports, parameters, the peers' model
    for name, T, dt, fn in plan:
        row = Row(name, T, dt)
        rows.append(row)
        if over_budget():
            row.skipped = "skipped (time budget)"
            continue
        t0 = time.perf_counter()
        try:
            fn(row, base_cfg.replace(dtype=dt), examples.get(T, []))
        except Exception as e:  # one failing row must not lose the others
            row.skipped = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        row.wall_s = time.perf_counter() - t0
        print(f"# {name} {T} {DTYPES[dt]}: {row.wall_s:.1f}s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    load1 = os.getloadavg()

    # ---- the entry
    def fmt(x: float | None, spec: str = ".3g") -> str:
        return "—" if x is None else format(x, spec)

    peak_fp32, src = peak_for(kind, "float32", args.peak_tflops)
    lines = ["| workload | tokens | dtype | items | jaxattr s/item | peer | peer s/item | speed-up | "
             "jaxattr TFLOP/s | jaxattr MFU | peer MFU | row wall s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.skipped:
            lines.append(f"| {r.workload} | {r.tokens} | {DTYPES[r.dtype]} | — | — | — | — | — | — | — | — | "
                         f"{r.wall_s:.0f} | {r.skipped} |")
            continue
        peak, _ = peak_for(kind, r.dtype, args.peak_tflops)
        tf = r.flops / r.jax_s / 1e12
        mfu = "n/a" if peak is None else f"{100 * tf / peak:.1f}%"
        if r.peer_s is not None:
            speed = f"{r.peer_s / r.jax_s:.2f}×"
            ptf = (r.peer_flops or r.flops) / r.peer_s / 1e12
            pk = peak if r.workload.startswith("DACT") else peak_fp32
            pmfu = "n/a" if pk is None else f"{100 * ptf / pk:.1f}%"
            peer_s = fmt(r.peer_s)
        else:
            speed, pmfu, peer_s = "—", "—", r.peer_note
        lines.append(f"| {r.workload} | {r.tokens} | {DTYPES[r.dtype]} | {r.items} {r.unit}s | {fmt(r.jax_s)} | "
                     f"{r.peer} | {peer_s} | {speed} | {tf:.3g} | {mfu} | {pmfu} | {r.wall_s:.0f} | {r.note} |")
    import jaxlib

    date = datetime.datetime.now(datetime.UTC)
    cmd = "python scripts/accelerator_bench.py" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:]))
    peak_line = ("no peak known for this device kind: MFU is n/a (pass --peak-tflops)" if peak_fp32 is None else
                 f"peak for MFU from {src}: " + ", ".join(
                     f"{DTYPES[d]} {peak_for(kind, d, args.peak_tflops)[0]:g} TFLOP/s" for d in DTYPES))
    skipped = [r for r in rows if r.skipped]
    out = [
        f"### {date:%Y-%m-%d}, {kind} ({backend}, {jax.device_count()} device(s)), jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, jaxattr {version('jaxattr')}, torch {version('torch')}"
        f"{' (' + peer_device + ')' if peer_device else ''}, transformers {version('transformers')}, "
        f"captum {version('captum')}, time-interpret {version('time-interpret')}",
        "",
        f"Command: `{cmd}`",
        "",
        f"{model_name}, random weights; IG/SIG {steps} Gauss-Legendre steps, [MASK] baselines; jaxattr through "
        f"`Driver` (tokens per batch {z['tpb']}), the peers in float32 on torch's {peer_device or 'no'} device, "
        f"one example per call; medians of {rounds} round(s), compiles and warm-ups excluded. Model FLOPs: "
        f"3 × forward FLOPs per path point (forward ≈ 2 × matmul params × tokens + attention). {peak_line}; "
        f"peers' MFU against the fp32 peak (PyTorch's float32 matmuls do not use TF32 by default).",
        "",
        f"Load average before {load0[0]:.1f}, after {load1[0]:.1f} (1-min), {os.cpu_count()} cores "
        f"({platform.machine()}). Wall time {wall:.0f} s of a {args.budget_s:g} s budget, {setup_s:.0f} s of it "
        "set-up (imports, parameters, the peers' model); \"row wall s\" is each row's whole time, compiles and "
        "warm-ups included, where the s/item columns time the rounds only"
        + (f"; {len(skipped)} row(s) not run (see the note column)." if skipped else "."),
        "",
        *lines,
        "",
    ]
    if backend == "cpu":
        out.append("CPU run: a functional check of the script, not a measurement.\n")
    text = "\n".join(out)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
