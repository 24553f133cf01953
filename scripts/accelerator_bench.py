"""One GPU protocol: IG / SIG / IBA against the peers at their best, kernel vs driver, cuDNN vs XLA attention, DACT.

    python scripts/accelerator_bench.py [--budget-s 330] [--out FILE]    # one H100: under 7 minutes
    python scripts/accelerator_bench.py --tiny                          # CPU smoke run, well under a minute

On one GPU, in one process, BERT-base size with random weights (the cost does not depend on them), 128 and
512 tokens (DESIGN.md §5 "A fair fight", "Honest FLOPs"; issue 31 items 5-7):

* attention: `jax.nn.dot_product_attention(..., implementation="cudnn")` vs `"xla"` on random bf16 q/k/v,
  forward and forward+backward (no GPU: the cuDNN half prints "skipped: no GPU");
* IG, SIG and IBA at three precisions, each against the PyTorch peers at the same precision:
  `default` (jaxattr float32 at JAX's default matmul precision, TF32 on a GPU) vs peers with TF32 allowed;
  `highest` (`jax.default_matmul_precision("highest")`, true fp32) vs peers with TF32 off; `bf16` (jaxattr
  bfloat16) vs peers under `torch.autocast(dtype=torch.bfloat16)`. The peer grid (`scripts/peers.py`):
  Captum IG / tint SIG with 1 and several examples per call x internal_batch_size {steps, 2, 4 x steps}
  (bounded by --peer-max-tokens), HF `sdpa` attention, frozen parameters, torch.compile of the best eager
  configuration while the compile budget lasts; the reference IBA with parameters requiring grad (as
  written) or frozen. Every peer call runs the forward for its target inside the timed region, as the
  driver does. A row names the strongest peer configuration (beat / lost to) and keeps the "as users run
  them" peer (eager fp32, one example per call, parameters requiring grad) as an extra column;
* IG and SIG: jaxattr's driver end to end vs its path-row kernel alone (`gradients.row_contributions`
  AOT-compiled, device-resident rows called back to back): the difference is the driver's host overhead;
* DACT early exit at batch 256 (synthetic halting heads, `scripts/bench_dact.py`) vs the same engine with
  nobody exiting;
* FLOPs per item, labelled: "XLA" (`cost_analysis()` of the compiled path-row kernel x rows per item) and
  "analytic" (`peers.input_grad_flops`: ~2 x forward, no weight gradients, the [CLS]-only last block).
  MFU against the peak of the precision that ran (`peers.PEAKS`; TF32 or bf16 tensor cores, or the true
  fp32 CUDA-core peak for `highest` and for fp32 peers).

`--budget-s` (default 330 s from start-up: a row that starts just before it ends by ~7 minutes): rows and
peer configurations start only while it lasts, most important first (bf16 at 128 tokens, DACT, bf16 at 512,
then default precision, then `highest`); the others are reported "skipped (time budget)". torch.compile
attempts stop once `--compile-budget-s` (default 90) of compile warm-ups is spent.
The Markdown entry (load average before and after, device, date, versions) is printed and written to
`--out`. Timings on a shared CPU (`--tiny`) are functional checks only, never results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peers.py and the sibling bench_* scripts

import peers  # noqa: E402
from peers import PeerConfig, PeerResult, median_s  # noqa: E402

MODES: dict[str, tuple[str, str]] = {  # jaxattr's (compute dtype, matmul precision) per row mode
    "bf16": ("bfloat16", "default"), "default": ("float32", "default"), "highest": ("float32", "highest")}


def sizes(tiny: bool) -> dict[str, Any]:
    """Workload sizes: BERT-base on a GPU, or a tiny model for a CPU smoke run."""
    if tiny:
        return dict(lengths=[16], steps=2, ig_jax=4, ig_peer=lambda t: 2, sig_jax=1, sig_peer=2,
                    sig_units=lambda t: 2, iba_jax=2, iba_peer=1, iba_steps=2, iba_samples=2, iba_layer=1,
                    dact_batch=8, dact_examples=16, dact_length=16, rounds=1, tpb=512, attn_tokens=64,
                    peer_tokens=1024)
    return dict(lengths=[128, 512], steps=50, ig_jax=32, ig_peer=lambda t: max(2, 2048 // t), sig_jax=2,
                sig_peer=2, sig_units=lambda t: max(4, 2048 // t), iba_jax=16, iba_peer=2, iba_steps=10,
                iba_samples=10, iba_layer=4, dact_batch=256, dact_examples=1024, dact_length=128, rounds=3,
                tpb=16384, attn_tokens=65536, peer_tokens=1 << 16)


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
    """A batch of equal-length examples (no word ids)."""
    return {"input_ids": np.stack([e["input_ids"] for e in exs]),
            "attention_mask": np.ones((len(exs), len(exs[0]["input_ids"])), np.int32),
            "token_type_ids": np.stack([e["token_type_ids"] for e in exs])}


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@dataclasses.dataclass
class Row:
    """One line of the entry: jaxattr's side, its FLOPs, and the peers'."""

    workload: str
    tokens: int
    mode: str
    precision: str = ""  # what ran: fp32 / tf32 / bf16
    unit: str = "example"
    items: int = 0
    jax_s: float | None = None  # seconds per item, the driver end to end
    kernel_s: float | None = None  # the path-row kernel alone
    xla_flops: float | None = None  # per item
    analytic_flops: float = 0.0  # per item
    peer: str = ""
    peer_detail: str | None = None  # replaces the strongest configuration's label (DACT: no grid)
    best: PeerResult | None = None
    users: PeerResult | None = None
    peer_note: str = ""
    note: str = ""
    skipped: str = ""
    wall_s: float = 0.0


# ----------------------------------------------------------------------------------------------
# Set-up


@dataclasses.dataclass
class Bench:
    """What every workload needs: sizes, model, devices, the peers' side and the clock."""

    args: argparse.Namespace
    z: dict[str, Any]
    backend: str
    kind: str
    cfg: Any
    params: Any
    ids: dict[str, int]
    deadline: float
    peer_device: str | None = None
    tm: Any = None
    skipped_peers: dict[str, str] = dataclasses.field(default_factory=dict)
    budget: peers.Budget = dataclasses.field(default_factory=lambda: peers.Budget(0))
    compile_peers: bool = False
    peer_cache: dict[tuple, tuple[list[PeerResult], PeerResult | None]] = dataclasses.field(default_factory=dict)
    kernels: dict[tuple[int, str], tuple[float, float | None]] = dataclasses.field(default_factory=dict)
    grids: list[str] = dataclasses.field(default_factory=list)
    peaks: dict[str, float] = dataclasses.field(default_factory=dict)  # --peak-tflops overrides

    @property
    def steps(self) -> int:
        return self.z["steps"]

    def over_budget(self) -> bool:
        return time.perf_counter() > self.deadline

    def sync(self) -> None:
        if self.peer_device == "cuda":
            import torch

            torch.cuda.synchronize()

    def mode_cfg(self, mode: str) -> Any:
        return self.cfg.replace(dtype=MODES[mode][0])

    def precision(self, mode: str) -> str:
        return peers.jax_precision(self.backend, *MODES[mode])


def model_setup(tiny: bool) -> tuple[Any, dict[str, int], str]:
    """(config, special token ids, description) of the benchmark's model."""
    from jaxattr.models import EncoderConfig, tiny_config

    if tiny:
        cfg = tiny_config(num_labels=2)
        return cfg, {"cls": 1, "sep": 2, "mask": 3, "pad": 0, "low": 5}, (
            f"tiny ({cfg.num_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size})")
    return EncoderConfig(num_labels=2), {"cls": 101, "sep": 102, "mask": 103, "pad": 0, "low": 1000}, (
        "BERT-base size (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522)")


def torch_setup(b: Bench) -> None:
    """The peers' side: importability, device, and the HF model loaded with exactly jaxattr's weights."""
    try:
        import torch
    except ImportError as e:
        b.skipped_peers.update(dict.fromkeys(("captum", "tint", "iba-ref"), f"skipped (torch not importable: {e})"))
        return
    if torch.cuda.is_available():
        b.peer_device = "cuda"
    elif b.backend == "cpu":
        b.peer_device = "cpu"  # a functional check: both sides on the same CPU
    else:
        b.skipped_peers.update(dict.fromkeys(("captum", "tint", "iba-ref"), "skipped (torch has no CUDA)"))
        return
    for name, mod in (("captum", "captum.attr"), ("tint", "tint.attr")):
        try:
            __import__(mod)
        except ImportError as e:
            b.skipped_peers[name] = f"skipped ({name} not importable: {e})"
    from jaxattr.models import save_hf_dir

    hf_dir = tempfile.mkdtemp(prefix="accel-bench-")
    save_hf_dir(b.cfg, b.params, hf_dir)
    b.tm = peers.load_peer_model(hf_dir, b.peer_device)
    choice = b.args.torch_compile
    b.compile_peers = choice == "on" or (choice == "auto" and b.peer_device == "cuda")
    b.budget = peers.Budget(b.args.compile_budget_s if b.compile_peers else 0)


# ----------------------------------------------------------------------------------------------
# Peers


def peer_results(b: Bench, key: tuple, name: str, configs: list[PeerConfig], users: PeerConfig,
                 make: Callable[[PeerConfig], Callable[[], None]], items: int,
                 flops: Callable[[PeerConfig], float], compile_ok: bool = True
                 ) -> tuple[PeerResult | None, PeerResult | None, str]:
    """(strongest, as-users, note) of a peer grid, measured once per key (the as-users peer once per
    workload and length, whatever the precision); torch.compile of the best eager configuration when
    `compile_ok` and compiles are on."""
    if name in b.skipped_peers:
        return None, None, b.skipped_peers[name]
    if key not in b.peer_cache:
        kw = dict(items=items, rounds=b.z["rounds"], sync=b.sync, budget=b.budget)
        res = peers.run_grid(configs, make, b.tm, deadline=b.deadline, compile_best=b.compile_peers and compile_ok,
                             **kw)
        ukey = ("users",) + key[:2]
        if ukey not in b.peer_cache:
            u = (peers.time_config(users, make, b.tm, **kw) if not b.over_budget()
                 else PeerResult(users, note="skipped (time budget)"))
            b.peer_cache[ukey] = ([u], u)
        for r in res + b.peer_cache[ukey][0]:
            r.flops = flops(r.config)
        b.peer_cache[key] = (res, peers.strongest(res))
        b.grids.append(f"- {name} {key[1]} tokens {key[2]}: {peers.grid_summary(res)}")
    res, best = b.peer_cache[key]
    users_res = b.peer_cache[("users",) + key[:2]][1]
    note = "" if best else "; ".join(sorted({r.note for r in res})) or "no configuration ran"
    return best, users_res, note


def torch_call(b: Bench, fn: Callable[..., Callable[[], None]], exs: list[dict[str, Any]], *extra: Any
               ) -> Callable[[PeerConfig], Callable[[], None]]:
    """A `make(config)` for Captum IG or tint SIG over `exs`."""
    def make(c: PeerConfig) -> Callable[[], None]:
        groups = peers.peer_groups(exs, c.per_call, b.ids["mask"], b.ids["pad"], b.peer_device)
        return fn(b.tm, groups, c, b.steps, peers.peer_forward(b.tm, c.precision, b.peer_device, c.compiled), *extra)
    return make


# ----------------------------------------------------------------------------------------------
# jaxattr's side


def kernel_per_row(b: Bench, mode: str, ex: dict[str, Any], total_rows: int) -> tuple[float, float | None]:
    """(seconds, XLA FLOPs) per path row of the row kernel alone: device-resident rows of the driver's chunk
    shape, called back to back (one compile serves the timing and the cost analysis)."""
    import jax
    from bench_attribution import compile_row_kernel, path_rows

    from jaxattr.models.precision import matmul_precision

    t = len(ex["input_ids"])
    if (t, mode) not in b.kernels:
        r = max(1, b.z["tpb"] // t)
        rows = path_rows(ex, r, b.steps, t, b.ids["mask"], b.ids["pad"])
        params = jax.device_put(b.params)
        with matmul_precision(MODES[mode][1]):
            compiled = compile_row_kernel(params, b.mode_cfg(mode), rows)
            calls = max(2, -(-total_rows // r))

            def go() -> None:
                out = [compiled(params, rows) for _ in range(calls)]
                jax.block_until_ready(out)
            go()
            s = median_s(go, b.z["rounds"]) / (calls * r)
        flops = peers.compiled_flops(compiled)
        b.kernels[(t, mode)] = (s, None if flops is None else flops / r)
    return b.kernels[(t, mode)]


def jax_driver(b: Bench, row: Row, method: str, exs: list[dict[str, Any]], units: int | None = None) -> None:
    """The driver end to end (per item) and the kernel alone, for a path method."""
    from bench_attribution import driver_runner

    from jaxattr.models.precision import matmul_precision

    with matmul_precision(MODES[row.mode][1]):
        run = driver_runner(b.params, b.mode_cfg(row.mode), method, exs, {"steps": b.steps}, b.z["tpb"],
                            mask_id=b.ids["mask"], pad_id=b.ids["pad"], limit_units=units)
        row.jax_s = median_s(run, b.z["rounds"]) / row.items
    s, f = kernel_per_row(b, row.mode, exs[0], row.items * b.steps)
    row.kernel_s, row.xla_flops = s * b.steps, None if f is None else f * b.steps


# ----------------------------------------------------------------------------------------------
# The workloads, each filling one Row


def ig(b: Bench, row: Row, exs: list[dict[str, Any]]) -> None:
    """IG: jaxattr's driver vs Captum's grid."""
    from peers import captum_ig

    row.unit, row.items = "example", b.z["ig_jax"]
    cfg = b.mode_cfg(row.mode)
    row.analytic_flops = b.steps * peers.input_grad_flops(cfg, row.tokens, cls_only=True)
    jax_driver(b, row, "ig", exs[:row.items])
    n = b.z["ig_peer"](row.tokens)
    configs = peers.grid(row.precision, b.steps, n, row.tokens, b.z["peer_tokens"])
    row.peer = "captum"
    row.best, row.users, row.peer_note = peer_results(
        b, ("ig", row.tokens, row.precision), "captum", configs, peers.as_users(b.steps),
        torch_call(b, captum_ig, exs[:n]), n, lambda c: b.steps * peers.input_grad_flops(cfg, row.tokens))


def sig(b: Bench, row: Row, exs: list[dict[str, Any]]) -> None:
    """SIG over the first units of each example: jaxattr's driver vs tint's per-position loop."""
    from peers import tint_sig

    k = min(b.z["sig_units"](row.tokens), row.tokens - 2)
    row.unit, row.items = "unit", b.z["sig_jax"] * k
    cfg = b.mode_cfg(row.mode)
    row.analytic_flops = b.steps * peers.input_grad_flops(cfg, row.tokens, cls_only=True)
    row.note = f"first {k} of {row.tokens - 2} units of each example"
    jax_driver(b, row, "sig", exs[:b.z["sig_jax"]], units=k)
    n = b.z["sig_peer"]
    configs = peers.grid(row.precision, b.steps, n, row.tokens, b.z["peer_tokens"])
    row.peer = "tint"
    row.best, row.users, row.peer_note = peer_results(
        b, ("sig", row.tokens, row.precision), "tint", configs, peers.as_users(None),
        torch_call(b, tint_sig, exs[:n], k), n * k, lambda c: b.steps * peers.input_grad_flops(cfg, row.tokens))


def iba_flops(cfg: Any, t: int, layer: int, steps: int, samples: int, how: str) -> float:
    """Analytic FLOPs of one IBA example. `jaxattr`: blocks 1..layer once, then per step and sample the
    input gradient of blocks layer+1..L ([CLS]-only last block). `reference`: the hidden-states forward,
    then per step and sample a full forward and a backward with weight gradients (~3 x forward); `frozen`:
    the backward of blocks layer+1..L only, without weight gradients."""
    if how == "jaxattr":
        return (peers.forward_flops(cfg, t, stop=layer, head=False)
                + steps * samples * peers.input_grad_flops(cfg, t, start=layer, cls_only=True))
    fwd = peers.forward_flops(cfg, t)
    if how == "reference":
        return fwd + steps * samples * 3 * fwd
    back = peers.input_grad_flops(cfg, t, start=layer) - peers.forward_flops(cfg, t, start=layer)
    return fwd + steps * samples * (fwd + back)


def iba_row(b: Bench, row: Row, exs: list[dict[str, Any]]) -> None:
    """IBA: jaxattr's one program vs the reference algorithm in PyTorch."""
    import jax

    from jaxattr.attribution.iba import iba
    from jaxattr.models.precision import matmul_precision

    st, sa, layer, n = b.z["iba_steps"], b.z["iba_samples"], b.z["iba_layer"], b.z["iba_jax"]
    row.unit, row.items = "example", n
    cfg = b.mode_cfg(row.mode)
    row.analytic_flops = iba_flops(cfg, row.tokens, layer, st, sa, "jaxattr")
    row.note = (f"layer {layer}, {st} steps x {sa} samples; XLA counts the step loop once: no XLA FLOPs; "
                "the reference runs eager (a forward hook and an Adam loop)")
    batch = padded(exs[:n])
    kw = dict(layer=layer, beta=1e-5, steps=st, samples=sa, target=1, noise="reference")
    with matmul_precision(MODES[row.mode][1]):
        run = lambda: iba(b.params, cfg, batch, key=jax.random.key(1), **kw).scores.block_until_ready()
        run()
        row.jax_s = median_s(run, b.z["rounds"]) / n
    m = b.z["iba_peer"]
    ids = [np.asarray(e["input_ids"]) for e in exs[:m]]
    make = lambda c: peers.iba_reference(b.tm, ids, c, b.peer_device, layer=layer, steps=st, samples=sa)
    configs = [PeerConfig(row.precision, 1, None, frozen=False), PeerConfig(row.precision, 1, None)]
    row.peer = "iba-ref"
    row.best, row.users, row.peer_note = peer_results(
        b, ("iba", row.tokens, row.precision), "iba-ref", configs, peers.as_users(None), make, m,
        lambda c: iba_flops(cfg, row.tokens, layer, st, sa, "frozen" if c.frozen else "reference"),
        compile_ok=False)  # the reference's forward hook and optimizer loop: no torch.compile


def dact_row(b: Bench, row: Row, _exs: list[dict[str, Any]]) -> None:
    """DACT early exit vs the same engine with nobody exiting (`bench_dact`)."""
    from bench_dact import _synthetic_heads, make_variants

    bs, t = b.z["dact_batch"], row.tokens
    cfg = b.mode_cfg(row.mode)
    data = padded(synth_examples(b.z["dact_examples"], t, cfg, b.ids, seed=7))
    p = _synthetic_heads(cfg, b.params, data, 0, -1.0)
    variants = make_variants(p, cfg, bs, 8)
    batches = [{k: v[s:s + bs] for k, v in data.items()} for s in range(0, len(data["input_ids"]), bs)]
    med = {}
    for name in ("full", "dact"):
        for x in batches:  # compile every batch size
            variants[name](x)
        med[name] = median_s(lambda name=name: [variants[name](x) for x in batches], b.z["rounds"])
    exit_layers = np.concatenate([np.asarray(variants["dact"](x).exit_layer) for x in batches])
    saved, wall = 1.0 - exit_layers.mean() / cfg.num_layers, 1.0 - med["dact"] / med["full"]
    n = len(data["input_ids"])
    row.unit, row.items = "example", n
    row.analytic_flops = peers.forward_flops(cfg, t) * (1 - saved)  # the blocks actually run
    row.jax_s = med["dact"] / n
    row.peer, row.peer_detail = "jaxattr", "the same engine, nobody exiting"
    row.best = PeerResult(PeerConfig(row.precision), med["full"] / n, flops=peers.forward_flops(cfg, t))
    eff = f"{wall / saved:.2f}" if saved > 0 else "n/a"
    row.note = (f"batch {bs}; layers saved {100 * saved:.0f}%, wall-clock saved {100 * wall:.0f}%, "
                f"efficiency {eff}")


# ----------------------------------------------------------------------------------------------
# Attention: cuDNN vs XLA


def attention_lines(b: Bench) -> list[str]:
    """cuDNN vs XLA `dot_product_attention` on random bf16 q/k/v [B, T, 12 heads, 64], forward and
    forward+backward, at each length (B = attn_tokens // T)."""
    import jax
    import jax.numpy as jnp

    out = []
    for t in b.z["lengths"]:
        bsz, heads, dim = max(1, b.z["attn_tokens"] // t), 12, 64
        keys = jax.random.split(jax.random.key(t), 3)
        q, k, v = (jax.random.normal(kk, (bsz, t, heads, dim), jnp.bfloat16) for kk in keys)
        fwd_flops = 4.0 * bsz * heads * t * t * dim
        for impl in ("cudnn", "xla"):
            if impl == "cudnn" and b.backend != "gpu":
                print(f"# attention {t} tokens cudnn: skipped: no GPU", file=sys.stderr, flush=True)
                out.append(f"| {t} | {bsz}x{heads} | cudnn | skipped: no GPU | | | |")
                continue
            out.append(attention_line(b, impl, t, bsz, heads, (q, k, v), fwd_flops))
    return out


def attention_line(b: Bench, impl: str, t: int, bsz: int, heads: int, qkv: tuple, fwd_flops: float) -> str:
    """One implementation at one length: ms per call forward and forward+backward, TFLOP/s, bf16 MFU."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl))
    g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))
    try:
        times, reps = [], 10
        for fn in (f, g):
            jax.block_until_ready(fn(*qkv))  # compile
            times.append(median_s(lambda fn=fn: jax.block_until_ready([fn(*qkv) for _ in range(reps)]),
                                  b.z["rounds"]) / reps)
    except Exception as e:  # e.g. cuDNN refusing the shape
        return f"| {t} | {bsz}x{heads} | {impl} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} | | | |"
    peak, _ = peers.peak_tflops(b.kind, "bf16", b.peaks)
    tf = 3 * fwd_flops / times[1] / 1e12  # forward + backward: 3 x the forward's matmuls
    pct = "n/a" if peak is None else f"{100 * tf / peak:.1f}%"
    return (f"| {t} | {bsz}x{heads} | {impl} | {1e3 * times[0]:.3g} | {1e3 * times[1]:.3g} | {tf:.3g} | "
            f"{pct} |")


# ----------------------------------------------------------------------------------------------
# The entry


def fmt(x: float | None, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


COLUMNS = ["workload", "tokens", "precision", "items", "jaxattr s/item", "kernel-only s/item", "host overhead",
           "strongest peer (config)", "peer s/item", "speed-up", "as users run them s/item (fp32 eager, 1 ex/call)",
           "speed-up vs as users", "GFLOP/item XLA", "GFLOP/item analytic", "jaxattr TFLOP/s (XLA)",
           "jaxattr MFU (XLA / analytic)", "peer MFU (analytic)", "row wall s", "note"]


def row_line(b: Bench, r: Row) -> str:
    """One Markdown row in `COLUMNS` order."""
    prec = r.precision if r.precision == r.mode else f"{r.precision} ({r.mode})"
    head = f"| {r.workload} | {r.tokens} | {prec} |"
    if r.skipped:
        return head + " — |" * (len(COLUMNS) - 5) + f" {r.wall_s:.0f} | {r.skipped} |"
    peak, _ = peers.peak_tflops(b.kind, r.precision, b.peaks)
    host = None if r.kernel_s is None or not r.jax_s else (r.jax_s - r.kernel_s) / r.jax_s
    best, users = r.best, r.users
    if best is not None:
        verdict = "beat" if best.seconds > r.jax_s else "lost to"
        peer = f"{verdict} {r.peer} ({best.config.label() if r.peer_detail is None else r.peer_detail})"
        speed = f"{best.seconds / r.jax_s:.2f}×"
        ppeak, _ = peers.peak_tflops(b.kind, best.config.precision, b.peaks)
        pmfu = pct(peers.mfu(best.flops, best.seconds, ppeak))
    else:
        peer, speed, pmfu = f"{r.peer}: {r.peer_note}", "—", "—"
    us = users.seconds if users is not None else None
    users_cell = fmt(us) if us is not None else (users.note if users is not None else "—")
    flops = r.xla_flops or r.analytic_flops
    mfus = f"{pct(peers.mfu(r.xla_flops, r.jax_s, peak))} / {pct(peers.mfu(r.analytic_flops, r.jax_s, peak))}"
    host_cell = pct(host) if host is not None else "—"
    return (f"{head} {r.items} {r.unit}s | {fmt(r.jax_s)} | {fmt(r.kernel_s)} | {host_cell} | {peer} | "
            f"{fmt(best.seconds if best else None)} | {speed} | {users_cell} | "
            f"{'—' if us is None else f'{us / r.jax_s:.2f}×'} | {fmt(r.xla_flops and r.xla_flops / 1e9)} | "
            f"{r.analytic_flops / 1e9:.3g} | {flops / r.jax_s / 1e12:.3g} | {mfus} | {pmfu} | {r.wall_s:.0f} | "
            f"{r.note} |")


def header_lines(b: Bench, argv: list[str], model_name: str, load0: tuple, load1: tuple, wall: float) -> list[str]:
    """Device, date, versions, command, protocol and load averages."""
    import jax
    import jaxlib

    torch_v = version("torch") + (f" ({b.peer_device})" if b.peer_device else "")
    if b.peer_device == "cuda":
        import torch

        torch_v += f" on {torch.cuda.get_device_name()}"
    date = datetime.datetime.now(datetime.UTC)
    peaks = ", ".join(f"{p} {fmt(peers.peak_tflops(b.kind, p, b.peaks)[0], 'g')}" for p in peers.PRECISIONS)
    return [
        f"### {date:%Y-%m-%d %H:%M} UTC, {b.kind} ({b.backend}, {jax.device_count()} device(s)), "
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, jaxattr {version('jaxattr')}, torch {torch_v}, "
        f"transformers {version('transformers')}, captum {version('captum')}, "
        f"time-interpret {version('time-interpret')}", "",
        "Command: `python scripts/accelerator_bench.py" + "".join(" " + shlex.quote(a) for a in argv) + "`", "",
        f"{model_name}, random weights; IG/SIG {b.steps} Gauss-Legendre steps, [MASK] baselines; jaxattr through "
        f"`Driver` (tokens per batch {b.z['tpb']}); medians of {b.z['rounds']} round(s), compiles and warm-ups "
        f"excluded. Peers: the grid of `scripts/peers.py` at the row's precision (torch.compile "
        f"{'on' if b.compile_peers else 'off'}, compile budget {b.args.compile_budget_s:g} s), HF sdpa attention. "
        f"FLOPs per item: XLA = cost_analysis() of the compiled path-row kernel x rows per item; analytic = "
        f"input gradient (~2 x forward, no weight gradients, [CLS]-only last block; the peers' full model). "
        f"{peers.flops_note(b.backend)}. Peak TFLOP/s for MFU: {peaks} "
        f"({peers.peak_tflops(b.kind, 'bf16', b.peaks)[1]}).",
        "",
        f"Load average before {load0[0]:.2f}, after {load1[0]:.2f} (1-min), {os.cpu_count()} cores "
        f"({platform.machine()}). Wall time {wall:.0f} s of a {b.args.budget_s:g} s budget.",
        "",
    ]


def render(b: Bench, rows: list[Row], attn: list[str], head: list[str]) -> str:
    """The whole Markdown entry."""
    out = head + ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += [row_line(b, r) for r in rows]
    out += ["", "Attention, random bf16 q/k/v, `jax.nn.dot_product_attention(implementation=...)`:", "",
            "| tokens | batch x heads | implementation | forward ms | forward+backward ms | TFLOP/s (f+b) | "
            "MFU (bf16 peak) |", "|---|---|---|---|---|---|---|", *attn, "", "Peer grids (ms per item):", *b.grids, ""]
    if b.backend == "cpu":
        out.append("CPU run: a functional check of the script, not a measurement.\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------


def plan(b: Bench) -> list[tuple[str, int, str, Callable[[Bench, Row, list], None]]]:
    """Rows, most important first: bf16 then default precision at every length (DACT after the first group),
    then `highest` (true fp32) at every length; the budget cuts from the end."""
    modes = [m for m in b.args.modes if m != "highest"] + [m for m in b.args.modes if m == "highest"]
    out: list[tuple[str, int, str, Callable]] = []
    for mode in modes:
        for t in b.z["lengths"]:
            out += [("IG", t, mode, ig), ("SIG", t, mode, sig), ("IBA", t, mode, iba_row)]
            if len(out) == 3:
                out.append(("DACT early exit", b.z["dact_length"], "default", dact_row))
    return out


def run_rows(b: Bench) -> list[Row]:
    """Every planned row; one that fails is reported, never fatal."""
    examples = {t: synth_examples(max(b.z["ig_jax"], b.z["iba_jax"], 8), t, b.cfg, b.ids, seed=t)
                for t in b.z["lengths"]}
    rows = []
    for name, t, mode, fn in plan(b):
        row = Row(name, t, mode, precision=b.precision(mode))
        rows.append(row)
        if b.over_budget():
            row.skipped = "skipped (time budget)"
            continue
        t0 = time.perf_counter()
        try:
            fn(b, row, examples.get(t, []))
        except Exception as e:
            row.skipped = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        row.wall_s = time.perf_counter() - t0
        print(f"# {name} {t} {mode}: {row.wall_s:.1f}s", file=sys.stderr, flush=True)
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny random model, 16 tokens, 2 steps (CPU smoke run)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="start no row or peer configuration after this")
    ap.add_argument("--out", default=None, help="also write the Markdown entry here")
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 128 512)")
    ap.add_argument("--modes", nargs="+", choices=tuple(MODES), default=None,
                    help="jaxattr precisions (default: bf16 default highest on accelerators; default on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="IG/SIG integration steps (default 50)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per contender, median (default 3)")
    ap.add_argument("--torch-compile", choices=("auto", "on", "off"), default="auto",
                    help="torch.compile the best eager peer configuration (auto: on CUDA only)")
    ap.add_argument("--compile-budget-s", type=float, default=90.0, help="seconds for torch.compile warm-ups")
    ap.add_argument("--peak-tflops", nargs="+", default=None,
                    help="override the PEAKS table: PREC=TFLOPS pairs (fp32, tf32, bf16) or one number for all")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start, load0 = time.perf_counter(), os.getloadavg()
    print(f"# load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", file=sys.stderr, flush=True)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax and torch share the device
    import jax

    from jaxattr.models import init_params

    z = sizes(args.tiny)
    for k in ("lengths", "steps", "rounds"):
        if getattr(args, k) is not None:
            z[k] = getattr(args, k)
    backend = jax.default_backend()
    args.modes = args.modes or (["default"] if backend == "cpu" else list(MODES))
    cfg, ids, model_name = model_setup(args.tiny)
    b = Bench(args, z, backend, jax.devices()[0].device_kind, cfg, init_params(cfg, jax.random.key(0)), ids,
              start + args.budget_s)
    b.peaks = peers.parse_peaks(args.peak_tflops)
    torch_setup(b)
    attn = attention_lines(b)
    rows = run_rows(b)
    load1 = os.getloadavg()
    head = header_lines(b, argv, model_name, load0, load1, time.perf_counter() - start)
    text = render(b, rows, attn, head)
    print(text, flush=True)
    print(f"# load average after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}", file=sys.stderr, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
