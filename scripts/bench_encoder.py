"""Encoder throughput: jaxattr (jit) vs HF PyTorch on the real all-MiniLM-L6-v2, same process, same inputs.

Measures forward and forward+backward (gradient of a cross-entropy loss w.r.t. all parameters)
examples/s at batch 32 x 128 tokens by default, dropout off in both, fp32. The two frameworks are timed
in alternation (jax, torch, jax, torch, ...) so that load from other processes hits both alike; the
median of the repeats is reported, with the load average before and after.

    .venv/bin/python scripts/bench_encoder.py [--batch 32] [--length 128] [--repeats 5] [--iters 3]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers

from jaxattr.models import forward_batch, load_minilm, minilm_dir


def _time(fn, iters: int) -> float:
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5, help="alternating timing rounds (median reported)")
    ap.add_argument("--iters", type=int, default=3, help="calls per timing round")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    load_before = os.getloadavg()

    model = load_minilm(num_labels=2, seed=0)
    cfg, params = model.cfg, jax.device_put(model.params)
    hf = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2).eval()
    with torch.no_grad():  # same head in both
        hf.classifier.weight.copy_(torch.tensor(np.asarray(params["head"]["out"]["kernel"]).T))
        hf.classifier.bias.copy_(torch.tensor(np.asarray(params["head"]["out"]["bias"])))

    rng = np.random.default_rng(0)
    b, t = args.batch, args.length
    ids = rng.integers(1000, cfg.vocab_size, (b, t)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"input_ids": ids, "attention_mask": np.ones((b, t), np.int32),
             "token_type_ids": np.zeros((b, t), np.int32)}
    labels = rng.integers(0, 2, b).astype(np.int32)
    tb = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
    tlabels = torch.tensor(labels, dtype=torch.long)
    jb = jax.device_put(batch)

    fwd = jax.jit(lambda p, x: forward_batch(p, cfg, x).logits)

    def loss(p, x, y, cls_only=False):
        logits = forward_batch(p, cfg, x, cls_only=cls_only).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    fwd_bwd = jax.jit(jax.value_and_grad(loss))
    # as jaxattr's training loss runs it: the last block for the [CLS] row alone
    fwd_bwd_cls = jax.jit(jax.value_and_grad(functools.partial(loss, cls_only=True)))

    def jax_fwd():
        fwd(params, jb).block_until_ready()

    def jax_fwd_bwd():
        jax.block_until_ready(fwd_bwd(params, jb, labels))

    def jax_fwd_bwd_cls():
        jax.block_until_ready(fwd_bwd_cls(params, jb, labels))

    def torch_fwd():
        with torch.inference_mode():
            hf(**tb).logits.sum().item()

    def torch_fwd_bwd():
        hf.zero_grad(set_to_none=True)
        out = hf(**tb, labels=tlabels)
        out.loss.backward()

    # Warm up (compiles) and check that both compute the same thing.
    jax_fwd(), jax_fwd_bwd(), jax_fwd_bwd_cls(), torch_fwd(), torch_fwd_bwd()
    with torch.no_grad():
        ref = hf(**tb).logits.numpy()
    err = float(np.abs(np.asarray(fwd(params, jb)) - ref).max())
    jl, _ = fwd_bwd(params, jb, labels)
    with torch.no_grad():
        tl = float(hf(**tb, labels=tlabels).loss)
    gap = jax.tree.reduce(max, jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), fwd_bwd(params, jb, labels)[1],
                                            fwd_bwd_cls(params, jb, labels)[1]))
    print(f"parity: max|dlogits| = {err:.2e}, loss jax {float(jl):.6f} torch {tl:.6f}; "
          f"cls_only max|dgrad| = {gap:.1e}")

    results: dict[str, list[float]] = {k: [] for k in ("jax fwd", "torch fwd", "jax fwd+bwd", "torch fwd+bwd",
                                                        "jax fwd+bwd cls")}
    for _ in range(args.repeats):
        results["jax fwd"].append(_time(jax_fwd, args.iters))
        results["torch fwd"].append(_time(torch_fwd, args.iters))
        results["jax fwd+bwd"].append(_time(jax_fwd_bwd, args.iters))
        results["torch fwd+bwd"].append(_time(torch_fwd_bwd, args.iters))
        results["jax fwd+bwd cls"].append(_time(jax_fwd_bwd_cls, args.iters))
    load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in results.items()}
    spread = {k: (min(v), max(v)) for k, v in results.items()}
    cpu = platform.processor() or platform.machine()
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu},"
          f" {os.cpu_count()} cores; jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}"
          f" ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1-min)")
    print(f"MiniLM-L6 fp32, batch {b} x {t} tokens, {args.repeats} rounds x {args.iters} calls, median (min-max):")
    for k in results:
        lo, hi = spread[k]
        print(f"  {k:<15} {b / med[k]:8.1f} ex/s   ({b / hi:.1f}-{b / lo:.1f})")
    print(f"  ratio jax/torch forward:          {med['torch fwd'] / med['jax fwd']:.2f}x")
    print(f"  ratio jax/torch forward+backward: {med['torch fwd+bwd'] / med['jax fwd+bwd']:.2f}x")
    print(f"  ratio jax/torch forward+backward, cls_only (the training loss): "
          f"{med['torch fwd+bwd'] / med['jax fwd+bwd cls']:.2f}x")


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()
    main()
