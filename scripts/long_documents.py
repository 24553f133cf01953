"""Long documents (issue 34): time and peak memory per document, jaxattr against Captum, side by side.

    .venv/bin/python scripts/long_documents.py [--bbc 4] [--lengths 2048 4096 8192] [--cap-gb 12]

Every measurement runs in a fresh child process (its peak RSS is its own), one after another, and a child
whose resident memory passes --cap-gb is killed and reported as such (the same cap for both sides):
  * BBC: test articles of 769-896 MiniLM tokens (one length bucket), the real all-MiniLM-L6-v2 with a
    seeded head, IG with --steps Gauss-Legendre points. jaxattr reads each whole article as 512-token
    windows every 256 tokens (`--long window`) at two --tokens-per-batch bounds; Captum (IntegratedGradients,
    HF BERT with sdpa) runs the same articles as users must: cut to the model's 512 positions (the whole
    article does not fit).
    One warm-up article (one run of the document, native), then seconds per article over the rest.
  * Native long context: a ModernBERT-base-width random model (hidden 768, 12 heads, --layers blocks, local
    attention 128, a global block every 3) at each of --lengths tokens, IG on one document of random tokens
    on both sides; jaxattr's completeness gap is reported.
On a GPU both sides run there (Captum on CUDA when torch sees it) and the table adds each child's peak device
memory (JAX's `peak_bytes_in_use`, torch's `max_memory_allocated`).
Prints a Markdown table; nothing else should run (the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _minilm_examples(n: int) -> tuple[Any, list[dict[str, Any]]]:
    from jaxattr.data.datasets import load_corpus
    from jaxattr.data.tokenize import encode_texts
    from jaxattr.models import load_minilm

    model = load_minilm(num_labels=2, seed=0)
    texts = [t for t in load_corpus("bbc")["test"]["text"] if 769 <= len(model.tokenizer(t)["input_ids"]) <= 896]
    exs = encode_texts(model.tokenizer, texts[:n], max_length=16384)
    for i, ex in enumerate(exs):
        ex["id"] = i
    return model, exs


def _modernbert(layers: int) -> tuple[Any, Any]:
    import jax

    from jaxattr.models import init_params, tiny_config

    cfg = tiny_config("modernbert", num_labels=2, vocab_size=50368, hidden_size=768, num_heads=12,
                      intermediate_size=1152, num_layers=layers, max_position_embeddings=8192, local_attention=128,
                      global_attn_every_n_layers=3, pad_token_id=50283)
    return cfg, init_params(cfg, jax.random.key(0))


def _random_doc(length: int) -> dict[str, Any]:
    ids = np.random.default_rng(0).integers(1000, 40000, length).astype(np.int32)
    ids[0], ids[-1] = 50281, 50282  # [CLS], [SEP]
    return {"id": 0, "input_ids": ids, "token_type_ids": np.zeros(length, np.int32),
            "word_ids": np.r_[-1, np.arange(length - 2), -1].astype(np.int32), "tokens": ["t"] * length,
            "words": [f"w{i}" for i in range(length - 2)]}


def _jaxattr(params: Any, cfg: Any, exs: list[dict[str, Any]], steps: int, tpb: int, ids: dict[str, int]) -> dict:
    from jaxattr.attribution.driver import Driver

    drv = Driver(params, cfg, "ig", {"steps": steps}, tokens_per_batch=tpb, **ids)
    times, gaps = [], []
    for i, ex in enumerate(exs[:1] + exs if len(exs) == 1 else exs):  # the first run compiles: not timed
        start = time.perf_counter()
        rec = [r for step in drv.run([ex]) for r in step.records][0]
        if i:
            times.append(time.perf_counter() - start)
        gaps.append(abs(rec["delta"]) / (1e-9 + abs(sum(rec["scores"])) + abs(rec["delta"])))
    return {"s_per_doc": float(np.mean(times)), "gap": float(max(gaps)), "tokens": [len(e["input_ids"]) for e in exs]}


def _captum(hf_dir: str, exs: list[dict[str, Any]], steps: int, cut: int | None) -> dict:
    import torch
    from captum.attr import IntegratedGradients
    from peers import load_peer_model

    tm = load_peer_model(hf_dir, _torch_device())
    for p in tm.parameters():
        p.requires_grad_(False)
    emb = tm.get_input_embeddings()
    times = []
    for i, ex in enumerate(exs[:1] + exs if len(exs) == 1 else exs):  # the first run warms up: not timed
        ids = torch.as_tensor(np.asarray(ex["input_ids"][:cut] if cut else ex["input_ids"]), dtype=torch.long,
                              device=tm.device)[None]
        x = emb(ids)
        base = emb(torch.full_like(ids, 103 if cut else 50284))
        fwd = lambda e: tm(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2], dtype=torch.long,
                                                                     device=e.device)).logits
        start = time.perf_counter()
        target = int(fwd(x).argmax(-1))
        IntegratedGradients(fwd).attribute(x, base, target=target, n_steps=steps, method="gausslegendre",
                                           internal_batch_size=1)
        if i:
            times.append(time.perf_counter() - start)
    return {"s_per_doc": float(np.mean(times)), "tokens": [min(len(e["input_ids"]), cut or 10**9) for e in exs]}


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_peak_gb(kind: str) -> float | None:
    """The child's peak accelerator memory (None on CPU)."""
    if kind.startswith("captum"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    import jax

    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return stats["peak_bytes_in_use"] / 2**30 if stats and "peak_bytes_in_use" in stats else None


def child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"].endswith("bbc"):
        model, exs = _minilm_examples(spec["docs"])
        if spec["kind"] == "jaxattr_bbc":
            cfg = model.cfg.replace(window=512, window_stride=256)
            out = _jaxattr(model.params, cfg, exs, spec["steps"], spec["tpb"],
                           {"mask_id": model.mask_id, "pad_id": model.pad_id})
        else:
            from jaxattr.models import save_hf_dir

            with tempfile.TemporaryDirectory() as d:
                save_hf_dir(model.cfg, model.params, d)
                out = _captum(d, exs, spec["steps"], cut=512)
    else:
        cfg, params = _modernbert(spec["layers"])
        doc = _random_doc(spec["length"])
        if spec["kind"] == "jaxattr_native":
            out = _jaxattr(params, cfg, [doc], spec["steps"], spec["tpb"], {"mask_id": 50284, "pad_id": 50283})
        else:
            from jaxattr.models import save_hf_dir

            with tempfile.TemporaryDirectory() as d:
                save_hf_dir(cfg, params, d)
                out = _captum(d, [doc], spec["steps"], cut=None)
    return {**out, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "device_gb": _device_peak_gb(spec["kind"])}


def measure(spec: dict[str, Any], cap_gb: float) -> dict[str, Any]:
    """Run one spec in a child process, killed if its resident memory passes `cap_gb`."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        try:
            rss = next(int(ln.split()[1]) for ln in open(f"/proc/{proc.pid}/status") if ln.startswith("VmRSS"))
            peak = max(peak, rss / 2**20)
        except (OSError, StopIteration):
            pass
        if peak > cap_gb:
            proc.kill()
            proc.wait()
            return {"error": f"killed: resident memory passed the {cap_gb:g} GB cap"}
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        return {"error": (err.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bbc", type=int, default=4, help="BBC articles (the first is a warm-up)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--lengths", type=int, nargs="*", default=[2048, 4096, 8192])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--native-steps", type=int, default=4)
    ap.add_argument("--cap-gb", type=float, default=12.0)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import jax

    print(f"# load average before {os.getloadavg()[0]:.2f}; jax {jax.__version__}; {os.cpu_count()} CPUs; "
          f"cap {args.cap_gb:g} GB resident per child")
    rows = []
    if args.bbc:
        for tpb in (4096, 16384):
            rows.append((f"BBC, IG {args.steps} steps", f"jaxattr --long window 512/256, tpb {tpb}",
                         measure({"kind": "jaxattr_bbc", "docs": args.bbc, "steps": args.steps, "tpb": tpb},
                                 args.cap_gb)))
        rows.append((f"BBC, IG {args.steps} steps", "Captum, HF sdpa, cut to 512 tokens (ib 1)",
                     measure({"kind": "captum_bbc", "docs": args.bbc, "steps": args.steps}, args.cap_gb)))
    for n in args.lengths:
        name = f"ModernBERT-width {args.layers} blocks, {n} tokens, IG {args.native_steps} steps"
        rows.append((name, "jaxattr native, tpb 8192", measure({"kind": "jaxattr_native", "length": n, "layers":
                                                                args.layers, "steps": args.native_steps, "tpb": 8192},
                                                               args.cap_gb)))
        rows.append((name, "Captum, HF sdpa (ib 1)", measure({"kind": "captum_native", "length": n, "layers":
                                                             args.layers, "steps": args.native_steps}, args.cap_gb)))
    print("| workload | contender | tokens per doc | s per doc | peak RSS GB | peak device GB "
          "| completeness gap (rel.) |")
    print("|---|---|---|---|---|---|---|")
    for name, who, r in rows:
        if "error" in r:
            print(f"| {name} | {who} | | {r['error']} | | | |")
            continue
        tokens = f"{min(r['tokens'])}-{max(r['tokens'])}" if len(set(r["tokens"])) > 1 else str(r["tokens"][0])
        gap = f"{r['gap']:.1e}" if "gap" in r else ""
        device = "" if r.get("device_gb") is None else f"{r['device_gb']:.2f}"
        print(f"| {name} | {who} | {tokens} | {r['s_per_doc']:.1f} | {r['rss_gb']:.2f} | {device} | {gap} |")
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
