"""One fine-tuning run from a `TrainConfig`: data -> engine -> checkpoints -> final model + metrics.

Method hook: `plain` and `addrop` are built here (`build_method`). Another method (`dact`, `deebert`)
lives in `jaxattr.training.<method>` and provides `make_method(cfg: TrainConfig, model: Model) -> Method`
(`Method`: jaxattr.training.engine, re-exported here): its own params pytree, `loss_fn`, step modes and an
export function. Nothing here names those methods: their settings sections are registered with
`jaxattr.training.config.register_section`, and the resume fingerprint holds the running method's own.

Loop hooks: after each step `run` calls a list of hooks (`jaxattr.training.hooks`): logging, dev evaluation
with keep-best, checkpoints/preemption and early stopping by default, then any passed as `run(cfg, hooks=...)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
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
from jaxattr.training.config import SECTIONS, TrainConfig
from jaxattr.training.engine import LOSS_WEIGHT, Engine, Method, default_loss_fn
from jaxattr.training.hooks import CheckpointHook, EarlyStopHook, EvalHook, Hook, JsonlLog, LogHook, StepInfo
from jaxattr.training.metrics import task_metrics, token_metrics
from jaxattr.training.state import make_optimizer

log = logging.getLogger(__name__)


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


def load_start_model(cfg: TrainConfig, num_labels: int, label_names: tuple[str, ...] | None,
                     loaded: Model | None = None) -> Model:
    """The model to fine-tune, with a head of the right size and kind (`task` token: a token-classification
    head, the tags as its label names); a checkpoint (`loaded`, if already read) must already fit the data."""
    from jaxattr.models import (
        init_params,
        load_hf_dir,
        load_minilm,
        load_model,
        load_tokenizer,
        minilm_dir,
        tiny_config,
    )

    regression, token = cfg.task == "regression", cfg.task == "token"
    if cfg.model == "minilm" and token:
        mc, params = load_hf_dir(minilm_dir(), seed=cfg.seed, num_labels=num_labels, task="token")
        m = Model(mc.replace(label_names=label_names), params, load_tokenizer(minilm_dir()), "minilm")
    elif cfg.model == "minilm":
        m = load_minilm(num_labels=num_labels, seed=cfg.seed, label_names=None if regression else label_names)
    elif cfg.model == "tiny":
        tok = load_tokenizer(minilm_dir())
        mc = tiny_config("bert", vocab_size=tok.vocab_size, max_position_embeddings=512, num_labels=num_labels,
                         problem_type="regression" if regression else "classification",
                         label_names=None if regression else label_names, task="token" if token else "sequence")
        m = Model(mc, init_params(mc, jax.random.PRNGKey(cfg.seed)), tok, "tiny")
    else:
        m = loaded or load_model(cfg.model)
        if token != (m.cfg.task == "token"):
            kind = "token-classification" if token else "sequence-classification"
            raise UserError(f"model {cfg.model} is a {m.cfg.task}-classification model, not a {kind} one: use "
                            f"task={'classification' if token else 'token'}, or start from minilm or tiny")
        if m.cfg.num_labels != num_labels:
            raise UserError(f"model {cfg.model} has a {m.cfg.num_labels}-label head but the data has {num_labels} "
                            "labels: that checkpoint comes from another task")
        if token and m.cfg.label_names is None:
            m = dataclasses.replace(m, cfg=m.cfg.replace(label_names=label_names))
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


def _token_sets(cfg: TrainConfig, label_names: tuple[str, ...] | None) -> dict[str, Any]:
    """Train/dev/test token-classification Datasets: a corpus-like source's splits, `data` with `dev_data` and
    `test_data`, or one file cut into seeded 80/10/10 splits (`stratified_split` of one class, seed 0 like
    the corpora). Tags are ids of `label_names` (a token checkpoint's), else of the training data's tags; a
    dev or test tag outside them is a one-line error."""
    from jaxattr.data import label_names_of, stratified_split
    from jaxattr.data.datasets import load_token_spec

    kw = dict(tokens_column=cfg.tokens_column, tags_column=cfg.tags_column)
    splits = {"train": cfg.train_split, "dev": cfg.dev_split, "test": cfg.test_split}
    has_splits = cfg.data.startswith("hf:") or not Path(cfg.data).suffix
    if has_splits or cfg.dev_data or cfg.test_data:
        explicit = {"train": cfg.data, "dev": cfg.dev_data, "test": cfg.test_data}
        for which in ("dev", "test"):
            if not has_splits and not explicit[which]:
                raise UserError(f"dev_data and test_data go together: give {which}_data as well (or neither, to "
                                f"split {cfg.data})")
        sets: dict[str, Any] = {}
        for which in ("train", "dev", "test"):
            spec = explicit[which] or cfg.data
            split = splits[which] if spec.startswith("hf:") or not Path(spec).suffix else None
            sets[which] = load_token_spec(spec, split, label_names=label_names, **kw)
            label_names = label_names_of(sets[which])  # dev and test take the training tags
        return sets
    ds = load_token_spec(cfg.data, label_names=label_names, **kw)
    parts = stratified_split(np.zeros(len(ds), np.int64), seed=0)
    return {which: ds.select(idx) for which, idx in zip(("train", "dev", "test"), parts)}


def load_data(cfg: TrainConfig, tokenizer: Any, pad_id: int, label_names: tuple[str, ...] | None = None
              ) -> tuple[dict[str, td.Arrays], tuple[str, ...] | None, int]:
    """Train/dev/test arrays, the label names and the number of labels; checks the task fits the labels.
    Task token: the tag set is `label_names` (a token checkpoint's) or the training data's; `labels` [N, T]."""
    from jaxattr.data import label_names_of

    token = cfg.task == "token"
    sets = _token_sets(cfg, label_names) if token else {w: _split(cfg, w) for w in ("train", "dev", "test")}
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
        arrays[w] = (td.encode_token_split(ds, tokenizer, cfg.max_length, pad_id) if token
                     else td.encode_split(ds, tokenizer, cfg.max_length, pad_id, regression))
    return arrays, names, 1 if regression else len(names)


# ----------------------------------------------------------------------------------------------
# The run.


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def evaluate(engine: Engine, params: Any, arrays: td.Arrays, batch_size: int,
             model_cfg: EncoderConfig) -> dict[str, float]:
    """Metrics of `params` on a split (every process computes the same numbers): `task_metrics`, or a token
    model's `token_metrics`; `loss` averaged over what the loss is a mean of (examples, or labelled tokens)."""
    n = len(arrays["input_ids"])
    logits, losses, weights = [], [], []
    rows = engine.local_rows(batch_size) if jax.process_count() > 1 else None
    for batch in td.eval_batches(arrays, batch_size, rows):
        out = engine.eval_step(params, engine.put_batch(batch, batch_size))
        logits.append(np.asarray(out["logits"]))
        losses.append(float(out["loss"]))
        if LOSS_WEIGHT in out:
            weights.append(float(out[LOSS_WEIGHT]))
        else:
            weights.append(float(np.sum(batch["weight"])) if rows is None else batch_size)
    lg = np.concatenate(logits)[:n]
    if model_cfg.task == "token":
        metrics = token_metrics(lg, arrays["labels"][:n], model_cfg.label_names)
    else:
        metrics = task_metrics(model_cfg.problem_type, lg, arrays["labels"][:n])
    metrics["loss"] = float(np.average(losses, weights=weights)) if sum(weights) else float("nan")
    return metrics


def _fingerprint(cfg: TrainConfig, model_cfg: EncoderConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (stored in its meta): the model config, data and
    optimisation keys, and the running method's settings section as JSON. Another method's section is
    left out, or holds its registered `unused_fingerprint` (AD-DROP's "", as checkpoints always had)."""
    h = hashlib.sha256(model_cfg.replace(dtype="float32").to_json().encode()).hexdigest()[:16]
    keys = ("model", "data", "task", "method", "seed", "batch_size", "grad_accum", "epochs", "learning_rate",
            "max_train_examples", "max_length")
    fp = {"model_config": h, **{k: json.dumps(getattr(cfg, k)) for k in keys}}
    settings = cfg.to_dict()
    for name, section in SECTIONS.items():
        if name == cfg.method:
            fp[name] = json.dumps(settings[name])
        elif section.unused_fingerprint is not None:
            fp[name] = section.unused_fingerprint
    return fp


@dataclasses.dataclass
class _Run:
    """One run's pieces, set up by `_prepare` and shared by the loop, the hooks and `_finish`."""

    cfg: TrainConfig
    out: Path
    logger: JsonlLog
    tokenizer: Any
    arrays: dict[str, td.Arrays]
    model: Model
    method: Method
    mesh: Any
    engine: Engine
    state: Any
    steps_per_epoch: int
    eval_bs: int
    ckpt: Checkpointer
    stopper: EarlyStopping
    fingerprint: dict[str, Any]
    start: int = 0  # the step training starts (or resumes) from
    seconds_before: float = 0.0  # training seconds of the segments before a resume

    @property
    def total(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def evaluate(self, params: Any, split: str = "dev") -> dict[str, float]:
        return evaluate(self.engine, params, self.arrays[split], self.eval_bs, self.model.cfg)


def _engine(cfg: TrainConfig, method: Method, total: int, mesh: Any) -> Engine:
    tx = make_optimizer(cfg.learning_rate, total, int(cfg.warmup_ratio * total), cfg.weight_decay, cfg.max_grad_norm,
                        schedule=cfg.lr_schedule)
    if method.optimizer is not None:
        tx = method.optimizer(tx)
    return Engine(tx, method.loss_fn, mesh=mesh, grad_accum=cfg.grad_accum, modes=method.modes)


def _steps_per_epoch(cfg: TrainConfig, n_train: int, mesh: Any) -> int:
    """Train steps per epoch; checks the batch fits the devices and the data."""
    multiple = mesh.size * cfg.grad_accum
    if cfg.batch_size % multiple:
        raise UserError(f"batch_size {cfg.batch_size} must be a multiple of devices x grad_accum = {multiple}")
    spe = td.steps_per_epoch(n_train, cfg.batch_size)
    if spe == 0:
        raise UserError(f"{n_train} training examples are fewer than one batch of {cfg.batch_size}")
    return spe


def _prepare(cfg: TrainConfig) -> _Run:
    """Output dir, data, model, method, engine, fresh state and checkpointer."""
    from jaxattr.models import load_model, load_tokenizer, minilm_dir
    from jaxattr.training.config import dump_config

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        dump_config(cfg, out / "config.yaml")
    logger = JsonlLog(out / "log.jsonl")
    tok = load_tokenizer(cfg.model if cfg.model not in ("minilm", "tiny") else minilm_dir())
    loaded = None  # a token checkpoint's tags decide the label ids: read it before the data
    if cfg.task == "token" and cfg.model not in ("minilm", "tiny"):
        loaded = load_model(cfg.model)
    known = loaded.cfg.label_names if loaded is not None and loaded.cfg.task == "token" else None
    arrays, names, num_labels = load_data(cfg, tok, tok.pad_token_id, known)
    model = load_start_model(cfg, num_labels, names, loaded)
    method = build_method(cfg, model)
    mesh = shd.make_mesh(cfg.num_devices)
    spe = _steps_per_epoch(cfg, len(arrays["train"]["input_ids"]), mesh)
    engine = _engine(cfg, method, spe * cfg.epochs, mesh)
    state = engine.init_state(method.params, cfg.seed)
    mode = "min" if cfg.dev_metric == "mse" else "max"
    ckpt = Checkpointer(out / "checkpoints", save_every=cfg.save_every, metric=cfg.dev_metric, mode=mode)
    return _Run(cfg, out, logger, tok, arrays, model, method, mesh, engine, state, spe,
                _round_up(cfg.eval_batch_size, mesh.size), ckpt, EarlyStopping(cfg.patience, mode),
                _fingerprint(cfg, model.cfg))


def _restore(r: _Run) -> None:
    """Continue from the latest checkpoint (`resume`), or refuse to overwrite one."""
    if not r.cfg.resume:
        if r.ckpt.latest_step() is not None:
            raise UserError(f"{r.out} already holds checkpoints; use resume=true or a new output_dir")
        return
    restored = r.ckpt.restore(r.state, r.fingerprint)
    if restored is None:
        return
    r.state, meta = restored
    r.start = int(meta["step"])
    r.stopper = EarlyStopping(**meta["early_stopping"])
    r.seconds_before = float(meta.get("train_seconds", 0.0))
    r.logger.write({"event": "resume", "step": r.start})
    if jax.process_index() == 0:
        print(f"resumed from step {r.start}", file=sys.stderr)


def _default_hooks(r: _Run, bar: Any, t0: float) -> list[Hook]:
    """Logging, dev evaluation + keep-best, checkpoints/preemption, early stopping (in that order)."""
    cfg = r.cfg
    eval_every = cfg.eval_every or r.steps_per_epoch  # default: at the end of each epoch
    return [LogHook(r.logger, bar, cfg.log_every, cfg.batch_size, r.start, t0),
            EvalHook(r.evaluate, cfg.dev_metric, r.stopper, r.ckpt, r.logger, bar, eval_every),
            CheckpointHook(r.ckpt, r.stopper, r.fingerprint, lambda: r.seconds_before + time.perf_counter() - t0),
            EarlyStopHook(r.stopper, r.logger)]


def _loop(r: _Run, hooks: list[Hook], bar: Any, stop_after: int | None) -> tuple[int, int | None, bool]:
    """Train from `r.start`, calling every hook after each step. Returns (steps done, the step a hook
    stopped the run at or None, whether it left after `stop_after` steps)."""
    cfg = r.cfg
    rows = r.engine.local_rows(cfg.batch_size) if jax.process_count() > 1 else None
    done = r.start
    for step in range(r.start, r.total):
        epoch, host = td.train_batch(r.arrays["train"], cfg.batch_size, cfg.seed, step, rows)
        mode = r.method.mode_for_epoch(epoch)
        r.state, m = r.engine.train_step(r.state, r.engine.put_batch(host, cfg.batch_size), mode)
        done = step + 1
        bar.update(1)
        info = StepInfo(done, epoch, mode, r.total, r.state, m)
        stop = False
        for hook in hooks:  # every hook sees every step, even once one has asked to stop
            stop = bool(hook(info)) or stop
        if stop:
            return done, done, False
        if stop_after is not None and done >= r.start + stop_after:
            return done, None, True
    return done, None, False


def _finish(r: _Run, done: int, stopped: int | None, t0: float) -> dict[str, Any]:
    """Final dev/test metrics of the best params; the model and results.json."""
    from jaxattr.models.checkpoint import save_checkpoint

    r.ckpt.wait()
    best = r.ckpt.restore_best(r.state.params)
    final = best if best is not None else r.state.params
    dev, test = r.evaluate(final, "dev"), r.evaluate(final, "test")
    results = {"config": r.cfg.to_dict(), "steps": done, "best_step": r.stopper.best_step,
               "early_stopped_at": stopped, "dev": dev, "test": test,
               "train_examples": len(r.arrays["train"]["input_ids"]), "dev_examples": len(r.arrays["dev"]["labels"]),
               "test_examples": len(r.arrays["test"]["labels"]), "devices": r.mesh.size,
               "processes": jax.process_count(), "train_seconds": r.seconds_before + time.perf_counter() - t0}
    if jax.process_index() == 0:
        export_params = jax.device_get(r.method.export(final))
        save_checkpoint(r.out / "model", r.model.cfg, export_params, r.tokenizer)
        (r.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    r.logger.write({"event": "done", "dev": dev, "test": test})
    r.ckpt.close()
    return results


def run(cfg: TrainConfig, stop_after: int | None = None, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train, evaluate, write `output_dir/{model/, checkpoints/, log.jsonl, results.json, config.yaml}`.

    `hooks`: extra `hook(StepInfo)` callables run after each step, after the default ones (`_default_hooks`,
    see `jaxattr.training.hooks`); one returning True stops the run there (then the final evaluation, as
    after an early stop). `stop_after`: leave after this many steps (tests of resume), as a crash would.
    """
    from tqdm.auto import tqdm

    cfg = cfg.validate()
    shd.initialize_distributed()
    r = _prepare(cfg)
    _restore(r)
    bar = tqdm(total=r.total, initial=r.start, desc=f"train ({cfg.method})", unit="step", dynamic_ncols=True,
               disable=not cfg.progress or jax.process_index() != 0)
    t0 = time.perf_counter()
    done, stopped, left = _loop(r, [*_default_hooks(r, bar, t0), *hooks], bar, stop_after)
    bar.close()
    if left:
        r.ckpt.wait()
        return {"stopped_at": done}
    return _finish(r, done, stopped, t0)
