"""One fine-tuning run from a `TrainConfig`: data -> engine -> checkpoints -> final model + metrics.

Method hook: `plain` and `addrop` are built here (`build_method`). Another method (`dact`, `deebert`)
lives in `jaxattr.training.<method>` and provides `make_method(cfg: TrainConfig, model: Model) -> Method`:
its own params pytree, `loss_fn` (see `jaxattr.training.engine`), step modes and an export function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxattr import sharding as shd
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.loading import Model
from jaxattr.training import addrop as ad
from jaxattr.training import data as td
from jaxattr.training.checkpointing import Checkpointer, EarlyStopping
from jaxattr.training.config import TrainConfig
from jaxattr.training.engine import Engine, LossFn, Transform, default_loss_fn
from jaxattr.training.metrics import task_metrics
from jaxattr.training.state import make_optimizer

log = logging.getLogger(__name__)
# Seconds to sleep after each step (env JAXATTR_DEBUG_STEP_SLEEP): lets tests kill a run mid-training.
_STEP_SLEEP = float(__import__("os").environ.get("JAXATTR_DEBUG_STEP_SLEEP", "0") or 0)


@dataclasses.dataclass
class Method:
    """What a training method contributes to the engine."""

    params: Any  # initial params (any pytree)
    loss_fn: LossFn
    modes: dict[str, Transform | None]  # one compiled train step per mode
    mode_for_epoch: Callable[[int], str]  # epoch (1-indexed) -> mode
    export: Callable[[Any], Any]  # params -> the encoder params written as the final model
    optimizer: Callable[[Any], Any] | None = None  # wraps the optimizer (e.g. DeeBERT stage 2 freezes the encoder)


def build_method(cfg: TrainConfig, model: Model) -> Method:
    """plain / addrop here; other methods from `jaxattr.training.<method>.make_method`."""
    mcfg = model.cfg.replace(dtype=cfg.dtype)
    if cfg.method == "plain":
        return Method(model.params, default_loss_fn(mcfg), {"plain": None}, lambda e: "plain", lambda p: p)
    if cfg.method == "addrop":
        acfg = cfg.addrop.validate(mcfg.num_layers)
        modes = {"plain": None, "addrop": ad.make_transform(mcfg, acfg)}
        return Method(model.params, default_loss_fn(mcfg), modes,
                      lambda e: "addrop" if ad.use_addrop(e, acfg.cross_tuning) else "plain", lambda p: p)
    try:
        module = importlib.import_module(f"jaxattr.training.{cfg.method}")
    except ImportError:
        module = None
    if module is None or not hasattr(module, "make_method"):
        raise UserError(f"method {cfg.method!r} comes from jaxattr.training.{cfg.method}, "
                        "which does not provide make_method yet")
    return module.make_method(cfg, model)


# ----------------------------------------------------------------------------------------------
# Model and data.


def load_start_model(cfg: TrainConfig, num_labels: int, label_names: tuple[str, ...] | None) -> Model:
    """The model to fine-tune, with a head of the right size (a checkpoint must already fit the data)."""
    from jaxattr.models import init_params, load_minilm, load_model, load_tokenizer, minilm_dir, tiny_config

    regression = cfg.task == "regression"
    if cfg.model == "minilm":
        m = load_minilm(num_labels=num_labels, seed=cfg.seed, label_names=None if regression else label_names)
    elif cfg.model == "tiny":
        tok = load_tokenizer(minilm_dir())
        mc = tiny_config("bert", vocab_size=tok.vocab_size, max_position_embeddings=512, num_labels=num_labels,
                         problem_type="regression" if regression else "classification",
                         label_names=None if regression else label_names)
        m = Model(mc, init_params(mc, jax.random.PRNGKey(cfg.seed)), tok, "tiny")
    else:
        m = load_model(cfg.model)
        if m.cfg.num_labels != num_labels:
            raise UserError(f"model {cfg.model} has a {m.cfg.num_labels}-label head but the data has {num_labels} "
                            "labels: that checkpoint comes from another task")
    pt = "regression" if regression else "classification"
    if m.cfg.problem_type != pt:
        m = dataclasses.replace(m, cfg=m.cfg.replace(problem_type=pt))
    return m


def _split(cfg: TrainConfig, which: str) -> Any:
    from jaxattr.data import load_dataset_spec

    kw = dict(seed=0, text_column=cfg.text_column, label_column=cfg.label_column,
              text_pair_column=cfg.text_pair_column)
    explicit = {"train": cfg.data, "dev": cfg.dev_data, "test": cfg.test_data}[which]
    spec = explicit or cfg.data
    split = {"train": cfg.train_split, "dev": cfg.dev_split, "test": cfg.test_split}[which]
    if spec.startswith("hf:") or not Path(spec).suffix:  # a corpus or a hub dataset: has splits
        ds = load_dataset_spec(spec, split, **kw)
    elif explicit:
        ds = load_dataset_spec(spec, **kw)
    else:
        raise UserError(f"data {spec!r} is a single file: give {which}_data as a file as well")
    if "label" not in ds.column_names:
        raise UserError(f"{spec} ({which}): no label column {cfg.label_column!r}; columns are {ds.column_names}")
    if cfg.task == "pair-classification" and "text_pair" not in ds.column_names:
        raise UserError(f"{spec} ({which}): no text pair column {cfg.text_pair_column!r}")
    return ds


def load_data(cfg: TrainConfig, tokenizer: Any,
              pad_id: int) -> tuple[dict[str, td.Arrays], tuple[str, ...] | None, int]:
    """Train/dev/test arrays, the label names and the number of labels; checks the task fits the labels."""
    from jaxattr.data import label_names_of

    sets = {w: _split(cfg, w) for w in ("train", "dev", "test")}
    names = label_names_of(sets["train"])
    regression = cfg.task == "regression"
    if regression and names is not None:
        raise UserError(f"task regression needs numeric labels, but {cfg.data} has classes {list(names)}")
    if not regression and names is None:
        raise UserError(f"task {cfg.task} needs class labels, but {cfg.data} has real-valued labels "
                        "(use task=regression)")
    arrays = {}
    for w, ds in sets.items():
        limit = cfg.max_train_examples if w == "train" else cfg.max_eval_examples
        if limit is not None and limit < len(ds):  # a seeded subset, the same for every training seed
            idx = np.random.default_rng({"train": 0, "dev": 1, "test": 2}[w]).permutation(len(ds))[:limit]
            ds = ds.select(np.sort(idx))
        arrays[w] = td.encode_split(ds, tokenizer, cfg.max_length, pad_id, regression)
    return arrays, names, 1 if regression else len(names)


# ----------------------------------------------------------------------------------------------
# The run.


class JsonlLog:
    """Append-only JSONL log (process 0 only) that also echoes a short line to stdout."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path, self.echo = path, echo and jax.process_index() == 0

    def write(self, record: dict[str, Any]) -> None:
        if jax.process_index() != 0:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def evaluate(engine: Engine, params: Any, arrays: td.Arrays, batch_size: int, problem_type: str) -> dict[str, float]:
    """Metrics of `params` on a split (every process computes the same numbers)."""
    n = len(arrays["input_ids"])
    logits, losses, weights = [], [], []
    rows = engine.local_rows(batch_size) if jax.process_count() > 1 else None
    for batch in td.eval_batches(arrays, batch_size, rows):
        out = engine.eval_step(params, engine.put_batch(batch, batch_size))
        logits.append(np.asarray(out["logits"]))
        losses.append(float(out["loss"]))
        weights.append(float(np.sum(batch["weight"])) if rows is None else None)
    lg = np.concatenate(logits)[:n]
    metrics = task_metrics(problem_type, lg, arrays["labels"][:n])
    w = [x if x is not None else batch_size for x in weights]
    metrics["loss"] = float(np.average(losses, weights=w))
    return metrics


def _fingerprint(cfg: TrainConfig, model_cfg: EncoderConfig) -> dict[str, Any]:
    h = hashlib.sha256(model_cfg.replace(dtype="float32").to_json().encode()).hexdigest()[:16]
    keys = ("model", "data", "task", "method", "seed", "batch_size", "grad_accum", "epochs", "learning_rate",
            "max_train_examples", "max_length")
    return {"model_config": h, **{k: json.dumps(getattr(cfg, k)) for k in keys},
            "addrop": json.dumps(cfg.to_dict()["addrop"]) if cfg.method == "addrop" else ""}


def init_distributed() -> bool:
    """`jax.distributed.initialize` when launched multi-process (env JAX_COORDINATOR_ADDRESS, ...); CPU
    processes talk through gloo collectives."""
    import os

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    return shd.maybe_initialize_distributed()


def run(cfg: TrainConfig, stop_after: int | None = None) -> dict[str, Any]:
    """Train, evaluate, write `output_dir/{model/, checkpoints/, log.jsonl, results.json, config.yaml}`.

    `stop_after`: leave after this many steps (tests of resume), as a crash would.
    """
    from tqdm.auto import tqdm

    from jaxattr.models.checkpoint import save_checkpoint
    from jaxattr.training.config import dump_config

    cfg = cfg.validate()
    init_distributed()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        dump_config(cfg, out / "config.yaml")
    logger = JsonlLog(out / "log.jsonl")

    from jaxattr.models import load_tokenizer, minilm_dir

    tok = load_tokenizer(cfg.model if cfg.model not in ("minilm", "tiny") else minilm_dir())
    arrays, names, num_labels = load_data(cfg, tok, tok.pad_token_id)
    model = load_start_model(cfg, num_labels, names)
    method = build_method(cfg, model)

    mesh = shd.make_mesh(cfg.num_devices)
    multiple = mesh.size * cfg.grad_accum
    if cfg.batch_size % multiple:
        raise UserError(f"batch_size {cfg.batch_size} must be a multiple of devices x grad_accum = {multiple}")
    n_train = len(arrays["train"]["input_ids"])
    spe = td.steps_per_epoch(n_train, cfg.batch_size)
    if spe == 0:
        raise UserError(f"{n_train} training examples are fewer than one batch of {cfg.batch_size}")
    total = spe * cfg.epochs
    tx = make_optimizer(cfg.learning_rate, total, int(cfg.warmup_ratio * total), cfg.weight_decay, cfg.max_grad_norm,
                        schedule=cfg.lr_schedule)
    if method.optimizer is not None:
        tx = method.optimizer(tx)
    engine = Engine(tx, method.loss_fn, mesh=mesh, grad_accum=cfg.grad_accum, modes=method.modes)
    eval_bs = _round_up(cfg.eval_batch_size, mesh.size)

    state = engine.init_state(method.params, cfg.seed)
    metric = cfg.dev_metric
    mode = "min" if metric == "mse" else "max"
    ckpt = Checkpointer(out / "checkpoints", save_every=cfg.save_every, metric=metric, mode=mode)
    stopper = EarlyStopping(cfg.patience, mode)
    fingerprint = _fingerprint(cfg, model.cfg)
    start = 0
    if cfg.resume:
        restored = ckpt.restore(state, fingerprint)
        if restored is not None:
            state, meta = restored
            start = int(meta["step"])
            stopper = EarlyStopping(**meta["early_stopping"])
            logger.write({"event": "resume", "step": start})
            if jax.process_index() == 0:
                print(f"resumed from step {start}", file=sys.stderr)
    elif ckpt.latest_step() is not None:
        raise UserError(f"{out} already holds checkpoints; use resume=true or a new output_dir")

    rows = engine.local_rows(cfg.batch_size) if jax.process_count() > 1 else None
    eval_every = cfg.eval_every or spe
    bar = tqdm(total=total, initial=start, desc=f"train ({cfg.method})", unit="step", dynamic_ncols=True,
               disable=not cfg.progress or jax.process_index() != 0)
    t0, done, stopped = time.perf_counter(), start, None
    for step in range(start, total):
        epoch, host = td.train_batch(arrays["train"], cfg.batch_size, cfg.seed, step, rows)
        mode_name = method.mode_for_epoch(epoch)
        state, m = engine.train_step(state, engine.put_batch(host, cfg.batch_size), mode_name)
        done = step + 1
        bar.update(1)
        if _STEP_SLEEP:  # tests of crash/resume: slow the loop down so a kill lands mid-run
            time.sleep(_STEP_SLEEP)
        if done % cfg.log_every == 0 or done == total:
            rec = {k: float(v) for k, v in jax.device_get(m).items()}
            bar.set_postfix(loss=f"{rec['loss']:.4f}", epoch=epoch, mode=mode_name)
            logger.write({"step": done, "epoch": epoch, "mode": mode_name, **rec,
                          "examples_per_s": (done - start) * cfg.batch_size / (time.perf_counter() - t0)})
        evaluated = False
        if done % eval_every == 0 or done == total:
            dev = evaluate(engine, state.params, arrays["dev"], eval_bs, model.cfg.problem_type)
            best = stopper.update(dev[metric], done)
            evaluated = True
            if best:
                ckpt.save_best(done, state.params, dev[metric])
            logger.write({"step": done, "epoch": epoch, "dev": dev, "best": best})
            bar.write(f"step {done} epoch {epoch}: dev " + " ".join(f"{k}={v:.4f}" for k, v in dev.items()))
        meta = {"step": done, "epoch": epoch, "early_stopping": stopper.to_dict(), "fingerprint": fingerprint}
        preempted = ckpt.reached_preemption(done)
        if evaluated or ckpt.should_save(done) or preempted or stopper.should_stop:
            ckpt.save(done, state, meta, force=True)
        if preempted:
            ckpt.wait()
            raise UserError(f"preempted at step {done}; the state is saved, run again to resume")
        if stopper.should_stop:
            stopped = done
            logger.write({"event": "early_stop", "step": done, "best_step": stopper.best_step})
            break
        if stop_after is not None and done >= start + stop_after:
            ckpt.wait()
            bar.close()
            return {"stopped_at": done}
    bar.close()
    ckpt.wait()
    best = ckpt.restore_best(state.params)
    final = best if best is not None else state.params
    dev = evaluate(engine, final, arrays["dev"], eval_bs, model.cfg.problem_type)
    test = evaluate(engine, final, arrays["test"], eval_bs, model.cfg.problem_type)
    results = {"config": cfg.to_dict(), "steps": done, "best_step": stopper.best_step, "early_stopped_at": stopped,
               "dev": dev, "test": test, "train_examples": n_train, "dev_examples": len(arrays["dev"]["labels"]),
               "test_examples": len(arrays["test"]["labels"]), "devices": mesh.size,
               "processes": jax.process_count(), "train_seconds": time.perf_counter() - t0}
    if jax.process_index() == 0:
        export_params = jax.device_get(method.export(final))
        save_checkpoint(out / "model", model.cfg, export_params, tok)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    logger.write({"event": "done", "dev": dev, "test": test})
    ckpt.close()
    return results
