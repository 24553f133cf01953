"""The IBA paper's degradation test as `jaxattr degradation` runs it (Jiang et al. 2020, §4.1, Table 1, Fig. 1).

Per method a resumable `DIR/scores_<method>.jsonl` of the attributions of the target's probability (its own
deletion grids; IBA over all layers with `layer="all"`; the reference code's comparators are registered
variants, `ig_ref`/`lime_ref`, that explain a fixed class while the curves read the evaluated target), then
`DIR/degradation.md`/`.csv`/`.png` and the per-example curves `DIR/per_example.csv`. Launched as N processes
the attributions are split between them (`Job.attribute`); process 0 writes the files and every
process returns the same result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattr.attribution import multihost
from jaxattr.attribution.job import Job
from jaxattr.errors import UserError
from jaxattr.evaluation.evaluators import scored_batches, span_targets
from jaxattr.evaluation.inputs import as_model, check_entity_settings, explained_examples


def _noise_stats(model: Any, examples: list, path: Path) -> Path:
    from jaxattr.attribution.iba import estimate_noise_stats, save_noise_stats
    from jaxattr.data.datasets import iter_batches

    if multihost.process()[0] == 0 and not path.exists():  # process 0 alone estimates; the others wait
        batches = (batch for _, batch in iter_batches(examples, 32, pad_id=model.pad_id))
        save_noise_stats(str(path), estimate_noise_stats(model.params, model.cfg, batches))
    multihost.barrier("jaxattr-noise-stats")
    return path


def _protocol_options(method: str, model: Any, examples: list, out: Path, *, layer: Any, beta: float | None,
                      noise: str, ig_steps: int, lime_samples: int) -> dict[str, Any]:
    if method == "iba":
        if layer is not None and layer != "all":
            try:
                layer = int(layer)
            except ValueError:
                raise UserError(f"--layer must be a block index or 'all', not {layer!r}") from None
        opts = {"layer": layer, "beta": beta, "noise": noise}
        if noise == "dataset":
            opts["noise_stats"] = str(_noise_stats(model, examples, out / "noise_stats.npz"))
        return opts
    if method in ("ig", "ig_embedding"):
        return {"steps": ig_steps}
    if method == "lime":
        return {"samples": lime_samples}
    return {}


def run_degradation_test(model: Any, examples: list[dict[str, Any]], methods: Sequence[str], out: str | Path, *,
                         target: str = "predicted", layer: Any = None, beta: float | None = None,
                         noise: str = "sequence", grid: str = "reference", ig_steps: int = 10,
                         lime_samples: int = 100, tokens_per_batch: int = 8192, seed: int = 0,
                         overwrite: bool = False, progress: bool = True, entities: str = "all"
                         ) -> tuple[Any, list[str]]:
    """The IBA paper's degradation test (§4.1, Table 1, Fig. 1): attributions of the probability of the
    target (resumable, `out/scores_<method>.jsonl`), then the vectorised test; returns (result, written files:
    `degradation.md`, `.csv`, `.png`, `per_example.csv`). Launched as several processes, the attributions are
    split between them (module doc); process 0 writes the files and every process returns the same.

    A token model's texts become its predicted entities (`inputs.explained_examples`, `entities`: "all" or one
    label): one curve per (text, entity), the span's mean probability of its tags as its top tokens are
    replaced by [MASK] (`degradation.degradation_probs`)."""

    from jaxattr.attribution import registry
    from jaxattr.attribution.driver import Driver
    from jaxattr.attribution.results import read_results
    from jaxattr.evaluation.degradation import (
        TABLE_FRACTION,
        degradation_probs,
        grid_fractions,
        plot_curves,
        write_table,
    )
    from jaxattr.evaluation.degradation import summarise as summarise_curves

    model, out = as_model(model), Path(out)
    token = model.cfg.task == "token"
    specs = [registry.get(m) for m in methods]  # unknown names fail before any work
    check_entity_settings(model, target, entities, methods)
    texts, examples = examples, explained_examples(model, examples, target=target, entities=entities)
    out.mkdir(parents=True, exist_ok=True)
    rank = multihost.process()[0]
    fractions = grid_fractions(grid)
    by_id = {ex["id"]: ex for ex in examples}
    scores: dict[str, dict[Any, dict[str, Any]]] = {}
    for m, spec in zip(methods, specs):
        explain = target if spec.explain is None else spec.explain
        path = out / f"scores_{m}.jsonl"
        opts = _protocol_options(spec.family, model, texts, out, layer=layer, beta=beta, noise=noise,
                                 ig_steps=ig_steps, lime_samples=lime_samples)
        driver = Driver(model.params, model.cfg, m, opts, mask_id=model.mask_id, pad_id=model.pad_id,
                        output="prob", tokens_per_batch=tokens_per_batch, seed=seed)
        settings = {**driver.settings(), "target": explain, "seed": seed, **({"entities": entities} if token else {})}
        Job(path, settings, model=model.source, overwrite=overwrite).attribute(driver, examples, explain, desc=m,
                                                                              progress=progress)
        rows = [r for r in read_results(path) if r["id"] in by_id]
        layers = sorted({r.get("layer") for r in rows}, key=lambda x: (x is None, x))
        for lay in layers:  # IBA with layer "all": one curve per layer
            name = m if len(layers) == 1 else f"{m}@{lay}"
            scores[name] = {r["id"]: r for r in rows if r.get("layer") == lay}
    fr = tuple(fractions) + (TABLE_FRACTION,)
    allc: dict[str, np.ndarray] = {}
    for name, recs in scores.items():
        got = [recs[ex["id"]] for ex in examples]
        curves = np.zeros((len(examples), len(fr) + 1), np.float32)
        for idx, batch, sc in scored_batches(model, examples, got):
            # the curve reads the evaluation target, which a reference comparator need not have explained
            tgt = span_targets(examples, idx, sc.shape[1]) if token else \
                np.asarray([got[i]["gold" if target == "gold" else "prediction"] for i in idx], np.int32)
            curves[idx] = degradation_probs(model.params, model.cfg, batch, sc, tgt, fractions=fr,
                                            mask_id=model.mask_id)[1]
        allc[name] = curves
    ids = [ex["id"] for ex in examples]
    res = summarise_curves({k: v[:, :-1] for k, v in allc.items()}, {k: v[:, -1] for k, v in allc.items()}, fractions)
    labels = {k: registry.label(k) for k in allc}
    title = f"Degradation test: {model.source}, {len(examples)} examples, target {target}"
    if rank == 0:
        per_example = _write_curves(out / "per_example.csv", ids, allc, by_id, fractions)
        md, csv_path = write_table(res, str(out), labels=labels, title=title)
        png = plot_curves(res, str(out / "degradation.png"), labels=labels, title="Degradation test")
    else:  # the names process 0 writes (`degradation.write_table` / `plot_curves` name them so)
        per_example, png = str(out / "per_example.csv"), str(out / "degradation.png")
        md, csv_path = str(out / "degradation.md"), str(out / "degradation.csv")
    multihost.barrier("jaxattr-degradation-written")  # the files are there when any process returns
    return res, [md, csv_path, png, per_example]


def _write_curves(path: Path, ids: list, curves: Mapping[str, np.ndarray], by_id: Mapping[Any, Any],
                  fractions: Sequence[float]) -> str:
    """One row per (example, method): the target probability after each deletion step (column p_0 is the
    original input), so reports can bootstrap and pair methods on the same examples."""
    import csv

    cols = [f"p_{i}" for i in range(len(fractions) + 1)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "method", "tokens", *cols, "p_table"])
        for name, c in curves.items():
            for i, row in zip(ids, c):
                w.writerow([i, name, len(by_id[i]["input_ids"]), *(f"{v:.6g}" for v in row)])
    return str(path)
