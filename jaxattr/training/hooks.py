"""The training loop's periodic work as hooks (`jaxattr.training.trainer.run`).

After every train step the loop builds a `StepInfo` and calls each hook in order with it; a hook returns
something true to ask the loop to stop after this step (every hook still runs for that step; then the
final evaluation, as after an early stop), None or False to go on.
The default hooks, in their order: `LogHook` (metrics to log.jsonl and the progress bar), `EvalHook` (dev
evaluation and keep-best; it fills `info.dev` for the hooks after it), `CheckpointHook` (the full state,
preemption) and `EarlyStopHook` (patience). Extra hooks passed to `run(cfg, hooks=...)` run after them, e.g.

    def stop_at_loss(info):
        return float(info.metrics["loss"]) < 0.1
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxattr.errors import UserError
from jaxattr.training.checkpointing import Checkpointer, EarlyStopping


@dataclasses.dataclass
class StepInfo:
    """What a hook sees after one train step."""

    step: int  # steps done so far (the step just taken, 1-based)
    epoch: int  # 1-based
    mode: str  # the method's step mode (e.g. plain | addrop)
    total: int  # steps in the whole run
    state: Any  # the TrainState after the step
    metrics: dict[str, Any]  # the step's training metrics (device arrays)
    dev: dict[str, float] | None = None  # dev metrics when `EvalHook` evaluated at this step

    @property
    def last(self) -> bool:
        return self.step == self.total

    def every(self, n: int) -> bool:
        """True every `n` steps and at the last step."""
        return self.step % n == 0 or self.last


Hook = Callable[[StepInfo], Any]


class JsonlLog:
    """Append-only JSONL log (process 0 only) that also echoes a short line to stdout."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path, self.echo = path, echo and jax.process_index() == 0

    def write(self, record: dict[str, Any]) -> None:
        if jax.process_index() != 0:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


@dataclasses.dataclass
class LogHook:
    """Every `every` steps and at the last: the step's metrics to the log and the progress bar."""

    logger: JsonlLog
    bar: Any  # tqdm
    every: int
    batch_size: int
    start: int  # the step the run (re)started from
    t0: float  # when it did (time.perf_counter)

    def __call__(self, info: StepInfo) -> None:
        if not info.every(self.every):
            return
        rec = {k: float(v) for k, v in jax.device_get(info.metrics).items()}
        self.bar.set_postfix(loss=f"{rec['loss']:.4f}", epoch=info.epoch, mode=info.mode)
        speed = (info.step - self.start) * self.batch_size / (time.perf_counter() - self.t0)
        self.logger.write({"step": info.step, "epoch": info.epoch, "mode": info.mode, **rec, "examples_per_s": speed})


@dataclasses.dataclass
class EvalHook:
    """Every `every` steps and at the last: dev metrics (into `info.dev` and the log), the best params kept."""

    evaluate: Callable[[Any], dict[str, float]]  # params -> dev metrics
    metric: str
    stopper: EarlyStopping  # counts evaluations without improvement
    ckpt: Checkpointer
    logger: JsonlLog
    bar: Any
    every: int

    def __call__(self, info: StepInfo) -> None:
        if not info.every(self.every):
            return
        info.dev = dev = self.evaluate(info.state.params)
        best = self.stopper.update(dev[self.metric], info.step)
        if best:
            self.ckpt.save_best(info.step, info.state.params, dev[self.metric])
        self.logger.write({"step": info.step, "epoch": info.epoch, "dev": dev, "best": best})
        self.bar.write(f"step {info.step} epoch {info.epoch}: dev " + " ".join(f"{k}={v:.4f}" for k, v in dev.items()))


@dataclasses.dataclass
class CheckpointHook:
    """The full state every `save_every` steps, after an evaluation, before an early stop and on preemption
    (then the run ends with a UserError: run again to resume)."""

    ckpt: Checkpointer
    stopper: EarlyStopping
    fingerprint: dict[str, Any]
    seconds: Callable[[], float] = lambda: 0.0  # training seconds so far, over every resumed segment

    def __call__(self, info: StepInfo) -> None:
        meta = {"step": info.step, "epoch": info.epoch, "early_stopping": self.stopper.to_dict(),
                "fingerprint": self.fingerprint, "train_seconds": self.seconds()}
        preempted = self.ckpt.reached_preemption(info.step)
        if info.dev is not None or self.ckpt.should_save(info.step) or preempted or self.stopper.should_stop:
            self.ckpt.save(info.step, info.state, meta, force=True)
        if preempted:
            self.ckpt.wait()
            raise UserError(f"preempted at step {info.step}; the state is saved, run again to resume")


@dataclasses.dataclass
class EarlyStopHook:
    """Stop once `patience` evaluations brought no improvement."""

    stopper: EarlyStopping
    logger: JsonlLog

    def __call__(self, info: StepInfo) -> bool:
        if not self.stopper.should_stop:
            return False
        self.logger.write({"event": "early_stop", "step": info.step, "best_step": self.stopper.best_step})
        return True
