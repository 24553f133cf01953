"""DACT-BERT vs DeeBERT vs the full model, in the layout of the DACT-BERT paper's Table 1.

    python eval/dact_table.py --run runs/dact --thresholds 0.1,0.25,0.5 --ig-examples 2

Reads the run directory written by `train/dact.py` (stage1/, dact/, deebert/), evaluates on the same
test subset the training used (from the stage's config.yaml), with batched early exit (halted examples
leave the batch between blocks), and writes to --out (default: the run directory):
  dact_table.md / dact_table.csv   accuracy, F1, % of layers saved and wall-clock per method
  per_example.csv                  per test example and method: correct (0/1) and exit layer
  dact_exit_layers.png             exit-layer histogram, DACT (blue) vs DeeBERT (red) (paper Fig. 5)
  dact_ig_<i>.png / dact_ig.json   IG of each block's halting value and of the output (paper Fig. 4)
The full model is DeeBERT with threshold 0: its backbone and final classifier, unchanged by the off-ramps.
In `train/dact.py`'s layout that is the stage-1 model; `eval/reproduce_dact.py` trains DeeBERT on a full model
with the DACT models' total epochs and links it as stage1/ (only its tokenizer is read from there).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.errors import UserError


def _batches(arrays: dict[str, np.ndarray], size: int):
    n = len(arrays["input_ids"])
    for s in range(0, n, size):
        yield s, {k: arrays[k][s:s + size] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _run(arrays: dict[str, np.ndarray], size: int, fn: Any, desc: str) -> tuple[np.ndarray, np.ndarray, float]:
    """fn(batch) -> ExitResult over all rows; returns (exit layers, outputs, seconds after a warm-up pass)."""
    from tqdm.auto import tqdm

    for _, b in _batches(arrays, size):  # warm-up: compile every batch size this data needs
        fn(b)
    n = len(arrays["input_ids"])
    exits, outs = np.zeros(n, np.int64), None
    t0 = time.perf_counter()
    with tqdm(total=n, desc=desc, unit="ex", leave=False) as bar:
        for s, b in _batches(arrays, size):
            r = fn(b)
            if outs is None:
                outs = np.zeros((n,) + r.output.shape[1:], np.float32)
            exits[s:s + len(r.exit_layer)], outs[s:s + len(r.exit_layer)] = r.exit_layer, r.output
            bar.update(len(r.exit_layer))
    return exits, outs, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory of train/dact.py")
    p.add_argument("--out", help="output directory (default: --run)")
    p.add_argument("--thresholds", default="0.1,0.25,0.5", help="DeeBERT entropy thresholds S (nats)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--granularity", type=int, default=8, help="batch sizes after compaction: multiples of this")
    p.add_argument("--hist-threshold", type=float, default=None, help="DeeBERT S in the histogram (default: middle)")
    p.add_argument("--ig-examples", type=int, default=2, help="test examples to explain with IG (0: none)")
    p.add_argument("--ig-steps", type=int, default=32)
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"eval/dact_table.py: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from jaxattr.models import load_model
    from jaxattr.training import dact, deebert, early_exit
    from jaxattr.training.config import load_config
    from jaxattr.training.metrics import classification_metrics
    from jaxattr.training.trainer import load_data

    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    for stage in ("stage1", "dact", "deebert"):
        if not (run_dir / stage / "model" / "jaxattr.json").exists():
            raise UserError(f"{run_dir / stage / 'model'} is missing; run train/dact.py --output {run_dir} first")
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--thresholds must be comma-separated numbers, got {args.thresholds!r}") from None
    tcfg = load_config(run_dir / "dact" / "config.yaml")
    base = load_model(run_dir / "stage1" / "model")
    arrays, names, _ = load_data(tcfg, base.tokenizer, base.pad_id)
    test = arrays["test"]
    labels = test["labels"]
    dmodel, dparams = dact.load(run_dir / "dact" / "model")
    _, eparams = deebert.load(run_dir / "deebert" / "model")
    cfg = dmodel.cfg
    L = cfg.num_layers
    bs, g = args.batch_size, args.granularity

    rows: list[dict[str, Any]] = []
    exits_by: dict[str, np.ndarray] = {}

    per_example: dict[str, np.ndarray] = {"label": np.asarray(labels)}

    def add(name: str, s: str, exits: np.ndarray, probs: np.ndarray, seconds: float) -> None:
        m = classification_metrics(probs, labels)
        key = name if s == "-" else f"{name} S={s}"
        per_example[f"{key}: correct"] = (probs.argmax(-1) == labels).astype(int)
        per_example[f"{key}: exit"] = np.asarray(exits)
        rows.append({"method": name, "S": s, "accuracy": m["accuracy"], "f1": m["f1"],
                     "saved": 1.0 - float(exits.mean()) / L, "mean_layers": float(exits.mean()),
                     "seconds": seconds, "examples": len(labels)})

    # DeeBERT (threshold 0 = the full stage-1 model), all through the same batched engine.
    e_layers = early_exit.split_layers(eparams["encoder"]["layers"], L)
    e_exits = early_exit.split_layers(deebert.exit_heads(eparams), L)
    for s in [0.0, *thresholds]:
        fn = lambda b, s=s: deebert.predict_early_exit(eparams, cfg, b, s, granularity=g, max_batch=bs,
                                                       layers=e_layers, exits=e_exits)
        ex, pr, sec = _run(test, bs, fn, f"DeeBERT S={s}")
        if s == 0.0:
            add("Base (full model)", "-", ex, pr, sec)
        else:
            add("DeeBERT", f"{s:g}", ex, pr, sec)
            exits_by[f"DeeBERT S={s:g}"] = ex
    d_layers = early_exit.split_layers(dparams["encoder"]["layers"], L)
    d_exits = early_exit.split_layers(dparams["dact"], L)
    fn = lambda b: dact.predict_early_exit(dparams, cfg, b, granularity=g, max_batch=bs, layers=d_layers,
                                           exits=d_exits)
    ex, pr, sec = _run(test, bs, fn, "DACT")
    add("DACT-BERT", "-", ex, pr, sec)
    exits_by["DACT-BERT"] = ex
    # DACT with all layers (a_N): by the halting bound the predicted classes are identical.
    full_pred = []
    for _, b in _batches(test, bs):
        full_pred.append(np.asarray(dact.apply_jit(dparams, cfg, b["input_ids"], b["attention_mask"],
                                                   b["token_type_ids"]).output))
    a_n = np.concatenate(full_pred)
    add("DACT-BERT (all layers, a_N)", "-", np.full(len(labels), L), a_n, float("nan"))
    same = float((a_n.argmax(-1) == pr.argmax(-1)).mean())

    _write_table(rows, out, cfg, len(labels), same, tcfg)
    with (out / "per_example.csv").open("w", newline="") as f:  # for paired statistics
        w = csv.writer(f)
        w.writerow(per_example)
        w.writerows(zip(*per_example.values()))
    hist_s = args.hist_threshold if args.hist_threshold is not None else thresholds[len(thresholds) // 2]
    _histogram(exits_by["DACT-BERT"], exits_by[f"DeeBERT S={hist_s:g}"], f"DeeBERT (S={hist_s:g})", L,
               out / "dact_exit_layers.png")
    if args.ig_examples > 0:
        _ig_figures(dmodel, dparams, test, args.ig_examples, args.ig_steps, out)
    print((out / "dact_table.md").read_text())
    return 0


def _write_table(rows: list[dict[str, Any]], out: Path, cfg: Any, n: int, same: float, tcfg: Any) -> None:
    with (out / "dact_table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Test set: {n} examples of `{tcfg.data}` (max_length {tcfg.max_length}); {cfg.num_layers} blocks. "
             "Saved = % of blocks not run (1 - mean exit layer / L); seconds = batched early-exit wall-clock "
             "on this machine.", "",
             "| Method | S | Acc | F1 | Saved | Mean layers | Seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sec = "-" if np.isnan(r["seconds"]) else f"{r['seconds']:.2f}"
        lines.append(f"| {r['method']} | {r['S']} | {100 * r['accuracy']:.1f}% | {100 * r['f1']:.1f}% | "
                     f"{100 * r['saved']:.1f}% | {r['mean_layers']:.2f} | {sec} |")
    lines += ["", f"DACT early-exit predictions equal to the all-layers a_N argmax: {100 * same:.1f}% "
              "(the halting bound guarantees 100%)."]
    (out / "dact_table.md").write_text("\n".join(lines) + "\n")


def _histogram(dact_exits: np.ndarray, dee_exits: np.ndarray, dee_label: str, L: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(1, L + 1)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    w = 0.4
    ax.bar(layers - w / 2, np.bincount(dact_exits, minlength=L + 1)[1:], w, color="tab:blue", label="DACT-BERT")
    ax.bar(layers + w / 2, np.bincount(dee_exits, minlength=L + 1)[1:], w, color="tab:red", label=dee_label)
    ax.set_xlabel("Exit layer")
    ax.set_ylabel("# of instances")
    ax.set_xticks(layers)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ig_figures(model: Any, params: Any, test: dict[str, np.ndarray], k: int, steps: int, out: Path) -> None:
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxattr.training import dact

    cfg, tok = model.cfg, model.tokenizer
    ig = jax.jit(dact.integrated_gradients, static_argnames=("cfg", "steps", "mask_id", "pad_id"))
    records = []
    for i in range(min(k, len(test["input_ids"]))):
        n = int(test["attention_mask"][i].sum())
        b = {key: test[key][i:i + 1, :n] for key in ("input_ids", "attention_mask", "token_type_ids")}
        special = np.isin(b["input_ids"][0], tok.all_special_ids)
        b["word_ids"] = np.where(special, -1, np.arange(n))[None].astype(np.int32)
        r = ig(params, cfg, b, steps=steps, mask_id=model.mask_id, pad_id=model.pad_id)
        tokens = tok.convert_ids_to_tokens(b["input_ids"][0].tolist())
        halt = np.asarray(r.halt_scores)[:, 0]
        outp = np.asarray(r.output_scores)[0]
        grid = np.vstack([halt, outp[None]])
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * n), 0.45 * (cfg.num_layers + 1) + 1.2))
        lim = np.abs(grid).max(axis=1, keepdims=True) + 1e-12
        ax.imshow(grid / lim, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(n))
        ax.set_xticklabels(tokens, rotation=90, fontsize=8)
        h = np.asarray(r.f_x)[1:, 0]
        ax.set_yticks(range(cfg.num_layers + 1))
        ax.set_yticklabels([f"halt {j + 1} (h={h[j]:.2f})" for j in range(cfg.num_layers)] + ["output"], fontsize=8)
        ax.set_title(f"IG attributions (each row scaled to its max |score|); label {int(test['labels'][i])}, "
                     f"predicted {int(r.target[0])}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"dact_ig_{i}.png", dpi=110)
        plt.close(fig)
        records.append({"index": i, "tokens": tokens, "label": int(test["labels"][i]), "target": int(r.target[0]),
                        "halting_values": h.tolist(), "halt_scores": halt.tolist(), "output_scores": outp.tolist(),
                        "max_abs_delta": float(np.abs(np.asarray(r.delta)).max())})
    (out / "dact_ig.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
