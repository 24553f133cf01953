"""A fair fight and honest FLOPs (DESIGN.md §5), shared by `accelerator_bench.py` and `bench_attribution.py`.

* `PEAKS`: the one table of dense peak TFLOP/s per device kind and per precision that ran: `fp32` (true
  float32: CUDA cores on a GPU), `tf32` (tensor cores; JAX's default matmul precision and PyTorch with
  TF32 allowed) and `bf16`. MFU is always against the peak of the precision that ran (`mfu`).
* FLOPs: `xla_flops` / `compiled_flops` read XLA's `cost_analysis()` of a compiled function (a dict, or a
  list of dicts in older jax); `forward_flops` / `input_grad_flops` are the analytic count of what runs.
  An input gradient (gradient w.r.t. the word embeddings only, no weight gradients) costs the forward plus
  one activation-gradient matmul per linear matmul and two per attention matmul: ~2 x forward, not the
  training convention's 3 x. With `cls_only` the last block runs only the [CLS] query row.
  Note: XLA counts a loop body (`lax.scan` over steps, `while`) once, and custom calls (cuDNN attention)
  as 0 FLOPs; see `flops_note`.
* The PyTorch peers at their best, each configuration a `PeerConfig` (precision, examples per call,
  `internal_batch_size`, torch.compile, frozen parameters): Captum IG (`captum_ig`), tint SIG
  (`tint_sig`) and the reference IBA (`iba_reference`), each call running the forward for the target
  inside the timed region; `run_grid` times a grid and `strongest` picks the fastest. HF models are
  loaded with `attn_implementation="sdpa"` (`load_peer_model`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def _tpu(bf16: float) -> dict[str, float]:
    """A TPU's peaks: bf16 matmul units only; JAX's default f32 matmul is one bf16 pass, `highest` six."""
    return {"fp32": bf16 / 6, "tf32": bf16, "bf16": bf16}


# dense peak TFLOP/s (no sparsity) by the precision that ran; the first key that is a substring of the
# device kind wins (so "H100 PCIe" before "H100"). An H200 has the H100 SXM's compute.
PEAKS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},  # SXM: "NVIDIA H100 80GB HBM3"
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "TPU v4": _tpu(275.0),
    "TPU v5 lite": _tpu(197.0),
    "TPU v5e": _tpu(197.0),
    "TPU v5p": _tpu(459.0),
    "TPU v6": _tpu(918.0),
}


# ----------------------------------------------------------------------------------------------
# Peaks and MFU


def parse_peaks(values: Sequence[str] | None) -> dict[str, float]:
    """`--peak-tflops` values: `PREC=TFLOPS` pairs, or one bare number for every precision."""
    out: dict[str, float] = {}
    for v in values or ():
        prec, _, num = v.rpartition("=")
        for p in ([prec] if prec else PRECISIONS):
            if p not in PRECISIONS:
                raise ValueError(f"--peak-tflops: unknown precision {p!r}; use one of {PRECISIONS}")
            out[p] = float(num)
    return out


def peak_tflops(kind: str, precision: str, given: Mapping[str, float] | None = None) -> tuple[float | None, str]:
    """Dense peak TFLOP/s of `precision` on a device of `kind`, and where it came from."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if given and precision in given:
        return given[precision], "--peak-tflops"
    for key, peaks in PEAKS.items():
        if key.lower() in kind.lower():
            return peaks[precision], f"PEAKS[{key!r}]"
    return None, "unknown device kind"


def mfu(flops_per_item: float | None, seconds_per_item: float | None, peak: float | None) -> float | None:
    """Model-FLOPs utilisation (a fraction) of `flops_per_item` done in `seconds_per_item` against `peak` TFLOP/s."""
    if not flops_per_item or not seconds_per_item or not peak:
        return None
    return flops_per_item / seconds_per_item / 1e12 / peak


def jax_precision(backend: str, dtype: str, matmul: str = "default") -> str:
    """The precision a jaxattr row runs at: bf16 compute, or float32 matmuls at JAX's `matmul` precision
    (`default` is TF32 on GPUs and one bf16 pass on TPUs; `highest` is true float32)."""
    if dtype == "bfloat16":
        return "bf16"
    if backend == "cpu" or matmul == "highest":
        return "fp32"
    return "bf16" if backend == "tpu" else "tf32"


# ----------------------------------------------------------------------------------------------
# FLOPs


def block_flops(cfg: Any, t: int, queries: int | None = None) -> tuple[float, float]:
    """(linear, attention) matmul FLOPs of one encoder block over `t` tokens with `queries` query rows
    (default all; 1 for a `cls_only` last block: K and V still project every token)."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    q = t if queries is None else queries
    linear = 2 * h * h * (2 * t + 2 * q) + 4 * q * h * i  # K, V over t rows; Q, output projection, FFN over q
    return float(linear), float(4 * q * t * h)  # QK^T and PV


def encoder_flops(cfg: Any, t: int, *, start: int = 0, stop: int | None = None, cls_only: bool = False,
                  head: bool = True) -> tuple[float, float]:
    """(linear, attention) matmul FLOPs of blocks start+1..stop of one sequence of `t` tokens, plus the
    classification head (pooler and classifier) when `head`; embeddings, norms and softmax are ignored."""
    stop = cfg.num_layers if stop is None else stop
    n = stop - start
    if n <= 0:
        return 0.0, 0.0
    full = block_flops(cfg, t)
    last = block_flops(cfg, t, 1 if cls_only else None)
    h = cfg.hidden_size
    extra = 2 * h * h + 2 * h * cfg.num_labels if head else 0
    return (n - 1) * full[0] + last[0] + extra, (n - 1) * full[1] + last[1]


def forward_flops(cfg: Any, t: int, **kw: Any) -> float:
    """Analytic forward FLOPs of one sequence (`encoder_flops` options)."""
    return sum(encoder_flops(cfg, t, **kw))


def input_grad_flops(cfg: Any, t: int, **kw: Any) -> float:
    """Analytic FLOPs of the forward and the gradient w.r.t. the inputs only (no weight gradients): each
    linear matmul gets one more (dX), each attention matmul two more (dQ and dK, dP and dV)."""
    linear, attention = encoder_flops(cfg, t, **kw)
    return 2 * linear + 3 * attention


def flops_from_cost(cost: Any) -> float | None:
    """The `flops` of a `Compiled.cost_analysis()` result: a dict, or a list of per-program dicts (older
    jax); None when it is missing or not positive."""
    entries = cost if isinstance(cost, (list, tuple)) else [cost]
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("flops") is not None and float(entry["flops"]) > 0:
            return float(entry["flops"])
    return None


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of an AOT-compiled jax function (`jax.jit(f).lower(...).compile()`), or None."""
    try:
        return flops_from_cost(compiled.cost_analysis())
    except Exception:  # a backend without cost analysis
        return None


def xla_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float | None:
    """FLOPs XLA counts for one call `fn(*args, **kwargs)` (compiles it; `fn` may already be jitted)."""
    import jax

    return compiled_flops(jax.jit(fn).lower(*args, **kwargs).compile())


def flops_note(backend: str) -> str:
    """What XLA's count leaves out on this backend."""
    note = "XLA FLOPs: cost_analysis() of the compiled program (a loop body counted once"
    if backend == "gpu":
        note += "; cuDNN custom calls, e.g. flash attention, count 0"
    return note + ")"


# ----------------------------------------------------------------------------------------------
# The PyTorch peers


@dataclasses.dataclass(frozen=True)
class PeerConfig:
    """One way to run a peer: `precision` fp32 (TF32 off) / tf32 (TF32 allowed) / bf16 (autocast), examples
    per call, Captum's `internal_batch_size` (None: all rows at once), torch.compile of the forward, and
    parameters frozen (`requires_grad=False`) or not."""

    precision: str
    per_call: int = 1
    internal_batch: int | None = None
    compiled: bool = False
    frozen: bool = True

    def label(self) -> str:
        ib = "all" if self.internal_batch is None else str(self.internal_batch)
        out = f"{self.precision}, {'compiled' if self.compiled else 'eager'}, {self.per_call} ex/call, ib {ib}"
        return out + ("" if self.frozen else ", params require grad")


def as_users(steps: int | None) -> PeerConfig:
    """Today's "as users run them" peer: eager true fp32, one example per call, parameters requiring grad."""
    return PeerConfig("fp32", 1, steps, frozen=False)


@dataclasses.dataclass
class PeerResult:
    """A configuration's median seconds per item (None when it did not run: `note` says why)."""

    config: PeerConfig
    seconds: float | None = None
    note: str = ""
    flops: float | None = None  # analytic FLOPs per item of this configuration


class Budget:
    """Seconds left for torch.compile warm-ups (compiles start only while some is left)."""

    def __init__(self, seconds: float) -> None:
        self.left = float(seconds)


def grid(precision: str, steps: int, examples: int, length: int, max_tokens: int,
         per_call: Sequence[int] | None = None) -> list[PeerConfig]:
    """The eager grid of one precision: one example per call, and `examples` per call with
    internal_batch_size in {steps, 2 steps, 4 steps} rows, at most `max_tokens` tokens per batch and at
    least one row per example."""
    out = [PeerConfig(precision, 1, steps)]
    for n in per_call or ([examples] if examples > 1 else []):
        for ib in (steps, 2 * steps, 4 * steps):
            if n <= ib <= n * steps and (ib * length <= max_tokens or ib == steps):
                out.append(PeerConfig(precision, n, ib))
    return out


@contextlib.contextmanager
def torch_precision(precision: str) -> Iterator[None]:
    """TF32 allowed for `tf32`, off otherwise (bf16 autocast is in the forward: `peer_forward`)."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def load_peer_model(hf_dir: str, device: str) -> Any:
    """The HF sequence classifier in `hf_dir` with SDPA attention, in eval mode on `device`."""
    import transformers

    return transformers.AutoModelForSequenceClassification.from_pretrained(
        hf_dir, attn_implementation="sdpa").eval().to(device)


def peer_forward(tm: Any, precision: str, device: str, compiled: bool = False) -> Callable[..., Any]:
    """logits = f(inputs_embeds, token_type_ids, attention_mask), under bf16 autocast for `bf16`,
    optionally through torch.compile (a fresh compile: dynamo's caches are reset)."""
    import torch

    def fwd(inputs_embeds: Any, token_type_ids: Any, attention_mask: Any) -> Any:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = tm(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return out.logits.float()

    if not compiled:
        return fwd
    torch._dynamo.reset()
    return torch.compile(fwd, dynamic=False)


def peer_groups(exs: Sequence[Mapping[str, Any]], per_call: int, mask_id: int, pad_id: int,
                device: str) -> list[tuple[Any, Any, Any, Any]]:
    """(ids, baseline ids, token types, attention mask) per call of `per_call` examples, padded to the
    group's longest; the baseline puts [MASK] on word pieces and keeps special tokens and padding."""
    import torch

    out = []
    for s in range(0, len(exs), per_call):
        group = exs[s:s + per_call]
        t = max(len(e["input_ids"]) for e in group)
        arr = np.zeros((4, len(group), t), np.int64)
        arr[0] = pad_id
        for j, e in enumerate(group):
            n = len(e["input_ids"])
            arr[0, j, :n], arr[2, j, :n], arr[3, j, :n] = e["input_ids"], e["token_type_ids"], 1
            arr[1, j, :n] = np.where(np.asarray(e["word_ids"]) >= 0, mask_id, e["input_ids"])
        arr[1, :, :][arr[3] == 0] = pad_id
        out.append(tuple(torch.as_tensor(a, device=device) for a in arr))
    return out


def _embed_and_target(tm: Any, fwd: Callable[..., Any], ids: Any, base_ids: Any, tt: Any, am: Any
                      ) -> tuple[Any, Any, Any]:
    """Input and baseline embeddings and the predicted class (one forward), as each timed call does."""
    import torch

    with torch.no_grad():
        emb_layer = tm.get_input_embeddings()
        emb, base = emb_layer(ids), emb_layer(base_ids)
        target = fwd(emb, tt, am).argmax(-1)
    return emb, base, target


def captum_ig(tm: Any, groups: Sequence[tuple], c: PeerConfig, steps: int, fwd: Callable[..., Any]
              ) -> Callable[[], None]:
    """A timed call: Captum IntegratedGradients (Gauss-Legendre, convergence delta, i.e. F at the input and
    the baseline, as jaxattr's driver computes) over every group, the target forward included."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(fwd)

    def call() -> None:
        for ids, base_ids, tt, am in groups:
            emb, base, target = _embed_and_target(tm, fwd, ids, base_ids, tt, am)
            ig.attribute(emb, baselines=base, target=target, additional_forward_args=(tt, am), n_steps=steps,
                         method="gausslegendre", internal_batch_size=c.internal_batch, return_convergence_delta=True)
    return call


def tint_sig(tm: Any, groups: Sequence[tuple], c: PeerConfig, steps: int, fwd: Callable[..., Any],
             units: int | None = None) -> Callable[[], None]:
    """A timed call: tint's SequentialIntegratedGradients over every group, the target forward included.
    `units`: only positions 1..units, through the per-position `_attribute` its own loop makes (batched by
    Captum's `_batch_attribution` when internal_batch_size is set); None: the whole `attribute` call."""
    from captum.attr._utils.batching import _batch_attribution
    from captum.attr._utils.common import _format_input_baseline
    from tint.attr import SequentialIntegratedGradients

    sig = SequentialIntegratedGradients(fwd)
    kw = dict(additional_forward_args=None, method="gausslegendre")

    def call() -> None:
        for ids, base_ids, tt, am in groups:
            emb, base, target = _embed_and_target(tm, fwd, ids, base_ids, tt, am)
            kw.update(additional_forward_args=(tt, am), target=target)
            if units is None:
                sig.attribute(emb, baselines=base, n_steps=steps, internal_batch_size=c.internal_batch, **kw)
                continue
            inputs, baselines = _format_input_baseline(emb, base)
            for idx in range(1, 1 + units):
                if c.internal_batch is None:
                    sig._attribute(inputs=inputs, baselines=baselines, n_steps=steps, idx=idx, **kw)
                else:
                    _batch_attribution(sig, len(ids), c.internal_batch, steps, inputs=inputs, baselines=baselines,
                                       idx=idx, **kw)
    return call


def iba_reference(tm: Any, ids: Sequence[np.ndarray], c: PeerConfig, device: str, *, layer: int, steps: int,
                  samples: int, beta: float = 1e-5, target: int = 1) -> Callable[[], None]:
    """A timed call: the reference IBA (`bench_iba.torch_reference`, one example at a time) under the
    configuration's precision (bf16: autocast around it)."""
    import torch
    from bench_iba import torch_reference

    def call() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=c.precision == "bf16"):
            for x in ids:
                torch_reference(tm, x, target, layer, beta, steps, samples, device=device)
    return call


def median_s(fn: Callable[[], Any], rounds: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall seconds of `rounds` calls of `fn` (each followed by `sync`)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(statistics.median(times))


def _failure(e: BaseException, c: PeerConfig) -> str:
    """A one-line reason for a configuration that did not run."""
    msg = str(e).splitlines()[0][:100] if str(e) else ""
    if "out of memory" in str(e).lower():
        return "out of memory"
    return f"{'compile failed' if c.compiled else 'failed'}: {type(e).__name__}: {msg}"


def time_config(c: PeerConfig, make: Callable[[PeerConfig], Callable[[], None]], tm: Any, *, items: int,
                rounds: int, sync: Callable[[], None], budget: Budget) -> PeerResult:
    """One configuration: a warm-up call (compiles included) then the median of `rounds` calls, per item."""
    import torch

    if c.compiled and budget.left <= 0:
        return PeerResult(c, note="compile skipped: compile budget spent")
    tm.requires_grad_(not c.frozen)
    t0 = time.perf_counter()
    try:
        with torch_precision(c.precision):
            call = make(c)
            call()
            sync()
            warm = time.perf_counter() - t0
            seconds = median_s(call, rounds, sync) / items
    except Exception as e:  # a configuration that fails (OOM, compile) is reported, never fatal
        return PeerResult(c, note=_failure(e, c))
    finally:
        if c.compiled:
            budget.left -= time.perf_counter() - t0
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return PeerResult(c, seconds, f"compile + warm-up {warm:.0f} s" if c.compiled else "")


def run_grid(configs: Sequence[PeerConfig], make: Callable[[PeerConfig], Callable[[], None]], tm: Any, *,
             items: int, rounds: int, sync: Callable[[], None], deadline: float, budget: Budget,
             compile_best: bool) -> list[PeerResult]:
    """Time every configuration (until `deadline`), then torch.compile of the fastest eager one when
    `compile_best` and compile budget is left."""
    out = []
    for c in configs:
        if time.perf_counter() > deadline:
            out.append(PeerResult(c, note="skipped (time budget)"))
            continue
        out.append(time_config(c, make, tm, items=items, rounds=rounds, sync=sync, budget=budget))
    best = strongest(out)
    if compile_best and best is not None and time.perf_counter() < deadline:
        c = dataclasses.replace(best.config, compiled=True)
        out.append(time_config(c, make, tm, items=items, rounds=rounds, sync=sync, budget=budget))
    return out


def strongest(results: Sequence[PeerResult]) -> PeerResult | None:
    """The fastest configuration that ran, or None."""
    ran = [r for r in results if r.seconds is not None]
    return min(ran, key=lambda r: r.seconds) if ran else None


def grid_summary(results: Sequence[PeerResult]) -> str:
    """Every configuration's time (ms per item) or why it did not run, on one line."""
    return "; ".join(f"{r.config.label()}: " + (f"{1e3 * r.seconds:.3g} ms" if r.seconds is not None else r.note)
                     for r in results)
