"""Per-family encoder throughput: jaxattr (jit) vs HF PyTorch, forward and input gradient, side by side.

For each encoder family a random base-sized HF model (12 layers, hidden 768, 12 heads, MLP 3072; each
family's own layout: ALBERT one shared group with 128-wide embeddings, DeBERTa-v3's relative attention,
ModernBERT's alternating global/local attention, DistilBERT 6 layers as its base) is saved, loaded by
jaxattr from the directory (`load_hf_dir`, the users' path) and checked for logit parity, then both run on the same
batch (default 8 x 128 tokens, fp32, dropout off):

* forward: the logits;
* input gradient: d(sum of the predicted class's logits) / d(word embeddings), what every gradient
  attribution step computes. jaxattr runs it as its attribution kernels do (the last block for the [CLS]
  row alone); HF runs its full model, as Captum does.

The two frameworks alternate within each of --rounds rounds (median and min-max over rounds reported);
the load average is printed before and after. `--tiny` runs 2-layer hidden-64 models (a quick check).

    .venv/bin/python scripts/bench_families.py [--families bert,albert,...] [--batch 8] [--length 128]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from importlib.metadata import version

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from jaxattr.models import forward, load_hf_dir, word_embeddings

FAMILIES = ("bert", "roberta", "distilbert", "electra", "albert", "deberta-v2", "modernbert")


def hf_config(family: str, tiny: bool) -> transformers.PretrainedConfig:
    """A base-sized (or tiny) config of the family's own layout, 2 labels."""
    h, layers, heads, inter = (64, 2, 4, 128) if tiny else (768, 12, 12, 3072)
    common = dict(vocab_size=30522, num_labels=2, max_position_embeddings=512)
    if family == "bert":
        return transformers.BertConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                                       intermediate_size=inter, **common)
    if family == "roberta":  # also XLM-R and CamemBERT: the same layout, aliases of one path
        return transformers.RobertaConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                                          intermediate_size=inter, pad_token_id=1, type_vocab_size=1,
                                          **{**common, "max_position_embeddings": 514})
    if family == "distilbert":
        return transformers.DistilBertConfig(dim=h, n_layers=max(2, layers // 2), n_heads=heads, hidden_dim=inter,
                                             **common)
    if family == "electra":  # ELECTRA-base: embeddings as wide as the encoder
        return transformers.ElectraConfig(embedding_size=h, hidden_size=h, num_hidden_layers=layers,
                                          num_attention_heads=heads, intermediate_size=inter, **common)
    if family == "albert":
        return transformers.AlbertConfig(embedding_size=min(128, h), hidden_size=h, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=inter, **common)
    if family == "deberta-v2":  # the v3-base layout
        return transformers.DebertaV2Config(
            hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
            relative_attention=True, position_buckets=256, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
            share_att_key=True, position_biased_input=False, type_vocab_size=0, norm_rel_ebd="layer_norm",
            **{**common, "vocab_size": 128100})
    if family == "modernbert":  # ModernBERT-base: 22 layers, MLP 1152 (GeGLU), local window 128
        return transformers.ModernBertConfig(
            hidden_size=h, num_hidden_layers=2 if tiny else 22, num_attention_heads=heads,
            intermediate_size=128 if tiny else 1152, global_attn_every_n_layers=3, local_attention=128,
            pad_token_id=50283, bos_token_id=50281, cls_token_id=50281, eos_token_id=50282, sep_token_id=50282,
            **{**common, "vocab_size": 50368, "max_position_embeddings": 8192})
    raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")


def median_span(v: list[float]) -> str:
    return f"{np.median(v):.3f} [{min(v):.3f}-{max(v):.3f}]"


def bench_family(family: str, args: argparse.Namespace) -> dict[str, list[float]]:
    torch.manual_seed(0)
    hf = transformers.AutoModelForSequenceClassification.from_config(hf_config(family, args.tiny)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        cfg, params = load_hf_dir(d)  # the weights the users' `--model DIR` loads (no tokenizer needed here)
    rng = np.random.default_rng(0)
    b, t = args.batch, args.length
    ids = rng.integers(1000, 30000, (b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    tids = torch.tensor(ids, dtype=torch.long)
    tmask = torch.tensor(mask, dtype=torch.long)

    fwd = jax.jit(lambda p, i, m: forward(p, cfg, i, m).logits)

    def input_grad(p, i, m):
        e = word_embeddings(p, cfg, i)

        def f(e):
            logits = forward(p, cfg, None, m, word_embeds=e, cls_only=True).logits
            return jnp.take_along_axis(logits, jnp.argmax(logits, -1)[:, None], 1).sum()
        return jax.grad(f)(e)
    grad = jax.jit(input_grad)
    ji, jm = jax.device_put(ids), jax.device_put(mask)

    def torch_grad():
        e = hf.get_input_embeddings()(tids).detach().requires_grad_(True)
        logits = hf(inputs_embeds=e, attention_mask=tmask).logits
        logits.gather(1, logits.argmax(-1, keepdim=True)).sum().backward()
        return e.grad

    with torch.no_grad():
        ref = hf(input_ids=tids, attention_mask=tmask).logits.numpy()
    err = float(np.abs(np.asarray(fwd(params, ji, jm)) - ref).max())
    gerr = float(np.abs(np.asarray(grad(params, ji, jm)) - torch_grad().numpy()).max())
    runners = {
        "jax fwd": lambda: fwd(params, ji, jm).block_until_ready(),
        "torch fwd": lambda: hf(input_ids=tids, attention_mask=tmask).logits.sum().item(),
        "jax grad": lambda: grad(params, ji, jm).block_until_ready(),
        "torch grad": lambda: torch_grad().sum().item(),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        runners["torch fwd"]()
    for _ in range(args.rounds):
        for name, fn in runners.items():
            ctx = torch.inference_mode() if name == "torch fwd" else torch.enable_grad()
            with ctx:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    times["parity"] = [err, gerr]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="2-layer hidden-64 models: a quick end-to-end check")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    load0 = os.getloadavg()
    rows = []
    for family in args.families.split(","):
        r = bench_family(family, args)
        rows.append((family, r))
        print(f"  {family}: " + ", ".join(f"{k} {median_span(v)}" for k, v in r.items() if k != "parity"),
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    load1 = os.getloadavg()
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
          f"{os.cpu_count()} cores; jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, flax {version('flax')}")
    size = "tiny" if args.tiny else "base"
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}; load average before {load0[0]:.1f}, after "
          f"{load1[0]:.1f}; batch {args.batch} x {args.length}, fp32, {args.rounds} rounds, {size} size")
    print("| family | jaxattr fwd s | HF fwd s | fwd speed-up | jaxattr input-grad s | HF input-grad s | "
          "grad speed-up | max abs diff logits / grad |")
    print("|---|---|---|---|---|---|---|---|")
    for family, r in rows:
        fwd, grad = (f"{np.median(r['torch ' + k]) / np.median(r['jax ' + k]):.2f}x" for k in ("fwd", "grad"))
        print(f"| {family} | {median_span(r['jax fwd'])} | {median_span(r['torch fwd'])} | {fwd} "
              f"| {median_span(r['jax grad'])} | {median_span(r['torch grad'])} | {grad} "
              f"| {r['parity'][0]:.1e} / {r['parity'][1]:.1e} |")


if __name__ == "__main__":
    main()
