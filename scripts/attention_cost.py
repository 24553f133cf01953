"""Where jaxattr's CPU gradient time goes: attention against PyTorch's fused `sdpa` (issue 31).

    .venv/bin/python scripts/attention_cost.py [--rows 16] [--length 256]

Prints, per path row of the real MiniLM at `--length` tokens: the encoder's forward and input gradient
as jaxattr compiles them, the same with attention replaced by the identity (what the rest of the
network costs), PyTorch's HF model (sdpa) doing the same, and the attention alone (jaxattr's CPU kernel
against `torch.nn.functional.scaled_dot_product_attention`), forward and forward + backward.
Medians of --reps calls after a warm-up; nothing else should run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    import jax
    import torch
    from bench_attribution import path_rows
    from peers import load_peer_model

    import jaxattr.models.attention as attention_module
    import jaxattr.models.encoder as encoder
    from jaxattr.attribution.gradients import explained_output, row_embeddings
    from jaxattr.models import load_minilm, save_hf_dir
    from jaxattr.models.attention import blocked_attention

    print(f"# load average before {os.getloadavg()[0]:.2f}; jax {jax.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); rows {args.rows} x {args.length} tokens")
    model = load_minilm(num_labels=2, seed=0)
    cfg, r, n = model.cfg, args.rows, args.length
    ids = np.random.default_rng(0).integers(1000, 2000, n).astype(np.int32)
    ex = {"input_ids": ids, "token_type_ids": np.zeros(n, np.int32), "word_ids": np.arange(n, dtype=np.int32)}
    rows = path_rows(ex, r, 50, n, model.mask_id, model.pad_id)

    def forward(p, rows, e):
        return encoder.forward(p, cfg, None, rows.attention_mask, rows.token_type_ids, word_embeds=e,
                               cls_only=True).logits  # as the attribution kernel runs it

    def kernels():
        fwd = jax.jit(lambda p, rows: forward(p, rows, row_embeddings(p, cfg, rows)[0]))
        total = lambda e, p, rows: explained_output(forward(p, rows, e), rows.target, cfg, "logit").sum()
        grad = jax.jit(lambda p, rows: jax.grad(total)(row_embeddings(p, cfg, rows)[0], p, rows))
        return {k: median_ms(lambda f=f: jax.block_until_ready(f(model.params, rows)), args.reps) / r
                for k, f in (("forward", fwd), ("gradient", grad))}

    ours = kernels()
    real_attention = attention_module.attention
    attention_module.attention = lambda q, k, v, bias=None, key_mask=None: v  # the rest of the network alone
    try:
        rest = kernels()
    finally:
        attention_module.attention = real_attention

    with tempfile.TemporaryDirectory() as d:
        save_hf_dir(cfg, model.params, d)
        tm = load_peer_model(d, "cpu")
    t_ids, t_mask = torch.from_numpy(np.tile(ids, (r, 1)).astype(np.int64)), torch.ones(r, n, dtype=torch.int64)
    emb = tm.get_input_embeddings()(t_ids).detach().requires_grad_(True)
    with torch.no_grad():
        peer_fwd = median_ms(lambda: tm(inputs_embeds=emb, attention_mask=t_mask), args.reps) / r
    peer_grad = median_ms(lambda: torch.autograd.grad(
        tm(inputs_embeds=emb, attention_mask=t_mask).logits[:, 1].sum(), emb), args.reps) / r

    h, dh = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    q, k, v = (np.random.default_rng(i).standard_normal((r, n, h, dh), np.float32) for i in range(3))
    bias = np.zeros((r, 1, 1, n), np.float32)
    att = jax.jit(blocked_attention)
    att_grad = jax.jit(jax.grad(lambda q, k, v: blocked_attention(q, k, v, bias).sum(), argnums=(0, 1, 2)))
    ours_att = (median_ms(lambda: jax.block_until_ready(att(q, k, v, bias)), args.reps) / r,
                median_ms(lambda: jax.block_until_ready(att_grad(q, k, v)), args.reps) / r)
    tq, tk, tv = (torch.from_numpy(x).transpose(1, 2).contiguous().requires_grad_(True) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        peer_att_fwd = median_ms(lambda: sdpa(tq, tk, tv), args.reps) / r
    peer_att = (peer_att_fwd, median_ms(lambda: torch.autograd.grad(sdpa(tq, tk, tv).sum(), (tq, tk, tv)),
                                        args.reps) / r)
    gflop = 4 * n * n * cfg.hidden_size * cfg.num_layers / 1e9  # attention's two matmuls, all layers, per row

    print("| ms per row | jaxattr | PyTorch (HF, sdpa) | jaxattr / PyTorch |")
    print("|---|---|---|---|")
    for name, a, b in (("encoder forward", ours["forward"], peer_fwd),
                       ("encoder input gradient", ours["gradient"], peer_grad),
                       ("  of which not attention (attention = identity)", rest["gradient"], None),
                       ("attention alone, forward, all layers", ours_att[0] * cfg.num_layers,
                        peer_att[0] * cfg.num_layers),
                       ("attention alone, forward + backward, all layers", ours_att[1] * cfg.num_layers,
                        peer_att[1] * cfg.num_layers)):
        print(f"| {name} | {a:.1f} | {'' if b is None else f'{b:.1f}'} | {'' if b is None else f'{a / b:.2f}'} |")
    print(f"# attention forward: jaxattr {gflop / ours_att[0] / cfg.num_layers * 1e3:.0f} GFLOP/s, PyTorch sdpa "
          f"{gflop / peer_att[0] / cfg.num_layers * 1e3:.0f} GFLOP/s; load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
